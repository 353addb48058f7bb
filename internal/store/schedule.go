package store

import (
	"context"
	"errors"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
)

// Schedules: recurring tasks. A schedule belongs to a team and holds an
// opaque spec (the root package's JSON: cron expression, time zone, the
// task to submit, policies); the engine keeps its state (paused, next fire,
// last fire, the tasks of earlier fires that may still run) and records
// each fire exactly once: FireSchedule creates the fire's tasks, records
// the fire under its unique key (schedule id, scheduled time) and moves
// the schedule to its next fire in one transaction, and only if the
// schedule is still at the version the caller decided from. Several
// workers (processes, hosts) may all try to fire a schedule: one succeeds,
// the others get ErrScheduleChanged or ErrExists and change nothing.

// ErrScheduleChanged: the schedule was changed (updated, paused, resumed,
// fired) since the caller read it; nothing was written. Read it again and
// decide again.
var ErrScheduleChanged = errors.New("store: the schedule changed since it was read")

// Overlap policies (ScheduleFire.Overlap): what a fire does while tasks of
// earlier fires of the schedule are not finished.
const (
	// OverlapSkip records the fire as skipped and creates nothing.
	OverlapSkip = "skip"
	// OverlapAllow creates the fire's tasks anyway.
	OverlapAllow = "allow"
	// OverlapCancelPrevious cancels the unfinished tasks (as Cancel does)
	// and creates the fire's tasks.
	OverlapCancelPrevious = "cancel-previous"
)

// Fire outcomes (Fire.Outcome).
const (
	// FireCreated: the fire created its tasks.
	FireCreated = "created"
	// FireSkipped: the overlap policy skip kept the fire from creating its
	// tasks (Fire.Reason names the unfinished ones).
	FireSkipped = "skipped"
	// FireMissed: the fire was missed (the schedule's workers were away
	// past the misfire threshold) and not caught up.
	FireMissed = "missed"
	// FireFailed: the fire could not create its tasks (Fire.Reason says
	// why: the owner lost the role, the machine left the team, no eligible
	// machine).
	FireFailed = "failed"
)

// KeepFires is how many fires per schedule the engines keep (the newest by
// scheduled time); FireSchedule deletes older ones in its transaction.
const KeepFires = 200

// Schedule is a recurring task of a team.
type Schedule struct {
	ID     string // immutable; CreateSchedule gives a new UUID when empty
	Name   string // unique store-wide
	TeamID string // the team (id) whose task it submits
	// Owner is the user whose authority fires the schedule: its creator,
	// or the last user who changed it (UpdateSchedule).
	Owner string
	Spec  []byte // opaque JSON owned by the root package
	// Paused schedules have no NextFireAt and are never due.
	Paused bool
	// NextFireAt is the earliest fire not yet decided (zero when paused, or
	// when the expression fires no more).
	NextFireAt time.Time
	// Version grows by one with every change (Update, Fire); FireSchedule
	// and UpdateSchedule apply only at the version they were given.
	Version   int64
	CreatedAt time.Time
	UpdatedAt time.Time

	// Last is the last fire recorded (scheduled or manual); nil before the
	// first.
	Last *Fire
	// OpenTaskIDs are the tasks of earlier fires not known to be finished,
	// oldest first: the overlap rule looks at them.
	OpenTaskIDs []string
}

// Fire is one recorded fire of a schedule.
type Fire struct {
	ScheduleID  string
	ScheduledAt time.Time // the fire time (for a manual fire: when it was asked)
	Manual      bool      // TriggerSchedule ("run now"), not a cron fire
	FiredAt     time.Time // when it was recorded
	Outcome     string    // FireCreated, FireSkipped, FireMissed, FireFailed
	Reason      string    // why it was skipped, missed or failed
	TaskIDs     []string  // the tasks it created
	// CancelledIDs are the unfinished tasks of earlier fires it cancelled
	// (OverlapCancelPrevious) or asked to cancel (running ones).
	CancelledIDs []string
	// MissedFrom and MissedTo are the first and last missed fire this
	// decision covers (zero when none); CatchUp marks a fire that runs
	// once for missed fires (ScheduledAt is then the last missed one).
	MissedFrom, MissedTo time.Time
	CatchUp              bool
}

// ScheduleFilter narrows ListSchedules. Zero fields match everything.
type ScheduleFilter struct {
	TeamIDs []string // any of these teams (ids); nil = any
	// DueBy, when set, keeps the schedules that are not paused and whose
	// NextFireAt is at or before it, ordered by NextFireAt (then name).
	DueBy time.Time
}

// ScheduleFire asks FireSchedule to record one fire.
type ScheduleFire struct {
	ScheduleID  string
	ScheduledAt time.Time
	// Manual fires (TriggerSchedule) apply at any version, keep NextFireAt
	// and Version, and have no unique key: each is its own fire, whatever
	// its time.
	Manual bool
	// Version is the schedule's version the decision was made from
	// (ignored when Manual); another gives ErrScheduleChanged.
	Version int64
	// FiredAt is now (when the fire is recorded).
	FiredAt time.Time
	// NextFireAt is the schedule's next fire after this one (ignored when
	// Manual; zero when it fires no more).
	NextFireAt time.Time
	// Outcome is FireCreated (Tasks hold the tasks to create; the overlap
	// policy may turn it into FireSkipped), FireMissed or FireFailed (no
	// tasks; Reason says why).
	Outcome string
	Reason  string
	// Overlap is the policy applied when Tasks are to be created:
	// OverlapSkip (default), OverlapAllow, OverlapCancelPrevious.
	Overlap string
	// Tasks are created as CreateTasks would (all or none, no
	// idempotency key allowed), each becoming an open task of the schedule.
	Tasks                []Task
	MissedFrom, MissedTo time.Time
	CatchUp              bool
	// Audit, when its Action is set, is the template of the fire's audit
	// records (see fsm.FireAudit): Time, Actor, Team and Details are
	// copied into one "schedule.fire" record about the schedule (with the
	// outcome), one "task.create" record per task created and one
	// "task.cancel" record per task cancelled, appended in the same
	// transaction after the context's records.
	Audit audit.Record
}

// FireResult is what FireSchedule did.
type FireResult struct {
	Fire      Fire
	Tasks     []Task // created (empty unless Fire.Outcome is FireCreated)
	Cancelled []Task // tasks of earlier fires cancelled or asked to cancel
	Schedule  Schedule
}

// Schedules is the part of an engine that keeps schedules. Engines
// implement Engine, Access and Schedules.
//
// Every mutating method appends the audit records its context carries
// (WithAudit) in the same transaction as its change, only when it returns
// no error.
type Schedules interface {
	// CreateSchedule inserts s and returns it as stored: ID a new UUID when
	// empty, Version 1, CreatedAt/UpdatedAt now when zero, no Last and no
	// open tasks. ErrExists (name or id taken); ErrInvalidArgument (empty
	// name, team or owner).
	CreateSchedule(ctx context.Context, s Schedule) (Schedule, error)
	// UpdateSchedule replaces the name, team, owner, spec, Paused and
	// NextFireAt of schedule s.ID, only at version (else
	// ErrScheduleChanged), and returns it with Version+1 and UpdatedAt
	// (now when zero). Last and OpenTaskIDs are kept. ErrNotFound;
	// ErrExists (name taken by another); ErrInvalidArgument.
	UpdateSchedule(ctx context.Context, s Schedule, version int64) (Schedule, error)
	// DeleteSchedule deletes a schedule and its fire records (its tasks
	// stay: they are ordinary tasks). ErrNotFound.
	DeleteSchedule(ctx context.Context, id string) error
	// GetSchedule returns one schedule by id. ErrNotFound.
	GetSchedule(ctx context.Context, id string) (Schedule, error)
	// ScheduleByName returns the schedule named name. ErrNotFound.
	ScheduleByName(ctx context.Context, name string) (Schedule, error)
	// ListSchedules returns the schedules matching f ordered by name (by
	// NextFireAt then name with DueBy).
	ListSchedules(ctx context.Context, f ScheduleFilter) ([]Schedule, error)
	// NextScheduleFire returns the earliest NextFireAt among schedules
	// that are not paused, and false when there is none.
	NextScheduleFire(ctx context.Context) (time.Time, bool, error)
	// FireSchedule records one fire in one transaction: it checks the
	// schedule's version (unless Manual: ErrScheduleChanged), refuses a
	// scheduled fire already recorded under the same (ScheduleID,
	// ScheduledAt) key (ErrExists), applies the overlap policy to the
	// schedule's open tasks that are still unfinished, creates the tasks,
	// records the fire, sets the schedule's Last, OpenTaskIDs (unfinished
	// earlier tasks, then the new ones), NextFireAt and Version+1 (not for
	// manual fires, which only set Last and OpenTaskIDs), deletes fires
	// beyond the newest KeepFires, and appends the audit records. Nothing
	// is written on error. ErrNotFound; ErrInvalidArgument (bad outcome or
	// policy, tasks with a failed or missed outcome, a task with an
	// idempotency key or a bad field, named by its index).
	FireSchedule(ctx context.Context, f ScheduleFire) (FireResult, error)
	// ListFires returns a schedule's recorded fires, newest scheduled time
	// first (at one instant: the scheduled fire, then manual ones, newest
	// recorded first), at most limit (0: all kept). ErrNotFound when the
	// schedule does not exist.
	ListFires(ctx context.Context, scheduleID string, limit int) ([]Fire, error)
}
