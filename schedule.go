package rediacc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/cronspec"
	"github.com/rediacc/rediacc/internal/store"
)

// OverlapPolicy says what a schedule's fire does while the task of an
// earlier fire is still PENDING, ASSIGNED or PROCESSING.
type OverlapPolicy string

// Overlap policies.
const (
	// OverlapSkip (the default) records the fire as skipped and submits
	// nothing; an AlertScheduleMissed says so.
	OverlapSkip OverlapPolicy = store.OverlapSkip
	// OverlapAllow submits the task anyway: runs may overlap.
	OverlapAllow OverlapPolicy = store.OverlapAllow
	// OverlapCancelPrevious cancels the unfinished tasks of earlier fires
	// (a running one has its remote command stopped) and submits the new
	// one.
	OverlapCancelPrevious OverlapPolicy = store.OverlapCancelPrevious
)

// MissedRunPolicy says what a schedule does about fires missed while no
// worker fired it (every worker down, or late by more than the misfire
// threshold).
type MissedRunPolicy string

// Missed-run policies.
const (
	// MissedSkip (the default) records the missed fires and raises an
	// AlertScheduleMissed; the schedule goes on at its next fire.
	MissedSkip MissedRunPolicy = "skip"
	// MissedRunOnce submits one catch-up task for all the missed fires
	// (scheduled at the last of them), never one per missed fire.
	MissedRunOnce MissedRunPolicy = "run-once"
)

// DefaultMisfireThreshold is how late a fire may be and still run as an
// on-time fire (Schedule.MisfireThreshold's default): one minute.
const DefaultMisfireThreshold = time.Minute

// MaxMisfireThreshold bounds Schedule.MisfireThreshold: a day.
const MaxMisfireThreshold = 24 * time.Hour

// ErrScheduleOverlap: TriggerSchedule found the task of an earlier fire
// unfinished under OverlapSkip; nothing was submitted (the skipped fire is
// in the schedule's history). The error names the unfinished tasks.
var ErrScheduleOverlap = errors.New("the schedule's previous run is not finished (overlap policy skip)")

// Schedule is a recurring task of a team: at each fire of Cron in
// TimeZone a worker submits Task as an ordinary task (same retries,
// alerts, audit and secrets), linked to the schedule and its scheduled
// time (Task.ScheduleID, Task.ScheduledAt). Schedules fire while at least
// one worker (Run) of the store runs; several workers, in any number of
// processes, fire each schedule exactly once per fire time.
//
// The first five fields and the policies are the definition (given to
// CreateSchedule and UpdateSchedule); the rest is the schedule's state,
// filled by the SDK.
type Schedule struct {
	// ID is the schedule's immutable id (a UUID), set by CreateSchedule.
	ID string
	// Name is unique in the store: 1..63 characters of [a-z0-9._-],
	// starting with a letter or digit.
	Name string
	// Team owns the schedule. With Task.Machine set it defaults to the
	// machine's team (and must be it); otherwise it is required, and the
	// task is placed on the team's machines (Task.Selector) like Submit
	// does. Schedules refer to their team by id (TeamID, set by the SDK):
	// a renamed team keeps its schedules; Team is its name when read.
	Team   string
	TeamID string
	// Cron is the recurrence, parsed by github.com/robfig/cron/v3: five
	// fields (minute hour day-of-month month day-of-week, "0 2 * * *"), or
	// @yearly, @monthly, @weekly, @daily, @hourly, or @every DURATION (at
	// least one minute, counted from the schedule's creation). See
	// docs/SCHEDULES.md for daylight-saving nights.
	Cron string
	// TimeZone is the IANA zone Cron is read in ("Europe/Paris"); "" means
	// UTC. "Local" is refused (a store is shared by hosts).
	TimeZone string
	// Task is what each fire submits: a machine, or (Machine empty) a
	// placement on Team's machines matching Selector. Team, if set, must
	// be the schedule's. IdempotencyKey must be empty.
	Task TaskSpec
	// All submits one task per machine of Team matching Task.Selector at
	// each fire (a fan-out, like FanOut) instead of one placed task.
	All bool
	// Overlap is what a fire does while an earlier fire's task is
	// unfinished. Default OverlapSkip.
	Overlap OverlapPolicy
	// MissedRun is what happens to fires missed while no worker fired
	// them. Default MissedSkip.
	MissedRun MissedRunPolicy
	// MisfireThreshold is how late (after its time) a fire may still be
	// fired as on time; a fire found later is missed. Default
	// DefaultMisfireThreshold (1 min); at most MaxMisfireThreshold. The
	// term is Quartz's.
	MisfireThreshold time.Duration
	// Paused schedules do not fire; fires that fall while a schedule is
	// paused are neither run nor counted as missed.
	Paused bool

	// Owner is the user whose authority fires the schedule: its creator,
	// or the last user who changed it with UpdateSchedule (as in Rundeck).
	// At every fire the owner must still hold task.create (and vault.use
	// for secrets) in Team, and a pinned machine must still be in Team;
	// otherwise the fire fails (FireFailed, AlertScheduleFailed) and
	// submits nothing.
	Owner     string
	CreatedAt time.Time
	UpdatedAt time.Time
	// NextFireAt is the next fire time (UTC); zero while paused.
	NextFireAt time.Time
	// LastFire is the last recorded fire (nil before the first).
	LastFire *ScheduleFire
	// LastStatus sums up the last fire: its task's status (or, for a
	// fan-out, counts such as "2 COMPLETED, 1 FAILED"), or the fire's
	// outcome when it submitted nothing ("skipped", "missed", "failed");
	// "" before the first fire.
	LastStatus string
}

// Fire outcomes (ScheduleFire.Outcome).
const (
	// FireCreated: the fire submitted its task(s).
	FireCreated = store.FireCreated
	// FireSkipped: an earlier fire's task was unfinished (OverlapSkip).
	FireSkipped = store.FireSkipped
	// FireMissed: the fire was missed and not caught up (MissedSkip).
	FireMissed = store.FireMissed
	// FireFailed: the fire could not submit its task (Reason says why:
	// the owner lost the role, the machine left the team, no eligible
	// machine).
	FireFailed = store.FireFailed
)

// ScheduleFire is one recorded fire of a schedule.
type ScheduleFire struct {
	// ScheduledAt is the fire time (for a manual fire, when it was asked).
	ScheduledAt time.Time `json:"scheduledAt"`
	// FiredAt is when a worker recorded it; FiredAt-ScheduledAt is the
	// fire's lag.
	FiredAt time.Time `json:"firedAt"`
	// Manual marks TriggerSchedule's fires.
	Manual bool `json:"manual,omitempty"`
	// Outcome is FireCreated, FireSkipped, FireMissed or FireFailed.
	Outcome string `json:"outcome"`
	// Reason says why a fire was skipped, missed or failed.
	Reason string `json:"reason,omitempty"`
	// TaskIDs are the tasks it submitted.
	TaskIDs []string `json:"taskIds,omitempty"`
	// CancelledIDs are the earlier tasks it cancelled
	// (OverlapCancelPrevious).
	CancelledIDs []string `json:"cancelledIds,omitempty"`
	// MissedFrom and MissedTo span the missed fires this decision covered
	// (zero when none); CatchUp marks a MissedRunOnce fire run for them.
	MissedFrom time.Time `json:"missedFrom,omitzero"`
	MissedTo   time.Time `json:"missedTo,omitzero"`
	CatchUp    bool      `json:"catchUp,omitempty"`
}

func fireFromRecord(f store.Fire) ScheduleFire {
	return ScheduleFire{ScheduledAt: f.ScheduledAt, FiredAt: f.FiredAt, Manual: f.Manual, Outcome: f.Outcome, Reason: f.Reason,
		TaskIDs: f.TaskIDs, CancelledIDs: f.CancelledIDs, MissedFrom: f.MissedFrom, MissedTo: f.MissedTo, CatchUp: f.CatchUp}
}

// scheduleSpecJSON is how a schedule's definition is kept in the store
// (store.Schedule.Spec).
type scheduleSpecJSON struct {
	Cron        string          `json:"cron"`
	TimeZone    string          `json:"timeZone"`
	Machine     string          `json:"machine,omitempty"`   // the pinned machine's name when the schedule was written (a label)
	MachineID   string          `json:"machineId,omitempty"` // the pinned machine (id)
	Priority    int             `json:"priority"`
	All         bool            `json:"all,omitempty"`
	Task        json.RawMessage `json:"task"` // specJSON
	Overlap     OverlapPolicy   `json:"overlap"`
	MissedRun   MissedRunPolicy `json:"missedRun"`
	MisfireNS   time.Duration   `json:"misfireThresholdNs"`
	Description string          `json:"description,omitempty"`
}

// scheduleDef is a decoded, parsed schedule definition.
type scheduleDef struct {
	s         Schedule // the definition fields; Task.Team is the schedule's team (name)
	cron      *cronspec.Spec
	team      scope  // the schedule's team (set by scheduleTarget or decodeSchedule)
	machineID string // the pinned machine's id ("" when placed)
}

// normalize checks a schedule's definition (not against the store) and
// fills its defaults. Errors wrap ErrInvalidArgument (ErrInvalidTask for
// the task).
func (s Schedule) normalize() (scheduleDef, error) {
	bad := func(format string, a ...any) (scheduleDef, error) {
		return scheduleDef{}, fmt.Errorf("%w: schedule %q: %s", ErrInvalidArgument, s.Name, fmt.Sprintf(format, a...))
	}
	if !machineNameRE.MatchString(s.Name) {
		return bad("the name must be 1..63 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit")
	}
	spec, err := cronspec.Parse(s.Cron, s.TimeZone)
	if err != nil {
		return scheduleDef{}, fmt.Errorf("%w: schedule %q: %v", ErrInvalidArgument, s.Name, err)
	}
	s.TimeZone = spec.Zone()
	switch s.Overlap {
	case "":
		s.Overlap = OverlapSkip
	case OverlapSkip, OverlapAllow, OverlapCancelPrevious:
	default:
		return bad("overlap policy %q (use skip, allow or cancel-previous)", s.Overlap)
	}
	switch s.MissedRun {
	case "":
		s.MissedRun = MissedSkip
	case MissedSkip, MissedRunOnce:
	default:
		return bad("missed-run policy %q (use skip or run-once)", s.MissedRun)
	}
	switch {
	case s.MisfireThreshold == 0:
		s.MisfireThreshold = DefaultMisfireThreshold
	case s.MisfireThreshold < time.Second || s.MisfireThreshold > MaxMisfireThreshold:
		return bad("misfire threshold %s is outside 1s..%s", s.MisfireThreshold, MaxMisfireThreshold)
	}
	t := s.Task
	switch {
	case t.IdempotencyKey != "":
		return bad("its task has an idempotency key: each fire is its own task (the schedule makes fires unique)")
	case t.Team != "" && s.Team != "" && t.Team != s.Team:
		return bad("its task names team %q, the schedule team %q", t.Team, s.Team)
	case s.All && (t.Machine != "" || s.Team == ""):
		return bad("a fan-out schedule (All) needs a team and no machine")
	case t.Machine == "" && s.Team == "":
		return bad("name a machine (Task.Machine) or a team (Team) to place the task in")
	}
	t.Team = s.Team
	if t, err = t.normalize(); err != nil {
		return scheduleDef{}, fmt.Errorf("schedule %q: %w", s.Name, err)
	}
	s.Task = t
	return scheduleDef{s: s, cron: spec}, nil
}

// encode writes the definition as the store's spec.
func (d scheduleDef) encode() ([]byte, error) {
	t := d.s.Task
	task, err := encodeSpec(t)
	if err != nil {
		return nil, err
	}
	return json.Marshal(scheduleSpecJSON{
		Cron: d.s.Cron, TimeZone: d.s.TimeZone, Machine: t.Machine, MachineID: d.machineID, Priority: int(t.Priority), All: d.s.All,
		Task: task, Overlap: d.s.Overlap, MissedRun: d.s.MissedRun, MisfireNS: d.s.MisfireThreshold,
	})
}

// decodeSchedule reads a stored schedule's definition. Names are the
// labels stored with it (the team's id for the team); labelSchedule reads
// the current ones.
func decodeSchedule(r store.Schedule) (scheduleDef, error) {
	var j scheduleSpecJSON
	if err := json.Unmarshal(r.Spec, &j); err != nil {
		return scheduleDef{}, fmt.Errorf("%w: schedule %s has an unreadable definition: %v", ErrCorruptStore, r.Name, err)
	}
	task, err := taskFromRecord(store.Task{ID: "-", TeamID: r.TeamID, Team: r.TeamID, MachineID: j.MachineID, Machine: j.Machine, Priority: j.Priority, Spec: j.Task})
	if err != nil {
		return scheduleDef{}, fmt.Errorf("%w: schedule %s: %v", ErrCorruptStore, r.Name, err)
	}
	spec, err := cronspec.Parse(j.Cron, j.TimeZone)
	if err != nil {
		return scheduleDef{}, fmt.Errorf("%w: schedule %s: %v", ErrCorruptStore, r.Name, err)
	}
	ts := task.TaskSpec
	ts.Team = r.TeamID
	return scheduleDef{cron: spec, team: teamScope(r.TeamID, r.TeamID), machineID: j.MachineID, s: Schedule{
		ID: r.ID, Name: r.Name, Team: r.TeamID, TeamID: r.TeamID, Cron: j.Cron, TimeZone: j.TimeZone, Task: ts, All: j.All,
		Overlap: j.Overlap, MissedRun: j.MissedRun, MisfireThreshold: j.MisfireNS, Paused: r.Paused,
		Owner: r.Owner, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, NextFireAt: r.NextFireAt,
	}}, nil
}

// labelSchedule sets the current names of d's team and pinned machine
// (a deleted one keeps its last name).
func (c *Client) labelSchedule(ctx context.Context, d *scheduleDef) error {
	sc, err := c.scopeOfID(ctx, d.team.id)
	if err != nil {
		return err
	}
	d.team, d.s.Team, d.s.Task.Team = sc, sc.name, sc.name
	if d.machineID != "" {
		m, err := c.engine.GetMachine(ctx, d.machineID)
		switch {
		case err == nil:
			d.s.Task.Machine = m.Name
		case !errors.Is(err, store.ErrNotFound):
			return mapStoreErr(err)
		}
	}
	return nil
}

// schedules is the store's Schedules part.
func (c *Client) schedules() (store.Schedules, error) {
	s, ok := c.engine.(store.Schedules)
	if !ok {
		return nil, fmt.Errorf("rediacc: store %s keeps no schedules", c.st)
	}
	return s, nil
}

// scheduleTarget resolves a definition against the store: the team, and
// the pinned machine (checked to be in the team and to match the
// selector). ErrUnknownMachine, ErrNotFound (team), ErrInvalidTask.
func (c *Client) scheduleTarget(ctx context.Context, d *scheduleDef) error {
	t := &d.s.Task
	if t.Machine == "" {
		sc, err := c.resolveTeam(ctx, d.s.Team)
		if err != nil {
			return err
		}
		if sc.missing {
			return sc.notFound()
		}
		d.team, d.machineID, d.s.TeamID = sc, "", sc.id
		return nil
	}
	m, err := c.engine.MachineByName(ctx, t.Machine)
	if errors.Is(err, store.ErrNotFound) {
		return unknownMachine(t.Machine)
	} else if err != nil {
		return mapStoreErr(err)
	}
	if err := c.requireSeen(ctx, authz.TaskCreate, authz.MachineRead, teamScope(m.TeamID, m.Team), audit.EntityMachine, m.ID,
		map[string]string{"machine": m.Name, "schedule": d.s.Name}, unknownMachine(t.Machine)); err != nil {
		return err // before naming the machine's team
	}
	if d.s.Team != "" && d.s.Team != m.Team {
		return fmt.Errorf("%w: machine %q is in team %q, not %q", ErrInvalidTask, m.Name, m.Team, d.s.Team)
	}
	d.s.Team, t.Team, d.s.TeamID = m.Team, m.Team, m.TeamID
	d.team, d.machineID = teamScope(m.TeamID, m.Team), m.ID
	if len(t.Selector) > 0 {
		mm, err := machineFromRecord(m)
		if err != nil {
			return err
		}
		if !matches(mm.Labels, t.Selector) {
			return fmt.Errorf("%w: machine %q does not match the selector %s", ErrInvalidTask, m.Name, formatSelector(t.Selector))
		}
	}
	return nil
}

// teamOf returns the team a definition names before it is resolved: the
// schedule's, else the pinned machine's (the zero scope when the machine
// is unknown or neither is named).
func (c *Client) teamOf(ctx context.Context, s Schedule) (scope, error) {
	if s.Team != "" {
		return c.resolveTeam(ctx, s.Team)
	}
	if s.Task.Machine == "" {
		return scope{}, nil
	}
	m, err := c.engine.MachineByName(ctx, s.Task.Machine)
	switch {
	case err == nil:
		return teamScope(m.TeamID, m.Team), nil
	case errors.Is(err, store.ErrNotFound):
		return scope{}, nil
	}
	return scope{}, mapStoreErr(err)
}

// alsoAllowed checks that the operation's actor may also do action on team
// (task.create and vault.use for a schedule's task); a denial is audited
// under action.
func (c *Client) alsoAllowed(ctx context.Context, o *op, action authz.Action, team scope, detail map[string]string) error {
	if d := authz.Explain(o.grants, action, team.authzTeam()); !d.Allowed {
		return c.deny(ctx, &op{c: c, actor: o.actor, via: o.via, action: action, etype: o.etype, eid: o.eid, team: team, detail: detail}, d.Reason)
	}
	return nil
}

// taskRights checks task.create, and vault.use when the task has secrets,
// for o's actor on the definition's team, and that the secrets exist in
// the team's vault (a schedule naming a missing one could only fail).
func (c *Client) taskRights(ctx context.Context, o *op, d scheduleDef) error {
	detail := map[string]string{"schedule": d.s.Name}
	if err := c.alsoAllowed(ctx, o, authz.TaskCreate, d.team, detail); err != nil {
		return err
	}
	if len(d.s.Task.Secrets) == 0 {
		return nil
	}
	if err := c.alsoAllowed(ctx, o, authz.VaultUse, d.team, map[string]string{"schedule": d.s.Name, "keys": secretKeys(d.s.Task.Secrets)}); err != nil {
		return err
	}
	return o.fail(ctx, c.newPlacer().checkSecretsExist(ctx, d.team, d.s.Task.Secrets))
}

func secretKeys(secrets map[string]string) string {
	keys := make([]string, 0, len(secrets))
	for _, k := range secrets {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}

func scheduleDetails(d scheduleDef) map[string]string {
	det := map[string]string{"cron": d.s.Cron, "timezone": d.s.TimeZone, "priority": strconv.Itoa(int(d.s.Task.Priority)),
		"overlap": string(d.s.Overlap), "missed_run": string(d.s.MissedRun)}
	switch {
	case d.s.Task.Machine != "":
		det["machine"] = d.s.Task.Machine
	case d.s.All:
		det["fanout"] = formatSelector(d.s.Task.Selector)
	default:
		det["placement"] = formatSelector(d.s.Task.Selector)
	}
	if d.s.Paused {
		det["paused"] = "true"
	}
	return det
}

// CreateSchedule creates a schedule (see Schedule) owned by the actor and
// returns it with its first NextFireAt (the first fire after now). The
// actor needs schedule.create and task.create (and vault.use when the task
// names secrets) in the schedule's team: operators and admins. Nothing is
// written when an error is returned.
//
// Errors: ErrNoActor, ErrPermissionDenied, ErrInvalidArgument (bad name,
// cron expression, time zone, policy or threshold), ErrInvalidTask,
// ErrInvalidPriority, ErrUnknownMachine, ErrNotFound (team),
// ErrSecretNotFound (a secret the team's vault lacks), ErrExists (name
// taken).
func (c *Client) CreateSchedule(ctx context.Context, s Schedule) (*Schedule, error) {
	if _, _, err := c.actor(ctx); err != nil {
		return nil, err
	}
	sch, err := c.schedules()
	if err != nil {
		return nil, err
	}
	team, err := c.teamOf(ctx, s)
	if err != nil {
		return nil, err
	}
	switch {
	case team == (scope{}) && s.Task.Machine != "":
		return nil, unknownMachine(s.Task.Machine)
	case team == (scope{}):
		return nil, fmt.Errorf("%w: schedule %q: name a machine (Task.Machine) or a team (Team) to place the task in", ErrInvalidArgument, s.Name)
	}
	var o *op
	if s.Team == "" { // the team is the machine's: hidden like the machine
		o, _, err = c.authorizeSeen(ctx, authz.MachineRead, unknownMachine(s.Task.Machine), authz.ScheduleCreate, team, audit.EntitySchedule, s.Name, nil)
	} else {
		o, _, err = c.authorize(ctx, authz.ScheduleCreate, team, audit.EntitySchedule, s.Name, nil)
	}
	if err != nil {
		return nil, err
	}
	d, err := s.normalize()
	if err != nil {
		return nil, o.fail(ctx, err)
	}
	if err := c.scheduleTarget(ctx, &d); err != nil {
		return nil, o.fail(ctx, err)
	}
	if err := c.taskRights(ctx, o, d); err != nil {
		return nil, err
	}
	raw, err := d.encode()
	if err != nil {
		return nil, o.fail(ctx, err)
	}
	now := c.clock.Now().UTC()
	rec := store.Schedule{ID: uuid.NewString(), Name: d.s.Name, TeamID: d.team.id, Owner: o.actor, Spec: raw,
		Paused: d.s.Paused, CreatedAt: now, UpdatedAt: now}
	if !d.s.Paused {
		rec.NextFireAt = d.cron.Next(now)
	}
	o.eid, o.team, o.detail = rec.ID, d.team, scheduleDetails(d)
	o.detail["name"] = d.s.Name
	rec, err = sch.CreateSchedule(o.ctx(ctx), rec)
	if err != nil {
		if errors.Is(err, store.ErrExists) {
			err = fmt.Errorf("schedule %q: %w (pick another name, or rediacc schedule delete it first)", s.Name, ErrExists)
		}
		return nil, o.fail(ctx, mapStoreErr(err))
	}
	c.scheduleChanged()
	c.log.InfoContext(ctx, "schedule created", "schedule", rec.Name, "team", rec.TeamID, "cron", d.s.Cron,
		"time_zone", d.s.TimeZone, "next_fire", rec.NextFireAt, "actor", o.actor)
	return c.publicSchedule(ctx, rec)
}

// loadSchedule finds a schedule by name or id, without an access check.
func (c *Client) loadSchedule(ctx context.Context, nameOrID string) (store.Schedule, error) {
	sch, err := c.schedules()
	if err != nil {
		return store.Schedule{}, err
	}
	r, err := sch.ScheduleByName(ctx, nameOrID)
	if errors.Is(err, store.ErrNotFound) {
		r, err = sch.GetSchedule(ctx, nameOrID)
	}
	if errors.Is(err, store.ErrNotFound) {
		return store.Schedule{}, fmt.Errorf("schedule %s: %w", quoteInput(nameOrID), ErrNotFound)
	}
	return r, mapStoreErr(err)
}

// readSchedule loads a schedule and authorizes action on its team.
func (c *Client) readSchedule(ctx context.Context, nameOrID string, action authz.Action) (store.Schedule, *op, error) {
	if _, _, err := c.actor(ctx); err != nil {
		return store.Schedule{}, nil, err
	}
	r, err := c.loadSchedule(ctx, nameOrID)
	if err != nil {
		return store.Schedule{}, nil, err
	}
	sc, err := c.scopeOfID(ctx, r.TeamID)
	if err != nil {
		return store.Schedule{}, nil, err
	}
	o, _, err := c.authorizeSeen(ctx, authz.ScheduleList, fmt.Errorf("schedule %q: %w", nameOrID, ErrNotFound), action, sc, audit.EntitySchedule, r.ID, map[string]string{"name": r.Name})
	if err != nil {
		return store.Schedule{}, nil, err
	}
	return r, o, nil
}

// GetSchedule returns the schedule named (or with id) nameOrID. Needs a
// role in its team. Errors: ErrNoActor, ErrPermissionDenied, ErrNotFound.
func (c *Client) GetSchedule(ctx context.Context, nameOrID string) (*Schedule, error) {
	r, o, err := c.readSchedule(ctx, nameOrID, authz.ScheduleList)
	if err != nil {
		return nil, err
	}
	s, err := c.publicSchedule(ctx, r)
	if err != nil {
		return nil, err
	}
	o.done(ctx)
	return s, nil
}

// ScheduleFilter narrows ListSchedules. Zero fields match everything.
type ScheduleFilter struct {
	Team string
}

// ListSchedules returns, by name, the schedules of the teams the actor
// belongs to (owners: all). Errors: ErrNoActor, ErrPermissionDenied (a
// Team the actor has no role in).
func (c *Client) ListSchedules(ctx context.Context, f ScheduleFilter) ([]*Schedule, error) {
	var sc scope
	if f.Team != "" {
		var err error
		if sc, err = c.resolveTeam(ctx, f.Team); err != nil {
			return nil, err
		}
	}
	teams, o, err := c.scopeTeams(ctx, authz.ScheduleList, sc, audit.EntitySchedule)
	if err != nil {
		return nil, err
	}
	sch, err := c.schedules()
	if err != nil {
		return nil, err
	}
	rs, err := sch.ListSchedules(ctx, store.ScheduleFilter{TeamIDs: teams})
	if err != nil {
		return nil, mapStoreErr(err)
	}
	out := make([]*Schedule, 0, len(rs))
	live := c.newLiveness() // leftovers.go
	for _, r := range rs {
		if ok, err := live.team(ctx, r.TeamID); err != nil {
			return nil, err
		} else if !ok {
			continue // of a deleted team
		}
		s, err := c.publicSchedule(ctx, r)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	o.done(ctx)
	return out, nil
}

// publicSchedule turns a stored schedule into a Schedule with its last
// fire and status.
func (c *Client) publicSchedule(ctx context.Context, r store.Schedule) (*Schedule, error) {
	d, err := decodeSchedule(r)
	if err != nil {
		return nil, err
	}
	if err := c.labelSchedule(ctx, &d); err != nil {
		return nil, err
	}
	s := d.s
	if r.Last != nil {
		f := fireFromRecord(*r.Last)
		s.LastFire = &f
		s.LastStatus = c.fireStatus(ctx, f)
	}
	return &s, nil
}

// fireStatus sums up a fire: the outcome when it submitted nothing, else
// its task's status, or counts by status for several tasks ("archived"
// for tasks pruned from the queue).
func (c *Client) fireStatus(ctx context.Context, f ScheduleFire) string {
	if f.Outcome != FireCreated || len(f.TaskIDs) == 0 {
		return f.Outcome
	}
	counts := map[string]int{}
	for _, id := range f.TaskIDs {
		st := "archived"
		if t, err := c.engine.GetTask(ctx, id); err == nil {
			st = string(t.Status)
		}
		counts[st]++
	}
	if len(f.TaskIDs) == 1 {
		for st := range counts {
			return st
		}
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d %s", counts[k], k)
	}
	return strings.Join(parts, ", ")
}

// changeSchedule applies fn to the schedule nameOrID at its current
// version and stores the result, reading again when a fire moved the
// schedule in between.
func (c *Client) changeSchedule(ctx context.Context, o *op, r store.Schedule, fn func(r *store.Schedule) error) (store.Schedule, error) {
	sch, err := c.schedules()
	if err != nil {
		return store.Schedule{}, err
	}
	for attempt := 0; ; attempt++ {
		n := r
		if err := fn(&n); err != nil {
			return store.Schedule{}, o.fail(ctx, err)
		}
		out, err := sch.UpdateSchedule(o.ctx(ctx), n, r.Version)
		if errors.Is(err, store.ErrScheduleChanged) && attempt < 10 {
			if r, err = sch.GetSchedule(ctx, r.ID); err == nil {
				continue
			}
		}
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				err = fmt.Errorf("schedule %q: %w", r.Name, ErrNotFound)
			}
			return store.Schedule{}, o.fail(ctx, mapStoreErr(err))
		}
		c.scheduleChanged()
		return out, nil
	}
}

// UpdateSchedule replaces the definition of the schedule s.ID (or, with
// no ID, the one named s.Name): cron, time zone, task, policies, Paused
// and, with an ID, Name; the team cannot change. The actor becomes the
// schedule's owner and needs what CreateSchedule needs. The next fire is
// computed again from now. Nothing is written when an error is returned.
//
// Errors: CreateSchedule's, and ErrNotFound.
func (c *Client) UpdateSchedule(ctx context.Context, s Schedule) (*Schedule, error) {
	key := s.ID
	if key == "" {
		key = s.Name
	}
	r, o, err := c.readSchedule(ctx, key, authz.ScheduleUpdate)
	if err != nil {
		return nil, err
	}
	if s.Team != "" && s.Team != o.team.name {
		return nil, o.fail(ctx, fmt.Errorf("%w: schedule %q is in team %q: a schedule cannot move to team %q (create a new one there)", ErrInvalidArgument, r.Name, o.team.label(), s.Team))
	}
	s.Team = o.team.name
	d, err := s.normalize()
	if err != nil {
		return nil, o.fail(ctx, err)
	}
	if err := c.scheduleTarget(ctx, &d); err != nil {
		return nil, o.fail(ctx, err)
	}
	if d.team.id != r.TeamID { // the team was renamed and its name taken meanwhile
		return nil, o.fail(ctx, fmt.Errorf("%w: schedule %q: its team changed while it was updated; try again", ErrConflict, r.Name))
	}
	if err := c.taskRights(ctx, o, d); err != nil {
		return nil, err
	}
	raw, err := d.encode()
	if err != nil {
		return nil, o.fail(ctx, err)
	}
	o.detail = scheduleDetails(d)
	o.detail["name"] = d.s.Name
	out, err := c.changeSchedule(ctx, o, r, func(n *store.Schedule) error {
		now := c.clock.Now().UTC()
		n.Name, n.Owner, n.Spec, n.Paused, n.UpdatedAt = d.s.Name, o.actor, raw, d.s.Paused, now
		n.NextFireAt = time.Time{}
		if !d.s.Paused {
			n.NextFireAt = d.cron.Next(now)
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrExists) {
			return nil, fmt.Errorf("schedule %q: %w", d.s.Name, err)
		}
		return nil, err
	}
	return c.publicSchedule(ctx, out)
}

// PauseSchedule pauses a schedule: it does not fire until
// ResumeSchedule. Pausing a paused schedule changes nothing. Needs
// schedule.pause (operators, admins) in its team.
// Errors: ErrNoActor, ErrPermissionDenied, ErrNotFound.
func (c *Client) PauseSchedule(ctx context.Context, nameOrID string) (*Schedule, error) {
	return c.setPaused(ctx, nameOrID, true)
}

// ResumeSchedule resumes a paused schedule from its next fire after now;
// the fires that fell while it was paused are neither run nor missed.
// Resuming a running schedule changes nothing. Errors: as PauseSchedule.
func (c *Client) ResumeSchedule(ctx context.Context, nameOrID string) (*Schedule, error) {
	return c.setPaused(ctx, nameOrID, false)
}

func (c *Client) setPaused(ctx context.Context, nameOrID string, paused bool) (*Schedule, error) {
	r, o, err := c.readSchedule(ctx, nameOrID, authz.SchedulePause)
	if err != nil {
		return nil, err
	}
	o.detail["paused"] = strconv.FormatBool(paused)
	if r.Paused == paused {
		o.done(ctx)
		return c.publicSchedule(ctx, r)
	}
	d, err := decodeSchedule(r)
	if err != nil {
		return nil, o.fail(ctx, err)
	}
	out, err := c.changeSchedule(ctx, o, r, func(n *store.Schedule) error {
		now := c.clock.Now().UTC()
		n.Paused, n.UpdatedAt, n.NextFireAt = paused, now, time.Time{}
		if !paused {
			n.NextFireAt = d.cron.Next(now)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if paused {
		c.log.InfoContext(ctx, "schedule paused", "schedule", out.Name, "actor", o.actor)
	} else {
		c.log.InfoContext(ctx, "schedule resumed", "schedule", out.Name, "next_fire", out.NextFireAt, "actor", o.actor)
	}
	return c.publicSchedule(ctx, out)
}

// DeleteSchedule deletes a schedule and its fire history; the tasks it
// submitted stay (they are ordinary tasks). Needs schedule.delete
// (operators, admins) in its team.
// Errors: ErrNoActor, ErrPermissionDenied, ErrNotFound.
func (c *Client) DeleteSchedule(ctx context.Context, nameOrID string) error {
	r, o, err := c.readSchedule(ctx, nameOrID, authz.ScheduleDelete)
	if err != nil {
		return err
	}
	sch, err := c.schedules()
	if err != nil {
		return err
	}
	if err := sch.DeleteSchedule(o.ctx(ctx), r.ID); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = fmt.Errorf("schedule %s: %w", quoteInput(nameOrID), ErrNotFound)
		}
		return o.fail(ctx, mapStoreErr(err))
	}
	c.scheduleChanged()
	c.log.InfoContext(ctx, "schedule deleted", "schedule", r.Name, "actor", o.actor)
	return nil
}

// ScheduleFires returns a schedule's recorded fires, newest first, at most
// limit (0: all kept; the store keeps the newest 200). Needs a role in its
// team. Errors: ErrNoActor, ErrPermissionDenied, ErrNotFound,
// ErrInvalidArgument (negative limit).
func (c *Client) ScheduleFires(ctx context.Context, nameOrID string, limit int) ([]ScheduleFire, error) {
	if limit < 0 {
		return nil, fmt.Errorf("%w: limit %d is negative", ErrInvalidArgument, limit)
	}
	r, o, err := c.readSchedule(ctx, nameOrID, authz.ScheduleList)
	if err != nil {
		return nil, err
	}
	sch, err := c.schedules()
	if err != nil {
		return nil, err
	}
	fs, err := sch.ListFires(ctx, r.ID, limit)
	if err != nil {
		return nil, mapStoreErr(err)
	}
	out := make([]ScheduleFire, len(fs))
	for i, f := range fs {
		out[i] = fireFromRecord(f)
	}
	o.done(ctx)
	return out, nil
}

// scheduleJSON is a schedule's JSON form.
type scheduleJSON struct {
	ScheduleID       string            `json:"scheduleId"`
	Name             string            `json:"name"`
	Team             string            `json:"team"`
	TeamID           string            `json:"teamId"`
	Cron             string            `json:"cron"`
	TimeZone         string            `json:"timeZone"`
	Machine          string            `json:"machine,omitempty"`
	Selector         map[string]string `json:"selector,omitempty"`
	All              bool              `json:"all,omitempty"`
	Priority         Priority          `json:"priority"`
	Command          string            `json:"command"`
	RetryCount       int               `json:"retryCount"`
	RetryDelay       float64           `json:"retryDelay"` // seconds
	FailureAction    FailureAction     `json:"failureAction"`
	Timeout          float64           `json:"timeout,omitempty"` // seconds
	Env              map[string]string `json:"env,omitempty"`
	Secrets          map[string]string `json:"secrets,omitempty"`
	Overlap          OverlapPolicy     `json:"overlap"`
	MissedRun        MissedRunPolicy   `json:"missedRun"`
	MisfireThreshold float64           `json:"misfireThreshold"` // seconds
	Paused           bool              `json:"paused"`
	Owner            string            `json:"owner"`
	CreatedAt        *time.Time        `json:"createdAt"`
	UpdatedAt        *time.Time        `json:"updatedAt"`
	NextFireAt       *time.Time        `json:"nextFireAt"`
	LastFire         *ScheduleFire     `json:"lastFire"`
	LastStatus       string            `json:"lastStatus,omitempty"`
}

// MarshalJSON writes the schedule with the task's fields in the product
// guide's form (durations in seconds, times RFC 3339 UTC, null when not
// set).
func (s Schedule) MarshalJSON() ([]byte, error) {
	t := s.Task
	return json.Marshal(scheduleJSON{
		ScheduleID: s.ID, Name: s.Name, Team: s.Team, TeamID: s.TeamID, Cron: s.Cron, TimeZone: s.TimeZone, Machine: t.Machine,
		Selector: t.Selector, All: s.All, Priority: t.Priority, Command: t.Command, RetryCount: t.Retry.RetryCount,
		RetryDelay: t.Retry.RetryDelay.Seconds(), FailureAction: t.FailureAction, Timeout: t.Timeout.Seconds(),
		Env: t.Env, Secrets: t.Secrets, Overlap: s.Overlap, MissedRun: s.MissedRun,
		MisfireThreshold: s.MisfireThreshold.Seconds(), Paused: s.Paused, Owner: s.Owner,
		CreatedAt: timePtr(s.CreatedAt), UpdatedAt: timePtr(s.UpdatedAt), NextFireAt: timePtr(s.NextFireAt),
		LastFire: s.LastFire, LastStatus: s.LastStatus,
	})
}
