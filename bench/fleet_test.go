package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// ScaleEnv names the environment variable that, set to "1", runs the scale
// benchmarks (BenchmarkFleet, BenchmarkBacklog): they take minutes and
// hundreds of processes, so a plain `go test -bench .` skips them.
const ScaleEnv = "REDIACC_BENCH_SCALE"

func requireScale(b *testing.B) {
	if os.Getenv(ScaleEnv) != "1" {
		b.Skip("scale benchmark: set " + ScaleEnv + "=1 to run it (minutes; see docs/BENCHMARKS.md)")
	}
}

// fleetSize is 200, or REDIACC_BENCH_FLEET.
func fleetSize() int {
	if n, err := strconv.Atoi(os.Getenv("REDIACC_BENCH_FLEET")); err == nil && n > 0 {
		return n
	}
	return 200
}

// fleetFirst puts the fleet on 127.0.0.155–254 and 127.0.1.1–… (loopbackAddr).
const fleetFirst = 154

// BenchmarkFleet: 200 real sshd (127.0.0.155–254, 127.0.1.1–100) and one
// worker.
//
//   - bare: x/crypto/ssh dials every machine at once and runs the command
//     on each; the connections are held to measure their memory.
//   - cli: the example CLI, 200 machines in team "fleet", `create task
//     --team fleet --all --command 'date +%s%N'` (one task each), then the
//     timed `worker --until-empty --concurrency 200 --health-interval -1s`;
//     every task must complete. The remote command prints its start time
//     (same clock: loopback), so the time to first byte of machine k is
//     its output minus the worker's start; reported for the 200th machine
//     (the last to start), with the median and the worker's CPU and peak
//     RSS.
//   - lib: the same fan-out through the library in this process (SQLite
//     store, SSH IdleTimeout 30s, longer than the fan-out, so that no
//     connection idles out before it is counted): the pool's open connections, and the
//     heap and RSS growth per pooled connection (after GC, with the
//     connections held, against before the run); then how long the idle
//     connections take to be closed.
//
// Gated by REDIACC_BENCH_SCALE=1:
//
//	REDIACC_BENCH_SCALE=1 go test -run '^$' -bench Fleet -benchtime 1x -timeout 30m ./bench
func BenchmarkFleet(b *testing.B) {
	requireScale(b)
	n := fleetSize()
	t0 := time.Now()
	servers := startFleet(b, fleetFirst, n)
	startup := time.Since(t0)
	bin := buildCLI(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		load := loadAvg()
		c := cliRun{tb: b, bin: bin, dataDir: b.TempDir()}
		br := bareFleet(b, servers)
		cr := c.fleetFanOut(servers)
		lr := libFleet(b, servers)
		fmt.Printf("\n%d sshd started in %s; load average %s → %s\n", n, startup.Round(time.Millisecond), load, loadAvg())
		fmt.Printf("| run | fan-out wall time | TTFB median | TTFB of the %dth machine | client CPU | memory |\n|---|---|---|---|---|---|\n", n)
		fmt.Printf("| bare x/crypto/ssh, all at once | %s | %s | %s | %s (%.2f ms/task) | %d connections: heap +%.1f KB, RSS +%.1f KB per connection |\n",
			br.elapsed.Round(time.Millisecond), br.ttfbMedian.Round(time.Millisecond), br.ttfbLast.Round(time.Millisecond),
			br.cpu.Round(time.Millisecond), float64(br.cpu)/float64(time.Millisecond)/float64(n), br.conns, br.heapPerConn/1e3, br.rssPerConn/1e3)
		fmt.Printf("| CLI worker --concurrency %d | %s | %s | %s | %s (%.2f ms/task) | peak RSS %.1f MB |\n", n,
			cr.elapsed.Round(time.Millisecond), cr.ttfbMedian.Round(time.Millisecond), cr.ttfbLast.Round(time.Millisecond),
			cr.cpu.Round(time.Millisecond), float64(cr.cpu)/float64(time.Millisecond)/float64(n), float64(cr.maxRSS)/1e6)
		fmt.Printf("| library worker, Concurrency %d | %s | %s | %s | %s (%.2f ms/task) | %d pooled connections: heap +%.1f KB, RSS +%.1f KB per connection |\n", n,
			lr.elapsed.Round(time.Millisecond), lr.ttfbMedian.Round(time.Millisecond), lr.ttfbLast.Round(time.Millisecond),
			lr.cpu.Round(time.Millisecond), float64(lr.cpu)/float64(time.Millisecond)/float64(n),
			lr.conns, lr.heapPerConn/1e3, lr.rssPerConn/1e3)
		fmt.Printf("idle connections (IdleTimeout %s): all %d closed %s after the last task\n", lr.idleTimeout, lr.conns, lr.idleClosed.Round(time.Millisecond))
		fmt.Printf("ratios to bare: TTFB of the last machine CLI %.2f×, library %.2f×; client CPU CLI %.2f×, library %.2f×; heap per connection library %.2f×\n",
			float64(cr.ttfbLast)/float64(br.ttfbLast), float64(lr.ttfbLast)/float64(br.ttfbLast),
			float64(cr.cpu)/float64(br.cpu), float64(lr.cpu)/float64(br.cpu), lr.heapPerConn/br.heapPerConn)
		b.ReportMetric(br.ttfbLast.Seconds()*1e3, "bare-ttfb-last-ms")
		b.ReportMetric(br.heapPerConn/1e3, "bare-heap-KB/conn")
		b.ReportMetric(cr.elapsed.Seconds(), "cli-fanout-s")
		b.ReportMetric(cr.ttfbLast.Seconds()*1e3, "cli-ttfb-last-ms")
		b.ReportMetric(float64(cr.maxRSS)/1e6, "cli-maxrss-MB")
		b.ReportMetric(lr.ttfbLast.Seconds()*1e3, "lib-ttfb-last-ms")
		b.ReportMetric(lr.heapPerConn/1e3, "heap-KB/conn")
		b.ReportMetric(lr.rssPerConn/1e3, "rss-KB/conn")
		b.ReportMetric(lr.idleClosed.Seconds(), "idle-closed-s")
		b.ReportMetric(0, "ns/op")
	}
}

type fleetResult struct {
	elapsed, cpu, ttfbMedian, ttfbLast time.Duration
	maxRSS                             int64
	conns                              int
	heapPerConn, rssPerConn            float64 // bytes
	idleTimeout, idleClosed            time.Duration
}

// ttfbCommand prints the time the command starts, in ns since the epoch.
const ttfbCommand = "date +%s%N"

// ttfbs turns the tasks' outputs into times to first byte since start,
// sorted.
func ttfbs(tb testing.TB, start time.Time, outs []string) []time.Duration {
	tb.Helper()
	var d []time.Duration
	for _, o := range outs {
		ns, err := strconv.ParseInt(strings.TrimSpace(o), 10, 64)
		if err != nil {
			tb.Fatalf("task output %q is not `date +%%s%%N`", o)
		}
		d = append(d, time.Unix(0, ns).Sub(start))
	}
	slices.Sort(d)
	return d
}

func (c cliRun) fleetFanOut(servers []*sshtest.OpenSSH) fleetResult {
	c.tb.Helper()
	c.ok("team", "create", "fleet")
	c.addMachines(servers, "fleet")
	c.ok("create", "task", "--team", "fleet", "--all", "--command", ttfbCommand)
	start := time.Now()
	_, ps := c.ok("worker", "--until-empty", "--concurrency", strconv.Itoa(len(servers)), "--health-interval", "-1s")
	r := fleetResult{elapsed: time.Since(start), cpu: cpuOf(ps), maxRSS: maxRSSOf(ps)}
	out, _ := c.ok("list", "queue", "--team", "fleet", "-o", "json")
	var tasks []struct {
		Status, Stdout string
	}
	if err := json.Unmarshal([]byte(out), &tasks); err != nil {
		c.tb.Fatalf("list queue -o json: %v", err)
	}
	var outs []string
	for _, t := range tasks {
		if t.Status != "COMPLETED" {
			c.tb.Fatalf("a fan-out task is %s, want COMPLETED", t.Status)
		}
		outs = append(outs, t.Stdout)
	}
	if len(outs) != len(servers) {
		c.tb.Fatalf("%d tasks, want one per machine (%d)", len(outs), len(servers))
	}
	d := ttfbs(c.tb, start, outs)
	r.ttfbMedian, r.ttfbLast = d[len(d)/2], d[len(d)-1]
	return r
}

// memNow returns the heap in use and the resident set after a GC that
// returns freed memory to the OS.
func memNow() (heap, rss uint64) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse, vmRSS()
}

// vmRSS reads VmRSS from /proc/self/status, in bytes.
func vmRSS() uint64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// openConns reads rediacc_ssh_connections_open from the client's collector.
func openConns(tb testing.TB, c *rediacc.Client) int {
	reg := prometheus.NewRegistry()
	if err := reg.Register(c.Collector()); err != nil {
		tb.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "rediacc_ssh_connections_open" && len(mf.GetMetric()) == 1 {
			return int(mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
	tb.Fatal("rediacc_ssh_connections_open not collected")
	return 0
}

func libFleet(b *testing.B, servers []*sshtest.OpenSSH) fleetResult {
	ctx := rediacc.WithActor(context.Background(), "bench")
	dir := b.TempDir()
	// Longer than the fan-out (11-15 s on a 2-core VM), so that every
	// connection is still pooled when the memory is read.
	r := fleetResult{idleTimeout: 30 * time.Second}
	cfg := rediacc.Config{DataDir: dir, Logger: slog.New(slog.DiscardHandler), Concurrency: len(servers),
		Health: rediacc.HealthConfig{Interval: -1}}
	cfg.SSH.IdleTimeout = r.idleTimeout
	c, err := rediacc.New(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, err := c.CreateTeam(ctx, "fleet", ""); err != nil {
		b.Fatal(err)
	}
	for i, s := range servers {
		if _, err := c.AddMachine(ctx, rediacc.Machine{Name: machineName(i), Team: "fleet", Host: s.Host, Port: s.Port, User: s.User,
			IdentityFile: s.ClientKeyPath, KnownHostsFile: s.KnownHostsPath}); err != nil {
			b.Fatal(err)
		}
	}
	ts, err := c.FanOut(ctx, rediacc.FanOutSpec{Team: "fleet", TaskSpec: rediacc.TaskSpec{Command: ttfbCommand}})
	if err != nil {
		b.Fatal(err)
	}
	heap0, rss0 := memNow()
	cpu0 := cpuSelf()
	start := time.Now()
	if err := c.RunUntilEmpty(ctx); err != nil {
		b.Fatal(err)
	}
	r.elapsed, r.cpu = time.Since(start), cpuSelf()-cpu0
	done := time.Now()
	heap1, rss1 := memNow()
	r.conns = openConns(b, c)
	if r.conns > 0 {
		r.heapPerConn = (float64(heap1) - float64(heap0)) / float64(r.conns)
		r.rssPerConn = (float64(rss1) - float64(rss0)) / float64(r.conns)
	}
	var outs []string
	for _, t := range ts {
		got, err := c.Get(ctx, t.ID)
		if err != nil {
			b.Fatal(err)
		}
		if got.Status != rediacc.StatusCompleted {
			b.Fatalf("task on %s is %s, want COMPLETED", got.Machine, got.Status)
		}
		outs = append(outs, got.Stdout)
	}
	d := ttfbs(b, start, outs)
	r.ttfbMedian, r.ttfbLast = d[len(d)/2], d[len(d)-1]
	for openConns(b, c) > 0 {
		if time.Since(done) > 10*r.idleTimeout {
			b.Fatalf("%d connections still open %s after the last task (IdleTimeout %s)", openConns(b, c), time.Since(done), r.idleTimeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.idleClosed = time.Since(done)
	return r
}

// bareFleet dials every server at once with x/crypto/ssh and runs
// ttfbCommand on each, holding the connections to measure their memory.
func bareFleet(b *testing.B, servers []*sshtest.OpenSSH) fleetResult {
	heap0, rss0 := memNow()
	cpu0 := cpuSelf()
	start := time.Now()
	clients := make([]*gossh.Client, len(servers))
	outs := make([]string, len(servers))
	errs := make(chan error, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cb, err := knownhosts.New(s.KnownHostsPath)
			if err != nil {
				errs <- err
				return
			}
			c, err := gossh.Dial("tcp", s.Addr(), &gossh.ClientConfig{User: s.User, Auth: []gossh.AuthMethod{gossh.PublicKeys(s.ClientSigner)},
				HostKeyCallback: cb, Timeout: time.Minute})
			if err != nil {
				errs <- fmt.Errorf("%s: %w", s.Addr(), err)
				return
			}
			clients[i] = c
			sess, err := c.NewSession()
			if err != nil {
				errs <- err
				return
			}
			defer sess.Close()
			out, err := sess.Output(ttfbCommand)
			if err != nil {
				errs <- err
				return
			}
			outs[i] = string(out)
		}()
	}
	wg.Wait()
	r := fleetResult{elapsed: time.Since(start), cpu: cpuSelf() - cpu0}
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	heap1, rss1 := memNow()
	r.conns = len(clients)
	r.heapPerConn = (float64(heap1) - float64(heap0)) / float64(r.conns)
	r.rssPerConn = (float64(rss1) - float64(rss0)) / float64(r.conns)
	d := ttfbs(b, start, outs)
	r.ttfbMedian, r.ttfbLast = d[len(d)/2], d[len(d)-1]
	return r
}
