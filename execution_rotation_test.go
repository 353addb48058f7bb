package rediacc_test

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/rediacc/rediacc"
)

// A queued key rotation whose worker is killed (SIGKILL) in the middle,
// right after the new key was installed: the job ran inside that worker,
// so nothing of it is left on the machine to find or stop. The next worker
// records the attempt as interrupted — not lost (no at-least-once), not
// waiting for a run marker that was never written — and the next attempt
// resumes the rotation to the end: the vault's key logs in everywhere, the
// old one nowhere.
func TestQueuedRotationResumesAfterWorkerKilled(t *testing.T) {
	c, v, dir := newKeyClientDir(t, nil)
	f := newKeyFixtureWith(t, c, v, dir, "qkill", keyFixtureOptions{}, 62, 63)
	old, _ := f.vaultKeys(t, 0)
	before := keyOf(t, c, "qkill", f.names[0])
	ts, err := c.SubmitKeyRotation(asOwner(), rediacc.KeyRotationOptions{Machine: f.names[0]})
	if err != nil || len(ts) != 1 {
		t.Fatalf("queueing the rotation: %+v, %v", ts, err)
	}

	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), rotateChildDirEnv+"="+dir, rotateChildStepEnv+"=install",
		rotateChildKeyEnv+"="+f.names[0], rotateChildQueueEnv+"=1")
	out, err := child.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the worker was not killed after install: %v\n%s", err, out)
	}
	killed, err := c.Get(asOwner(), ts[0].ID)
	if err != nil || killed.Status != rediacc.StatusProcessing || len(killed.History) != 1 || killed.History[0].RunID != "" {
		t.Fatalf("task after its worker was killed: %+v, %v (want PROCESSING, one attempt without a run marker)", killed, err)
	}

	stop := runWorker(t, c)
	done := waitStatus(t, c, ts[0].ID, rediacc.StatusCompleted)
	stop()
	if len(done.History) != 2 || done.Attempts != 1 {
		t.Fatalf("history: %+v (want the interrupted attempt and the one that completed)", done.History)
	}
	first := done.History[0]
	if first.Outcome != rediacc.OutcomeInterrupted || first.ErrorKind != rediacc.ErrorKindInterrupted ||
		!strings.Contains(first.Error, "run inside its worker") || !strings.Contains(first.Error, "resumes") {
		t.Errorf("killed attempt: %+v", first)
	}
	if done.History[1].Outcome != rediacc.OutcomeSucceeded {
		t.Errorf("second attempt: %+v", done.History[1])
	}
	after := keyOf(t, c, "qkill", f.names[0])
	if after.Fingerprint == before.Fingerprint || after.Previous != before.Fingerprint {
		t.Fatalf("key after the task: %+v (before: %s)", after, before.Fingerprint)
	}
	f.vaultLogsIn(t)
	f.complete(t, old, rediacc.KeyRotationResult{To: after.Fingerprint})
}
