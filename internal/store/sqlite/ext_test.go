package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/storetest"
)

func BenchmarkBatch(b *testing.B) {
	storetest.BenchBatch(b, func(b *testing.B) store.Engine {
		e, err := Open(context.Background(), filepath.Join(b.TempDir(), "store.db"))
		if err != nil {
			b.Fatal(err)
		}
		return e
	})
}

// TestMigrateFromVersion2: a version-2 file (teams and the audit trail, no
// health, no audit base) is upgraded on Open: machines have no health
// sample, the base is zero, the stored trail verifies from it, and it can be
// trimmed.
func TestMigrateFromVersion2(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v2.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	var recs []audit.Record
	var h audit.Head
	for i := range 3 {
		r := audit.Chain(h, audit.Record{Time: time.UnixMilli(int64(1000 * (i + 1))).UTC(), Actor: "alice",
			Action: fmt.Sprint("step.", i), Result: audit.ResultOK})
		recs, h = append(recs, r), audit.HeadOf(r)
	}
	stmts := []string{
		`CREATE TABLE rediacc_schema (version INTEGER NOT NULL) STRICT`,
		`INSERT INTO rediacc_schema (version) VALUES (2)`,
		fmt.Sprintf(`PRAGMA application_id = %d`, applicationID),
		migrations[0],
		migrations[1],
		`INSERT INTO machines (name, team, host, port, user_name, config, created_at, updated_at) VALUES
			('web', 'default', 'h', 22, 'u', CAST('{"a":1}' AS BLOB), 1, 2)`,
		`INSERT INTO tasks (id, team, machine, priority, status, created_at, enqueued_at, ready_at, completed_at) VALUES
			('done', 'default', 'web', 3, 'COMPLETED', 1, 1, 1, 50), ('open', 'default', 'web', 3, 'PENDING', 2, 2, 2, NULL)`,
	}
	for _, r := range recs {
		stmts = append(stmts, fmt.Sprintf(`INSERT INTO audit (`+auditCols+`) VALUES (%d, %d, 'alice', '%s', '', '', '', 'ok', NULL, '%s', '%s')`,
			r.Seq, r.Time.UnixMilli(), r.Action, r.PrevHash, r.Hash))
	}
	stmts = append(stmts, fmt.Sprintf(`UPDATE audit_head SET seq = %d, hash = '%s'`, h.Seq, h.Hash))
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	e, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("Open v2 file: %v", err)
	}
	defer e.Close()
	var v int
	if err := e.r.QueryRowContext(ctx, `SELECT version FROM rediacc_schema`).Scan(&v); err != nil || v != SchemaVersion() {
		t.Fatalf("schema version %d, %v; want %d", v, err, SchemaVersion())
	}
	m, err := e.GetMachine(ctx, "web")
	if err != nil || m.Health != nil || !m.HealthAt.IsZero() || string(m.Config) != `{"a":1}` {
		t.Fatalf("machine after migration: %+v, %v", m, err)
	}
	if err := e.SetMachineHealth(ctx, "web", []byte(`{"cpu":1}`), time.Unix(5, 0)); err != nil {
		t.Fatal(err)
	}
	if base, err := e.AuditBase(ctx); err != nil || base != (audit.Head{}) {
		t.Fatalf("base after migration: %v, %v", base, err)
	}
	storetest.VerifyAudit(t, e)
	if err := e.TrimAudit(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if base, _ := e.AuditBase(ctx); base != audit.HeadOf(recs[1]) {
		t.Fatalf("base after trim: %v", base)
	}
	if got := storetest.VerifyAudit(t, e); len(got) != 1 || got[0].Seq != 3 {
		t.Fatalf("stored after trim: %+v", got)
	}
	ts, err := e.ListPrunable(ctx, time.Unix(0, 100), 10)
	if err != nil || len(ts) != 1 || ts[0].ID != "done" {
		t.Fatalf("ListPrunable after migration: %+v, %v", ts, err)
	}
	q, err := e.QueuedByMachine(ctx, nil)
	if err != nil || q["web"] != 1 {
		t.Fatalf("QueuedByMachine after migration: %v, %v", q, err)
	}
}

// plan returns SQLite's query plan for q, one step per line.
func plan(t *testing.T, e *Engine, q string, args ...any) string {
	t.Helper()
	rows, err := e.r.QueryContext(context.Background(), `EXPLAIN QUERY PLAN `+q, args...)
	if err != nil {
		t.Fatalf("EXPLAIN %s: %v", q, err)
	}
	defer rows.Close()
	var steps []string
	for rows.Next() {
		var (
			id, parent, unused int
			detail             string
		)
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		steps = append(steps, detail)
	}
	return strings.Join(steps, "\n")
}

// TestExtQueryPlans: the placement count, the prune listing and the
// CompletedAfter filter read indexes, not the whole table.
func TestExtQueryPlans(t *testing.T) {
	e, err := Open(context.Background(), filepath.Join(t.TempDir(), "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for _, c := range []struct {
		name, q, want string
		args          []any
	}{
		{"QueuedByMachine(machines)", `SELECT machine_id, count(*) FROM tasks INDEXED BY tasks_machine
			WHERE machine_id IN (SELECT value FROM json_each(?)) AND status IN ` + sqlQueued + ` GROUP BY machine_id`,
			"USING COVERING INDEX tasks_machine (machine_id=? AND status=?)", []any{`["a"]`}},
		{"ListPrunable", `SELECT ` + taskCols + ` FROM tasks INDEXED BY tasks_completed
			WHERE completed_at < ? AND status IN ` + sqlTerminal + ` ORDER BY completed_at, seq LIMIT ?`,
			"USING INDEX tasks_completed (completed_at<?)", []any{1, 10}},
	} {
		p := plan(t, e, c.q, c.args...)
		if !strings.Contains(p, c.want) || strings.Contains(p, "SCAN tasks\n") || strings.HasSuffix(p, "SCAN tasks") {
			t.Errorf("%s: plan\n%s\nwant %q", c.name, p, c.want)
		}
		if strings.Contains(p, "TEMP B-TREE FOR ORDER BY") {
			t.Errorf("%s sorts: %s", c.name, p)
		}
	}
	// DeleteTasks finds its rows by id, not among every finished task.
	if p := plan(t, e, sqlDeleteFinished, `["a","b"]`); !strings.Contains(p, "USING INDEX sqlite_autoindex_tasks_1 (id=?)") {
		t.Errorf("DeleteTasks: plan\n%s", p)
	}
	// ListTasks with CompletedAfter (the finished-per-minute count) reads
	// only the finished tasks after the bound, whatever else it filters on.
	for _, f := range []store.TaskFilter{
		{CompletedAfter: time.Unix(60, 0)},
		{CompletedAfter: time.Unix(60, 0), Statuses: []store.Status{store.Completed, store.Failed, store.Cancelled}},
		{CompletedAfter: time.Unix(60, 0), TeamID: "prod", Limit: 10},
	} {
		q, args := taskQuery(f)
		p := plan(t, e, `SELECT `+taskCols+` FROM tasks `+q, args...)
		if !strings.Contains(p, "USING INDEX tasks_completed (completed_at>?)") {
			t.Errorf("ListTasks(%+v): plan\n%s", f, p)
		}
	}
}

// BenchmarkClaimBusyBacklog: a claim that must skip a busy machine's
// backlog of 10,000 priority-3 tasks to reach one task of another machine.
func BenchmarkClaimBusyBacklog(b *testing.B) {
	ctx := context.Background()
	e, err := Open(ctx, filepath.Join(b.TempDir(), "store.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	t0 := storetest.T0
	backlog := make([]store.Task, 10000)
	for i := range backlog {
		backlog[i] = store.Task{MachineID: "hot", Priority: 3, CreatedAt: t0.Add(time.Duration(i))}
	}
	if _, err := e.CreateTasks(ctx, backlog); err != nil {
		b.Fatal(err)
	}
	now := t0.Add(time.Hour)
	for _, busy := range []bool{false, true} {
		b.Run(fmt.Sprintf("busy=%v", busy), func(b *testing.B) {
			r := store.ClaimRequest{Owner: "w", Now: now, LeaseUntil: now.Add(time.Hour), Max: 1}
			if busy {
				r.BusyMachines = []string{"hot"}
			} else {
				r.Machines = []string{"cool"}
			}
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				if _, _, err := e.CreateTask(ctx, store.Task{MachineID: "cool", Priority: 3, CreatedAt: now}); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				ts, err := e.Claim(ctx, r)
				if err != nil || len(ts) != 1 || ts[0].Machine != "cool" {
					b.Fatalf("claim: %v, %v", ts, err)
				}
				b.StopTimer()
				if _, err := e.Finish(ctx, store.Finish{ID: ts[0].ID, Owner: "w", At: now, Next: store.Completed}); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
