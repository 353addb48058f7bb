package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/sqlite"
)

// CreateTasks writes tasks without an idempotency key many to an INSERT
// statement: a batch larger than one statement, keyed tasks among the
// others, lands whole and as given; a taken id anywhere in it (stored
// before, or repeated in the batch) fails the whole batch with the index
// of the task that failed, as when each task had its own statement.
func TestCreateTasksManyRows(t *testing.T) {
	ctx := context.Background()
	e, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	task := func(id string, i int) store.Task {
		return store.Task{ID: id, TeamID: "team-a", MachineID: fmt.Sprint("m", i%3), Priority: 1 + i%5,
			Spec: []byte(`{"i":` + fmt.Sprint(i) + `}`), CreatedAt: at, EnqueuedAt: at.Add(time.Duration(i)), ReadyAt: at}
	}
	batch := func(prefix string, n int) []store.Task {
		ts := make([]store.Task, n)
		for i := range ts {
			ts[i] = task(fmt.Sprintf("%s-%03d", prefix, i), i)
		}
		return ts
	}
	count := func() int {
		ts, err := e.ListTasks(ctx, store.TaskFilter{})
		if err != nil {
			t.Fatal(err)
		}
		return len(ts)
	}

	in := batch("a", 150)
	in[70].IdempotencyKey = "key-70"
	out, err := e.CreateTasks(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	for i, got := range out {
		want := in[i]
		want.Status = store.Pending
		want.Team, want.Machine = want.TeamID, want.MachineID // no such team or machine: the ids
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("out[%d] (-want +got):\n%s", i, diff)
		}
		stored, err := e.GetTask(ctx, got.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(got, stored); diff != "" {
			t.Fatalf("GetTask(%s) differs from out[%d] (-out +stored):\n%s", got.ID, i, diff)
		}
	}

	for _, tc := range []struct {
		name  string
		taken int // index of the task whose id is taken
		id    string
	}{
		{"id taken by a stored task, mid-statement", 45, "a-100"},
		{"id taken by a stored task, in the last tasks", 131, "a-000"},
		{"id repeated in the batch", 77, "b-010"},
	} {
		ts := batch("b", 140)
		ts[tc.taken].ID = tc.id
		out, err := e.CreateTasks(ctx, ts)
		if !errors.Is(err, store.ErrExists) || !strings.Contains(err.Error(), fmt.Sprintf("task %d:", tc.taken)) || out != nil {
			t.Fatalf("%s: CreateTasks = %d tasks, %v; want ErrExists naming task %d", tc.name, len(out), err, tc.taken)
		}
		if n := count(); n != len(in) {
			t.Fatalf("%s: %d tasks stored after the failed batch, want %d", tc.name, n, len(in))
		}
	}
}
