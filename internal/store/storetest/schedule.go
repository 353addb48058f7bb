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

// scheduleTests cover store.Schedules: schedules, fires exactly once under
// their unique key and version, the overlap policies, missed and failed
// fires, manual fires and atomicity.
var scheduleTests = []struct {
	name string
	fn   func(*testing.T, *fixture)
}{
	{"Schedules/CRUD", testScheduleCRUD},
	{"Schedules/Invalid", testScheduleInvalid},
	{"Schedules/Due", testScheduleDue},
	{"Schedules/DeepCopy", testScheduleDeepCopy},
	{"Fire/Created", testFireCreated},
	{"Fire/ExactlyOnce", testFireExactlyOnce},
	{"Fire/UniqueKey", testFireUniqueKey},
	{"Fire/Concurrent", testFireConcurrent},
	{"Fire/OverlapSkip", testFireOverlapSkip},
	{"Fire/OverlapAllow", testFireOverlapAllow},
	{"Fire/OverlapCancelPrevious", testFireOverlapCancel},
	{"Fire/MissedAndFailed", testFireMissedFailed},
	{"Fire/Manual", testFireManual},
	{"Fire/Invalid", testFireInvalid},
	{"Fire/AllOrNothing", testFireAtomic},
	{"Fire/Paused", testFirePaused},
	{"Fire/KeepFires", testFireKeep},
	{"Fire/PrunedOpenTask", testFirePrunedOpen},
}

func (f *fixture) sch() store.Schedules {
	f.t.Helper()
	s, ok := f.e.(store.Schedules)
	if !ok {
		f.t.Fatalf("%T does not implement store.Schedules", f.e)
	}
	return s
}

// schedule creates a schedule named name of team-a, next fire at next.
func (f *fixture) schedule(name string, next time.Time) store.Schedule {
	f.t.Helper()
	s, err := f.sch().CreateSchedule(f.ctx, store.Schedule{Name: name, TeamID: "team-a", Owner: "alice",
		Spec: []byte(`{"cron":"0 2 * * *"}`), NextFireAt: next, CreatedAt: T0})
	if err != nil {
		f.t.Fatalf("CreateSchedule(%s): %v", name, err)
	}
	return s
}

// fireTask is a task for a fire on machine m.
func fireTask(id, m string, at time.Time) store.Task {
	return store.Task{ID: id, TeamID: "team-a", MachineID: m, Priority: 2, Spec: []byte(`{"scheduled":true}`), CreatedAt: at, EnqueuedAt: at, ReadyAt: at}
}

// fire fires s at `at` (its NextFireAt when zero) creating tasks ids.
func (f *fixture) fire(s store.Schedule, at time.Time, overlap string, ids ...string) store.FireResult {
	f.t.Helper()
	res, err := f.sch().FireSchedule(f.ctx, f.fireReq(s, at, overlap, ids...))
	if err != nil {
		f.t.Fatalf("FireSchedule(%s at %v): %v", s.Name, at, err)
	}
	return res
}

func (f *fixture) fireReq(s store.Schedule, at time.Time, overlap string, ids ...string) store.ScheduleFire {
	if at.IsZero() {
		at = s.NextFireAt
	}
	req := store.ScheduleFire{ScheduleID: s.ID, ScheduledAt: at, Version: s.Version, FiredAt: at.Add(time.Second),
		NextFireAt: at.Add(24 * time.Hour), Outcome: store.FireCreated, Overlap: overlap}
	for _, id := range ids {
		req.Tasks = append(req.Tasks, fireTask(id, "m1", at))
	}
	if len(ids) == 0 {
		req.Outcome = store.FireMissed
	}
	return req
}

func (f *fixture) getSchedule(id string) store.Schedule {
	f.t.Helper()
	s, err := f.sch().GetSchedule(f.ctx, id)
	if err != nil {
		f.t.Fatalf("GetSchedule(%s): %v", id, err)
	}
	return s
}

func (f *fixture) fires(id string) []store.Fire {
	f.t.Helper()
	fs, err := f.sch().ListFires(f.ctx, id, 0)
	if err != nil {
		f.t.Fatalf("ListFires(%s): %v", id, err)
	}
	return fs
}

func testScheduleCRUD(t *testing.T, f *fixture) {
	sc := f.sch()
	next := at(time.Hour)
	a := f.schedule("nightly", next)
	if a.ID == "" || a.Version != 1 || !a.CreatedAt.Equal(T0) || !a.UpdatedAt.Equal(T0) || !a.NextFireAt.Equal(next) ||
		a.Last != nil || a.OpenTaskIDs != nil || a.Owner != "alice" || a.TeamID != "team-a" {
		t.Fatalf("created: %+v", a)
	}
	if diff := cmp.Diff(a, f.getSchedule(a.ID)); diff != "" {
		t.Fatalf("GetSchedule differs (-created +got):\n%s", diff)
	}
	byName, err := sc.ScheduleByName(f.ctx, "nightly")
	if err != nil || byName.ID != a.ID {
		t.Fatalf("ScheduleByName: %+v %v", byName, err)
	}
	b, err := sc.CreateSchedule(f.ctx, store.Schedule{ID: "fixed-id", Name: "backup", TeamID: "team-b", Owner: "bob"})
	if err != nil || b.ID != "fixed-id" || b.CreatedAt.IsZero() || !b.NextFireAt.IsZero() {
		t.Fatalf("second: %+v %v", b, err)
	}
	_, err = sc.CreateSchedule(f.ctx, store.Schedule{Name: "nightly", TeamID: "team-b", Owner: "bob"})
	wantErr(t, "duplicate name", err, store.ErrExists)
	_, err = sc.CreateSchedule(f.ctx, store.Schedule{ID: "fixed-id", Name: "other", TeamID: "team-b", Owner: "bob"})
	wantErr(t, "duplicate id", err, store.ErrExists)

	all, err := sc.ListSchedules(f.ctx, store.ScheduleFilter{})
	if err != nil || len(all) != 2 || all[0].Name != "backup" || all[1].Name != "nightly" {
		t.Fatalf("ListSchedules: %v %v", all, err)
	}
	teamA, err := sc.ListSchedules(f.ctx, store.ScheduleFilter{TeamIDs: []string{"team-a"}})
	if err != nil || len(teamA) != 1 || teamA[0].ID != a.ID {
		t.Fatalf("ListSchedules(team-a): %v %v", teamA, err)
	}
	none, err := sc.ListSchedules(f.ctx, store.ScheduleFilter{TeamIDs: []string{}})
	if err != nil || len(none) != 0 {
		t.Fatalf("ListSchedules(no team): %v %v", none, err)
	}

	// Update at the current version: a new version, the rest kept.
	up := a
	up.Name, up.Owner, up.Spec, up.Paused, up.NextFireAt, up.UpdatedAt = "nightly-2", "carol", []byte(`{"cron":"@daily"}`), true, time.Time{}, at(time.Minute)
	got, err := sc.UpdateSchedule(f.ctx, up, a.Version)
	if err != nil {
		t.Fatal(err)
	}
	want := a
	want.Name, want.Owner, want.Spec, want.Paused, want.NextFireAt, want.UpdatedAt, want.Version = "nightly-2", "carol", up.Spec, true, time.Time{}, at(time.Minute), 2
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("UpdateSchedule (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(got, f.getSchedule(a.ID)); diff != "" {
		t.Fatalf("stored after update (-returned +stored):\n%s", diff)
	}
	if _, err := sc.ScheduleByName(f.ctx, "nightly"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("old name still found: %v", err)
	}
	// A stale version changes nothing.
	_, err = sc.UpdateSchedule(f.ctx, up, a.Version)
	wantErr(t, "stale update", err, store.ErrScheduleChanged)
	// A name held by another schedule.
	clash := got
	clash.Name = "backup"
	_, err = sc.UpdateSchedule(f.ctx, clash, got.Version)
	wantErr(t, "rename onto another", err, store.ErrExists)
	if diff := cmp.Diff(got, f.getSchedule(a.ID)); diff != "" {
		t.Fatalf("failed updates changed the schedule:\n%s", diff)
	}
	_, err = sc.UpdateSchedule(f.ctx, store.Schedule{ID: "nope", Name: "x", TeamID: "t", Owner: "o"}, 1)
	wantErr(t, "update unknown", err, store.ErrNotFound)

	if err := sc.DeleteSchedule(f.ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	_, err = sc.GetSchedule(f.ctx, a.ID)
	wantErr(t, "get deleted", err, store.ErrNotFound)
	wantErr(t, "delete again", sc.DeleteSchedule(f.ctx, a.ID), store.ErrNotFound)
	_, err = sc.ListFires(f.ctx, a.ID, 0)
	wantErr(t, "fires of deleted", err, store.ErrNotFound)
	// The name is free again.
	f.schedule("nightly-2", next)
}

func testScheduleInvalid(t *testing.T, f *fixture) {
	sc := f.sch()
	for _, s := range []store.Schedule{
		{TeamID: "t", Owner: "o"},
		{Name: "n", Owner: "o"},
		{Name: "n", TeamID: "t"},
		{Name: "n", TeamID: "t", Owner: "o", Paused: true, NextFireAt: T0},
		{Name: "n", TeamID: "t", Owner: "o", NextFireAt: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		_, err := sc.CreateSchedule(f.ctx, s)
		wantErr(t, fmt.Sprintf("CreateSchedule(%+v)", s), err, store.ErrInvalidArgument)
	}
	if all, _ := sc.ListSchedules(f.ctx, store.ScheduleFilter{}); len(all) != 0 {
		t.Fatalf("invalid schedules were stored: %v", all)
	}
}

func testScheduleDue(t *testing.T, f *fixture) {
	sc := f.sch()
	if _, ok, err := sc.NextScheduleFire(f.ctx); err != nil || ok {
		t.Fatalf("NextScheduleFire on none: %v %v", ok, err)
	}
	late := f.schedule("late", at(3*time.Hour))
	f.schedule("early", at(time.Hour))
	f.schedule("mid", at(2*time.Hour))
	p := f.schedule("paused-one", at(30*time.Minute))
	p.Paused, p.NextFireAt = true, time.Time{}
	if _, err := sc.UpdateSchedule(f.ctx, p, p.Version); err != nil {
		t.Fatal(err)
	}
	next, ok, err := sc.NextScheduleFire(f.ctx)
	if err != nil || !ok || !next.Equal(at(time.Hour)) {
		t.Fatalf("NextScheduleFire = %v %v %v, want %v", next, ok, err, at(time.Hour))
	}
	due, err := sc.ListSchedules(f.ctx, store.ScheduleFilter{DueBy: at(2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range due {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "early,mid" {
		t.Fatalf("due by T0+2h: %v, want early,mid (by next fire; paused and later ones left out)", names)
	}
	due, _ = sc.ListSchedules(f.ctx, store.ScheduleFilter{DueBy: at(5 * time.Hour), TeamIDs: []string{"team-a"}})
	if len(due) != 3 || due[2].ID != late.ID {
		t.Fatalf("due by T0+5h: %v", due)
	}
}

func testScheduleDeepCopy(t *testing.T, f *fixture) {
	s := f.schedule("copy", at(time.Hour))
	res := f.fire(s, time.Time{}, store.OverlapAllow, "t1")
	res.Schedule.Spec[0] = 'X'
	res.Schedule.OpenTaskIDs[0] = "changed"
	res.Schedule.Last.TaskIDs[0] = "changed"
	res.Fire.TaskIDs[0] = "changed"
	got := f.getSchedule(s.ID)
	if got.Spec[0] == 'X' || got.OpenTaskIDs[0] != "t1" || got.Last.TaskIDs[0] != "t1" || f.fires(s.ID)[0].TaskIDs[0] != "t1" {
		t.Fatalf("FireSchedule's result shares memory with the store: %+v", got)
	}
	got.Spec[0] = 'Y'
	got.Last.TaskIDs[0] = "again"
	if again := f.getSchedule(s.ID); again.Spec[0] == 'Y' || again.Last.TaskIDs[0] != "t1" {
		t.Fatal("GetSchedule's result shares memory with the store")
	}
}

func testFireCreated(t *testing.T, f *fixture) {
	s := f.schedule("nightly", at(time.Hour))
	before, err := f.a.AuditHead(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := f.fireReq(s, time.Time{}, "", "t1", "t2")
	req.Audit = audit.Record{Action: "schedule.fire", Actor: "alice", Time: at(time.Hour), Team: "team-a", Details: map[string]string{"worker": "w1"}}
	ctxRec := audit.Record{Action: "ctx.record", Actor: "alice", Time: at(time.Hour), Result: audit.ResultOK}
	res, err := f.sch().FireSchedule(store.WithAudit(f.ctx, ctxRec), req)
	if err != nil {
		t.Fatal(err)
	}
	if res.Fire.Outcome != store.FireCreated || strings.Join(res.Fire.TaskIDs, ",") != "t1,t2" || !res.Fire.ScheduledAt.Equal(at(time.Hour)) ||
		!res.Fire.FiredAt.Equal(at(time.Hour+time.Second)) || res.Fire.Manual || len(res.Cancelled) != 0 {
		t.Fatalf("fire: %+v", res.Fire)
	}
	wantIDs(t, "created tasks", res.Tasks, "t1", "t2")
	for _, id := range []string{"t1", "t2"} {
		if g := f.get(id); g.Status != store.Pending || g.MachineID != "m1" || g.Priority != 2 {
			t.Fatalf("task %s: %+v", id, g)
		}
	}
	got := f.getSchedule(s.ID)
	if got.Version != 2 || !got.NextFireAt.Equal(at(25*time.Hour)) || strings.Join(got.OpenTaskIDs, ",") != "t1,t2" ||
		got.Last == nil || got.Last.Outcome != store.FireCreated || !got.Last.ScheduledAt.Equal(at(time.Hour)) {
		t.Fatalf("schedule after the fire: %+v (last %+v)", got, got.Last)
	}
	if diff := cmp.Diff(res.Schedule, got); diff != "" {
		t.Fatalf("FireResult.Schedule differs from the stored one:\n%s", diff)
	}
	fs := f.fires(s.ID)
	if len(fs) != 1 || !cmp.Equal(fs[0], res.Fire) {
		t.Fatalf("ListFires = %+v, want [%+v]", fs, res.Fire)
	}
	recs, err := f.a.ListAudit(f.ctx, audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, r := range recs {
		if r.Seq > before.Seq {
			actions = append(actions, r.Action+":"+r.EntityID)
		}
	}
	if want := "ctx.record:,schedule.fire:" + s.ID + ",task.create:t1,task.create:t2"; strings.Join(actions, ",") != want {
		t.Fatalf("audit records: %v, want %s", actions, want)
	}
	fireRec := recs[len(recs)-3]
	if fireRec.Details["outcome"] != "created" || fireRec.Details["tasks"] != "t1,t2" || fireRec.Details["worker"] != "w1" ||
		fireRec.EntityType != audit.EntitySchedule || fireRec.Team != "team-a" || fireRec.Result != audit.ResultOK {
		t.Fatalf("schedule.fire record: %+v", fireRec)
	}
	if r := recs[len(recs)-1]; r.Details["schedule"] != s.ID || r.Details["machine_id"] != "m1" || r.EntityType != audit.EntityTask {
		t.Fatalf("task.create record: %+v", r)
	}
}

func testFireExactlyOnce(t *testing.T, f *fixture) {
	s := f.schedule("once", at(time.Hour))
	f.fire(s, time.Time{}, "", "t1")
	// The same decision again (a second worker, or a retry after an
	// answer was lost): refused, nothing written.
	head, _ := f.a.AuditHead(f.ctx)
	_, err := f.sch().FireSchedule(f.ctx, f.fireReq(s, time.Time{}, "", "t1-again"))
	wantErr(t, "second fire of the same decision", err, store.ErrScheduleChanged)
	if _, err := f.e.GetTask(f.ctx, "t1-again"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused fire created its task: %v", err)
	}
	if h, _ := f.a.AuditHead(f.ctx); h != head {
		t.Fatalf("the refused fire appended audit records: %v -> %v", head, h)
	}
	if n := len(f.fires(s.ID)); n != 1 {
		t.Fatalf("%d fires recorded, want 1", n)
	}
}

// The unique key holds on its own: even at the current version, a fire
// time already recorded is refused.
func testFireUniqueKey(t *testing.T, f *fixture) {
	s := f.schedule("key", at(time.Hour))
	res := f.fire(s, time.Time{}, "", "t1")
	cur := res.Schedule
	req := f.fireReq(cur, at(time.Hour), "", "t2")
	_, err := f.sch().FireSchedule(f.ctx, req)
	wantErr(t, "fire time already recorded", err, store.ErrExists)
	if g := f.getSchedule(s.ID); g.Version != cur.Version || !g.NextFireAt.Equal(cur.NextFireAt) {
		t.Fatalf("refused fire moved the schedule: %+v", g)
	}
	if f.count() != 1 {
		t.Fatalf("%d tasks, want 1", f.count())
	}
}

// Many goroutines decide the same fire at once: exactly one records it.
func testFireConcurrent(t *testing.T, f *fixture) {
	s := f.schedule("race", at(time.Hour))
	const n = 8
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins int
		errs []error
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := f.sch().FireSchedule(f.ctx, f.fireReq(s, time.Time{}, "", fmt.Sprintf("race-%d", i)))
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				wins++
			} else if !errors.Is(err, store.ErrScheduleChanged) && !errors.Is(err, store.ErrExists) {
				errs = append(errs, err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || len(errs) > 0 {
		t.Fatalf("%d fires succeeded (want 1); unexpected errors: %v", wins, errs)
	}
	if f.count() != 1 || len(f.fires(s.ID)) != 1 {
		t.Fatalf("%d tasks and %d fires, want 1 and 1", f.count(), len(f.fires(s.ID)))
	}
}

func testFireOverlapSkip(t *testing.T, f *fixture) {
	s := f.schedule("skip", at(time.Hour))
	s = f.fire(s, time.Time{}, store.OverlapSkip, "t1").Schedule
	res := f.fire(s, time.Time{}, store.OverlapSkip, "t2")
	if res.Fire.Outcome != store.FireSkipped || len(res.Tasks) != 0 || !strings.Contains(res.Fire.Reason, "t1 (PENDING)") {
		t.Fatalf("fire while t1 is pending: %+v", res.Fire)
	}
	if _, err := f.e.GetTask(f.ctx, "t2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a skipped fire created its task: %v", err)
	}
	s = res.Schedule
	if s.Last.Outcome != store.FireSkipped || strings.Join(s.OpenTaskIDs, ",") != "t1" || !s.NextFireAt.Equal(at(49*time.Hour)) {
		t.Fatalf("schedule after a skipped fire: %+v", s)
	}
	// t1 runs and finishes: the next fire creates its task.
	f.claimOne("t1", "w1", at(50*time.Hour))
	f.start("t1", "w1", at(50*time.Hour))
	res = f.fire(s, time.Time{}, store.OverlapSkip, "t3")
	if res.Fire.Outcome != store.FireSkipped || !strings.Contains(res.Fire.Reason, "t1 (PROCESSING)") {
		t.Fatalf("fire while t1 is processing: %+v", res.Fire)
	}
	f.finish(store.Finish{ID: "t1", Owner: "w1", At: at(51 * time.Hour), Next: store.Completed, CountAttempt: true})
	res = f.fire(res.Schedule, time.Time{}, store.OverlapSkip, "t4")
	if res.Fire.Outcome != store.FireCreated || strings.Join(res.Schedule.OpenTaskIDs, ",") != "t4" {
		t.Fatalf("fire after t1 finished: %+v, open %v", res.Fire, res.Schedule.OpenTaskIDs)
	}
	// The default policy (empty) is skip.
	res = f.fire(res.Schedule, time.Time{}, "", "t5")
	if res.Fire.Outcome != store.FireSkipped {
		t.Fatalf("default overlap policy: %+v", res.Fire)
	}
}

func testFireOverlapAllow(t *testing.T, f *fixture) {
	s := f.schedule("allow", at(time.Hour))
	s = f.fire(s, time.Time{}, store.OverlapAllow, "t1").Schedule
	res := f.fire(s, time.Time{}, store.OverlapAllow, "t2")
	if res.Fire.Outcome != store.FireCreated || strings.Join(res.Schedule.OpenTaskIDs, ",") != "t1,t2" || len(res.Cancelled) != 0 {
		t.Fatalf("allow: %+v open %v", res.Fire, res.Schedule.OpenTaskIDs)
	}
	if f.get("t1").Status != store.Pending || f.get("t2").Status != store.Pending {
		t.Fatal("allow touched a task")
	}
}

func testFireOverlapCancel(t *testing.T, f *fixture) {
	s := f.schedule("cancel", at(time.Hour))
	s = f.fire(s, time.Time{}, store.OverlapAllow, "t1", "t2").Schedule
	f.claimOne("t1", "w1", at(2*time.Hour)) // t1 runs, t2 stays pending
	f.start("t1", "w1", at(2*time.Hour))
	head, _ := f.a.AuditHead(f.ctx)
	req := f.fireReq(s, time.Time{}, store.OverlapCancelPrevious, "t3")
	req.Audit = audit.Record{Action: "schedule.fire", Actor: "alice", Time: at(25 * time.Hour), Team: "team-a"}
	res, err := f.sch().FireSchedule(f.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.Fire.Outcome != store.FireCreated || strings.Join(res.Fire.CancelledIDs, ",") != "t1,t2" {
		t.Fatalf("cancel-previous: %+v", res.Fire)
	}
	wantIDs(t, "cancelled", res.Cancelled, "t1", "t2")
	if g := f.get("t1"); g.Status != store.Processing || !g.CancelRequested {
		t.Fatalf("running t1: %s cancel requested %v, want PROCESSING with its cancellation asked", g.Status, g.CancelRequested)
	}
	if g := f.get("t2"); g.Status != store.Cancelled || !g.CompletedAt.Equal(req.FiredAt) {
		t.Fatalf("pending t2: %s at %v, want CANCELLED at %v", g.Status, g.CompletedAt, req.FiredAt)
	}
	if strings.Join(res.Schedule.OpenTaskIDs, ",") != "t1,t3" {
		t.Fatalf("open tasks %v, want t1 (still stopping) and t3", res.Schedule.OpenTaskIDs)
	}
	recs, _ := f.a.ListAudit(f.ctx, audit.Filter{})
	var actions []string
	for _, r := range recs {
		if r.Seq > head.Seq {
			actions = append(actions, r.Action+":"+r.EntityID)
		}
	}
	if want := "schedule.fire:" + s.ID + ",task.create:t3,task.cancel:t1,task.cancel:t2"; strings.Join(actions, ",") != want {
		t.Fatalf("audit: %v, want %s", actions, want)
	}
}

func testFireMissedFailed(t *testing.T, f *fixture) {
	s := f.schedule("missed", at(time.Hour))
	req := f.fireReq(s, at(49*time.Hour), "")
	req.MissedFrom, req.MissedTo, req.Reason = at(time.Hour), at(49*time.Hour), "workers were away"
	req.NextFireAt = at(73 * time.Hour)
	req.Audit = audit.Record{Action: "schedule.fire", Actor: "alice", Time: at(50 * time.Hour), Team: "team-a"}
	res, err := f.sch().FireSchedule(f.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.Fire.Outcome != store.FireMissed || res.Fire.Reason != "workers were away" || !res.Fire.MissedFrom.Equal(at(time.Hour)) ||
		!res.Fire.MissedTo.Equal(at(49*time.Hour)) || len(res.Tasks) != 0 || f.count() != 0 {
		t.Fatalf("missed: %+v", res.Fire)
	}
	if !res.Schedule.NextFireAt.Equal(at(73 * time.Hour)) {
		t.Fatalf("next after missed: %v", res.Schedule.NextFireAt)
	}
	req = f.fireReq(res.Schedule, time.Time{}, "")
	req.Outcome, req.Reason = store.FireFailed, "alice lost the operator role"
	req.Audit = audit.Record{Action: "schedule.fire", Actor: "alice", Time: at(73 * time.Hour), Team: "team-a"}
	res, err = f.sch().FireSchedule(f.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.Fire.Outcome != store.FireFailed || res.Schedule.Last.Reason != "alice lost the operator role" {
		t.Fatalf("failed: %+v", res.Fire)
	}
	recs, _ := f.a.ListAudit(f.ctx, audit.Filter{})
	last := recs[len(recs)-1]
	if last.Action != "schedule.fire" || last.Result != audit.ResultError || last.Details["reason"] != "alice lost the operator role" {
		t.Fatalf("failed fire's audit record: %+v", last)
	}
	missed := recs[len(recs)-2]
	if missed.Details["outcome"] != "missed" || missed.Details["missed_from"] == "" || missed.Result != audit.ResultOK {
		t.Fatalf("missed fire's audit record: %+v", missed)
	}
}

func testFireManual(t *testing.T, f *fixture) {
	s := f.schedule("manual", at(time.Hour))
	stale := s
	s = f.fire(s, time.Time{}, store.OverlapAllow, "t1").Schedule
	// A manual fire at the same instant as the scheduled one, from a stale
	// read: its own key, any version, the schedule's next fire kept.
	req := f.fireReq(stale, at(time.Hour), store.OverlapAllow, "m1")
	req.Manual = true
	res, err := f.sch().FireSchedule(f.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Fire.Manual || res.Schedule.Version != s.Version || !res.Schedule.NextFireAt.Equal(s.NextFireAt) ||
		!res.Schedule.Last.Manual || strings.Join(res.Schedule.OpenTaskIDs, ",") != "t1,m1" {
		t.Fatalf("manual fire: %+v / %+v", res.Fire, res.Schedule)
	}
	// A second manual fire at the same instant is its own fire (manual
	// fires have no unique key).
	req.Tasks = []store.Task{fireTask("m1b", "m1", at(time.Hour))}
	if _, err = f.sch().FireSchedule(f.ctx, req); err != nil {
		t.Fatalf("a second manual fire at the same instant: %v", err)
	}
	fs := f.fires(s.ID)
	if len(fs) != 3 || fs[0].Manual || !fs[1].Manual || !fs[2].Manual || fs[1].TaskIDs[0] != "m1b" {
		t.Fatalf("fires: %+v (want the scheduled one, then the manual ones newest first, at the same time)", fs)
	}
	// A manual fire follows the overlap policy too.
	req = f.fireReq(stale, at(2*time.Hour), store.OverlapSkip, "m2")
	req.Manual = true
	if res, err = f.sch().FireSchedule(f.ctx, req); err != nil || res.Fire.Outcome != store.FireSkipped {
		t.Fatalf("manual fire with skip while t1 runs: %+v %v", res.Fire, err)
	}
}

func testFireInvalid(t *testing.T, f *fixture) {
	s := f.schedule("invalid", at(time.Hour))
	mod := func(fn func(*store.ScheduleFire)) store.ScheduleFire {
		r := f.fireReq(s, time.Time{}, "", "t1")
		fn(&r)
		return r
	}
	for name, req := range map[string]store.ScheduleFire{
		"no schedule id":      mod(func(r *store.ScheduleFire) { r.ScheduleID = "" }),
		"zero scheduled time": mod(func(r *store.ScheduleFire) { r.ScheduledAt = time.Time{} }),
		"zero fired time":     mod(func(r *store.ScheduleFire) { r.FiredAt = time.Time{} }),
		"bad outcome":         mod(func(r *store.ScheduleFire) { r.Outcome = "exploded" }),
		"skipped asked":       mod(func(r *store.ScheduleFire) { r.Outcome = store.FireSkipped }),
		"created, no tasks":   mod(func(r *store.ScheduleFire) { r.Tasks = nil }),
		"missed with tasks":   mod(func(r *store.ScheduleFire) { r.Outcome = store.FireMissed }),
		"bad overlap":         mod(func(r *store.ScheduleFire) { r.Overlap = "sometimes" }),
		"idempotency key":     mod(func(r *store.ScheduleFire) { r.Tasks[0].IdempotencyKey = "k" }),
		"bad priority":        mod(func(r *store.ScheduleFire) { r.Tasks[0].Priority = 9 }),
		"no machine":          mod(func(r *store.ScheduleFire) { r.Tasks[0].MachineID = "" }),
		"time out of range":   mod(func(r *store.ScheduleFire) { r.NextFireAt = time.Date(2500, 1, 1, 0, 0, 0, 0, time.UTC) }),
		"bad audit template":  mod(func(r *store.ScheduleFire) { r.Audit = audit.Record{Action: "schedule.fire"} }),
	} {
		_, err := f.sch().FireSchedule(f.ctx, req)
		wantErr(t, name, err, store.ErrInvalidArgument)
	}
	_, err := f.sch().FireSchedule(f.ctx, store.ScheduleFire{ScheduleID: "ghost", ScheduledAt: T0, FiredAt: T0, Outcome: store.FireMissed})
	wantErr(t, "unknown schedule", err, store.ErrNotFound)
	_, err = f.sch().ListFires(f.ctx, "ghost", 0)
	wantErr(t, "fires of unknown", err, store.ErrNotFound)
	_, err = f.sch().ListFires(f.ctx, s.ID, -1)
	wantErr(t, "negative limit", err, store.ErrInvalidArgument)
	if f.count() != 0 || len(f.fires(s.ID)) != 0 || f.getSchedule(s.ID).Version != 1 {
		t.Fatal("an invalid fire wrote something")
	}
}

// A fire that fails half way (its second task's id is taken) writes
// nothing: no task, no fire, no cancellation, no new version.
func testFireAtomic(t *testing.T, f *fixture) {
	s := f.schedule("atomic", at(time.Hour))
	s = f.fire(s, time.Time{}, store.OverlapAllow, "t1").Schedule
	taken := f.task("m1", 3, T0)
	head, _ := f.a.AuditHead(f.ctx)
	req := f.fireReq(s, time.Time{}, store.OverlapCancelPrevious, "t2", taken.ID)
	req.Audit = audit.Record{Action: "schedule.fire", Actor: "alice", Time: at(25 * time.Hour), Team: "team-a"}
	_, err := f.sch().FireSchedule(f.ctx, req)
	wantErr(t, "fire with a taken task id", err, store.ErrExists)
	if !strings.Contains(err.Error(), "task 1") {
		t.Errorf("the error does not name the task's index: %v", err)
	}
	if _, err := f.e.GetTask(f.ctx, "t2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("task t2 of the failed fire exists: %v", err)
	}
	if g := f.get("t1"); g.Status != store.Pending {
		t.Fatalf("the failed fire cancelled t1: %s", g.Status)
	}
	if diff := cmp.Diff(s, f.getSchedule(s.ID)); diff != "" {
		t.Fatalf("the failed fire changed the schedule:\n%s", diff)
	}
	if n := len(f.fires(s.ID)); n != 1 {
		t.Fatalf("%d fires, want 1", n)
	}
	if h, _ := f.a.AuditHead(f.ctx); h != head {
		t.Fatal("the failed fire appended audit records")
	}
	// Decided again, it fires once.
	req = f.fireReq(s, time.Time{}, store.OverlapCancelPrevious, "t2")
	if _, err := f.sch().FireSchedule(f.ctx, req); err != nil {
		t.Fatal(err)
	}
}

func testFirePaused(t *testing.T, f *fixture) {
	s := f.schedule("paused", at(time.Hour))
	req := f.fireReq(s, time.Time{}, "", "t1")
	s.Paused, s.NextFireAt = true, time.Time{}
	p, err := f.sch().UpdateSchedule(f.ctx, s, s.Version)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.sch().FireSchedule(f.ctx, req)
	wantErr(t, "fire decided before the pause", err, store.ErrScheduleChanged)
	req.Version = p.Version
	_, err = f.sch().FireSchedule(f.ctx, req)
	wantErr(t, "scheduled fire of a paused schedule", err, store.ErrScheduleChanged)
	req.Manual = true
	if _, err := f.sch().FireSchedule(f.ctx, req); err != nil {
		t.Fatalf("a manual fire of a paused schedule: %v", err)
	}
}

func testFireKeep(t *testing.T, f *fixture) {
	s := f.schedule("keep", at(time.Hour))
	for i := range store.KeepFires + 5 {
		req := f.fireReq(s, at(time.Duration(i+1)*time.Hour), "")
		req.NextFireAt = at(time.Duration(i+2) * time.Hour)
		res, err := f.sch().FireSchedule(f.ctx, req)
		if err != nil {
			t.Fatalf("fire %d: %v", i, err)
		}
		s = res.Schedule
	}
	fs := f.fires(s.ID)
	if len(fs) != store.KeepFires || !fs[0].ScheduledAt.Equal(at(time.Duration(store.KeepFires+5)*time.Hour)) ||
		!fs[len(fs)-1].ScheduledAt.Equal(at(6*time.Hour)) {
		t.Fatalf("%d fires kept, newest %v, oldest %v", len(fs), fs[0].ScheduledAt, fs[len(fs)-1].ScheduledAt)
	}
	if fs, _ := f.sch().ListFires(f.ctx, s.ID, 3); len(fs) != 3 {
		t.Fatalf("limit 3: %d fires", len(fs))
	}
}

// An open task that was pruned counts as finished.
func testFirePrunedOpen(t *testing.T, f *fixture) {
	s := f.schedule("pruned", at(time.Hour))
	s = f.fire(s, time.Time{}, store.OverlapSkip, "t1").Schedule
	if _, err := f.e.Cancel(f.ctx, "t1", at(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n, err := f.e.DeleteTasks(f.ctx, []string{"t1"}); err != nil || n != 1 {
		t.Fatalf("DeleteTasks: %d %v", n, err)
	}
	res := f.fire(s, time.Time{}, store.OverlapSkip, "t2")
	if res.Fire.Outcome != store.FireCreated || strings.Join(res.Schedule.OpenTaskIDs, ",") != "t2" {
		t.Fatalf("fire after the open task was pruned: %+v, open %v", res.Fire, res.Schedule.OpenTaskIDs)
	}
}

// ConcurrentFires has goroutines on every engine (engines open on one
// store, as separate processes would have) fire one schedule hour by hour,
// each deciding from its own read, until n fires are recorded: every fire
// time is recorded exactly once, with exactly one task, and the losers of
// each race get ErrScheduleChanged or ErrExists.
func ConcurrentFires(t *testing.T, engines []store.Engine, perEngine, n int) {
	t.Helper()
	sc := func(e store.Engine) store.Schedules { return e.(store.Schedules) }
	ctx := t.Context()
	s, err := sc(engines[0]).CreateSchedule(ctx, store.Schedule{Name: "concurrent", TeamID: "team-a", Owner: "alice", NextFireAt: at(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	end := at(time.Duration(n+1) * time.Hour)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		wins = map[time.Time]int{}
	)
	for ei, e := range engines {
		for g := range perEngine {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					cur, err := sc(e).GetSchedule(ctx, s.ID)
					if err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
						return
					}
					if !cur.NextFireAt.Before(end) {
						return
					}
					id := fmt.Sprintf("e%d-g%d-%d", ei, g, i)
					req := store.ScheduleFire{ScheduleID: s.ID, ScheduledAt: cur.NextFireAt, Version: cur.Version,
						FiredAt: cur.NextFireAt, NextFireAt: cur.NextFireAt.Add(time.Hour), Outcome: store.FireCreated,
						Overlap: store.OverlapAllow, Tasks: []store.Task{fireTask(id, "m1", cur.NextFireAt)}}
					_, err = sc(e).FireSchedule(ctx, req)
					mu.Lock()
					switch {
					case err == nil:
						wins[cur.NextFireAt]++
					case errors.Is(err, store.ErrScheduleChanged), errors.Is(err, store.ErrExists):
					default:
						errs = append(errs, err)
						mu.Unlock()
						return
					}
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("unexpected errors: %v", errs)
	}
	for i := 1; i <= n; i++ {
		if w := wins[at(time.Duration(i)*time.Hour)]; w != 1 {
			t.Errorf("fire at T0+%dh succeeded %d times, want once", i, w)
		}
	}
	fs, err := sc(engines[0]).ListFires(ctx, s.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := engines[0].ListTasks(ctx, store.TaskFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != min(n, store.KeepFires) || len(ts) != n {
		t.Fatalf("%d fires and %d tasks recorded, want %d and %d", len(fs), len(ts), min(n, store.KeepFires), n)
	}
}
