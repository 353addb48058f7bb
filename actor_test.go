package rediacc_test

import (
	"context"
	"errors"
	"testing"

	"github.com/rediacc/rediacc"
)

// Issue 8, kind 6: a single-tenant program sets Config.DefaultActor once
// instead of calling WithActor on every call; an explicit WithActor still
// wins; an impersonated actor is audited with who impersonated it.
func TestDefaultActorAndImpersonation(t *testing.T) {
	st := rediacc.NewMemoryStore()
	c, err := rediacc.New(context.Background(), rediacc.Config{Store: st, DataDir: t.TempDir(), Logger: testLogger(t), DefaultActor: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bg := context.Background()
	if _, err := c.CreateTeam(bg, "ops", ""); err != nil { // svc, the first actor, owns the store
		t.Fatal(err)
	}
	if _, err := c.CreateTeam(rediacc.WithActor(bg, "bob"), "other", ""); !errors.Is(err, rediacc.ErrPermissionDenied) {
		t.Fatalf("WithActor(bob) must win over the default actor: %v", err)
	}
	if err := c.AddStoreRole(bg, "boss", rediacc.RoleOwner); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateTeam(rediacc.WithImpersonation(bg, "boss", "root"), "imp", ""); err != nil {
		t.Fatal(err)
	}
	recs, err := c.AuditLog(bg, rediacc.AuditFilter{Action: "team.create"})
	if err != nil || len(recs) != 3 {
		t.Fatalf("team.create records: %+v %v", recs, err)
	}
	for i, want := range []struct{ actor, result, via string }{{"svc", "ok", ""}, {"bob", "denied", ""}, {"boss", "ok", "root"}} {
		if r := recs[i]; r.Actor != want.actor || r.Result != want.result || r.Details["via"] != want.via {
			t.Errorf("record %d: actor %s result %s via %q, want %+v", i, r.Actor, r.Result, r.Details["via"], want)
		}
	}
	if _, err := rediacc.New(bg, rediacc.Config{Store: rediacc.NewMemoryStore(), DefaultActor: "not a user!"}); !errors.Is(err, rediacc.ErrInvalidArgument) {
		t.Errorf("a malformed DefaultActor: %v", err)
	}
	// Without either, nothing runs.
	c2, err := rediacc.New(bg, rediacc.Config{Store: rediacc.NewMemoryStore(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := c2.Teams(bg); !errors.Is(err, rediacc.ErrNoActor) {
		t.Errorf("no actor: %v", err)
	}
}
