package rediacc_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
)

// Maintenance windows through the API: created for a machine or a team,
// refused when invalid (nothing written), listed with their state at the
// injected clock, deleted; admins only.
func TestWindowAPI(t *testing.T) {
	l := paris(t)
	c, clock, _ := schedClient(t, time.Date(2031, 6, 10, 12, 0, 0, 0, l), nil)
	owner := asOwner()
	if _, err := c.CreateTeam(owner, "prod", ""); err != nil {
		t.Fatal(err)
	}
	w, err := c.CreateWindow(owner, rediacc.MaintenanceWindow{Machine: "m1", Cron: "0 2 * * *", TimeZone: "Europe/Paris", Duration: 3 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if w.Team != rediacc.DefaultTeam || w.HoldFrom != rediacc.Low || w.Open || !w.OpensAt.Equal(time.Date(2031, 6, 11, 2, 0, 0, 0, l)) || w.CreatedBy != "alice" {
		t.Fatalf("created: %+v", w)
	}
	tw, err := c.CreateWindow(owner, rediacc.MaintenanceWindow{Team: "prod", Cron: "@daily", Duration: time.Hour, HoldFrom: rediacc.Minimal})
	if err != nil || tw.Machine != "" || tw.HoldFrom != rediacc.Minimal || tw.TimeZone != "UTC" {
		t.Fatalf("team window: %+v %v", tw, err)
	}
	for _, tc := range []struct {
		w    rediacc.MaintenanceWindow
		err  error
		says string
	}{
		{rediacc.MaintenanceWindow{Machine: "m1", Cron: "0 2 * *", Duration: time.Hour}, rediacc.ErrInvalidArgument, "5 fields"},
		{rediacc.MaintenanceWindow{Machine: "m1", Cron: "@every 6h", Duration: time.Hour}, rediacc.ErrInvalidArgument, "@every"},
		{rediacc.MaintenanceWindow{Machine: "m1", Cron: "@daily", Duration: 0}, rediacc.ErrInvalidArgument, "duration"},
		{rediacc.MaintenanceWindow{Machine: "m1", Cron: "@daily", Duration: time.Hour, TimeZone: "Moon/Tranquility"}, rediacc.ErrInvalidArgument, "IANA"},
		{rediacc.MaintenanceWindow{Machine: "m1", Cron: "@daily", Duration: time.Hour, HoldFrom: 9}, rediacc.ErrInvalidPriority, "priority"},
		{rediacc.MaintenanceWindow{Machine: "ghost", Cron: "@daily", Duration: time.Hour}, rediacc.ErrUnknownMachine, "ghost"},
		{rediacc.MaintenanceWindow{Machine: "m1", Team: "prod", Cron: "@daily", Duration: time.Hour}, rediacc.ErrInvalidArgument, "not \"prod\""},
		{rediacc.MaintenanceWindow{Team: "nope", Cron: "@daily", Duration: time.Hour}, rediacc.ErrNotFound, "nope"},
		{rediacc.MaintenanceWindow{Cron: "@daily", Duration: time.Hour}, rediacc.ErrInvalidArgument, "machine or a team"},
	} {
		if _, err := c.CreateWindow(owner, tc.w); !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("CreateWindow(%+v): %v, want %v saying %q", tc.w, err, tc.err, tc.says)
		}
	}
	clock.Set(time.Date(2031, 6, 11, 3, 0, 0, 0, l))
	ws, err := c.ListWindows(owner, rediacc.WindowFilter{})
	if err != nil || len(ws) != 2 {
		t.Fatalf("ListWindows: %v %v", ws, err)
	}
	for _, x := range ws {
		if x.ID == w.ID && (!x.Open || !x.ClosesAt.Equal(time.Date(2031, 6, 11, 5, 0, 0, 0, l))) {
			t.Fatalf("at 03:00 the 02:00+3h window: %+v", x)
		}
	}
	// Admins only: an operator may list, not create or delete.
	if _, err := c.SetMember(owner, "prod", "olga", rediacc.RoleOperator); err != nil {
		t.Fatal(err)
	}
	olga := rediacc.WithActor(context.Background(), "olga")
	if _, err := c.CreateWindow(olga, rediacc.MaintenanceWindow{Team: "prod", Cron: "@daily", Duration: time.Hour}); !errors.Is(err, rediacc.ErrPermissionDenied) {
		t.Fatalf("operator creates a window: %v", err)
	}
	if err := c.DeleteWindow(olga, tw.ID); !errors.Is(err, rediacc.ErrPermissionDenied) {
		t.Fatalf("operator deletes a window: %v", err)
	}
	if ws, err := c.ListWindows(olga, rediacc.WindowFilter{}); err != nil || len(ws) != 1 || ws[0].ID != tw.ID {
		t.Fatalf("operator of prod lists: %v %v", ws, err)
	}
	if err := c.DeleteWindow(owner, tw.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteWindow(owner, tw.ID); !errors.Is(err, rediacc.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	recs, _ := c.AuditLog(owner, rediacc.AuditFilter{Action: "window.create", Result: "ok"})
	if len(recs) != 2 || recs[0].Details["cron"] != "0 2 * * *" {
		t.Fatalf("window.create records: %d", len(recs))
	}
}

// Drain and pause through the API: idempotent, audited, listed, admins
// only.
func TestGateAPI(t *testing.T) {
	c, _, _ := schedClient(t, time.Date(2031, 6, 10, 12, 0, 0, 0, time.UTC), nil)
	owner := asOwner()
	if _, err := c.CreateTeam(owner, "prod", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetMember(owner, rediacc.DefaultTeam, "olga", rediacc.RoleOperator); err != nil {
		t.Fatal(err)
	}
	olga := rediacc.WithActor(context.Background(), "olga")
	if err := c.DrainMachine(olga, "m1", ""); !errors.Is(err, rediacc.ErrPermissionDenied) || !strings.Contains(err.Error(), "machine.drain") {
		t.Fatalf("operator drains: %v", err)
	}
	for range 2 {
		if err := c.DrainMachine(owner, "m1", "kernel update"); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.PauseQueue(owner, "prod", "incident 42"); err != nil {
		t.Fatal(err)
	}
	if err := c.PauseQueue(owner, "nope", ""); !errors.Is(err, rediacc.ErrNotFound) {
		t.Fatalf("pause unknown team: %v", err)
	}
	if err := c.DrainMachine(owner, "ghost", ""); !errors.Is(err, rediacc.ErrNotFound) {
		t.Fatalf("drain unknown machine: %v", err)
	}
	gs, err := c.Gates(owner)
	if err != nil || len(gs) != 2 {
		t.Fatalf("gates: %+v %v", gs, err)
	}
	if gs[0].Kind != rediacc.GateDrain || gs[0].Machine != "m1" || gs[0].Team != rediacc.DefaultTeam || gs[0].Reason != "kernel update" || gs[0].By != "alice" ||
		gs[1].Kind != rediacc.GatePause || gs[1].Team != "prod" {
		t.Fatalf("gates: %+v", gs)
	}
	if gs, _ := c.Gates(olga); len(gs) != 1 || gs[0].Machine != "m1" {
		t.Fatalf("olga (default team only) sees %+v", gs)
	}
	for range 2 {
		if err := c.ResumeMachine(owner, "m1"); err != nil {
			t.Fatal(err)
		}
		if err := c.ResumeQueue(owner, "prod"); err != nil {
			t.Fatal(err)
		}
	}
	if gs, _ := c.Gates(owner); len(gs) != 0 {
		t.Fatalf("after resume: %+v", gs)
	}
	recs, _ := c.AuditLog(owner, rediacc.AuditFilter{Action: "machine.drain"})
	denied := 0
	for _, r := range recs {
		if r.Result == "denied" {
			denied++
		}
	}
	if len(recs) != 5 || denied != 1 {
		t.Fatalf("machine.drain records: %d (denied %d), want 5 (2 drains, 2 resumes, 1 denial)", len(recs), denied)
	}
}

// A maintenance window of m1 (02:00 Europe/Paris for 3 hours): priority 1
// and 3 tasks run at once; the priority 5 task waits, says why and until
// when, and runs when the injected clock reaches the opening; after the
// window closes, low-priority work waits again.
func TestMaintenanceWindowHoldsLowPriority(t *testing.T) {
	onStores(t, testMaintenanceWindowHoldsLowPriority)
}

func testMaintenanceWindowHoldsLowPriority(t *testing.T, store func(*rediacc.Config)) {
	l := paris(t)
	c, clock, _ := schedClient(t, time.Date(2031, 6, 10, 12, 0, 0, 0, l), store)
	owner := asOwner()
	if _, err := c.CreateWindow(owner, rediacc.MaintenanceWindow{Machine: "m1", Cron: "0 2 * * *", TimeZone: "Europe/Paris", Duration: 3 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	critical := submit(t, c, rediacc.TaskSpec{Machine: "m1", Priority: rediacc.Critical, Command: "echo now"})
	normal := submit(t, c, rediacc.TaskSpec{Machine: "m1", Priority: rediacc.Normal, Command: "echo now"})
	archive := submit(t, c, rediacc.TaskSpec{Machine: "m1", Priority: rediacc.Minimal, Command: "echo off-peak"})
	runWorker(t, c)
	waitStatus(t, c, critical.ID, rediacc.StatusCompleted)
	waitStatus(t, c, normal.ID, rediacc.StatusCompleted)
	got := get(t, c, archive.ID)
	opens := time.Date(2031, 6, 11, 2, 0, 0, 0, l)
	if got.Status != rediacc.StatusPending || len(got.Waiting) != 1 || got.Waiting[0].Code != rediacc.WaitMaintenanceWindow ||
		!got.Waiting[0].Until.Equal(opens) || !strings.Contains(got.Waiting[0].Message, "opens 2031-06-11 02:00 Europe/Paris") {
		t.Fatalf("the priority-5 task: %s %+v", got.Status, got.Waiting)
	}
	clock.Set(opens.Add(-time.Hour)) // the same day in Paris: the time alone
	if got := get(t, c, archive.ID); !strings.HasPrefix(got.WaitMessage(), "waiting for maintenance window, opens 02:00 Europe/Paris") {
		t.Fatalf("wait reason at 01:00: %q", got.WaitMessage())
	}
	clock.Set(opens.Add(time.Second))
	if done := waitStatus(t, c, archive.ID, rediacc.StatusCompleted); done.Stdout != "off-peak\n" {
		t.Fatalf("in the window: %+v", done)
	}
	clock.Set(opens.Add(3 * time.Hour)) // closed again
	later := submit(t, c, rediacc.TaskSpec{Machine: "m1", Priority: rediacc.Low, Command: "true"})
	if got := get(t, c, later.ID); got.Status != rediacc.StatusPending || got.Waiting[0].Code != rediacc.WaitMaintenanceWindow ||
		!got.Waiting[0].Until.Equal(opens.Add(24*time.Hour)) {
		t.Fatalf("after the window closed: %s %+v", got.Status, got.Waiting)
	}
}

// Draining a machine: the task running on it finishes; new tasks of it
// wait (saying who drained it and how to resume), whatever their
// priority; other machines go on; resumed, they run.
func TestDrainMachine(t *testing.T) { onStores(t, testDrainMachine) }

func testDrainMachine(t *testing.T, store func(*rediacc.Config)) {
	c, _, _ := schedClient(t, time.Date(2031, 6, 10, 12, 0, 0, 0, time.UTC), store)
	inProcessMachine(t, c, "m2")
	owner := asOwner()
	marker := filepath.Join(t.TempDir(), "release")
	running := submit(t, c, rediacc.TaskSpec{Machine: "m1", Command: "while [ ! -e " + marker + " ]; do sleep 0.05; done; echo finished"})
	runWorker(t, c)
	waitStatus(t, c, running.ID, rediacc.StatusProcessing)
	if err := c.DrainMachine(owner, "m1", "disk replacement"); err != nil {
		t.Fatal(err)
	}
	held := submit(t, c, rediacc.TaskSpec{Machine: "m1", Priority: rediacc.Critical, Command: "echo after"})
	other := submit(t, c, rediacc.TaskSpec{Machine: "m2", Command: "echo elsewhere"})
	waitStatus(t, c, other.ID, rediacc.StatusCompleted)
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if done := waitStatus(t, c, running.ID, rediacc.StatusCompleted); done.Stdout != "finished\n" {
		t.Fatalf("the running task: %+v", done)
	}
	got := get(t, c, held.ID)
	if got.Status != rediacc.StatusPending || len(got.Waiting) != 1 || got.Waiting[0].Code != rediacc.WaitMachineDraining ||
		!strings.Contains(got.Waiting[0].Message, "by alice: disk replacement") || !strings.Contains(got.Waiting[0].Message, "rediacc machine resume m1") {
		t.Fatalf("a critical task of the draining machine: %s %+v", got.Status, got.Waiting)
	}
	sts, err := c.MachineStatus(owner, rediacc.MachineFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sts {
		if (s.Name == "m1") != (s.Draining != nil) || (s.Draining != nil && (s.Draining.By != "alice" || s.Draining.Reason != "disk replacement")) {
			t.Fatalf("machine status of %s: draining %+v", s.Name, s.Draining)
		}
	}
	if err := c.ResumeMachine(owner, "m1"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, held.ID, rediacc.StatusCompleted)
}

// Pausing a team's queue: its tasks are accepted and wait (saying so);
// another team's run; RunUntilEmpty stops naming the held tasks (a pause
// has no end by time); resumed, they run.
func TestPauseQueue(t *testing.T) { onStores(t, testPauseQueue) }

func testPauseQueue(t *testing.T, store func(*rediacc.Config)) {
	c, _, _ := schedClient(t, time.Date(2031, 6, 10, 12, 0, 0, 0, time.UTC), store)
	owner := asOwner()
	if _, err := c.CreateTeam(owner, "prod", ""); err != nil {
		t.Fatal(err)
	}
	inProcessMachine(t, c, "p1")
	if err := c.MoveMachine(owner, "p1", "prod"); err != nil {
		t.Fatal(err)
	}
	if err := c.PauseQueue(owner, "prod", "incident 42"); err != nil {
		t.Fatal(err)
	}
	paused := submit(t, c, rediacc.TaskSpec{Machine: "p1", Priority: rediacc.Critical, Command: "echo prod"})
	free := submit(t, c, rediacc.TaskSpec{Machine: "m1", Command: "echo default"})
	err := c.RunUntilEmpty(ctxTimeout(t, time.Minute))
	var heldErr *rediacc.HeldError
	if !errors.As(err, &heldErr) || len(heldErr.Tasks) != 1 || heldErr.Tasks[0].ID != paused.ID ||
		heldErr.Tasks[0].Waiting[0].Code != rediacc.WaitQueuePaused || !strings.Contains(err.Error(), "incident 42") {
		t.Fatalf("RunUntilEmpty with prod paused: %v", err)
	}
	if got := get(t, c, free.ID); got.Status != rediacc.StatusCompleted {
		t.Fatalf("the default team's task: %s", got.Status)
	}
	if err := c.ResumeQueue(owner, "prod"); err != nil {
		t.Fatal(err)
	}
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := get(t, c, paused.ID); got.Status != rediacc.StatusCompleted || got.Stdout != "prod\n" {
		t.Fatalf("after resume: %+v", got)
	}
}

// Schedules, windows, drains and pauses refer to teams and machines by
// id: a renamed team keeps them all (read under its new name, wait reasons
// saying it), and a machine removed and added again under the same name is
// another machine: no drain or window of the old one holds it, and the
// schedule pinned to the old one fails its fires rather than run there.
func TestSchedulesAndGatesFollowIDs(t *testing.T) { onStores(t, testSchedulesAndGatesFollowIDs) }

func testSchedulesAndGatesFollowIDs(t *testing.T, store func(*rediacc.Config)) {
	start := time.Date(2031, 5, 7, 12, 0, 0, 0, time.UTC)
	c, clock, alerts := schedClient(t, start, store)
	owner := asOwner()
	if _, err := c.CreateTeam(owner, "ops", ""); err != nil {
		t.Fatal(err)
	}
	inProcessTeamMachine(t, c, "db", "ops")
	s := createSchedule(t, c, rediacc.Schedule{Name: "hourly", Cron: "@hourly", Task: rediacc.TaskSpec{Machine: "db", Command: "echo ok"}})
	if _, err := c.CreateWindow(owner, rediacc.MaintenanceWindow{Machine: "db", Cron: "0 2 * * *", Duration: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if err := c.DrainMachine(owner, "db", "disk swap"); err != nil {
		t.Fatal(err)
	}
	if err := c.PauseQueue(owner, "ops", "freeze"); err != nil {
		t.Fatal(err)
	}
	if err := c.RenameTeam(owner, "ops", "platform"); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetSchedule(owner, "hourly")
	if err != nil || got.Team != "platform" || got.TeamID != s.TeamID || got.Task.Machine != "db" {
		t.Fatalf("the schedule after the team's rename: %+v %v", got, err)
	}
	ws, err := c.ListWindows(owner, rediacc.WindowFilter{Team: "platform"})
	if err != nil || len(ws) != 1 || ws[0].Team != "platform" || ws[0].Machine != "db" {
		t.Fatalf("windows of platform: %+v %v", ws, err)
	}
	gs, err := c.Gates(owner)
	if err != nil || len(gs) != 2 || gs[0].Machine != "db" || gs[0].Team != "platform" || gs[1].Kind != rediacc.GatePause || gs[1].Team != "platform" {
		t.Fatalf("gates after the rename: %+v %v", gs, err)
	}
	task := submit(t, c, rediacc.TaskSpec{Machine: "db", Priority: rediacc.Critical, Command: "echo held"})
	if w := get(t, c, task.ID).Waiting; len(w) != 1 || w[0].Code != rediacc.WaitMachineDraining || !strings.Contains(w[0].Message, "machine db draining") {
		t.Fatalf("wait reason while db drains: %+v", w)
	}
	if err := c.ResumeMachine(owner, "db"); err != nil {
		t.Fatal(err)
	}
	if w := get(t, c, task.ID).Waiting; len(w) != 1 || w[0].Code != rediacc.WaitQueuePaused || !strings.Contains(w[0].Message, "team platform paused") {
		t.Fatalf("wait reason while platform is paused: %+v", w)
	}
	if err := c.ResumeQueue(owner, "platform"); err != nil {
		t.Fatal(err)
	}
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	// db removed (drained first) and added again: another machine.
	if err := c.DrainMachine(owner, "db", "retired"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveMachine(owner, "db"); err != nil {
		t.Fatal(err)
	}
	inProcessTeamMachine(t, c, "db", "platform")
	sts, err := c.MachineStatus(owner, rediacc.MachineFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range sts {
		if st.Name == "db" && st.Draining != nil {
			t.Fatalf("the new db inherited the old one's drain: %+v", st.Draining)
		}
	}
	low := submit(t, c, rediacc.TaskSpec{Machine: "db", Priority: rediacc.Minimal, Command: "echo new"})
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil { // no window of the old db holds it
		t.Fatal(err)
	}
	if got := get(t, c, low.ID); got.Status != rediacc.StatusCompleted {
		t.Fatalf("a priority-5 task of the new db: %s %+v", got.Status, got.Waiting)
	}
	runAt(t, c, clock, start.Add(time.Hour+time.Second))
	fires, err := c.ScheduleFires(owner, "hourly", 0)
	if err != nil || len(fires) != 1 || fires[0].Outcome != rediacc.FireFailed || !strings.Contains(fires[0].Reason, "no longer registered") {
		t.Fatalf("the schedule pinned to the removed db: %+v %v", fires, err)
	}
	waitFor(t, "the schedule.failed alert", func() bool { return len(alerts.kinds(rediacc.AlertScheduleFailed)) >= 1 }) // delivered from the outbox
	if as := alerts.kinds(rediacc.AlertScheduleFailed); len(as) != 1 || as[0].Team != "platform" {
		t.Fatalf("schedule.failed alerts: %+v", as)
	}
}
