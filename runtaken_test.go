package rediacc_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/ssh"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// F1 of the attacker pass: a marker planted on the machine for the run id
// of a task's next attempt (real sshd). The attempt does not run; the
// task says what really happened (a marker no worker holding the task
// wrote: a copy of unknown origin), never that its worker was lost, and
// runs exactly once under a fresh run id. The marker's exit status is not
// taken as the task's result. The old code left the task to its lease's
// expiry, rescued it from its live worker ("its worker … was lost",
// dead_worker empty in the audit) and, for a marker holding an exit
// status, completed the task without running its command.
func TestPlantedMarkerIsNotAWorkerLoss(t *testing.T) {
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 137, OwnUser: true})
	out := sharedDir(t)
	clock := &fakeClock{now: time.Now().UTC()} // frozen: the tasks wait for the settle until it moves
	c := newClient(t, func(cfg *rediacc.Config) { cfg.Clock = clock })
	addRealMachine(t, c, "m1", srv, 0)

	// A live process group of the login user, which one marker names.
	victim := exec.Command("sleep", "600.137")
	victim.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: &syscall.Credential{Uid: uint32(srv.UID), Gid: uint32(srv.GID)}}
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	victimDone := make(chan error, 1)
	go func() { victimDone <- victim.Wait() }()
	t.Cleanup(func() { _ = victim.Process.Kill() })

	cases := []struct {
		name, marker string
		outcome      rediacc.Outcome
		want         string
	}{
		{"exit status", "p 999999 - -\nx 0\n", rediacc.OutcomeLost, "says a copy exited with status 0, which is not taken as this task's result"},
		{"dead process", "p 999999 - -\n", rediacc.OutcomeLost, "names no running copy"},
		{"empty", "", rediacc.OutcomeLost, "names no running copy"},
		{"live process", "p " + strconv.Itoa(victim.Process.Pid) + " - -\n", rediacc.OutcomeInterrupted, "named a process group that was still running: it was stopped on the machine"},
	}
	runDir := filepath.Join(srv.Home, ssh.RunDirBase)
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Join(srv.Home, ".cache"), filepath.Dir(runDir), runDir} {
		if err := os.Chown(d, srv.UID, srv.GID); err != nil {
			t.Fatal(err)
		}
	}
	ids := make([]string, len(cases))
	for i, tc := range cases {
		ids[i] = submit(t, c, rediacc.TaskSpec{Machine: "m1", Priority: rediacc.High, FailureAction: rediacc.FailureNone,
			Command: "echo ran >>" + filepath.Join(out, strconv.Itoa(i))}).ID
		p := filepath.Join(runDir, ids[i]+".1")
		if err := os.WriteFile(p, []byte(tc.marker), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, srv.UID, srv.GID); err != nil {
			t.Fatal(err)
		}
	}
	runWorker(t, c)
	// Each attempt is recorded at once, typed, and the task says what it
	// waits for (the clock is frozen: no settle yet).
	for _, id := range ids {
		got := waitTask(t, c, id, "waiting for the planted marker's settle", func(tk *rediacc.Task) bool {
			return tk.Status == rediacc.StatusPending && len(tk.History) == 1 && tk.History[0].EndedAt.IsZero() == false
		})
		a := got.History[0]
		if a.ErrorKind != rediacc.ErrorKindRunTaken || !errors.Is(a.Err(), rediacc.ErrRunTaken) || !errors.Is(got.Err(), rediacc.ErrFateUnknown) ||
			a.Outcome != rediacc.OutcomeUnknown || !strings.Contains(a.Error, "machine m1 already held a marker for run "+id+".1 when attempt 1 started") {
			t.Fatalf("attempt recorded: %+v", a)
		}
		if len(got.Waiting) != 1 || got.Waiting[0].Code != rediacc.WaitEarlierCopy ||
			!strings.Contains(got.Waiting[0].Message, "to settle the marker of unknown origin") || strings.Contains(got.Waiting[0].Message, "was lost") {
			t.Fatalf("waiting: %+v", got.Waiting)
		}
	}
	clock.Advance(time.Minute)
	for _, id := range ids {
		waitStatus(t, c, id, rediacc.StatusCompleted)
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := ids[i]
			got := get(t, c, id)
			if got.Status != rediacc.StatusCompleted || len(got.History) != 2 || lineCount(t, filepath.Join(out, strconv.Itoa(i))) != 1 {
				t.Fatalf("%s, %d attempts, ran %d times: %+v", got.Status, len(got.History), lineCount(t, filepath.Join(out, strconv.Itoa(i))), got.History)
			}
			a, b := got.History[0], got.History[1]
			if a.RunID != id+".1" || b.RunID != id+".2" || b.Outcome != rediacc.OutcomeSucceeded || a.Outcome != tc.outcome {
				t.Fatalf("attempts: %+v", got.History)
			}
			if !strings.Contains(a.Error, "attempt 1 did not run: the marker of unknown origin for run "+id+".1") ||
				!strings.Contains(a.Error, tc.want) || strings.Contains(a.Error, "was lost") {
				t.Fatalf("first attempt's error %q, want it to name the marker of unknown origin and %q", a.Error, tc.want)
			}
			recs, err := c.AuditLog(asOwner(), rediacc.AuditFilter{EntityID: id})
			if err != nil {
				t.Fatal(err)
			}
			var actions []string
			for _, r := range recs {
				if r.Action != "task.read" && r.Action != "task.assign" {
					actions = append(actions, r.Action)
				}
				switch r.Action {
				case "task.rescue":
					t.Errorf("rescued from its live worker: %+v", r)
				case "task.settle":
					if !strings.HasPrefix(r.Details["origin"], "unknown") {
						t.Errorf("settle record does not say the marker's origin is unknown: %+v", r.Details)
					}
				}
			}
			if strings.Join(actions, " ") != "task.create task.start task.interrupt task.settle task.interrupt task.start task.complete" {
				t.Errorf("audit actions %v: want the attempt recorded at once (interrupt), then the settle", actions)
			}
		})
	}
	// The first record of each task's interruption says why, typed.
	recs, err := c.AuditLog(asOwner(), rediacc.AuditFilter{Action: "task.interrupt"})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range recs {
		if strings.Contains(r.Details["error"], "already held a marker for run") && strings.Contains(r.Details["error"], "no worker holding the task wrote it") {
			n++
		}
	}
	if n != len(cases) {
		t.Errorf("%d interrupt records say the marker was already on the machine, want %d", n, len(cases))
	}
	select {
	case <-victimDone:
	case <-time.After(30 * time.Second):
		t.Error("the live process group the planted marker named was not stopped")
	}
	noEmptyAuditDetails(t, c)
}

// noEmptyAuditDetails fails when a record of c's audit trail carries a
// detail with an empty value.
func noEmptyAuditDetails(t *testing.T, c *rediacc.Client) {
	t.Helper()
	recs, err := c.AuditLog(asOwner(), rediacc.AuditFilter{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		for k, v := range r.Details {
			if v == "" {
				t.Errorf("audit record %d (%s) carries an empty %s: %+v", r.Seq, r.Action, k, r.Details)
			}
		}
	}
}

// A task rescued from a worker that died: the audit record names the dead
// worker (the old code recorded dead_worker empty: the engine cleared the
// lease owner before the record was made), and the first attempt says
// which worker was lost.
func TestRescueAuditNamesDeadWorker(t *testing.T) {
	const cmd = "sleep 600.138"
	dir := t.TempDir()
	c := newClient(t, func(cfg *rediacc.Config) { cfg.DataDir, cfg.LeaseDuration = dir, time.Minute })
	addRealMachine(t, c, "m1", realSSHD(t, 138), 0)
	task := submit(t, c, rediacc.TaskSpec{Priority: rediacc.High, Machine: "m1", Command: cmd})
	child := startChild(t, dir, "")
	waitCopies(t, cmd, 1)
	killChild(t, child)
	runWorker(t, c)
	got := waitTask(t, c, task.ID, "rescued and running again", func(tk *rediacc.Task) bool {
		return tk.Status == rediacc.StatusProcessing && len(tk.History) == 2
	})
	dead := got.History[0].Worker
	if dead == "" || !strings.Contains(got.History[0].Error, "its worker "+dead+" was lost") {
		t.Errorf("first attempt: %+v", got.History[0])
	}
	recs, err := c.AuditLog(asOwner(), rediacc.AuditFilter{EntityID: task.ID, Action: "task.rescue"})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Details["dead_worker"] != dead {
		t.Errorf("rescue records %+v, want one naming dead worker %q", recs, dead)
	}
	if _, err := c.Cancel(asOwner(), task.ID); err != nil {
		t.Fatal(err)
	}
	if done, err := c.Wait(ctxTimeout(t, 30*time.Second), task.ID); err != nil || done.Status != rediacc.StatusCancelled {
		t.Fatalf("cancel: %+v, %v", done, err)
	}
	waitCopies(t, cmd, 0)
	noEmptyAuditDetails(t, c)
}
