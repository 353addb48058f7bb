package rediacc_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
)

// What a removed machine or a deleted team leaves behind is not listed: a
// removed machine's drain and windows, a deleted team's pause and windows,
// a machine window its machine took to another team. A team with
// schedules is not deleted (refused, naming them): they would be left
// behind.
func TestRemovedLeavesNothingListed(t *testing.T) {
	f := newRoleFixture(t)
	c := f.c
	owner := as("owner")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	add := func(name, team string) {
		t.Helper()
		_, err := c.AddMachine(owner, rediacc.Machine{Name: name, Team: team, Host: "127.0.0.9", User: "u", IdentityFile: f.keyFile, HostKeyPolicy: rediacc.HostKeyInsecureIgnore})
		must(err)
	}
	window := func(machine, team string) *rediacc.MaintenanceWindow {
		t.Helper()
		w, err := c.CreateWindow(owner, rediacc.MaintenanceWindow{Machine: machine, Team: team, Cron: "0 2 * * *", Duration: time.Hour})
		must(err)
		return w
	}
	listed := func() (gates []string, windows []string) {
		t.Helper()
		gs, err := c.Gates(owner)
		must(err)
		for _, g := range gs {
			gates = append(gates, g.Kind+":"+g.Machine+g.Team)
		}
		ws, err := c.ListWindows(owner, rediacc.WindowFilter{})
		must(err)
		for _, w := range ws {
			windows = append(windows, w.ID)
		}
		return gates, windows
	}
	has := func(list []string, s string) bool {
		for _, x := range list {
			if strings.Contains(x, s) {
				return true
			}
		}
		return false
	}

	// A removed machine: its drain and its window go from the listings.
	add("gone-01", "prod")
	must(c.DrainMachine(owner, "gone-01", "disk swap"))
	gw := window("gone-01", "")
	if g, w := listed(); !has(g, "gone-01") || !has(w, gw.ID) {
		t.Fatalf("before removal: gates %v windows %v", g, w)
	}
	must(c.RemoveMachine(owner, "gone-01"))
	if g, w := listed(); has(g, "drain:") || has(w, gw.ID) {
		t.Errorf("after removal: gates %v windows %v (the removed machine's drain and window are listed)", g, w)
	}

	// A machine moved to another team leaves its old team's window behind.
	add("mv-01", "prod")
	mw := window("mv-01", "")
	must(c.MoveMachine(owner, "mv-01", "staging"))
	if _, w := listed(); has(w, mw.ID) {
		t.Errorf("after the move: prod's window of mv-01 is still listed (%v)", w)
	}

	// A deleted team: refused while it has schedules; then its pause and
	// its team window go from the listings.
	_, err := c.CreateTeam(owner, "tmp", "")
	must(err)
	must(c.PauseQueue(owner, "tmp", "freeze"))
	tw := window("", "tmp")
	_, err = c.CreateSchedule(owner, rediacc.Schedule{Name: "tmp-hourly", Team: "tmp", Cron: "0 * * * *", Task: rediacc.TaskSpec{Command: "true"}})
	must(err)
	err = c.DeleteTeam(owner, "tmp")
	if !errors.Is(err, rediacc.ErrTeamNotEmpty) || !strings.Contains(err.Error(), "tmp-hourly") {
		t.Fatalf("delete a team with a schedule: %v, want ErrTeamNotEmpty naming it", err)
	}
	if g, w := listed(); !has(g, "tmp") || !has(w, tw.ID) {
		t.Fatalf("before the delete: gates %v windows %v", g, w)
	}
	must(c.DeleteSchedule(owner, "tmp-hourly"))
	must(c.DeleteTeam(owner, "tmp"))
	if g, w := listed(); has(g, "pause:") || has(w, tw.ID) {
		t.Errorf("after the delete: gates %v windows %v (the deleted team's pause and window are listed)", g, w)
	}
}
