package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/sqlite"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// backlogSize is 1,000,000, or REDIACC_BENCH_BACKLOG.
func backlogSize() int {
	if n, err := strconv.Atoi(os.Getenv("REDIACC_BENCH_BACKLOG")); err == nil && n > 0 {
		return n
	}
	return 1_000_000
}

const (
	backlogMachines = 10
	backlogFirst    = 229  // 127.0.0.230 … 127.0.0.239
	backlogBaseline = 2000 // tasks; the claims take 1,000 of them
	backlogClaims   = 1000
	backlogWorkFor  = 20 * time.Second
)

// backlogResult is what one store (the backlog, or the small baseline)
// measured.
type backlogResult struct {
	tasks                  int
	submit, submitCPU      time.Duration // wall; this process's CPU
	firstRate, lastRate    float64       // tasks/s of the first and last batch
	claimP50, claimP99     time.Duration
	claimMax               time.Duration
	workerRSS              int64  // VmHWM, bytes (see watchHWM)
	workerWaitRSS          int64  // wait4's ru_maxrss, bytes: not the worker's own (see watchHWM)
	workerHeap             int    // the Go heap's peak (at a collection's start), MB
	workerMem              string // /proc/PID/status before the interrupt
	workerCPU              time.Duration
	workerDone             int
	statsCLI, statsLibrary time.Duration
	statsCLICPU, statsCPU  time.Duration // the CLI process's CPU; this process's
	dbBytes                int64
}

// BenchmarkBacklog: 1,000,000 PENDING tasks in the embedded SQLite store
// (10 real sshd machines on 127.0.0.230–239), beside a store of 2,000
// tasks measured the same way in the same run (the baseline: what a
// small queue costs):
//
//   - submit: SubmitBatch of 10,000 tasks each (machines named; a
//     task.create audit record per task), the total time and the rate of
//     the first and last batch;
//   - claim: 1,000 one-task claims on the store engine with the worker's
//     request (PerMachine 8, critical reserve, aging 5 min), each
//     finished untimed so the machines' slots free up: p50, p99, max;
//   - worker: the CLI `worker --concurrency 80 --health-interval -1s` run
//     for 20s on the store, then interrupted: peak RSS (VmHWM, watched in
//     /proc; it must never load the backlog), its Go heap's peak (gctrace),
//     CPU and tasks done;
//   - stats: `rediacc list queue --stats` (a process: start-up included)
//     and Client.QueueStats in this process, each with its CPU time (what
//     it waited for besides is the host's: scheduling, fsyncs).
//
// Gated by REDIACC_BENCH_SCALE=1 (REDIACC_BENCH_BACKLOG=N for another size;
// REDIACC_BENCH_PROFILE=DIR writes CPU profiles of the backlog's submit and
// QueueStats there, submit-N.pprof and stats-N.pprof):
//
//	REDIACC_BENCH_SCALE=1 go test -run '^$' -bench Backlog -benchtime 1x -timeout 60m ./bench
func BenchmarkBacklog(b *testing.B) {
	requireScale(b)
	servers := startFleet(b, backlogFirst, backlogMachines)
	bin := buildCLI(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		load := loadAvg()
		small := backlogRun(b, bin, servers, backlogBaseline)
		big := backlogRun(b, bin, servers, backlogSize())
		fmt.Printf("\nbacklog in SQLite, %d machines; load average %s → %s\n", backlogMachines, load, loadAvg())
		fmt.Printf("| pending tasks | submit (batches of %d) | submit CPU per task | first / last batch tasks/s | claim p50 | claim p99 | claim max | worker peak RSS | worker %s: tasks done, CPU | list queue --stats (CLI): wall, CPU | QueueStats (library): wall, CPU | database |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
			rediacc.MaxBatchSize, backlogWorkFor)
		for _, r := range []backlogResult{small, big} {
			fmt.Printf("| %d | %s (%.0f tasks/s) | %.0f µs | %.0f / %.0f | %s | %s | %s | %.1f MB | %d, %s | %s, %s | %s, %s | %.0f MB |\n",
				r.tasks, r.submit.Round(time.Millisecond), float64(r.tasks)/r.submit.Seconds(), float64(r.submitCPU.Microseconds())/float64(r.tasks),
				r.firstRate, r.lastRate,
				r.claimP50.Round(time.Microsecond), r.claimP99.Round(time.Microsecond), r.claimMax.Round(time.Microsecond),
				float64(r.workerRSS)/1e6, r.workerDone, r.workerCPU.Round(time.Millisecond),
				r.statsCLI.Round(time.Millisecond), r.statsCLICPU.Round(time.Millisecond),
				r.statsLibrary.Round(time.Millisecond), r.statsCPU.Round(time.Millisecond), float64(r.dbBytes)/1e6)
		}
		for _, r := range []backlogResult{small, big} {
			fmt.Printf("worker of the %d-task store: Go heap peak %d MB; before the interrupt: %s; wait4's ru_maxrss %.1f MB (includes this process's RSS when it started the worker)\n",
				r.tasks, r.workerHeap, r.workerMem, float64(r.workerWaitRSS)/1e6)
		}
		fmt.Printf("ratios backlog/baseline: claim p99 %.2f×, worker RSS %.2f×, list queue --stats %.2f×\n",
			float64(big.claimP99)/float64(small.claimP99), float64(big.workerRSS)/float64(small.workerRSS),
			float64(big.statsCLI)/float64(small.statsCLI))
		b.ReportMetric(big.submit.Seconds(), "submit-s")
		b.ReportMetric(float64(big.claimP99.Microseconds())/1e3, "claim-p99-ms")
		b.ReportMetric(float64(small.claimP99.Microseconds())/1e3, "baseline-claim-p99-ms")
		b.ReportMetric(float64(big.workerRSS)/1e6, "worker-rss-MB")
		b.ReportMetric(float64(big.statsCLI.Microseconds())/1e3, "stats-cli-ms")
		b.ReportMetric(float64(small.statsCLI.Microseconds())/1e3, "baseline-stats-cli-ms")
		b.ReportMetric(0, "ns/op")
	}
}

func backlogRun(b *testing.B, bin string, servers []*sshtest.OpenSSH, n int) backlogResult {
	c := cliRun{tb: b, bin: bin, dataDir: b.TempDir()}
	c.addMachines(servers, "") // the CLI's actor (the OS login) owns the store
	r := backlogResult{tasks: n}
	actor := rediacc.WithActor(context.Background(), osUser(b))

	// Submit.
	cl, err := rediacc.New(actor, rediacc.Config{DataDir: c.dataDir, Health: rediacc.HealthConfig{Interval: -1}})
	if err != nil {
		b.Fatal(err)
	}
	stopProfile := benchProfile(b, "submit", n)
	start, cpu0 := time.Now(), cpuSelf()
	for done := 0; done < n; {
		k := min(rediacc.MaxBatchSize, n-done)
		specs := make([]rediacc.TaskSpec, k)
		for j := range specs {
			specs[j] = rediacc.TaskSpec{Machine: machineName((done + j) % len(servers)), Command: "true"}
		}
		t0 := time.Now()
		if _, err := cl.SubmitBatch(actor, specs); err != nil {
			b.Fatal(err)
		}
		rate := float64(k) / time.Since(t0).Seconds()
		if done == 0 {
			r.firstRate = rate
		}
		r.lastRate = rate
		done += k
	}
	r.submit, r.submitCPU = time.Since(start), cpuSelf()-cpu0
	stopProfile()
	if err := cl.Close(); err != nil {
		b.Fatal(err)
	}

	// Claims on the engine.
	db := filepath.Join(c.dataDir, "rediacc.db")
	e, err := sqlite.Open(context.Background(), db)
	if err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, backlogClaims)
	for range backlogClaims {
		now := time.Now()
		ts, err := e.Claim(context.Background(), store.ClaimRequest{Owner: "bench", Now: now, LeaseUntil: now.Add(time.Minute),
			Max: 1, PerMachine: rediacc.DefaultPerMachineLimit, ReserveCritical: true, Aging: rediacc.DefaultAgingInterval})
		lat = append(lat, time.Since(now))
		if err != nil || len(ts) != 1 {
			b.Fatalf("claim: %d tasks, %v", len(ts), err)
		}
		if _, err := e.Finish(context.Background(), store.Finish{ID: ts[0].ID, Owner: "bench", At: time.Now(), Next: store.Completed}); err != nil {
			b.Fatal(err)
		}
	}
	if err := e.Close(); err != nil {
		b.Fatal(err)
	}
	slices.Sort(lat)
	r.claimP50, r.claimP99, r.claimMax = lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]

	// The CLI worker for a while.
	w, _ := c.cmd("worker", "--concurrency", strconv.Itoa(tableWorkers), "--health-interval", "-1s")
	w.Env = append(os.Environ(), "GODEBUG=gctrace=1") // the Go heap at each collection, in cli.log
	logStart := fileLen(filepath.Join(c.dataDir, "cli.log"))
	if err := w.Start(); err != nil {
		b.Fatal(err)
	}
	hwm := watchHWM(w.Process.Pid)
	time.Sleep(backlogWorkFor)
	r.workerMem = procMemory(w.Process.Pid)
	_ = w.Process.Signal(syscall.SIGINT)
	_ = w.Wait() // interrupted: its exit status says so
	r.workerRSS, r.workerWaitRSS, r.workerCPU = hwm(), maxRSSOf(w.ProcessState), cpuOf(w.ProcessState)
	r.workerHeap = peakGoHeap(filepath.Join(c.dataDir, "cli.log"), logStart)

	// Stats.
	t0 := time.Now()
	_, ps := c.ok("list", "queue", "--stats")
	r.statsCLI, r.statsCLICPU = time.Since(t0), cpuOf(ps)
	cl, err = rediacc.New(actor, rediacc.Config{DataDir: c.dataDir, Health: rediacc.HealthConfig{Interval: -1}})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	stopProfile = benchProfile(b, "stats", n)
	t0, cpu0 = time.Now(), cpuSelf()
	st, err := cl.QueueStats(actor, rediacc.StatsFilter{})
	r.statsLibrary, r.statsCPU = time.Since(t0), cpuSelf()-cpu0
	stopProfile()
	if err != nil {
		b.Fatal(err)
	}
	r.workerDone = st.ByStatus[rediacc.StatusCompleted][rediacc.Normal] - backlogClaims
	total := 0
	for _, byPrio := range st.ByStatus {
		for _, k := range byPrio {
			total += k
		}
	}
	if total != n {
		b.Fatalf("stats count %d tasks, want %d: %+v", total, n, st.ByStatus)
	}
	if fi, err := os.Stat(db); err == nil {
		r.dbBytes = fi.Size()
	}
	return r
}

// benchProfile starts a CPU profile of this process into
// $REDIACC_BENCH_PROFILE/WHAT-N.pprof when that variable names a directory;
// the function returned stops it.
func benchProfile(b *testing.B, what string, n int) (stop func()) {
	dir := os.Getenv("REDIACC_BENCH_PROFILE")
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", what, n)))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

func fileLen(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// watchHWM reads the peak resident set size (VmHWM, /proc/PID/status) of
// the process pid every 100 ms until it exits; the function returned
// stops the watch and returns the last value read (bytes). Not wait4's
// ru_maxrss: Linux counts in it the memory of the process that started
// the child (the exec replaces a memory map that Go's fork shares with the
// parent, and its peak is kept), so a benchmark process holding a large
// backlog's tasks made the worker look as large.
func watchHWM(pid int) (last func() int64) {
	var (
		mu   sync.Mutex
		peak int64
		stop = make(chan struct{})
		done = make(chan struct{})
	)
	read := func() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				mu.Lock()
				peak = max(peak, kb*1024)
				mu.Unlock()
			}
		}
	}
	go func() {
		defer close(done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			read()
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return func() int64 {
		close(stop)
		<-done
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}

// procMemory returns the resident memory fields of /proc/PID/status
// (VmHWM, VmRSS, RssAnon, RssFile).
func procMemory(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		for _, k := range []string{"VmHWM:", "VmRSS:", "RssAnon:", "RssFile:"} {
			if strings.HasPrefix(l, k) {
				out = append(out, k+" "+strings.TrimSpace(strings.TrimPrefix(l, k)))
			}
		}
	}
	return strings.Join(out, ", ")
}

// gcHeapRE matches a gctrace line's heap sizes: "12->14->7 MB".
var gcHeapRE = regexp.MustCompile(`^gc \d+ .* (\d+)->(\d+)->(\d+) MB`)

// peakGoHeap returns the largest heap at a collection's start or end, in
// MB, of the gctrace lines in path after offset.
func peakGoHeap(path string, offset int64) int {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < offset {
		return 0
	}
	peak := 0
	for _, l := range strings.Split(string(b[offset:]), "\n") {
		if m := gcHeapRE.FindStringSubmatch(l); m != nil {
			for _, f := range m[1:3] {
				if n, _ := strconv.Atoi(f); n > peak {
					peak = n
				}
			}
		}
	}
	return peak
}
