package storetest

import (
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/store"
)

func named(id string) func(*store.Task) { return func(t *store.Task) { t.ID = id } }

func testClaimOrder(t *testing.T, f *fixture) {
	f.task("m", 3, at(10*time.Second), named("n1"))
	f.task("m", 3, at(5*time.Second), named("n0"))
	f.task("m", 1, at(20*time.Second), named("c0"))
	f.task("m", 5, at(0), named("l0"))
	f.task("m", 2, at(15*time.Second), named("h0"))
	f.task("m", 3, at(5*time.Second), named("a-n2")) // same EnqueuedAt as n0, created later
	got := f.claim(store.ClaimRequest{})
	wantIDs(t, "claim order", got, "c0", "h0", "n0", "a-n2", "n1", "l0")
}

func testClaimLease(t *testing.T, f *fixture) {
	f.task("m", 3, at(0), named("x"))
	now, until := at(time.Hour), at(time.Hour+90*time.Second+7)
	got := f.claim(store.ClaimRequest{Owner: "worker-7", Now: now, LeaseUntil: until})
	wantIDs(t, "claim", got, "x")
	for _, tk := range []store.Task{got[0], f.get("x")} {
		if tk.Status != store.Assigned || tk.LeaseOwner != "worker-7" || !tk.LeaseExpiresAt.Equal(until) ||
			tk.CancelRequested || tk.Attempts != 0 || len(tk.History) != 0 || !tk.StartedAt.IsZero() {
			t.Fatalf("claimed task: %+v", tk)
		}
	}
	if again := f.claim(store.ClaimRequest{Owner: "worker-7", Now: now}); len(again) != 0 {
		t.Fatalf("an assigned task was claimed again: %v", ids(again))
	}
	if again := f.claim(store.ClaimRequest{Owner: "worker-8", Now: now}); len(again) != 0 {
		t.Fatalf("an assigned task was claimed by another worker: %v", ids(again))
	}
}

func testClaimMax(t *testing.T, f *fixture) {
	for i := 0; i < 5; i++ {
		f.task("m", 3, at(time.Duration(i)*time.Second))
	}
	wantIDs(t, "max 2", f.claim(store.ClaimRequest{Max: 2}), "task-001", "task-002")
	wantIDs(t, "max 10", f.claim(store.ClaimRequest{Max: 10}), "task-003", "task-004", "task-005")
	wantIDs(t, "empty queue", f.claim(store.ClaimRequest{Max: 10}))
}

func testClaimPerMachine(t *testing.T, f *fixture) {
	f.task("m1", 3, at(0), named("a1"))
	f.task("m1", 3, at(1), named("a2"))
	f.task("m1", 3, at(2), named("a3"))
	f.task("m2", 3, at(3), named("b1"))
	// m1 and m2 (of one team) take turns.
	wantIDs(t, "first claim", f.claim(store.ClaimRequest{Owner: "w1", PerMachine: 2}), "a1", "b1", "a2")
	// The limit counts every worker's tasks.
	wantIDs(t, "other worker", f.claim(store.ClaimRequest{Owner: "w2", PerMachine: 2}))
	// PROCESSING counts too.
	f.start("a1", "w1", at(time.Hour))
	wantIDs(t, "after start", f.claim(store.ClaimRequest{Owner: "w2", PerMachine: 2}))
	f.finish(store.Finish{ID: "a2", Owner: "w1", At: at(time.Hour), Next: store.Completed, CountAttempt: true})
	wantIDs(t, "after a slot frees", f.claim(store.ClaimRequest{Owner: "w2", PerMachine: 2}), "a3")
	// Unbounded.
	f.task("m1", 3, at(4), named("a4"))
	wantIDs(t, "unbounded", f.claim(store.ClaimRequest{Owner: "w2"}), "a4")
}

func testClaimReserved(t *testing.T, f *fixture) {
	const aging = 10 * time.Minute
	req := store.ClaimRequest{PerMachine: 3, ReserveCritical: true, Now: at(time.Minute)}
	for i, id := range []string{"a-low1", "a-low2", "a-low3"} {
		f.task("a", 3, at(time.Duration(i)), named(id))
	}
	for i, id := range []string{"b-low1", "b-low2", "b-low3"} {
		f.task("b", 4, at(time.Duration(10+i)), named(id))
	}
	// Low tasks fill PerMachine-1 slots on each machine.
	wantIDs(t, "low tasks", f.claim(req), "a-low1", "a-low2", "b-low1", "b-low2")
	// Machine a refuses another low task but takes a critical one.
	f.task("a", 1, at(20), named("a-crit1"))
	f.task("a", 2, at(21), named("a-high"))
	wantIDs(t, "critical uses the reserved slot", f.claim(req), "a-crit1")
	// Now a is full for everyone, critical included.
	f.task("a", 1, at(22), named("a-crit2"))
	wantIDs(t, "full machine", f.claim(req))
	// Other machines still take low tasks once they have room.
	f.finish(store.Finish{ID: "b-low1", Owner: "w1", At: at(time.Minute), Next: store.Completed, CountAttempt: true})
	wantIDs(t, "other machine", f.claim(req), "b-low3")
	// A task just aged to level 1 does not get the reserved slot; one
	// interval later (fully aged: waited priority × aging) it does, so a
	// stream of critical work cannot starve it.
	f.task("c", 5, at(0), named("c-old5"))
	f.task("c", 5, at(1), named("c-old5b"))
	aged := req
	aged.Aging, aged.Now, aged.Machines = aging, at(4*aging+aging/2), []string{"c"}
	aged.PerMachine = 2
	wantIDs(t, "aged task takes an ordinary slot", f.claim(aged), "c-old5")
	wantIDs(t, "aged task refused the reserved slot", f.claim(aged))
	f.task("c", 1, at(4*aging), named("c-crit"))
	wantIDs(t, "critical takes the reserved slot", f.claim(aged), "c-crit")
	f.finish(store.Finish{ID: "c-crit", Owner: "w1", At: aged.Now, Next: store.Completed, CountAttempt: true})
	f.task("c", 1, at(4*aging+aging/2), named("c-crit2"))
	aged.Now = at(5*aging + 1) // c-old5b fully aged, and older than c-crit2
	wantIDs(t, "fully aged task takes the reserved slot", f.claim(aged), "c-old5b")
	wantIDs(t, "now full", f.claim(aged))
}

func testClaimAging(t *testing.T, f *fixture) {
	const aging = 10 * time.Minute
	// On each machine: a level-5 task enqueued at 0 and fresh level 2..4
	// tasks enqueued just before that machine's claim instant.
	claimAt := map[string]time.Time{"a": at(3*aging - 1), "b": at(3 * aging), "c": at(4 * aging), "d": at(100 * aging)}
	for _, m := range []string{"a", "b", "c", "d"} {
		now := claimAt[m]
		f.task(m, 5, at(0), named(m+"-old5"))
		f.task(m, 2, now.Add(-3*time.Second), named(m+"-p2"))
		f.task(m, 3, now.Add(-2*time.Second), named(m+"-p3"))
		f.task(m, 4, now.Add(-1*time.Second), named(m+"-p4"))
	}
	claim := func(m string, now time.Time, aging time.Duration) []store.Task {
		return f.claim(store.ClaimRequest{Machines: []string{m}, Now: now, Aging: aging})
	}
	// One nanosecond short of 3 intervals: effective 3, behind p2, ahead of
	// the younger p3 (FIFO within the level).
	wantIDs(t, "3 intervals - 1ns", claim("a", claimAt["a"], aging), "a-p2", "a-old5", "a-p3", "a-p4")
	// Exactly 3 intervals: effective 2, ahead of the younger p2.
	wantIDs(t, "3 intervals", claim("b", claimAt["b"], aging), "b-old5", "b-p2", "b-p3", "b-p4")
	// After 4 intervals it is level 1 and goes before a fresh critical task.
	f.task("c", 1, at(4*aging), named("c-p1"))
	wantIDs(t, "4 intervals", claim("c", claimAt["c"], aging), "c-old5", "c-p1", "c-p2", "c-p3", "c-p4")
	// Without aging it waits behind everything.
	wantIDs(t, "no aging", claim("d", claimAt["d"], 0), "d-p2", "d-p3", "d-p4", "d-old5")
}

func testClaimReadyAt(t *testing.T, f *fixture) {
	f.task("m", 1, at(0), named("delayed"), func(t *store.Task) { t.ReadyAt = at(time.Hour) })
	f.task("m", 5, at(time.Minute), named("ready"))
	wantIDs(t, "before ReadyAt", f.claim(store.ClaimRequest{Now: at(time.Hour - 1)}), "ready")
	wantIDs(t, "at ReadyAt", f.claim(store.ClaimRequest{Now: at(time.Hour)}), "delayed")
}

func testClaimMachines(t *testing.T, f *fixture) {
	f.task("m1", 3, at(0), named("1"))
	f.task("m2", 3, at(1), named("2"))
	f.task("m3", 3, at(2), named("3"))
	wantIDs(t, "empty filter", f.claim(store.ClaimRequest{Machines: []string{}}))
	wantIDs(t, "m3,m1", f.claim(store.ClaimRequest{Machines: []string{"m3", "m1"}}), "1", "3")
	wantIDs(t, "nil filter", f.claim(store.ClaimRequest{}), "2")
}

func testClaimInvalid(t *testing.T, f *fixture) {
	f.task("m", 3, at(0))
	now := at(time.Hour)
	for name, r := range map[string]store.ClaimRequest{
		"no owner":      {Now: now, LeaseUntil: now.Add(time.Minute), Max: 1},
		"max 0":         {Owner: "w", Now: now, LeaseUntil: now.Add(time.Minute)},
		"zero now":      {Owner: "w", LeaseUntil: now, Max: 1},
		"lease in past": {Owner: "w", Now: now, LeaseUntil: now, Max: 1},
		"per-machine<0": {Owner: "w", Now: now, LeaseUntil: now.Add(time.Minute), Max: 1, PerMachine: -1},
	} {
		_, err := f.e.Claim(f.ctx, r)
		wantErr(t, name, err, store.ErrInvalidArgument)
	}
	if got := f.get("task-001"); got.Status != store.Pending {
		t.Fatalf("invalid claim changed the task: %+v", got)
	}
}
