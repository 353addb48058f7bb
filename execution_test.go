package rediacc_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// The execution guarantee, against real sshd: at most one copy of a task
// runs at a time; a result the worker holds is never dropped and never
// causes a re-run; at-least-once only when a previous copy's fate cannot be
// learned. The tasks are priority 2: the machines are this host, which a
// health probe may judge busy (then it holds priority 3–5 work for
// minutes), and that gate is not what these tests are about.

// requireTmpfsEnv, set to "1" (CI), turns a tmpfs that cannot be mounted
// into a test failure instead of a skip.
const requireTmpfsEnv = "REDIACC_REQUIRE_TMPFS"

// smallTmpfs mounts a tmpfs of size bytes on a new directory, unmounted at
// the end of the test. It needs root (mount -t tmpfs).
func smallTmpfs(t *testing.T, size string) string {
	t.Helper()
	skip := func(why string) {
		if os.Getenv(requireTmpfsEnv) == "1" {
			t.Fatalf("cannot mount a tmpfs (%s) and %s=1", why, requireTmpfsEnv)
		}
		t.Skipf("cannot mount a tmpfs for a full-disk test (%s); run as root, or set %s=1 to make this a failure", why, requireTmpfsEnv)
	}
	if os.Geteuid() != 0 {
		skip("not root")
	}
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		skip(fmt.Sprintf("mount: %v: %s", err, strings.TrimSpace(string(out))))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			_ = exec.Command("umount", "-l", dir).Run()
			t.Logf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fillDisk writes zeros into dir/filler until the file system is full, and
// returns a function that frees the space again.
func fillDisk(t *testing.T, dir string) (free func()) {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", dir, err)
			}
			break
		}
	}
	f.Close()
	return func() {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
}

// sharedDir returns a directory the sshd login user can write to.
func sharedDir(t testing.TB) string {
	d := t.TempDir()
	for _, p := range []string{filepath.Dir(d), d} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(d, 0o777); err != nil {
		t.Fatal(err)
	}
	return d
}

func lineCount(t testing.TB, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

// addRealMachine registers srv as name on c (through 127.0.0.1:port, a
// proxy, when port is not 0).
func addRealMachine(t testing.TB, c *rediacc.Client, name string, srv *sshtest.OpenSSH, port int) {
	t.Helper()
	m := rediacc.Machine{Name: name, Host: srv.Host, Port: srv.Port, User: srv.User,
		IdentityFile: srv.ClientKeyPath, KnownHostsFile: srv.KnownHostsPath}
	if port != 0 {
		m.Host, m.Port = "127.0.0.1", port
		m.HostKeyPolicy = rediacc.HostKeyInsecureIgnore // the proxy's address is not in known_hosts
	}
	if _, err := c.AddMachine(asOwner(), m); err != nil {
		t.Fatal(err)
	}
}

// Issue 9, kind 1a: the data dir's file system fills up while a command
// runs; the command finishes but its result cannot be recorded. The worker
// keeps the result, renews nothing it cannot, never rescues its own task,
// and records the result once space is freed: COMPLETED, exit 0, and the
// command ran once.
func TestResultKeptWhileDiskFull(t *testing.T) {
	dir := smallTmpfs(t, "3m")
	srv := realSSHD(t, 7)
	shared := sharedDir(t)
	marker := filepath.Join(shared, "marker")
	c := newClient(t, func(cfg *rediacc.Config) { cfg.DataDir = dir })
	addRealMachine(t, c, "m1", srv, 0)
	task := submit(t, c, rediacc.TaskSpec{Priority: rediacc.High, Machine: "m1", Command: "sleep 4; echo ran >> " + marker + "; echo done"})
	runWorker(t, c)
	waitStatus(t, c, task.ID, rediacc.StatusProcessing)
	free := fillDisk(t, dir)
	// Hold the disk full well past the command's end plus two leases
	// (3 s each): the old worker rescued its own task and ran it again.
	time.Sleep(4*time.Second + 7*time.Second)
	if got := get(t, c, task.ID); got.Status != rediacc.StatusProcessing || len(got.History) != 1 {
		t.Errorf("while the disk is full: %s with %d attempts, want PROCESSING (held by its worker)", got.Status, len(got.History))
	}
	if n := lineCount(t, marker); n != 1 {
		t.Fatalf("marker has %d lines while the disk is full, want 1", n)
	}
	free()
	got, err := c.Wait(ctxTimeout(t, time.Minute), task.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != rediacc.StatusCompleted || got.ExitCode == nil || *got.ExitCode != 0 || got.Stdout != "done\n" ||
		got.Attempts != 1 || len(got.History) != 1 || got.History[0].Outcome != rediacc.OutcomeSucceeded {
		t.Errorf("task after space was freed: %s exit %v stdout %q attempts %d history %+v", got.Status, got.ExitCode, got.Stdout, got.Attempts, got.History)
	}
	if n := lineCount(t, marker); n != 1 {
		t.Errorf("marker has %d lines, want 1: the command ran again", n)
	}
}

// startChild starts a worker process (the test binary, see TestMain) on
// data dir dir (and SQLite store file storePath when not "").
func startChild(t *testing.T, dir, storePath string) *exec.Cmd {
	t.Helper()
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), crashChildEnv+"="+dir)
	if storePath != "" {
		child.Env = append(child.Env, crashChildStoreEnv+"="+storePath)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	return child
}

func killChild(t *testing.T, child *exec.Cmd) {
	t.Helper()
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
}

// waitListed polls c every 10 ms until at least n tasks have one of the
// statuses, and fails the test, naming what, after timeout.
func waitListed(ctx context.Context, t *testing.T, c *rediacc.Client, n int, timeout time.Duration, what string, statuses ...rediacc.Status) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ts, err := c.List(ctx, rediacc.ListFilter{Statuses: statuses})
		if err != nil {
			t.Fatal(err)
		}
		if len(ts) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d tasks %v after %s, want %d", what, len(ts), statuses, timeout, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A worker keeps an unrecordable result in the spool of its data dir; it
// is killed; a new worker on the same data dir records the spooled result
// (with its output) before any rescue could run the task again.
func TestSpooledResultRecordedAfterRestart(t *testing.T) {
	storeDir := smallTmpfs(t, "3m")
	storePath := filepath.Join(storeDir, "rediacc.db")
	dataDir := t.TempDir()
	srv := realSSHD(t, 7)
	marker := filepath.Join(sharedDir(t), "marker")
	st, err := rediacc.OpenSQLite(asOwner(), storePath)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, func(cfg *rediacc.Config) { cfg.DataDir, cfg.Store = dataDir, st })
	addRealMachine(t, c, "m1", srv, 0)
	task := submit(t, c, rediacc.TaskSpec{Priority: rediacc.High, Machine: "m1", Command: "sleep 2; echo ran >> " + marker + "; echo done"})
	child := startChild(t, dataDir, storePath)
	waitStatus(t, c, task.ID, rediacc.StatusProcessing)
	free := fillDisk(t, storeDir)
	spool := filepath.Join(dataDir, "spool")
	deadline := time.Now().Add(30 * time.Second)
	for {
		ents, _ := os.ReadDir(spool)
		if len(ents) == 1 && strings.HasSuffix(ents[0].Name(), ".json") {
			if fi, err := os.Stat(filepath.Join(spool, ents[0].Name())); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("spool file mode: %v, %v", fi.Mode(), err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no result spooled in %s (%d entries)", spool, len(ents))
		}
		time.Sleep(50 * time.Millisecond)
	}
	killChild(t, child)
	free()
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	got := get(t, c, task.ID)
	if got.Status != rediacc.StatusCompleted || got.Stdout != "done\n" || got.Attempts != 1 || len(got.History) != 1 ||
		got.History[0].Outcome != rediacc.OutcomeSucceeded || got.History[0].Recovered {
		t.Errorf("task: %s stdout %q attempts %d history %+v", got.Status, got.Stdout, got.Attempts, got.History)
	}
	if n := lineCount(t, marker); n != 1 {
		t.Errorf("marker has %d lines, want 1: the command ran again", n)
	}
	if ents, _ := os.ReadDir(spool); len(ents) != 0 {
		t.Errorf("spool not emptied: %d entries", len(ents))
	}
}

// copies counts the processes whose command line is exactly cmd (the
// shells that run it carry it inside a longer command line).
func copies(cmd string) int {
	out, _ := exec.Command("pgrep", "-f", "^"+cmd+"$").Output()
	return len(strings.Fields(string(out)))
}

// copyMonitor polls the number of copies of pattern and keeps the highest.
type copyMonitor struct {
	max  atomic.Int64
	stop chan struct{}
	done chan struct{}
}

func watchCopies(t *testing.T, pattern string) *copyMonitor {
	m := &copyMonitor{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for {
			if n := int64(copies(pattern)); n > m.max.Load() {
				m.max.Store(n)
			}
			select {
			case <-m.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(m.close)
	return m
}

func (m *copyMonitor) close() {
	select {
	case <-m.stop:
	default:
		close(m.stop)
	}
	<-m.done
}

// waitCopies polls until exactly n copies of pattern run.
func waitCopies(t *testing.T, pattern string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for copies(pattern) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d copies of %q, want %d", copies(pattern), pattern, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitTask polls until cond holds for task id.
func waitTask(t *testing.T, c *rediacc.Client, id, what string, cond func(*rediacc.Task) bool) *rediacc.Task {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := get(t, c, id)
		if cond(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("task never %s: %s %+v waiting %+v", what, got.Status, got.History, got.Waiting)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Issue 9, kind 1b: a worker running `sleep 600.77` is killed with
// SIGKILL. The remote copy is stopped (and seen gone) before the rescued
// task runs again — never two copies — and cancel really stops the copy.
func TestNoSecondCopyAfterWorkerKilled(t *testing.T) {
	const cmd = "sleep 600.77"
	dir := t.TempDir()
	srv := realSSHD(t, 8)
	c := newClient(t, func(cfg *rediacc.Config) { cfg.DataDir, cfg.LeaseDuration = dir, time.Minute })
	addRealMachine(t, c, "m1", srv, 0)
	if n := copies(cmd); n != 0 {
		t.Fatalf("%d copies of %q already run", n, cmd)
	}
	mon := watchCopies(t, cmd)

	t.Run("rescue", func(t *testing.T) {
		task := submit(t, c, rediacc.TaskSpec{Priority: rediacc.High, Machine: "m1", Command: cmd})
		child := startChild(t, dir, "")
		waitCopies(t, cmd, 1)
		killChild(t, child)
		if n := copies(cmd); n != 1 {
			t.Fatalf("%d copies after the worker died, want the orphan", n)
		}
		stop := runWorker(t, c)
		got := waitTask(t, c, task.ID, "running a second attempt", func(tk *rediacc.Task) bool {
			return tk.Status == rediacc.StatusProcessing && len(tk.History) == 2
		})
		waitCopies(t, cmd, 1)
		first := got.History[0]
		if first.Outcome != rediacc.OutcomeInterrupted || !strings.Contains(first.Error, "stopped on the machine") ||
			first.RunID == "" || first.PGID <= 1 || got.Attempts != 0 {
			t.Errorf("first attempt: %+v", first)
		}
		if _, err := c.Cancel(asOwner(), task.ID); err != nil {
			t.Fatal(err)
		}
		done, err := c.Wait(ctxTimeout(t, 30*time.Second), task.ID)
		if err != nil || done.Status != rediacc.StatusCancelled {
			t.Fatalf("cancelled task: %+v, %v", done, err)
		}
		waitCopies(t, cmd, 0)
		stop()
	})

	t.Run("cancel while its worker is dead", func(t *testing.T) {
		task := submit(t, c, rediacc.TaskSpec{Priority: rediacc.High, Machine: "m1", Command: cmd})
		child := startChild(t, dir, "")
		waitCopies(t, cmd, 1)
		killChild(t, child)
		got, err := c.Cancel(asOwner(), task.ID)
		if err != nil || got.Status.Terminal() {
			t.Fatalf("cancel of a task whose worker died: %+v, %v (not CANCELLED while its copy runs)", got, err)
		}
		if n := copies(cmd); n != 1 {
			t.Fatalf("%d copies", n)
		}
		runWorker(t, c)
		done, err := c.Wait(ctxTimeout(t, 30*time.Second), task.ID)
		if err != nil || done.Status != rediacc.StatusCancelled || len(done.History) != 1 ||
			done.History[0].Outcome != rediacc.OutcomeInterrupted {
			t.Fatalf("cancelled task: %+v, %v", done, err)
		}
		if n := copies(cmd); n != 0 {
			t.Errorf("CANCELLED while %d copies run", n)
		}
	})
	mon.close()
	if m := mon.max.Load(); m > 1 {
		t.Errorf("%d copies of %q ran at once", m, cmd)
	}
}

// tcpProxy forwards a local port to a target; Down closes it (connections
// refused, open ones cut) and Up listens again on the same port.
type tcpProxy struct {
	target string
	port   int
	mu     sync.Mutex
	ln     net.Listener
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	p := &tcpProxy{target: target}
	p.Up(t)
	t.Cleanup(p.Down)
	return p
}

func (p *tcpProxy) Up(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p.port))
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.ln, p.port = ln, ln.Addr().(*net.TCPAddr).Port
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); _, _ = io.Copy(up, c); up.Close() }()
			go func() { defer p.wg.Done(); _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
}

func (p *tcpProxy) Down() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// The machine of a lost worker's copy cannot be reached: the rescued task
// waits, saying why, and its attempt says its fate is unknown; no second
// copy starts. Once the machine answers, the copy is stopped, then the
// task runs again.
func TestRescuedTaskWaitsForUnreachableMachine(t *testing.T) {
	const cmd = "sleep 600.78"
	dir := t.TempDir()
	srv := realSSHD(t, 9)
	proxy := newTCPProxy(t, srv.Addr())
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.DataDir, cfg.LeaseDuration = dir, time.Minute
		cfg.SSH.DialTimeout, cfg.SSH.HandshakeTimeout = 2*time.Second, 2*time.Second
	})
	addRealMachine(t, c, "m1", srv, proxy.port)
	mon := watchCopies(t, cmd)
	task := submit(t, c, rediacc.TaskSpec{Priority: rediacc.High, Machine: "m1", Command: cmd})
	child := startChild(t, dir, "")
	waitCopies(t, cmd, 1)
	killChild(t, child)
	proxy.Down()
	runWorker(t, c)
	got := waitTask(t, c, task.ID, "waiting with a reason", func(tk *rediacc.Task) bool {
		return tk.Status == rediacc.StatusPending && len(tk.Waiting) > 0 && strings.Contains(tk.History[0].Error, "cannot tell")
	})
	a := got.History[0]
	if w := got.Waiting[0]; a.Outcome != rediacc.OutcomeUnknown || !errors.Is(a.Err(), rediacc.ErrFateUnknown) ||
		w.Code != rediacc.WaitEarlierCopy || !strings.Contains(w.Message, "m1") || w.Until.IsZero() {
		t.Errorf("waiting task: %+v, attempt %+v", got.Waiting, a)
	}
	time.Sleep(3 * time.Second) // a check or two more while the machine is out of reach
	if n := copies(cmd); n != 1 {
		t.Fatalf("%d copies while the machine cannot be reached, want the orphan only", n)
	}
	if got := get(t, c, task.ID); got.Status != rediacc.StatusPending || len(got.History) != 1 {
		t.Fatalf("task ran while its earlier copy's fate was unknown: %s %+v", got.Status, got.History)
	}
	proxy.Up(t)
	got = waitTask(t, c, task.ID, "running again", func(tk *rediacc.Task) bool {
		return tk.Status == rediacc.StatusProcessing && len(tk.History) == 2
	})
	if got.History[0].Outcome != rediacc.OutcomeInterrupted || len(got.Waiting) != 0 {
		t.Errorf("after the machine came back: waiting %+v, first attempt %+v", got.Waiting, got.History[0])
	}
	waitCopies(t, cmd, 1)
	if _, err := c.Cancel(asOwner(), task.ID); err != nil {
		t.Fatal(err)
	}
	if done, err := c.Wait(ctxTimeout(t, 30*time.Second), task.ID); err != nil || done.Status != rediacc.StatusCancelled {
		t.Fatalf("cancel: %+v, %v", done, err)
	}
	waitCopies(t, cmd, 0)
	mon.close()
	if m := mon.max.Load(); m > 1 {
		t.Errorf("%d copies ran at once", m)
	}
}

// Issue 9, kind 1b: 40 `sleep 3` tasks while worker processes are killed
// with SIGKILL again and again. Every run stamps its start and end in a
// file on the machine: no two runs of a task overlap, and every task
// completes.
func TestNoOverlapUnderRepeatedSIGKILL(t *testing.T) {
	dir := t.TempDir()
	stamps := sharedDir(t)
	c := newClient(t, func(cfg *rediacc.Config) { cfg.DataDir, cfg.LeaseDuration = dir, time.Minute })
	addRealMachine(t, c, "m1", realSSHD(t, 10), 0)
	addRealMachine(t, c, "m2", realSSHD(t, 11), 0)
	var ids []string
	for i := 0; i < 40; i++ {
		f := filepath.Join(stamps, fmt.Sprintf("task-%02d", i))
		// The EXIT trap stamps the end of a run that ends by itself or is
		// stopped (TERM), ignoring a TERM that arrives while it runs; the
		// login shell's $$ tells runs apart. SIGPIPE is ignored: the copy of
		// a killed worker writes to a dead pipe (the shell's "Terminated"
		// message) and would die before its trap.
		cmd := fmt.Sprintf(`trap '' PIPE; f=%s; echo "start $(date +%%s%%N) $$" >> $f; trap 'trap "" TERM; echo "end $(date +%%s%%N) $$" >> $f' EXIT; trap 'exit 143' TERM; sleep 3`, f)
		ids = append(ids, submit(t, c, rediacc.TaskSpec{Priority: rediacc.High, Machine: fmt.Sprintf("m%d", 1+i%2), Command: cmd}).ID)
	}
	children := []*exec.Cmd{startChild(t, dir, ""), startChild(t, dir, "")}
	kills := 0
	for round := 0; round < 8; round++ {
		time.Sleep(time.Duration(1000+rand.IntN(1500)) * time.Millisecond)
		i := rand.IntN(len(children))
		killChild(t, children[i])
		kills++
		children[i] = startChild(t, dir, "")
	}
	for _, ch := range children {
		killChild(t, ch)
		kills++
	}
	if err := c.RunUntilEmpty(ctxTimeout(t, 3*time.Minute)); err != nil {
		t.Fatal(err)
	}
	outcomes := map[rediacc.Outcome]int{}
	runs, recovered := 0, 0
	for i, id := range ids {
		got := get(t, c, id)
		if got.Status != rediacc.StatusCompleted {
			t.Errorf("task %d: %s %+v", i, got.Status, got.History)
		}
		for _, a := range got.History {
			if a.Outcome == rediacc.OutcomeLost && outcomes[a.Outcome] == 0 {
				t.Logf("a lost attempt: %s", a.Error)
			}
			outcomes[a.Outcome]++
			if a.Recovered {
				recovered++
			}
		}
		type run struct {
			start, end int64
			ended      bool
		}
		byPid := map[string]*run{}
		var order []string
		f, err := os.Open(filepath.Join(stamps, fmt.Sprintf("task-%02d", i)))
		if err != nil {
			t.Errorf("task %d never ran: %v", i, err)
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) != 3 {
				t.Errorf("task %d: bad stamp %q", i, sc.Text())
				continue
			}
			ns, _ := strconv.ParseInt(fields[1], 10, 64)
			r := byPid[fields[2]]
			if r == nil {
				r = &run{}
				byPid[fields[2]] = r
				order = append(order, fields[2])
			}
			if fields[0] == "start" {
				r.start = ns
			} else {
				r.end, r.ended = ns, true
			}
		}
		f.Close()
		rs := make([]*run, 0, len(order))
		for _, pid := range order {
			if !byPid[pid].ended {
				t.Errorf("task %d: run %s has no end stamp (killed without TERM, or still running)", i, pid)
			}
			rs = append(rs, byPid[pid])
		}
		slices.SortFunc(rs, func(a, b *run) int { return int(a.start - b.start) })
		for j := 1; j < len(rs); j++ {
			if rs[j].start < rs[j-1].end {
				t.Errorf("task %d: run %d started %.3fs before run %d ended", i, j+1, float64(rs[j-1].end-rs[j].start)/1e9, j)
			}
		}
		runs += len(rs)
	}
	t.Logf("%d worker processes killed; 40 tasks ran %d times; attempts by outcome %v, %d recovered from the machines", kills, runs, outcomes, recovered)
}
