package rediacc_test

import (
	"context"
	"errors"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/internal/store/postgres/pgtest"
)

// TestPostgresLoginActor: on PostgreSQL the acting user defaults to the
// rediacc user the database login (session_user) is mapped to; acting as
// another user needs the login's impersonation grant, refused early with a
// *LoginError (ErrPermissionDenied) otherwise; an unmapped login is refused
// with how to map it. The owner login (which created the schema) holds the
// grant.
func TestPostgresLoginActor(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Schema(t)
	dir := t.TempDir()
	open := func(dsn string, cfg rediacc.Config) *rediacc.Client {
		t.Helper()
		cfg.StoreURL, cfg.DataDir, cfg.Logger = dsn, t.TempDir(), testLogger(nil)
		cfg.AuditKeyFile = filepath.Join(dir, "audit.key")
		cfg.Health = rediacc.HealthConfig{Interval: -1}
		c, err := rediacc.New(ctx, cfg)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	// The owner login, no actor set: acts as its mapped user (itself) and
	// becomes the store's owner.
	owner := open(dsn, rediacc.Config{})
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var ownerLogin, schema string
	if err := conn.QueryRow(ctx, `SELECT session_user, current_schema()`).Scan(&ownerLogin, &schema); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.CreateTeam(ctx, "ops", ""); err != nil {
		t.Fatalf("CreateTeam with the login's default actor: %v", err)
	}
	recs, err := owner.AuditLog(ctx, rediacc.AuditFilter{Action: "team.create"})
	if err != nil || len(recs) != 1 || recs[0].Actor != ownerLogin {
		t.Fatalf("team.create records %+v (%v), want actor %q (the login's user)", recs, err, ownerLogin)
	}
	// The owner login holds the grant: it may act as others.
	if _, err := owner.CreateTeam(rediacc.WithActor(ctx, "svc-user"), "dev", ""); !errors.Is(err, rediacc.ErrPermissionDenied) {
		t.Fatalf("impersonated svc-user without a role: %v, want the role check's ErrPermissionDenied", err)
	} else if le := (*rediacc.LoginError)(nil); errors.As(err, &le) {
		t.Fatalf("the owner login holds the grant, got %v", err)
	}

	// A second login role, not mapped yet.
	role := "app_" + schema
	appDSN := pgLoginRole(ctx, t, conn, dsn, role, "LOGIN",
		`GRANT USAGE ON SCHEMA `+schema+` TO `+role,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA `+schema+` TO `+role,
		`GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA `+schema+` TO `+role)

	var le *rediacc.LoginError
	unmapped := open(appDSN, rediacc.Config{})
	_, err = unmapped.Teams(ctx)
	if !errors.Is(err, rediacc.ErrPermissionDenied) || !errors.As(err, &le) || le.Login != role || le.User != "" ||
		!strings.Contains(err.Error(), "mapped to no rediacc user") {
		t.Fatalf("unmapped login: %v, want a *LoginError naming %s and how to map it", err, role)
	}

	// Map the login to bob (no grant) and make bob an owner.
	if _, err := conn.Exec(ctx, `INSERT INTO logins (login, user_name, impersonate, added_at) VALUES ($1, 'bob', false, 0)`, role); err != nil {
		t.Fatal(err)
	}
	if err := owner.AddStoreRole(ctx, "bob", rediacc.RoleOwner); err != nil {
		t.Fatal(err)
	}
	app := open(appDSN, rediacc.Config{})
	if _, err := app.CreateTeam(ctx, "qa", ""); err != nil {
		t.Fatalf("CreateTeam as the app login's user: %v", err)
	}
	recs, err = owner.AuditLog(ctx, rediacc.AuditFilter{Action: "team.create", Actor: "bob"})
	if err != nil || len(recs) != 1 || recs[0].EntityID == "" {
		t.Fatalf("bob's team.create records %+v (%v)", recs, err)
	}
	for _, c := range []struct {
		name string
		c    *rediacc.Client
		ctx  context.Context
	}{
		{"WithActor", app, rediacc.WithActor(ctx, ownerLogin)},
		{"WithImpersonation", app, rediacc.WithImpersonation(ctx, ownerLogin, "root")},
		{"DefaultActor", open(appDSN, rediacc.Config{DefaultActor: ownerLogin}), ctx},
	} {
		_, err := c.c.CreateTeam(c.ctx, "x-"+strings.ToLower(c.name), "")
		if !errors.Is(err, rediacc.ErrPermissionDenied) || !errors.As(err, &le) || le.Login != role || le.User != "bob" ||
			le.Wanted != ownerLogin || !strings.Contains(err.Error(), "impersonation grant") {
			t.Fatalf("%s: acting as %s without the grant: %v, want a *LoginError", c.name, ownerLogin, err)
		}
	}
	// With the grant (read at New): the app login may act as others.
	if _, err := conn.Exec(ctx, `UPDATE logins SET impersonate = true WHERE login = $1`, role); err != nil {
		t.Fatal(err)
	}
	granted := open(appDSN, rediacc.Config{})
	if _, err := granted.CreateTeam(rediacc.WithActor(ctx, ownerLogin), "web", ""); err != nil {
		t.Fatalf("acting as %s with the grant: %v", ownerLogin, err)
	}
	recs, err = owner.AuditLog(ctx, rediacc.AuditFilter{Action: "team.create", Actor: ownerLogin})
	if err != nil || len(recs) != 2 {
		t.Fatalf("%s's team.create records %+v (%v), want 2", ownerLogin, recs, err)
	}
}

// TestSQLiteActorUnchanged: without logins (SQLite), no actor is still
// ErrNoActor and any actor may be named.
func TestSQLiteActorUnchanged(t *testing.T) {
	ctx := context.Background()
	c, err := rediacc.New(ctx, rediacc.Config{DataDir: t.TempDir(), Logger: testLogger(nil), Health: rediacc.HealthConfig{Interval: -1}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Teams(ctx); !errors.Is(err, rediacc.ErrNoActor) {
		t.Fatalf("no actor on SQLite: %v, want ErrNoActor", err)
	}
	if _, err := c.CreateTeam(rediacc.WithActor(ctx, "anyone"), "ops", ""); err != nil {
		t.Fatalf("any actor on SQLite: %v", err)
	}
}

// pgLoginRole creates role with the given attributes (such as "LOGIN" or
// "LOGIN SUPERUSER") and a password through conn, runs grants, and returns
// dsn with the role's name and password. The role, its objects and its
// sessions are removed when the test ends.
func pgLoginRole(ctx context.Context, t *testing.T, conn *pgx.Conn, dsn, role, attrs string, grants ...string) string {
	t.Helper()
	pass := "pw-" + role
	for _, q := range append([]string{`CREATE ROLE ` + role + ` ` + attrs + ` PASSWORD '` + pass + `'`}, grants...) {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		if c, err := pgx.Connect(context.Background(), dsn); err == nil {
			_, _ = c.Exec(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, role)
			_, _ = c.Exec(context.Background(), `DROP OWNED BY `+role)
			_, _ = c.Exec(context.Background(), `DROP ROLE `+role)
			_ = c.Close(context.Background())
		}
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(role, pass)
	return u.String()
}
