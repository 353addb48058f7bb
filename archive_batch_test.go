package rediacc_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
)

// A worker copies finished tasks into the log archive in batches, off the
// tasks' goroutines. Killed with SIGKILL while tasks finish (its last batch
// unwritten, or torn), it loses no task record: every finished task is in
// the store, and Prune archives those the archive lacks before deleting
// them; each is then read back from the archive (TaskLog) and the audit
// trail verifies. A worker that returns (RunUntilEmpty) has written its
// batches: Prune then archives none itself.
func TestArchiveBatchesSurviveSIGKILL(t *testing.T) {
	dir := t.TempDir()
	srv := realSSHD(t, 61)
	ctx := ctxTimeout(t, 3*time.Minute)
	c := session(t, dir, nil)
	addA1(t, c, srv)
	specs := make([]rediacc.TaskSpec, 50)
	for i := range specs {
		specs[i] = rediacc.TaskSpec{Machine: "a1", Command: fmt.Sprintf("echo task-%d", i)}
	}
	tasks, err := c.SubmitBatch(ctx, specs)
	if err != nil {
		t.Fatal(err)
	}
	child := startChild(t, dir, "")
	waitListed(ctx, t, c, 20, time.Minute, "the child worker completed too few tasks", rediacc.StatusCompleted)
	killChild(t, child)
	if err := c.RunUntilEmpty(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := c.Prune(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after the kill: %+v", res)
	if res.TasksDeleted != len(tasks) {
		t.Fatalf("Prune deleted %d tasks, want %d", res.TasksDeleted, len(tasks))
	}
	for i, task := range tasks {
		got, err := c.TaskLog(ctx, task.ID)
		// A task the kill caught running is settled from its marker: its
		// result counts, its output was not kept.
		recovered := err == nil && len(got.History) > 0 && got.History[len(got.History)-1].Recovered
		if err != nil || got.Status != rediacc.StatusCompleted || got.Stdout != fmt.Sprintf("task-%d\n", i) && !recovered {
			t.Fatalf("task %d from the archive: %+v %v", i, got, err)
		}
	}
	if _, err := c.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
	// The child may have been killed before its first batch (every 500 ms):
	// then Prune archived all of them into this client's segment.
	if segs := segments(t, filepath.Join(dir, "archive", "task", "*.jsonl.gz")); len(segs) < 1 {
		t.Fatalf("task segments %v: want at least this client's", segs)
	}

	// A worker that returns has written its batches.
	more := make([]rediacc.TaskSpec, 10)
	for i := range more {
		more[i] = rediacc.TaskSpec{Machine: "a1", Command: "true"}
	}
	if _, err := c.SubmitBatch(ctx, more); err != nil {
		t.Fatal(err)
	}
	if err := c.RunUntilEmpty(ctx); err != nil {
		t.Fatal(err)
	}
	res, err = c.Prune(ctx, 0)
	if err != nil || res.TasksDeleted != len(more) || res.TasksArchived != 0 {
		t.Fatalf("Prune after a clean run: %+v %v (want %d deleted, none archived by Prune)", res, err, len(more))
	}
}
