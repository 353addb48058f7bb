package postgres_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/postgres"
	"github.com/rediacc/rediacc/internal/store/postgres/pgtest"
	"github.com/rediacc/rediacc/internal/store/storetest"
)

// appLogin creates a login role with the privileges the store needs in
// owner's schema (all but writing the login mappings when readOnlyLogins)
// and opens the store as it.
func appLogin(t *testing.T, owner *postgres.Engine, dsn string, readOnlyLogins bool) (*postgres.Engine, string) {
	t.Helper()
	schema := owner.Schema()
	role, pass := "app_"+schema, "pw-"+schema
	qs := []string{
		`CREATE ROLE ` + role + ` LOGIN PASSWORD '` + pass + `'`,
		`GRANT USAGE ON SCHEMA ` + schema + ` TO ` + role,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ` + schema + ` TO ` + role,
	}
	if readOnlyLogins {
		qs = append(qs, `REVOKE INSERT, UPDATE, DELETE ON `+schema+`.logins FROM `+role)
	}
	for _, q := range qs {
		if _, err := owner.Pool().Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		_, _ = owner.Pool().Exec(context.Background(), `DROP OWNED BY `+role)
		_, _ = owner.Pool().Exec(context.Background(), `DROP ROLE `+role)
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(role, pass)
	app, err := postgres.Open(ctx, u.String())
	if err != nil {
		t.Fatalf("Open as %s: %v", role, err)
	}
	t.Cleanup(func() { _ = app.Close() })
	return app, role
}

func rec(actor, id string) audit.Record {
	return audit.Record{Time: storetest.T0, Actor: actor, Action: "team.create", EntityType: audit.EntityTeam,
		EntityID: id, Team: id, Result: audit.ResultOK}
}

// TestLoginsAndImpersonation: a connection's audit records must name its
// login's user unless the login holds the impersonation grant; the store's
// creator holds it; a refused record refuses the change it came with; a
// login without write access to the mappings cannot grant itself.
func TestLoginsAndImpersonation(t *testing.T) {
	dsn := pgtest.Schema(t)
	owner, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	me, err := owner.SessionLogin(ctx)
	if err != nil || !me.Stored || !me.Impersonate || me.User != me.Login || me.AddedAt.IsZero() {
		t.Fatalf("creator's login: %+v %v, want a stored mapping with the impersonation grant", me, err)
	}
	app, role := appLogin(t, owner, dsn, true)
	l, err := app.SessionLogin(ctx)
	if err != nil || l.Login != role || l.User != role || l.Impersonate || l.Stored {
		t.Fatalf("app login: %+v %v, want the default (itself, no grant)", l, err)
	}
	// As another user: refused, and the change with it.
	_, err = app.CreateTeam(store.WithAudit(ctx, rec("alice", "t1")), store.Team{Name: "t1"})
	if !errors.Is(err, store.ErrForbidden) || !strings.Contains(err.Error(), "impersonation") || !strings.Contains(err.Error(), role) {
		t.Fatalf("CreateTeam as alice through %s: %v, want ErrForbidden naming the login and the grant", role, err)
	}
	if _, err := owner.GetTeam(ctx, "t1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused change was made: %v", err)
	}
	if _, err := app.AppendAudit(ctx, rec("alice", "x")); !errors.Is(err, store.ErrForbidden) {
		t.Fatalf("AppendAudit as alice: %v", err)
	}
	// As itself: fine.
	if _, err := app.CreateTeam(store.WithAudit(ctx, rec(role, "t2")), store.Team{Name: "t2"}); err != nil {
		t.Fatal(err)
	}
	// It cannot grant itself (no write access to logins here).
	if err := app.PutLogin(ctx, store.Login{Login: role, User: role, Impersonate: true}); !errors.Is(err, store.ErrForbidden) {
		t.Fatalf("self-grant: %v, want ErrForbidden", err)
	}
	// Mapped to carol by the owner: it acts as carol, and only as carol.
	if err := owner.PutLogin(ctx, store.Login{Login: role, User: "carol"}); err != nil {
		t.Fatal(err)
	}
	if _, err := app.AppendAudit(ctx, rec("carol", "y")); err != nil {
		t.Fatalf("as its mapped user: %v", err)
	}
	if _, err := app.AppendAudit(ctx, rec(role, "y")); !errors.Is(err, store.ErrForbidden) {
		t.Fatalf("as its login name once mapped to carol: %v", err)
	}
	// Granted impersonation: any actor.
	if err := owner.PutLogin(ctx, store.Login{Login: role, User: "carol", Impersonate: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := app.CreateTeam(store.WithAudit(ctx, rec("alice", "t1")), store.Team{Name: "t1"}); err != nil {
		t.Fatalf("with the grant: %v", err)
	}
	ls, err := owner.ListLogins(ctx)
	if err != nil || len(ls) != 2 {
		t.Fatalf("ListLogins: %+v %v", ls, err)
	}
	if err := owner.DeleteLogin(ctx, role); err != nil {
		t.Fatal(err)
	}
	if err := owner.DeleteLogin(ctx, role); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second DeleteLogin: %v", err)
	}
	if _, err := app.AppendAudit(ctx, rec("alice", "z")); !errors.Is(err, store.ErrForbidden) {
		t.Fatalf("after the mapping was removed: %v", err)
	}
	storetest.VerifyAudit(t, owner)
}
