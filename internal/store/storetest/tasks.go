package storetest

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rediacc/rediacc/internal/store"
)

func testMachineCRUD(t *testing.T, f *fixture) {
	f.team("prod", "staging")
	m := store.Machine{ID: "id-web-1", Name: "web-1", TeamID: "prod", Host: "10.0.0.1", Port: 22, User: "deploy",
		Config: []byte(`{"k":1}`), CreatedAt: at(0), UpdatedAt: at(0)}
	created, err := f.e.CreateMachine(f.ctx, m)
	if err != nil {
		t.Fatalf("CreateMachine: %v", err)
	}
	want := m
	want.Team = "prod" // the team's name, filled on read
	if diff := cmp.Diff(want, created); diff != "" {
		t.Fatalf("CreateMachine returned (-want +got):\n%s", diff)
	}
	got, err := f.e.GetMachine(f.ctx, "id-web-1")
	if err != nil {
		t.Fatalf("GetMachine: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("GetMachine (-want +got):\n%s", diff)
	}
	if byName, err := f.e.MachineByName(f.ctx, "web-1"); err != nil || byName.ID != "id-web-1" {
		t.Fatalf("MachineByName(web-1) = %+v, %v", byName, err)
	}
	// A machine without an id gets a new one, without a team joins
	// "default"; zero times get filled.
	db := f.machine(store.Machine{Name: "db-1", Host: "h", Port: 2222})
	if db.ID == "" || db.ID == "db-1" || db.TeamID != "default" || db.Team != "default" || db.CreatedAt.IsZero() || db.UpdatedAt.IsZero() {
		t.Fatalf("defaults not applied: %+v", db)
	}
	if again, err := f.e.GetMachine(f.ctx, db.ID); err != nil || again.Name != "db-1" {
		t.Fatalf("GetMachine(%s) = %+v, %v", db.ID, again, err)
	}
	f.machine(store.Machine{ID: "id-app-1", Name: "app-1", TeamID: "staging"})

	all, err := f.e.ListMachines(f.ctx, store.MachineFilter{})
	if err != nil {
		t.Fatalf("ListMachines: %v", err)
	}
	var names []string
	for _, m := range all {
		names = append(names, m.Name)
	}
	if fmt.Sprint(names) != "[app-1 db-1 web-1]" {
		t.Fatalf("ListMachines order = %v", names)
	}
	prod, _ := f.e.ListMachines(f.ctx, store.MachineFilter{TeamID: "prod"})
	if len(prod) != 1 || prod[0].Name != "web-1" {
		t.Fatalf("ListMachines(team prod) = %+v", prod)
	}
	none, _ := f.e.ListMachines(f.ctx, store.MachineFilter{TeamID: "nobody"})
	if len(none) != 0 {
		t.Fatalf("ListMachines(team nobody) = %+v", none)
	}

	upd := m
	upd.Host, upd.Port, upd.TeamID, upd.Config = "10.0.0.2", 2200, "staging", []byte(`{"k":2}`)
	upd.CreatedAt, upd.UpdatedAt = at(time.Hour), at(time.Hour) // CreatedAt is kept from the original
	if err := f.e.UpdateMachine(f.ctx, upd); err != nil {
		t.Fatalf("UpdateMachine: %v", err)
	}
	got, _ = f.e.GetMachine(f.ctx, "id-web-1")
	want = upd
	want.CreatedAt, want.Team = m.CreatedAt, "staging"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("after UpdateMachine (-want +got):\n%s", diff)
	}
	// A rename through UpdateMachine keeps the id; a taken name is refused.
	upd.Name = "app-1"
	wantErr(t, "UpdateMachine to a taken name", f.e.UpdateMachine(f.ctx, upd), store.ErrExists)
	upd.Name = "web-one"
	if err := f.e.UpdateMachine(f.ctx, upd); err != nil {
		t.Fatalf("UpdateMachine (rename): %v", err)
	}
	if got, err := f.e.MachineByName(f.ctx, "web-one"); err != nil || got.ID != "id-web-1" {
		t.Fatalf("MachineByName after a rename = %+v, %v", got, err)
	}
	_, err = f.e.MachineByName(f.ctx, "web-1")
	wantErr(t, "MachineByName(old name)", err, store.ErrNotFound)

	if err := f.e.DeleteMachine(f.ctx, "id-web-1", at(2*time.Hour)); err != nil {
		t.Fatalf("DeleteMachine: %v", err)
	}
	// A removed machine keeps its record (by id), leaves the lists, and
	// its name is free.
	gone, err := f.e.GetMachine(f.ctx, "id-web-1")
	if err != nil || !gone.DeletedAt.Equal(at(2*time.Hour)) || gone.Name != "web-one" {
		t.Fatalf("GetMachine after delete = %+v, %v", gone, err)
	}
	_, err = f.e.MachineByName(f.ctx, "web-one")
	wantErr(t, "MachineByName after delete", err, store.ErrNotFound)
	if all, _ := f.e.ListMachines(f.ctx, store.MachineFilter{}); len(all) != 2 {
		t.Fatalf("ListMachines after delete = %+v", all)
	}
	wantErr(t, "DeleteMachine twice", f.e.DeleteMachine(f.ctx, "id-web-1", time.Time{}), store.ErrNotFound)
	wantErr(t, "UpdateMachine of a removed machine", f.e.UpdateMachine(f.ctx, upd), store.ErrNotFound)
	wantErr(t, "SetMachineHealth of a removed machine", f.e.SetMachineHealth(f.ctx, "id-web-1", nil, at(0)), store.ErrNotFound)
	reborn := f.machine(store.Machine{Name: "web-one", TeamID: "prod"})
	if reborn.ID == "id-web-1" {
		t.Fatalf("a new machine of a removed one's name got its id")
	}
	_, err = f.e.CreateMachine(f.ctx, store.Machine{ID: "id-web-1", Name: "fresh"})
	wantErr(t, "CreateMachine with a removed machine's id", err, store.ErrExists)
}

// machine creates m and returns it as stored.
func (f *fixture) machine(m store.Machine) store.Machine {
	f.t.Helper()
	got, err := f.e.CreateMachine(f.ctx, m)
	if err != nil {
		f.t.Fatalf("CreateMachine(%s): %v", m.Name, err)
	}
	return got
}

func testMachineErrors(t *testing.T, f *fixture) {
	f.machine(store.Machine{ID: "m", Name: "m"})
	_, err := f.e.CreateMachine(f.ctx, store.Machine{Name: "m"})
	wantErr(t, "CreateMachine duplicate name", err, store.ErrExists)
	_, err = f.e.CreateMachine(f.ctx, store.Machine{ID: "m", Name: "other"})
	wantErr(t, "CreateMachine duplicate id", err, store.ErrExists)
	_, err = f.e.CreateMachine(f.ctx, store.Machine{})
	wantErr(t, "CreateMachine empty name", err, store.ErrInvalidArgument)
	_, err = f.e.GetMachine(f.ctx, "nope")
	wantErr(t, "GetMachine", err, store.ErrNotFound)
	_, err = f.e.MachineByName(f.ctx, "nope")
	wantErr(t, "MachineByName", err, store.ErrNotFound)
	wantErr(t, "UpdateMachine", f.e.UpdateMachine(f.ctx, store.Machine{ID: "nope", Name: "nope"}), store.ErrNotFound)
	wantErr(t, "DeleteMachine", f.e.DeleteMachine(f.ctx, "nope", time.Time{}), store.ErrNotFound)
	wantErr(t, "DeleteMachine empty id", f.e.DeleteMachine(f.ctx, "", time.Time{}), store.ErrInvalidArgument)
}

func testMachineHasTasks(t *testing.T, f *fixture) {
	f.machine(store.Machine{ID: "m", Name: "m"})
	f.machine(store.Machine{ID: "other", Name: "other"})
	a := f.task("m", 3, at(0))
	b := f.task("m", 3, at(time.Second))
	f.task("other", 3, at(2*time.Second))
	wantErr(t, "DeleteMachine with pending tasks", f.e.DeleteMachine(f.ctx, "m", time.Time{}), store.ErrMachineHasTasks)

	if _, err := f.e.Cancel(f.ctx, a.ID, at(time.Minute)); err != nil {
		t.Fatal(err)
	}
	f.claimOne(b.ID, "w1", at(time.Minute))
	wantErr(t, "DeleteMachine with an assigned task", f.e.DeleteMachine(f.ctx, "m", time.Time{}), store.ErrMachineHasTasks)
	f.finish(store.Finish{ID: b.ID, Owner: "w1", At: at(2 * time.Minute), Next: store.Completed, CountAttempt: true})
	if err := f.e.DeleteMachine(f.ctx, "m", time.Time{}); err != nil {
		t.Fatalf("DeleteMachine once all tasks are terminal: %v", err)
	}
	// The finished tasks stay readable and still name their machine.
	if got := f.get(b.ID); got.Status != store.Completed || got.MachineID != "m" || got.Machine != "m" {
		t.Fatalf("task after its machine was deleted: %+v", got)
	}
}

func testCreateTask(t *testing.T, f *fixture) {
	in := store.Task{
		ID:              "0b5e4c1e-0000-4000-8000-000000000001",
		IdempotencyKey:  "",
		TeamID:          "prod",
		MachineID:       "web-1",
		Priority:        2,
		Spec:            []byte(`{"command":"uptime"}`),
		Status:          store.Completed, // ignored
		CreatedAt:       at(0),
		EnqueuedAt:      at(time.Second),
		ReadyAt:         at(time.Minute),
		LeaseOwner:      "someone", // ignored
		LeaseExpiresAt:  at(time.Hour),
		CancelRequested: true,
		CompletedAt:     at(time.Hour),
	}
	got, created, err := f.e.CreateTask(f.ctx, in)
	if err != nil || !created {
		t.Fatalf("CreateTask: created=%v err=%v", created, err)
	}
	want := in
	want.Status = store.Pending
	want.Team, want.Machine = "prod", "web-1" // no such team or machine: the ids
	want.LeaseOwner, want.LeaseExpiresAt, want.CancelRequested, want.CompletedAt = "", time.Time{}, false, time.Time{}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("CreateTask result (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, f.get(in.ID)); diff != "" {
		t.Fatalf("GetTask (-want +got):\n%s", diff)
	}

	// Defaults: an id is generated, EnqueuedAt = CreatedAt, ReadyAt = EnqueuedAt.
	d, created, err := f.e.CreateTask(f.ctx, store.Task{MachineID: "web-1", Priority: 3, CreatedAt: at(time.Hour)})
	if err != nil || !created {
		t.Fatalf("CreateTask defaults: created=%v err=%v", created, err)
	}
	if len(d.ID) != 36 || !d.EnqueuedAt.Equal(at(time.Hour)) || !d.ReadyAt.Equal(at(time.Hour)) || d.Status != store.Pending {
		t.Fatalf("defaults not applied: %+v", d)
	}
	if d.Spec != nil || d.History != nil || d.Stdout != nil {
		t.Fatalf("empty slices should come back nil: %+v", d)
	}
	// Zero CreatedAt is filled in.
	z, _, err := f.e.CreateTask(f.ctx, store.Task{MachineID: "web-1", Priority: 3})
	if err != nil || z.CreatedAt.IsZero() || z.ReadyAt.IsZero() {
		t.Fatalf("CreateTask zero times: %+v, %v", z, err)
	}

	_, _, err = f.e.CreateTask(f.ctx, store.Task{ID: in.ID, MachineID: "web-1", Priority: 3, CreatedAt: at(0)})
	wantErr(t, "CreateTask duplicate id", err, store.ErrExists)
}

func testCreateInvalid(t *testing.T, f *fixture) {
	for _, tc := range []store.Task{
		{MachineID: "m", Priority: 0},
		{MachineID: "m", Priority: 6},
		{MachineID: "", Priority: 3},
		{MachineID: "m", Priority: 3, CreatedAt: time.Date(1500, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		_, _, err := f.e.CreateTask(f.ctx, tc)
		wantErr(t, fmt.Sprintf("CreateTask(%+v)", tc), err, store.ErrInvalidArgument)
	}
	all, _ := f.e.ListTasks(f.ctx, store.TaskFilter{})
	if len(all) != 0 {
		t.Fatalf("invalid tasks were stored: %v", ids(all))
	}
}

func testIdempotency(t *testing.T, f *fixture) {
	first := f.task("m", 3, at(0), func(t *store.Task) { t.IdempotencyKey = "deploy-42" })
	again, created, err := f.e.CreateTask(f.ctx, store.Task{ID: "other-id", IdempotencyKey: "deploy-42",
		TeamID: "team-a", MachineID: "m2", Priority: 1, Spec: []byte(`{"different":true}`), CreatedAt: at(time.Minute)})
	if err != nil {
		t.Fatalf("CreateTask with existing key: %v", err)
	}
	if created {
		t.Fatal("CreateTask with existing key: created = true")
	}
	if diff := cmp.Diff(first, again); diff != "" {
		t.Fatalf("existing key should return the first task (-first +got):\n%s", diff)
	}
	// Still returned once the first task changed state.
	f.claimOne(first.ID, "w1", at(time.Hour))
	again, created, _ = f.e.CreateTask(f.ctx, store.Task{TeamID: "team-a", IdempotencyKey: "deploy-42", MachineID: "m", Priority: 3})
	if created || again.ID != first.ID || again.Status != store.Assigned {
		t.Fatalf("existing key after claim: created=%v %+v", created, again)
	}
	if _, err := f.e.GetTask(f.ctx, "other-id"); err == nil {
		t.Fatal("the duplicate was inserted")
	}
	// Another key, and tasks without a key, are independent.
	f.task("m", 3, at(0), func(t *store.Task) { t.IdempotencyKey = "deploy-43" })
	f.task("m", 3, at(0))
	f.task("m", 3, at(0))
	all, _ := f.e.ListTasks(f.ctx, store.TaskFilter{})
	if len(all) != 4 {
		t.Fatalf("want 4 tasks, got %d", len(all))
	}
	// Keys are scoped per team: another team's "deploy-42" is a new task,
	// and each team's key finds its own task.
	other, created, err := f.e.CreateTask(f.ctx, store.Task{ID: "team-b-task", TeamID: "team-b", IdempotencyKey: "deploy-42",
		MachineID: "m", Priority: 3, CreatedAt: at(0)})
	if err != nil || !created || other.ID != "team-b-task" {
		t.Fatalf("the same key in another team: created=%v %+v %v", created, other, err)
	}
	for team, want := range map[string]string{"team-a": first.ID, "team-b": "team-b-task"} {
		got, created, err := f.e.CreateTask(f.ctx, store.Task{TeamID: team, IdempotencyKey: "deploy-42", MachineID: "m", Priority: 3})
		if err != nil || created || got.ID != want {
			t.Fatalf("key deploy-42 in %s: created=%v %s %v, want %s", team, created, got.ID, err, want)
		}
	}
}

func testGetNotFound(t *testing.T, f *fixture) {
	_, err := f.e.GetTask(f.ctx, "missing")
	wantErr(t, "GetTask", err, store.ErrNotFound)
}

func testListTasks(t *testing.T, f *fixture) {
	// Created out of order; two share a CreatedAt and sort by ID.
	mk := func(id, team, machine string, prio int, created time.Duration) store.Task {
		return f.task(machine, prio, at(created), func(t *store.Task) { t.ID, t.TeamID = id, team })
	}
	mk("e", "prod", "m1", 1, 4*time.Second)
	mk("b", "prod", "m2", 3, 1*time.Second)
	mk("d", "dev", "m1", 3, 2*time.Second)
	mk("c", "dev", "m2", 5, 2*time.Second)
	mk("a", "prod", "m1", 3, 0)
	f.claim(store.ClaimRequest{Machines: []string{"m1"}, Max: 1}) // e (priority 1) -> ASSIGNED

	list := func(fl store.TaskFilter) []store.Task {
		t.Helper()
		ts, err := f.e.ListTasks(f.ctx, fl)
		if err != nil {
			t.Fatalf("ListTasks(%+v): %v", fl, err)
		}
		return ts
	}
	wantIDs(t, "all", list(store.TaskFilter{}), "a", "b", "c", "d", "e")
	wantIDs(t, "limit 2", list(store.TaskFilter{Limit: 2}), "a", "b")
	wantIDs(t, "team dev", list(store.TaskFilter{TeamID: "dev"}), "c", "d")
	wantIDs(t, "machine m1", list(store.TaskFilter{MachineID: "m1"}), "a", "d", "e")
	wantIDs(t, "priority 3", list(store.TaskFilter{Priority: 3}), "a", "b", "d")
	wantIDs(t, "assigned", list(store.TaskFilter{Statuses: []store.Status{store.Assigned}}), "e")
	wantIDs(t, "pending or assigned, prod, m1", list(store.TaskFilter{
		Statuses: []store.Status{store.Pending, store.Assigned}, TeamID: "prod", MachineID: "m1"}), "a", "e")
	wantIDs(t, "completed", list(store.TaskFilter{Statuses: []store.Status{store.Completed}}))
	wantIDs(t, "prod priority 3 limit 1", list(store.TaskFilter{TeamID: "prod", Priority: 3, Limit: 1}), "a")
	_, err := f.e.ListTasks(f.ctx, store.TaskFilter{Limit: -1})
	wantErr(t, "negative limit", err, store.ErrInvalidArgument)
}

func testTimesUTC(t *testing.T, f *fixture) {
	loc := time.FixedZone("UTC+5", 5*3600)
	local := at(0).In(loc)
	tk := f.task("m", 3, local)
	for _, got := range []store.Task{tk, f.get(tk.ID)} {
		if got.CreatedAt.Location() != time.UTC || got.EnqueuedAt.Location() != time.UTC || got.ReadyAt.Location() != time.UTC {
			t.Fatalf("times not in UTC: %v %v %v", got.CreatedAt, got.EnqueuedAt, got.ReadyAt)
		}
		if !got.CreatedAt.Equal(local) {
			t.Fatalf("CreatedAt %v != %v (nanoseconds must survive)", got.CreatedAt, local)
		}
	}
}

func testDeepCopy(t *testing.T, f *fixture) {
	spec := []byte(`{"cmd":"a"}`)
	in := store.Task{ID: "t", MachineID: "m", Priority: 3, Spec: spec, CreatedAt: at(0),
		History:  []store.Attempt{{Number: 1, Worker: "w0", StartedAt: at(0), EndedAt: at(1), ExitCode: intp(2), Outcome: "failed"}},
		Attempts: 1, ExitCode: intp(2), Stdout: []byte("out"), Stderr: []byte("err")}
	got, _, err := f.e.CreateTask(f.ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	// Mutating what the caller passed in or got back must not reach the store.
	spec[2] = 'X'
	*in.History[0].ExitCode = 99
	in.History[0].Worker = "mutated"
	in.Stdout[0] = 'X'
	*in.ExitCode = 99
	got.Spec[2] = 'Y'
	got.History[0].Worker = "mutated"
	*got.History[0].ExitCode = 98
	got.Stderr[0] = 'Y'
	*got.ExitCode = 98
	stored := f.get("t")
	if !bytes.Equal(stored.Spec, []byte(`{"cmd":"a"}`)) || string(stored.Stdout) != "out" || string(stored.Stderr) != "err" ||
		*stored.ExitCode != 2 || stored.History[0].Worker != "w0" || *stored.History[0].ExitCode != 2 {
		t.Fatalf("stored task aliased caller memory: %+v %+v", stored, stored.History)
	}
	stored.Spec[0] = 'Z'
	stored.History = append(stored.History[:0], store.Attempt{Number: 7})
	if again := f.get("t"); again.Spec[0] != '{' || again.History[0].Number != 1 {
		t.Fatal("GetTask result aliases the store")
	}

	cfg := []byte(`{"x":1}`)
	f.machine(store.Machine{ID: "m", Name: "m", Config: cfg})
	cfg[0] = 'X'
	m, _ := f.e.GetMachine(f.ctx, "m")
	if string(m.Config) != `{"x":1}` {
		t.Fatalf("machine config aliased: %s", m.Config)
	}
	m.Config[0] = 'Y'
	ms, _ := f.e.ListMachines(f.ctx, store.MachineFilter{})
	if string(ms[0].Config) != `{"x":1}` {
		t.Fatalf("machine config aliased through GetMachine: %s", ms[0].Config)
	}

	// Finish's slices are copied too.
	f.claimOne("t", "w1", at(time.Hour))
	out := []byte("stdout")
	f.finish(store.Finish{ID: "t", Owner: "w1", At: at(2 * time.Hour), Next: store.Completed, Stdout: out})
	out[0] = 'X'
	if got := f.get("t"); string(got.Stdout) != "stdout" {
		t.Fatalf("Finish stdout aliased: %s", got.Stdout)
	}
}
