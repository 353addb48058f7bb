package rediacc

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

// DefaultWindowHoldFrom is MaintenanceWindow.HoldFrom's default: tasks of
// priority 4 (Low) and 5 (Minimal) wait for the window; 1–3 run at any
// time.
const DefaultWindowHoldFrom = Low

// MaintenanceWindow is a recurring period ("off-peak hours") in which the
// low-priority work of a machine, or of every machine of a team, may run:
// tasks of priority HoldFrom..5 on those machines are not claimed while the
// window is closed, and wait for it to open (their wait reason says when:
// "waiting for maintenance window …, opens 2031-06-11 02:00 CEST
// (Europe/Paris)"). Higher priorities run at any time. When several
// windows govern a task, it may run while any of them is open. Aging does
// not lift a task past a window: the window's opening is the gate's end.
type MaintenanceWindow struct {
	// ID is the window's immutable id (a UUID), set by CreateWindow.
	ID string `json:"windowId"`
	// Team owns the window; with Machine set it defaults to the machine's
	// team (and must be it).
	Team string `json:"team"`
	// Machine is the machine it applies to; "" means every machine of Team.
	Machine string `json:"machine,omitempty"`
	// TeamID and MachineID are the ids the window refers to them by (set
	// by the SDK): a renamed machine keeps its windows.
	TeamID    string `json:"teamId"`
	MachineID string `json:"machineId,omitempty"`
	// Cron is when the window opens: five fields or a descriptor such as
	// @daily (not @every), read in TimeZone (see Schedule.Cron).
	Cron string `json:"cron"`
	// TimeZone is an IANA zone; "" means UTC.
	TimeZone string `json:"timeZone"`
	// Duration is how long it stays open: 1m to 7 days.
	Duration time.Duration `json:"-"`
	// HoldFrom is the highest priority the window holds back: tasks of
	// priority HoldFrom..5 wait for it. Default DefaultWindowHoldFrom (4).
	HoldFrom Priority `json:"holdFrom"`

	CreatedAt time.Time `json:"createdAt"`
	CreatedBy string    `json:"createdBy"`
	// Open, OpensAt and ClosesAt describe the window when it was read:
	// open until ClosesAt, or closed until OpensAt (zero when it never
	// opens again within the cron library's five-year horizon).
	Open     bool      `json:"open"`
	OpensAt  time.Time `json:"opensAt,omitzero"`
	ClosesAt time.Time `json:"closesAt,omitzero"`
	// DurationSeconds is Duration in the JSON form.
	DurationSeconds float64 `json:"duration"`
}

// WindowFilter narrows ListWindows. Zero fields match everything.
type WindowFilter struct {
	Team string
}

// gates is the store's Gates part.
func (c *Client) gates() (store.Gates, error) {
	g, ok := c.engine.(store.Gates)
	if !ok {
		return nil, fmt.Errorf("rediacc: store %s keeps no gates or maintenance windows", c.st)
	}
	return g, nil
}

// CreateWindow creates a maintenance window. Needs window.create (team
// admins, owners) in its team. Nothing is written when an error is
// returned.
//
// Errors: ErrNoActor, ErrPermissionDenied, ErrInvalidArgument (bad cron
// expression, an @every start, time zone, duration or HoldFrom),
// ErrInvalidPriority, ErrUnknownMachine, ErrNotFound (team).
func (c *Client) CreateWindow(ctx context.Context, w MaintenanceWindow) (*MaintenanceWindow, error) {
	if _, _, err := c.actor(ctx); err != nil {
		return nil, err
	}
	g, err := c.gates()
	if err != nil {
		return nil, err
	}
	var (
		sc    scope
		conds []store.Condition
	)
	if w.Machine != "" {
		m, err := c.engine.MachineByName(ctx, w.Machine)
		if errors.Is(err, store.ErrNotFound) {
			return nil, unknownMachine(w.Machine)
		} else if err != nil {
			return nil, mapStoreErr(err)
		}
		if err := c.requireSeen(ctx, authz.WindowCreate, authz.MachineRead, teamScope(m.TeamID, m.Team), audit.EntityMachine, m.ID,
			map[string]string{"machine": m.Name}, unknownMachine(w.Machine)); err != nil {
			return nil, err // before naming the machine's team
		}
		if w.Team != "" && w.Team != m.Team {
			return nil, fmt.Errorf("%w: machine %q is in team %q, not %q", ErrInvalidArgument, m.Name, m.Team, w.Team)
		}
		w.Team, w.MachineID, sc = m.Team, m.ID, teamScope(m.TeamID, m.Team)
		conds = append(conds, store.Condition{Kind: store.CondMachineInTeam, MachineID: m.ID, TeamID: m.TeamID})
	} else if w.Team != "" {
		if sc, err = c.resolveTeam(ctx, w.Team); err != nil {
			return nil, err
		}
	}
	if w.Team == "" {
		return nil, fmt.Errorf("%w: a maintenance window needs a machine or a team", ErrInvalidArgument)
	}
	id := uuid.NewString()
	o, _, err := c.authorize(ctx, authz.WindowCreate, sc, audit.EntityWindow, id, map[string]string{
		"machine": w.Machine, "machine_id": w.MachineID, "cron": w.Cron, "timezone": w.TimeZone, "duration": w.Duration.String()})
	if err != nil {
		return nil, err
	}
	if w.HoldFrom == 0 {
		w.HoldFrom = DefaultWindowHoldFrom
	}
	if err := w.HoldFrom.Validate(); err != nil {
		return nil, o.fail(ctx, err)
	}
	o.detail["hold_from"] = strconv.Itoa(int(w.HoldFrom))
	rec := store.Window{ID: id, TeamID: sc.id, MachineID: w.MachineID, Cron: w.Cron, TimeZone: w.TimeZone,
		Duration: w.Duration, HoldFrom: int(w.HoldFrom), CreatedAt: c.clock.Now().UTC(), Actor: o.actor}
	if cw, err := fsm.ParseWindow(rec); err != nil {
		return nil, o.fail(ctx, fmt.Errorf("%w: maintenance window: %v", ErrInvalidArgument, err))
	} else {
		rec.TimeZone = cw.Start.Zone()
	}
	rec, err = g.CreateWindow(o.ctx(ctx, conds...), rec)
	if err != nil {
		return nil, o.fail(ctx, mapStoreErr(err))
	}
	c.gatesChanged()
	out, err := c.publicWindow(ctx, rec)
	if err != nil {
		return nil, err
	}
	c.log.InfoContext(ctx, "maintenance window created", "window", rec.ID, "team", sc.label(), "machine", w.Machine,
		"cron", rec.Cron, "time_zone", rec.TimeZone, "duration", rec.Duration, "hold_from", rec.HoldFrom, "actor", o.actor)
	return out, nil
}

// publicWindow turns a stored window into a MaintenanceWindow with its
// state now and the current names of its team and machine.
func (c *Client) publicWindow(ctx context.Context, r store.Window) (*MaintenanceWindow, error) {
	sc, err := c.scopeOfID(ctx, r.TeamID)
	if err != nil {
		return nil, err
	}
	w := &MaintenanceWindow{ID: r.ID, Team: sc.name, TeamID: r.TeamID, Machine: r.MachineID, MachineID: r.MachineID, Cron: r.Cron, TimeZone: r.TimeZone,
		Duration: r.Duration, DurationSeconds: r.Duration.Seconds(), HoldFrom: Priority(r.HoldFrom),
		CreatedAt: r.CreatedAt, CreatedBy: r.Actor}
	if cw, err := fsm.ParseWindow(r); err == nil {
		w.Open, w.ClosesAt, w.OpensAt = cw.State(c.clock.Now().UTC())
	}
	if r.MachineID != "" {
		m, err := c.engine.GetMachine(ctx, r.MachineID)
		switch {
		case err == nil:
			w.Machine = m.Name
		case !errors.Is(err, store.ErrNotFound):
			return nil, mapStoreErr(err)
		}
	}
	return w, nil
}

// DeleteWindow deletes a maintenance window. Needs window.delete (team
// admins, owners) in its team.
// Errors: ErrNoActor, ErrPermissionDenied, ErrNotFound, ErrInvalidArgument
// (id is not a UUID).
func (c *Client) DeleteWindow(ctx context.Context, id string) error {
	if _, _, err := c.actor(ctx); err != nil {
		return err
	}
	if err := checkTaskID("maintenance window", id); err != nil { // input.go
		return err
	}
	g, err := c.gates()
	if err != nil {
		return err
	}
	r, err := g.GetWindow(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("maintenance window %s: %w", quoteInput(id), ErrNotFound)
	} else if err != nil {
		return mapStoreErr(err)
	}
	sc, err := c.scopeOfID(ctx, r.TeamID)
	if err != nil {
		return err
	}
	o, _, err := c.authorizeSeen(ctx, authz.WindowList, fmt.Errorf("maintenance window %q: %w", id, ErrNotFound), authz.WindowDelete, sc, audit.EntityWindow, id, map[string]string{"machine_id": r.MachineID, "cron": r.Cron})
	if err != nil {
		return err
	}
	if err := g.DeleteWindow(o.ctx(ctx), id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = fmt.Errorf("maintenance window %s: %w", quoteInput(id), ErrNotFound)
		}
		return o.fail(ctx, mapStoreErr(err))
	}
	c.gatesChanged()
	return nil
}

// ListWindows returns the maintenance windows of the teams the actor
// belongs to (owners: all), by team, machine and id, each with its state
// now. Errors: ErrNoActor, ErrPermissionDenied (a Team the actor has no
// role in).
func (c *Client) ListWindows(ctx context.Context, f WindowFilter) ([]*MaintenanceWindow, error) {
	var sc scope
	if f.Team != "" {
		var err error
		if sc, err = c.resolveTeam(ctx, f.Team); err != nil {
			return nil, err
		}
	}
	teams, o, err := c.scopeTeams(ctx, authz.WindowList, sc, audit.EntityWindow)
	if err != nil {
		return nil, err
	}
	g, err := c.gates()
	if err != nil {
		return nil, err
	}
	rs, err := g.ListWindows(ctx, store.WindowFilter{TeamIDs: teams})
	if err != nil {
		return nil, mapStoreErr(err)
	}
	out := make([]*MaintenanceWindow, 0, len(rs))
	live := c.newLiveness() // leftovers.go
	for _, r := range rs {
		if ok, err := live.windowInForce(ctx, r); err != nil {
			return nil, err
		} else if !ok {
			continue // of a removed machine, a machine that left the team, a deleted team
		}
		w, err := c.publicWindow(ctx, r)
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	o.done(ctx)
	return out, nil
}
