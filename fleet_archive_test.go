package rediacc_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
)

// TestPostgresArchiveAnyHost: on a PostgreSQL store the log archive is in
// the database. A task run and pruned by one client (its own data dir) is
// read with TaskLog by another client with another, empty data dir (as on
// another host), and the audit trail, partly moved into the archive,
// verifies from there; no archive file is written on either "host".
func TestPostgresArchiveAnyHost(t *testing.T) {
	f := newFleet(t, 1, 10*time.Second)
	w := f.client(nil)
	stop := runWorker(t, w)
	tk := submit(t, f.c, rediacc.TaskSpec{Machine: "m0", Command: "echo archived-output; echo to-stderr >&2"})
	waitStatus(t, f.c, tk.ID, rediacc.StatusCompleted)
	stop()
	res, err := f.c.Prune(asOwner(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.TasksDeleted != 1 || res.TasksArchived != 1 || res.AuditArchived == 0 {
		t.Fatalf("Prune: %+v, want the task moved (archived by Prune itself: workers leave it in the store) and audit records moved", res)
	}
	if _, err := f.c.Get(asOwner(), tk.ID); err == nil {
		t.Fatal("the pruned task is still in the queue")
	}

	otherDir := t.TempDir()
	other := f.client(func(c *rediacc.Config) { c.DataDir = otherDir })
	got, err := other.TaskLog(asOwner(), tk.ID)
	if err != nil {
		t.Fatalf("TaskLog of the pruned task from another data dir: %v", err)
	}
	if got.Status != rediacc.StatusCompleted || !strings.Contains(got.Stdout, "archived-output") || !strings.Contains(got.Stderr, "to-stderr") {
		t.Fatalf("archived task: %s stdout %q stderr %q", got.Status, got.Stdout, got.Stderr)
	}
	if _, err := other.VerifyAudit(asOwner()); err != nil {
		t.Fatalf("audit verify from another data dir after the trim: %v", err)
	}
	for _, d := range []string{otherDir} {
		segs, _ := filepath.Glob(filepath.Join(d, "archive", "*", "*.jsonl.gz"))
		trail, _ := filepath.Glob(filepath.Join(d, "archive", "trail", "*", "*.jsonl.gz"))
		if len(segs)+len(trail) > 0 {
			t.Errorf("archive segment files written under %s: %v %v", d, segs, trail)
		}
	}
	if _, err := os.Stat(filepath.Join(otherDir, "archive", "task")); err == nil {
		t.Errorf("a task archive directory was made in %s", otherDir)
	}
}
