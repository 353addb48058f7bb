package rediacc_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// fakeClock is a Config.Clock the test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

// inProcessMachine registers an in-process SSH server (fast, no sshd).
func inProcessMachine(t *testing.T, c *rediacc.Client, name string) {
	t.Helper()
	inProcessTeamMachine(t, c, name, "")
}

// inProcessTeamMachine registers an in-process SSH server in team ("":
// the default team).
func inProcessTeamMachine(t *testing.T, c *rediacc.Client, name, team string) {
	t.Helper()
	signer, pemKey, err := sshtest.GenerateSigner(nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := sshtest.NewServer(t, sshtest.Options{AuthorizedKeys: []gossh.PublicKey{signer.PublicKey()}})
	dir := t.TempDir()
	key, known := filepath.Join(dir, "id"), filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(key, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(known, []byte(srv.KnownHostsLine()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddMachine(asOwner(), rediacc.Machine{Name: name, Team: team, Host: srv.Host(), Port: srv.Port(), User: "test",
		IdentityFile: key, KnownHostsFile: known}); err != nil {
		t.Fatal(err)
	}
}

// runOrder returns the tasks' ids in the order their commands ran (each
// command prints the machine's nanosecond clock).
func runOrder(t *testing.T, c *rediacc.Client, ids []string) []string {
	t.Helper()
	type run struct {
		id string
		at int64
	}
	var runs []run
	for _, id := range ids {
		got := get(t, c, id)
		at, err := strconv.ParseInt(strings.TrimSpace(got.Stdout), 10, 64)
		if err != nil {
			t.Fatalf("task %s output %q: %v", id, got.Stdout, err)
		}
		runs = append(runs, run{id, at})
	}
	for i := range runs {
		for j := i + 1; j < len(runs); j++ {
			if runs[j].at < runs[i].at {
				runs[i], runs[j] = runs[j], runs[i]
			}
		}
	}
	out := make([]string, len(runs))
	for i, r := range runs {
		out[i] = r.id
	}
	return out
}

// Aging, driven by an injected clock: a level-5 task that has waited four
// aging intervals runs before a fresh level-2 task; with aging off it runs
// after it.
func TestAgingWithInjectedClock(t *testing.T) {
	for _, aging := range []time.Duration{5 * time.Minute, -1} {
		clock := &fakeClock{now: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)}
		c := newClient(t, func(cfg *rediacc.Config) { cfg.Clock = clock; cfg.Concurrency = 1; cfg.AgingInterval = aging })
		inProcessMachine(t, c, "m1")
		old := submit(t, c, rediacc.TaskSpec{Machine: "m1", Priority: rediacc.Minimal, Command: "date +%s%N"})
		clock.Advance(20 * time.Minute)
		fresh := submit(t, c, rediacc.TaskSpec{Machine: "m1", Priority: rediacc.High, Command: "date +%s%N"})
		if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
			t.Fatal(err)
		}
		order := runOrder(t, c, []string{old.ID, fresh.ID})
		wantFirst := old.ID
		if aging < 0 {
			wantFirst = fresh.ID
		}
		if order[0] != wantFirst {
			t.Errorf("aging %v: the %s task ran first", aging, map[string]string{old.ID: "aged level-5", fresh.ID: "fresh level-2"}[order[0]])
		}
	}
}

// A retry delay of an hour passes when the injected clock says so: no
// sleeping.
func TestRetryDelayWithInjectedClock(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)}
	c := newClient(t, func(cfg *rediacc.Config) { cfg.Clock = clock })
	inProcessMachine(t, c, "m1")
	marker := t.TempDir() + "/ran-once"
	task := submit(t, c, rediacc.TaskSpec{Machine: "m1", FailureAction: rediacc.FailureNone,
		Command: "if [ -e " + marker + " ]; then echo second; else touch " + marker + "; exit 1; fi",
		Retry:   rediacc.RetryPolicy{RetryCount: 1, RetryDelay: time.Hour}})
	runWorker(t, c)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := get(t, c, task.ID)
		if got.Attempts == 1 && got.Status == rediacc.StatusPending {
			if want := clock.Now().Add(time.Hour); !got.NextAttemptAt.Equal(want) {
				t.Errorf("next attempt at %s, want %s", got.NextAttemptAt, want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("first attempt never failed: %+v", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	clock.Advance(59 * time.Minute)
	time.Sleep(100 * time.Millisecond) // several poll intervals: nothing may run yet
	if got := get(t, c, task.ID); got.Attempts != 1 || got.Status != rediacc.StatusPending {
		t.Fatalf("retried before its delay: %+v", got)
	}
	clock.Advance(time.Minute)
	got, err := c.Wait(ctxTimeout(t, 30*time.Second), task.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != rediacc.StatusCompleted || got.Attempts != 2 || got.Stdout != "second\n" {
		t.Errorf("after the delay: %+v", got)
	}
}
