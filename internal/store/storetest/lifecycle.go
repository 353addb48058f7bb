package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rediacc/rediacc/internal/store"
)

// running creates a task and takes it to PROCESSING under owner: claimed at
// T0+1h, lease until T0+1h5m, started at T0+1h+1s.
func (f *fixture) running(id, owner string) store.Task {
	f.t.Helper()
	f.task("m-"+id, 3, at(0), named(id))
	f.claim(store.ClaimRequest{Owner: owner, Machines: []string{"m-" + id}})
	return f.start(id, owner, at(time.Hour+time.Second))
}

func testStart(t *testing.T, f *fixture) {
	f.task("m", 3, at(0), named("x"))
	_, err := f.e.Start(f.ctx, "x", "w1", store.Attempt{StartedAt: at(time.Hour)})
	wantErr(t, "Start on PENDING", err, store.ErrLeaseLost)
	f.claimOne("x", "w1", at(time.Hour))
	before := f.get("x")
	_, err = f.e.Start(f.ctx, "x", "w2", store.Attempt{StartedAt: at(time.Hour)})
	wantErr(t, "Start by another worker", err, store.ErrLeaseLost)
	_, err = f.e.Start(f.ctx, "x", "w1", store.Attempt{})
	wantErr(t, "Start without StartedAt", err, store.ErrInvalidArgument)
	f.unchanged("failed Start", before)
	_, err = f.e.Start(f.ctx, "missing", "w1", store.Attempt{StartedAt: at(time.Hour)})
	wantErr(t, "Start missing", err, store.ErrNotFound)

	got := f.start("x", "w1", at(time.Hour+time.Second))
	if got.Status != store.Processing || got.LeaseOwner != "w1" || !got.StartedAt.Equal(at(time.Hour+time.Second)) {
		t.Fatalf("started task: %+v", got)
	}
	want := []store.Attempt{{Number: 1, Worker: "w1", StartedAt: at(time.Hour + time.Second)}}
	if diff := cmp.Diff(want, got.History); diff != "" {
		t.Fatalf("History (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(got, f.get("x")); diff != "" {
		t.Fatalf("Start result differs from the stored task:\n%s", diff)
	}
	_, err = f.e.Start(f.ctx, "x", "w1", store.Attempt{StartedAt: at(time.Hour)})
	wantErr(t, "Start twice", err, store.ErrDuplicateAttempt)
}

func testHeartbeat(t *testing.T, f *fixture) {
	f.running("a", "w1")
	f.task("m-b", 3, at(0), named("b"))
	f.claim(store.ClaimRequest{Owner: "w1", Machines: []string{"m-b"}}) // ASSIGNED, not started
	f.running("c", "w2")
	f.running("d", "w1")
	f.finish(store.Finish{ID: "d", Owner: "w1", At: at(2 * time.Hour), Next: store.Completed, CountAttempt: true})
	if _, err := f.e.Cancel(f.ctx, "b", at(time.Hour)); err != nil {
		t.Fatal(err)
	}

	until := at(3 * time.Hour)
	hb, err := f.e.Heartbeat(f.ctx, "w1", []string{"a", "b", "c", "d", "missing"}, until)
	if err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	if diff := cmp.Diff(store.Heartbeat{Lost: []string{"c", "d", "missing"}, CancelRequested: []string{"b"}}, hb); diff != "" {
		t.Fatalf("Heartbeat (-want +got):\n%s", diff)
	}
	for _, id := range []string{"a", "b"} {
		if got := f.get(id); !got.LeaseExpiresAt.Equal(until) || got.LeaseOwner != "w1" {
			t.Fatalf("lease of %s not extended: %+v", id, got)
		}
	}
	if got := f.get("c"); got.LeaseExpiresAt.Equal(until) {
		t.Fatal("another worker's lease was extended")
	}
	// An extended lease is not rescued at the old expiry.
	rescued, err := f.e.Rescue(f.ctx, store.RescueRequest{Now: at(2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, "rescue after heartbeat", rescued, "c")
	hb, _ = f.e.Heartbeat(f.ctx, "w2", []string{"c"}, until)
	if fmt.Sprint(hb.Lost) != "[c]" {
		t.Fatalf("rescued task not reported lost: %+v", hb)
	}
	hb, err = f.e.Heartbeat(f.ctx, "w1", nil, until)
	if err != nil || len(hb.Lost)+len(hb.CancelRequested) != 0 {
		t.Fatalf("empty Heartbeat: %+v, %v", hb, err)
	}
	_, err = f.e.Heartbeat(f.ctx, "", []string{"a"}, until)
	wantErr(t, "Heartbeat without owner", err, store.ErrInvalidArgument)
}

func testFinishCompleted(t *testing.T, f *fixture) {
	f.running("x", "w1")
	end := at(time.Hour + time.Minute)
	got := f.finish(store.Finish{
		ID: "x", Owner: "w1", At: end, Next: store.Completed, CountAttempt: true,
		Attempt:  store.Attempt{ExitCode: intp(0), Outcome: "succeeded"},
		ExitCode: intp(0), Stdout: []byte("hello\n"), Stderr: []byte("warn"), StdoutTruncated: true,
	})
	want := []store.Attempt{{Number: 1, Worker: "w1", StartedAt: at(time.Hour + time.Second), EndedAt: end, ExitCode: intp(0), Outcome: "succeeded"}}
	if diff := cmp.Diff(want, got.History); diff != "" {
		t.Fatalf("History (-want +got):\n%s", diff)
	}
	if got.Status != store.Completed || got.Attempts != 1 || !got.CompletedAt.Equal(end) || got.LeaseOwner != "" ||
		!got.LeaseExpiresAt.IsZero() || *got.ExitCode != 0 || string(got.Stdout) != "hello\n" || string(got.Stderr) != "warn" ||
		!got.StdoutTruncated || got.StderrTruncated || got.Error != "" {
		t.Fatalf("completed task: %+v", got)
	}
	if diff := cmp.Diff(got, f.get("x")); diff != "" {
		t.Fatalf("Finish result differs from the stored task:\n%s", diff)
	}
}

func testFinishFailed(t *testing.T, f *fixture) {
	f.running("x", "w1")
	got := f.finish(store.Finish{
		ID: "x", Owner: "w1", At: at(2 * time.Hour), Next: store.Failed, CountAttempt: true,
		Attempt:  store.Attempt{ExitCode: intp(3), Outcome: "failed", Error: "exit status 3"},
		ExitCode: intp(3), Error: "exit status 3",
	})
	if got.Status != store.Failed || got.Attempts != 1 || *got.ExitCode != 3 || got.Error != "exit status 3" ||
		!got.CompletedAt.Equal(at(2*time.Hour)) || len(got.History) != 1 || got.History[0].Outcome != "failed" ||
		!got.History[0].EndedAt.Equal(at(2*time.Hour)) {
		t.Fatalf("failed task: %+v", got)
	}
	_, err := f.e.Cancel(f.ctx, "x", at(3*time.Hour))
	wantErr(t, "Cancel FAILED", err, store.ErrNotCancellable)
}

func testFinishCancelled(t *testing.T, f *fixture) {
	f.running("x", "w1")
	if _, err := f.e.Cancel(f.ctx, "x", at(time.Hour)); err != nil {
		t.Fatal(err)
	}
	got := f.finish(store.Finish{ID: "x", Owner: "w1", At: at(2 * time.Hour), Next: store.Cancelled,
		Attempt: store.Attempt{Outcome: "cancelled", Error: "cancelled"}, Error: "cancelled"})
	if got.Status != store.Cancelled || got.Attempts != 0 || !got.CompletedAt.Equal(at(2*time.Hour)) ||
		got.History[0].Outcome != "cancelled" || got.LeaseOwner != "" {
		t.Fatalf("cancelled task: %+v", got)
	}
}

func testFinishRetry(t *testing.T, f *fixture) {
	f.running("x", "w1")
	end, retryAt := at(2*time.Hour), at(2*time.Hour+30*time.Second)
	got := f.finish(store.Finish{
		ID: "x", Owner: "w1", At: end, Next: store.Pending, CountAttempt: true,
		ReadyAt: retryAt, EnqueuedAt: retryAt,
		Attempt: store.Attempt{Outcome: "failed", Error: "dial tcp: connection refused"},
		Error:   "dial tcp: connection refused",
	})
	if got.Status != store.Pending || got.Attempts != 1 || !got.ReadyAt.Equal(retryAt) || !got.EnqueuedAt.Equal(retryAt) ||
		!got.CompletedAt.IsZero() || got.LeaseOwner != "" || len(got.History) != 1 || !got.History[0].EndedAt.Equal(end) ||
		got.Error != "dial tcp: connection refused" {
		t.Fatalf("retried task: %+v", got)
	}
	wantIDs(t, "claim before the retry delay", f.claim(store.ClaimRequest{Now: retryAt.Add(-1)}))
	f.claimOne("x", "w2", retryAt)
	got = f.start("x", "w2", retryAt.Add(time.Second))
	if len(got.History) != 2 || got.History[1].Number != 2 || got.History[1].Worker != "w2" ||
		!got.StartedAt.Equal(at(time.Hour+time.Second)) {
		t.Fatalf("second attempt: %+v", got)
	}
	got = f.finish(store.Finish{ID: "x", Owner: "w2", At: retryAt.Add(time.Minute), Next: store.Completed, CountAttempt: true,
		Attempt: store.Attempt{Outcome: "succeeded", ExitCode: intp(0)}, ExitCode: intp(0)})
	if got.Attempts != 2 || got.Status != store.Completed || got.Error != "" || got.History[1].Outcome != "succeeded" {
		t.Fatalf("after the retry: %+v", got)
	}
	// Zero ReadyAt and EnqueuedAt: ready at f.At, EnqueuedAt kept.
	f.running("y", "w1")
	got = f.finish(store.Finish{ID: "y", Owner: "w1", At: end, Next: store.Pending, CountAttempt: true})
	if !got.ReadyAt.Equal(end) || !got.EnqueuedAt.Equal(at(0)) {
		t.Fatalf("requeue defaults: ReadyAt %v EnqueuedAt %v", got.ReadyAt, got.EnqueuedAt)
	}
}

func testFinishInterrupted(t *testing.T, f *fixture) {
	f.running("x", "w1")
	got := f.finish(store.Finish{ID: "x", Owner: "w1", At: at(2 * time.Hour), Next: store.Pending, CountAttempt: false,
		Attempt: store.Attempt{Outcome: "interrupted", Error: "worker shutting down"}})
	if got.Status != store.Pending || got.Attempts != 0 || len(got.History) != 1 || got.History[0].Outcome != "interrupted" ||
		!got.ReadyAt.Equal(at(2*time.Hour)) {
		t.Fatalf("interrupted task: %+v", got)
	}
	// The rerun keeps attempt number 1.
	f.claimOne("x", "w2", at(3*time.Hour))
	got = f.start("x", "w2", at(3*time.Hour))
	if got.History[1].Number != 1 {
		t.Fatalf("rerun numbered %d, want 1", got.History[1].Number)
	}
}

func testFinishWithoutStart(t *testing.T, f *fixture) {
	f.task("m", 3, at(0), named("x"))
	f.task("m", 3, at(1), named("y"))
	f.claim(store.ClaimRequest{Owner: "w1"})
	// An attempt given for an ASSIGNED task is appended.
	got := f.finish(store.Finish{ID: "x", Owner: "w1", At: at(2 * time.Hour), Next: store.Failed, CountAttempt: true,
		Attempt: store.Attempt{StartedAt: at(2 * time.Hour), Outcome: "failed", Error: "invalid task"}, Error: "invalid task"})
	want := []store.Attempt{{Number: 1, Worker: "w1", StartedAt: at(2 * time.Hour), EndedAt: at(2 * time.Hour), Outcome: "failed", Error: "invalid task"}}
	if diff := cmp.Diff(want, got.History); diff != "" || got.Status != store.Failed || got.Attempts != 1 {
		t.Fatalf("finish without start: %+v (-want +got history):\n%s", got, diff)
	}
	// A zero attempt records nothing (requeue before start).
	got = f.finish(store.Finish{ID: "y", Owner: "w1", At: at(2 * time.Hour), Next: store.Pending})
	if len(got.History) != 0 || got.Attempts != 0 || got.Status != store.Pending {
		t.Fatalf("requeue before start: %+v", got)
	}
}

func testFinishCancelRequestedRequeue(t *testing.T, f *fixture) {
	f.running("x", "w1")
	if _, err := f.e.Cancel(f.ctx, "x", at(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// A worker shutting down requeues; the cancellation wins.
	got := f.finish(store.Finish{ID: "x", Owner: "w1", At: at(2 * time.Hour), Next: store.Pending,
		Attempt: store.Attempt{Outcome: "interrupted"}})
	if got.Status != store.Cancelled || !got.CompletedAt.Equal(at(2*time.Hour)) {
		t.Fatalf("requeue of a cancel-requested task: %+v", got)
	}
}

func testFinishLeaseLost(t *testing.T, f *fixture) {
	f.running("x", "w1")
	before := f.get("x")
	fin := store.Finish{ID: "x", Owner: "w2", At: at(2 * time.Hour), Next: store.Completed, CountAttempt: true,
		Stdout: []byte("late"), ExitCode: intp(0)}
	_, err := f.e.Finish(f.ctx, fin)
	wantErr(t, "Finish by another worker", err, store.ErrLeaseLost)
	f.unchanged("Finish by another worker", before)

	fin.Owner = "w1"
	done := f.finish(fin)
	_, err = f.e.Finish(f.ctx, fin)
	wantErr(t, "Finish twice", err, store.ErrLeaseLost)
	f.unchanged("second Finish", done)

	f.task("m", 3, at(0), named("p"))
	_, err = f.e.Finish(f.ctx, store.Finish{ID: "p", Owner: "w1", At: at(time.Hour), Next: store.Completed})
	wantErr(t, "Finish PENDING", err, store.ErrLeaseLost)
	_, err = f.e.Finish(f.ctx, store.Finish{ID: "missing", Owner: "w1", At: at(time.Hour), Next: store.Completed})
	wantErr(t, "Finish missing", err, store.ErrNotFound)
	_, err = f.e.Finish(f.ctx, store.Finish{ID: "p", Owner: "w1", At: at(time.Hour), Next: store.Assigned})
	wantErr(t, "Finish to ASSIGNED", err, store.ErrInvalidArgument)
}

func testCancel(t *testing.T, f *fixture) {
	cancelAt := at(5 * time.Hour)
	cancel := func(id string) (store.Task, error) { return f.e.Cancel(f.ctx, id, cancelAt) }

	f.task("m", 3, at(0), named("pending"))
	got, err := cancel("pending")
	if err != nil || got.Status != store.Cancelled || !got.CompletedAt.Equal(cancelAt) || got.CancelRequested {
		t.Fatalf("cancel PENDING: %+v, %v", got, err)
	}
	wantIDs(t, "cancelled task is not claimable", f.claim(store.ClaimRequest{}))
	// CANCELLED: unchanged.
	again, err := cancel("pending")
	if err != nil {
		t.Fatalf("cancel CANCELLED: %v", err)
	}
	if diff := cmp.Diff(got, again); diff != "" {
		t.Fatalf("cancel CANCELLED changed it:\n%s", diff)
	}

	f.task("m-assigned", 3, at(0), named("assigned"))
	f.claim(store.ClaimRequest{Owner: "w1", Machines: []string{"m-assigned"}})
	f.running("processing", "w1")
	for _, id := range []string{"assigned", "processing"} {
		before := f.get(id)
		got, err := cancel(id)
		if err != nil || got.Status != before.Status || !got.CancelRequested || got.LeaseOwner != "w1" || !got.CompletedAt.IsZero() {
			t.Fatalf("cancel %s: %+v, %v", id, got, err)
		}
		if again, err := cancel(id); err != nil || !again.CancelRequested || again.Status != before.Status {
			t.Fatalf("second cancel %s: %+v, %v", id, again, err)
		}
	}

	f.running("completed", "w1")
	done := f.finish(store.Finish{ID: "completed", Owner: "w1", At: at(2 * time.Hour), Next: store.Completed, CountAttempt: true})
	_, err = cancel("completed")
	wantErr(t, "cancel COMPLETED", err, store.ErrNotCancellable)
	f.unchanged("cancel COMPLETED", done)

	f.running("failed", "w1")
	failed := f.finish(store.Finish{ID: "failed", Owner: "w1", At: at(2 * time.Hour), Next: store.Failed, CountAttempt: true})
	_, err = cancel("failed")
	wantErr(t, "cancel FAILED", err, store.ErrNotCancellable)
	f.unchanged("cancel FAILED", failed)

	_, err = cancel("missing")
	wantErr(t, "cancel missing", err, store.ErrNotFound)
}

func testRescueExpired(t *testing.T, f *fixture) {
	f.running("proc", "w1") // lease until T0+1h5m
	f.task("m-asg", 2, at(0), named("asg"))
	f.claim(store.ClaimRequest{Owner: "w1", Machines: []string{"m-asg"}, Now: at(time.Hour), LeaseUntil: at(time.Hour + 8*time.Minute)})
	f.task("m-pend", 3, at(0), named("pend"))

	none, err := f.e.Rescue(f.ctx, store.RescueRequest{Now: at(time.Hour + 5*time.Minute - 1)})
	if err != nil || len(none) != 0 {
		t.Fatalf("rescue before expiry: %v, %v", ids(none), err)
	}
	now := at(time.Hour + 5*time.Minute) // exactly at expiry
	rescued, err := f.e.Rescue(f.ctx, store.RescueRequest{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, "rescued at expiry", rescued, "proc")
	got := rescued[0]
	if got.Status != store.Pending || got.Attempts != 0 || got.LeaseOwner != "" || !got.LeaseExpiresAt.IsZero() ||
		!got.ReadyAt.Equal(now) || !got.EnqueuedAt.Equal(at(0)) || len(got.History) != 1 ||
		got.History[0].Outcome != store.OutcomeUnknown || !got.History[0].EndedAt.Equal(now) || got.History[0].Error == "" {
		t.Fatalf("rescued task: %+v", got)
	}
	if got.RescuedFrom != "w1" {
		t.Fatalf("RescuedFrom %q, want the lost worker w1", got.RescuedFrom)
	}
	stored := f.get("proc")
	if stored.RescuedFrom != "" {
		t.Fatalf("RescuedFrom stored: %q", stored.RescuedFrom)
	}
	got.RescuedFrom = ""
	if diff := cmp.Diff(got, stored); diff != "" {
		t.Fatalf("Rescue result differs from the stored task:\n%s", diff)
	}
	// Rescued: claimable again at once, no attempt counted; it runs again
	// once its unknown attempt is settled, under the same number.
	claimProc := func() {
		wantIDs(t, "claim after rescue", f.claim(store.ClaimRequest{Owner: "w2", Now: now, Max: 1, Machines: []string{"m-proc"}}), "proc")
	}
	claimProc()
	f.settleInterrupted("proc", "w2", 1, now)
	claimProc()
	if got := f.start("proc", "w2", now); got.Attempts != 0 || got.History[1].Number != 1 {
		t.Fatalf("rerun after rescue: %+v", got)
	}
	// w2's lease runs to now+5m; the ASSIGNED task's expires at T0+1h8m.
	rescued, _ = f.e.Rescue(f.ctx, store.RescueRequest{Now: at(time.Hour + 8*time.Minute)})
	wantIDs(t, "ASSIGNED task rescued at its expiry", rescued, "asg")
	if rescued[0].RescuedFrom != "w1" {
		t.Fatalf("ASSIGNED task's RescuedFrom %q, want w1", rescued[0].RescuedFrom)
	}
	if got := f.get("asg"); got.Status != store.Pending || len(got.History) != 0 {
		t.Fatalf("rescued ASSIGNED task: %+v", got)
	}
	if got := f.get("pend"); got.Status != store.Pending {
		t.Fatalf("pending task touched: %+v", got)
	}
}

func testRescueOwnerDead(t *testing.T, f *fixture) {
	f.running("a", "dead-worker")
	f.running("b", "live-worker")
	f.running("c", "dead-worker")
	var mu sync.Mutex
	var asked []string
	rescued, err := f.e.Rescue(f.ctx, store.RescueRequest{Now: at(time.Hour + time.Minute), OwnerDead: func(owner string) bool {
		mu.Lock()
		defer mu.Unlock()
		asked = append(asked, owner)
		return owner == "dead-worker"
	}})
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, "rescued", rescued, "a", "c")
	for _, r := range rescued {
		if r.RescuedFrom != "dead-worker" {
			t.Fatalf("%s: RescuedFrom %q, want dead-worker", r.ID, r.RescuedFrom)
		}
	}
	slices.Sort(asked)
	asked = slices.Compact(asked)
	if fmt.Sprint(asked) != "[dead-worker live-worker]" {
		t.Fatalf("OwnerDead asked about %v", asked)
	}
	if got := f.get("b"); got.Status != store.Processing || got.LeaseOwner != "live-worker" {
		t.Fatalf("live worker's task: %+v", got)
	}
	for _, id := range []string{"a", "c"} {
		if got := f.get(id); got.Status != store.Pending || got.History[0].Outcome != store.OutcomeUnknown || got.Attempts != 0 {
			t.Fatalf("dead worker's task %s: %+v", id, got)
		}
	}
}

func testRescueCancelRequested(t *testing.T, f *fixture) {
	f.running("x", "w1")
	if _, err := f.e.Cancel(f.ctx, "x", at(time.Hour)); err != nil {
		t.Fatal(err)
	}
	now := at(2 * time.Hour)
	rescued, err := f.e.Rescue(f.ctx, store.RescueRequest{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, "rescued", rescued, "x")
	// Its copy may still run: PENDING until a worker settles it, then
	// CANCELLED.
	if got := f.get("x"); got.Status != store.Pending || !got.CancelRequested || got.LeaseOwner != "" ||
		got.History[0].Outcome != store.OutcomeUnknown || got.Attempts != 0 {
		t.Fatalf("rescued cancel-requested task: %+v", got)
	}
	f.claimOne("x", "w2", now)
	f.settleInterrupted("x", "w2", 1, now)
	if got := f.get("x"); got.Status != store.Cancelled || !got.CompletedAt.Equal(now) || got.History[0].Outcome != store.OutcomeInterrupted {
		t.Fatalf("settled cancel-requested task: %+v", got)
	}
	wantIDs(t, "not claimable", f.claim(store.ClaimRequest{Now: now}))

	// ASSIGNED, never started: nothing of it runs, CANCELLED at once.
	f.task("m-y", 3, at(0), named("y"))
	f.claim(store.ClaimRequest{Owner: "w1", Machines: []string{"m-y"}, Now: at(time.Hour)})
	if _, err := f.e.Cancel(f.ctx, "y", at(time.Hour)); err != nil {
		t.Fatal(err)
	}
	wantIDs(t, "rescued", f.rescue(now), "y")
	if got := f.get("y"); got.Status != store.Cancelled || len(got.History) != 0 {
		t.Fatalf("rescued cancel-requested ASSIGNED task: %+v", got)
	}
}

// A worker that was presumed dead finishes late: its Finish must not
// overwrite the rescue or the new worker's run.
func testRescueLateFinish(t *testing.T, f *fixture) {
	f.running("x", "w1")
	now := at(2 * time.Hour)
	if _, err := f.e.Rescue(f.ctx, store.RescueRequest{Now: now}); err != nil {
		t.Fatal(err)
	}
	rescued := f.get("x")
	late := store.Finish{ID: "x", Owner: "w1", At: now.Add(time.Second), Next: store.Completed, CountAttempt: true,
		Attempt: store.Attempt{Outcome: "succeeded"}, Stdout: []byte("late")}
	_, err := f.e.Finish(f.ctx, late)
	wantErr(t, "late Finish after Rescue", err, store.ErrLeaseLost)
	f.unchanged("late Finish after Rescue", rescued)

	f.claimOne("x", "w2", now)
	f.settleInterrupted("x", "w2", 1, now)
	f.claimOne("x", "w2", now)
	f.start("x", "w2", now)
	running := f.get("x")
	_, err = f.e.Finish(f.ctx, late)
	wantErr(t, "late Finish while another worker runs it", err, store.ErrLeaseLost)
	f.unchanged("late Finish while another worker runs it", running)
	_, err = f.e.Start(f.ctx, "x", "w1", store.Attempt{StartedAt: now})
	if !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("late Start: %v", err)
	}
}

func testNextReady(t *testing.T, f *fixture) {
	if _, ok, err := f.e.NextReady(f.ctx); err != nil || ok {
		t.Fatalf("NextReady on an empty store: ok=%v err=%v", ok, err)
	}
	f.task("m", 3, at(0), named("soon"), func(t *store.Task) { t.ReadyAt = at(time.Hour) })
	f.task("m", 3, at(0), named("later"), func(t *store.Task) { t.ReadyAt = at(2 * time.Hour) })
	f.task("m", 1, at(0), named("now"), func(t *store.Task) { t.ReadyAt = at(30 * time.Minute) })
	next, ok, err := f.e.NextReady(f.ctx)
	if err != nil || !ok || !next.Equal(at(30*time.Minute)) {
		t.Fatalf("NextReady = %v, %v, %v", next, ok, err)
	}
	// Claimed and cancelled tasks do not count.
	f.claimOne("now", "w1", at(30*time.Minute))
	if _, err := f.e.Cancel(f.ctx, "soon", at(time.Hour)); err != nil {
		t.Fatal(err)
	}
	next, ok, _ = f.e.NextReady(f.ctx)
	if !ok || !next.Equal(at(2*time.Hour)) || next.Location() != time.UTC {
		t.Fatalf("NextReady = %v, %v", next, ok)
	}
	if _, err := f.e.Cancel(f.ctx, "later", at(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := f.e.NextReady(f.ctx); ok {
		t.Fatal("NextReady with no PENDING task reports one")
	}
}

func testDepth(t *testing.T, f *fixture) {
	if rows, err := f.e.Depth(f.ctx); err != nil || len(rows) != 0 {
		t.Fatalf("Depth on an empty store: %v, %v", rows, err)
	}
	team := func(tm string) func(*store.Task) { return func(t *store.Task) { t.TeamID = tm } }
	f.task("m1", 3, at(0), team("prod"))
	f.task("m1", 3, at(1), team("prod"))
	f.task("m2", 3, at(2), team("prod"))
	f.task("m1", 1, at(3), team("dev"))
	f.task("m1", 5, at(4), team("prod"), named("to-cancel"))
	f.claim(store.ClaimRequest{Max: 1}) // the priority-1 task
	if _, err := f.e.Cancel(f.ctx, "to-cancel", at(time.Hour)); err != nil {
		t.Fatal(err)
	}
	rows, err := f.e.Depth(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.DepthRow{
		{Status: store.Pending, Priority: 3, TeamID: "prod", MachineID: "m1", Team: "prod", Machine: "m1", Count: 2},
		{Status: store.Pending, Priority: 3, TeamID: "prod", MachineID: "m2", Team: "prod", Machine: "m2", Count: 1},
		{Status: store.Assigned, Priority: 1, TeamID: "dev", MachineID: "m1", Team: "dev", Machine: "m1", Count: 1},
		{Status: store.Cancelled, Priority: 5, TeamID: "prod", MachineID: "m1", Team: "prod", Machine: "m1", Count: 1},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Fatalf("Depth (-want +got):\n%s", diff)
	}
}

func testClose(t *testing.T, f *fixture) {
	f.task("m", 3, at(0), named("x"))
	if err := f.e.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx, now := f.ctx, at(time.Hour)
	calls := map[string]func() error{
		"CreateMachine": func() error { _, err := f.e.CreateMachine(ctx, store.Machine{Name: "m"}); return err },
		"UpdateMachine": func() error { return f.e.UpdateMachine(ctx, store.Machine{ID: "m", Name: "m"}) },
		"GetMachine":    func() error { _, err := f.e.GetMachine(ctx, "m"); return err },
		"MachineByName": func() error { _, err := f.e.MachineByName(ctx, "m"); return err },
		"ListMachines":  func() error { _, err := f.e.ListMachines(ctx, store.MachineFilter{}); return err },
		"DeleteMachine": func() error { return f.e.DeleteMachine(ctx, "m", now) },
		"CreateTask": func() error {
			_, _, err := f.e.CreateTask(ctx, store.Task{MachineID: "m", Priority: 3})
			return err
		},
		"GetTask":   func() error { _, err := f.e.GetTask(ctx, "x"); return err },
		"ListTasks": func() error { _, err := f.e.ListTasks(ctx, store.TaskFilter{}); return err },
		"Claim": func() error {
			_, err := f.e.Claim(ctx, store.ClaimRequest{Owner: "w", Now: now, LeaseUntil: now.Add(time.Minute), Max: 1})
			return err
		},
		"Start": func() error { _, err := f.e.Start(ctx, "x", "w", store.Attempt{StartedAt: now}); return err },
		"Heartbeat": func() error {
			_, err := f.e.Heartbeat(ctx, "w", []string{"x"}, now)
			return err
		},
		"Finish": func() error {
			_, err := f.e.Finish(ctx, store.Finish{ID: "x", Owner: "w", At: now, Next: store.Completed})
			return err
		},
		"Cancel":    func() error { _, err := f.e.Cancel(ctx, "x", now); return err },
		"Rescue":    func() error { _, err := f.e.Rescue(ctx, store.RescueRequest{Now: now}); return err },
		"NextReady": func() error { _, _, err := f.e.NextReady(ctx); return err },
		"Depth":     func() error { _, err := f.e.Depth(ctx); return err },
		"CreateTasks": func() error {
			_, err := f.e.CreateTasks(ctx, []store.Task{{MachineID: "m", Priority: 3}})
			return err
		},
		"CreateTasks/none":  func() error { _, err := f.e.CreateTasks(ctx, nil); return err },
		"SetMachineHealth":  func() error { return f.e.SetMachineHealth(ctx, "m", nil, now) },
		"QueuedByMachine":   func() error { _, err := f.e.QueuedByMachine(ctx, nil); return err },
		"QueuedByMachine/2": func() error { _, err := f.e.QueuedByMachine(ctx, []string{"m"}); return err },
		"ListPrunable":      func() error { _, err := f.e.ListPrunable(ctx, now, 10); return err },
		"DeleteTasks":       func() error { _, err := f.e.DeleteTasks(ctx, []string{"x"}); return err },
		"Close":             f.e.Close,
	}
	for name, call := range calls {
		wantErr(t, name+" after Close", call(), store.ErrClosed)
	}
}
