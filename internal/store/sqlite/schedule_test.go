package sqlite_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/storetest"
)

// TestTwoEnginesFire: two engines on one file (as two processes) race to
// fire one schedule: every fire time exactly once.
func TestTwoEnginesFire(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	e1, e2 := open(t, path), open(t, path)
	defer e1.Close()
	defer e2.Close()
	storetest.ConcurrentFires(t, []store.Engine{e1, e2}, 3, 60)
}

// TestGatesAcrossEngines: a drain, a pause and a maintenance window set
// through one engine hold every claim that starts afterwards on another
// engine of the same file (as another process).
func TestGatesAcrossEngines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	e1, e2 := open(t, path), open(t, path)
	defer e1.Close()
	defer e2.Close()
	storetest.GatesAcrossEngines(t, []store.Engine{e1, e2})
}

// TestFireFailsWhole: a failure after the fire was decided, while its task
// is written or after (a full disk, a crash: the transaction never
// commits), leaves no trace; decided again, the fire happens once.
func TestFireFailsWhole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	e := open(t, path)
	defer e.Close()
	db := rawDB(t, path)
	s, err := e.CreateSchedule(ctx, store.Schedule{Name: "nightly", TeamID: "team-a", Owner: "alice", NextFireAt: at(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	fire := func(id string) error {
		cur, err := e.GetSchedule(ctx, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.FireSchedule(ctx, store.ScheduleFire{ScheduleID: s.ID, ScheduledAt: cur.NextFireAt, Version: cur.Version,
			FiredAt: cur.NextFireAt, NextFireAt: cur.NextFireAt.Add(24 * time.Hour), Outcome: store.FireCreated,
			Tasks: []store.Task{{ID: id, TeamID: "team-a", MachineID: "m1", Priority: 1}}})
		return err
	}
	for _, trigger := range []string{
		`CREATE TRIGGER fail BEFORE INSERT ON tasks BEGIN SELECT RAISE(ABORT, 'injected: disk full'); END`,
		`CREATE TRIGGER fail BEFORE INSERT ON schedule_fires BEGIN SELECT RAISE(ABORT, 'injected: disk full'); END`,
		`CREATE TRIGGER fail BEFORE UPDATE ON schedules BEGIN SELECT RAISE(ABORT, 'injected: disk full'); END`,
	} {
		sqlExec(t, db, trigger)
		if err := fire("lost"); err == nil || !strings.Contains(err.Error(), "injected") {
			t.Fatalf("%s: fire = %v, want the injected failure", trigger, err)
		}
		sqlExec(t, db, `DROP TRIGGER fail`)
		if _, err := e.GetTask(ctx, "lost"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("%s: the failed fire's task exists: %v", trigger, err)
		}
		if fs, _ := e.ListFires(ctx, s.ID, 0); len(fs) != 0 {
			t.Fatalf("%s: the failed fire was recorded: %+v", trigger, fs)
		}
		if cur, _ := e.GetSchedule(ctx, s.ID); cur.Version != 1 || !cur.NextFireAt.Equal(at(time.Hour)) {
			t.Fatalf("%s: the failed fire moved the schedule: %+v", trigger, cur)
		}
	}
	if err := fire("kept"); err != nil {
		t.Fatal(err)
	}
	if fs, _ := e.ListFires(ctx, s.ID, 0); len(fs) != 1 || fs[0].TaskIDs[0] != "kept" {
		t.Fatalf("fires: %+v", fs)
	}
}

// The migration that adds schedules keeps them across a reopen.
func TestReopenSchedules(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	e := open(t, path)
	if _, err := e.CreateSchedule(ctx, store.Schedule{Name: "n", TeamID: "t", Owner: "o"}); err != nil {
		t.Fatal(err)
	}
	e.Close()
	e = open(t, path)
	defer e.Close()
	if _, err := e.ScheduleByName(ctx, "n"); err != nil {
		t.Fatal(err)
	}
}
