package rediacc_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/internal/store/postgres/pgtest"
)

// Workers on many hosts sharing one PostgreSQL store, as separate OS
// processes (this test binary re-executed), against real sshd machines.

// pgChildEnv, when set, makes the test binary a child process of these
// tests (its JSON-encoded pgChild says what to do).
const pgChildEnv = "REDIACC_PG_CHILD"

type pgChild struct {
	Mode        string // "worker" or "audit"
	StoreURL    string
	DataDir     string
	AuditKey    string // the audit keyring file every process shares
	WorkerID    string
	Lease, Poll time.Duration
	PerMachine  int
	Concurrency int
	Goroutines  int // audit mode
	N           int // audit mode: submits per goroutine
	Machine     string
	Noop        bool // worker mode: attempts complete at once, no SSH (benchmarks)
}

// runPGChild runs a child and returns its exit code.
// fleetHealth: the fleet's workers probe every machine each second, so
// health probe sessions run beside the tasks' on the same connections and
// sshd (as on a real fleet), but never judge a machine busy: the busy gate
// holds priority 3–5 work by design (until aging or MaxHold ends it, up to
// 15 minutes here), which these tests' claim-order and timing checks are not
// about; health_test.go tests the gate itself.
var fleetHealth = rediacc.HealthConfig{Interval: time.Second,
	Thresholds: rediacc.HealthThresholds{CPUPercent: 101, MemPercent: 101}}

func runPGChild(spec string) int {
	var p pgChild
	if err := json.Unmarshal([]byte(spec), &p); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(asOwner(), syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := rediacc.New(ctx, rediacc.Config{StoreURL: p.StoreURL, DataDir: p.DataDir, AuditKeyFile: p.AuditKey, WorkerID: p.WorkerID, Logger: log,
		LeaseDuration: p.Lease, PollInterval: p.Poll, PerMachineLimit: p.PerMachine, Concurrency: p.Concurrency,
		Health: fleetHealth})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	defer c.Close()
	if p.Noop {
		rediacc.SetNoopRunnerForTest(c)
	}
	if dir := os.Getenv("REDIACC_BENCH_CPUPROFILE_DIR"); dir != "" { // profiles of worker processes (benchmarks)
		f, err := os.Create(filepath.Join(dir, strings.NewReplacer("/", "_").Replace(p.WorkerID)+".pprof"))
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer f.Close()
			defer pprof.StopCPUProfile()
		}
	}
	switch p.Mode {
	case "worker":
		if err := c.Run(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "child run:", err)
			return 1
		}
		return 0
	case "audit":
		var wg sync.WaitGroup
		var failed sync.Once
		code := 0
		for g := range p.Goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range p.N {
					_, err := c.Submit(ctx, rediacc.TaskSpec{Machine: p.Machine, Command: fmt.Sprintf("echo %s-%d-%d", p.WorkerID, g, i)})
					if err == nil && i%5 == 0 {
						_, err = c.List(ctx, rediacc.ListFilter{Limit: 1}) // an audited read
					}
					if err != nil {
						failed.Do(func() { fmt.Fprintln(os.Stderr, "child audit:", err); code = 1 })
						return
					}
				}
			}()
		}
		wg.Wait()
		return code
	}
	return 2
}

// fleet is a PostgreSQL store, its machines and the worker processes of a
// test.
type fleet struct {
	t        *testing.T
	url      string
	c        *rediacc.Client // the test's own client (submits, inspects)
	dir      string          // shared by the machines' commands (0777)
	machines []string
	lease    time.Duration
	auditKey string // the audit keyring file of the test's client, shared by every process (as hosts must share it)

	mu       sync.Mutex
	children map[string]*exec.Cmd // worker id -> process
	logs     []string
	n        int
}

func newFleet(t *testing.T, machines int, lease time.Duration) *fleet {
	t.Helper()
	url := pgtest.Schema(t)
	dir, err := os.MkdirTemp("", "rediacc-fleet-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	f := &fleet{t: t, url: url, dir: dir, lease: lease, children: map[string]*exec.Cmd{}}
	keyDir := t.TempDir()
	f.auditKey = filepath.Join(keyDir, "audit.key")
	f.c = f.client(nil)
	for i := range machines {
		name := fmt.Sprintf("m%d", i)
		srv := realSSHD(t, 20+i)
		if _, err := f.c.AddMachine(asOwner(), rediacc.Machine{Name: name, Host: srv.Host, Port: srv.Port, User: srv.User,
			IdentityFile: srv.ClientKeyPath, KnownHostsFile: srv.KnownHostsPath}); err != nil {
			t.Fatal(err)
		}
		f.machines = append(f.machines, name)
	}
	t.Cleanup(f.stopAll)
	return f
}

// client opens a client on the fleet's store in this process.
func (f *fleet) client(tune func(*rediacc.Config)) *rediacc.Client {
	f.t.Helper()
	cfg := rediacc.Config{StoreURL: f.url, DataDir: f.t.TempDir(), AuditKeyFile: f.auditKey, Logger: testLogger(f.t), PollInterval: 20 * time.Millisecond,
		LeaseDuration: f.lease, Health: fleetHealth}
	if tune != nil {
		tune(&cfg)
	}
	c, err := rediacc.New(asOwner(), cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = c.Close() })
	return c
}

// start starts a worker process on store url and returns its worker id.
// Its id names another host, so that rescues come from lease expiry, as
// between hosts, not from seeing a local process gone.
func (f *fleet) start(url string) string {
	f.t.Helper()
	f.mu.Lock()
	f.n++
	id := fmt.Sprintf("host-%d/%d/w", f.n, 1000+f.n)
	logPath := filepath.Join(f.dir, fmt.Sprintf("worker-%d.log", f.n))
	f.mu.Unlock()
	f.run(pgChild{Mode: "worker", StoreURL: url, DataDir: f.t.TempDir(), AuditKey: f.auditKey, WorkerID: id, Lease: f.lease,
		Poll: 200 * time.Millisecond, PerMachine: 3, Concurrency: 8}, id, logPath)
	return id
}

func (f *fleet) run(p pgChild, id, logPath string) *exec.Cmd {
	f.t.Helper()
	spec, _ := json.Marshal(p)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), pgChildEnv+"="+string(spec))
	logf, err := os.Create(logPath)
	if err != nil {
		f.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	logf.Close()
	f.mu.Lock()
	f.children[id] = cmd
	f.logs = append(f.logs, logPath)
	f.mu.Unlock()
	return cmd
}

// kill9 kills worker id with SIGKILL.
func (f *fleet) kill9(id string) {
	f.mu.Lock()
	cmd := f.children[id]
	delete(f.children, id)
	f.mu.Unlock()
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// stopAll stops every worker with SIGTERM (a shutdown) and waits.
func (f *fleet) stopAll() {
	f.mu.Lock()
	cs := f.children
	f.children = map[string]*exec.Cmd{}
	f.mu.Unlock()
	for _, cmd := range cs {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, cmd := range cs {
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	if f.t.Failed() {
		for _, l := range f.logs {
			b, _ := os.ReadFile(l)
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			f.t.Logf("%s:\n%s", l, b)
		}
	}
}

// command is a task's command: it records its start on the machine with
// the number of tasks running there at that moment, runs for sleep, and
// appends its id to the machine's done file.
func (f *fleet) command(machine, id string, prio int, sleep string) string {
	d := filepath.Join(f.dir, machine)
	return fmt.Sprintf(`d=%s; mkdir -p $d/run; : > $d/run/%[2]s; n=$(ls $d/run | wc -l); echo "%[2]s %[3]d $n" >> $d/start; sleep %[4]s; rm -f $d/run/%[2]s; echo %[2]s >> $d/done`,
		d, id, prio, sleep)
}

// submit queues n tasks spread over the machines with priorities 1..5,
// named by a tag; it returns their ids.
func (f *fleet) submit(tag string, n int, sleep string) []string {
	f.t.Helper()
	specs := make([]rediacc.TaskSpec, n)
	for i := range specs {
		m := f.machines[i%len(f.machines)]
		prio := 1 + (i/len(f.machines))%5
		key := fmt.Sprintf("%s-%04d", tag, i)
		specs[i] = rediacc.TaskSpec{Machine: m, Priority: rediacc.Priority(prio), IdempotencyKey: key, Command: f.command(m, key, prio, sleep)}
	}
	ts, err := f.c.SubmitBatch(asOwner(), specs)
	if err != nil {
		f.t.Fatal(err)
	}
	ids := make([]string, len(ts))
	for i, t := range ts {
		ids[i] = t.ID
	}
	return ids
}

// waitIdle waits until no task is PENDING, ASSIGNED or PROCESSING.
func (f *fleet) waitIdle(timeout time.Duration) {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ts, err := f.c.List(asOwner(), rediacc.ListFilter{Statuses: []rediacc.Status{rediacc.StatusPending, rediacc.StatusAssigned, rediacc.StatusProcessing}})
		if err != nil {
			f.t.Fatal(err)
		}
		if len(ts) == 0 {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("%d tasks still unfinished after %s (first: %s %s)", len(ts), timeout, ts[0].ID, ts[0].Status)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// machineLines reads a machine's start or done file.
func (f *fleet) machineLines(machine, file string) [][]string {
	f.t.Helper()
	fh, err := os.Open(filepath.Join(f.dir, machine, file))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		f.t.Fatal(err)
	}
	defer fh.Close()
	var out [][]string
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		out = append(out, strings.Fields(sc.Text()))
	}
	return out
}

// checkCompletedOnce checks that every task of ids completed with exactly
// one succeeded attempt (attempts not used up by crashes or cuts) and
// returns the tasks.
func (f *fleet) checkCompletedOnce(ids []string) map[string]*rediacc.Task {
	f.t.Helper()
	out := map[string]*rediacc.Task{}
	for _, id := range ids {
		tk := get(f.t, f.c, id)
		succeeded := 0
		for _, a := range tk.History {
			if a.Outcome == "succeeded" {
				succeeded++
			}
		}
		if tk.Status != rediacc.StatusCompleted || succeeded != 1 || tk.Attempts != 1 {
			f.t.Errorf("task %s: status %s, attempts %d, %d succeeded attempts: %+v", id, tk.Status, tk.Attempts, succeeded, tk.History)
		}
		out[id] = tk
	}
	return out
}

// TestPostgresFleet: 4 worker processes share 2,000 tasks over 10 real
// sshd machines: every task runs exactly once (its id appended once to its
// machine's done file), no machine ever runs more than the per-machine
// limit (each command counts its running siblings), the work is shared,
// and priorities hold across workers.
func TestPostgresFleet(t *testing.T) {
	total := 2000
	if testing.Short() {
		total = 200
	}
	f := newFleet(t, 10, 10*time.Second)
	ids := f.submit("fleet", total, "0.01")
	for range 4 {
		f.start(f.url)
	}
	f.waitIdle(20 * time.Minute)
	f.stopAll()
	tasks := f.checkCompletedOnce(ids)

	keyOf := map[string]string{}
	for _, tk := range tasks {
		keyOf[tk.IdempotencyKey] = tk.ID
	}
	byWorker := map[string]int{}
	for _, tk := range tasks {
		byWorker[tk.History[len(tk.History)-1].Worker]++
	}
	if len(byWorker) != 4 {
		t.Errorf("tasks by worker: %v, want all 4 workers to have run tasks", byWorker)
	}
	runs := map[string]int{}
	for _, m := range f.machines {
		for _, l := range f.machineLines(m, "done") {
			runs[l[0]]++
		}
		starts := f.machineLines(m, "start")
		maxRunning, firstStart, lastStart := 0, map[int]int{}, map[int]int{}
		for i, l := range starts {
			prio, _ := strconv.Atoi(l[1])
			n, _ := strconv.Atoi(l[2])
			maxRunning = max(maxRunning, n)
			if _, ok := firstStart[prio]; !ok {
				firstStart[prio] = i
			}
			lastStart[prio] = i
		}
		if maxRunning > 3 {
			t.Errorf("machine %s ran %d tasks at once, limit 3", m, maxRunning)
		}
		// Each machine's tasks were all queued before the workers started:
		// claims on it follow priority, so every priority-p task starts
		// before any task three or more levels lower (a margin of many
		// tasks keeps start-up jitter between workers out of it).
		for p := 1; p <= 2; p++ {
			for q := p + 3; q <= 5; q++ {
				if lastStart[p] > firstStart[q] {
					t.Errorf("machine %s: a priority-%d task started (line %d) before the last priority-%d task (line %d)",
						m, q, firstStart[q], p, lastStart[p])
				}
			}
		}
	}
	for key := range keyOf {
		if runs[key] != 1 {
			t.Errorf("task %s ran %d times", key, runs[key])
		}
	}
	t.Logf("%d tasks, by worker: %v", total, byWorker)
}

// TestPostgresKill9: workers killed with SIGKILL 20 times at random
// moments, each replaced by a new process: nothing is lost, nothing
// completed twice (one succeeded attempt, no attempt used up by a crash),
// nothing left running, and each killed worker's tasks were rescued within
// the lease and one heartbeat of its death (plus a margin for a loaded
// host).
func TestPostgresKill9(t *testing.T) {
	const lease = 3 * time.Second
	f := newFleet(t, 10, lease)
	total, kills := 300, 20
	if testing.Short() {
		total, kills = 100, 5
	}
	ids := f.submit("kill", total, "0.3")
	var workers []string
	for range 4 {
		workers = append(workers, f.start(f.url))
	}
	killedAt := map[string]time.Time{}
	for range kills {
		time.Sleep(time.Duration(200+rand.IntN(1300)) * time.Millisecond)
		i := rand.IntN(len(workers))
		killedAt[workers[i]] = time.Now()
		f.kill9(workers[i])
		workers[i] = f.start(f.url)
	}
	f.waitIdle(15 * time.Minute)
	f.stopAll()
	tasks := f.checkCompletedOnce(ids)
	heartbeat := min(lease/3, time.Second)
	bound := lease + heartbeat + 10*time.Second // margin: a busy 2-core host running other packages' tests
	rescued, worst := 0, time.Duration(0)
	for _, tk := range tasks {
		for _, a := range tk.History {
			k, ok := killedAt[a.Worker]
			if a.Outcome != "interrupted" || !ok {
				continue
			}
			rescued++
			d := a.EndedAt.Sub(k)
			worst = max(worst, d)
			if d > bound {
				t.Errorf("task %s: worker %s killed at %s, its attempt rescued %s later (bound %s)", tk.ID, a.Worker, k.Format(time.TimeOnly), d, bound)
			}
		}
	}
	if rescued == 0 {
		t.Errorf("no attempt was rescued from the %d killed workers", kills)
	}
	t.Logf("%d kills, %d attempts rescued, slowest rescue %s after the kill (lease %s)", kills, rescued, worst, lease)
}

// cutProxy is a TCP proxy between one worker and PostgreSQL whose
// connections can be cut (closed, new ones refused) and restored.
type cutProxy struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	cut      bool
	conns    map[net.Conn]bool
	wg       sync.WaitGroup
}

func newCutProxy(t *testing.T, upstream string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, upstream: upstream, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.setCut(true); p.wg.Wait() })
	return p
}

func (p *cutProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.upstream)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[u] = true, true
		p.mu.Unlock()
		p.wg.Add(2)
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
		}
		go pipe(c, u)
		go pipe(u, c)
	}
}

// setCut cuts (closing every connection) or restores the proxy.
func (p *cutProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		p.conns = map[net.Conn]bool{}
	}
}

// TestPostgresConnectionCut: one worker's database connections are cut
// (through a TCP proxy) for longer than the lease, then restored: the
// tasks it held are finished by the other workers (with the exit status of
// its copies when they had ended), its late results are discarded (one
// result per task), and it rejoins and runs tasks again.
func TestPostgresConnectionCut(t *testing.T) {
	const lease = 3 * time.Second
	f := newFleet(t, 10, lease)
	u, err := url_(f.url)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newCutProxy(t, u.Host)
	proxied := strings.Replace(f.url, u.Host, proxy.ln.Addr().String(), 1)
	ids := f.submit("cut", 120, "1")
	cutWorker := f.start(proxied)
	for range 3 {
		f.start(f.url)
	}
	// Wait until the proxied worker runs tasks, then cut it off.
	var held []string
	deadline := time.Now().Add(5 * time.Minute)
	for len(held) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the proxied worker never ran tasks")
		}
		ts, err := f.c.List(asOwner(), rediacc.ListFilter{Statuses: []rediacc.Status{rediacc.StatusProcessing}})
		if err != nil {
			t.Fatal(err)
		}
		held = held[:0]
		for _, tk := range ts {
			if len(tk.History) > 0 && tk.History[len(tk.History)-1].Worker == cutWorker {
				held = append(held, tk.ID)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	proxy.setCut(true)
	time.Sleep(2*lease + time.Second)
	proxy.setCut(false)
	restored := time.Now()
	more := f.submit("after", 60, "0.5")
	f.waitIdle(10 * time.Minute)
	// The proxied worker rejoined: it runs tasks again (bounded wait: the
	// others may have taken the second wave).
	rejoined := false
	for _, id := range more {
		tk := get(t, f.c, id)
		if w := tk.History[len(tk.History)-1].Worker; w == cutWorker && tk.History[len(tk.History)-1].StartedAt.After(restored) {
			rejoined = true
		}
	}
	if !rejoined {
		extra := f.submit("rejoin", 40, "0.2")
		f.waitIdle(5 * time.Minute)
		for _, id := range extra {
			tk := get(t, f.c, id)
			if tk.History[len(tk.History)-1].Worker == cutWorker {
				rejoined = true
			}
		}
		more = append(more, extra...)
	}
	f.stopAll()
	tasks := f.checkCompletedOnce(append(ids, more...))
	for _, id := range held {
		tk := tasks[id]
		last := tk.History[len(tk.History)-1]
		// Another worker finished it: it ran it again after stopping the
		// cut worker's copy, or recorded that copy's exit status read from
		// the machine (Recovered: the execution guarantee, no second run).
		if last.Worker == cutWorker && !last.Recovered {
			t.Errorf("task %s, held by the cut worker, was completed by it: %+v", id, tk.History)
		}
	}
	if !rejoined {
		t.Error("the cut worker ran no task after its connection came back")
	}
	t.Logf("cut worker held %d tasks when cut: %v", len(held), held)
}

func url_(dsn string) (*urlParts, error) {
	rest, ok := strings.CutPrefix(dsn, "postgres://")
	if !ok {
		return nil, fmt.Errorf("test DSN %q is not a postgres:// URL", dsn)
	}
	if i := strings.IndexByte(rest, '@'); i >= 0 {
		rest = rest[i+1:]
	}
	host, _, _ := strings.Cut(rest, "/")
	return &urlParts{Host: host}, nil
}

type urlParts struct{ Host string }

// TestPostgresAuditWriters: 4 processes of 8 goroutines each append audit
// records at once (submits and audited reads); the chain stays one order
// that verifies intact.
func TestPostgresAuditWriters(t *testing.T) {
	f := newFleet(t, 1, 10*time.Second)
	before, err := f.c.VerifyAudit(asOwner())
	if err != nil {
		t.Fatal(err)
	}
	var cmds []*exec.Cmd
	for i := range 4 {
		id := fmt.Sprintf("auditor-%d", i)
		cmds = append(cmds, f.run(pgChild{Mode: "audit", StoreURL: f.url, DataDir: t.TempDir(), AuditKey: f.auditKey, WorkerID: id,
			Lease: 10 * time.Second, Poll: time.Second, Goroutines: 8, N: 15, Machine: f.machines[0]}, id, filepath.Join(f.dir, id+".log")))
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("audit writer %d: %v", i, err)
		}
	}
	f.mu.Lock()
	f.children = map[string]*exec.Cmd{}
	f.mu.Unlock()
	n, err := f.c.VerifyAudit(asOwner())
	if err != nil {
		t.Fatalf("audit verify after concurrent writers: %v", err)
	}
	if want := before + 4*8*(15+3); n < want {
		t.Fatalf("audit verify checked %d records, want at least %d", n, want)
	}
	t.Logf("%d audit records verified", n)
}

// TestPostgresWakeup: an idle worker that never polls (poll interval and
// lease of an hour) picks up a task submitted by another process's client
// through LISTEN/NOTIFY.
func TestPostgresWakeup(t *testing.T) {
	f := newFleet(t, 1, time.Hour)
	w := f.client(func(c *rediacc.Config) { c.PollInterval = time.Hour })
	stop := runWorker(t, w)
	defer stop()
	time.Sleep(500 * time.Millisecond) // let the worker go idle
	var worst time.Duration
	for i := range 5 {
		start := time.Now()
		tk := submit(t, f.c, rediacc.TaskSpec{Machine: "m0", Command: "true"})
		deadline := time.Now().Add(2 * time.Minute)
		for {
			got := get(t, f.c, tk.ID)
			if got.Status != rediacc.StatusPending {
				worst = max(worst, time.Since(start))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("task %d still PENDING after 2 minutes: the worker was not woken", i)
			}
			time.Sleep(5 * time.Millisecond)
		}
		waitStatus(t, f.c, tk.ID, rediacc.StatusCompleted)
	}
	t.Logf("slowest submit-to-claim on an idle worker without polling: %s", worst)
}
