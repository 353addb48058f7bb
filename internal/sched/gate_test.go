package sched

import (
	"testing"
	"time"
)

func TestGatesCheck(t *testing.T) {
	t0 := time.Date(2031, 6, 10, 12, 0, 0, 0, time.UTC)
	g := Gates{
		Draining: []string{"m-drain"},
		Paused:   []string{"t-paused"},
		Windows: []WindowState{
			{ID: "team", Team: "t1", HoldFrom: 4, Opens: t0.Add(14 * time.Hour)},
			{ID: "m2-late", Team: "t1", Machine: "m2", HoldFrom: 5, Opens: t0.Add(20 * time.Hour)},
			{ID: "m2-early", Team: "t1", Machine: "m2", HoldFrom: 5, Opens: t0.Add(2 * time.Hour)},
			{ID: "m3-open", Team: "t1", Machine: "m3", HoldFrom: 3, Open: true, Closes: t0.Add(time.Hour)},
		},
	}
	for _, tc := range []struct {
		team, machine string
		prio          int
		h             GateHold
		until         time.Time
		window        string
	}{
		{"t1", "m-drain", 1, GateDraining, time.Time{}, ""},
		{"t-paused", "m9", 1, GatePaused, time.Time{}, ""},
		{"t1", "m1", 3, GateNone, time.Time{}, ""},                     // priority 1-3 run at any time
		{"t1", "m1", 4, GateWindow, t0.Add(14 * time.Hour), "team"},    // the team's window
		{"t2", "m1", 5, GateNone, time.Time{}, ""},                     // another team's machine of the same name is not governed
		{"t1", "m2", 4, GateWindow, t0.Add(14 * time.Hour), "team"},    // machine windows hold 5 only
		{"t1", "m2", 5, GateWindow, t0.Add(2 * time.Hour), "m2-early"}, // the earliest opening
		{"t1", "m3", 4, GateNone, time.Time{}, ""},                     // one open window governing it suffices
	} {
		h, until, w := g.Check(tc.team, tc.machine, tc.prio)
		name := ""
		if w != nil {
			name = w.ID
		}
		if h != tc.h || !until.Equal(tc.until) || name != tc.window {
			t.Errorf("Check(%s, %s, %d) = %s %v %q, want %s %v %q", tc.team, tc.machine, tc.prio, h, until, name, tc.h, tc.until, tc.window)
		}
	}
	if (Gates{}).Empty() != true || g.Empty() {
		t.Error("Empty")
	}
}

// A machine's window belongs to its team: once the machine has moved to
// another team, the old team's window no longer holds the new team's
// tasks on it.
func TestWindowOfAnotherTeamDoesNotApply(t *testing.T) {
	w := WindowState{ID: "w", Team: "old-team", Machine: "m1", HoldFrom: 4}
	if !w.Applies("old-team", "m1", 5) {
		t.Fatal("the window does not hold its own team's task on its machine")
	}
	if w.Applies("new-team", "m1", 5) {
		t.Fatal("the old team's window holds the new team's task on the machine it moved")
	}
	if w.Applies("old-team", "m2", 5) || w.Applies("old-team", "m1", 3) {
		t.Fatal("the window holds a task of another machine or a higher priority")
	}
}
