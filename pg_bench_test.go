package rediacc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/internal/store/postgres/pgtest"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// Benchmarks of the PostgreSQL store with worker processes (this test
// binary re-executed, as in cluster_test.go). docs/BENCHMARKS.md has the
// figures and the commands.

// pgBench is one benchmark store with its worker processes.
type pgBench struct {
	b        *testing.B
	url      string
	c        *rediacc.Client
	auditKey string
	dir      string
	procs    []*exec.Cmd
	logs     []string
}

func newPGBench(b *testing.B) *pgBench {
	b.Helper()
	p := &pgBench{b: b, url: pgtest.Schema(b), dir: b.TempDir()}
	p.auditKey = filepath.Join(p.dir, "audit.key")
	c, err := rediacc.New(asOwner(), rediacc.Config{StoreURL: p.url, DataDir: b.TempDir(), AuditKeyFile: p.auditKey,
		Logger: testLogger(nil), Health: rediacc.HealthConfig{Interval: -1}})
	if err != nil {
		b.Fatal(err)
	}
	p.c = c
	b.Cleanup(func() { p.stop(); _ = c.Close() })
	return p
}

// startWorkers starts n worker processes like spec and waits until they
// are registered.
func (p *pgBench) startWorkers(n int, spec pgChild) {
	p.b.Helper()
	for i := range n {
		s := spec
		s.Mode, s.StoreURL, s.DataDir, s.AuditKey = "worker", p.url, p.b.TempDir(), p.auditKey
		s.WorkerID = fmt.Sprintf("bench-%d/%d/w", len(p.procs), 2000+i)
		raw, _ := json.Marshal(s)
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), pgChildEnv+"="+string(raw))
		log := filepath.Join(p.dir, fmt.Sprintf("worker-%d.log", len(p.procs)))
		f, err := os.Create(log)
		if err != nil {
			p.b.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Start(); err != nil {
			p.b.Fatal(err)
		}
		f.Close()
		p.procs, p.logs = append(p.procs, cmd), append(p.logs, log)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ws, err := p.c.ListWorkers(asOwner())
		if err != nil {
			p.b.Fatal(err)
		}
		if len(ws) >= len(p.procs) {
			return
		}
		if time.Now().After(deadline) {
			p.dumpLogs()
			p.b.Fatalf("%d of %d worker processes registered after 2 minutes", len(ws), len(p.procs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *pgBench) dumpLogs() {
	for _, l := range p.logs {
		b, _ := os.ReadFile(l)
		if len(b) > 3000 {
			b = b[len(b)-3000:]
		}
		p.b.Logf("%s:\n%s", l, b)
	}
}

// stop stops the worker processes (SIGTERM) and waits for them.
func (p *pgBench) stop() {
	for _, cmd := range p.procs {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, cmd := range p.procs {
		_ = cmd.Wait()
	}
	p.procs = nil
}

// waitCompleted waits until n tasks are COMPLETED, counting in SQL (a
// cheap poll beside the workers).
func (p *pgBench) waitCompleted(n int) {
	p.b.Helper()
	conn, err := pgx.Connect(context.Background(), p.url)
	if err != nil {
		p.b.Fatal(err)
	}
	defer conn.Close(context.Background())
	deadline := time.Now().Add(30 * time.Minute)
	for {
		var done, failed int
		if err := conn.QueryRow(context.Background(),
			`SELECT count(*) FILTER (WHERE status = 'COMPLETED'), count(*) FILTER (WHERE status = 'FAILED') FROM tasks`).Scan(&done, &failed); err != nil {
			p.b.Fatal(err)
		}
		if failed > 0 {
			p.dumpLogs()
			p.b.Fatalf("%d tasks failed", failed)
		}
		if done >= n {
			return
		}
		if time.Now().After(deadline) {
			p.b.Fatalf("%d of %d tasks completed after 30 minutes", done, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// noopMachines registers n machines that the no-op runner "runs" on (no
// SSH connection is made).
func (p *pgBench) noopMachines(n int) []string {
	p.b.Helper()
	var names []string
	for i := range n {
		name := fmt.Sprintf("noop%d", i)
		if _, err := p.c.AddMachine(asOwner(), rediacc.Machine{Name: name, Host: "127.0.0.1", Port: 9, User: "nobody",
			UseAgent: true, HostKeyPolicy: rediacc.HostKeyInsecureIgnore}); err != nil {
			p.b.Fatal(err)
		}
		names = append(names, name)
	}
	return names
}

// benchJobs is the number of jobs of the queue benchmark
// ($REDIACC_BENCH_JOBS, default 3,000).
func benchJobs() int {
	if n, err := strconv.Atoi(os.Getenv("REDIACC_BENCH_JOBS")); err == nil && n > 0 {
		return n
	}
	return 3000
}

// BenchmarkPostgresQueue measures queue throughput with a no-op runner (no
// SSH): tasks submitted one by one from 8 goroutines while 1 or 4 worker
// processes (Concurrency 16 each) claim, start and finish them, until the
// last is COMPLETED — and, on the same PostgreSQL server in the same run,
// River (github.com/riverqueue/river, the bench/river module: a no-op
// worker, MaxWorkers 16 per process, jobs inserted one by one from 8
// goroutines) with its default FetchCooldown (100 ms) and with 1 ms.
//
//	go test -run '^$' -bench PostgresQueue -benchtime 1x .
func BenchmarkPostgresQueue(b *testing.B) {
	river := buildRiverBench(b)
	jobs := benchJobs()
	for range b.N {
		for _, workers := range []int{1, 4} {
			rd := rediaccQueue(b, workers, jobs)
			rv := runRiverBench(b, river, workers, jobs, 0)
			rvFast := runRiverBench(b, river, workers, jobs, time.Millisecond)
			b.ReportMetric(rd, fmt.Sprintf("rediacc-%dw-tasks/s", workers))
			b.ReportMetric(rv, fmt.Sprintf("river-%dw-jobs/s", workers))
			b.ReportMetric(rvFast, fmt.Sprintf("river-cooldown1ms-%dw-jobs/s", workers))
			b.ReportMetric(rd/rv, fmt.Sprintf("rediacc/river-%dw", workers))
			b.ReportMetric(rd/rvFast, fmt.Sprintf("rediacc/river-cooldown1ms-%dw", workers))
		}
	}
	b.ReportMetric(0, "ns/op")
}

// rediaccQueue runs one queue throughput case and returns tasks/s.
func rediaccQueue(b *testing.B, workers, jobs int) float64 {
	p := newPGBench(b)
	machines := p.noopMachines(10)
	p.startWorkers(workers, pgChild{Noop: true, Lease: 30 * time.Second, Poll: 500 * time.Millisecond, Concurrency: 16, PerMachine: 8})
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := int(next.Add(1))
				if n > jobs {
					return
				}
				if _, err := p.c.Submit(asOwner(), rediacc.TaskSpec{Machine: machines[n%len(machines)], Command: "true"}); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	submitted := time.Since(start)
	p.waitCompleted(jobs)
	d := time.Since(start)
	b.Logf("rediacc, %d worker(s): %d tasks submitted in %s, all completed after %s", workers, jobs, submitted.Round(time.Millisecond), d.Round(time.Millisecond))
	p.stop()
	return float64(jobs) / d.Seconds()
}

// buildRiverBench builds the bench/river program (its own module) once.
func buildRiverBench(b *testing.B) string {
	b.Helper()
	out := filepath.Join(b.TempDir(), "river-bench")
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = "bench/river"
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("building bench/river: %v\n%s", err, msg)
	}
	return out
}

// runRiverBench runs River's throughput case and returns jobs/s.
func runRiverBench(b *testing.B, bin string, workers, jobs int, cooldown time.Duration) float64 {
	b.Helper()
	cmd := exec.Command(bin, "-dsn", pgtest.DSN(b), "-jobs", strconv.Itoa(jobs), "-workers", strconv.Itoa(workers),
		"-concurrency", "16", "-inserters", "8", "-fetch-cooldown", cooldown.String())
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("river-bench: %v", err)
	}
	var r struct {
		JobsPerSecond float64 `json:"jobsPerSecond"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		b.Fatalf("river-bench printed %q: %v", out, err)
	}
	return r.JobsPerSecond
}

// BenchmarkPostgresFanOut runs 1,000 `true` tasks over 10 real sshd
// machines with 1, 2 and 4 worker processes (Concurrency 16, the default
// PerMachineLimit 8) on one PostgreSQL store: the tasks are queued in one
// batch once the workers are idle, and the clock stops when the last is
// COMPLETED. Reported: tasks/s per case and the scaling ratios to 1
// worker.
//
//	go test -run '^$' -bench PostgresFanOut -benchtime 1x .
func BenchmarkPostgresFanOut(b *testing.B) {
	servers := make([]*sshtest.OpenSSH, fanOutMachines)
	for i := range servers {
		servers[i] = sshtest.StartOpenSSH(b, sshtest.OpenSSHOptions{Loopback: 20 + i})
	}
	for range b.N {
		rates := map[int]float64{}
		for _, workers := range []int{1, 2, 4} {
			p := newPGBench(b)
			var names []string
			for i, s := range servers {
				name := fmt.Sprintf("m%d", i)
				if _, err := p.c.AddMachine(asOwner(), rediacc.Machine{Name: name, Host: s.Host, Port: s.Port, User: s.User,
					IdentityFile: s.ClientKeyPath, KnownHostsFile: s.KnownHostsPath}); err != nil {
					b.Fatal(err)
				}
				names = append(names, name)
			}
			p.startWorkers(workers, pgChild{Lease: 30 * time.Second, Poll: 500 * time.Millisecond, Concurrency: 16, PerMachine: fanOutPerHost})
			specs := make([]rediacc.TaskSpec, fanOutTasks)
			for i := range specs {
				specs[i] = rediacc.TaskSpec{Machine: names[i%len(names)], Command: "true"}
			}
			start := time.Now()
			if _, err := p.c.SubmitBatch(asOwner(), specs); err != nil {
				b.Fatal(err)
			}
			p.waitCompleted(fanOutTasks)
			rates[workers] = fanOutTasks / time.Since(start).Seconds()
			p.stop()
			b.ReportMetric(rates[workers], fmt.Sprintf("%dw-tasks/s", workers))
		}
		b.ReportMetric(rates[2]/rates[1], "scaling-2w/1w")
		b.ReportMetric(rates[4]/rates[1], "scaling-4w/1w")
	}
	b.ReportMetric(0, "ns/op")
}

// BenchmarkPostgresWakeLatency measures the time from Submit to the start
// of the task's attempt (its StartedAt, written by the worker) on an idle
// worker in another process that never polls (PollInterval 1 h): the
// wake-up comes through LISTEN/NOTIFY alone. The no-op runner finishes
// each task at once; each sample waits for the task to complete and a
// random pause, so that the worker is idle again. Reported: p50, p99 and
// max, in milliseconds ($REDIACC_BENCH_SAMPLES samples, default 200).
//
//	go test -run '^$' -bench PostgresWakeLatency -benchtime 1x .
func BenchmarkPostgresWakeLatency(b *testing.B) {
	samples := 200
	if n, err := strconv.Atoi(os.Getenv("REDIACC_BENCH_SAMPLES")); err == nil && n > 0 {
		samples = n
	}
	for range b.N {
		p := newPGBench(b)
		machines := p.noopMachines(1)
		p.startWorkers(1, pgChild{Noop: true, Lease: 30 * time.Second, Poll: time.Hour, Concurrency: 16, PerMachine: 8})
		time.Sleep(time.Second) // the worker goes idle
		var lat []time.Duration
		for i := range samples {
			at := time.Now()
			tk, err := p.c.Submit(asOwner(), rediacc.TaskSpec{Machine: machines[0], Command: "true"})
			if err != nil {
				b.Fatal(err)
			}
			deadline := time.Now().Add(time.Minute)
			for {
				got, err := p.c.Get(asOwner(), tk.ID)
				if err != nil {
					b.Fatal(err)
				}
				if got.Status == rediacc.StatusCompleted {
					lat = append(lat, got.History[0].StartedAt.Sub(at))
					break
				}
				if time.Now().After(deadline) {
					p.dumpLogs()
					b.Fatalf("sample %d: task %s still %s after a minute", i, tk.ID, got.Status)
				}
				time.Sleep(2 * time.Millisecond)
			}
			time.Sleep(time.Duration(10+i%20) * time.Millisecond)
		}
		p.stop()
		slices.Sort(lat)
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
		b.ReportMetric(ms(lat[(len(lat)*99)/100]), "p99-ms")
		b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
	}
	b.ReportMetric(0, "ns/op")
}
