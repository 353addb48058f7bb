package ssh_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rediacc/rediacc/ssh"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// Marker housekeeping against a real sshd: the markers of runs whose
// results are recorded (ReleaseRun) are removed in batches piggybacked on
// later runs, and on Close; the sweep that removes leftovers runs once a
// day per machine, whatever the number of pools, and only looks at what is
// left.

// markerEntries lists the markers in the login user's RunDirBase.
func markerEntries(t testing.TB, o *sshtest.OpenSSH) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(o.Home, ssh.RunDirBase))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	return names
}

// execLog records the exec strings that contain tag.
type execLog struct {
	mu    sync.Mutex
	execs []string
}

func logExecs(t testing.TB, tag string) *execLog {
	l := &execLog{}
	restore := ssh.SetExecHook(func(remote string) {
		if strings.Contains(remote, tag) {
			l.mu.Lock()
			l.execs = append(l.execs, remote)
			l.mu.Unlock()
		}
	})
	t.Cleanup(restore)
	return l
}

// count returns how many logged exec strings contain s.
func (l *execLog) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.execs {
		if strings.Contains(e, s) {
			n++
		}
	}
	return n
}

func runMarked(t testing.TB, p *ssh.Pool, tg ssh.Target, id, cmd string) *ssh.Result {
	t.Helper()
	res, err := p.Run(context.Background(), tg, ssh.Command{Cmd: cmd, RunID: id})
	if err != nil {
		t.Fatalf("Run %s: %v", id, err)
	}
	if res.Remote.RunDir == "" {
		t.Fatalf("run %s kept no marker", id)
	}
	return res
}

// TestOpenSSHReleasedMarkersRemoved: after 100 recorded runs, at most one
// batch of markers is left on the machine (before: all 100, for six days),
// removed with a handful of rm commands; Close removes the rest.
func TestOpenSSHReleasedMarkersRemoved(t *testing.T) {
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 2, OwnUser: true})
	tg := opensshTarget("m", o)
	tag := "rel-" + marker()
	log := logExecs(t, tag)
	p := ssh.NewPool(ssh.Config{})
	defer p.Close()
	const runs = 100
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i := range runs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			res := runMarked(t, p, tg, fmt.Sprintf("%s-%d", tag, i), "true")
			p.ReleaseRun(res)
		}()
	}
	wg.Wait()
	left := markerEntries(t, o)
	if len(left) >= 32+4 { // one batch waiting, plus the runs in flight when the last batch left
		t.Errorf("%d markers left after %d recorded runs, want fewer than a batch: %v", len(left), runs, left)
	}
	removals := log.count("exec rm -rf --")
	if removals < 2 || removals > 4 {
		t.Errorf("%d runs carried a removal, want about %d/32", removals, runs)
	}
	if n := log.count("find . -mindepth 1"); n != 1 {
		t.Errorf("%d runs carried a sweep, want 1 (the machine had never been swept)", n)
	}
	p.Close()
	if left := markerEntries(t, o); len(left) != 0 {
		t.Errorf("markers left after Close: %v", left)
	}
}

// TestOpenSSHSweepOncePerDay: the first pool to learn that a machine was
// not swept for a day sweeps it (removing old leftovers only); other pools
// then read the fresh time on the machine and do not sweep again.
func TestOpenSSHSweepOncePerDay(t *testing.T) {
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 2, OwnUser: true})
	tg := opensshTarget("m", o)
	tag := "sw-" + marker()
	log := logExecs(t, tag)
	dir := filepath.Join(o.Home, ssh.RunDirBase)

	p1 := newPool(t, ssh.Config{})
	runMarked(t, p1, tg, tag+"-0", "true") // creates RunDirBase; reports no sweep yet
	old := time.Now().Add(-8 * 24 * time.Hour)
	for name, content := range map[string]string{"leftover-old": "p 1 b 2\nx 0\n", "leftover-new": "p 1 b 2\nx 0\n", "running-old": "p 1 b 2\n"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(name, "-old") {
			if err := os.Chtimes(p, old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	runMarked(t, p1, tg, tag+"-1", "true") // carries the sweep
	eventually(t, "the sweep to remove the old leftover", func() bool {
		_, err := os.Stat(filepath.Join(dir, "leftover-old"))
		return os.IsNotExist(err)
	})
	for _, name := range []string{"leftover-new", "running-old", tag + "-0", tag + "-1"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("the sweep removed %s: %v", name, err)
		}
	}
	if n := log.count("find . -mindepth 1"); n != 1 {
		t.Fatalf("%d sweeps, want 1", n)
	}

	// Another pool (another worker process) finds the machine swept.
	p2 := newPool(t, ssh.Config{})
	for i := range 3 {
		runMarked(t, p2, tg, fmt.Sprintf("%s-b%d", tag, i), "true")
	}
	if n := log.count("find . -mindepth 1"); n != 1 {
		t.Errorf("%d sweeps after a second pool's runs, want still 1", n)
	}

	// A day later (as the machine records it), the next pool sweeps again.
	if err := os.WriteFile(filepath.Join(dir, ".swept"), []byte("1000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p3 := newPool(t, ssh.Config{})
	for i := range 3 {
		runMarked(t, p3, tg, fmt.Sprintf("%s-c%d", tag, i), "true")
	}
	if n := log.count("find . -mindepth 1"); n != 2 {
		t.Errorf("%d sweeps, want 2 once the last one is a day old", n)
	}
}

// TestOpenSSHLostRunMarkerKept: a run whose connection was lost (its exit
// status read from the marker) keeps its marker even when released: only
// markers of runs whose end Run saw are removed.
func TestOpenSSHLostRunMarkerKept(t *testing.T) {
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 2, OwnUser: true})
	proxy := newFreezeProxy(t, o.Addr())
	tg := opensshTarget("m", o)
	tg.Host, tg.Port, tg.HostKey = "127.0.0.1", proxy.Port(), ssh.InsecureIgnoreHostKey()
	p := ssh.NewPool(ssh.Config{KeepaliveInterval: 100 * time.Millisecond, KeepaliveMax: 3, KillGrace: 500 * time.Millisecond,
		DialTimeout: time.Second, HandshakeTimeout: 2 * time.Second})
	defer p.Close()
	id := runID(t)
	started := newSignalWriter()
	go func() { <-started.ch; proxy.Freeze(); proxy.Thaw() }()
	res, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "echo up; sleep 0.2; exit 4", RunID: id, Stdout: started})
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || !res.Recovered {
		t.Fatalf("Run = %+v, %v; want exit 4 read from the marker", res, err)
	}
	p.ReleaseRun(res)
	for i := range 40 { // more than a batch of released runs, to flush
		p.ReleaseRun(runMarked(t, p, tg, fmt.Sprintf("%s-%d", id, i), "true"))
	}
	p.Close()
	left := markerEntries(t, o)
	if len(left) != 1 || left[0] != id {
		t.Errorf("markers left %v, want only the lost run's %s", left, id)
	}
}
