package ssh_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rediacc/rediacc/ssh"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// Runs with a RunID against a real sshd: the marker on the machine lets any
// process learn a run's fate and stop it; a connection that dies under a
// run never leaves a copy running behind a retryable error.

func runID(t testing.TB) string { return "test-" + marker() }

// sharedDir returns a directory the sshd login user can write to.
func sharedDir(t testing.TB) string {
	d := t.TempDir()
	if err := os.Chmod(d, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(d), 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

func lines(t testing.TB, path string) int {
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

func TestOpenSSHRunMarker(t *testing.T) {
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 2})
	tg := opensshTarget("m", o)
	p := newPool(t, ssh.Config{KillGrace: 500 * time.Millisecond})
	id := runID(t)
	var onStart atomic.Pointer[ssh.Remote]
	res, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "echo hi; exit 3", RunID: id,
		OnStart: func(r ssh.Remote) { onStart.Store(&r) }})
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || ee.Code != 3 || string(res.Stdout) != "hi\n" {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	r := res.Remote
	if r.PGID <= 1 || r.RunDir != ssh.RunDirBase+"/"+id || r.BootID == "" || r.StartTime == "" {
		t.Errorf("Result.Remote = %+v", r)
	}
	if got := onStart.Load(); got == nil || *got != r {
		t.Errorf("OnStart got %+v, want %+v", got, r)
	}
	f, err := p.Settle(context.Background(), tg, id, r)
	if err != nil || f.State != ssh.FateExited || f.ExitCode != 3 || f.Remote.PGID != r.PGID {
		t.Errorf("Settle after the run = %+v, %v", f, err)
	}

	dir := sharedDir(t)
	file := filepath.Join(dir, "ran")
	_, err = p.Run(context.Background(), tg, ssh.Command{Cmd: "echo x >> " + file, RunID: id})
	if !errors.Is(err, ssh.ErrRunTaken) || ssh.IsRetryable(err) || lines(t, file) != 0 {
		t.Errorf("second run of the same id: %v (file has %d lines)", err, lines(t, file))
	}

	// A run settled before it starts never starts.
	late := runID(t)
	if f, err := p.Settle(context.Background(), tg, late, ssh.Remote{}); err != nil || f.State != ssh.FateNotStarted {
		t.Fatalf("Settle of an unknown run = %+v, %v", f, err)
	}
	_, err = p.Run(context.Background(), tg, ssh.Command{Cmd: "echo x >> " + file, RunID: late})
	if !errors.Is(err, ssh.ErrRunTaken) || lines(t, file) != 0 {
		t.Errorf("run after its Settle: %v (file has %d lines)", err, lines(t, file))
	}

	// A run whose worker is gone is stopped by Settle from another pool.
	long := runID(t)
	m := marker()
	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	other := ssh.NewPool(ssh.Config{})
	started := newSignalWriter()
	done := make(chan error, 1)
	go func() {
		_, err := other.Run(runCtx, tg, ssh.Command{Cmd: "echo up; sleep 600." + m, RunID: long, Stdout: started})
		done <- err
	}()
	<-started.ch
	other.Close() // the connection closes under the run, as when its process dies
	<-done
	waitRunning(t, "sleep 600."+m)
	f, err = p.Settle(context.Background(), tg, long, ssh.Remote{})
	if err != nil || f.State != ssh.FateStopped {
		t.Fatalf("Settle of an orphan = %+v, %v", f, err)
	}
	if left := pgrep("sleep 600." + m); left != "" {
		t.Errorf("Settle returned before the orphan was gone: %s", left)
	}
}

// TestOpenSSHKeepaliveDeathSettles: a connection declared dead by keepalive
// under a run: when the machine can be reached the run is stopped (or its
// status read) before Run returns; when it cannot, Run says the fate is
// unknown, and a later Settle stops it.
func TestOpenSSHKeepaliveDeathSettles(t *testing.T) {
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 2})
	cfg := ssh.Config{KeepaliveInterval: 100 * time.Millisecond, KeepaliveMax: 3, KillGrace: 500 * time.Millisecond,
		DialTimeout: time.Second, HandshakeTimeout: 2 * time.Second}
	through := func(proxy *freezeProxy) ssh.Target {
		tg := opensshTarget("m", o)
		tg.Host, tg.Port, tg.HostKey = "127.0.0.1", proxy.Port(), ssh.InsecureIgnoreHostKey()
		return tg
	}

	t.Run("machine reachable: stopped", func(t *testing.T) {
		proxy := newFreezeProxy(t, o.Addr())
		p := newPool(t, cfg)
		m := marker()
		started := newSignalWriter()
		go func() { <-started.ch; proxy.Freeze(); proxy.Thaw() }() // this connection dies, new ones work
		res, err := p.Run(context.Background(), through(proxy), ssh.Command{Cmd: "echo up; sleep 600." + m, RunID: runID(t), Stdout: started})
		if !errors.Is(err, ssh.ErrConnect) || !ssh.IsRetryable(err) || !strings.Contains(err.Error(), "stopped") {
			t.Fatalf("err = %v, want a retryable ErrConnect saying the command was stopped", err)
		}
		if res == nil || string(res.Stdout) != "up\n" || res.Remote.PGID <= 1 {
			t.Errorf("result %+v", res)
		}
		if left := pgrep("sleep 600." + m); left != "" {
			t.Errorf("orphan left running: %s", left)
		}
	})

	t.Run("machine reachable: exit status recovered", func(t *testing.T) {
		proxy := newFreezeProxy(t, o.Addr())
		p := newPool(t, cfg)
		started := newSignalWriter()
		go func() { <-started.ch; proxy.Freeze(); proxy.Thaw() }()
		res, err := p.Run(context.Background(), through(proxy), ssh.Command{Cmd: "echo up; sleep 0.2; exit 4", RunID: runID(t), Stdout: started})
		var ee *ssh.ExitError
		if !errors.As(err, &ee) || ee.Code != 4 || !res.Recovered || res.ExitCode != 4 {
			t.Fatalf("Run = %+v, %v; want exit 4 read from the marker", res, err)
		}
	})

	t.Run("machine unreachable: fate unknown", func(t *testing.T) {
		proxy := newFreezeProxy(t, o.Addr())
		p := newPool(t, cfg)
		m := marker()
		id := runID(t)
		started := newSignalWriter()
		go func() { <-started.ch; proxy.Freeze() }()
		res, err := p.Run(context.Background(), through(proxy), ssh.Command{Cmd: "echo up; sleep 600." + m, RunID: id, Stdout: started})
		if !errors.Is(err, ssh.ErrFateUnknown) || !errors.Is(err, ssh.ErrConnect) || ssh.IsRetryable(err) {
			t.Fatalf("err = %v, want ErrFateUnknown (not retryable)", err)
		}
		if pgrep("sleep 600."+m) == "" {
			t.Fatal("the run is gone although nobody could stop it")
		}
		proxy.Thaw()
		f, err := p.Settle(context.Background(), through(proxy), id, res.Remote)
		if err != nil || f.State != ssh.FateStopped {
			t.Fatalf("Settle once reachable = %+v, %v", f, err)
		}
		if left := pgrep("sleep 600." + m); left != "" {
			t.Errorf("orphan left running: %s", left)
		}
	})
}

// TestOpenSSHSessionOpenTimeoutStartedAnyway: the exec request reaches the
// server but its answer does not; the session open times out and the run
// is retried on a fresh connection, which finds the first copy running:
// it is stopped, never doubled.
func TestOpenSSHSessionOpenTimeoutStartedAnyway(t *testing.T) {
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 2})
	proxy := newFreezeProxy(t, o.Addr())
	tg := opensshTarget("m", o)
	tg.Host, tg.Port, tg.HostKey = "127.0.0.1", proxy.Port(), ssh.InsecureIgnoreHostKey()
	p := newPool(t, ssh.Config{SessionOpenTimeout: 2 * time.Second, KeepaliveInterval: -1, KillGrace: 500 * time.Millisecond})
	runOK(t, p, tg, "true") // a pooled connection
	id := runID(t)
	m := marker()
	file := filepath.Join(sharedDir(t), "starts")
	var once sync.Once
	restore := ssh.SetExecHook(func(remote string) {
		if strings.Contains(remote, id) {
			once.Do(proxy.HoldReplies)
		}
	})
	defer restore()
	_, err := p.Run(context.Background(), tg, ssh.Command{Cmd: fmt.Sprintf("echo x >> %s; sleep 600.%s", file, m), RunID: id})
	if !errors.Is(err, ssh.ErrConnect) || !ssh.IsRetryable(err) {
		t.Fatalf("err = %v, want a retryable ErrConnect", err)
	}
	if n := lines(t, file); n != 1 {
		t.Errorf("the command started %d times, want once", n)
	}
	if left := pgrep("sleep 600." + m); left != "" {
		t.Errorf("the first copy was left running: %s", left)
	}
	if s := p.Stats(); s.Retries != 1 {
		t.Errorf("want one retry on a fresh connection: %+v", s)
	}
}
