package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/internal/benchutil"
	rssh "github.com/rediacc/rediacc/ssh"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// The shape of issue 11's table: 10 machines, 1,000 `true` tasks, 8 in
// flight per machine, the CLI worker with --concurrency 80.
const (
	tableMachines = 10
	tablePerHost  = 8
	tableWorkers  = 80
	tableFirst    = 59 // 127.0.0.60 … 127.0.0.69
)

// tableTasks is 1,000, or REDIACC_BENCH_TASKS.
func tableTasks() int {
	if n, err := strconv.Atoi(os.Getenv("REDIACC_BENCH_TASKS")); err == nil && n > 0 {
		return n
	}
	return 1000
}

// result is one row of the table.
type result struct {
	name    string
	elapsed time.Duration
	cpu     time.Duration // the client's CPU time; 0 = not measured
	jiffies int64         // the whole machine's busy CPU, clock ticks
	tasks   int
	note    string
}

func (r result) tps() float64 { return float64(r.tasks) / r.elapsed.Seconds() }
func (r result) cpuMS() float64 {
	return float64(r.cpu) / float64(time.Millisecond) / float64(r.tasks)
}
func (r result) machineMS() float64 { return float64(r.jiffies) * 10 / float64(r.tasks) }

// measure runs f and fills the row's elapsed time and machine CPU; f
// returns the client CPU it measured itself (0 for none).
func measure(name string, tasks int, f func() (elapsed, cpu time.Duration, note string)) result {
	j := busyJiffies()
	el, cpu, note := f()
	return result{name: name, elapsed: el, cpu: cpu, jiffies: busyJiffies() - j, tasks: tasks, note: note}
}

// BenchmarkTable reproduces issue 11's table in one run: 10 real OpenSSH
// sshd on 127.0.0.60–69, 1,000 `true` tasks, measured one after the other
// on the same servers:
//
//   - bare: x/crypto/ssh, two pooled connections per machine (OpenSSH's
//     MaxSessions refuses new sessions on one connection from about 8 in
//     flight), 8 sessions in flight per machine; dialing counts; client
//     CPU from this process's rusage. Run first and last; the ratios use
//     the mean of the two.
//   - bare, the pool's exec string: the bare client running, for each
//     task, the exec string the SDK's pool sends for `true` with a RunID
//     (ssh.ExecString: the marker prelude, the script in the login shell):
//     what the SDK costs the machine, apart from its own client.
//   - controlmaster: the `ssh` binary with one ControlMaster per machine
//     (started in the timed window), `xargs -P10` running `ssh HOST true`;
//     client CPU = the masters' and every ssh client's rusage.
//   - cli-sqlite: the example CLI (built from examples/rediacc): `create
//     batch` untimed, then `worker --until-empty --concurrency 80
//     --health-interval -1s` timed; durable SQLite store, audit trail on;
//     client CPU = the worker process's rusage.
//   - lib-sqlite, lib-memory: the same worker in this process through the
//     library (SubmitBatch untimed, RunUntilEmpty timed; the CLI has no
//     memory store since its commands are separate processes); client CPU
//     from this process's rusage.
//
// It prints the table with ratios to the bare client and reports every
// figure with b.ReportMetric. REDIACC_BENCH_PROFILE=DIR writes CPU
// profiles of the library rows' timed part (lib-sqlite-N.pprof,
// lib-memory-N.pprof) and of the CLI worker process (cli-worker-N.pprof,
// through the CLI's REDIACC_CPUPROFILE). Run it with
//
//	go test -run '^$' -bench Table -benchtime 1x ./bench
func BenchmarkTable(b *testing.B) {
	tasks := tableTasks()
	servers := startFleet(b, tableFirst, tableMachines)
	bin := buildCLI(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		load := loadAvg()
		var rows []result
		rows = append(rows, measure("bare x/crypto/ssh (first)", tasks, func() (time.Duration, time.Duration, string) {
			return bareRun(b, servers, tasks), 0, ""
		}))
		rows[0].cpu = lastBareCPU
		// The exec strings are built before the clock starts: the pool
		// builds them in the SDK rows, the bare client here only sends them.
		stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
		remotes := make([]string, tasks)
		for n := range remotes {
			var err error
			if remotes[n], err = rssh.ExecString(rssh.Command{Cmd: "true", RunID: "bench-" + stamp + "-" + strconv.Itoa(n)}); err != nil {
				b.Fatal(err)
			}
		}
		rows = append(rows, measure("bare x/crypto/ssh, the pool's exec string", tasks, func() (time.Duration, time.Duration, string) {
			return bareRunCommand(b, servers, tasks, func(n int) string { return remotes[n] }), 0, "marked run, markers not released"
		}))
		rows[1].cpu = lastBareCPU
		rows = append(rows, measure("OpenSSH ControlMaster, xargs -P10", tasks, func() (time.Duration, time.Duration, string) {
			return controlMasterRun(b, servers, tasks)
		}))
		rows = append(rows, measure("rediacc CLI worker, SQLite", tasks, func() (time.Duration, time.Duration, string) {
			return cliRun{tb: b, bin: bin, dataDir: b.TempDir()}.fanOut(servers, tasks)
		}))
		rows = append(rows, measure("rediacc library worker, SQLite", tasks, func() (time.Duration, time.Duration, string) {
			return libRun(b, servers, tasks, false)
		}))
		rows = append(rows, measure("rediacc library worker, memory store", tasks, func() (time.Duration, time.Duration, string) {
			return libRun(b, servers, tasks, true)
		}))
		last := measure("bare x/crypto/ssh (last)", tasks, func() (time.Duration, time.Duration, string) {
			return bareRun(b, servers, tasks), 0, ""
		})
		last.cpu = lastBareCPU
		rows = append(rows, last)
		printTable(b, rows, load+" → "+loadAvg())
	}
}

// printTable prints rows with ratios to the mean of the two bare rows and
// reports each figure as a metric.
func printTable(b *testing.B, rows []result, load string) {
	bare := rows[0]
	bareLast := rows[len(rows)-1]
	bareTPS := (bare.tps() + bareLast.tps()) / 2
	bareCPU := (bare.cpuMS() + bareLast.cpuMS()) / 2
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%d machines, %d `true` tasks; load average %s\n", tableMachines, rows[0].tasks, load)
	fmt.Fprintf(&sb, "| run | tasks/s | × bare | client CPU ms/task | × bare | machine CPU ms/task | notes |\n|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		cpu, cpuRatio := "–", "–"
		if r.cpu > 0 {
			cpu, cpuRatio = fmt.Sprintf("%.2f", r.cpuMS()), fmt.Sprintf("%.1f", r.cpuMS()/bareCPU)
		}
		fmt.Fprintf(&sb, "| %s | %.0f | %.2f | %s | %s | %.1f | %s |\n", r.name, r.tps(), r.tps()/bareTPS, cpu, cpuRatio, r.machineMS(), r.note)
	}
	fmt.Print(sb.String())
	for _, r := range rows[1 : len(rows)-1] {
		key := metricKey(r.name)
		b.ReportMetric(r.tps(), key+"-tasks/s")
		b.ReportMetric(r.tps()/bareTPS, key+"-x-bare-tput")
		if r.cpu > 0 {
			b.ReportMetric(r.cpuMS(), key+"-cpu-ms/task")
			b.ReportMetric(r.cpuMS()/bareCPU, key+"-x-bare-cpu")
		}
	}
	b.ReportMetric(bareTPS, "bare-tasks/s")
	b.ReportMetric(bareCPU, "bare-cpu-ms/task")
	b.ReportMetric(0, "ns/op")
}

func metricKey(name string) string {
	switch {
	case strings.HasPrefix(name, "OpenSSH"):
		return "cm"
	case strings.Contains(name, "exec string"):
		return "bare-marked"
	case strings.Contains(name, "CLI"):
		return "cli"
	case strings.Contains(name, "memory"):
		return "lib-mem"
	default:
		return "lib-sqlite"
	}
}

// lastBareCPU is the client CPU of the last bareRun.
var lastBareCPU time.Duration

// bareRun runs tasks `true` sessions with x/crypto/ssh alone and returns
// the elapsed time (dialing included); lastBareCPU gets its CPU time.
func bareRun(b *testing.B, servers []*sshtest.OpenSSH, tasks int) time.Duration {
	return bareRunCommand(b, servers, tasks, func(int) string { return "true" })
}

// bareRunCommand is bareRun with exec string command(n) for task n.
func bareRunCommand(b *testing.B, servers []*sshtest.OpenSSH, tasks int, command func(n int) string) time.Duration {
	cpu0 := cpuSelf()
	elapsed, err := benchutil.BareFanOutCommand(servers, tasks, tablePerHost, command)
	lastBareCPU = cpuSelf() - cpu0
	if err != nil {
		b.Fatal(err)
	}
	return elapsed
}

// controlMasterRun runs the tasks with the ssh binary: a ControlMaster per
// machine, then `xargs -P10 ssh HOST true`. It returns the elapsed time
// (masters' start included) and the CPU of every ssh process.
func controlMasterRun(b *testing.B, servers []*sshtest.OpenSSH, tasks int) (time.Duration, time.Duration, string) {
	sshBin, err := exec.LookPath("ssh")
	if err != nil {
		b.Fatalf("ssh client not found (apt-get install openssh-client): %v", err)
	}
	dir, err := os.MkdirTemp("", "cm") // short: a socket path is at most 108 bytes
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	var cfg strings.Builder
	for i, s := range servers {
		fmt.Fprintf(&cfg, "Host %s\n  HostName %s\n  Port %d\n  User %s\n  IdentityFile %s\n  IdentitiesOnly yes\n"+
			"  UserKnownHostsFile %s\n  StrictHostKeyChecking yes\n  CheckHostIP no\n  BatchMode yes\n  LogLevel ERROR\n"+
			"  ControlPath %s\n  ControlMaster no\n",
			machineName(i), s.Host, s.Port, s.User, s.ClientKeyPath, s.KnownHostsPath, filepath.Join(dir, "s-"+machineName(i)))
	}
	cfgPath := filepath.Join(dir, "config")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	var hosts strings.Builder
	for n := 0; n < tasks; n++ {
		fmt.Fprintln(&hosts, machineName(n%len(servers)))
	}
	var cpu time.Duration
	start := time.Now()
	masters := make([]*exec.Cmd, len(servers))
	for i := range servers {
		masters[i] = exec.Command(sshBin, "-F", cfgPath, "-M", "-N", "-o", "ControlMaster=yes", machineName(i))
		if err := masters[i].Start(); err != nil {
			b.Fatal(err)
		}
	}
	defer func() {
		for i, m := range masters {
			if m.ProcessState == nil {
				_ = exec.Command(sshBin, "-F", cfgPath, "-O", "exit", machineName(i)).Run()
				_ = m.Process.Kill()
				_ = m.Wait()
			}
		}
	}()
	for i := range servers { // wait until each master accepts clients
		for deadline := time.Now().Add(30 * time.Second); ; {
			chk := exec.Command(sshBin, "-F", cfgPath, "-O", "check", machineName(i))
			err := chk.Run()
			cpu += cpuOf(chk.ProcessState)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("ControlMaster for %s not ready after 30s: %v", machineName(i), err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	xargs := exec.Command("xargs", "-P", "10", "-I", "{}", sshBin, "-F", cfgPath, "{}", "true")
	xargs.Stdin = strings.NewReader(hosts.String())
	if out, err := xargs.CombinedOutput(); err != nil {
		b.Fatalf("xargs ssh: %v: %s", err, out)
	}
	elapsed := time.Since(start)
	cpu += cpuOf(xargs.ProcessState) // xargs and every ssh it waited for
	for i, m := range masters {
		_ = exec.Command(sshBin, "-F", cfgPath, "-O", "exit", machineName(i)).Run()
		_ = m.Wait()
		cpu += cpuOf(m.ProcessState)
	}
	return elapsed, cpu, "a process per task"
}

// fanOut is the CLI row: machines added, `create batch` of tasks `true`
// (untimed), then the timed `worker --until-empty`.
func (c cliRun) fanOut(servers []*sshtest.OpenSSH, tasks int) (time.Duration, time.Duration, string) {
	c.tb.Helper()
	c.addMachines(servers, "")
	var batch strings.Builder
	for n := 0; n < tasks; n++ {
		fmt.Fprintf(&batch, "{\"machine\": %q, \"command\": \"true\"}\n", machineName(n%len(servers)))
	}
	file := filepath.Join(c.dataDir, "batch.jsonl")
	if err := os.WriteFile(file, []byte(batch.String()), 0o600); err != nil {
		c.tb.Fatal(err)
	}
	c.ok("create", "batch", "-f", file)
	w := c
	if dir := os.Getenv("REDIACC_BENCH_PROFILE"); dir != "" {
		w.env = append(w.env, "REDIACC_CPUPROFILE="+filepath.Join(dir, fmt.Sprintf("cli-worker-%d.pprof", tasks)))
	}
	start := time.Now()
	_, ps := w.ok("worker", "--until-empty", "--concurrency", strconv.Itoa(tableWorkers), "--health-interval", "-1s")
	elapsed := time.Since(start)
	c.expectCompleted(tasks)
	return elapsed, cpuOf(ps), fmt.Sprintf("worker max RSS %.0f MB", float64(maxRSSOf(ps))/1e6)
}

// expectCompleted fails unless `list queue --stats` counts n COMPLETED tasks.
func (c cliRun) expectCompleted(n int) {
	c.tb.Helper()
	out, _ := c.ok("list", "queue", "--stats", "-o", "json")
	var st struct {
		ByStatus map[string]map[string]int `json:"byStatus"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		c.tb.Fatalf("list queue --stats -o json: %v: %s", err, out)
	}
	got := 0
	for _, k := range st.ByStatus["COMPLETED"] {
		got += k
	}
	if got != n {
		c.tb.Fatalf("%d of %d tasks COMPLETED: %s", got, n, out)
	}
}

// libRun is the library row: a Client with the embedded SQLite store (or
// the memory store), the same settings as the CLI worker, logging at INFO
// to a file like the CLI; SubmitBatch untimed, RunUntilEmpty timed.
func libRun(b *testing.B, servers []*sshtest.OpenSSH, tasks int, memory bool) (time.Duration, time.Duration, string) {
	ctx := rediacc.WithActor(context.Background(), "bench")
	dir := b.TempDir()
	logf, err := os.Create(filepath.Join(dir, "worker.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	cfg := rediacc.Config{DataDir: dir, Logger: slog.New(slog.NewTextHandler(logf, nil)),
		Concurrency: tableWorkers, Health: rediacc.HealthConfig{Interval: -1}}
	if memory {
		cfg.Store = rediacc.NewMemoryStore()
	}
	c, err := rediacc.New(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for i, s := range servers {
		if _, err := c.AddMachine(ctx, rediacc.Machine{Name: machineName(i), Host: s.Host, Port: s.Port, User: s.User,
			IdentityFile: s.ClientKeyPath, KnownHostsFile: s.KnownHostsPath}); err != nil {
			b.Fatal(err)
		}
	}
	specs := make([]rediacc.TaskSpec, tasks)
	for n := range specs {
		specs[n] = rediacc.TaskSpec{Machine: machineName(n % len(servers)), Command: "true"}
	}
	if _, err := c.SubmitBatch(ctx, specs); err != nil {
		b.Fatal(err)
	}
	what := "lib-sqlite"
	if memory {
		what = "lib-memory"
	}
	stop := benchProfile(b, what, tasks)
	cpu0 := cpuSelf()
	start := time.Now()
	if err := c.RunUntilEmpty(ctx); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	stop()
	cpu := cpuSelf() - cpu0
	st, err := c.QueueStats(ctx, rediacc.StatsFilter{})
	if err != nil {
		b.Fatal(err)
	}
	if got := st.Finished.Completed; got != tasks {
		b.Fatalf("%d of %d tasks completed", got, tasks)
	}
	return elapsed, cpu, ""
}
