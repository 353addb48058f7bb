package rediacc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/sched"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

// Gates: draining machines and pausing team queues.

// Kinds of Gate.
const (
	// GateDrain: no new task starts on the machine; running ones finish.
	GateDrain = string(store.GateDrain)
	// GatePause: the team's tasks are accepted but none is claimed.
	GatePause = string(store.GatePause)
)

// Gate is a drain of a machine or a pause of a team's queue, in force
// until an operator lifts it (ResumeMachine, ResumeQueue).
//
// Gates refer to machines and teams by id (a renamed machine stays
// drained); Machine and Team are their names when read.
type Gate struct {
	Kind      string    `json:"kind"`                // GateDrain or GatePause
	Machine   string    `json:"machine,omitempty"`   // the drained machine
	MachineID string    `json:"machineId,omitempty"` // its id
	Team      string    `json:"team"`                // the paused team, or the drained machine's team
	TeamID    string    `json:"teamId"`              // its id
	Since     time.Time `json:"since"`
	By        string    `json:"by"`
	Reason    string    `json:"reason,omitempty"`
}

// DrainMachine drains a machine: no new task is claimed for it (by any
// worker sharing the store); the tasks running on it finish. Its queued
// tasks wait ("machine … draining since …") until ResumeMachine. Draining
// a draining machine changes nothing. Needs machine.drain (team admins,
// owners). reason is free text for the audit trail and wait reasons.
// Errors: ErrNoActor, ErrPermissionDenied, ErrNotFound.
func (c *Client) DrainMachine(ctx context.Context, name, reason string) error {
	return c.setMachineGate(ctx, name, reason, true)
}

// ResumeMachine lifts a machine's drain; resuming a machine that is not
// draining changes nothing. Errors: as DrainMachine.
func (c *Client) ResumeMachine(ctx context.Context, name string) error {
	return c.setMachineGate(ctx, name, "", false)
}

func (c *Client) setMachineGate(ctx context.Context, name, reason string, on bool) error {
	if _, _, err := c.actor(ctx); err != nil {
		return err
	}
	m, err := c.engine.MachineByName(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return machineNotFound(name)
	} else if err != nil {
		return mapStoreErr(err)
	}
	if err := c.requireSeen(ctx, authz.MachineDrain, authz.MachineRead, teamScope(m.TeamID, m.Team), audit.EntityMachine, m.ID,
		map[string]string{"machine": m.Name}, machineNotFound(name)); err != nil {
		return err
	}
	return c.setGate(ctx, authz.MachineDrain, audit.EntityMachine, teamScope(m.TeamID, m.Team), store.GateDrain, m.ID, m.Name, reason, on,
		store.Condition{Kind: store.CondMachineInTeam, MachineID: m.ID, TeamID: m.TeamID})
}

// PauseQueue pauses a team's queue: tasks are still accepted (Submit,
// schedules) but no worker claims any until ResumeQueue; running tasks
// finish. Pausing a paused queue changes nothing. Needs queue.pause (team
// admins, owners). Errors: ErrNoActor, ErrPermissionDenied, ErrNotFound.
func (c *Client) PauseQueue(ctx context.Context, team, reason string) error {
	return c.setTeamGate(ctx, team, reason, true)
}

// ResumeQueue resumes a paused team queue; resuming a queue that is not
// paused changes nothing. Errors: as PauseQueue.
func (c *Client) ResumeQueue(ctx context.Context, team string) error {
	return c.setTeamGate(ctx, team, "", false)
}

func (c *Client) setTeamGate(ctx context.Context, team, reason string, on bool) error {
	if _, _, err := c.actor(ctx); err != nil {
		return err
	}
	sc, err := c.resolveTeam(ctx, team)
	if err != nil {
		return err
	}
	return c.setGate(ctx, authz.QueuePause, audit.EntityTeam, sc, store.GatePause, sc.id, sc.name, reason, on)
}

// setGate authorizes action on team and sets (on) or lifts the gate on
// target (an id; name is its label), under the guard conditions conds (the
// machine still in the team) as well as the actor's role.
func (c *Client) setGate(ctx context.Context, action authz.Action, etype string, team scope, kind store.GateKind, target, name, reason string, on bool, conds ...store.Condition) error {
	g, err := c.gates()
	if err != nil {
		return err
	}
	verb := map[bool]string{true: "set", false: "lift"}[on]
	detail := map[string]string{"gate": string(kind), "op": verb, "reason": reason}
	if kind == store.GateDrain {
		detail["machine"] = name
	}
	o, _, err := c.authorize(ctx, action, team, etype, target, detail)
	if err != nil {
		return err
	}
	if on {
		_, err = g.PutGate(o.ctx(ctx, conds...), store.Gate{Kind: kind, Target: target, Since: c.clock.Now().UTC(), Actor: o.actor, Reason: reason})
	} else if err = g.DeleteGate(o.ctx(ctx, conds...), kind, target); errors.Is(err, store.ErrNotFound) {
		o.done(ctx) // not in force: nothing to lift
		err = nil
	}
	if err != nil {
		return o.fail(ctx, mapStoreErr(err))
	}
	c.gatesChanged()
	c.log.InfoContext(ctx, "gate "+verb, "gate", string(kind), "target", name, "target_id", target, "team", team.label(), "actor", o.actor, "reason", reason)
	return nil
}

// Gates returns the drains and pauses in force in the teams the actor
// belongs to (owners: all), by kind then machine or team.
// Errors: ErrNoActor, ErrPermissionDenied.
func (c *Client) Gates(ctx context.Context) ([]Gate, error) {
	o, grants, err := c.authorizeAny(ctx, authz.MachineList, scope{}, audit.EntityMachine)
	if err != nil {
		return nil, err
	}
	g, err := c.gates()
	if err != nil {
		return nil, err
	}
	gs, err := g.ListGates(ctx)
	if err != nil {
		return nil, mapStoreErr(err)
	}
	out := []Gate{}
	live := c.newLiveness() // leftovers.go
	for _, gt := range gs {
		if ok, err := live.gateInForce(ctx, gt); err != nil {
			return nil, err
		} else if !ok {
			continue // a removed machine's drain, a deleted team's pause
		}
		pg, err := c.publicGate(ctx, gt)
		if err != nil {
			return nil, err
		}
		if authz.Allowed(grants, authz.MachineList, pg.TeamID) {
			out = append(out, pg)
		}
	}
	o.done(ctx)
	return out, nil
}

// publicGate is gt with the current names of its machine and team.
func (c *Client) publicGate(ctx context.Context, gt store.Gate) (Gate, error) {
	pg := Gate{Kind: string(gt.Kind), Since: gt.Since, By: gt.Actor, Reason: gt.Reason, TeamID: gt.Target}
	if gt.Kind == store.GateDrain {
		pg.MachineID, pg.Machine, pg.TeamID = gt.Target, gt.Target, ""
		m, err := c.engine.GetMachine(ctx, gt.Target)
		switch {
		case err == nil:
			pg.Machine, pg.TeamID = m.Name, m.TeamID
		case !errors.Is(err, store.ErrNotFound):
			return Gate{}, mapStoreErr(err)
		}
	}
	sc, err := c.scopeOfID(ctx, pg.TeamID)
	if err != nil {
		return Gate{}, err
	}
	pg.Team = sc.name
	return pg, nil
}

// gatesChanged is called after a gate or window changed: workers of this
// client see it at their next claim (claims read them in their
// transaction), so there is nothing to invalidate; it wakes the worker so
// that released tasks start at once.
func (c *Client) gatesChanged() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
	c.notify()
}

// Why tasks wait at a gate (WaitReason.Code).
const (
	// WaitMachineDraining: the task's machine is draining (DrainMachine);
	// it runs once an admin resumes the machine. No Until.
	WaitMachineDraining WaitCode = "machine-draining"
	// WaitQueuePaused: the task's team queue is paused (PauseQueue); it
	// runs once an admin resumes the queue. No Until.
	WaitQueuePaused WaitCode = "queue-paused"
	// WaitMaintenanceWindow: the task's priority waits for a maintenance
	// window of its machine or team to open. Until is the opening (zero
	// when no window governing it opens again).
	WaitMaintenanceWindow WaitCode = "maintenance-window"
)

// gateView is what a waitView read of the gates and windows (once).
type gateView struct {
	gates []store.Gate
	state sched.Gates
}

// gateState returns the gates in force at the view's instant, read once.
// A store that keeps none (or cannot be read now) gives none.
func (w *waitView) gateState() sched.Gates {
	if w.gates == nil {
		w.gates = &gateView{}
		if g, err := w.c.gates(); err == nil {
			gs, gerr := g.ListGates(w.ctx)
			ws, werr := g.ListWindows(w.ctx, store.WindowFilter{})
			if gerr == nil && werr == nil {
				w.gates.gates, w.gates.state = gs, fsm.GateState(gs, ws, w.now)
			}
		}
	}
	return w.gates.state
}

// gateReason explains a task held at a gate.
func (w *waitView) gateReason(h sched.Hold, until time.Time, r store.Task) WaitReason {
	find := func(kind store.GateKind, target string) store.Gate {
		for _, g := range w.gates.gates {
			if g.Kind == kind && g.Target == target {
				return g
			}
		}
		return store.Gate{}
	}
	by := func(g store.Gate) string {
		s := "by " + g.Actor
		if g.Reason != "" {
			s += ": " + clipLine(g.Reason, 120)
		}
		return s
	}
	switch h {
	case sched.HoldDraining:
		g := find(store.GateDrain, r.MachineID)
		return WaitReason{Code: WaitMachineDraining, Message: fmt.Sprintf("machine %s draining since %s (%s): no new task starts on it until rediacc machine resume %s",
			r.Machine, w.clock(g.Since), by(g), r.Machine)}
	case sched.HoldPaused:
		g := find(store.GatePause, r.TeamID)
		return WaitReason{Code: WaitQueuePaused, Message: fmt.Sprintf("queue of team %s paused since %s (%s): no task is claimed until rediacc queue resume --team %s",
			r.Team, w.clock(g.Since), by(g), r.Team)}
	}
	_, _, win := w.gates.state.Check(r.TeamID, r.MachineID, r.Priority)
	if win == nil || until.IsZero() {
		return WaitReason{Code: WaitMaintenanceWindow, Message: fmt.Sprintf(
			"waiting for a maintenance window of machine %s that never opens again: priority %d work does not run there until a window that opens is created or the closed one deleted (rediacc window list)", r.Machine, r.Priority)}
	}
	scope := "machine " + r.Machine // win.Machine is the task's machine (id)
	if win.Machine == "" {
		scope = "team " + r.Team
	}
	return WaitReason{Code: WaitMaintenanceWindow, Until: until, Message: fmt.Sprintf(
		"waiting for maintenance window, opens %s (%s): window %s of %s holds priority %d-5 until then",
		zonedClock(until, win.Zone, w.now), w.clock(until), shortID(win.ID), scope, win.HoldFrom)}
}

// zonedClock is t's time of day in zone ("02:00 Europe/Paris"), with the
// date when it is not now's day there.
func zonedClock(t time.Time, zone string, now time.Time) string {
	loc, err := time.LoadLocation(zone)
	if err != nil {
		loc = time.UTC
	}
	t, now = t.In(loc), now.In(loc)
	if y, m, d := t.Date(); y == now.Year() && m == now.Month() && d == now.Day() {
		return t.Format("15:04 ") + zone
	}
	return t.Format("2006-01-02 15:04 ") + zone
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// markDraining sets the Draining of the statuses whose machine is drained.
// A store whose gates cannot be read leaves them unset.
func (c *Client) markDraining(ctx context.Context, sts []MachineStatus) {
	g, err := c.gates()
	if err != nil {
		return
	}
	gs, err := g.ListGates(ctx)
	if err != nil {
		c.log.WarnContext(ctx, "machine status: reading the gates failed", "error", err)
		return
	}
	for _, gt := range gs {
		if gt.Kind != store.GateDrain {
			continue
		}
		for i := range sts {
			if sts[i].ID == gt.Target {
				sts[i].Draining = &Gate{Kind: GateDrain, Machine: sts[i].Name, MachineID: gt.Target, Team: sts[i].Team, TeamID: sts[i].TeamID,
					Since: gt.Since, By: gt.Actor, Reason: gt.Reason}
			}
		}
	}
}
