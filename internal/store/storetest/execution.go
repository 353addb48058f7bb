package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
)

// The execution guarantee's part in the store: attempts that may still run
// on their machine (OutcomeUnknown) block a new start until a worker
// settles them; a worker's held tasks are not rescued; the remote process
// of a running attempt and the kinds of errors are kept.
var executionTests = []struct {
	name string
	fn   func(*testing.T, *fixture)
}{
	{"Execution/AttemptFieldsRoundTrip", testAttemptFieldsRoundTrip},
	{"Execution/UnsettledBlocksStart", testUnsettledBlocksStart},
	{"Execution/SettleRecovered", testSettleRecovered},
	{"Execution/SettleKeepsUnknown", testSettleKeepsUnknown},
	{"Execution/SettleInvalid", testSettleInvalid},
	{"Execution/CancelWaitsForSettle", testCancelWaitsForSettle},
	{"Execution/RescueHeld", testRescueHeld},
	{"Execution/RescueKeepsEarlierUnknown", testRescueKeepsEarlierUnknown},
	{"Execution/SetAttemptRemote", testSetAttemptRemote},
}

// rescue rescues at now and returns the rescued tasks.
func (f *fixture) rescue(now time.Time, held ...store.Hold) []store.Task {
	f.t.Helper()
	ts, err := f.e.Rescue(f.ctx, store.RescueRequest{Now: now, Held: held})
	if err != nil {
		f.t.Fatalf("Rescue: %v", err)
	}
	return ts
}

// settleInterrupted settles the unknown History entry n of the ASSIGNED
// task id (leased by owner) as interrupted, requeueing it ready at now.
func (f *fixture) settleInterrupted(id, owner string, n int, now time.Time) store.Task {
	f.t.Helper()
	return f.finish(store.Finish{ID: id, Owner: owner, At: now, Settles: n, Next: store.Pending, ReadyAt: now,
		Attempt: store.Attempt{Outcome: store.OutcomeInterrupted, Error: "stopped on the machine", ErrorKind: "interrupted"},
		Error:   "stopped on the machine", ErrorKind: "interrupted"})
}

// lostRun creates task id, runs it under owner with run id id+".1" and
// rescues it at T0+2h: PENDING with one unknown attempt.
func (f *fixture) lostRun(id, owner string) store.Task {
	f.t.Helper()
	f.task("m-"+id, 3, at(0), named(id))
	f.claim(store.ClaimRequest{Owner: owner, Machines: []string{"m-" + id}})
	if _, err := f.e.Start(f.ctx, id, owner, store.Attempt{StartedAt: at(time.Hour + time.Second), RunID: id + ".1"}); err != nil {
		f.t.Fatalf("Start(%s): %v", id, err)
	}
	wantIDs(f.t, "rescued", f.rescue(at(2*time.Hour)), id)
	return f.get(id)
}

func testAttemptFieldsRoundTrip(t *testing.T, f *fixture) {
	f.task("m", 3, at(0), named("x"))
	f.claimOne("x", "w1", at(time.Hour))
	started, err := f.e.Start(f.ctx, "x", "w1", store.Attempt{StartedAt: at(time.Hour), RunID: "x.1", PGID: 41, RemoteID: "b/1"})
	if err != nil {
		t.Fatal(err)
	}
	if a := started.History[0]; a.RunID != "x.1" || a.PGID != 41 || a.RemoteID != "b/1" {
		t.Fatalf("started attempt: %+v", a)
	}
	end := at(time.Hour + time.Minute)
	got := f.finish(store.Finish{ID: "x", Owner: "w1", At: end, Next: store.Failed, CountAttempt: true,
		Attempt: store.Attempt{Signal: "TERM", Error: "killed", ErrorKind: "exit", Outcome: store.OutcomeFailed, Recovered: true,
			RunID: "x.1", PGID: 42, RemoteID: "b/2"},
		Error: "killed", ErrorKind: "exit"})
	want := []store.Attempt{{Number: 1, Worker: "w1", StartedAt: at(time.Hour), EndedAt: end, Signal: "TERM", Error: "killed",
		ErrorKind: "exit", Outcome: store.OutcomeFailed, Recovered: true, RunID: "x.1", PGID: 42, RemoteID: "b/2"}}
	if diff := cmp.Diff(want, got.History); diff != "" {
		t.Fatalf("History (-want +got):\n%s", diff)
	}
	if got.Error != "killed" || got.ErrorKind != "exit" {
		t.Fatalf("task error %q kind %q", got.Error, got.ErrorKind)
	}
	if diff := cmp.Diff(got, f.get("x")); diff != "" {
		t.Fatalf("Finish result differs from the stored task:\n%s", diff)
	}
	// A retry clears the kind with the text: the next Finish sets both.
	f.task("m2", 3, at(0), named("y"))
	f.claimOne("y", "w1", at(time.Hour))
	f.start("y", "w1", at(time.Hour))
	f.finish(store.Finish{ID: "y", Owner: "w1", At: end, Next: store.Pending, ReadyAt: end, CountAttempt: true,
		Attempt: store.Attempt{Outcome: store.OutcomeTimeout}, Error: "timed out", ErrorKind: "timeout"})
	f.claimOne("y", "w1", end)
	f.start("y", "w1", end)
	if got := f.finish(store.Finish{ID: "y", Owner: "w1", At: end, Next: store.Completed, CountAttempt: true,
		Attempt: store.Attempt{Outcome: store.OutcomeSucceeded}}); got.Error != "" || got.ErrorKind != "" {
		t.Fatalf("succeeded task keeps error %q kind %q", got.Error, got.ErrorKind)
	}
}

func testUnsettledBlocksStart(t *testing.T, f *fixture) {
	got := f.lostRun("x", "w1")
	if a := got.History[0]; a.Outcome != store.OutcomeUnknown || a.RunID != "x.1" || a.Error == "" || got.Attempts != 0 {
		t.Fatalf("rescued task: %+v", got)
	}
	now := at(2 * time.Hour)
	f.claimOne("x", "w2", now)
	before := f.get("x")
	_, err := f.e.Start(f.ctx, "x", "w2", store.Attempt{StartedAt: now})
	wantErr(t, "Start with an unknown attempt", err, store.ErrUnsettled)
	f.unchanged("refused Start", before)
	settled := f.settleInterrupted("x", "w2", 1, now)
	if settled.Status != store.Pending || settled.Attempts != 0 || len(settled.History) != 1 ||
		settled.History[0].Outcome != store.OutcomeInterrupted || settled.History[0].RunID != "x.1" ||
		!settled.History[0].EndedAt.Equal(now) || settled.History[0].Worker != "w1" {
		t.Fatalf("settled task: %+v", settled)
	}
	f.claimOne("x", "w2", now)
	if got := f.start("x", "w2", now); len(got.History) != 2 || got.History[1].Number != 1 {
		t.Fatalf("rerun after settling: %+v", got.History)
	}
}

// A copy found finished: its result is recorded, counted, no rerun.
func testSettleRecovered(t *testing.T, f *fixture) {
	lost := f.lostRun("x", "w1")
	now := at(3 * time.Hour)
	f.claimOne("x", "w2", now)
	got := f.finish(store.Finish{ID: "x", Owner: "w2", At: now, Settles: 1, Next: store.Completed, CountAttempt: true,
		Attempt:  store.Attempt{ExitCode: intp(0), Outcome: store.OutcomeSucceeded, Recovered: true, PGID: 77},
		ExitCode: intp(0)})
	want := lost.History[0]
	want.ExitCode, want.Outcome, want.Recovered, want.Error, want.PGID = intp(0), store.OutcomeSucceeded, true, "", 77
	if diff := cmp.Diff([]store.Attempt{want}, got.History); diff != "" {
		t.Fatalf("History (-want +got):\n%s", diff)
	}
	if got.Status != store.Completed || got.Attempts != 1 || !got.CompletedAt.Equal(now) || *got.ExitCode != 0 {
		t.Fatalf("recovered task: %+v", got)
	}
}

// The machine cannot tell yet: the entry stays unknown with a new error,
// the task waits until ReadyAt, and Start stays refused.
func testSettleKeepsUnknown(t *testing.T, f *fixture) {
	lost := f.lostRun("x", "w1")
	now := at(3 * time.Hour)
	f.claimOne("x", "w2", now)
	a := lost.History[0]
	a.Error = "machine unreachable"
	got := f.finish(store.Finish{ID: "x", Owner: "w2", At: now, Settles: 1, Next: store.Pending, ReadyAt: now.Add(time.Minute), Attempt: a})
	if got.Status != store.Pending || got.History[0].Outcome != store.OutcomeUnknown || got.History[0].Error != "machine unreachable" ||
		!got.ReadyAt.Equal(now.Add(time.Minute)) || got.Attempts != 0 || len(got.History) != 1 {
		t.Fatalf("task waiting: %+v", got)
	}
	wantIDs(t, "not ready", f.claim(store.ClaimRequest{Owner: "w2", Now: now}))
	f.claimOne("x", "w2", now.Add(time.Minute))
	_, err := f.e.Start(f.ctx, "x", "w2", store.Attempt{StartedAt: now})
	wantErr(t, "Start while still unknown", err, store.ErrUnsettled)
}

func testSettleInvalid(t *testing.T, f *fixture) {
	f.lostRun("x", "w1")
	now := at(3 * time.Hour)
	f.claimOne("x", "w2", now)
	before := f.get("x")
	for _, n := range []int{-1, 2} {
		_, err := f.e.Finish(f.ctx, store.Finish{ID: "x", Owner: "w2", At: now, Settles: n, Next: store.Pending})
		wantErr(t, fmt.Sprintf("Settles %d", n), err, store.ErrInvalidArgument)
	}
	f.unchanged("invalid settles", before)
	_, err := f.e.Finish(f.ctx, store.Finish{ID: "x", Owner: "w9", At: now, Settles: 1, Next: store.Pending})
	wantErr(t, "settle by another worker", err, store.ErrLeaseLost)
	f.settleInterrupted("x", "w2", 1, now)
	f.claimOne("x", "w2", now)
	before = f.get("x")
	_, err = f.e.Finish(f.ctx, store.Finish{ID: "x", Owner: "w2", At: now, Settles: 1, Next: store.Pending})
	wantErr(t, "settling a settled entry", err, store.ErrInvalidArgument)
	f.start("x", "w2", now)
	_, err = f.e.Finish(f.ctx, store.Finish{ID: "x", Owner: "w2", At: now, Settles: 1, Next: store.Pending})
	wantErr(t, "settling with an open entry", err, store.ErrInvalidArgument)
	_ = before
}

// A PENDING task whose earlier copy may run is not CANCELLED at once: it
// gets CancelRequested, and is CANCELLED once settled.
func testCancelWaitsForSettle(t *testing.T, f *fixture) {
	f.lostRun("x", "w1")
	now := at(3 * time.Hour)
	got, err := f.e.Cancel(f.ctx, "x", now)
	if err != nil || got.Status != store.Pending || !got.CancelRequested {
		t.Fatalf("Cancel of a task with an unknown attempt: %+v, %v", got, err)
	}
	if again, err := f.e.Cancel(f.ctx, "x", now); err != nil || again.Status != store.Pending {
		t.Fatalf("second Cancel: %+v, %v", again, err)
	}
	// Still unknown after a try: stays PENDING.
	f.claimOne("x", "w2", now)
	a := got.History[0]
	a.Error = "unreachable"
	if w := f.finish(store.Finish{ID: "x", Owner: "w2", At: now, Settles: 1, Next: store.Pending, ReadyAt: now, Attempt: a}); w.Status != store.Pending {
		t.Fatalf("cancel-requested task still unknown: %+v", w)
	}
	f.claimOne("x", "w2", now)
	if done := f.settleInterrupted("x", "w2", 1, now); done.Status != store.Cancelled || !done.CompletedAt.Equal(now) {
		t.Fatalf("settled cancel-requested task: %+v", done)
	}
}

// Held tasks are never rescued, whatever their lease; a Hold of another
// owner does not protect a task.
func testRescueHeld(t *testing.T, f *fixture) {
	f.running("a", "w1")
	f.running("b", "w1")
	f.running("c", "w2")
	now := at(3 * time.Hour) // every lease expired
	rescued := f.rescue(now, store.Hold{ID: "a", Owner: "w1"}, store.Hold{ID: "c", Owner: "w1"})
	wantIDs(t, "rescued", rescued, "b", "c")
	if got := f.get("a"); got.Status != store.Processing || got.LeaseOwner != "w1" {
		t.Fatalf("held task: %+v", got)
	}
	// The holder records its result late, as when the store came back.
	if got := f.finish(store.Finish{ID: "a", Owner: "w1", At: now, Next: store.Completed, CountAttempt: true,
		Attempt: store.Attempt{Outcome: store.OutcomeSucceeded, ExitCode: intp(0)}, ExitCode: intp(0)}); got.Status != store.Completed {
		t.Fatalf("late finish of a held task: %+v", got)
	}
}

// A task claimed after a rescue and lost again before it was settled keeps
// its earlier unknown attempt; a cancel then still waits.
func testRescueKeepsEarlierUnknown(t *testing.T, f *fixture) {
	f.lostRun("x", "w1")
	now := at(3 * time.Hour)
	f.claim(store.ClaimRequest{Owner: "w2", Now: now, LeaseUntil: now.Add(time.Minute), Max: 1})
	if _, err := f.e.Cancel(f.ctx, "x", now); err != nil {
		t.Fatal(err)
	}
	wantIDs(t, "rescued", f.rescue(now.Add(time.Hour)), "x")
	if got := f.get("x"); got.Status != store.Pending || !got.CancelRequested || len(got.History) != 1 ||
		got.History[0].Outcome != store.OutcomeUnknown {
		t.Fatalf("task lost again before settling: %+v", got)
	}
}

func testSetAttemptRemote(t *testing.T, f *fixture) {
	now := at(time.Hour)
	for _, id := range []string{"a", "b", "c"} {
		f.task("m-"+id, 3, at(0), named(id))
		f.claim(store.ClaimRequest{Owner: "w1", Machines: []string{"m-" + id}})
	}
	f.task("m-d", 3, at(0), named("d"))
	f.claim(store.ClaimRequest{Owner: "w2", Machines: []string{"m-d"}})
	for _, id := range []string{"a", "b", "d"} {
		owner := "w1"
		if id == "d" {
			owner = "w2"
		}
		if _, err := f.e.Start(f.ctx, id, owner, store.Attempt{StartedAt: now, RunID: id + ".1"}); err != nil {
			t.Fatal(err)
		}
	}
	// c is ASSIGNED only; d is another worker's; b's run id differs.
	ctx := store.WithAudit(context.Background(), audit.Record{Time: now, Actor: "w1", Action: "task.remote",
		EntityType: audit.EntityTask, EntityID: "a", Result: audit.ResultOK})
	lost, err := f.e.SetAttemptRemote(ctx, "w1", []store.AttemptRemote{
		{TaskID: "a", RunID: "a.1", PGID: 100, RemoteID: "boot/5"},
		{TaskID: "b", RunID: "b.2", PGID: 101},
		{TaskID: "c", RunID: "c.1", PGID: 102},
		{TaskID: "d", RunID: "d.1", PGID: 103},
		{TaskID: "missing", RunID: "m.1", PGID: 104},
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(lost) != "[b c d missing]" {
		t.Fatalf("lost = %v", lost)
	}
	if a := f.get("a").History[0]; a.PGID != 100 || a.RemoteID != "boot/5" || a.RunID != "a.1" || !a.EndedAt.IsZero() {
		t.Fatalf("a's open attempt: %+v", a)
	}
	for _, id := range []string{"b", "d"} {
		if a := f.get(id).History[0]; a.PGID != 0 {
			t.Fatalf("%s's attempt changed: %+v", id, a)
		}
	}
	recs, err := f.a.ListAudit(f.ctx, audit.Filter{Action: "task.remote"})
	if err != nil || len(recs) != 1 {
		t.Fatalf("audit records of SetAttemptRemote: %d, %v", len(recs), err)
	}
	if _, err := f.e.SetAttemptRemote(f.ctx, "", nil); err == nil {
		t.Fatal("SetAttemptRemote without owner succeeded")
	}
	// The remote survives a rescue, for the worker that settles.
	got := f.rescue(at(3 * time.Hour))
	for _, r := range got {
		if r.ID == "a" && (r.History[0].PGID != 100 || r.History[0].Outcome != store.OutcomeUnknown) {
			t.Fatalf("rescued a: %+v", r.History[0])
		}
	}
}
