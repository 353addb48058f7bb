package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
)

// identityTests are the subtests of identity (ids, names resolved on read)
// and of guards (store.WithGuard).
var identityTests = []struct {
	name string
	fn   func(*testing.T, *fixture)
}{
	{"Identity/NamesFollowIDs", testNamesFollowIDs},
	{"Identity/IdempotencyHitAudit", testIdempotencyHitAudit},
	{"Guard/Role", testGuardRole},
	{"Guard/MachineInTeam", testGuardMachineInTeam},
	{"Guard/TeamLive", testGuardTeamLive},
	{"Guard/Invalid", testGuardInvalid},
	{"Guard/EveryMutation", testGuardEveryMutation},
	{"Guard/CreateVsMove", testGuardCreateVsMove},
}

// testNamesFollowIDs: tasks, machines, members and depth rows reference
// teams and machines by id and show their current names; a rename changes
// what they show and nothing else.
func testNamesFollowIDs(t *testing.T, f *fixture) {
	alpha, err := f.a.CreateTeam(f.ctx, store.Team{Name: "alpha"})
	if err != nil {
		t.Fatal(err)
	}
	m := f.machine(store.Machine{Name: "web", TeamID: alpha.ID})
	if m.Team != "alpha" {
		t.Fatalf("machine's team name: %+v", m)
	}
	tk := f.task(m.ID, 3, at(0), func(t *store.Task) { t.TeamID = alpha.ID })
	if tk.Team != "alpha" || tk.Machine != "web" || tk.TeamID != alpha.ID || tk.MachineID != m.ID {
		t.Fatalf("created task's names: %+v", tk)
	}
	bt := batchTask("b1", m.ID, 3, at(time.Second))
	bt.TeamID = alpha.ID
	batch := f.batch(bt)
	if batch[0].Machine != "web" {
		t.Fatalf("batch task's machine name: %+v", batch[0])
	}
	if _, err := f.a.PutMember(f.ctx, store.Member{TeamID: alpha.ID, User: "bob", Role: "viewer"}); err != nil {
		t.Fatal(err)
	}
	if err := f.a.RenameTeam(f.ctx, alpha.ID, "beta"); err != nil {
		t.Fatal(err)
	}
	if err := f.e.UpdateMachine(f.ctx, store.Machine{ID: m.ID, Name: "www", TeamID: alpha.ID}); err != nil {
		t.Fatal(err)
	}
	check := func(what string, got store.Task) {
		t.Helper()
		if got.Team != "beta" || got.Machine != "www" || got.TeamID != alpha.ID || got.MachineID != m.ID {
			t.Fatalf("%s after renames: team %q (%s), machine %q (%s)", what, got.Team, got.TeamID, got.Machine, got.MachineID)
		}
	}
	check("GetTask", f.get(tk.ID))
	check("ListTasks", mustList(t, f, store.TaskFilter{MachineID: m.ID})[0])
	claimed := f.claim(store.ClaimRequest{Max: 1})
	check("Claim", claimed[0])
	check("Start", f.start(tk.ID, "w1", at(time.Minute)))
	check("Finish", f.finish(store.Finish{ID: tk.ID, Owner: "w1", At: at(2 * time.Minute), Next: store.Completed, CountAttempt: true}))
	if ms, _ := f.e.ListMachines(f.ctx, store.MachineFilter{TeamID: alpha.ID}); len(ms) != 1 || ms[0].Team != "beta" {
		t.Fatalf("ListMachines after the rename: %+v", ms)
	}
	if ms, _ := f.a.ListMembers(f.ctx, alpha.ID); len(ms) != 1 || ms[0].Team != "beta" {
		t.Fatalf("ListMembers after the rename: %+v", ms)
	}
	rows, _ := f.e.Depth(f.ctx)
	for _, r := range rows {
		if r.Team != "beta" || r.Machine != "www" {
			t.Fatalf("Depth after the renames: %+v", r)
		}
	}
	// A removed machine still names its tasks.
	if _, err := f.e.Cancel(f.ctx, "b1", at(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := f.e.DeleteMachine(f.ctx, m.ID, time.Time{}); err != nil {
		t.Fatal(err)
	}
	check("GetTask after the machine was removed", f.get(tk.ID))
}

// testIdempotencyHitAudit: a create that finds its key taken appends none
// of the records that describe the task it did not create (EntityID = its
// given id), and the others as usual.
func testIdempotencyHitAudit(t *testing.T, f *fixture) {
	first := f.task("m", 3, at(0), func(t *store.Task) { t.IdempotencyKey = "k" })
	about := func(id, action string) audit.Record {
		return audit.Record{Time: at(0), Actor: "op", Action: action, EntityType: audit.EntityTask, EntityID: id, Result: audit.ResultOK}
	}
	ctx := store.WithAudit(f.ctx, about("ghost-1", "task.create"), about("other", "other.event"))
	got, created, err := f.e.CreateTask(ctx, store.Task{ID: "ghost-1", TeamID: "team-a", MachineID: "m", Priority: 3, IdempotencyKey: "k"})
	if err != nil || created || got.ID != first.ID {
		t.Fatalf("CreateTask hit: %+v created=%v %v", got, created, err)
	}
	ctx = store.WithAudit(f.ctx, about("ghost-2", "task.create"), about("b-new", "task.create"), about("batch", "batch.event"))
	out, err := f.e.CreateTasks(ctx, []store.Task{
		{ID: "ghost-2", TeamID: "team-a", MachineID: "m", Priority: 3, IdempotencyKey: "k"},
		{ID: "b-new", TeamID: "team-a", MachineID: "m", Priority: 3, IdempotencyKey: "k2"},
	})
	if err != nil || out[0].ID != first.ID || out[1].ID != "b-new" {
		t.Fatalf("CreateTasks with a hit: %v, %v", ids(out), err)
	}
	var got2 []string
	for _, r := range VerifyAudit(t, f.a) {
		got2 = append(got2, r.EntityID+":"+r.Action)
	}
	if want := "[other:other.event b-new:task.create batch:batch.event]"; fmt.Sprint(got2) != want {
		t.Fatalf("audit after idempotent hits: %v, want %s", got2, want)
	}
	for _, id := range []string{"ghost-1", "ghost-2"} {
		if _, err := f.e.GetTask(f.ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("task %s exists: %v", id, err)
		}
	}
}

// guardFails runs call with ctx carrying cond and an audit record, and checks
// that it fails with a *store.GuardError naming cond, and appends nothing.
func (f *fixture) guardFails(what string, cond store.Condition, call func(ctx context.Context) error) {
	f.t.Helper()
	head, _ := f.a.AuditHead(f.ctx)
	ctx := store.WithGuard(store.WithAudit(f.ctx, rec(0, "tester", "should.not.appear")), cond)
	err := call(ctx)
	var ge *store.GuardError
	if !errors.Is(err, store.ErrGuard) || !errors.As(err, &ge) || ge.Condition.Kind != cond.Kind {
		f.t.Fatalf("%s: err = %v, want a *store.GuardError (%s)", what, err, cond.Kind)
	}
	if after, _ := f.a.AuditHead(f.ctx); after != head {
		f.t.Fatalf("%s: the failed guard appended audit records", what)
	}
}

// guardHolds runs call with cond and checks that it succeeds.
func (f *fixture) guardHolds(what string, cond store.Condition, call func(ctx context.Context) error) {
	f.t.Helper()
	if err := call(store.WithGuard(f.ctx, cond)); err != nil {
		f.t.Fatalf("%s: %v", what, err)
	}
}

func testGuardRole(t *testing.T, f *fixture) {
	f.team("prod", "dev")
	for _, m := range []store.Member{{TeamID: "prod", User: "op", Role: "operator"}, {TeamID: "dev", User: "view", Role: "viewer"}} {
		if _, err := f.a.PutMember(f.ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.a.PutStoreRole(f.ctx, store.StoreRole{User: "boss", Role: "owner"}); err != nil {
		t.Fatal(err)
	}
	n := 0
	create := func(ctx context.Context) error {
		n++
		_, err := f.a.CreateTeam(ctx, store.Team{Name: fmt.Sprint("t", n)})
		return err
	}
	writers := []string{"admin", "operator"}
	owner := []string{"owner"}
	f.guardHolds("operator in prod", store.HasRole("op", "prod", writers, owner), create)
	f.guardHolds("owner anywhere", store.HasRole("boss", "prod", writers, owner), create)
	f.guardHolds("owner store-wide", store.HasRole("boss", "", nil, owner), create)
	f.guardFails("operator in another team", store.HasRole("op", "dev", writers, owner), create)
	f.guardFails("viewer", store.HasRole("view", "dev", writers, owner), create)
	f.guardFails("no role at all", store.HasRole("nobody", "prod", writers, owner), create)
	f.guardFails("team role for a store-wide action", store.HasRole("op", "", nil, owner), create)
	f.guardFails("auditor is not owner", store.HasRole("boss", "prod", nil, []string{"auditor"}), create)
	// Roles change: the guard sees the store as it is at the write.
	if _, err := f.a.PutMember(f.ctx, store.Member{TeamID: "prod", User: "op", Role: "viewer"}); err != nil {
		t.Fatal(err)
	}
	f.guardFails("demoted operator", store.HasRole("op", "prod", writers, owner), create)
	if _, err := f.a.PutMember(f.ctx, store.Member{TeamID: "prod", User: "op", Role: "admin"}); err != nil {
		t.Fatal(err)
	}
	f.guardHolds("promoted again", store.HasRole("op", "prod", writers, owner), create)
	if err := f.a.DeleteTeam(f.ctx, "prod", time.Time{}); err != nil {
		t.Fatal(err)
	}
	f.guardFails("member of a deleted team", store.HasRole("op", "prod", writers, owner), create)
	// Exactly the creates whose guard held made a team.
	teams, _ := f.a.ListTeams(f.ctx, store.TeamFilter{})
	var names []string
	for _, tm := range teams {
		names = append(names, tm.Name)
	}
	if got := fmt.Sprint(names); got != "[default dev t1 t10 t2 t3]" {
		t.Fatalf("teams after guarded creates: %s", got)
	}
}

func testGuardMachineInTeam(t *testing.T, f *fixture) {
	f.team("alpha", "beta")
	f.machine(store.Machine{ID: "m", Name: "m", TeamID: "alpha"})
	create := func(id string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			_, _, err := f.e.CreateTask(ctx, store.Task{ID: id, TeamID: "alpha", MachineID: "m", Priority: 3})
			return err
		}
	}
	batch := func(id string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			_, err := f.e.CreateTasks(ctx, []store.Task{{ID: id, TeamID: "alpha", MachineID: "m", Priority: 3}})
			return err
		}
	}
	f.guardHolds("machine in its team", store.MachineInTeam("m", "alpha"), create("ok1"))
	f.guardHolds("machine in its team (batch)", store.MachineInTeam("m", "alpha"), batch("ok2"))
	f.guardFails("machine of another team", store.MachineInTeam("m", "beta"), create("bad1"))
	f.guardFails("unknown machine", store.MachineInTeam("nope", "alpha"), create("bad2"))
	for _, id := range []string{"ok1", "ok2"} {
		if _, err := f.e.Cancel(f.ctx, id, at(0)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.a.MoveMachine(f.ctx, "m", "beta"); err != nil {
		t.Fatal(err)
	}
	f.guardFails("moved machine", store.MachineInTeam("m", "alpha"), create("bad3"))
	f.guardFails("moved machine (batch)", store.MachineInTeam("m", "alpha"), batch("bad4"))
	if err := f.e.DeleteMachine(f.ctx, "m", time.Time{}); err != nil {
		t.Fatal(err)
	}
	f.guardFails("removed machine", store.MachineInTeam("m", "beta"), create("bad5"))
	for i := 1; i <= 5; i++ {
		if _, err := f.e.GetTask(f.ctx, fmt.Sprint("bad", i)); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a task was created under a failed guard: bad%d: %v", i, err)
		}
	}
}

func testGuardTeamLive(t *testing.T, f *fixture) {
	f.team("gone")
	member := func(ctx context.Context) error {
		_, err := f.a.PutMember(ctx, store.Member{TeamID: store.DefaultTeam, User: "u", Role: "viewer"})
		return err
	}
	f.guardHolds("live team", store.TeamLive("gone"), member)
	if err := f.a.DeleteTeam(f.ctx, "gone", time.Time{}); err != nil {
		t.Fatal(err)
	}
	f.guardFails("deleted team", store.TeamLive("gone"), member)
	f.guardFails("unknown team", store.TeamLive("never"), member)
}

func testGuardInvalid(t *testing.T, f *fixture) {
	for name, c := range map[string]store.Condition{
		"unknown kind":            {Kind: "weather", TeamID: "x"},
		"role without a user":     store.HasRole("", "x", []string{"admin"}, nil),
		"team roles without team": store.HasRole("u", "", []string{"admin"}, nil),
		"machine without id":      store.MachineInTeam("", "x"),
		"machine without team":    store.MachineInTeam("m", ""),
		"team-live without team":  store.TeamLive(""),
	} {
		_, err := f.a.CreateTeam(store.WithGuard(f.ctx, c), store.Team{Name: "x"})
		wantErr(t, name, err, store.ErrInvalidArgument)
		_, err = f.a.AppendAudit(store.WithGuard(f.ctx, c), rec(0, "u", "x"))
		wantErr(t, name+" (AppendAudit)", err, store.ErrInvalidArgument)
	}
	if _, err := f.a.TeamByName(f.ctx, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("created under an invalid guard: %v", err)
	}
}

// testGuardEveryMutation: every mutating method evaluates the guard and,
// when it fails, changes nothing and appends nothing.
func testGuardEveryMutation(t *testing.T, f *fixture) {
	never := store.TeamLive("no-such-team")
	for i, m := range f.mutations() {
		head, _ := f.a.AuditHead(f.ctx)
		ctx := store.WithGuard(store.WithAudit(f.ctx, rec(time.Duration(i), "tester", "blocked."+m.name)), never)
		if err := m.call(ctx); !errors.Is(err, store.ErrGuard) {
			t.Fatalf("%s under a failing guard: %v, want ErrGuard", m.name, err)
		}
		if after, _ := f.a.AuditHead(f.ctx); after != head {
			t.Fatalf("%s under a failing guard appended records", m.name)
		}
		if err := m.call(store.WithAudit(f.ctx, rec(time.Duration(i), "tester", "step."+m.name))); err != nil {
			t.Fatalf("%s (unguarded, after the blocked call): %v", m.name, err)
		}
	}
	_, err := f.a.AppendAudit(store.WithGuard(f.ctx, never), rec(0, "x", "y"))
	wantErr(t, "AppendAudit under a failing guard", err, store.ErrGuard)
	VerifyAudit(t, f.a)
}

// testGuardCreateVsMove races CreateTask (guarded by the machine's team)
// against MoveMachine.
func testGuardCreateVsMove(t *testing.T, f *fixture) {
	RaceCreateVsMove(t, f.e, f.a, 100)
}

// RaceCreateVsMove races, rounds times, a CreateTask guarded by
// MachineInTeam(machine, alpha) against MoveMachine(machine, beta) on
// engines sharing one store, and checks the invariant the guard protects:
// a task is created only while its machine is in its team, so either the
// task exists and the move failed (ErrMachineHasTasks), or the move
// happened and the create failed with ErrGuard; never a task of alpha on
// beta's machine.
func RaceCreateVsMove(t *testing.T, e store.Engine, a store.Access, rounds int) {
	t.Helper()
	ctx := context.Background()
	for _, team := range []string{"race-alpha", "race-beta"} {
		if _, err := a.CreateTeam(ctx, store.Team{ID: team, Name: team}); err != nil {
			t.Fatal(err)
		}
	}
	created, moved := 0, 0
	for i := range rounds {
		m, err := e.CreateMachine(ctx, store.Machine{Name: fmt.Sprint("race-", i), TeamID: "race-alpha"})
		if err != nil {
			t.Fatal(err)
		}
		var (
			wg           sync.WaitGroup
			cerr, merr   error
			start        = make(chan struct{})
			taskID       = fmt.Sprint("race-task-", i)
			guardedCtx   = store.WithGuard(ctx, store.MachineInTeam(m.ID, "race-alpha"))
			wantMachine  = m.ID
			createdTask  store.Task
			createdFirst bool
		)
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			createdTask, createdFirst, cerr = e.CreateTask(guardedCtx, store.Task{ID: taskID, TeamID: "race-alpha", MachineID: wantMachine, Priority: 3})
		}()
		go func() {
			defer wg.Done()
			<-start
			merr = a.MoveMachine(ctx, m.ID, "race-beta")
		}()
		close(start)
		wg.Wait()
		switch {
		case cerr == nil && createdFirst && errors.Is(merr, store.ErrMachineHasTasks):
			created++
			if createdTask.ID != taskID {
				t.Fatalf("round %d: created %+v", i, createdTask)
			}
		case errors.Is(cerr, store.ErrGuard) && merr == nil:
			moved++
			if _, err := e.GetTask(ctx, taskID); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("round %d: the guard failed but the task exists: %v", i, err)
			}
		default:
			t.Fatalf("round %d: create: %v; move: %v", i, cerr, merr)
		}
		got, err := e.GetMachine(ctx, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		if tk, err := e.GetTask(ctx, taskID); err == nil && tk.TeamID != got.TeamID {
			t.Fatalf("round %d: ESCAPE: task of %s on machine %s of %s", i, tk.TeamID, m.Name, got.TeamID)
		}
	}
	t.Logf("%d rounds: the create won %d times, the move %d times", rounds, created, moved)
}
