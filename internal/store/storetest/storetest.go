// Package storetest is the conformance suite every store engine passes (its
// store.Engine, store.Access and store.Outbox methods): the in-memory engine, the SQLite
// engine and any later one run the same subtests, so they agree on every
// method, state transition and audit record.
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Engine { return memory.New() })
//	}
//
// open must return a new, empty engine for each call; Run closes it.
// Times are explicit: no test sleeps or reads the wall clock for scheduling.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rediacc/rediacc/internal/store"
)

// T0 is the suite's reference instant.
var T0 = time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.UTC)

// Run runs the conformance suite against engines returned by open.
func Run(t *testing.T, open func(t *testing.T) store.Engine) {
	tests := []struct {
		name string
		fn   func(*testing.T, *fixture)
	}{
		{"Machines/CRUD", testMachineCRUD},
		{"Machines/Errors", testMachineErrors},
		{"Machines/DeleteWithTasks", testMachineHasTasks},
		{"Tasks/Create", testCreateTask},
		{"Tasks/CreateInvalid", testCreateInvalid},
		{"Tasks/Idempotency", testIdempotency},
		{"Tasks/GetNotFound", testGetNotFound},
		{"Tasks/ListFiltersAndOrder", testListTasks},
		{"Tasks/TimesUTC", testTimesUTC},
		{"Tasks/DeepCopy", testDeepCopy},
		{"Claim/PriorityThenFIFO", testClaimOrder},
		{"Claim/LeaseFields", testClaimLease},
		{"Claim/Max", testClaimMax},
		{"Claim/PerMachine", testClaimPerMachine},
		{"Claim/ReservedCriticalSlot", testClaimReserved},
		{"Claim/Aging", testClaimAging},
		{"Claim/ReadyAt", testClaimReadyAt},
		{"Claim/MachinesFilter", testClaimMachines},
		{"Claim/Invalid", testClaimInvalid},
		{"Start", testStart},
		{"Heartbeat", testHeartbeat},
		{"Finish/Completed", testFinishCompleted},
		{"Finish/Failed", testFinishFailed},
		{"Finish/Cancelled", testFinishCancelled},
		{"Finish/Retry", testFinishRetry},
		{"Finish/Interrupted", testFinishInterrupted},
		{"Finish/WithoutStart", testFinishWithoutStart},
		{"Finish/CancelRequestedRequeue", testFinishCancelRequestedRequeue},
		{"Finish/LeaseLost", testFinishLeaseLost},
		{"Cancel", testCancel},
		{"Rescue/ExpiredLease", testRescueExpired},
		{"Rescue/OwnerDead", testRescueOwnerDead},
		{"Rescue/CancelRequested", testRescueCancelRequested},
		{"Rescue/LateFinish", testRescueLateFinish},
		{"NextReady", testNextReady},
		{"Depth", testDepth},
		{"Concurrent/Claimers", testConcurrentClaimers},
		{"Close", testClose},
	}
	tests = append(tests, accessTests...)
	tests = append(tests, extTests...)
	tests = append(tests, sealTests...)
	tests = append(tests, fairTests...)
	tests = append(tests, keyTests...)
	tests = append(tests, identityTests...)
	tests = append(tests, blobTests...)
	tests = append(tests, executionTests...)
	tests = append(tests, scheduleTests...)
	tests = append(tests, windowTests...)
	tests = append(tests, outboxTests...)           // outbox.go
	tests = append(tests, claimAuditTests...)       // claimaudit.go
	tests = append(tests, machineUnchangedTests...) // machineunchanged.go
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := open(t)
			t.Cleanup(func() { _ = e.Close() })
			a, ok := e.(store.Access)
			if !ok {
				t.Fatalf("%T does not implement store.Access", e)
			}
			tt.fn(t, &fixture{t: t, e: e, a: a, ctx: context.Background()})
		})
	}
}

// fixture holds one subtest's engine and helpers that fail the test on error.
type fixture struct {
	t   *testing.T
	e   store.Engine
	a   store.Access // e as an Access
	ctx context.Context
	n   int
}

// team creates the teams named, each with its name as its id.
func (f *fixture) team(names ...string) {
	f.t.Helper()
	for _, n := range names {
		if _, err := f.a.CreateTeam(f.ctx, store.Team{ID: n, Name: n, Description: "team " + n, CreatedAt: T0}); err != nil {
			f.t.Fatalf("CreateTeam(%s): %v", n, err)
		}
	}
}

// at is T0 plus d.
func at(d time.Duration) time.Time { return T0.Add(d) }

// task creates a PENDING task on machine with priority prio enqueued (and
// ready) at enq; mods adjust it before creation.
func (f *fixture) task(machine string, prio int, enq time.Time, mods ...func(*store.Task)) store.Task {
	f.t.Helper()
	f.n++
	t := store.Task{
		ID:         fmt.Sprintf("task-%03d", f.n),
		TeamID:     "team-a",
		MachineID:  machine,
		Priority:   prio,
		Spec:       []byte(fmt.Sprintf(`{"n":%d}`, f.n)),
		CreatedAt:  enq,
		EnqueuedAt: enq,
		ReadyAt:    enq,
	}
	for _, m := range mods {
		m(&t)
	}
	got, created, err := f.e.CreateTask(f.ctx, t)
	if err != nil {
		f.t.Fatalf("CreateTask(%s): %v", t.ID, err)
	}
	if !created {
		f.t.Fatalf("CreateTask(%s): created = false", t.ID)
	}
	return got
}

func (f *fixture) get(id string) store.Task {
	f.t.Helper()
	t, err := f.e.GetTask(f.ctx, id)
	if err != nil {
		f.t.Fatalf("GetTask(%s): %v", id, err)
	}
	return t
}

// claim claims with r's defaults filled: owner "w1", Now T0+1h, lease 5m, Max 100.
func (f *fixture) claim(r store.ClaimRequest) []store.Task {
	f.t.Helper()
	if r.Owner == "" {
		r.Owner = "w1"
	}
	if r.Now.IsZero() {
		r.Now = at(time.Hour)
	}
	if r.LeaseUntil.IsZero() {
		r.LeaseUntil = r.Now.Add(5 * time.Minute)
	}
	if r.Max == 0 {
		r.Max = 100
	}
	ts, err := f.e.Claim(f.ctx, r)
	if err != nil {
		f.t.Fatalf("Claim(%+v): %v", r, err)
	}
	for _, t := range ts {
		if t.Status != store.Assigned || t.LeaseOwner != r.Owner {
			f.t.Fatalf("claimed task %s is %s leased by %q, want ASSIGNED by %q", t.ID, t.Status, t.LeaseOwner, r.Owner)
		}
	}
	return ts
}

// claimOne claims exactly the task id as owner at now.
func (f *fixture) claimOne(id, owner string, now time.Time) store.Task {
	f.t.Helper()
	ts := f.claim(store.ClaimRequest{Owner: owner, Now: now, Max: 1})
	if len(ts) != 1 || ts[0].ID != id {
		f.t.Fatalf("claim by %s at %v got %v, want [%s]", owner, now, ids(ts), id)
	}
	return ts[0]
}

func (f *fixture) start(id, owner string, startAt time.Time) store.Task {
	f.t.Helper()
	t, err := f.e.Start(f.ctx, id, owner, store.Attempt{StartedAt: startAt})
	if err != nil {
		f.t.Fatalf("Start(%s, %s): %v", id, owner, err)
	}
	return t
}

func (f *fixture) finish(fin store.Finish) store.Task {
	f.t.Helper()
	t, err := f.e.Finish(f.ctx, fin)
	if err != nil {
		f.t.Fatalf("Finish(%s, %s -> %s): %v", fin.ID, fin.Owner, fin.Next, err)
	}
	return t
}

func ids(ts []store.Task) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.ID
	}
	return out
}

func wantIDs(t *testing.T, what string, got []store.Task, want ...string) {
	t.Helper()
	if g, w := fmt.Sprint(ids(got)), fmt.Sprint(want); g != w {
		t.Fatalf("%s: got %s, want %s", what, g, w)
	}
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: err = %v, want %v", what, err, target)
	}
}

func intp(v int) *int { return &v }

// unchanged fails unless id's stored record equals before.
func (f *fixture) unchanged(what string, before store.Task) {
	f.t.Helper()
	if diff := cmp.Diff(before, f.get(before.ID)); diff != "" {
		f.t.Fatalf("%s changed the task (-before +after):\n%s", what, diff)
	}
}
