package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
)

// TestMigrateFromVersion1: a file written with schema version 1 (machines
// and tasks only, teams as free text) is upgraded on Open: the team
// "default" and a team for every name in use exist, rows without a team
// join "default", the trail starts empty, and everything else is kept.
func TestMigrateFromVersion1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v1.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE rediacc_schema (version INTEGER NOT NULL) STRICT`,
		`INSERT INTO rediacc_schema (version) VALUES (1)`,
		fmt.Sprintf(`PRAGMA application_id = %d`, applicationID),
		migrations[0],
		`INSERT INTO machines (name, team, host, port, user_name, created_at, updated_at) VALUES
			('web', 'prod', 'h', 22, 'u', 1, 1), ('box', '', 'h', 22, 'u', 1, 1)`,
		`INSERT INTO tasks (id, team, machine, priority, status, created_at, enqueued_at, ready_at) VALUES
			('t1', 'staging', 'gone', 3, 'PENDING', 1, 1, 1), ('t2', '', 'box', 3, 'COMPLETED', 2, 2, 2),
			('t3', 'prod', 'web', 1, 'PENDING', 3, 3, 3)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	e, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("Open v1 file: %v", err)
	}
	defer e.Close()
	var v int
	if err := e.r.QueryRowContext(ctx, `SELECT version FROM rediacc_schema`).Scan(&v); err != nil || v != SchemaVersion() {
		t.Fatalf("schema version %d, %v; want %d", v, err, SchemaVersion())
	}
	teams, err := e.ListTeams(ctx, store.TeamFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tm := range teams {
		if tm.CreatedAt.IsZero() || time.Since(tm.CreatedAt) > time.Hour || time.Since(tm.CreatedAt) < -time.Hour {
			t.Errorf("team %s created at %v", tm.Name, tm.CreatedAt)
		}
		names = append(names, tm.Name)
		if tm.ID != tm.Name {
			t.Errorf("team %s got the id %q, want its name", tm.Name, tm.ID)
		}
	}
	if fmt.Sprint(names) != "[default prod staging]" {
		t.Fatalf("teams after migration: %v", names)
	}
	for name, want := range map[string]string{"web": "prod", "box": store.DefaultTeam} {
		if m, err := e.GetMachine(ctx, name); err != nil || m.TeamID != want || m.Team != want || m.ID != name {
			t.Fatalf("machine %s: %+v, %v; want team %s", name, m, err, want)
		}
	}
	for id, want := range map[string]string{"t1": "staging", "t2": store.DefaultTeam, "t3": "prod"} {
		if tk, err := e.GetTask(ctx, id); err != nil || tk.TeamID != want || tk.Team != want {
			t.Fatalf("task %s: %+v, %v; want team %s", id, tk, err, want)
		}
	}
	if head, err := e.AuditHead(ctx); err != nil || head != (audit.Head{}) {
		t.Fatalf("audit head after migration: %+v, %v", head, err)
	}
	// The upgraded store works: members, the trail, claims.
	if _, err := e.PutMember(store.WithAudit(ctx, audit.Record{Time: time.Now(), Actor: "a", Action: "team.member.add", Result: audit.ResultOK}),
		store.Member{TeamID: "staging", User: "bob", Role: "viewer"}); err != nil {
		t.Fatal(err)
	}
	if err := e.DeleteTeam(ctx, "staging", time.Time{}); err == nil {
		t.Fatal("deleted a team with a pending task")
	}
	now := time.Unix(0, 10).UTC()
	got, err := e.Claim(ctx, store.ClaimRequest{Owner: "w", Now: now, LeaseUntil: now.Add(time.Minute), Max: 5})
	if err != nil || len(got) != 2 || got[0].ID != "t3" {
		t.Fatalf("claim after migration: %+v, %v", got, err)
	}
	e.Close()

	// Opening again does not migrate again.
	e2, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if ms, _ := e2.ListMembers(ctx, ""); len(ms) != 1 {
		t.Fatalf("members after reopen: %+v", ms)
	}
}
