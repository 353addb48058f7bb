package sched

import (
	"slices"
	"time"
)

// Gates are the holds operators set, as they stand at one claim's instant
// (issue 13): a machine draining takes no new task, a team's paused queue
// gives none, and a maintenance window holds the tasks of base priority
// HoldFrom..5 of its machine (or of every machine of its team) while it is
// closed. A window's gate ends when it opens (Until); a drain or a pause
// ends when an operator lifts it (no Until). Aging does not lift a task
// past a gate: the gate is the operator's intent, and its end is known.
type Gates struct {
	Draining []string // machine ids
	Paused   []string // team ids
	Windows  []WindowState
}

// WindowState is one maintenance window at the claim's instant.
type WindowState struct {
	ID       string
	Team     string // the window's team (id)
	Machine  string // the machine (id) it applies to; "" = every machine of Team
	HoldFrom int    // tasks of base priority HoldFrom..5 wait for it
	Open     bool
	// Opens is the next opening when closed (zero when it never opens
	// again within the cron library's horizon); Closes the end of the
	// current opening when open.
	Opens, Closes time.Time
	Zone          string // the window's time zone, for messages
}

// GateHold is the kind of gate that holds a task.
type GateHold int

// Gate holds, in the order GateCheck tests them.
const (
	GateNone     GateHold = iota // no gate holds the task
	GateDraining                 // its machine is draining
	GatePaused                   // its team's queue is paused
	GateWindow                   // it waits for a maintenance window to open
)

var gateNames = [...]string{"none", "draining", "paused", "window"}

func (h GateHold) String() string {
	if h >= 0 && int(h) < len(gateNames) {
		return gateNames[h]
	}
	return "GateHold(?)"
}

// Applies reports whether w governs a task of base priority prio of team
// on machine. A window belongs to its team: a machine's window governs
// only that team's tasks (a machine moved to another team leaves it
// behind).
func (w WindowState) Applies(team, machine string, prio int) bool {
	return prio >= w.HoldFrom && w.Team == team && (w.Machine == machine || w.Machine == "")
}

// Check reports whether g holds a task of base priority prio of team on
// machine, and why. For GateWindow, until is the earliest opening among the
// windows that hold it (zero when none opens again) and w that window;
// a task is held only when every window that governs it is closed.
func (g Gates) Check(team, machine string, prio int) (h GateHold, until time.Time, w *WindowState) {
	switch {
	case slices.Contains(g.Draining, machine):
		return GateDraining, time.Time{}, nil
	case slices.Contains(g.Paused, team):
		return GatePaused, time.Time{}, nil
	}
	for i := range g.Windows {
		ws := &g.Windows[i]
		if !ws.Applies(team, machine, prio) {
			continue
		}
		if ws.Open {
			return GateNone, time.Time{}, nil
		}
		if w == nil || (!ws.Opens.IsZero() && (w.Opens.IsZero() || ws.Opens.Before(w.Opens))) {
			w = ws
		}
	}
	if w == nil {
		return GateNone, time.Time{}, nil
	}
	return GateWindow, w.Opens, w
}

// Empty reports whether no gate is set.
func (g Gates) Empty() bool { return len(g.Draining) == 0 && len(g.Paused) == 0 && len(g.Windows) == 0 }

// gate is Check's part for p.Gates: HoldDraining, HoldPaused or
// HoldWindow (until the earliest opening of the windows that hold c), or
// HoldNone. Each holds by machine, team or base priority, so a hold is
// monotone along a (machine, priority) stream.
func (p Policy) gate(c Candidate) (Hold, time.Time) {
	if p.Gates.Empty() {
		return HoldNone, time.Time{}
	}
	switch h, until, _ := p.Gates.Check(c.Team, c.Machine, c.Priority); h {
	case GateDraining:
		return HoldDraining, time.Time{}
	case GatePaused:
		return HoldPaused, time.Time{}
	case GateWindow:
		return HoldWindow, until
	}
	return HoldNone, time.Time{}
}
