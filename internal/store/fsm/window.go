package fsm

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/rediacc/rediacc/internal/cronspec"
	"github.com/rediacc/rediacc/internal/sched"
	"github.com/rediacc/rediacc/internal/store"
)

// Gates and maintenance windows: checks and orders shared by the engines.

// NewGate checks g and fills its Since (now when zero).
func NewGate(g store.Gate, now time.Time) (store.Gate, error) {
	switch {
	case !g.Kind.Valid():
		return store.Gate{}, fmt.Errorf("%w: gate kind %q (want %s or %s)", store.ErrInvalidArgument, g.Kind, store.GateDrain, store.GatePause)
	case g.Target == "":
		return store.Gate{}, fmt.Errorf("%w: %s gate: empty target", store.ErrInvalidArgument, g.Kind)
	case g.Actor == "":
		return store.Gate{}, fmt.Errorf("%w: %s gate of %s: empty actor", store.ErrInvalidArgument, g.Kind, g.Target)
	}
	if err := checkTimes("Since", g.Since); err != nil {
		return store.Gate{}, err
	}
	if g.Since.IsZero() {
		g.Since = now
	}
	g.Since = Time(g.Since)
	return g, nil
}

// GateNotFound is DeleteGate's error.
func GateNotFound(kind store.GateKind, target string) error {
	return fmt.Errorf("%w: no %s gate on %s", store.ErrNotFound, kind, target)
}

// SortGates sorts gates by kind then target.
func SortGates(gs []store.Gate) {
	slices.SortFunc(gs, func(a, b store.Gate) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Target, b.Target))
	})
}

// NewWindow checks w (its start, zone, duration and HoldFrom) and fills
// its ID (a new UUID when empty) and CreatedAt (now when zero).
func NewWindow(w store.Window, now time.Time) (store.Window, error) {
	switch {
	case w.TeamID == "":
		return store.Window{}, fmt.Errorf("%w: window: empty team", store.ErrInvalidArgument)
	case w.Actor == "":
		return store.Window{}, fmt.Errorf("%w: window: empty actor", store.ErrInvalidArgument)
	case w.HoldFrom < 1 || w.HoldFrom > 5:
		return store.Window{}, fmt.Errorf("%w: window: hold-from priority %d is not in 1..5", store.ErrInvalidArgument, w.HoldFrom)
	}
	if _, err := ParseWindow(w); err != nil {
		return store.Window{}, fmt.Errorf("%w: %v", store.ErrInvalidArgument, err)
	}
	if err := checkTimes("CreatedAt", w.CreatedAt); err != nil {
		return store.Window{}, err
	}
	if w.ID == "" {
		w.ID = uuid.NewString()
	}
	if w.CreatedAt.IsZero() {
		w.CreatedAt = now
	}
	w.CreatedAt = Time(w.CreatedAt)
	return w, nil
}

// ParseWindow parses w's start and duration (errors wrap
// cronspec.ErrInvalid).
func ParseWindow(w store.Window) (cronspec.Window, error) {
	s, err := cronspec.Parse(w.Cron, w.TimeZone)
	if err != nil {
		return cronspec.Window{}, err
	}
	return cronspec.NewWindow(s, w.Duration)
}

// SortWindows sorts windows by team, machine, then id.
func SortWindows(ws []store.Window) {
	slices.SortFunc(ws, func(a, b store.Window) int {
		return cmp.Or(cmp.Compare(a.TeamID, b.TeamID), cmp.Compare(a.MachineID, b.MachineID), cmp.Compare(a.ID, b.ID))
	})
}

// MatchWindow reports whether w passes f.
func MatchWindow(w *store.Window, f store.WindowFilter) bool {
	return f.TeamIDs == nil || slices.Contains(f.TeamIDs, w.TeamID)
}

// GateState evaluates the gates and windows at instant now for the claim
// rule (sched.Gates): which machines drain, which teams are paused, and
// each window open or closed with its next opening. A window whose stored
// definition no longer parses is left out (it holds nothing).
func GateState(gates []store.Gate, windows []store.Window, now time.Time) sched.Gates {
	var g sched.Gates
	for _, gt := range gates {
		switch gt.Kind {
		case store.GateDrain:
			g.Draining = append(g.Draining, gt.Target)
		case store.GatePause:
			g.Paused = append(g.Paused, gt.Target)
		}
	}
	for _, w := range windows {
		cw, err := ParseWindow(w)
		if err != nil {
			continue
		}
		open, closes, opens := cw.State(now)
		g.Windows = append(g.Windows, sched.WindowState{ID: w.ID, Team: w.TeamID, Machine: w.MachineID, HoldFrom: w.HoldFrom,
			Open: open, Opens: opens, Closes: closes, Zone: cw.Start.Zone()})
	}
	return g
}
