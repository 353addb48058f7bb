package rediacc_test

import (
	"context"
	"errors"
	"testing"

	"github.com/rediacc/rediacc"
)

// twoTeams builds teams alpha and beta, each with a machine (not reachable:
// these tests never run tasks) and an operator, and a viewer of alpha.
func twoTeams(t *testing.T) (*rediacc.Client, context.Context, context.Context) {
	t.Helper()
	f := newRoleFixture(t) // prod and staging, prod-01 and staging-01, members of prod
	c := f.c
	for user, team := range map[string]string{"op-alpha": "prod", "op-beta": "staging"} {
		if _, err := c.SetMember(as("owner"), team, user, rediacc.RoleOperator); err != nil {
			t.Fatal(err)
		}
	}
	return c, as("op-alpha"), as("op-beta")
}

// Issue 8, kind 3: idempotency keys are scoped per team, and a key that
// names an existing task returns it only through Get's access check and
// redaction. Before, an operator of one team submitting with another
// team's key got that team's task in full (command, env values, secret
// names, output), and the audit trail recorded a task.create for an id
// that never existed. The same through SubmitBatch and FanOut.
func TestIdempotencyKeyIsNoSecondDoor(t *testing.T) {
	c, alpha, beta := twoTeams(t)
	betaTask, err := c.Submit(beta, rediacc.TaskSpec{Machine: "staging-01", Command: "deploy --token-file /run/x",
		Env: map[string]string{"REGION": "beta-only"}, IdempotencyKey: "deploy-1"})
	if err != nil {
		t.Fatal(err)
	}
	leaks := func(what string, tk *rediacc.Task) {
		t.Helper()
		if tk.ID == betaTask.ID || tk.Command == betaTask.Command || tk.Env["REGION"] == "beta-only" || tk.Team != "prod" {
			t.Fatalf("%s: alpha's operator got beta's task: %+v", what, tk)
		}
	}
	mine, err := c.Submit(alpha, rediacc.TaskSpec{Machine: "prod-01", Command: "true", IdempotencyKey: "deploy-1"})
	if err != nil {
		t.Fatal(err)
	}
	leaks("Submit", mine)
	again, err := c.Submit(alpha, rediacc.TaskSpec{Machine: "prod-01", Command: "other", IdempotencyKey: "deploy-1"})
	if err != nil || again.ID != mine.ID || again.Command != "true" {
		t.Fatalf("the same key in the same team: %+v %v", again, err)
	}
	batch, err := c.SubmitBatch(alpha, []rediacc.TaskSpec{
		{Machine: "prod-01", Command: "b", IdempotencyKey: "deploy-1"},
		{Machine: "prod-01", Command: "c", IdempotencyKey: "batch-only"},
	})
	if err != nil || batch[0].ID != mine.ID || batch[1].ID == betaTask.ID {
		t.Fatalf("SubmitBatch with the key: %v %v", batch, err)
	}
	// beta's key "batch-only" is another key.
	if bb, err := c.SubmitBatch(beta, []rediacc.TaskSpec{{Machine: "staging-01", Command: "x", IdempotencyKey: "batch-only"}}); err != nil ||
		bb[0].ID == batch[1].ID || bb[0].Team != "staging" {
		t.Fatalf("beta's batch with alpha's key: %v %v", bb, err)
	}
	fan, err := c.FanOut(alpha, rediacc.FanOutSpec{Team: "prod", TaskSpec: rediacc.TaskSpec{Command: "f", IdempotencyKey: "deploy-1"}})
	if err != nil || len(fan) != 1 {
		t.Fatal(err)
	}
	leaks("FanOut", fan[0])
	// beta's task is unchanged and beta still gets it back by its key.
	if got, err := c.Submit(beta, rediacc.TaskSpec{Machine: "staging-01", Command: "ignored", IdempotencyKey: "deploy-1"}); err != nil || got.ID != betaTask.ID {
		t.Fatalf("beta's own key: %+v %v", got, err)
	}

	// Every task.create recorded ok names a task that exists; a key hit is
	// recorded against the existing task, marked idempotent.
	recs, err := c.AuditLog(as("owner"), rediacc.AuditFilter{Action: "task.create", Result: "ok"})
	if err != nil {
		t.Fatal(err)
	}
	hits := 0
	for _, r := range recs {
		if _, err := c.Get(as("owner"), r.EntityID); err != nil {
			t.Errorf("audit: task.create ok for %s, which does not exist: %v", r.EntityID, err)
		}
		if r.Details["idempotent"] == "existing" {
			hits++
			if r.Details["requested_id"] == "" || r.Details["requested_id"] == r.EntityID {
				t.Errorf("idempotent hit record: %+v", r)
			}
		}
	}
	if hits != 3 { // Submit again, the batch's first, beta's own key
		t.Errorf("%d idempotent hits audited, want 3", hits)
	}
}

// A key hit goes through Get's check: a viewer of the team (who may not
// submit) is refused before any lookup, and what an operator gets back is
// what Get would give them.
func TestIdempotencyHitIsAGet(t *testing.T) {
	c, alpha, _ := twoTeams(t)
	first, err := c.Submit(alpha, rediacc.TaskSpec{Machine: "prod-01", Command: "echo hi", IdempotencyKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Submit(as("viewer"), rediacc.TaskSpec{Machine: "prod-01", Command: "x", IdempotencyKey: "k"}); !errors.Is(err, rediacc.ErrPermissionDenied) {
		t.Fatalf("a viewer submitting with an existing key: %v", err)
	}
	hit, err := c.Submit(alpha, rediacc.TaskSpec{Machine: "prod-01", Command: "x", IdempotencyKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	viaGet, err := c.Get(alpha, first.ID)
	if err != nil || hit.ID != viaGet.ID || hit.Command != viaGet.Command || hit.Status != viaGet.Status {
		t.Fatalf("hit %+v, Get %+v, %v", hit, viaGet, err)
	}
}

// The other doors return data only through the same checks: an operator
// of one team reads nothing of another team's task through Wait, WaitAll,
// Watch, TaskLog, QueueStats or MachineStatus, and each read is audited.
func TestNoOtherDoors(t *testing.T) {
	c, alpha, beta := twoTeams(t)
	bt, err := c.Submit(beta, rediacc.TaskSpec{Machine: "staging-01", Command: "secret-command"})
	if err != nil {
		t.Fatal(err)
	}
	for name, read := range map[string]func() error{
		"Get":     func() error { _, err := c.Get(alpha, bt.ID); return err },
		"Wait":    func() error { _, err := c.Wait(alpha, bt.ID); return err },
		"WaitAll": func() error { _, err := c.WaitAll(alpha, []string{bt.ID}); return err },
		"Watch":   func() error { _, err := c.Watch(alpha, []string{bt.ID}); return err },
		"TaskLog": func() error { _, err := c.TaskLog(alpha, bt.ID); return err },
		"Cancel":  func() error { _, err := c.Cancel(alpha, bt.ID); return err },
		"List":    func() error { _, err := c.List(alpha, rediacc.ListFilter{Team: "staging"}); return err },
		"QueueStats": func() error {
			_, err := c.QueueStats(alpha, rediacc.StatsFilter{Team: "staging"})
			return err
		},
		"MachineStatus": func() error {
			_, err := c.MachineStatus(alpha, rediacc.MachineFilter{Team: "staging"})
			return err
		},
	} {
		// A task of a team alpha's operator has no role in is not found (as
		// an unknown id); a team named is denied.
		want := rediacc.ErrPermissionDenied
		if name != "List" && name != "QueueStats" && name != "MachineStatus" {
			want = rediacc.ErrNotFound
		}
		if err := read(); !errors.Is(err, want) {
			t.Errorf("%s of beta's task by alpha's operator: %v, want %v", name, err, want)
		}
	}
	ts, err := c.List(alpha, rediacc.ListFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range ts {
		if tk.Team != "prod" {
			t.Errorf("List without a team shows another team's task: %+v", tk)
		}
	}
	s, err := c.QueueStats(alpha, rediacc.StatsFilter{})
	if err != nil || s.ByTeam["staging"] != nil || s.ByMachine["staging-01"] != nil {
		t.Errorf("QueueStats without a team counts another team's tasks: %+v %v", s, err)
	}
	if st, err := c.MachineStatus(alpha, rediacc.MachineFilter{}); err != nil || len(st) != 1 || st[0].Name != "prod-01" {
		t.Errorf("MachineStatus shows another team's machines: %+v %v", st, err)
	}
	denied, _ := c.AuditLog(as("owner"), rediacc.AuditFilter{Actor: "op-alpha", Result: "denied"})
	if len(denied) < 9 {
		t.Errorf("%d denials audited, want one per refused read", len(denied))
	}
}
