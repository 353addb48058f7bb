package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/storetest"
)

// depthKey is one Depth group.
type depthKey struct {
	status, team, machine string
	priority              int
}

// counted returns Depth's groups as a map.
func counted(t *testing.T, e *Engine) map[depthKey]int {
	t.Helper()
	rows, err := e.Depth(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m := map[depthKey]int{}
	for _, r := range rows {
		if r.Count <= 0 {
			t.Fatalf("Depth returned an empty group %+v", r)
		}
		m[depthKey{string(r.Status), r.TeamID, r.MachineID, r.Priority}] = r.Count
	}
	return m
}

// grouped counts the tasks table directly (what Depth did before task_counts).
func grouped(t *testing.T, db *sql.DB) map[depthKey]int {
	t.Helper()
	rows, err := db.Query(`SELECT status, team_id, machine_id, priority, count(*) FROM tasks GROUP BY 1, 2, 3, 4`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	m := map[depthKey]int{}
	for rows.Next() {
		var k depthKey
		var n int
		if err := rows.Scan(&k.status, &k.team, &k.machine, &k.priority, &n); err != nil {
			t.Fatal(err)
		}
		m[k] = n
	}
	return m
}

func sameCounts(t *testing.T, e *Engine, step string) {
	t.Helper()
	if diff := cmp.Diff(grouped(t, e.r), counted(t, e)); diff != "" {
		t.Fatalf("after %s, Depth differs from the tasks (-tasks +Depth):\n%s", step, diff)
	}
}

// TestTaskCountsFollowEveryWrite: Depth, read from task_counts, matches a
// count of the tasks after inserts, claims, starts, finishes to every
// status, retries, cancellations, deletions and changes of team, machine
// and priority, whichever statement made them.
func TestTaskCountsFollowEveryWrite(t *testing.T) {
	ctx := context.Background()
	e, err := Open(ctx, filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	sameCounts(t, e, "open")
	ids := storetest.CreateTasks(t, e, "t", 300, 4)
	sameCounts(t, e, "300 inserts")
	if _, err := e.CreateTasks(ctx, []store.Task{{TeamID: "team", MachineID: "m9", Priority: 2, Spec: []byte(`{}`), CreatedAt: storetest.T0}}); err != nil {
		t.Fatal(err)
	}
	sameCounts(t, e, "a batch insert")
	now := storetest.T0.Add(time.Hour)
	claimed, err := e.Claim(ctx, store.ClaimRequest{Owner: "w", Now: now, LeaseUntil: now.Add(time.Minute), Max: 40})
	if err != nil || len(claimed) != 40 {
		t.Fatalf("claim: %d, %v", len(claimed), err)
	}
	sameCounts(t, e, "claims")
	for i, c := range claimed {
		if i%2 == 0 {
			if _, err := e.Start(ctx, c.ID, "w", store.Attempt{StartedAt: now}); err != nil {
				t.Fatal(err)
			}
		}
	}
	sameCounts(t, e, "starts")
	nexts := []store.Status{store.Completed, store.Failed, store.Cancelled, store.Pending}
	for i, c := range claimed[:20] {
		f := store.Finish{ID: c.ID, Owner: "w", At: now, Next: nexts[i%len(nexts)], CountAttempt: true}
		if f.Next == store.Pending {
			f.ReadyAt = now
		}
		if _, err := e.Finish(ctx, f); err != nil {
			t.Fatalf("finish %s → %s: %v", c.ID, f.Next, err)
		}
	}
	sameCounts(t, e, "finishes")
	for _, id := range ids[250:] {
		if _, err := e.Cancel(ctx, id, now); err != nil {
			t.Fatal(err)
		}
	}
	sameCounts(t, e, "cancellations")
	if _, err := e.Rescue(ctx, store.RescueRequest{Now: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	sameCounts(t, e, "rescue")
	if _, err := e.DeleteTasks(ctx, ids); err != nil {
		t.Fatal(err)
	}
	sameCounts(t, e, "deleting the finished tasks")
	for _, q := range []string{
		`UPDATE tasks SET team_id = 'other' WHERE machine_id = 'm1'`,
		`UPDATE tasks SET machine_id = 'm7' WHERE machine_id = 'm2' AND status = 'PENDING'`,
		`UPDATE tasks SET priority = 1 WHERE priority = 5`,
		`UPDATE tasks SET ready_at = ready_at + 1`, // no counted column: the trigger does not fire
		`DELETE FROM tasks WHERE machine_id = 'm3'`,
	} {
		if _, err := e.w.Exec(q); err != nil {
			t.Fatal(err)
		}
		sameCounts(t, e, q)
	}
}

// TestTaskCountsBackfill: a store written before task_counts (version 12)
// gets its counts from the tasks it holds when it is opened.
func TestTaskCountsBackfill(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v12.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	stmts := []string{`CREATE TABLE rediacc_schema (version INTEGER NOT NULL) STRICT`,
		fmt.Sprintf(`INSERT INTO rediacc_schema (version) VALUES (%d)`, SchemaVersion()-1),
		fmt.Sprintf(`PRAGMA application_id = %d`, applicationID)}
	stmts = append(stmts, migrations[:SchemaVersion()-1]...)
	stmts = append(stmts, `INSERT INTO tasks (id, team_id, machine_id, priority, status, created_at, enqueued_at, ready_at) VALUES
		('t1', 'a', 'x', 3, 'PENDING', 1, 1, 1), ('t2', 'a', 'x', 3, 'PENDING', 2, 2, 2),
		('t3', 'a', 'y', 1, 'COMPLETED', 3, 3, 3), ('t4', 'b', 'z', 5, 'FAILED', 4, 4, 4)`)
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%.60s: %v", q, err)
		}
	}
	db.Close()
	e, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	want := map[depthKey]int{{"PENDING", "a", "x", 3}: 2, {"COMPLETED", "a", "y", 1}: 1, {"FAILED", "b", "z", 5}: 1}
	if diff := cmp.Diff(want, counted(t, e)); diff != "" {
		t.Fatalf("Depth after the upgrade (-want +got):\n%s", diff)
	}
	sameCounts(t, e, "the upgrade")
}

// TestOldestPendingPlan: the oldest PENDING task (queue statistics) is read
// from tasks_pending_created without sorting the pending tasks (it sorted
// all of them: seconds with a million queued).
func TestOldestPendingPlan(t *testing.T) {
	ctx := context.Background()
	e, err := Open(ctx, filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ids := storetest.CreateTasks(t, e, "t", 50, 3)
	for _, f := range []store.TaskFilter{
		{Statuses: []store.Status{store.Pending}, Limit: 1},
		{Statuses: []store.Status{store.Pending}, TeamIDs: []string{"team"}, Limit: 1},
	} {
		q, args := taskQuery(f)
		rows, err := e.r.QueryContext(ctx, "EXPLAIN QUERY PLAN SELECT id FROM tasks "+q, args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		joined := fmt.Sprint(plan)
		if !strings.Contains(joined, "tasks_pending_created") || strings.Contains(joined, "TEMP B-TREE") {
			t.Errorf("%+v: plan %s, want tasks_pending_created without a sort", f, joined)
		}
		got, err := e.ListTasks(ctx, f)
		if err != nil || len(got) != 1 || got[0].ID != ids[0] {
			t.Errorf("%+v: %v, %v; want the first task %s", f, got, err, ids[0])
		}
	}
}
