package store

import (
	"context"
	"time"
)

// Gates and maintenance windows: holds on claims that operators set.
//
// A gate holds every claim of its target until it is lifted: a machine
// draining (no new task starts on it; running ones finish) or a team's
// queue paused (tasks are accepted, none is claimed). A maintenance window
// holds the tasks of priority HoldFrom..5 of a machine (or of every
// machine of a team) while it is closed: they wait for the window to open.
// Engines read the gates and windows in the claim's transaction, so a
// drain or pause that committed is seen by every later claim.

// GateKind is what a gate holds.
type GateKind string

// Gate kinds.
const (
	// GateDrain: the machine Target takes no new task.
	GateDrain GateKind = "drain"
	// GatePause: the team Target's tasks are not claimed.
	GatePause GateKind = "pause"
)

// Valid reports whether k is a known kind.
func (k GateKind) Valid() bool { return k == GateDrain || k == GatePause }

// Gate is one gate in force.
type Gate struct {
	Kind   GateKind
	Target string // the machine (GateDrain) or team (GatePause) id
	Since  time.Time
	Actor  string // who set it
	Reason string // free text, may be empty
}

// Window is a maintenance window: it opens at every fire of Cron in
// TimeZone and stays open for Duration.
type Window struct {
	ID        string // immutable; CreateWindow gives a new UUID when empty
	TeamID    string // the team it belongs to
	MachineID string // the machine it applies to; "" = every machine of the team
	Cron      string // five fields or a descriptor (not @every)
	TimeZone  string // IANA zone; "" = UTC
	Duration  time.Duration
	// HoldFrom is the highest priority the window holds back: tasks of
	// base priority HoldFrom..5 wait for it to open. 1..5.
	HoldFrom  int
	CreatedAt time.Time
	Actor     string // who created it
}

// WindowFilter narrows ListWindows. Zero fields match everything.
type WindowFilter struct {
	TeamIDs []string // any of these teams (ids); nil = any
}

// Gates is the part of an engine that keeps gates and windows. Engines
// implement Engine, Access, Schedules and Gates.
//
// Every mutating method appends the audit records its context carries
// (WithAudit) in the same transaction as its change, only when it returns
// no error.
type Gates interface {
	// PutGate sets a gate and reports whether it was new; setting a gate
	// already in force keeps the first one (its Since, Actor, Reason), and
	// still appends the context's audit records. Since defaults to now.
	// ErrInvalidArgument (unknown kind, empty target or actor).
	PutGate(ctx context.Context, g Gate) (created bool, err error)
	// DeleteGate lifts a gate. ErrNotFound when it is not in force.
	DeleteGate(ctx context.Context, kind GateKind, target string) error
	// ListGates returns the gates in force ordered by kind then target.
	ListGates(ctx context.Context) ([]Gate, error)

	// CreateWindow inserts w (checked with cronspec: a calendar start in
	// a valid zone, a duration of 1m..7 days, HoldFrom 1..5) and returns
	// it as stored (ID a new UUID when empty, CreatedAt now when zero).
	// ErrExists (id); ErrInvalidArgument.
	CreateWindow(ctx context.Context, w Window) (Window, error)
	// DeleteWindow deletes a window. ErrNotFound.
	DeleteWindow(ctx context.Context, id string) error
	// GetWindow returns one window. ErrNotFound.
	GetWindow(ctx context.Context, id string) (Window, error)
	// ListWindows returns the windows matching f ordered by team, machine,
	// then id.
	ListWindows(ctx context.Context, f WindowFilter) ([]Window, error)
}
