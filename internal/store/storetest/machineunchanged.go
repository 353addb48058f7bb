package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/store"
)

// machineUnchangedTests are the subtests of the guard a worker starts a
// task with when it kept the machine's record (store.MachineUnchanged).
var machineUnchangedTests = []struct {
	name string
	fn   func(*testing.T, *fixture)
}{
	{"Guard/MachineUnchanged", testGuardMachineUnchanged},
}

// Every change of what a connection is made from (name, host, port, user,
// config) fails the guard, as do a move and a removal; a health sample
// does not; the guard is checked by Start, in its transaction.
func testGuardMachineUnchanged(t *testing.T, f *fixture) {
	f.team("alpha", "beta")
	f.machine(store.Machine{ID: "m", Name: "m", TeamID: "alpha", Host: "127.0.0.1", Port: 22, User: "u", Config: []byte(`{"k":1}`)})
	read := func() store.Machine {
		t.Helper()
		m, err := f.e.GetMachine(f.ctx, "m")
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	n := 0
	create := func(ctx context.Context) error {
		n++
		_, err := f.a.CreateTeam(ctx, store.Team{Name: fmt.Sprint("t", n)})
		return err
	}
	orig := read()
	f.guardHolds("record as read", store.MachineUnchanged(orig), create)
	if err := f.e.SetMachineHealth(f.ctx, "m", []byte(`{"cpu":1}`), at(time.Minute)); err != nil {
		t.Fatal(err)
	}
	f.guardHolds("record as read, after a health sample", store.MachineUnchanged(orig), create)
	for _, ch := range []struct {
		what   string
		change func(m *store.Machine)
	}{
		{"host", func(m *store.Machine) { m.Host = "127.0.0.2" }},
		{"port", func(m *store.Machine) { m.Port = 2222 }},
		{"user", func(m *store.Machine) { m.User = "v" }},
		{"config", func(m *store.Machine) { m.Config = []byte(`{"k":2}`) }},
		{"name", func(m *store.Machine) { m.Name = "m2" }},
	} {
		before := read()
		m := before
		m.UpdatedAt, m.Health, m.HealthAt = before.UpdatedAt, nil, time.Time{} // the same time: only the record counts
		ch.change(&m)
		if err := f.e.UpdateMachine(f.ctx, m); err != nil {
			t.Fatalf("UpdateMachine (%s): %v", ch.what, err)
		}
		f.guardFails(ch.what+" changed", store.MachineUnchanged(before), create)
		f.guardHolds(ch.what+" changed, new record", store.MachineUnchanged(read()), create)
	}
	// Start checks it in its transaction: the task stays ASSIGNED.
	cur := read()
	f.task("m", 3, at(0), named("x"), func(tk *store.Task) { tk.TeamID = "alpha" })
	f.claimOne("x", "w", at(0))
	before := f.get("x")
	stale := cur
	stale.Port = 1
	_, err := f.e.Start(store.WithGuard(f.ctx, store.MachineUnchanged(stale)), "x", "w", store.Attempt{StartedAt: at(time.Second)})
	var ge *store.GuardError
	if !errors.As(err, &ge) || ge.Condition.Kind != store.CondMachineUnchanged {
		t.Fatalf("Start with a stale record: %v", err)
	}
	f.unchanged("Start with a stale record", before)
	if _, err := f.e.Start(store.WithGuard(f.ctx, store.MachineUnchanged(cur)), "x", "w", store.Attempt{StartedAt: at(time.Second)}); err != nil {
		t.Fatalf("Start with the current record: %v", err)
	}
	f.finish(store.Finish{ID: "x", Owner: "w", At: at(2 * time.Second), Next: store.Completed, CountAttempt: true,
		Attempt: store.Attempt{StartedAt: at(time.Second), EndedAt: at(2 * time.Second), Outcome: store.OutcomeSucceeded}})
	if err := f.a.MoveMachine(f.ctx, "m", "beta"); err != nil {
		t.Fatal(err)
	}
	f.guardFails("moved machine", store.MachineUnchanged(cur), create)
	moved := read()
	f.guardHolds("moved machine, new record", store.MachineUnchanged(moved), create)
	if err := f.e.DeleteMachine(f.ctx, "m", time.Time{}); err != nil {
		t.Fatal(err)
	}
	f.guardFails("removed machine", store.MachineUnchanged(moved), create)
	f.guardFails("unknown machine", store.MachineUnchanged(store.Machine{ID: "nope", TeamID: "alpha"}), create)
	// A condition without the record is malformed.
	err = create(store.WithGuard(f.ctx, store.Condition{Kind: store.CondMachineUnchanged, MachineID: "m", TeamID: "beta"}))
	if !errors.Is(err, store.ErrInvalidArgument) {
		t.Fatalf("guard without a record: %v", err)
	}
}
