package storetest

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
)

// extTests cover batches, busy machines, machine health, placement counts,
// pruning, audit trimming and the CompletedAfter filter.
var extTests = []struct {
	name string
	fn   func(*testing.T, *fixture)
}{
	{"Batch/Create", testBatchCreate},
	{"Batch/AllOrNone", testBatchAllOrNone},
	{"Batch/Idempotency", testBatchIdempotency},
	{"Batch/Audit", testBatchAudit},
	{"Claim/BusyMachines", testClaimBusy},
	{"Machines/Health", testMachineHealth},
	{"QueuedByMachine", testQueuedByMachine},
	{"Prune/ListAndDelete", testPrune},
	{"Prune/Invalid", testPruneInvalid},
	{"Audit/Trim", testAuditTrim},
	{"Audit/TrimAll", testAuditTrimAll},
	{"Audit/TrimConcurrent", testAuditTrimConcurrent},
	{"Tasks/CompletedAfter", testCompletedAfter},
}

// batchTask is a PENDING task for CreateTasks on machine with priority prio
// enqueued at enq.
func batchTask(id, machine string, prio int, enq time.Time) store.Task {
	return store.Task{ID: id, TeamID: "team-a", MachineID: machine, Priority: prio, Spec: []byte(`{"id":"` + id + `"}`),
		CreatedAt: enq, EnqueuedAt: enq, ReadyAt: enq}
}

func (f *fixture) batch(ts ...store.Task) []store.Task {
	f.t.Helper()
	out, err := f.e.CreateTasks(f.ctx, ts)
	if err != nil {
		f.t.Fatalf("CreateTasks(%d tasks): %v", len(ts), err)
	}
	if len(out) != len(ts) {
		f.t.Fatalf("CreateTasks(%d tasks) returned %d", len(ts), len(out))
	}
	return out
}

func (f *fixture) count() int {
	f.t.Helper()
	return len(mustList(f.t, f, store.TaskFilter{}))
}

func testBatchCreate(t *testing.T, f *fixture) {
	// Equal EnqueuedAt: claimed in slice order (creation order), whatever
	// the ids.
	in := []store.Task{
		batchTask("c", "m", 3, at(0)),
		batchTask("a", "m", 3, at(0)),
		batchTask("b", "m", 3, at(0)),
		{MachineID: "m2", Priority: 1, Spec: []byte(`{}`), Status: store.Completed, LeaseOwner: "x"}, // defaults
	}
	out := f.batch(in...)
	for i, got := range out[:3] {
		want := in[i]
		want.Status = store.Pending
		want.Team, want.Machine = want.TeamID, want.MachineID // no such team or machine: the ids
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("out[%d] (-want +got):\n%s", i, diff)
		}
		if diff := cmp.Diff(got, f.get(got.ID)); diff != "" {
			t.Fatalf("GetTask(%s) differs from out[%d] (-out +stored):\n%s", got.ID, i, diff)
		}
	}
	d := out[3]
	if len(d.ID) != 36 || d.TeamID != store.DefaultTeam || d.Team != store.DefaultTeam || d.Status != store.Pending || d.LeaseOwner != "" ||
		d.CreatedAt.IsZero() || !d.EnqueuedAt.Equal(d.CreatedAt) || !d.ReadyAt.Equal(d.EnqueuedAt) {
		t.Fatalf("defaults not applied: %+v", d)
	}
	if diff := cmp.Diff(d, f.get(d.ID)); diff != "" {
		t.Fatalf("GetTask(%s) (-out +stored):\n%s", d.ID, diff)
	}
	wantIDs(t, "claim order", f.claim(store.ClaimRequest{Machines: []string{"m"}}), "c", "a", "b")

	// An empty batch is no call at all.
	for _, ts := range [][]store.Task{nil, {}} {
		got, err := f.e.CreateTasks(store.WithAudit(f.ctx, rec(0, "u", "batch.empty")), ts)
		if err != nil || got != nil {
			t.Fatalf("CreateTasks(%v) = %v, %v; want nil, nil", ts, got, err)
		}
	}
	if all := AllAudit(t, f.a); len(all) != 0 {
		t.Fatalf("an empty batch appended audit records: %v", actions(all))
	}

	// A bigger batch lands whole.
	var many []store.Task
	for i := range 500 {
		many = append(many, batchTask(fmt.Sprintf("n%04d", i), fmt.Sprint("m", i%7), 1+i%5, at(time.Duration(i))))
	}
	f.batch(many...)
	if n := f.count(); n != 504 {
		t.Fatalf("%d tasks stored, want 504", n)
	}
}

func testBatchAllOrNone(t *testing.T, f *fixture) {
	f.task("m", 3, at(0), named("taken"))
	cases := []struct {
		name  string
		ts    []store.Task
		want  error
		index string
	}{
		{"invalid priority", []store.Task{batchTask("x1", "m", 3, at(1)), batchTask("x2", "m", 3, at(1)), batchTask("x3", "m", 9, at(1))},
			store.ErrInvalidArgument, "task 2"},
		{"no machine", []store.Task{batchTask("x1", "", 3, at(1))}, store.ErrInvalidArgument, "task 0"},
		{"time out of range", []store.Task{batchTask("x1", "m", 3, at(1)), batchTask("x2", "m", 3, time.Date(1200, 1, 1, 0, 0, 0, 0, time.UTC))},
			store.ErrInvalidArgument, "task 1"},
		{"id taken by a stored task", []store.Task{batchTask("x1", "m", 3, at(1)), batchTask("taken", "m", 3, at(1)), batchTask("x3", "m", 3, at(1))},
			store.ErrExists, "task 1"},
		{"id repeated in the batch", []store.Task{batchTask("x1", "m", 3, at(1)), batchTask("x2", "m", 3, at(1)), batchTask("x1", "m", 3, at(1))},
			store.ErrExists, "task 2"},
	}
	for _, tc := range cases {
		ctx := store.WithAudit(f.ctx, rec(0, "u", "should.not.appear"))
		out, err := f.e.CreateTasks(ctx, tc.ts)
		wantErr(t, tc.name, err, tc.want)
		if !strings.Contains(err.Error(), tc.index+":") {
			t.Fatalf("%s: error %q does not name %q", tc.name, err, tc.index)
		}
		if out != nil {
			t.Fatalf("%s: returned tasks %v with the error", tc.name, ids(out))
		}
		wantIDs(t, tc.name+": stored tasks", mustList(t, f, store.TaskFilter{}), "taken")
	}
	if all := AllAudit(t, f.a); len(all) != 0 {
		t.Fatalf("failed batches appended audit records: %v", actions(all))
	}
	// The ids of the failed batches are free.
	f.batch(batchTask("x1", "m", 3, at(1)), batchTask("x2", "m", 3, at(1)), batchTask("x3", "m", 3, at(1)))
}

func testBatchIdempotency(t *testing.T, f *fixture) {
	stored := f.task("m", 3, at(0), named("stored"), func(t *store.Task) { t.IdempotencyKey = "k-stored" })
	keyed := func(id, key string) store.Task {
		t := batchTask(id, "m", 3, at(time.Second))
		t.IdempotencyKey = key
		return t
	}
	out := f.batch(
		keyed("b0", "k-stored"),     // the stored task
		keyed("b1", "k-new"),        // created
		keyed("b2", "k-new"),        // the second of a duplicate key returns the first
		keyed("b3", ""),             // no key: created
		keyed("stored", "k-stored"), // id taken too, but the key decides: the stored task
		keyed("b1", "k-new"),        // same id and key as b1: b1
	)
	if diff := cmp.Diff(stored, out[0]); diff != "" {
		t.Fatalf("existing key (-stored +out[0]):\n%s", diff)
	}
	wantIDs(t, "batch slots", out, "stored", "b1", "b1", "b3", "stored", "b1")
	if diff := cmp.Diff(out[1], out[2]); diff != "" {
		t.Fatalf("duplicate key in the batch (-first +second):\n%s", diff)
	}
	if diff := cmp.Diff(out[1], f.get("b1")); diff != "" {
		t.Fatalf("b1 (-out +stored):\n%s", diff)
	}
	wantIDs(t, "stored tasks", mustList(t, f, store.TaskFilter{}), "stored", "b1", "b3")
	if _, err := f.e.GetTask(f.ctx, "b2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("b2 (a duplicate key) was inserted: %v", err)
	}
	// An id taken with a key that is free fails the batch.
	_, err := f.e.CreateTasks(f.ctx, []store.Task{keyed("b4", "k-4"), keyed("b1", "k-other")})
	wantErr(t, "id taken, key free", err, store.ErrExists)
	if !strings.Contains(err.Error(), "task 1:") {
		t.Fatalf("error does not name task 1: %v", err)
	}
	// Keys of the batch behave as keys of CreateTask afterwards.
	again, created, err := f.e.CreateTask(f.ctx, keyed("b5", "k-new"))
	if err != nil || created || again.ID != "b1" {
		t.Fatalf("CreateTask with a key a batch created: %s created=%v %v", again.ID, created, err)
	}
}

func testBatchAudit(t *testing.T, f *fixture) {
	f.task("m", 3, at(0), named("stored"), func(t *store.Task) { t.IdempotencyKey = "k" })
	ctx := store.WithAudit(f.ctx, rec(0, "alice", "task.batch"), rec(0, "alice", "task.batch.more"))
	ts := []store.Task{batchTask("a", "m", 3, at(1)), batchTask("b", "m", 3, at(1)), batchTask("c", "m", 3, at(1))}
	ts[1].IdempotencyKey = "k"
	out, err := f.e.CreateTasks(ctx, ts)
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, "slots", out, "a", "stored", "c")
	if got := actions(VerifyAudit(t, f.a)); fmt.Sprint(got) != "[task.batch task.batch.more]" {
		t.Fatalf("audit after a batch of 3: %v, want the context's 2 records once", got)
	}
	// A batch of existing tasks only still appends the records (as
	// CreateTask does for an existing key).
	if _, err := f.e.CreateTasks(store.WithAudit(f.ctx, rec(0, "bob", "task.batch.again")), ts[1:2]); err != nil {
		t.Fatal(err)
	}
	if got := actions(VerifyAudit(t, f.a)); fmt.Sprint(got) != "[task.batch task.batch.more task.batch.again]" {
		t.Fatalf("audit after an all-existing batch: %v", got)
	}
}

func testClaimBusy(t *testing.T, f *fixture) {
	for p := 1; p <= 5; p++ {
		f.task("hot", p, at(time.Duration(p)), named(fmt.Sprint("hot-p", p)))
	}
	f.task("cool", 5, at(0), named("cool-p5"))
	f.task("cool", 3, at(1), named("cool-p3"))
	busy := []string{"hot", "elsewhere"}
	wantIDs(t, "busy hot machine", f.claim(store.ClaimRequest{BusyMachines: busy}), "hot-p1", "hot-p2", "cool-p3", "cool-p5")
	wantIDs(t, "still busy", f.claim(store.ClaimRequest{BusyMachines: busy}))
	// The gate has an end: aging lifts them to priority 2, which a busy
	// machine takes (hot-p3 after 1 interval, p4 after 2, p5 after 3), or
	// MaxHold lets them through.
	const aging = time.Minute
	wantIDs(t, "busy, aged 1 interval", f.claim(store.ClaimRequest{BusyMachines: busy, Aging: aging, Now: at(aging + 3)}), "hot-p3")
	wantIDs(t, "busy, MaxHold", f.claim(store.ClaimRequest{BusyMachines: busy, MaxHold: 2 * time.Minute, Now: at(2*time.Minute + 4)}), "hot-p4")
	wantIDs(t, "busy, aged 3 intervals", f.claim(store.ClaimRequest{BusyMachines: busy, Aging: aging, Now: at(3*aging + 4)}))
	wantIDs(t, "busy, aged 3 intervals", f.claim(store.ClaimRequest{BusyMachines: busy, Aging: aging, Now: at(3*aging + 5)}), "hot-p5")
	for _, id := range []string{"hot-p1", "hot-p2", "hot-p3", "hot-p4", "hot-p5"} {
		f.finish(store.Finish{ID: id, Owner: "w1", At: at(time.Hour), Next: store.Completed, CountAttempt: true})
	}
	// A critical task arriving on the busy machine is claimed at once.
	f.task("hot", 1, at(2*time.Hour), named("hot-crit"))
	wantIDs(t, "critical on a busy machine", f.claim(store.ClaimRequest{BusyMachines: busy, Now: at(2 * time.Hour)}), "hot-crit")
	// The per-machine limit still applies to priority 1..2 on a busy machine.
	f.task("hot", 2, at(2*time.Hour), named("hot-p2b"))
	wantIDs(t, "busy and full", f.claim(store.ClaimRequest{BusyMachines: busy, Now: at(2 * time.Hour), PerMachine: 1}))
	// Recovered: the held-back tasks run, in order.
	wantIDs(t, "recovered", f.claim(store.ClaimRequest{Now: at(2 * time.Hour)}), "hot-p2b")
	// With a machine filter too.
	f.task("hot", 4, at(3*time.Hour), named("hot-p4b"))
	f.task("cool", 4, at(3*time.Hour), named("cool-p4b"))
	wantIDs(t, "busy + filter", f.claim(store.ClaimRequest{Now: at(3 * time.Hour), Machines: []string{"hot"}, BusyMachines: []string{"hot"}}))
	wantIDs(t, "busy within the filter", f.claim(store.ClaimRequest{Now: at(3 * time.Hour), Machines: []string{"hot", "cool"},
		BusyMachines: []string{"hot"}}), "cool-p4b")
	wantIDs(t, "empty busy list", f.claim(store.ClaimRequest{Now: at(3 * time.Hour), BusyMachines: []string{}}), "hot-p4b")
}

func testMachineHealth(t *testing.T, f *fixture) {
	f.team("prod", "dev")
	f.machine(store.Machine{ID: "web", Name: "web", TeamID: "prod", Host: "h", Port: 22, User: "u", Config: []byte(`{"c":1}`), CreatedAt: at(0),
		Health: []byte(`{"ignored":true}`), HealthAt: at(time.Hour)}) // CreateMachine ignores them
	f.machine(store.Machine{ID: "db", Name: "db", TeamID: "prod", CreatedAt: at(0)})
	id := "web"
	get := func() store.Machine {
		t.Helper()
		got, err := f.e.GetMachine(f.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := get(); got.Health != nil || !got.HealthAt.IsZero() {
		t.Fatalf("a new machine has health %s at %v", got.Health, got.HealthAt)
	}
	before := get()
	sample := []byte(`{"cpu":12.5,"mem":40}`)
	when := at(2 * time.Minute).In(time.FixedZone("x", 3600))
	if err := f.e.SetMachineHealth(f.ctx, "web", sample, when); err != nil {
		t.Fatalf("SetMachineHealth: %v", err)
	}
	sample[2] = 'X' // the store keeps its own copy
	want := before
	want.Health, want.HealthAt = []byte(`{"cpu":12.5,"mem":40}`), when.UTC()
	got := get()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("after SetMachineHealth (-want +got):\n%s", diff)
	}
	if got.HealthAt.Location() != time.UTC {
		t.Fatalf("HealthAt not UTC: %v", got.HealthAt)
	}
	got.Health[0] = 'Y'
	ms, err := f.e.ListMachines(f.ctx, store.MachineFilter{TeamID: "prod"})
	if err != nil || len(ms) != 2 || ms[0].Name != "db" || ms[0].Health != nil {
		t.Fatalf("ListMachines: %+v, %v", ms, err)
	}
	if diff := cmp.Diff(want, ms[1]); diff != "" {
		t.Fatalf("ListMachines (-want +got):\n%s", diff)
	}

	// UpdateMachine and MoveMachine keep the sample, whatever is passed.
	upd := want
	upd.Host, upd.Health, upd.HealthAt, upd.UpdatedAt = "h2", nil, time.Time{}, at(time.Hour)
	if err := f.e.UpdateMachine(f.ctx, upd); err != nil {
		t.Fatal(err)
	}
	if got := get(); got.Host != "h2" || string(got.Health) != string(want.Health) || !got.HealthAt.Equal(want.HealthAt) {
		t.Fatalf("after UpdateMachine: %+v", got)
	}
	if err := f.a.MoveMachine(f.ctx, "web", "dev"); err != nil {
		t.Fatal(err)
	}
	if got := get(); got.TeamID != "dev" || string(got.Health) != string(want.Health) {
		t.Fatalf("after MoveMachine: %+v", got)
	}

	// Last write wins, even an older sample; UpdatedAt does not move.
	updated := get().UpdatedAt
	if err := f.e.SetMachineHealth(f.ctx, "web", []byte(`{"cpu":99}`), at(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := get(); string(got.Health) != `{"cpu":99}` || !got.HealthAt.Equal(at(time.Minute)) || !got.UpdatedAt.Equal(updated) {
		t.Fatalf("after an older sample: %s at %v, updated %v (was %v)", got.Health, got.HealthAt, got.UpdatedAt, updated)
	}
	// Zero time means now; an empty sample clears the sample.
	before2 := time.Now().Add(-time.Minute)
	if err := f.e.SetMachineHealth(f.ctx, "web", nil, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if got := get(); got.Health != nil || got.HealthAt.Before(before2) || got.HealthAt.After(time.Now().Add(time.Minute)) {
		t.Fatalf("after an empty sample at zero time: %s at %v", got.Health, got.HealthAt)
	}

	// Errors, and no audit record without records in the context.
	wantErr(t, "missing machine", f.e.SetMachineHealth(f.ctx, "nope", []byte(`{}`), at(0)), store.ErrNotFound)
	wantErr(t, "empty id", f.e.SetMachineHealth(f.ctx, "", []byte(`{}`), at(0)), store.ErrInvalidArgument)
	wantErr(t, "time out of range", f.e.SetMachineHealth(f.ctx, "web", []byte(`{}`), time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)),
		store.ErrInvalidArgument)
	if all := AllAudit(t, f.a); len(all) != 0 {
		t.Fatalf("health samples appended audit records: %v", actions(all))
	}
	// A deleted and re-created machine starts without a sample.
	if err := f.e.DeleteMachine(f.ctx, "web", time.Time{}); err != nil {
		t.Fatal(err)
	}
	id = f.machine(store.Machine{Name: "web"}).ID
	if got := get(); got.Health != nil || !got.HealthAt.IsZero() {
		t.Fatalf("re-created machine has health %s at %v", got.Health, got.HealthAt)
	}
}

func testQueuedByMachine(t *testing.T, f *fixture) {
	q := func(ms []string) map[string]int {
		t.Helper()
		got, err := f.e.QueuedByMachine(f.ctx, ms)
		if err != nil {
			t.Fatalf("QueuedByMachine(%v): %v", ms, err)
		}
		return got
	}
	if got := q(nil); len(got) != 0 {
		t.Fatalf("empty store: %v", got)
	}
	// a: 2 pending (one waiting out a retry delay), 1 assigned, 1 processing,
	// 1 completed, 1 cancelled; b: 1 pending; c: 1 failed.
	f.task("a", 1, at(0), named("a-assigned"))
	f.task("a", 1, at(1), named("a-processing"))
	f.task("a", 1, at(2), named("a-completed"))
	f.task("c", 1, at(3), named("c-failed"))
	f.claim(store.ClaimRequest{Max: 4})
	f.start("a-processing", "w1", at(time.Hour))
	f.finish(store.Finish{ID: "a-completed", Owner: "w1", At: at(time.Hour), Next: store.Completed, CountAttempt: true})
	f.finish(store.Finish{ID: "c-failed", Owner: "w1", At: at(time.Hour), Next: store.Failed, CountAttempt: true})
	f.task("a", 3, at(4), named("a-pending"))
	f.task("a", 3, at(5), named("a-later"), func(t *store.Task) { t.ReadyAt = at(48 * time.Hour) })
	f.task("a", 3, at(6), named("a-cancelled"))
	if _, err := f.e.Cancel(f.ctx, "a-cancelled", at(time.Hour)); err != nil {
		t.Fatal(err)
	}
	f.task("b", 5, at(7), named("b-pending"))

	if diff := cmp.Diff(map[string]int{"a": 4, "b": 1}, q(nil)); diff != "" {
		t.Fatalf("QueuedByMachine(nil) (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{"a": 4, "c": 0, "zz": 0}, q([]string{"a", "c", "zz", "a"})); diff != "" {
		t.Fatalf("QueuedByMachine(a, c, zz) (-want +got):\n%s", diff)
	}
	if got := q([]string{}); got == nil || len(got) != 0 {
		t.Fatalf("QueuedByMachine([]) = %#v, want an empty map", got)
	}
	// The result is the caller's.
	got := q([]string{"b"})
	got["b"] = 100
	if again := q([]string{"b"}); again["b"] != 1 {
		t.Fatalf("QueuedByMachine result aliased: %v", again)
	}
}

// finished creates a task on machine and finishes it as next at done
// (CANCELLED ones are cancelled while PENDING).
func (f *fixture) finished(id string, next store.Status, done time.Time) store.Task {
	f.t.Helper()
	f.task("m-"+id, 3, at(0), named(id), func(t *store.Task) { t.IdempotencyKey = "key-" + id })
	if next == store.Cancelled {
		if _, err := f.e.Cancel(f.ctx, id, done); err != nil {
			f.t.Fatal(err)
		}
		return f.get(id)
	}
	f.claimOne(id, "w-"+id, at(time.Minute))
	f.start(id, "w-"+id, at(time.Minute))
	return f.finish(store.Finish{ID: id, Owner: "w-" + id, At: done, Next: next, CountAttempt: true,
		ExitCode: intp(0), Stdout: []byte("out " + id), Attempt: store.Attempt{Outcome: "succeeded"}})
}

func testPrune(t *testing.T, f *fixture) {
	prunable := func(before time.Time, limit int) []store.Task {
		t.Helper()
		ts, err := f.e.ListPrunable(f.ctx, before, limit)
		if err != nil {
			t.Fatalf("ListPrunable(%v, %d): %v", before, limit, err)
		}
		return ts
	}
	wantIDs(t, "empty store", prunable(at(time.Hour), 10))
	done3 := f.finished("done3", store.Completed, at(3*time.Hour))
	f.finished("fail1", store.Failed, at(1*time.Hour))
	f.finished("canc2", store.Cancelled, at(2*time.Hour))
	f.finished("done2", store.Completed, at(2*time.Hour)) // same CompletedAt as canc2, created later
	f.finished("late", store.Completed, at(10*time.Hour))
	f.task("m", 3, at(0), named("pending"))
	f.task("m", 1, at(0), named("running"))
	f.claimOne("running", "w", at(time.Minute))
	f.task("m", 2, at(0), named("retrying"))
	f.claimOne("retrying", "w", at(time.Minute))
	f.finish(store.Finish{ID: "retrying", Owner: "w", At: at(time.Hour), Next: store.Pending, CountAttempt: true,
		ReadyAt: at(100 * time.Hour)}) // PENDING again: no CompletedAt

	wantIDs(t, "before 4h", prunable(at(4*time.Hour), 10), "fail1", "canc2", "done2", "done3")
	wantIDs(t, "limit 2", prunable(at(4*time.Hour), 2), "fail1", "canc2")
	wantIDs(t, "before is exclusive", prunable(at(3*time.Hour), 10), "fail1", "canc2", "done2")
	wantIDs(t, "all finished", prunable(at(100*time.Hour), 100), "fail1", "canc2", "done2", "done3", "late")
	// Full records, History included.
	got := prunable(at(4*time.Hour), 10)
	if diff := cmp.Diff(done3, got[3]); diff != "" {
		t.Fatalf("ListPrunable record (-stored +listed):\n%s", diff)
	}
	if len(got[3].History) != 1 || string(got[3].Stdout) != "out done3" {
		t.Fatalf("listed without History or output: %+v", got[3])
	}

	// DeleteTasks deletes only finished tasks, counting each once.
	ctx := store.WithAudit(f.ctx, rec(0, "archiver", "task.prune"))
	n, err := f.e.DeleteTasks(ctx, []string{"fail1", "canc2", "pending", "running", "retrying", "nope", "fail1", "done2"})
	if err != nil || n != 3 {
		t.Fatalf("DeleteTasks = %d, %v; want 3", n, err)
	}
	wantIDs(t, "left", mustList(t, f, store.TaskFilter{}), "done3", "late", "pending", "retrying", "running")
	for _, id := range []string{"fail1", "canc2", "done2"} {
		if _, err := f.e.GetTask(f.ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetTask(%s) after delete: %v", id, err)
		}
	}
	if got := f.get("running"); got.Status != store.Assigned {
		t.Fatalf("running task touched: %+v", got)
	}
	wantIDs(t, "after delete", prunable(at(4*time.Hour), 10), "done3")
	// Deleting again, or nothing, deletes nothing (and still records).
	if n, err := f.e.DeleteTasks(f.ctx, []string{"fail1"}); err != nil || n != 0 {
		t.Fatalf("DeleteTasks again = %d, %v", n, err)
	}
	if n, err := f.e.DeleteTasks(store.WithAudit(f.ctx, rec(0, "archiver", "task.prune.none")), nil); err != nil || n != 0 {
		t.Fatalf("DeleteTasks(nil) = %d, %v", n, err)
	}
	if got := actions(VerifyAudit(t, f.a)); fmt.Sprint(got) != "[task.prune task.prune.none]" {
		t.Fatalf("audit after DeleteTasks: %v", got)
	}
	// The idempotency key of a deleted task is free again.
	again, created, err := f.e.CreateTask(f.ctx, store.Task{TeamID: "team-a", IdempotencyKey: "key-fail1", MachineID: "m", Priority: 3})
	if err != nil || !created || again.ID == "fail1" {
		t.Fatalf("CreateTask with a pruned task's key: %s created=%v %v", again.ID, created, err)
	}
	// Depth and QueuedByMachine no longer see the deleted tasks.
	rows, err := f.e.Depth(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, r := range rows {
		total += r.Count
	}
	if total != 6 {
		t.Fatalf("Depth counts %d tasks, want 6: %+v", total, rows)
	}
}

func testPruneInvalid(t *testing.T, f *fixture) {
	for name, c := range map[string]struct {
		before time.Time
		limit  int
	}{
		"limit 0":        {at(0), 0},
		"negative limit": {at(0), -1},
		"zero before":    {time.Time{}, 10},
		"out of range":   {time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), 10},
	} {
		_, err := f.e.ListPrunable(f.ctx, c.before, c.limit)
		wantErr(t, name, err, store.ErrInvalidArgument)
	}
}

// verifyFrom verifies recs as the chain from start to head.
func verifyFrom(start, head audit.Head, recs []audit.Record, ring *audit.Keyring) error {
	v := audit.NewVerifier(start, audit.WithHead(head), audit.WithKeyring(ring))
	for _, r := range recs {
		if err := v.Add(r); err != nil {
			return err
		}
	}
	return v.Finish()
}

func testAuditTrim(t *testing.T, f *fixture) {
	base := func() audit.Head {
		t.Helper()
		h, err := f.a.AuditBase(f.ctx)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	if b := base(); b != (audit.Head{}) {
		t.Fatalf("a new store's base: %v", b)
	}
	var recs []audit.Record
	for i := range 10 {
		recs = append(recs, rec(time.Duration(i)*time.Second, "u", fmt.Sprint("step.", i+1)))
	}
	all, err := f.a.AppendAudit(f.ctx, recs...)
	if err != nil {
		t.Fatal(err)
	}
	head, _ := f.a.AuditHead(f.ctx)
	// Trimming nothing is fine.
	if err := f.a.TrimAudit(f.ctx, 0); err != nil {
		t.Fatalf("TrimAudit(0): %v", err)
	}
	if b := base(); b != (audit.Head{}) {
		t.Fatalf("TrimAudit(0) moved the base to %v", b)
	}

	// The caller archives records 1..4, then trims them.
	archived := AllAudit(t, f.a)[:4]
	if err := f.a.TrimAudit(f.ctx, 4); err != nil {
		t.Fatalf("TrimAudit(4): %v", err)
	}
	if b := base(); b != audit.HeadOf(all[3]) {
		t.Fatalf("base after TrimAudit(4) = %v, want %v", b, audit.HeadOf(all[3]))
	}
	if h, _ := f.a.AuditHead(f.ctx); h != head {
		t.Fatalf("TrimAudit moved the head: %v -> %v", head, h)
	}
	stored := AllAudit(t, f.a)
	if got := seqs(stored); fmt.Sprint(got) != "[5 6 7 8 9 10]" {
		t.Fatalf("stored after trim: %v", got)
	}
	// The stored rest verifies from the base; the archive from the genesis
	// to the base; together, the whole chain.
	if err := verifyFrom(base(), head, stored, ringOf(f.a)); err != nil {
		t.Fatalf("stored records from the base: %v", err)
	}
	if err := verifyFrom(audit.Head{}, base(), archived, ringOf(f.a)); err != nil {
		t.Fatalf("archived records up to the base: %v", err)
	}
	if err := verifyFrom(audit.Head{}, head, append(append([]audit.Record(nil), archived...), stored...), ringOf(f.a)); err != nil {
		t.Fatalf("archive + stored: %v", err)
	}
	// From the genesis the stored rest does not verify: the base matters.
	if err := audit.VerifyWithHead(stored, head); !errors.Is(err, audit.ErrTampered) {
		t.Fatalf("stored records verified from the genesis: %v", err)
	}
	VerifyAudit(t, f.a)
	// Filters below the base find nothing more.
	if got, _ := f.a.ListAudit(f.ctx, audit.Filter{AfterSeq: 2, Limit: 3}); fmt.Sprint(seqs(got)) != "[5 6 7]" {
		t.Fatalf("ListAudit after 2: %v", seqs(got))
	}

	// At or below the base: nothing to do. Past the head, negative: refused.
	for _, s := range []int64{4, 3, 0} {
		if err := f.a.TrimAudit(f.ctx, s); err != nil {
			t.Fatalf("TrimAudit(%d) at or below the base: %v", s, err)
		}
	}
	wantErr(t, "past the head", f.a.TrimAudit(f.ctx, 11), store.ErrInvalidArgument)
	wantErr(t, "negative", f.a.TrimAudit(f.ctx, -1), store.ErrInvalidArgument)
	if b := base(); b.Seq != 4 {
		t.Fatalf("refused trims moved the base to %v", b)
	}

	// The chain goes on after a trim; a trim's own audit records are
	// appended after the head.
	ctx := store.WithAudit(f.ctx, rec(time.Minute, "archiver", "audit.trim"))
	if err := f.a.TrimAudit(ctx, 7); err != nil {
		t.Fatal(err)
	}
	stored = VerifyAudit(t, f.a)
	if got := seqs(stored); fmt.Sprint(got) != "[8 9 10 11]" || stored[3].Action != "audit.trim" {
		t.Fatalf("after TrimAudit(7) with a record: %v %v", seqs(stored), actions(stored))
	}
	if b := base(); b != audit.HeadOf(all[6]) {
		t.Fatalf("base after TrimAudit(7) = %v", b)
	}
	if _, err := f.a.AppendAudit(f.ctx, rec(time.Hour, "u", "after")); err != nil {
		t.Fatal(err)
	}
	VerifyAudit(t, f.a)
	// A failed trim appends nothing.
	h0, _ := f.a.AuditHead(f.ctx)
	wantErr(t, "past the head", f.a.TrimAudit(store.WithAudit(f.ctx, rec(0, "u", "should.not.appear")), 100), store.ErrInvalidArgument)
	if h, _ := f.a.AuditHead(f.ctx); h != h0 {
		t.Fatalf("a failed trim moved the head: %v -> %v", h0, h)
	}
}

func testAuditTrimAll(t *testing.T, f *fixture) {
	for i := range 3 {
		if _, err := f.a.AppendAudit(f.ctx, rec(time.Duration(i), "u", "x")); err != nil {
			t.Fatal(err)
		}
	}
	head, _ := f.a.AuditHead(f.ctx)
	if err := f.a.TrimAudit(f.ctx, head.Seq); err != nil {
		t.Fatal(err)
	}
	base, err := f.a.AuditBase(f.ctx)
	if err != nil || base != head {
		t.Fatalf("base after trimming everything = %v, %v; want the head %v", base, err, head)
	}
	if got := VerifyAudit(t, f.a); len(got) != 0 {
		t.Fatalf("records left: %v", seqs(got))
	}
	// The next record continues the chain from the base.
	out, err := f.a.AppendAudit(f.ctx, rec(time.Hour, "u", "next"))
	if err != nil || out[0].Seq != head.Seq+1 || out[0].PrevHash != head.Hash {
		t.Fatalf("record after a full trim: %+v, %v", out, err)
	}
	VerifyAudit(t, f.a)
}

func testCompletedAfter(t *testing.T, f *fixture) {
	f.finished("d1", store.Completed, at(1*time.Hour))
	f.finished("f2", store.Failed, at(2*time.Hour))
	f.finished("c2", store.Cancelled, at(2*time.Hour))
	f.finished("d3", store.Completed, at(3*time.Hour+1))
	f.task("m", 3, at(0), named("pending"))
	f.task("m", 3, at(0), named("running"))
	f.claimOne("pending", "w", at(time.Minute)) // the earlier-created one is claimed
	list := func(fl store.TaskFilter) []store.Task { return mustList(t, f, fl) }
	wantIDs(t, "no bound", list(store.TaskFilter{}), "c2", "d1", "d3", "f2", "pending", "running")
	wantIDs(t, "after 2h (inclusive)", list(store.TaskFilter{CompletedAfter: at(2 * time.Hour)}), "c2", "d3", "f2")
	wantIDs(t, "after 3h", list(store.TaskFilter{CompletedAfter: at(3 * time.Hour)}), "d3")
	wantIDs(t, "after 3h+1ns", list(store.TaskFilter{CompletedAfter: at(3*time.Hour + 1)}), "d3")
	wantIDs(t, "after 3h+2ns", list(store.TaskFilter{CompletedAfter: at(3*time.Hour + 2)}))
	wantIDs(t, "after 0, completed", list(store.TaskFilter{CompletedAfter: at(0), Statuses: []store.Status{store.Completed}}), "d1", "d3")
	wantIDs(t, "after 2h, limit 1", list(store.TaskFilter{CompletedAfter: at(2 * time.Hour), Limit: 1}), "c2")
	wantIDs(t, "machine", list(store.TaskFilter{CompletedAfter: at(0), MachineID: "m-f2"}), "f2")
	_, err := f.e.ListTasks(f.ctx, store.TaskFilter{CompletedAfter: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)})
	wantErr(t, "out of range", err, store.ErrInvalidArgument)
}

// testAuditTrimConcurrent: while one goroutine appends and another trims,
// CheckAudit (base, records, head) always verifies.
func testAuditTrimConcurrent(t *testing.T, f *fixture) {
	const appends = 60
	var (
		wg   sync.WaitGroup
		done = make(chan struct{})
		errs = make(chan error, 3)
	)
	wg.Add(3)
	go func() { // appender
		defer wg.Done()
		defer close(done)
		for i := range appends {
			if _, err := f.a.AppendAudit(f.ctx, rec(time.Duration(i), "u", "append")); err != nil {
				errs <- fmt.Errorf("AppendAudit: %w", err)
				return
			}
		}
	}()
	go func() { // trimmer: keeps the last 3 records
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			h, err := f.a.AuditHead(f.ctx)
			if err == nil && h.Seq > 3 {
				err = f.a.TrimAudit(f.ctx, h.Seq-3)
			}
			if err != nil {
				errs <- fmt.Errorf("TrimAudit: %w", err)
				return
			}
		}
	}()
	go func() { // verifier
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := CheckAudit(f.a); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	VerifyAudit(t, f.a)
	if h, _ := f.a.AuditHead(f.ctx); h.Seq != appends {
		t.Fatalf("head %v after %d appends", h, appends)
	}
}
