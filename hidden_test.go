package rediacc_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
)

// Existence oracle: an operation on a machine, task, schedule or window of
// a team the caller may not see fails exactly as for a name or id that
// names nothing (same sentinel, same message but for the name), never with
// ErrPermissionDenied; a caller who may see it but not change it is denied.
func TestHiddenEntitiesReadAsNotFound(t *testing.T) {
	f := newRoleFixture(t)
	c := f.c
	owner := as("owner")
	sched, err := c.CreateSchedule(owner, rediacc.Schedule{Name: "prod-nightly", Cron: "0 3 * * *", Task: rediacc.TaskSpec{Machine: "prod-01", Command: "true"}})
	if err != nil {
		t.Fatal(err)
	}
	win, err := c.CreateWindow(owner, rediacc.MaintenanceWindow{Machine: "prod-01", Cron: "0 2 * * *", Duration: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	const unknownID = "00000000-0000-4000-8000-000000000000"
	type probe struct {
		name string
		// run calls the entry point on the prod entity (real) or on one
		// that does not exist (the unknown name or id).
		run            func(ctx context.Context, real bool) error
		realID, fakeID string // the names or ids the messages hold
	}
	pick := func(real bool, a, b string) string {
		if real {
			return a
		}
		return b
	}
	m := func(real bool) string { return pick(real, "prod-01", "no-such-01") }
	tk := func(real bool) string { return pick(real, f.task, unknownID) }
	probes := []probe{
		{"Machine", func(ctx context.Context, r bool) error { _, err := c.Machine(ctx, m(r)); return err }, "prod-01", "no-such-01"},
		{"RemoveMachine", func(ctx context.Context, r bool) error { return c.RemoveMachine(ctx, m(r)) }, "prod-01", "no-such-01"},
		{"MoveMachine", func(ctx context.Context, r bool) error { return c.MoveMachine(ctx, m(r), "staging") }, "prod-01", "no-such-01"},
		{"ForgetHostKeys", func(ctx context.Context, r bool) error { return c.ForgetHostKeys(ctx, m(r)) }, "prod-01", "no-such-01"},
		{"ProbeMachine", func(ctx context.Context, r bool) error { _, err := c.ProbeMachine(ctx, m(r)); return err }, "prod-01", "no-such-01"},
		{"DrainMachine", func(ctx context.Context, r bool) error { return c.DrainMachine(ctx, m(r), "x") }, "prod-01", "no-such-01"},
		{"ResumeMachine", func(ctx context.Context, r bool) error { return c.ResumeMachine(ctx, m(r)) }, "prod-01", "no-such-01"},
		{"Submit", func(ctx context.Context, r bool) error {
			_, err := c.Submit(ctx, rediacc.TaskSpec{Machine: m(r), Command: "true"})
			return err
		}, "prod-01", "no-such-01"},
		{"SubmitBatch", func(ctx context.Context, r bool) error {
			_, err := c.SubmitBatch(ctx, []rediacc.TaskSpec{{Machine: m(r), Command: "true"}})
			return err
		}, "prod-01", "no-such-01"},
		{"SubmitKeyRotation", func(ctx context.Context, r bool) error {
			_, err := c.SubmitKeyRotation(ctx, rediacc.KeyRotationOptions{Machine: m(r), Team: "staging"})
			return err
		}, "prod-01", "no-such-01"},
		{"CreateWindow", func(ctx context.Context, r bool) error {
			_, err := c.CreateWindow(ctx, rediacc.MaintenanceWindow{Machine: m(r), Team: "staging", Cron: "0 2 * * *", Duration: time.Hour})
			return err
		}, "prod-01", "no-such-01"},
		{"CreateSchedule (machine)", func(ctx context.Context, r bool) error {
			_, err := c.CreateSchedule(ctx, rediacc.Schedule{Name: "s-" + m(r), Cron: "0 3 * * *", Task: rediacc.TaskSpec{Machine: m(r), Command: "true"}})
			return err
		}, "prod-01", "no-such-01"},
		{"CreateSchedule (team and machine)", func(ctx context.Context, r bool) error {
			_, err := c.CreateSchedule(ctx, rediacc.Schedule{Name: "t-" + m(r), Team: "staging", Cron: "0 3 * * *", Task: rediacc.TaskSpec{Machine: m(r), Command: "true"}})
			return err
		}, "prod-01", "no-such-01"},
		{"Get", func(ctx context.Context, r bool) error { _, err := c.Get(ctx, tk(r)); return err }, f.task, unknownID},
		{"Wait", func(ctx context.Context, r bool) error { _, err := c.Wait(ctx, tk(r)); return err }, f.task, unknownID},
		{"Cancel", func(ctx context.Context, r bool) error { _, err := c.Cancel(ctx, tk(r)); return err }, f.task, unknownID},
		{"TaskLog", func(ctx context.Context, r bool) error { _, err := c.TaskLog(ctx, tk(r)); return err }, f.task, unknownID},
		{"GetSchedule", func(ctx context.Context, r bool) error {
			_, err := c.GetSchedule(ctx, pick(r, sched.Name, "no-such-schedule"))
			return err
		}, sched.Name, "no-such-schedule"},
		{"DeleteSchedule", func(ctx context.Context, r bool) error {
			return c.DeleteSchedule(ctx, pick(r, sched.Name, "no-such-schedule"))
		}, sched.Name, "no-such-schedule"},
		{"DeleteWindow", func(ctx context.Context, r bool) error { return c.DeleteWindow(ctx, pick(r, win.ID, unknownID)) }, win.ID, unknownID},
	}
	for _, user := range []string{"outsider", "staging-admin", "auditor"} {
		for _, p := range probes {
			t.Run(user+"/"+p.name, func(t *testing.T) {
				ctx := as(user)
				before := auditCount(t, c)
				real, fake := p.run(ctx, true), p.run(ctx, false)
				if fake == nil || real == nil {
					t.Fatalf("unknown: %v; another team's: %v", fake, real)
				}
				if errors.Is(real, rediacc.ErrPermissionDenied) != errors.Is(fake, rediacc.ErrPermissionDenied) {
					t.Fatalf("another team's %s: %v; unknown: %v (reveals that it exists)", p.name, real, fake)
				}
				if got, want := strings.ReplaceAll(real.Error(), p.realID, "NAME"), strings.ReplaceAll(fake.Error(), p.fakeID, "NAME"); got != want {
					t.Errorf("another team's: %q\nunknown:        %q\n(must read the same)", real, fake)
				}
				if !errors.Is(real, rediacc.ErrNotFound) && !errors.Is(real, rediacc.ErrUnknownMachine) && !errors.Is(fake, rediacc.ErrPermissionDenied) {
					t.Errorf("another team's %s: %v, want ErrNotFound or ErrUnknownMachine", p.name, real)
				}
				if after := auditCount(t, c); after <= before {
					t.Errorf("the hidden denial was not audited")
				}
			})
		}
	}
	// Nothing changed.
	if _, err := c.Machine(owner, "prod-01"); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Get(owner, f.task); err != nil || got.Status != rediacc.StatusPending {
		t.Fatalf("task after hidden cancels: %v %v", got, err)
	}
	// A prod viewer sees the machine and the task: denied, not hidden.
	v := as("viewer")
	if err := c.RemoveMachine(v, "prod-01"); !errors.Is(err, rediacc.ErrPermissionDenied) {
		t.Errorf("viewer removes a machine of their team: %v, want ErrPermissionDenied", err)
	}
	if _, err := c.Cancel(v, f.task); !errors.Is(err, rediacc.ErrPermissionDenied) {
		t.Errorf("viewer cancels a task of their team: %v, want ErrPermissionDenied", err)
	}
	if err := c.DeleteSchedule(v, sched.Name); !errors.Is(err, rediacc.ErrPermissionDenied) {
		t.Errorf("viewer deletes a schedule of their team: %v, want ErrPermissionDenied", err)
	}
	// A team the caller has no role in is denied whether or not it exists,
	// with the same message.
	ctx := as("outsider")
	_, real := c.ListSecrets(ctx, "prod")
	_, fake := c.ListSecrets(ctx, "nosuch")
	if !errors.Is(real, rediacc.ErrPermissionDenied) || !errors.Is(fake, rediacc.ErrPermissionDenied) ||
		strings.ReplaceAll(real.Error(), "prod", "T") != strings.ReplaceAll(fake.Error(), "nosuch", "T") {
		t.Errorf("vault list of another team: %v\nof a missing team: %v", real, fake)
	}
}
