package rediacc_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
)

// A client given a relative data dir keeps every file it writes later
// (store, archive segments, audit checkpoints) under that dir as it was
// when New ran, also after the program changed its working directory: the
// library writes only under the paths it was given.
func TestRelativeDataDirStaysPut(t *testing.T) {
	base, elsewhere := t.TempDir(), t.TempDir()
	t.Chdir(base)
	c, err := rediacc.New(asOwner(), rediacc.Config{DataDir: "rd", Logger: testLogger(t), PollInterval: 20 * time.Millisecond, Health: rediacc.HealthConfig{Interval: -1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(elsewhere) // the embedding program moves on
	inProcessMachine(t, c, "m1")
	task := submit(t, c, rediacc.TaskSpec{Machine: "m1", Command: "echo hi"})
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Prune(asOwner(), 0); err != nil { // the archive opens now
		t.Fatal(err)
	}
	if got, err := c.TaskLog(asOwner(), task.ID); err != nil || got.Stdout != "hi\n" {
		t.Fatalf("the pruned task's log: %+v %v", got, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if left := snapshotTree(t, elsewhere); len(left) != 1 { // the directory itself
		t.Errorf("files written in the working directory of the moment: %v", left)
	}
	if segs, _ := filepath.Glob(filepath.Join(base, "rd", "archive", "task", "*.jsonl.gz")); len(segs) == 0 {
		t.Errorf("no archive segment under the data dir given")
	}
	if _, err := os.Stat(filepath.Join(base, "rd", "rediacc.db")); err != nil {
		t.Error(err)
	}
}
