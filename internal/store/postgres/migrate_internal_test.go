package postgres

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/postgres/pgtest"
)

// TestMigrateToIdentity: a store written by the first schema (teams and
// machines keyed by name) is upgraded on Open: every team and machine gets
// its name as its id, so tasks, members, vault paths and audit records that
// name them keep matching; names become labels; a new team of a name gets a
// new id.
func TestMigrateToIdentity(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Schema(t)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	var schema string
	if err := conn.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		// The schema is created by Open: create it here, as version 1.
		var sp string
		if err := conn.QueryRow(ctx, `SHOW search_path`).Scan(&sp); err != nil {
			t.Fatal(err)
		}
		schema = sp
		if _, err := conn.Exec(ctx, `CREATE SCHEMA `+pgx.Identifier{sp}.Sanitize()); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{
		fmt.Sprintf(`CREATE TABLE %s (version int4 NOT NULL)`, versionTable),
		fmt.Sprintf(`INSERT INTO %s (version) VALUES (1)`, versionTable),
		migrations[0],
		`INSERT INTO teams (name, description, created_at) VALUES ('prod', 'production', 1)`,
		`INSERT INTO members (team, user_name, role, added_at) VALUES ('prod', 'bob', 'admin', 1)`,
		`INSERT INTO machines (name, team, host, port, user_name, created_at, updated_at) VALUES ('web', 'prod', 'h', 22, 'u', 1, 1)`,
		`INSERT INTO tasks (id, idempotency_key, team, machine, priority, status, created_at, enqueued_at, ready_at)
			VALUES ('t1', 'k', 'prod', 'web', 3, 'PENDING', 1, 1, 1)`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%.60s: %v", q, err)
		}
	}
	conn.Close(ctx)

	e, err := Open(ctx, dsn)
	if err != nil {
		t.Fatalf("Open a version 1 store: %v", err)
	}
	defer e.Close()
	tm, err := e.TeamByName(ctx, "prod")
	if err != nil || tm.ID != "prod" || tm.Description != "production" {
		t.Fatalf("team after migration: %+v, %v", tm, err)
	}
	if roles, _ := e.MemberRoles(ctx, "bob"); roles["prod"] != "admin" {
		t.Fatalf("member after migration: %v", roles)
	}
	m, err := e.MachineByName(ctx, "web")
	if err != nil || m.ID != "web" || m.TeamID != "prod" || m.Team != "prod" {
		t.Fatalf("machine after migration: %+v, %v", m, err)
	}
	tk, err := e.GetTask(ctx, "t1")
	if err != nil || tk.TeamID != "prod" || tk.MachineID != "web" || tk.Team != "prod" || tk.Machine != "web" {
		t.Fatalf("task after migration: %+v, %v", tk, err)
	}
	if got, created, err := e.CreateTask(ctx, store.Task{TeamID: "prod", MachineID: "web", Priority: 3, IdempotencyKey: "k"}); err != nil || created || got.ID != "t1" {
		t.Fatalf("idempotency key after migration: %+v %v %v", got, created, err)
	}
	if err := e.RenameTeam(ctx, "prod", "production"); err != nil {
		t.Fatal(err)
	}
	fresh, err := e.CreateTeam(ctx, store.Team{Name: "prod"})
	if err != nil || fresh.ID == "prod" {
		t.Fatalf("a new team of the old name: %+v, %v", fresh, err)
	}
	if v := SchemaVersion(); v != len(migrations) {
		t.Fatalf("schema version %d", v)
	}
}
