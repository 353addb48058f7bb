// Package store defines the contract every queue store engine meets: the
// in-memory engine (tests, short-lived programs), the embedded SQLite engine
// (the default) and, later, PostgreSQL. The root package rediacc turns these
// records into its public types and these errors into its public sentinels.
//
// Engines know nothing of SSH, retry policies or task specs: a task's spec and
// a machine's connection settings are opaque JSON blobs (Task.Spec,
// Machine.Config). Engines own the queue's state machine and the claim rule
// (priority, FIFO within a level, aging, per-machine limits with a slot held
// back for priority 1, busy machines taking only priority 1..2), which is
// defined once in internal/sched.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
)

// Status is a task's queue state.
type Status string

// Queue states, as in the product's guide: PENDING → ASSIGNED → PROCESSING →
// COMPLETED / FAILED / CANCELLED. A task waiting out a retry delay is PENDING
// with ReadyAt in the future.
const (
	Pending    Status = "PENDING"
	Assigned   Status = "ASSIGNED"
	Processing Status = "PROCESSING"
	Completed  Status = "COMPLETED"
	Failed     Status = "FAILED"
	Cancelled  Status = "CANCELLED"
)

// Terminal reports whether s is a final state.
func (s Status) Terminal() bool { return s == Completed || s == Failed || s == Cancelled }

// Active reports whether a task in state s is held by a worker.
func (s Status) Active() bool { return s == Assigned || s == Processing }

// Engine errors. Engines return them (possibly wrapped); the root package maps
// them onto its public sentinels.
var (
	ErrNotFound         = errors.New("store: not found")
	ErrExists           = errors.New("store: already exists")
	ErrNotCancellable   = errors.New("store: task is finished and cannot be cancelled")
	ErrLeaseLost        = errors.New("store: task is no longer leased by this worker")
	ErrClosed           = errors.New("store: closed")
	ErrCorrupt          = errors.New("store: file is not a valid rediacc store")
	ErrSchemaTooNew     = errors.New("store: file was written by a newer rediacc")
	ErrInvalidArgument  = errors.New("store: invalid argument")
	ErrMachineHasTasks  = errors.New("store: machine has unfinished tasks")
	ErrDuplicateAttempt = errors.New("store: attempt already recorded")
	// ErrUnsettled: the task has an attempt whose outcome is unknown (its
	// copy may still run); it must be settled (Finish.Settles) first.
	ErrUnsettled = errors.New("store: an earlier attempt of the task is not settled")
)

// Identity. Teams, machines and tasks have immutable opaque string ids
// (UUIDs for new ones; a store migrated from the name-keyed schema gave each
// existing team and machine its name as its id). Names are labels: unique
// among live entities, free again once their entity is deleted, and a
// team may be renamed. Every reference between records is by id
// (Machine.TeamID, Task.TeamID, Task.MachineID, Member.TeamID), so a rename
// keeps everything and a later entity of the same name inherits nothing.
// The name fields beside the ids (Machine.Team, Task.Team, Task.Machine,
// Member.Team) are filled on read, for display: the current name of the
// entity the id references, or the id itself when no such entity exists
// (engines do not check the references of tasks; the root package asks for
// that check with a guard, see WithGuard). They are ignored on write.

// Machine is a registered machine. ID is immutable; Name is unique among
// live machines.
type Machine struct {
	// ID is the machine's immutable id; CreateMachine gives a new UUID when
	// it is empty.
	ID   string
	Name string
	// TeamID is the owning team's id; DefaultTeam ("default") when empty.
	TeamID string
	// Team is the owning team's name, filled on read (ignored on write).
	Team      string
	Host      string
	Port      int
	User      string
	Config    []byte // opaque JSON owned by the root package (identity, host-key policy, labels)
	CreatedAt time.Time
	UpdatedAt time.Time

	// Health is the last health sample (opaque JSON owned by the root
	// package: CPU, load, memory, disk) and HealthAt its time; nil and zero
	// until Engine.SetMachineHealth is first called. Only SetMachineHealth
	// sets them: CreateMachine ignores them, UpdateMachine and MoveMachine
	// keep the stored ones.
	Health   []byte
	HealthAt time.Time

	// DeletedAt is when DeleteMachine removed the machine (zero while it is
	// registered). A removed machine keeps its record, so that its tasks
	// still show its name; its name is free for a new machine.
	DeletedAt time.Time
}

// MachineFilter narrows ListMachines, which lists live machines only. Zero
// fields match everything.
type MachineFilter struct {
	TeamID  string
	TeamIDs []string // any of these teams (ids); nil = any
}

// Outcomes of an attempt (Attempt.Outcome; "" while it runs).
const (
	OutcomeSucceeded   = "succeeded"
	OutcomeFailed      = "failed"
	OutcomeTimeout     = "timeout"
	OutcomeCancelled   = "cancelled"
	OutcomeInterrupted = "interrupted" // stopped (or never started) without a result: not counted
	// OutcomeUnknown: its worker was lost while it ran (Rescue), or its
	// connection was; its copy may still run on the machine. The task must
	// not run again before a worker settles this entry (Finish.Settles).
	OutcomeUnknown = "unknown"
	// OutcomeLost: settled, but its fate could not be learned (it ended
	// without recording a status): the task ran again (at-least-once).
	OutcomeLost = "lost"
)

// Attempt is one try of a task on its machine.
type Attempt struct {
	Number    int // 1-based; an interrupted try is rerun under the same number
	Worker    string
	StartedAt time.Time
	EndedAt   time.Time // zero while running
	ExitCode  *int      // nil when the command did not exit (connection error, signal, timeout)
	Signal    string    // the signal that killed the command ("TERM"), "" otherwise
	Error     string    // "" on success
	ErrorKind string    // the kind of Error (opaque to engines), "" on success
	Outcome   string    // "" while running, else one of the Outcome constants
	// Recovered: the result was read from the run's marker on the machine
	// after its worker or connection was lost (output is missing).
	Recovered bool

	// Where it ran (opaque to engines): RunID names its marker on the
	// machine, PGID its process group there, RemoteID ("boot-id/start-time")
	// tells that group apart from a later one reusing the id.
	RunID    string
	PGID     int
	RemoteID string
}

// AttemptRemote is the process an open attempt runs as on its machine
// (Engine.SetAttemptRemote).
type AttemptRemote struct {
	TaskID   string
	RunID    string // must equal the open attempt's RunID
	PGID     int
	RemoteID string
}

// Hold names a task that a worker still holds under Owner, for
// RescueRequest.Held.
type Hold struct{ ID, Owner string }

// Task is one queued task.
type Task struct {
	ID             string // UUID
	IdempotencyKey string // "" = none; unique within the task's team when set
	TeamID         string // the task's team (id); DefaultTeam when empty
	MachineID      string // the machine it runs on (id)
	// Team and Machine are the names of TeamID and MachineID, filled on
	// read (see "Identity" above); ignored on write.
	Team     string
	Machine  string
	Priority int    // 1 (critical) .. 5 (minimal)
	Spec     []byte // opaque JSON owned by the root package
	Status   Status

	// Attempts counts the attempts that used up a try. Interrupted tries
	// (worker shutdown, crash rescue) are in History but not counted here.
	Attempts int
	History  []Attempt // oldest first

	CreatedAt   time.Time
	EnqueuedAt  time.Time // FIFO and aging reference; reset when a failed attempt is retried
	ReadyAt     time.Time // not claimable before this instant (retry delay)
	StartedAt   time.Time // first attempt's start; zero before
	CompletedAt time.Time // zero until terminal

	LeaseOwner      string    // worker holding the task while ASSIGNED/PROCESSING
	LeaseExpiresAt  time.Time // a lease not renewed by then may be rescued
	CancelRequested bool      // cancel asked while ASSIGNED/PROCESSING
	// RescuedFrom is, on the tasks Rescue returns only, the LeaseOwner it
	// took them from (the worker presumed lost); never stored, "" on every
	// other read.
	RescuedFrom string

	// Last attempt's result.
	ExitCode        *int
	Stdout          []byte
	Stderr          []byte
	StdoutTruncated bool
	StderrTruncated bool
	Error           string
	ErrorKind       string // the kind of Error (opaque to engines)
}

// TaskFilter narrows ListTasks. Zero fields match everything.
type TaskFilter struct {
	Statuses  []Status
	TeamID    string
	TeamIDs   []string // any of these teams (ids); nil = any
	MachineID string
	Priority  int // 0 = any
	// CompletedAfter keeps the tasks whose CompletedAt is at or after it
	// (finished tasks only, as only they have a CompletedAt); zero = no
	// bound. Engines serve it from an index on CompletedAt.
	CompletedAfter time.Time
	Limit          int // 0 = no limit
}

// ClaimRequest asks for up to Max ready tasks.
type ClaimRequest struct {
	Owner      string    // worker id; becomes LeaseOwner
	Now        time.Time // ready means ReadyAt <= Now
	LeaseUntil time.Time // LeaseExpiresAt of the claimed tasks
	Max        int       // >= 1

	// PerMachine bounds the ASSIGNED+PROCESSING tasks of one machine, counted
	// across all workers. 0 means no bound.
	PerMachine int
	// ReserveCritical holds one of PerMachine's slots for priority-1 tasks:
	// tasks of priority 2..5 may only fill PerMachine-1 slots. Ignored when
	// PerMachine < 2.
	ReserveCritical bool
	// Aging raises a waiting task's effective priority one level per Aging
	// of waiting (since EnqueuedAt). 0 disables aging.
	Aging time.Duration
	// Machines, when non-nil, restricts the claim to these machines (ids).
	Machines []string
	// BusyMachines (ids) are machines above their load thresholds: they take no
	// new work of effective priority sched.BusyFrom (3) or lower (3..5)
	// until the gate ends for it (aging lifts it to priority 2, or it has
	// waited MaxHold); priority 1..2 tasks on them are claimed as usual.
	BusyMachines []string
	// MaxHold, when > 0, ends the busy gate for a task that has waited this
	// long since EnqueuedAt. 0: only aging ends it.
	MaxHold time.Duration
	// Weights are the teams' shares within a priority level (team id →
	// weight 1..sched.MaxWeight; missing = 1): claims rotate between teams
	// in proportion to them (sched's fair queueing, whose tags the engine
	// stores with the claim).
	Weights map[string]int
	// Audit, when not nil, gives the audit records about the tasks claimed
	// (called with them as Claim returns them, only when at least one was
	// claimed); the engine appends them in the claim's transaction, before
	// the records the context carries (store.WithAudit), so a claim and its
	// records (the worker's task.assign) are committed together. Records
	// that fail audit.Record.Validate fail the claim with
	// ErrInvalidArgument, claiming nothing.
	Audit func(claimed []Task) []audit.Record
}

// Heartbeat is the answer to Engine.Heartbeat.
type Heartbeat struct {
	Lost            []string // ids no longer leased by the owner (rescued, cancelled)
	CancelRequested []string // ids whose cancellation was asked
}

// Finish closes the current attempt of a task leased by Owner.
type Finish struct {
	ID    string
	Owner string
	At    time.Time

	// Attempt is the try being closed; it replaces the open History entry
	// (the one with zero EndedAt) or is appended when there is none.
	Attempt Attempt
	// Settles, when > 0, is the 1-based History position of an entry whose
	// Outcome is OutcomeUnknown: Attempt replaces that entry instead
	// (unset fields taken from it: Number, Worker, StartedAt, EndedAt, RunID,
	// PGID, RemoteID), and may keep OutcomeUnknown to update its Error only.
	// ErrInvalidArgument when there is no such entry or the task has an
	// open one.
	Settles int
	// CountAttempt adds one to Task.Attempts (false for interrupted tries).
	CountAttempt bool

	// Next is the new status: Completed, Failed, Cancelled, or Pending to
	// retry or requeue.
	Next Status
	// ReadyAt (Next == Pending) is when the task may be claimed again.
	ReadyAt time.Time
	// EnqueuedAt (Next == Pending) is the new FIFO/aging reference; zero keeps
	// the old one.
	EnqueuedAt time.Time

	ExitCode        *int
	Stdout          []byte
	Stderr          []byte
	StdoutTruncated bool
	StderrTruncated bool
	Error           string
	ErrorKind       string
}

// RescueRequest asks the engine to take back tasks whose worker is gone.
type RescueRequest struct {
	Now time.Time
	// OwnerDead, when not nil, is asked about each owner of an ASSIGNED or
	// PROCESSING task whose lease has not expired yet; true rescues it now.
	OwnerDead func(owner string) bool
	// Held lists tasks the calling worker still holds (it is recording
	// their result): a task leased by a Hold's Owner under its ID is never
	// rescued by this call, expired lease or not.
	Held []Hold
}

// DepthRow is one group of Engine.Depth: tasks grouped by status,
// priority, TeamID and MachineID. Team and Machine are their names, filled
// like Task's.
type DepthRow struct {
	Status    Status
	Priority  int
	TeamID    string
	MachineID string
	Team      string
	Machine   string
	Count     int
}

// Engine is a queue store. All methods are safe for concurrent use, and each
// state change is atomic: it happens whole or not at all.
//
// Every method that changes the store (all but Get*, *ByName, List*,
// NextReady, Depth and QueuedByMachine) first evaluates the guard
// conditions its context carries (WithGuard) inside its transaction, and
// fails with a *GuardError (ErrGuard) changing nothing when one does not
// hold; then it appends the audit records its context carries (WithAudit)
// in the same transaction as its change, and only when it returns no
// error; a record that fails audit.Record.Validate gives
// ErrInvalidArgument before anything changes.
type Engine interface {
	// CreateMachine inserts m and returns it as stored (ID a new UUID when
	// empty, TeamID defaulting to DefaultTeam, zero times to now).
	// ErrExists if a live machine has the name or the id is taken;
	// ErrNotFound when m.TeamID is not a live team; ErrInvalidArgument.
	CreateMachine(ctx context.Context, m Machine) (Machine, error)
	// UpdateMachine replaces the live machine m.ID (its name may change:
	// ErrExists when another live machine has it), keeping its CreatedAt
	// (TeamID defaults to DefaultTeam, as in CreateMachine). ErrNotFound
	// (the machine, or m.TeamID); a change of team follows MoveMachine's
	// rule: ErrMachineHasTasks while the machine has non-terminal tasks.
	UpdateMachine(ctx context.Context, m Machine) error
	// GetMachine returns one machine by id, live or removed (DeletedAt
	// set). ErrNotFound.
	GetMachine(ctx context.Context, id string) (Machine, error)
	// MachineByName returns the live machine named name. ErrNotFound.
	MachineByName(ctx context.Context, name string) (Machine, error)
	// ListMachines returns the live machines ordered by name.
	ListMachines(ctx context.Context, f MachineFilter) ([]Machine, error)
	// DeleteMachine removes the live machine id: it keeps its record with
	// DeletedAt = at (zero: now) and its name becomes free. ErrNotFound;
	// ErrMachineHasTasks when a task of that machine is not terminal.
	// Tasks do not require their machine to exist: engines do not check
	// Task.MachineID (a guard does, when the caller asks).
	DeleteMachine(ctx context.Context, id string, at time.Time) error

	// CreateTask inserts t as PENDING (t.Status, the lease fields,
	// CancelRequested and CompletedAt are ignored), under the team it names
	// (DefaultTeam when empty; neither the team nor the machine is checked
	// unless a guard asks, see MachineInTeam). When t.IdempotencyKey is set
	// and a task of the same team (TeamID) has that key, it returns the
	// existing task and created == false, and inserts nothing; keys of
	// different teams never meet. Defaults: a new UUID when t.ID is empty,
	// CreatedAt now, EnqueuedAt = CreatedAt, ReadyAt = EnqueuedAt.
	// ErrExists when the id is taken; ErrInvalidArgument (priority not in
	// 1..5, no machine). When an existing task is returned, the context's
	// audit records whose EntityID is t.ID (they describe a task that was
	// not created) are not appended; the others are.
	CreateTask(ctx context.Context, t Task) (task Task, created bool, err error)
	// GetTask returns one task with its History. ErrNotFound.
	GetTask(ctx context.Context, id string) (Task, error)
	// ListTasks returns tasks ordered by CreatedAt then ID.
	ListTasks(ctx context.Context, f TaskFilter) ([]Task, error)

	// Claim moves up to r.Max ready PENDING tasks to ASSIGNED under r.Owner,
	// chosen by sched.Claim (priority with aging, fair shares between teams
	// and machines, per-machine limits, busy gates), and returns them in the
	// order taken. The fairness tags sched.Claim changes are stored in the
	// same transaction, so the rotation between teams and machines carries
	// over from claim to claim and between workers. ErrInvalidArgument (no
	// Owner, Max < 1, zero Now, LeaseUntil not after Now, MaxHold < 0).
	Claim(ctx context.Context, r ClaimRequest) ([]Task, error)
	// Start moves an ASSIGNED task leased by owner to PROCESSING and appends
	// an open History entry a (a.StartedAt required; Number defaults to
	// Attempts+1, Worker to owner). ErrLeaseLost; ErrNotFound;
	// ErrDuplicateAttempt when owner already started it; ErrUnsettled when
	// an entry of its History is OutcomeUnknown.
	Start(ctx context.Context, id, owner string, a Attempt) (Task, error)
	// Heartbeat extends owner's leases on ids to until and reports ids that
	// are lost (unknown, finished, rescued or leased by another) or whose
	// cancellation was asked. The context's audit records, if any, are
	// appended even when nothing was renewed.
	Heartbeat(ctx context.Context, owner string, ids []string, until time.Time) (Heartbeat, error)
	// Finish closes the current attempt (or settles an unknown one, see
	// Finish.Settles) and moves the task to f.Next, only if f.Owner still
	// holds it (ASSIGNED or PROCESSING); otherwise ErrLeaseLost and nothing
	// changes. The lease is cleared. A zero f.Attempt with no open History
	// entry records nothing; a task whose cancellation was asked becomes
	// CANCELLED when f.Next is PENDING, unless an entry of its History is
	// still OutcomeUnknown (its copy may run: it stays PENDING until a
	// worker settles it). ErrNotFound; ErrInvalidArgument.
	Finish(ctx context.Context, f Finish) (Task, error)
	// Cancel cancels a task: PENDING becomes CANCELLED at once, unless an
	// entry of its History is OutcomeUnknown (an earlier copy may still run
	// on the machine): then, like ASSIGNED/PROCESSING, it gets
	// CancelRequested and a worker ends it; CANCELLED is returned unchanged;
	// COMPLETED/FAILED give ErrNotCancellable. ErrNotFound.
	Cancel(ctx context.Context, id string, at time.Time) (Task, error)
	// Rescue takes back ASSIGNED/PROCESSING tasks whose lease expired
	// (LeaseExpiresAt <= r.Now) or whose owner is dead (see RescueRequest),
	// except those r.Held names: they become PENDING, ready at once
	// (ReadyAt = r.Now), keeping EnqueuedAt, with no attempt counted; an
	// open History entry (its copy may still run) is closed with outcome
	// OutcomeUnknown and the rescue reason as its Error; a task with
	// CancelRequested and no such entry becomes CANCELLED instead (nothing
	// of it runs). It returns the rescued tasks ordered like ListTasks, each
	// with RescuedFrom set to the worker it was taken from.
	// OwnerDead is called outside any lock or transaction.
	Rescue(ctx context.Context, r RescueRequest) ([]Task, error)
	// SetAttemptRemote records, for each r, where the open attempt of task
	// r.TaskID runs (PGID, RemoteID), when the task is PROCESSING under
	// owner and its open attempt's RunID is r.RunID; it returns the task ids
	// it did not update (lost, finished, another run), in the order given.
	// The context's audit records, if any, are appended even when nothing
	// was updated. ErrInvalidArgument (empty owner).
	SetAttemptRemote(ctx context.Context, owner string, rs []AttemptRemote) (lost []string, err error)

	// NextReady returns the earliest ReadyAt among PENDING tasks, and false
	// when no task is PENDING.
	NextReady(ctx context.Context) (time.Time, bool, error)

	// Depth counts tasks grouped by status, priority, team id and machine
	// id, ordered by status (queue order), priority, team id, machine id.
	Depth(ctx context.Context) ([]DepthRow, error)

	// CreateTasks inserts many tasks in one transaction, all or none: it is
	// CreateTask applied to ts in order (same checks, defaults and
	// idempotency rule), returning out[i] for ts[i]. A task whose
	// IdempotencyKey is held by a stored task of its team, or by an earlier
	// task of the batch of the same team, inserts nothing and out[i] is that
	// task, so out[i].ID differs from a given ts[i].ID exactly when ts[i] was
	// not inserted. Tasks are created in slice order (FIFO among equal
	// EnqueuedAt). The first bad task fails the whole call with an error
	// naming its index ("task 3: …") that wraps ErrInvalidArgument, or
	// ErrExists when its id is taken (by a stored task or an earlier one of
	// the batch); nothing is written. The context's audit records are
	// appended once, in the same transaction, except those whose EntityID
	// is the given id of a task that was not inserted. An empty ts returns
	// nil, writes and appends nothing.
	CreateTasks(ctx context.Context, ts []Task) ([]Task, error)

	// SetMachineHealth stores machine id's last health sample (opaque JSON,
	// not checked; empty = none) taken at `at` (zero = now), replacing the
	// previous one whatever its time (last write wins). It does not change
	// UpdatedAt. ErrNotFound; ErrInvalidArgument (empty name, time out of
	// range). Health samples are frequent and are not audit events: the
	// root package sends no audit records with them (records in ctx would
	// still be appended, as for every mutating method).
	SetMachineHealth(ctx context.Context, id string, sample []byte, at time.Time) error

	// QueuedByMachine counts the PENDING, ASSIGNED and PROCESSING tasks of
	// each machine id (the load placement looks at). With machines nil it
	// covers every machine with such tasks; otherwise exactly the machine
	// ids given, each present in the map (0 when it has none). Served from
	// the machine index; no task is loaded.
	QueuedByMachine(ctx context.Context, machines []string) (map[string]int, error)

	// ListPrunable returns up to limit finished tasks (COMPLETED, FAILED,
	// CANCELLED) whose CompletedAt is before `before`, oldest CompletedAt
	// first (then creation order), with their History: the records to
	// archive before deleting them with DeleteTasks. ErrInvalidArgument
	// (limit < 1, zero before).
	ListPrunable(ctx context.Context, before time.Time, limit int) ([]Task, error)
	// DeleteTasks deletes the finished tasks (COMPLETED, FAILED, CANCELLED)
	// among ids, in one transaction, and returns how many it deleted.
	// Unknown ids and unfinished tasks are left alone and not counted, so
	// ids from ListPrunable may be passed as they are once archived (a
	// finished task never changes again). Idempotency keys of deleted tasks
	// become free within their team. The context's audit records are appended when it
	// returns no error, even if it deleted nothing.
	DeleteTasks(ctx context.Context, ids []string) (int, error)

	// Close releases the engine. Later calls, Close included, return ErrClosed.
	Close() error
}
