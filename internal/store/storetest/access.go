package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
)

// accessTests are the store.Access subtests (teams, members, roles, audit)
// and the team rules of store.Engine.
var accessTests = []struct {
	name string
	fn   func(*testing.T, *fixture)
}{
	{"Teams/Default", testTeamDefault},
	{"Teams/CRUD", testTeamCRUD},
	{"Teams/Rename", testTeamRename},
	{"Teams/Delete", testTeamDelete},
	{"Teams/MachineNeedsTeam", testMachineNeedsTeam},
	{"Teams/MachineFilterTeams", testMachineFilterTeams},
	{"Teams/TaskFilterTeams", testTaskFilterTeams},
	{"Teams/MoveMachine", testMoveMachine},
	{"Members", testMembers},
	{"StoreRoles", testStoreRoles},
	{"InitOwner", testInitOwner},
	{"InitOwner/Race", testInitOwnerRace},
	{"Audit/Empty", testAuditEmpty},
	{"Audit/Append", testAuditAppend},
	{"Audit/Invalid", testAuditInvalid},
	{"Audit/EveryMutation", testAuditEveryMutation},
	{"Audit/FailedMutationAppendsNothing", testAuditFailedMutations},
	{"Audit/Filters", testAuditFilters},
	{"Audit/FilterMatchesReference", testAuditFilterReference},
	{"Audit/Paging", testAuditPaging},
	{"Audit/MixedOperationsVerify", testAuditMixed},
	{"Audit/ConcurrentAppends", testAuditConcurrent},
	{"Access/Close", testAccessClose},
}

// rec is an audit record by actor about action at T0+d.
func rec(d time.Duration, actor, action string) audit.Record {
	return audit.Record{Time: at(d), Actor: actor, Action: action, EntityType: audit.EntityTask,
		EntityID: "e-" + action, Result: audit.ResultOK}
}

// AllAudit returns every audit record of a, paging with AfterSeq.
func AllAudit(tb testing.TB, a store.Access) []audit.Record {
	tb.Helper()
	all, err := listAll(a, 0)
	if err != nil {
		tb.Fatal(err)
	}
	return all
}

// listAll returns the records of a after seq after, paging with AfterSeq.
func listAll(a store.Access, after int64) ([]audit.Record, error) {
	var out []audit.Record
	f := audit.Filter{AfterSeq: after, Limit: audit.MaxLimit}
	for {
		page, err := a.ListAudit(context.Background(), f)
		if err != nil {
			return nil, fmt.Errorf("ListAudit(%+v): %w", f, err)
		}
		out = append(out, page...)
		if len(page) < f.Limit {
			return out, nil
		}
		f.AfterSeq = page[len(page)-1].Seq
	}
}

// CheckAudit reads a's stored trail, its base and its head and verifies
// them with audit.NewVerifier(base, audit.WithHead(head)), and the keyring
// the engine seals with (see ringOf): the stored
// records continue the chain from the base (store.Access.AuditBase; zero
// until TrimAudit). It reads the head after the records and catches up with
// records appended meanwhile (see store.Access.AuditHead), and starts over
// when a trim moved the base while it listed, so it holds while others
// append and trim.
func CheckAudit(a store.Access) ([]audit.Record, error) {
	for {
		base, err := a.AuditBase(context.Background())
		if err != nil {
			return nil, fmt.Errorf("AuditBase: %w", err)
		}
		all, head, err := listToHead(a, base)
		if err != nil {
			return all, err
		}
		again, err := a.AuditBase(context.Background())
		if err != nil {
			return nil, fmt.Errorf("AuditBase: %w", err)
		}
		if again != base {
			continue // trimmed while listing
		}
		v := audit.NewVerifier(base, audit.WithHead(head), audit.WithKeyring(ringOf(a)))
		for _, r := range all {
			if err = v.Add(r); err != nil {
				break
			}
		}
		if err == nil {
			err = v.Finish()
		}
		if err != nil {
			return all, fmt.Errorf("audit trail (%d records from base %v, head %v) does not verify: %w", len(all), base, head, err)
		}
		return all, nil
	}
}

// listToHead lists the records after base and reads the head, catching up
// with records appended meanwhile.
func listToHead(a store.Access, base audit.Head) ([]audit.Record, audit.Head, error) {
	all, err := listAll(a, base.Seq)
	if err != nil {
		return nil, audit.Head{}, err
	}
	var head audit.Head
	for {
		if head, err = a.AuditHead(context.Background()); err != nil {
			return nil, audit.Head{}, fmt.Errorf("AuditHead: %w", err)
		}
		last := base.Seq
		if len(all) > 0 {
			last = all[len(all)-1].Seq
		}
		if head.Seq <= last {
			break
		}
		more, err := listAll(a, last)
		if err != nil {
			return nil, audit.Head{}, err
		}
		if len(more) == 0 {
			break
		}
		all = append(all, more...)
	}
	return all, head, nil
}

// VerifyAudit is CheckAudit failing tb on error.
func VerifyAudit(tb testing.TB, a store.Access) []audit.Record {
	tb.Helper()
	all, err := CheckAudit(a)
	if err != nil {
		tb.Fatal(err)
	}
	return all
}

func actions(rs []audit.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Action
	}
	return out
}

func testTeamDefault(t *testing.T, f *fixture) {
	teams, err := f.a.ListTeams(f.ctx, store.TeamFilter{})
	if err != nil || len(teams) != 1 || teams[0].Name != store.DefaultTeam || teams[0].ID != store.DefaultTeam || teams[0].CreatedAt.IsZero() {
		t.Fatalf("a new store's teams: %+v, %v; want only %q", teams, err, store.DefaultTeam)
	}
	if d, err := f.a.GetTeam(f.ctx, store.DefaultTeam); err != nil || d.Name != store.DefaultTeam {
		t.Fatalf("GetTeam(default): %+v, %v", d, err)
	}
	if d, err := f.a.TeamByName(f.ctx, store.DefaultTeam); err != nil || d.ID != store.DefaultTeam {
		t.Fatalf("TeamByName(default): %+v, %v", d, err)
	}
	_, err = f.a.CreateTeam(f.ctx, store.Team{Name: store.DefaultTeam})
	wantErr(t, "CreateTeam(default)", err, store.ErrExists)
	wantErr(t, "DeleteTeam(default)", f.a.DeleteTeam(f.ctx, store.DefaultTeam, time.Time{}), store.ErrInvalidArgument)
	wantErr(t, "RenameTeam(default)", f.a.RenameTeam(f.ctx, store.DefaultTeam, "x"), store.ErrInvalidArgument)
	if _, err := f.a.TeamByName(f.ctx, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the failed rename created a team: %v", err)
	}
	// A machine and a task with no team join the default team.
	m := f.machine(store.Machine{Name: "m"})
	tk, _, err := f.e.CreateTask(f.ctx, store.Task{MachineID: m.ID, Priority: 3, CreatedAt: at(0)})
	if err != nil || tk.TeamID != store.DefaultTeam || tk.Team != store.DefaultTeam || tk.Machine != "m" || f.get(tk.ID).TeamID != store.DefaultTeam {
		t.Fatalf("task without a team: %+v, %v", tk, err)
	}
}

func testTeamCRUD(t *testing.T, f *fixture) {
	prod := store.Team{ID: "prod-id", Name: "prod", Description: "production", CreatedAt: at(time.Second)}
	if got, err := f.a.CreateTeam(f.ctx, prod); err != nil || got != prod {
		t.Fatalf("CreateTeam: %+v, %v", got, err)
	}
	dev, err := f.a.CreateTeam(f.ctx, store.Team{Name: "dev"})
	if err != nil || dev.ID == "" || dev.ID == "dev" || dev.CreatedAt.IsZero() {
		t.Fatalf("CreateTeam without an id: %+v, %v (want a new id and CreatedAt)", dev, err)
	}
	_, err = f.a.CreateTeam(f.ctx, store.Team{Name: "prod"})
	wantErr(t, "CreateTeam duplicate name", err, store.ErrExists)
	_, err = f.a.CreateTeam(f.ctx, store.Team{ID: "prod-id", Name: "other"})
	wantErr(t, "CreateTeam duplicate id", err, store.ErrExists)
	_, err = f.a.CreateTeam(f.ctx, store.Team{})
	wantErr(t, "CreateTeam empty", err, store.ErrInvalidArgument)
	got, err := f.a.GetTeam(f.ctx, "prod-id")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(prod, got); diff != "" {
		t.Fatalf("GetTeam (-want +got):\n%s", diff)
	}
	if got.CreatedAt.Location() != time.UTC {
		t.Fatalf("CreatedAt not UTC: %v", got.CreatedAt)
	}
	if byName, err := f.a.TeamByName(f.ctx, "prod"); err != nil || byName != prod {
		t.Fatalf("TeamByName(prod) = %+v, %v", byName, err)
	}
	if again, err := f.a.GetTeam(f.ctx, dev.ID); err != nil || again != dev {
		t.Fatalf("GetTeam(%s) = %+v, %v; want %+v", dev.ID, again, err, dev)
	}
	_, err = f.a.GetTeam(f.ctx, "nope")
	wantErr(t, "GetTeam missing", err, store.ErrNotFound)
	_, err = f.a.GetTeam(f.ctx, "prod")
	wantErr(t, "GetTeam by name", err, store.ErrNotFound)
	_, err = f.a.TeamByName(f.ctx, "prod-id")
	wantErr(t, "TeamByName by id", err, store.ErrNotFound)
	teams, _ := f.a.ListTeams(f.ctx, store.TeamFilter{})
	var names []string
	for _, tm := range teams {
		names = append(names, tm.Name)
	}
	if fmt.Sprint(names) != "[default dev prod]" {
		t.Fatalf("ListTeams = %v", names)
	}
}

func testTeamRename(t *testing.T, f *fixture) {
	f.team("prod", "dev")
	f.machine(store.Machine{ID: "web", Name: "web", TeamID: "prod"})
	f.machine(store.Machine{ID: "box", Name: "box", TeamID: "dev"})
	team := func(tm string) func(*store.Task) { return func(t *store.Task) { t.TeamID = tm } }
	f.task("web", 3, at(0), named("p1"), team("prod"))
	f.task("web", 3, at(1), named("p2"), team("prod"))
	f.task("box", 3, at(2), named("d1"), team("dev"))
	if _, err := f.e.Cancel(f.ctx, "p2", at(time.Minute)); err != nil { // a finished task follows too
		t.Fatal(err)
	}
	for _, m := range []store.Member{{TeamID: "prod", User: "alice", Role: "admin"}, {TeamID: "dev", User: "alice", Role: "viewer"}} {
		if _, err := f.a.PutMember(f.ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := f.a.GetTeam(f.ctx, "prod")

	wantErr(t, "rename missing", f.a.RenameTeam(f.ctx, "nope", "x"), store.ErrNotFound)
	wantErr(t, "rename onto dev", f.a.RenameTeam(f.ctx, "prod", "dev"), store.ErrExists)
	wantErr(t, "rename onto itself", f.a.RenameTeam(f.ctx, "prod", "prod"), store.ErrExists)
	wantErr(t, "rename onto default", f.a.RenameTeam(f.ctx, "prod", store.DefaultTeam), store.ErrExists)
	wantErr(t, "rename to empty", f.a.RenameTeam(f.ctx, "prod", ""), store.ErrInvalidArgument)

	ctx := store.WithAudit(f.ctx, rec(0, "root", "team.rename"))
	if err := f.a.RenameTeam(ctx, "prod", "production"); err != nil {
		t.Fatalf("RenameTeam: %v", err)
	}
	_, err := f.a.TeamByName(f.ctx, "prod")
	wantErr(t, "old name after rename", err, store.ErrNotFound)
	after, err := f.a.TeamByName(f.ctx, "production")
	if err != nil || after.ID != "prod" || after.Description != before.Description || !after.CreatedAt.Equal(before.CreatedAt) {
		t.Fatalf("renamed team: %+v, %v (before %+v)", after, err, before)
	}
	// Everything stays with the id and shows the new name.
	if m, _ := f.e.GetMachine(f.ctx, "web"); m.TeamID != "prod" || m.Team != "production" {
		t.Fatalf("machine team after rename: %q (%q)", m.TeamID, m.Team)
	}
	if m, _ := f.e.GetMachine(f.ctx, "box"); m.TeamID != "dev" || m.Team != "dev" {
		t.Fatalf("other machine's team changed: %q", m.Team)
	}
	for id, want := range map[string]string{"p1": "production", "p2": "production", "d1": "dev"} {
		if got := f.get(id); got.Team != want {
			t.Fatalf("task %s team %q (%s), want %q", id, got.Team, got.TeamID, want)
		}
	}
	roles, _ := f.a.MemberRoles(f.ctx, "alice")
	if diff := cmp.Diff(map[string]string{"prod": "admin", "dev": "viewer"}, roles); diff != "" {
		t.Fatalf("member roles after rename (-want +got):\n%s", diff)
	}
	if ms, _ := f.a.ListMembers(f.ctx, "prod"); len(ms) != 1 || ms[0].Team != "production" || ms[0].TeamID != "prod" {
		t.Fatalf("members after rename: %+v", ms)
	}
	wantIDs(t, "tasks of the renamed team", mustList(t, f, store.TaskFilter{TeamID: "prod"}), "p1", "p2")
	rows, _ := f.e.Depth(f.ctx)
	for _, r := range rows {
		if want := map[string]string{"prod": "production", "dev": "dev"}[r.TeamID]; r.Team != want || r.Machine != r.MachineID {
			t.Fatalf("Depth row %+v: want team name %q and machine name %q", r, want, r.MachineID)
		}
	}
	if got := actions(VerifyAudit(t, f.a)); fmt.Sprint(got) != "[team.rename]" {
		t.Fatalf("audit after rename: %v", got)
	}
	// The old name is free again, for a new team with a new id.
	fresh, err := f.a.CreateTeam(f.ctx, store.Team{Name: "prod"})
	if err != nil || fresh.ID == "prod" {
		t.Fatalf("a new team of the old name: %+v, %v", fresh, err)
	}
	if ms, _ := f.a.ListMembers(f.ctx, fresh.ID); len(ms) != 0 {
		t.Fatalf("the new team of the old name has members: %+v", ms)
	}
}

func mustList(t *testing.T, f *fixture, fl store.TaskFilter) []store.Task {
	t.Helper()
	ts, err := f.e.ListTasks(f.ctx, fl)
	if err != nil {
		t.Fatalf("ListTasks(%+v): %v", fl, err)
	}
	return ts
}

func testTeamDelete(t *testing.T, f *fixture) {
	f.team("prod", "dev")
	wantErr(t, "delete missing", f.a.DeleteTeam(f.ctx, "nope", time.Time{}), store.ErrNotFound)
	wantErr(t, "delete empty id", f.a.DeleteTeam(f.ctx, "", time.Time{}), store.ErrInvalidArgument)
	f.machine(store.Machine{ID: "web", Name: "web", TeamID: "prod"})
	if _, err := f.a.PutMember(f.ctx, store.Member{TeamID: "prod", User: "bob", Role: "operator"}); err != nil {
		t.Fatal(err)
	}
	err := f.a.DeleteTeam(f.ctx, "prod", time.Time{})
	wantErr(t, "delete with a machine", err, store.ErrTeamNotEmpty)
	if !strings.Contains(err.Error(), "prod") || !strings.Contains(err.Error(), "1 machine") || !strings.Contains(err.Error(), "0 unfinished") {
		t.Fatalf("error should name the team and the counts: %v", err)
	}
	// Tasks count by their own team, whatever their machine.
	f.task("elsewhere", 3, at(0), named("t1"), func(t *store.Task) { t.TeamID = "prod" })
	f.task("elsewhere", 3, at(1), named("t2"), func(t *store.Task) { t.TeamID = "prod" })
	f.claimOne("t1", "w1", at(time.Hour))
	err = f.a.DeleteTeam(f.ctx, "prod", time.Time{})
	wantErr(t, "delete with tasks", err, store.ErrTeamNotEmpty)
	if !strings.Contains(err.Error(), "2 unfinished") {
		t.Fatalf("error should count the unfinished tasks: %v", err)
	}
	if err := f.a.MoveMachine(f.ctx, "web", "dev"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "delete with tasks only", f.a.DeleteTeam(f.ctx, "prod", time.Time{}), store.ErrTeamNotEmpty)
	if _, err := f.e.Cancel(f.ctx, "t2", at(time.Hour)); err != nil {
		t.Fatal(err)
	}
	f.finish(store.Finish{ID: "t1", Owner: "w1", At: at(2 * time.Hour), Next: store.Failed, CountAttempt: true})
	if ms, _ := f.a.ListMembers(f.ctx, "prod"); len(ms) != 1 {
		t.Fatalf("the refused deletes removed members: %+v", ms)
	}

	ctx := store.WithAudit(f.ctx, rec(0, "root", "team.delete"))
	if err := f.a.DeleteTeam(ctx, "prod", at(3*time.Hour)); err != nil {
		t.Fatalf("DeleteTeam with only finished tasks: %v", err)
	}
	// A deleted team keeps its record by id, leaves the lists and frees
	// its name.
	gone, err := f.a.GetTeam(f.ctx, "prod")
	if err != nil || gone.Name != "prod" || !gone.DeletedAt.Equal(at(3*time.Hour)) {
		t.Fatalf("GetTeam after delete: %+v, %v", gone, err)
	}
	_, err = f.a.TeamByName(f.ctx, "prod")
	wantErr(t, "TeamByName after delete", err, store.ErrNotFound)
	if live, _ := f.a.ListTeams(f.ctx, store.TeamFilter{}); len(live) != 2 {
		t.Fatalf("ListTeams after delete: %+v", live)
	}
	if all, _ := f.a.ListTeams(f.ctx, store.TeamFilter{IncludeDeleted: true}); len(all) != 3 {
		t.Fatalf("ListTeams(IncludeDeleted) after delete: %+v", all)
	}
	wantErr(t, "delete twice", f.a.DeleteTeam(f.ctx, "prod", time.Time{}), store.ErrNotFound)
	wantErr(t, "rename a deleted team", f.a.RenameTeam(f.ctx, "prod", "zombie"), store.ErrNotFound)
	_, err = f.a.PutMember(f.ctx, store.Member{TeamID: "prod", User: "eve", Role: "admin"})
	wantErr(t, "member of a deleted team", err, store.ErrNotFound)
	if ms, _ := f.a.ListMembers(f.ctx, ""); len(ms) != 0 {
		t.Fatalf("members of the deleted team remain: %+v", ms)
	}
	if roles, _ := f.a.MemberRoles(f.ctx, "bob"); len(roles) != 0 {
		t.Fatalf("bob's roles after delete: %v", roles)
	}
	// Finished tasks stay, under the team (id and name) they ran with.
	if got := f.get("t1"); got.TeamID != "prod" || got.Team != "prod" || got.Status != store.Failed {
		t.Fatalf("finished task after its team was deleted: %+v", got)
	}
	_, err = f.e.CreateMachine(f.ctx, store.Machine{Name: "n", TeamID: "prod"})
	wantErr(t, "machine into the deleted team", err, store.ErrNotFound)
	if err := f.a.MoveMachine(f.ctx, "web", "prod"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("move into the deleted team: %v", err)
	}
	if got := actions(VerifyAudit(t, f.a)); fmt.Sprint(got) != "[team.delete]" {
		t.Fatalf("audit: %v", got)
	}
	// A new team of the same name gets a new id and starts empty.
	fresh, err := f.a.CreateTeam(f.ctx, store.Team{Name: "prod"})
	if err != nil || fresh.ID == "prod" {
		t.Fatalf("recreate prod: %+v, %v", fresh, err)
	}
	if ms, _ := f.a.ListMembers(f.ctx, fresh.ID); len(ms) != 0 {
		t.Fatalf("recreated team inherited members: %+v", ms)
	}
	wantIDs(t, "tasks of the new prod", mustList(t, f, store.TaskFilter{TeamID: fresh.ID}))
	wantIDs(t, "tasks of the old prod (by id)", mustList(t, f, store.TaskFilter{TeamID: "prod"}), "t1", "t2")
	if got, err := f.a.TeamByName(f.ctx, "prod"); err != nil || got.ID != fresh.ID {
		t.Fatalf("TeamByName(prod) after recreating: %+v, %v", got, err)
	}
}

func testMachineNeedsTeam(t *testing.T, f *fixture) {
	_, err := f.e.CreateMachine(f.ctx, store.Machine{Name: "web", TeamID: "prod"})
	wantErr(t, "CreateMachine in a missing team", err, store.ErrNotFound)
	if !strings.Contains(err.Error(), "prod") {
		t.Fatalf("error should name the team: %v", err)
	}
	if _, err := f.e.MachineByName(f.ctx, "web"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the machine was stored: %v", err)
	}
	f.team("prod", "dev")
	m := f.machine(store.Machine{ID: "web", Name: "web", TeamID: "prod", Host: "h", Port: 22})
	// UpdateMachine: the team must exist, and a change of team needs no
	// unfinished tasks (as MoveMachine).
	m.TeamID = "nope"
	wantErr(t, "UpdateMachine into a missing team", f.e.UpdateMachine(f.ctx, m), store.ErrNotFound)
	f.task("web", 3, at(0), named("x"), func(t *store.Task) { t.TeamID = "prod" })
	m.TeamID = "dev"
	wantErr(t, "UpdateMachine team with a pending task", f.e.UpdateMachine(f.ctx, m), store.ErrMachineHasTasks)
	m.TeamID, m.Host = "prod", "h2"
	if err := f.e.UpdateMachine(f.ctx, m); err != nil {
		t.Fatalf("UpdateMachine keeping the team: %v", err)
	}
	if _, err := f.e.Cancel(f.ctx, "x", at(time.Hour)); err != nil {
		t.Fatal(err)
	}
	m.TeamID = "dev"
	if err := f.e.UpdateMachine(f.ctx, m); err != nil {
		t.Fatalf("UpdateMachine team once the tasks finished: %v", err)
	}
	if got, _ := f.e.GetMachine(f.ctx, "web"); got.TeamID != "dev" || got.Team != "dev" || got.Host != "h2" {
		t.Fatalf("machine: %+v", got)
	}
	// Tasks are not checked against teams (like machines) unless a guard
	// asks (see Guard/*).
	if _, _, err := f.e.CreateTask(f.ctx, store.Task{MachineID: "web", TeamID: "ghost", Priority: 3}); err != nil {
		t.Fatalf("CreateTask in an unknown team: %v", err)
	}
}

func testMachineFilterTeams(t *testing.T, f *fixture) {
	f.team("a", "b", "c")
	for _, m := range []store.Machine{{Name: "a1", TeamID: "a"}, {Name: "a2", TeamID: "a"}, {Name: "b1", TeamID: "b"},
		{Name: "c1", TeamID: "c"}, {Name: "d1"}, {Name: "gone", TeamID: "a"}} {
		m := f.machine(m)
		if m.Name == "gone" {
			if err := f.e.DeleteMachine(f.ctx, m.ID, time.Time{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		f    store.MachineFilter
		want string
	}{
		{store.MachineFilter{}, "[a1 a2 b1 c1 d1]"},
		{store.MachineFilter{TeamIDs: []string{}}, "[]"},
		{store.MachineFilter{TeamIDs: []string{"a", "c"}}, "[a1 a2 c1]"},
		{store.MachineFilter{TeamIDs: []string{"default"}}, "[d1]"},
		{store.MachineFilter{TeamIDs: []string{"nope"}}, "[]"},
		{store.MachineFilter{TeamID: "a", TeamIDs: []string{"a", "b"}}, "[a1 a2]"},
		{store.MachineFilter{TeamID: "c", TeamIDs: []string{"a", "b"}}, "[]"},
		{store.MachineFilter{TeamID: "b"}, "[b1]"},
	} {
		ms, err := f.e.ListMachines(f.ctx, tc.f)
		if err != nil {
			t.Fatal(err)
		}
		names := []string{}
		for _, m := range ms {
			names = append(names, m.Name)
		}
		if got := fmt.Sprint(names); got != tc.want {
			t.Errorf("ListMachines(%+v) = %s, want %s", tc.f, got, tc.want)
		}
	}
}

func testTaskFilterTeams(t *testing.T, f *fixture) {
	team := func(tm string) func(*store.Task) { return func(t *store.Task) { t.TeamID = tm } }
	f.task("m", 3, at(0), named("a1"), team("a"))
	f.task("m", 1, at(1), named("b1"), team("b"))
	f.task("m", 3, at(2), named("c1"), team("c"))
	f.task("m", 3, at(3), named("a2"), team("a"))
	f.claim(store.ClaimRequest{Max: 1}) // b1
	list := func(fl store.TaskFilter) []store.Task { return mustList(t, f, fl) }
	wantIDs(t, "nil teams", list(store.TaskFilter{}), "a1", "b1", "c1", "a2")
	wantIDs(t, "empty teams", list(store.TaskFilter{TeamIDs: []string{}}))
	wantIDs(t, "teams a, b", list(store.TaskFilter{TeamIDs: []string{"a", "b"}}), "a1", "b1", "a2")
	wantIDs(t, "teams a, b, pending", list(store.TaskFilter{TeamIDs: []string{"a", "b"}, Statuses: []store.Status{store.Pending}}), "a1", "a2")
	wantIDs(t, "team c within a, b", list(store.TaskFilter{TeamID: "c", TeamIDs: []string{"a", "b"}}))
	wantIDs(t, "teams a, c limit 2", list(store.TaskFilter{TeamIDs: []string{"c", "a"}, Limit: 2}), "a1", "c1")
	wantIDs(t, "teams b, priority 1", list(store.TaskFilter{TeamIDs: []string{"b"}, Priority: 1}), "b1")
}

func testMoveMachine(t *testing.T, f *fixture) {
	f.team("prod", "dev")
	f.machine(store.Machine{ID: "web", Name: "web", TeamID: "dev", CreatedAt: at(0)})
	wantErr(t, "move missing machine", f.a.MoveMachine(f.ctx, "nope", "prod"), store.ErrNotFound)
	wantErr(t, "move to missing team", f.a.MoveMachine(f.ctx, "web", "nope"), store.ErrNotFound)
	wantErr(t, "move to empty team", f.a.MoveMachine(f.ctx, "web", ""), store.ErrInvalidArgument)
	f.task("web", 3, at(0), named("x"), func(t *store.Task) { t.TeamID = "dev" })
	f.claimOne("x", "w1", at(time.Hour))
	ctx := store.WithAudit(f.ctx, rec(0, "root", "machine.move.denied"))
	err := f.a.MoveMachine(ctx, "web", "prod")
	wantErr(t, "move with an assigned task", err, store.ErrMachineHasTasks)
	if !strings.Contains(err.Error(), "x") {
		t.Fatalf("error should name the task: %v", err)
	}
	// Moving to its own team changes nothing and is allowed.
	if err := f.a.MoveMachine(f.ctx, "web", "dev"); err != nil {
		t.Fatalf("move to its own team: %v", err)
	}
	f.finish(store.Finish{ID: "x", Owner: "w1", At: at(2 * time.Hour), Next: store.Completed, CountAttempt: true})
	before, _ := f.e.GetMachine(f.ctx, "web")
	if err := f.a.MoveMachine(store.WithAudit(f.ctx, rec(1, "root", "machine.move")), "web", "prod"); err != nil {
		t.Fatalf("MoveMachine: %v", err)
	}
	after, _ := f.e.GetMachine(f.ctx, "web")
	if after.TeamID != "prod" || after.Team != "prod" || !after.CreatedAt.Equal(before.CreatedAt) || after.UpdatedAt.Equal(before.UpdatedAt) ||
		after.Host != before.Host {
		t.Fatalf("moved machine %+v (before %+v)", after, before)
	}
	if got := f.get("x"); got.TeamID != "dev" {
		t.Fatalf("a finished task followed its machine: team %q", got.TeamID)
	}
	if got := actions(VerifyAudit(t, f.a)); fmt.Sprint(got) != "[machine.move]" {
		t.Fatalf("audit: %v", got)
	}
	// A removed machine cannot be moved.
	if err := f.e.DeleteMachine(f.ctx, "web", time.Time{}); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "move a removed machine", f.a.MoveMachine(f.ctx, "web", "dev"), store.ErrNotFound)
}

func testMembers(t *testing.T, f *fixture) {
	f.team("prod", "dev")
	created, err := f.a.PutMember(f.ctx, store.Member{TeamID: "prod", User: "bob", Role: "viewer", AddedAt: at(time.Second)})
	if err != nil || !created {
		t.Fatalf("PutMember: %v, %v", created, err)
	}
	created, err = f.a.PutMember(f.ctx, store.Member{TeamID: "prod", User: "bob", Role: "admin", AddedAt: at(time.Hour)})
	if err != nil || created {
		t.Fatalf("PutMember changing the role: created %v, %v", created, err)
	}
	for _, m := range []store.Member{{TeamID: "prod", User: "alice", Role: "operator"}, {TeamID: "dev", User: "bob", Role: "operator", AddedAt: at(0)}} {
		if _, err := f.a.PutMember(f.ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	_, err = f.a.PutMember(f.ctx, store.Member{TeamID: "nope", User: "bob", Role: "viewer"})
	wantErr(t, "PutMember missing team", err, store.ErrNotFound)
	for _, m := range []store.Member{{TeamID: "prod", User: "bob", Role: "owner"}, {TeamID: "prod", User: "bob", Role: "root"},
		{TeamID: "prod", User: "", Role: "viewer"}, {TeamID: "", User: "bob", Role: "viewer"}} {
		_, err = f.a.PutMember(f.ctx, m)
		wantErr(t, fmt.Sprintf("PutMember(%+v)", m), err, store.ErrInvalidArgument)
	}

	prod, err := f.a.ListMembers(f.ctx, "prod")
	if err != nil {
		t.Fatal(err)
	}
	if len(prod) != 2 || prod[0].User != "alice" || prod[1].User != "bob" || prod[1].Role != "admin" ||
		!prod[1].AddedAt.Equal(at(time.Second)) || prod[0].AddedAt.IsZero() {
		t.Fatalf("ListMembers(prod) = %+v", prod)
	}
	all, _ := f.a.ListMembers(f.ctx, "")
	var got []string
	for _, m := range all {
		got = append(got, m.TeamID+"/"+m.Team+"/"+m.User+"/"+m.Role)
	}
	if fmt.Sprint(got) != "[dev/dev/bob/operator prod/prod/alice/operator prod/prod/bob/admin]" {
		t.Fatalf("ListMembers(\"\") = %v", got)
	}
	roles, err := f.a.MemberRoles(f.ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"prod": "admin", "dev": "operator"}, roles); diff != "" {
		t.Fatalf("MemberRoles(bob) (-want +got):\n%s", diff)
	}
	if roles, err := f.a.MemberRoles(f.ctx, "nobody"); err != nil || roles == nil || len(roles) != 0 {
		t.Fatalf("MemberRoles(nobody) = %#v, %v; want an empty map", roles, err)
	}
	if err := f.a.DeleteMember(f.ctx, "prod", "bob"); err != nil {
		t.Fatalf("DeleteMember: %v", err)
	}
	wantErr(t, "DeleteMember again", f.a.DeleteMember(f.ctx, "prod", "bob"), store.ErrNotFound)
	wantErr(t, "DeleteMember missing team", f.a.DeleteMember(f.ctx, "nope", "bob"), store.ErrNotFound)
	roles, _ = f.a.MemberRoles(f.ctx, "bob")
	if diff := cmp.Diff(map[string]string{"dev": "operator"}, roles); diff != "" {
		t.Fatalf("MemberRoles(bob) after delete (-want +got):\n%s", diff)
	}
	if ms, _ := f.a.ListMembers(f.ctx, "nope"); len(ms) != 0 {
		t.Fatalf("ListMembers(missing team) = %+v", ms)
	}
}

func testStoreRoles(t *testing.T, f *fixture) {
	if rs, err := f.a.StoreRoles(f.ctx, ""); err != nil || len(rs) != 0 {
		t.Fatalf("StoreRoles on a new store: %+v, %v", rs, err)
	}
	for _, r := range []store.StoreRole{{User: "carol", Role: "owner", AddedAt: at(0)}, {User: "alice", Role: "auditor"},
		{User: "alice", Role: "owner"}, {User: "carol", Role: "owner", AddedAt: at(time.Hour)}} {
		if err := f.a.PutStoreRole(f.ctx, r); err != nil {
			t.Fatalf("PutStoreRole(%+v): %v", r, err)
		}
	}
	for _, r := range []store.StoreRole{{User: "x", Role: "admin"}, {User: "x", Role: ""}, {User: "", Role: "owner"}} {
		wantErr(t, fmt.Sprintf("PutStoreRole(%+v)", r), f.a.PutStoreRole(f.ctx, r), store.ErrInvalidArgument)
	}
	rs, _ := f.a.StoreRoles(f.ctx, "")
	var got []string
	for _, r := range rs {
		got = append(got, r.User+"/"+r.Role)
	}
	if fmt.Sprint(got) != "[alice/auditor alice/owner carol/owner]" {
		t.Fatalf("StoreRoles = %v", got)
	}
	carol, _ := f.a.StoreRoles(f.ctx, "carol")
	if len(carol) != 1 || !carol[0].AddedAt.Equal(at(0)) {
		t.Fatalf("granting again should keep the first grant: %+v", carol)
	}
	wantErr(t, "DeleteStoreRole missing", f.a.DeleteStoreRole(f.ctx, "carol", "auditor"), store.ErrNotFound)
	if err := f.a.DeleteStoreRole(f.ctx, "carol", "owner"); err != nil {
		t.Fatalf("DeleteStoreRole of one of two owners: %v", err)
	}
	err := f.a.DeleteStoreRole(f.ctx, "alice", "owner")
	wantErr(t, "DeleteStoreRole of the last owner", err, store.ErrLastOwner)
	if err := f.a.DeleteStoreRole(f.ctx, "alice", "auditor"); err != nil {
		t.Fatalf("DeleteStoreRole auditor: %v", err)
	}
	rs, _ = f.a.StoreRoles(f.ctx, "")
	if len(rs) != 1 || rs[0].User != "alice" || rs[0].Role != "owner" {
		t.Fatalf("StoreRoles = %+v", rs)
	}
	if none, _ := f.a.StoreRoles(f.ctx, "carol"); len(none) != 0 {
		t.Fatalf("StoreRoles(carol) = %+v", none)
	}
}

func testInitOwner(t *testing.T, f *fixture) {
	_, err := f.a.InitOwner(f.ctx, "", at(0))
	wantErr(t, "InitOwner without a user", err, store.ErrInvalidArgument)
	// An auditor is not an owner.
	if err := f.a.PutStoreRole(f.ctx, store.StoreRole{User: "aud", Role: "auditor"}); err != nil {
		t.Fatal(err)
	}
	made, err := f.a.InitOwner(store.WithAudit(f.ctx, rec(0, "alice", "store.init")), "alice", at(time.Second))
	if err != nil || !made {
		t.Fatalf("first InitOwner: %v, %v", made, err)
	}
	for _, u := range []string{"bob", "alice"} {
		made, err = f.a.InitOwner(store.WithAudit(f.ctx, rec(time.Minute, u, "store.init")), u, at(time.Minute))
		if err != nil || made {
			t.Fatalf("InitOwner(%s) with an owner: %v, %v", u, made, err)
		}
	}
	rs, _ := f.a.StoreRoles(f.ctx, "alice")
	if len(rs) != 1 || rs[0].Role != "owner" || !rs[0].AddedAt.Equal(at(time.Second)) {
		t.Fatalf("alice's roles: %+v", rs)
	}
	if bob, _ := f.a.StoreRoles(f.ctx, "bob"); len(bob) != 0 {
		t.Fatalf("bob's roles: %+v", bob)
	}
	all := VerifyAudit(t, f.a)
	if len(all) != 1 || all[0].Actor != "alice" {
		t.Fatalf("only the InitOwner that made the owner is audited: %+v", all)
	}
}

// RaceInitOwner runs InitOwner for n users at once, spread over engines
// (which share one store), and checks that exactly one became the owner and
// that only its audit record was appended.
func RaceInitOwner(t *testing.T, engines []store.Access, n int) {
	t.Helper()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []string
	)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprintf("user-%d", i)
			ctx := store.WithAudit(context.Background(), rec(time.Duration(i), user, "store.init"))
			<-start
			made, err := engines[i%len(engines)].InitOwner(ctx, user, at(0))
			if err != nil {
				t.Errorf("InitOwner(%s): %v", user, err)
				return
			}
			if made {
				mu.Lock()
				winners = append(winners, user)
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(winners) != 1 {
		t.Fatalf("InitOwner winners: %v, want exactly one", winners)
	}
	rs, err := engines[0].StoreRoles(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || rs[0].User != winners[0] || rs[0].Role != "owner" {
		t.Fatalf("store roles after the race: %+v (winner %s)", rs, winners[0])
	}
	all := VerifyAudit(t, engines[0])
	if len(all) != 1 || all[0].Actor != winners[0] {
		t.Fatalf("audit after the race: %+v", all)
	}
}

func testInitOwnerRace(t *testing.T, f *fixture) {
	RaceInitOwner(t, []store.Access{f.a}, 8)
}

func testAuditEmpty(t *testing.T, f *fixture) {
	head, err := f.a.AuditHead(f.ctx)
	if err != nil || head.Seq != 0 || head.LinkHash() != audit.GenesisHash {
		t.Fatalf("AuditHead of a new store: %+v, %v", head, err)
	}
	rs, err := f.a.ListAudit(f.ctx, audit.Filter{})
	if err != nil || len(rs) != 0 {
		t.Fatalf("ListAudit of a new store: %+v, %v", rs, err)
	}
	if out, err := f.a.AppendAudit(f.ctx); err != nil || len(out) != 0 {
		t.Fatalf("AppendAudit(): %+v, %v", out, err)
	}
	VerifyAudit(t, f.a)
}

func testAuditAppend(t *testing.T, f *fixture) {
	loc := time.FixedZone("UTC-3", -3*3600)
	details := map[string]string{"machine": "web", "attempt": "2"}
	in := []audit.Record{
		{Time: at(123456789).In(loc), Actor: "alice", Action: "task.create", EntityType: audit.EntityTask, EntityID: "t1",
			Team: "prod", Result: audit.ResultOK, Details: details, Seq: 99, PrevHash: "forged", Hash: "forged"},
		{Time: at(time.Second), Actor: "bob", Action: "vault.read", EntityType: audit.EntityVault, EntityID: "db/password",
			Team: "prod", Result: audit.ResultDenied, Details: map[string]string{}},
	}
	out, err := f.a.AppendAudit(f.ctx, in...)
	if err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
	details["machine"] = "changed" // the caller's map is not kept
	want := audit.Chain(audit.Head{}, in[0])
	want.Details = map[string]string{"machine": "web", "attempt": "2"}
	want.Hash = audit.ComputeHash(want)
	want2 := audit.Chain(audit.HeadOf(want), in[1])
	want2.Details = nil
	if diff := cmp.Diff([]audit.Record{want, want2}, out); diff != "" {
		t.Fatalf("AppendAudit result (-want +got):\n%s", diff)
	}
	if out[0].Seq != 1 || out[0].PrevHash != audit.GenesisHash || out[1].PrevHash != out[0].Hash ||
		out[0].Time.Location() != time.UTC || !out[0].Time.Equal(at(123456789).Truncate(time.Millisecond)) {
		t.Fatalf("chain fields: %+v", out)
	}
	out[0].Details["attempt"] = "mutated" // nor the returned one
	all := VerifyAudit(t, f.a)
	if diff := cmp.Diff([]audit.Record{want, want2}, all); diff != "" {
		t.Fatalf("ListAudit (-want +got):\n%s", diff)
	}
	all[0].Details["attempt"] = "mutated"
	if again := AllAudit(t, f.a); again[0].Details["attempt"] != "2" {
		t.Fatal("ListAudit result aliases the store")
	}
	head, _ := f.a.AuditHead(f.ctx)
	if head != audit.HeadOf(want2) {
		t.Fatalf("AuditHead = %+v, want %+v", head, audit.HeadOf(want2))
	}
	more, err := f.a.AppendAudit(f.ctx, rec(time.Hour, "carol", "task.cancel"))
	if err != nil || len(more) != 1 || more[0].Seq != 3 || more[0].PrevHash != want2.Hash {
		t.Fatalf("third record: %+v, %v", more, err)
	}
	VerifyAudit(t, f.a)
}

func testAuditInvalid(t *testing.T, f *fixture) {
	good := rec(0, "alice", "team.create")
	for name, bad := range map[string]audit.Record{
		"no actor":    {Time: at(0), Action: "x", Result: audit.ResultOK},
		"no action":   {Time: at(0), Actor: "a", Result: audit.ResultOK},
		"no time":     {Actor: "a", Action: "x", Result: audit.ResultOK},
		"bad result":  {Time: at(0), Actor: "a", Action: "x", Result: "maybe"},
		"bad utf8":    {Time: at(0), Actor: "a\xff", Action: "x", Result: audit.ResultOK},
		"year 10000":  {Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), Actor: "a", Action: "x", Result: audit.ResultOK},
		"bad details": {Time: at(0), Actor: "a", Action: "x", Result: audit.ResultOK, Details: map[string]string{"k": "\xfe"}},
	} {
		_, err := f.a.AppendAudit(f.ctx, good, bad)
		wantErr(t, "AppendAudit "+name, err, store.ErrInvalidArgument)
		_, err = f.a.CreateTeam(store.WithAudit(f.ctx, good, bad), store.Team{ID: "t", Name: "t"})
		wantErr(t, "CreateTeam with an invalid audit record: "+name, err, store.ErrInvalidArgument)
		_, _, err = f.e.CreateTask(store.WithAudit(f.ctx, bad), store.Task{ID: "x", MachineID: "m", Priority: 3})
		wantErr(t, "CreateTask with an invalid audit record: "+name, err, store.ErrInvalidArgument)
	}
	if _, err := f.a.GetTeam(f.ctx, "t"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the team was created without its audit record: %v", err)
	}
	if _, err := f.e.GetTask(f.ctx, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the task was created without its audit record: %v", err)
	}
	if all := AllAudit(t, f.a); len(all) != 0 {
		t.Fatalf("records appended: %+v", all)
	}
	_, err := f.a.ListAudit(f.ctx, audit.Filter{Limit: audit.MaxLimit + 1})
	wantErr(t, "ListAudit bad limit", err, store.ErrInvalidArgument)
	if !errors.Is(err, audit.ErrInvalidFilter) {
		t.Fatalf("ListAudit bad limit: %v should wrap audit.ErrInvalidFilter", err)
	}
	_, err = f.a.ListAudit(f.ctx, audit.Filter{Start: at(time.Hour), End: at(0)})
	wantErr(t, "ListAudit end before start", err, store.ErrInvalidArgument)
}

// mutation is one call of a mutating Engine or Access method.
type mutation struct {
	name string
	call func(ctx context.Context) error
}

// mutations returns, in order, one successful call of every mutating
// method, each leaving the store ready for the next.
func (f *fixture) mutations() []mutation {
	e, a := f.e, f.a
	now := at(time.Hour)
	task := func(id, key string) store.Task {
		return store.Task{ID: id, IdempotencyKey: key, TeamID: "prod", MachineID: "web", Priority: 3, CreatedAt: at(0)}
	}
	return []mutation{
		{"CreateTeam", func(ctx context.Context) error {
			_, err := a.CreateTeam(ctx, store.Team{ID: "prod", Name: "prod"})
			return err
		}},
		{"CreateMachine", func(ctx context.Context) error {
			_, err := e.CreateMachine(ctx, store.Machine{ID: "web", Name: "web", TeamID: "prod", Host: "h", Port: 22})
			return err
		}},
		{"UpdateMachine", func(ctx context.Context) error {
			return e.UpdateMachine(ctx, store.Machine{ID: "web", Name: "web", TeamID: "prod", Host: "h2", Port: 22})
		}},
		{"CreateTask", func(ctx context.Context) error { _, _, err := e.CreateTask(ctx, task("t1", "k1")); return err }},
		{"CreateTask/existing", func(ctx context.Context) error {
			_, created, err := e.CreateTask(ctx, task("t1-again", "k1"))
			if err == nil && created {
				err = errors.New("created = true for an existing idempotency key")
			}
			return err
		}},
		{"CreateTasks/existing", func(ctx context.Context) error {
			ts, err := e.CreateTasks(ctx, []store.Task{task("t1-b", "k1"), task("t1-c", "k1")})
			if err == nil && (len(ts) != 2 || ts[0].ID != "t1" || ts[1].ID != "t1") {
				err = fmt.Errorf("CreateTasks with an existing key returned %v", ids(ts))
			}
			return err
		}},
		{"SetMachineHealth", func(ctx context.Context) error {
			return e.SetMachineHealth(ctx, "web", []byte(`{"cpu":1}`), now)
		}},
		{"Claim", func(ctx context.Context) error {
			_, err := e.Claim(ctx, store.ClaimRequest{Owner: "w1", Now: now, LeaseUntil: now.Add(time.Minute), Max: 1})
			return err
		}},
		{"Start", func(ctx context.Context) error {
			_, err := e.Start(ctx, "t1", "w1", store.Attempt{StartedAt: now})
			return err
		}},
		{"Heartbeat", func(ctx context.Context) error {
			_, err := e.Heartbeat(ctx, "w1", []string{"t1"}, now.Add(2*time.Minute))
			return err
		}},
		{"Finish", func(ctx context.Context) error {
			_, err := e.Finish(ctx, store.Finish{ID: "t1", Owner: "w1", At: now, Next: store.Pending, CountAttempt: true})
			return err
		}},
		{"Rescue", func(ctx context.Context) error {
			_, err := e.Rescue(ctx, store.RescueRequest{Now: now})
			return err
		}},
		{"Cancel", func(ctx context.Context) error { _, err := e.Cancel(ctx, "t1", now); return err }},
		{"DeleteTasks", func(ctx context.Context) error {
			n, err := e.DeleteTasks(ctx, []string{"t1", "t1", "nope"})
			if err == nil && n != 1 {
				err = fmt.Errorf("DeleteTasks deleted %d tasks, want 1", n)
			}
			return err
		}},
		{"PutMember", func(ctx context.Context) error {
			_, err := a.PutMember(ctx, store.Member{TeamID: "prod", User: "bob", Role: "viewer"})
			return err
		}},
		{"RenameTeam", func(ctx context.Context) error { return a.RenameTeam(ctx, "prod", "production") }},
		{"DeleteMember", func(ctx context.Context) error { return a.DeleteMember(ctx, "prod", "bob") }},
		{"PutStoreRole", func(ctx context.Context) error {
			return a.PutStoreRole(ctx, store.StoreRole{User: "aud", Role: "auditor"})
		}},
		{"InitOwner", func(ctx context.Context) error {
			made, err := a.InitOwner(ctx, "alice", now)
			if err == nil && !made {
				err = errors.New("InitOwner did not make the owner")
			}
			return err
		}},
		{"DeleteStoreRole", func(ctx context.Context) error { return a.DeleteStoreRole(ctx, "aud", "auditor") }},
		{"MoveMachine", func(ctx context.Context) error { return a.MoveMachine(ctx, "web", store.DefaultTeam) }},
		{"DeleteTeam", func(ctx context.Context) error { return a.DeleteTeam(ctx, "prod", now) }},
		{"DeleteMachine", func(ctx context.Context) error { return e.DeleteMachine(ctx, "web", now) }},
	}
}

func testAuditEveryMutation(t *testing.T, f *fixture) {
	var want []string
	for i, m := range f.mutations() {
		r1 := rec(time.Duration(i)*time.Second, "tester", "step."+m.name)
		r1.Details = map[string]string{"step": fmt.Sprint(i)}
		recs := []audit.Record{r1}
		want = append(want, r1.Action)
		if i%3 == 0 { // several records in one context, given in two calls
			r2 := rec(time.Duration(i)*time.Second, "tester", "step."+m.name+".more")
			recs = append(recs, r2)
			want = append(want, r2.Action)
		}
		ctx := store.WithAudit(store.WithAudit(f.ctx, recs[0]), recs[1:]...)
		if err := m.call(ctx); err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
		all := VerifyAudit(t, f.a)
		if got := actions(all); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("after %s, audit actions\n got %v\nwant %v", m.name, got, want)
		}
	}
	all := AllAudit(t, f.a)
	if all[0].Details["step"] != "0" || all[0].Actor != "tester" || all[0].EntityID != "e-step.CreateTeam" {
		t.Fatalf("first record: %+v", all[0])
	}
	// Calls without records append nothing.
	if _, err := f.a.CreateTeam(f.ctx, store.Team{Name: "quiet"}); err != nil {
		t.Fatal(err)
	}
	if n := len(AllAudit(t, f.a)); n != len(want) {
		t.Fatalf("a call without audit records appended: %d records, want %d", n, len(want))
	}
}

func testAuditFailedMutations(t *testing.T, f *fixture) {
	e, a, now := f.e, f.a, at(time.Hour)
	f.team("prod")
	f.machine(store.Machine{ID: "web", Name: "web", TeamID: "prod"})
	f.task("web", 3, at(0), named("busy"), func(t *store.Task) { t.TeamID = "prod" })
	f.task("web", 3, at(1), named("done"), func(t *store.Task) { t.TeamID = "prod" })
	f.claim(store.ClaimRequest{Owner: "w1", Max: 1}) // busy
	if _, err := e.Cancel(f.ctx, "done", now); err != nil {
		t.Fatal(err)
	}
	if err := a.PutStoreRole(f.ctx, store.StoreRole{User: "alice", Role: "owner"}); err != nil {
		t.Fatal(err)
	}
	f.a.AppendAudit(f.ctx, rec(0, "setup", "setup"))
	failing := []struct {
		name string
		call func(ctx context.Context) error
		want error
	}{
		{"CreateMachine duplicate", func(ctx context.Context) error {
			_, err := e.CreateMachine(ctx, store.Machine{Name: "web"})
			return err
		}, store.ErrExists},
		{"CreateMachine missing team", func(ctx context.Context) error {
			_, err := e.CreateMachine(ctx, store.Machine{Name: "new", TeamID: "nope"})
			return err
		}, store.ErrNotFound},
		{"UpdateMachine missing", func(ctx context.Context) error {
			return e.UpdateMachine(ctx, store.Machine{ID: "nope", Name: "nope"})
		}, store.ErrNotFound},
		{"UpdateMachine team with tasks", func(ctx context.Context) error {
			return e.UpdateMachine(ctx, store.Machine{ID: "web", Name: "web", TeamID: store.DefaultTeam})
		}, store.ErrMachineHasTasks},
		{"DeleteMachine with tasks", func(ctx context.Context) error { return e.DeleteMachine(ctx, "web", now) }, store.ErrMachineHasTasks},
		{"CreateTask invalid", func(ctx context.Context) error {
			_, _, err := e.CreateTask(ctx, store.Task{MachineID: "web", Priority: 9})
			return err
		}, store.ErrInvalidArgument},
		{"CreateTask duplicate id", func(ctx context.Context) error {
			_, _, err := e.CreateTask(ctx, store.Task{ID: "busy", MachineID: "web", Priority: 3})
			return err
		}, store.ErrExists},
		{"Claim invalid", func(ctx context.Context) error {
			_, err := e.Claim(ctx, store.ClaimRequest{Owner: "w1", Now: now, LeaseUntil: now, Max: 1})
			return err
		}, store.ErrInvalidArgument},
		{"Start lease lost", func(ctx context.Context) error {
			_, err := e.Start(ctx, "busy", "w2", store.Attempt{StartedAt: now})
			return err
		}, store.ErrLeaseLost},
		{"Heartbeat invalid", func(ctx context.Context) error {
			_, err := e.Heartbeat(ctx, "", []string{"busy"}, now)
			return err
		}, store.ErrInvalidArgument},
		{"Finish lease lost", func(ctx context.Context) error {
			_, err := e.Finish(ctx, store.Finish{ID: "busy", Owner: "w2", At: now, Next: store.Completed})
			return err
		}, store.ErrLeaseLost},
		{"Cancel missing", func(ctx context.Context) error { _, err := e.Cancel(ctx, "nope", now); return err }, store.ErrNotFound},
		{"CreateTasks invalid", func(ctx context.Context) error {
			_, err := e.CreateTasks(ctx, []store.Task{{MachineID: "web", Priority: 3}, {MachineID: "web", Priority: 9}})
			return err
		}, store.ErrInvalidArgument},
		{"CreateTasks duplicate id", func(ctx context.Context) error {
			_, err := e.CreateTasks(ctx, []store.Task{{MachineID: "web", Priority: 3}, {ID: "busy", MachineID: "web", Priority: 3}})
			return err
		}, store.ErrExists},
		{"SetMachineHealth missing", func(ctx context.Context) error {
			return e.SetMachineHealth(ctx, "nope", []byte(`{}`), now)
		}, store.ErrNotFound},
		{"TrimAudit past head", func(ctx context.Context) error { return a.TrimAudit(ctx, 1000) }, store.ErrInvalidArgument},
		{"Rescue invalid", func(ctx context.Context) error { _, err := e.Rescue(ctx, store.RescueRequest{}); return err }, store.ErrInvalidArgument},
		{"CreateTeam duplicate", func(ctx context.Context) error {
			_, err := a.CreateTeam(ctx, store.Team{Name: "prod"})
			return err
		}, store.ErrExists},
		{"RenameTeam default", func(ctx context.Context) error { return a.RenameTeam(ctx, store.DefaultTeam, "x") }, store.ErrInvalidArgument},
		{"RenameTeam missing", func(ctx context.Context) error { return a.RenameTeam(ctx, "nope", "x") }, store.ErrNotFound},
		{"DeleteTeam not empty", func(ctx context.Context) error { return a.DeleteTeam(ctx, "prod", now) }, store.ErrTeamNotEmpty},
		{"PutMember missing team", func(ctx context.Context) error {
			_, err := a.PutMember(ctx, store.Member{TeamID: "nope", User: "bob", Role: "viewer"})
			return err
		}, store.ErrNotFound},
		{"DeleteMember missing", func(ctx context.Context) error { return a.DeleteMember(ctx, "prod", "nobody") }, store.ErrNotFound},
		{"PutStoreRole invalid", func(ctx context.Context) error {
			return a.PutStoreRole(ctx, store.StoreRole{User: "bob", Role: "admin"})
		}, store.ErrInvalidArgument},
		{"DeleteStoreRole last owner", func(ctx context.Context) error { return a.DeleteStoreRole(ctx, "alice", "owner") }, store.ErrLastOwner},
		{"MoveMachine with tasks", func(ctx context.Context) error { return a.MoveMachine(ctx, "web", store.DefaultTeam) }, store.ErrMachineHasTasks},
		{"MoveMachine missing team", func(ctx context.Context) error { return a.MoveMachine(ctx, "web", "nope") }, store.ErrNotFound},
	}
	headBefore, _ := a.AuditHead(f.ctx)
	busy, done := f.get("busy"), f.get("done")
	machine, _ := e.GetMachine(f.ctx, "web")
	teams, _ := a.ListTeams(f.ctx, store.TeamFilter{IncludeDeleted: true})
	for _, tc := range failing {
		ctx := store.WithAudit(f.ctx, rec(time.Minute, "tester", "should.not.appear"))
		wantErr(t, tc.name, tc.call(ctx), tc.want)
		if head, _ := a.AuditHead(f.ctx); head != headBefore {
			t.Fatalf("%s: the audit head moved from %v to %v", tc.name, headBefore, head)
		}
	}
	// InitOwner with an owner: no change, so no record.
	if made, err := a.InitOwner(store.WithAudit(f.ctx, rec(0, "bob", "should.not.appear")), "bob", now); err != nil || made {
		t.Fatalf("InitOwner with an owner: %v, %v", made, err)
	}
	all := VerifyAudit(t, a)
	if got := actions(all); fmt.Sprint(got) != "[setup]" {
		t.Fatalf("failed calls appended: %v", got)
	}
	f.unchanged("failed calls", busy)
	f.unchanged("failed calls", done)
	if m, _ := e.GetMachine(f.ctx, "web"); !cmp.Equal(m, machine) {
		t.Fatalf("failed calls changed the machine: %+v", m)
	}
	if ts, _ := a.ListTeams(f.ctx, store.TeamFilter{IncludeDeleted: true}); !cmp.Equal(ts, teams) {
		t.Fatalf("failed calls changed the teams: %+v", ts)
	}
	if rs, _ := a.StoreRoles(f.ctx, ""); len(rs) != 1 {
		t.Fatalf("failed calls changed the store roles: %+v", rs)
	}
}

// sec is T0 truncated to the second plus d: the audit filter tests need
// instants on whole milliseconds.
func sec(d time.Duration) time.Time { return T0.Truncate(time.Second).Add(d) }

// auditFixture appends a small known trail and returns it as stored.
func (f *fixture) auditFixture() []audit.Record {
	f.t.Helper()
	mk := func(d time.Duration, actor, action, etype, team, result string) audit.Record {
		return audit.Record{Time: sec(d), Actor: actor, Action: action, EntityType: etype, EntityID: actor + "-" + action,
			Team: team, Result: result}
	}
	out, err := f.a.AppendAudit(f.ctx,
		mk(0, "alice", "team.create", audit.EntityTeam, "", audit.ResultOK),                    // 1
		mk(time.Millisecond, "alice", "task.create", audit.EntityTask, "prod", audit.ResultOK), // 2
		mk(2*time.Millisecond, "bob", "task.cancel", audit.EntityTask, "prod", audit.ResultDenied),
		mk(time.Second, "bob", "task.attempt.failed", audit.EntityTask, "dev", audit.ResultError), // 4
		mk(time.Second, "w1", "task", audit.EntityTask, "dev", audit.ResultOK),                    // 5 ("task" is not "task.")
		mk(time.Minute, "carol", "tasks.list", audit.EntityTask, "dev", audit.ResultOK),           // 6
		mk(time.Hour, "carol", "vault.read", audit.EntityVault, "prod", audit.ResultOK),           // 7
		mk(time.Hour+time.Millisecond, "Alice", "Task.create", audit.EntityTask, "prod", audit.ResultOK),
		mk(2*time.Hour, "alice", "audit.verify", audit.EntityAudit, "", audit.ResultOK), // 9
	)
	if err != nil {
		f.t.Fatalf("AppendAudit: %v", err)
	}
	return out
}

func seqs(rs []audit.Record) []int64 {
	out := make([]int64, len(rs))
	for i, r := range rs {
		out[i] = r.Seq
	}
	return out
}

func testAuditFilters(t *testing.T, f *fixture) {
	f.auditFixture()
	for _, tc := range []struct {
		name string
		f    audit.Filter
		want string
	}{
		{"all", audit.Filter{}, "[1 2 3 4 5 6 7 8 9]"},
		{"start", audit.Filter{Start: sec(time.Second)}, "[4 5 6 7 8 9]"},
		{"start sub-ms", audit.Filter{Start: sec(time.Millisecond + 1)}, "[3 4 5 6 7 8 9]"},
		{"end excluded", audit.Filter{End: sec(time.Second)}, "[1 2 3]"},
		{"end sub-ms", audit.Filter{End: sec(2*time.Millisecond + 1)}, "[1 2 3]"},
		{"range", audit.Filter{Start: sec(time.Millisecond), End: sec(time.Hour)}, "[2 3 4 5 6]"},
		{"range in another zone", audit.Filter{Start: sec(time.Millisecond).In(time.FixedZone("X", 7200)),
			End: sec(time.Hour).In(time.FixedZone("Y", -3600))}, "[2 3 4 5 6]"},
		{"empty range", audit.Filter{Start: sec(time.Minute), End: sec(time.Minute)}, "[]"},
		{"actor", audit.Filter{Actor: "alice"}, "[1 2 9]"},
		{"actor case", audit.Filter{Actor: "Alice"}, "[8]"},
		{"action exact", audit.Filter{Action: "task.create"}, "[2]"},
		{"action prefix", audit.Filter{Action: "task."}, "[2 3 4]"},
		{"action prefix star", audit.Filter{Action: "task.*"}, "[2 3 4]"},
		{"action deeper prefix", audit.Filter{Action: "task.attempt.*"}, "[4]"},
		{"action star", audit.Filter{Action: "*"}, "[1 2 3 4 5 6 7 8 9]"},
		{"action without dot", audit.Filter{Action: "task"}, "[5]"},
		{"action no match", audit.Filter{Action: "task.c"}, "[]"},
		{"entity type", audit.Filter{EntityType: audit.EntityTask}, "[2 3 4 5 6 8]"},
		{"entity id", audit.Filter{EntityID: "bob-task.cancel"}, "[3]"},
		{"team", audit.Filter{Team: "dev"}, "[4 5 6]"},
		{"result", audit.Filter{Result: audit.ResultDenied}, "[3]"},
		{"after seq", audit.Filter{AfterSeq: 6}, "[7 8 9]"},
		{"after the end", audit.Filter{AfterSeq: 9}, "[]"},
		{"limit", audit.Filter{Limit: 2}, "[1 2]"},
		{"combined", audit.Filter{Team: "prod", Action: "task.*", Result: audit.ResultOK}, "[2]"},
		{"combined with paging", audit.Filter{EntityType: audit.EntityTask, AfterSeq: 3, Limit: 2}, "[4 5]"},
		{"combined time and actor", audit.Filter{Actor: "carol", Start: sec(time.Minute), End: sec(time.Hour)}, "[6]"},
	} {
		nf, err := tc.f.Normalize()
		if err != nil {
			t.Fatalf("%s: Normalize: %v", tc.name, err)
		}
		rs, err := f.a.ListAudit(f.ctx, nf)
		if err != nil {
			t.Fatalf("%s: ListAudit: %v", tc.name, err)
		}
		if got := fmt.Sprint(seqs(rs)); got != tc.want {
			t.Errorf("%s: ListAudit(%+v) = %s, want %s", tc.name, nf, got, tc.want)
		}
		// Engines normalize too.
		raw, err := f.a.ListAudit(f.ctx, tc.f)
		if err != nil || fmt.Sprint(seqs(raw)) != tc.want {
			t.Errorf("%s: ListAudit(not normalized) = %v, %v; want %s", tc.name, seqs(raw), err, tc.want)
		}
	}
}

// testAuditFilterReference compares ListAudit with audit.Filter.Match over
// random trails and filters.
func testAuditFilterReference(t *testing.T, f *fixture) {
	rng := rand.New(rand.NewPCG(7, 11))
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	actors := []string{"alice", "bob", "w-1", "ålice"}
	acts := []string{"task.create", "task.cancel", "task.attempt.failed", "task", "tasks.x", "team.member.add", "machine.add", "vault.read", "task.%", "task._x"}
	teams := []string{"", "prod", "dev"}
	var recs []audit.Record
	for i := range 300 {
		recs = append(recs, audit.Record{Time: at(time.Duration(rng.Int64N(int64(time.Hour)))), Actor: pick(actors...),
			Action: pick(acts...), EntityType: pick(audit.EntityTask, audit.EntityTeam, audit.EntityMachine),
			EntityID: fmt.Sprint("id-", i%7), Team: pick(teams...), Result: pick(audit.ResultOK, audit.ResultDenied, audit.ResultError)})
	}
	stored, err := f.a.AppendAudit(f.ctx, recs...)
	if err != nil {
		t.Fatal(err)
	}
	for range 300 {
		var fl audit.Filter
		if rng.IntN(3) == 0 {
			fl.Start = at(time.Duration(rng.Int64N(int64(time.Hour))))
		}
		if rng.IntN(3) == 0 {
			fl.End = fl.Start.Add(time.Duration(rng.Int64N(int64(time.Hour))))
			if fl.Start.IsZero() {
				fl.End = at(time.Duration(rng.Int64N(int64(time.Hour))))
			}
		}
		if rng.IntN(4) == 0 {
			fl.Actor = pick(actors...)
		}
		if rng.IntN(2) == 0 {
			fl.Action = pick("task.", "task.*", "task", "task.create", "tasks.", "*", "team.member.*", "task.%", "task._", "task._*", "")
		}
		if rng.IntN(4) == 0 {
			fl.EntityType = pick(audit.EntityTask, audit.EntityTeam, audit.EntityMachine)
		}
		if rng.IntN(5) == 0 {
			fl.EntityID = fmt.Sprint("id-", rng.IntN(8))
		}
		if rng.IntN(4) == 0 {
			fl.Team = pick(teams...)
		}
		if rng.IntN(4) == 0 {
			fl.Result = pick(audit.ResultOK, audit.ResultDenied, audit.ResultError)
		}
		if rng.IntN(3) == 0 {
			fl.AfterSeq = rng.Int64N(320)
		}
		if rng.IntN(2) == 0 {
			fl.Limit = 1 + rng.IntN(40)
		}
		nf, err := fl.Normalize()
		if err != nil {
			t.Fatal(err)
		}
		var want []int64
		for _, r := range stored {
			if len(want) < nf.Limit && nf.Match(r) {
				want = append(want, r.Seq)
			}
		}
		got, err := f.a.ListAudit(f.ctx, nf)
		if err != nil {
			t.Fatalf("ListAudit(%+v): %v", nf, err)
		}
		if fmt.Sprint(seqs(got)) != fmt.Sprint(want) {
			t.Fatalf("ListAudit(%+v)\n got %v\nwant %v", nf, seqs(got), want)
		}
	}
}

func testAuditPaging(t *testing.T, f *fixture) {
	var recs []audit.Record
	for i := range 250 {
		actor := "alice"
		if i%3 == 0 {
			actor = "bob"
		}
		recs = append(recs, rec(time.Duration(i)*time.Millisecond, actor, "task.create"))
	}
	if _, err := f.a.AppendAudit(f.ctx, recs...); err != nil {
		t.Fatal(err)
	}
	// Page bob's records 7 at a time.
	var got []int64
	fl := audit.Filter{Actor: "bob", Limit: 7}
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatal("paging does not end")
		}
		page, err := f.a.ListAudit(f.ctx, fl)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, seqs(page)...)
		if len(page) < fl.Limit {
			break
		}
		fl.AfterSeq = page[len(page)-1].Seq
	}
	var want []int64
	for i := range 250 {
		if i%3 == 0 {
			want = append(want, int64(i+1))
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("paged seqs\n got %v\nwant %v", got, want)
	}
	if rs, _ := f.a.ListAudit(f.ctx, audit.Filter{}); len(rs) != 250 {
		t.Fatalf("default limit returned %d records", len(rs))
	}
	if rs, _ := f.a.ListAudit(f.ctx, audit.Filter{Limit: 1}); len(rs) != 1 || rs[0].Seq != 1 {
		t.Fatalf("limit 1: %v", seqs(rs))
	}
}

func testAuditMixed(t *testing.T, f *fixture) {
	rng := rand.New(rand.NewPCG(3, 5))
	ctxFor := func(i int, what string) context.Context {
		return store.WithAudit(f.ctx, rec(time.Duration(i)*time.Millisecond, fmt.Sprint("user-", i%4), what))
	}
	f.team("prod", "dev")
	for _, m := range []string{"m0", "m1", "m2"} {
		if _, err := f.e.CreateMachine(ctxFor(0, "machine.add"), store.Machine{ID: m, Name: m, TeamID: "prod"}); err != nil {
			t.Fatal(err)
		}
	}
	now := at(time.Hour)
	ok := 0
	for i := range 400 {
		var err error
		switch rng.IntN(7) {
		case 0, 1:
			_, _, err = f.e.CreateTask(ctxFor(i, "task.create"), store.Task{MachineID: fmt.Sprint("m", rng.IntN(3)), TeamID: "prod",
				Priority: 1 + rng.IntN(5), CreatedAt: at(time.Duration(i))})
		case 2:
			var ts []store.Task
			ts, err = f.e.Claim(ctxFor(i, "task.claim"), store.ClaimRequest{Owner: "w", Now: now, LeaseUntil: now.Add(time.Hour), Max: 2})
			for _, tk := range ts {
				if _, err := f.a.AppendAudit(f.ctx, rec(time.Duration(i), "w", "task.assigned")); err != nil {
					t.Fatal(err)
				}
				fin := store.Finish{ID: tk.ID, Owner: "w", At: now, Next: store.Completed, CountAttempt: true}
				if _, err := f.e.Finish(ctxFor(i, "task.completed"), fin); err != nil {
					t.Fatal(err)
				}
			}
		case 3:
			_, err = f.a.PutMember(ctxFor(i, "team.member.add"), store.Member{TeamID: "dev", User: fmt.Sprint("u", rng.IntN(5)), Role: "viewer"})
		case 4:
			err = f.a.DeleteMember(ctxFor(i, "team.member.remove"), "dev", fmt.Sprint("u", rng.IntN(5))) // often ErrNotFound
		case 5:
			_, err = f.a.AppendAudit(f.ctx, rec(time.Duration(i), "mallory", "vault.read"), rec(time.Duration(i), "mallory", "vault.list"))
		case 6:
			_, err = f.a.CreateTeam(ctxFor(i, "team.create"), store.Team{Name: fmt.Sprint("t", rng.IntN(30))}) // sometimes ErrExists
		}
		if err == nil {
			ok++
		} else if !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrExists) {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	all := VerifyAudit(t, f.a)
	for i, r := range all {
		if r.Seq != int64(i+1) {
			t.Fatalf("record %d has seq %d", i, r.Seq)
		}
	}
	t.Logf("%d records after %d successful operations", len(all), ok)
}

// ConcurrentAudit appends from goroutines goroutines at once, n times each,
// spread over engines (which share one store): AppendAudit of one or two
// records, and CreateTeam/CreateTask carrying a record in the context. It
// then checks that every record is in one chain that verifies against the
// head, numbered 1..N without gaps, and that each goroutine's records are in
// the order it appended them.
func ConcurrentAudit(t *testing.T, engines []store.Access, goroutines, n int) {
	t.Helper()
	ctx := context.Background()
	before := len(AllAudit(t, engines[0]))
	var (
		wg       sync.WaitGroup
		done     = make(chan struct{})
		verified = make(chan int)
	)
	go func() { // verify the trail over and over while it grows
		n := 0
		defer func() { verified <- n }()
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := CheckAudit(engines[len(engines)-1]); err != nil {
				t.Errorf("while appending: %v", err)
				return
			}
			n++
		}
	}()
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := engines[g%len(engines)]
			e, _ := a.(store.Engine)
			actor := fmt.Sprintf("g%02d", g)
			for i := range n {
				r := rec(time.Duration(i)*time.Millisecond, actor, fmt.Sprintf("op.%04d", i))
				var err error
				switch {
				case i%4 == 1:
					_, err = a.CreateTeam(store.WithAudit(ctx, r), store.Team{Name: fmt.Sprintf("%s-%d", actor, i)})
				case i%4 == 2 && e != nil:
					_, _, err = e.CreateTask(store.WithAudit(ctx, r), store.Task{MachineID: actor, Priority: 3})
				case i%4 == 3:
					r2 := r
					r2.Action += ".b"
					_, err = a.AppendAudit(ctx, r, r2)
				default:
					_, err = a.AppendAudit(ctx, r)
				}
				if err != nil {
					t.Errorf("%s op %d: %v", actor, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(done)
	t.Logf("trail verified %d times while it grew", <-verified)
	if t.Failed() {
		return
	}
	all := VerifyAudit(t, engines[0])
	want := before + goroutines*(n+n/4)
	if len(all) != want {
		t.Fatalf("%d records, want %d", len(all), want)
	}
	last := map[string]string{}
	for i, r := range all {
		if r.Seq != int64(i+1) {
			t.Fatalf("record %d has seq %d", i, r.Seq)
		}
		if prev, ok := last[r.Actor]; ok && r.Action < prev {
			t.Fatalf("%s's records out of order: %s after %s", r.Actor, r.Action, prev)
		}
		last[r.Actor] = r.Action
	}
	for _, e := range engines[1:] {
		h0, _ := engines[0].AuditHead(ctx)
		h, _ := e.AuditHead(ctx)
		if h != h0 {
			t.Fatalf("engines disagree on the head: %v and %v", h0, h)
		}
	}
}

func testAuditConcurrent(t *testing.T, f *fixture) {
	ConcurrentAudit(t, []store.Access{f.a}, 8, 40)
}

func testAccessClose(t *testing.T, f *fixture) {
	if err := f.e.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, a := f.ctx, f.a
	calls := map[string]func() error{
		"CreateTeam": func() error { _, err := a.CreateTeam(ctx, store.Team{Name: "x"}); return err },
		"GetTeam":    func() error { _, err := a.GetTeam(ctx, store.DefaultTeam); return err },
		"TeamByName": func() error { _, err := a.TeamByName(ctx, store.DefaultTeam); return err },
		"ListTeams":  func() error { _, err := a.ListTeams(ctx, store.TeamFilter{}); return err },
		"RenameTeam": func() error { return a.RenameTeam(ctx, "x", "y") },
		"DeleteTeam": func() error { return a.DeleteTeam(ctx, "x", time.Time{}) },
		"PutMember": func() error {
			_, err := a.PutMember(ctx, store.Member{TeamID: "x", User: "u", Role: "viewer"})
			return err
		},
		"DeleteMember": func() error { return a.DeleteMember(ctx, "x", "u") },
		"ListMembers":  func() error { _, err := a.ListMembers(ctx, ""); return err },
		"MemberRoles":  func() error { _, err := a.MemberRoles(ctx, "u"); return err },
		"PutStoreRole": func() error { return a.PutStoreRole(ctx, store.StoreRole{User: "u", Role: "owner"}) },
		"DeleteStoreRole": func() error {
			return a.DeleteStoreRole(ctx, "u", "owner")
		},
		"StoreRoles":  func() error { _, err := a.StoreRoles(ctx, ""); return err },
		"InitOwner":   func() error { _, err := a.InitOwner(ctx, "u", at(0)); return err },
		"MoveMachine": func() error { return a.MoveMachine(ctx, "m", "x") },
		"AppendAudit": func() error { _, err := a.AppendAudit(ctx, rec(0, "u", "x")); return err },
		"AppendAudit/none": func() error {
			_, err := a.AppendAudit(ctx)
			return err
		},
		"ListAudit": func() error { _, err := a.ListAudit(ctx, audit.Filter{}); return err },
		"AuditHead": func() error { _, err := a.AuditHead(ctx); return err },
		"TrimAudit": func() error { return a.TrimAudit(ctx, 0) },
		"AuditBase": func() error { _, err := a.AuditBase(ctx); return err },
	}
	for name, call := range calls {
		wantErr(t, name+" after Close", call(), store.ErrClosed)
	}
}
