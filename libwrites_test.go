package rediacc_test

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
)

// Issue 9, kind 5: a Client built with NewMemoryStore() and no data dir
// writes no file (its log archive is in memory), and a CLI store in
// ~/.rediacc beside it keeps its archive, its verifiable audit trail and
// its pruned tasks' logs.
func TestMemoryClientWritesNothing(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("REDIACC_HOME", "")
	cliDir := filepath.Join(home, ".rediacc")

	// The CLI's store in the default data dir, with a pruned task.
	cli, err := rediacc.New(asOwner(), rediacc.Config{Logger: testLogger(t), PollInterval: 20 * time.Millisecond, Health: rediacc.HealthConfig{Interval: -1}})
	if err != nil {
		t.Fatal(err)
	}
	inProcessMachine(t, cli, "m1")
	cliTask := submit(t, cli, rediacc.TaskSpec{Machine: "m1", Command: "echo cli"})
	if err := cli.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Prune(asOwner(), 0); err != nil {
		t.Fatal(err)
	}
	_ = cli.Close()
	before := snapshotTree(t, cliDir)
	if len(before) == 0 {
		t.Fatal("the CLI store wrote nothing in the default data dir")
	}

	// A library client on a memory store: tasks run, finish, are pruned
	// into its in-memory archive and read back from there.
	mem, err := rediacc.New(asOwner(), rediacc.Config{Store: rediacc.NewMemoryStore(), Logger: testLogger(t), PollInterval: 20 * time.Millisecond, Health: rediacc.HealthConfig{Interval: -1}})
	if err != nil {
		t.Fatal(err)
	}
	inProcessMachine(t, mem, "m1")
	task := submit(t, mem, rediacc.TaskSpec{Machine: "m1", Command: "echo memory"})
	if err := mem.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	res, err := mem.Prune(asOwner(), 0)
	if err != nil || res.TasksDeleted != 1 || res.AuditArchived == 0 {
		t.Fatalf("Prune on the memory client: %+v %v", res, err)
	}
	if got, err := mem.TaskLog(asOwner(), task.ID); err != nil || got.Stdout != "memory\n" {
		t.Fatalf("TaskLog of a pruned task from the in-memory archive: %+v %v", got, err)
	}
	if _, err := mem.VerifyAudit(asOwner()); err != nil {
		t.Fatalf("VerifyAudit across the in-memory archive: %v", err)
	}
	if err := mem.Close(); err != nil {
		t.Fatal(err)
	}

	if after := snapshotTree(t, cliDir); !maps.Equal(before, after) {
		t.Errorf("the memory client touched the CLI's data dir:\nbefore %v\nafter  %v", slices.Sorted(maps.Keys(before)), slices.Sorted(maps.Keys(after)))
	}
	if ents, _ := os.ReadDir(home); len(ents) != 1 {
		t.Errorf("home holds %v, want only .rediacc", ents)
	}
	cli, err = rediacc.New(asOwner(), rediacc.Config{Logger: testLogger(t), Health: rediacc.HealthConfig{Interval: -1}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.VerifyAudit(asOwner()); err != nil {
		t.Errorf("the CLI store's audit trail: %v", err)
	}
	if got, err := cli.TaskLog(asOwner(), cliTask.ID); err != nil || got.Stdout != "cli\n" {
		t.Errorf("the CLI store's pruned task: %+v %v", got, err)
	}
}

// A client given a SQLite store but no data dir or archive dir writes only
// the store's files: there is no archive, so Prune refuses (it would lose
// what it moves) and VerifyAudit still checks the store.
func TestStoreWithoutArchiveDir(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("REDIACC_HOME", "")
	dir := t.TempDir()
	st, err := rediacc.OpenSQLite(asOwner(), filepath.Join(dir, "q.db"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := rediacc.New(asOwner(), rediacc.Config{Store: st, Logger: testLogger(t), PollInterval: 20 * time.Millisecond, Health: rediacc.HealthConfig{Interval: -1}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	inProcessMachine(t, c, "m1")
	task := submit(t, c, rediacc.TaskSpec{Machine: "m1", Command: "echo sqlite"})
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Prune(asOwner(), 0); !errors.Is(err, rediacc.ErrNoArchive) {
		t.Fatalf("Prune without an archive: %v", err)
	}
	if got, err := c.TaskLog(asOwner(), task.ID); err != nil || got.Stdout != "sqlite\n" {
		t.Fatalf("TaskLog from the store: %+v %v", got, err)
	}
	if _, err := c.VerifyAudit(asOwner()); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !slices.Contains([]string{"q.db", "q.db-wal", "q.db-shm", "q.db-lock"}, e.Name()) {
			t.Errorf("the client wrote %s beside its store", e.Name())
		}
	}
	if ents, _ := os.ReadDir(home); len(ents) != 0 {
		t.Errorf("the client wrote into home: %v", ents)
	}
}
