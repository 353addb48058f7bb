package rediacc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/vault"
)

// Status is a task's state in the queue: PENDING → ASSIGNED → PROCESSING →
// COMPLETED, FAILED or CANCELLED (the product guide's states). A task waiting
// out a retry delay is PENDING with NextAttemptAt in the future.
type Status string

// Task states.
const (
	StatusPending    Status = Status(store.Pending)
	StatusAssigned   Status = Status(store.Assigned)
	StatusProcessing Status = Status(store.Processing)
	StatusCompleted  Status = Status(store.Completed)
	StatusFailed     Status = Status(store.Failed)
	StatusCancelled  Status = Status(store.Cancelled)
)

// Terminal reports whether s is COMPLETED, FAILED or CANCELLED.
func (s Status) Terminal() bool { return store.Status(s).Terminal() }

// ParseStatus reads a status name, case-insensitive. Unknown names return
// ErrInvalidArgument.
func ParseStatus(s string) (Status, error) {
	st := Status(strings.ToUpper(strings.TrimSpace(s)))
	switch st {
	case StatusPending, StatusAssigned, StatusProcessing, StatusCompleted, StatusFailed, StatusCancelled:
		return st, nil
	}
	return "", fmt.Errorf("%w: status %s (use pending, assigned, processing, completed, failed or cancelled)", ErrInvalidArgument, quoteInput(s))
}

// MaxCommandBytes bounds a task's command: 64 KiB. The command line it
// makes on the machine, with Env, is bounded by MaxCommandLineBytes too.
const MaxCommandBytes = 64 << 10

// TaskSpec is what a caller submits.
type TaskSpec struct {
	// Machine is the registered machine's name. Required unless Team is
	// set.
	Machine string
	// Team, with Machine empty, lets Submit place the task (placement.go):
	// on the machine of Team whose labels hold Selector and that is healthy
	// (its last recent health probe did not fail; never probed counts as
	// healthy), with the fewest queued and running tasks, then the lowest
	// load per CPU, then the most free memory, then the first name. Busy
	// machines (above Config.HealthThresholds) get priority 3–5 tasks only
	// when no other machine is eligible. With Machine set, Team (if given)
	// must be the machine's team. A returned Task leaves it empty: its
	// team is Task.Team (the JSON form's "team").
	Team string
	// Selector narrows placement to the machines of Team whose labels hold
	// every key=value ({"role": "web"}). With Machine set, the machine's
	// labels must hold it. Keys and values follow the rules of
	// Machine.Labels.
	Selector map[string]string
	// Command is run by the machine's login shell (sh -c). Required, at most
	// 64 KiB (MaxCommandBytes) of valid UTF-8, no NUL byte; with Env, at most
	// MaxCommandLineBytes once quoted for the shell. Never put secrets here.
	Command string
	// Priority 1..5; 0 means Normal (3).
	Priority Priority
	// Retry is the retry policy; the zero value retries nothing.
	Retry RetryPolicy
	// FailureAction is what happens when the last attempt fails; "" means
	// FailureAlert.
	FailureAction FailureAction
	// Timeout bounds one attempt; 0 means Config.DefaultTimeout; at most
	// MaxTaskDuration. When it runs out, the remote command and its
	// children are ended.
	Timeout time.Duration
	// Env holds environment variables for the command; keys match
	// [A-Za-z_][A-Za-z0-9_]*, values are at most MaxEnvValueBytes, and Env
	// and Secrets hold at most MaxEnvVars together. Not for secrets: values
	// are stored in the queue.
	Env map[string]string
	// Secrets maps environment variable names to keys of the machine's team
	// vault ({"DB_PASSWORD": "db/password"}). The worker resolves them when
	// the task runs and hands them to the command without putting them on
	// any command line (they travel on the session's stdin); every value is
	// masked as *** in the task's output, errors, logs, alerts and audit
	// records. Only the keys are stored in the queue. A missing key fails
	// the task at once (ErrSecretNotFound), without retrying. Submitting a
	// task with secrets needs the vault.use permission (operators, admins).
	Secrets map[string]string
	// IdempotencyKey, when set, makes Submit return the task first submitted
	// with the same key instead of queueing a second one. At most 200 bytes
	// (MaxIdempotencyKeyBytes) of UTF-8 without control characters.
	IdempotencyKey string
}

var envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// normalize fills defaults and validates. It returns ErrInvalidTask or
// ErrInvalidPriority naming the bad field.
func (s TaskSpec) normalize() (TaskSpec, error) {
	bad := func(format string, a ...any) (TaskSpec, error) {
		return s, fmt.Errorf("%w: %s", ErrInvalidTask, fmt.Sprintf(format, a...))
	}
	if s.Priority == 0 {
		s.Priority = Normal
	}
	if err := s.Priority.Validate(); err != nil {
		return s, err
	}
	if strings.TrimSpace(s.Machine) == "" && strings.TrimSpace(s.Team) == "" {
		return bad("machine is required (or a team to place the task in)")
	}
	if err := checkLabels("selector", s.Selector); err != nil { // limits.go
		return bad("%v", err)
	}
	if strings.TrimSpace(s.Command) == "" {
		return bad("command is empty")
	}
	if len(s.Command) > MaxCommandBytes {
		return bad("command is %d bytes, more than MaxCommandBytes (%d, %d KiB): pass large scripts in a file on the machine", len(s.Command), MaxCommandBytes, MaxCommandBytes>>10)
	}
	if strings.ContainsRune(s.Command, 0) {
		return bad("command contains a NUL byte")
	}
	if i := invalidUTF8At(s.Command); i >= 0 {
		return bad("command is not valid UTF-8 (byte %d): the queue stores text and would change it; write such bytes with printf escapes (printf '\\377')", i)
	}
	if err := s.Retry.Validate(); err != nil {
		return s, err
	}
	if s.FailureAction == "" {
		s.FailureAction = FailureAlert
	}
	if _, err := ParseFailureAction(string(s.FailureAction)); err != nil {
		return s, err
	}
	if s.Timeout < 0 {
		return bad("timeout %s is negative", s.Timeout)
	}
	for k, v := range s.Env {
		if !envKeyRE.MatchString(k) {
			return bad("environment variable name %s is not [A-Za-z_][A-Za-z0-9_]*", quoteInput(k))
		}
		if strings.ContainsRune(v, 0) {
			return bad("environment variable %s contains a NUL byte", k)
		}
		if i := invalidUTF8At(v); i >= 0 {
			return bad("environment variable %s is not valid UTF-8 (byte %d): the queue stores text and would change it", k, i)
		}
	}
	for k, key := range s.Secrets {
		if !envKeyRE.MatchString(k) {
			return bad("secret variable name %s is not [A-Za-z_][A-Za-z0-9_]*", quoteInput(k))
		}
		if _, dup := s.Env[k]; dup {
			return bad("%s is both an environment variable and a secret", k)
		}
		if err := vault.ValidateKey(key); err != nil {
			return bad("secret %s: %v", k, err)
		}
		if why, reserved := isReservedSecret(key); reserved { // sshca.go
			return bad("secret %s: %s and cannot be handed to tasks", k, why)
		}
	}
	if err := s.checkSpecLimits(); err != nil { // limits.go
		return bad("%v", err)
	}
	return s, nil
}

// Outcome is how an attempt ended (Attempt.Outcome); "" while it runs.
type Outcome string

// Outcomes of an attempt.
const (
	// OutcomeSucceeded: the command exited 0.
	OutcomeSucceeded Outcome = store.OutcomeSucceeded
	// OutcomeFailed: the attempt failed (non-zero exit, signal, connection,
	// credentials…; see Attempt.ErrorKind). Counted.
	OutcomeFailed Outcome = store.OutcomeFailed
	// OutcomeTimeout: the command ran past the task's timeout and was
	// stopped. Counted.
	OutcomeTimeout Outcome = store.OutcomeTimeout
	// OutcomeCancelled: the task was cancelled during the attempt.
	OutcomeCancelled Outcome = store.OutcomeCancelled
	// OutcomeInterrupted: the attempt was stopped (its copy on the machine
	// confirmed gone) or never started, without a result: by its worker's
	// shutdown, or after its worker was lost. Not counted; the task runs
	// again.
	OutcomeInterrupted Outcome = store.OutcomeInterrupted
	// OutcomeUnknown: its worker (or its connection) was lost while it
	// ran, and whether its copy still runs on the machine has not been
	// learned yet. The task does not run again before it is: it waits
	// (Task.Waiting, WaitEarlierCopy) until a worker reaches the machine, stops that copy
	// or reads its result. Not counted.
	OutcomeUnknown Outcome = store.OutcomeUnknown
	// OutcomeLost: its copy is gone but ended without recording how (killed
	// by a signal, the machine rebooted, no marker could be kept): whether
	// it completed cannot be learned, so the task ran again — the one case
	// of at-least-once. Not counted.
	OutcomeLost Outcome = store.OutcomeLost
)

// Attempt is one try of a task.
type Attempt struct {
	Number    int       `json:"number"` // 1-based; an interrupted try reruns under the same number
	Worker    string    `json:"worker,omitempty"`
	StartedAt time.Time `json:"startedAt"`
	EndedAt   time.Time `json:"endedAt,omitzero"`
	ExitCode  *int      `json:"exitCode,omitempty"`
	// Signal is the signal that killed the command ("TERM"), "" otherwise.
	Signal    string    `json:"signal,omitempty"`
	Error     string    `json:"error,omitempty"`
	ErrorKind ErrorKind `json:"errorKind,omitempty"`
	// Outcome is one of the Outcome constants, or "" while running.
	Outcome Outcome `json:"outcome,omitempty"`
	// Recovered: the result was read from the run's marker on the machine
	// after the attempt's worker or connection was lost; its output is
	// missing or partial.
	Recovered bool `json:"recovered,omitempty"`
	// RunID names the attempt's marker on its machine
	// (~/.cache/rediacc/run/RUNID, see package ssh) and PGID its process
	// group there (0 until known); RemoteID ("boot-id/start-time") tells
	// that group apart from a later one reusing its id.
	RunID    string `json:"runId,omitempty"`
	PGID     int    `json:"pgid,omitempty"`
	RemoteID string `json:"remoteId,omitempty"`
}

func attemptFromRecord(a store.Attempt) Attempt {
	return Attempt{Number: a.Number, Worker: a.Worker, StartedAt: a.StartedAt, EndedAt: a.EndedAt,
		ExitCode: a.ExitCode, Signal: a.Signal, Error: a.Error, ErrorKind: ErrorKind(a.ErrorKind),
		Outcome: Outcome(a.Outcome), Recovered: a.Recovered, RunID: a.RunID, PGID: a.PGID, RemoteID: a.RemoteID}
}

// Task is a queued task and what is known of its runs.
type Task struct {
	ID string // a UUID
	TaskSpec
	// Team is the name of the team the task was queued in (its
	// TaskSpec.Team is left empty), TeamID that team's id; MachineID is
	// the id of the machine TaskSpec.Machine names. A task belongs to the
	// ids for good: a renamed team or machine shows its new name here, and
	// a later team or machine of the same name is another one.
	Team      string
	TeamID    string
	MachineID string
	Status    Status
	// Attempts counts the attempts that used up a try (interrupted ones are
	// not counted).
	Attempts int
	// History lists every try, interrupted ones included, oldest first.
	History []Attempt
	// Result of the last attempt. Output is capped (Config.OutputLimit);
	// the Truncated flags say when bytes were dropped.
	ExitCode        *int
	Stdout          string
	Stderr          string
	StdoutTruncated bool
	StderrTruncated bool
	Error           string
	// ErrorKind is the stable kind of Error ("" when none); Err turns both
	// into an error for errors.Is and errors.As.
	ErrorKind ErrorKind

	CreatedAt     time.Time
	StartedAt     time.Time // first attempt's start; zero before
	CompletedAt   time.Time // zero until terminal
	NextAttemptAt time.Time // a PENDING task is not run before this

	// Waiting says why a PENDING task is not running, and until when (see
	// WaitReason); nil for other states. Get and List fill it; tasks that
	// other calls return (Submit, Wait, Watch, …) leave it nil.
	Waiting []WaitReason
	// Kind is "" for a shell command, or the maintenance job the worker
	// runs itself ("key.rotate": SubmitKeyRotation); Command then
	// describes it.
	Kind string

	// ScheduleID, Schedule and ScheduledAt link a task a schedule
	// submitted to it: the schedule's id, its name when it fired, and the
	// fire's scheduled time (for a manual fire, when it was asked). Empty
	// for other tasks.
	ScheduleID  string
	Schedule    string
	ScheduledAt time.Time
}

// WaitMessage returns Waiting's messages joined with "; " ("" when none):
// the task JSON's waitReason.
func (t *Task) WaitMessage() string { return joinWaiting(t.Waiting) }

// taskJSON is the task's JSON form, with the product guide's field names.
type taskJSON struct {
	TaskID          string            `json:"taskId"`
	Status          Status            `json:"status,omitempty"`
	Priority        Priority          `json:"priority,omitempty"`
	Team            string            `json:"team,omitempty"`
	TeamID          string            `json:"teamId,omitempty"`
	Machine         string            `json:"machine,omitempty"`
	MachineID       string            `json:"machineId,omitempty"`
	Selector        map[string]string `json:"selector,omitempty"`
	Command         string            `json:"command,omitempty"`
	RetryCount      int               `json:"retryCount"`
	RetryDelay      float64           `json:"retryDelay"` // seconds
	RetryBackoff    string            `json:"retryBackoff,omitempty"`
	RetryMultiplier float64           `json:"retryMultiplier,omitempty"`
	RetryMaxDelay   float64           `json:"retryMaxDelay,omitempty"` // seconds
	RetryJitter     float64           `json:"retryJitter,omitempty"`
	RetryOn         string            `json:"retryOn,omitempty"`
	FailureAction   FailureAction     `json:"failureAction,omitempty"`
	Timeout         float64           `json:"timeout,omitempty"` // seconds
	Env             map[string]string `json:"env,omitempty"`
	Secrets         map[string]string `json:"secrets,omitempty"`
	IdempotencyKey  string            `json:"idempotencyKey,omitempty"`
	Attempts        int               `json:"attempts"`
	History         []Attempt         `json:"history,omitempty"`
	ExitCode        *int              `json:"exitCode"`
	Stdout          string            `json:"stdout"`
	Stderr          string            `json:"stderr"`
	StdoutTruncated bool              `json:"stdoutTruncated,omitempty"`
	StderrTruncated bool              `json:"stderrTruncated,omitempty"`
	Error           string            `json:"error"`
	ErrorKind       ErrorKind         `json:"errorKind,omitempty"`
	CreatedAt       *time.Time        `json:"createdAt"`
	StartedAt       *time.Time        `json:"startedAt"`
	CompletedAt     *time.Time        `json:"completedAt"`
	NextAttemptAt   *time.Time        `json:"nextAttemptAt,omitempty"`
	WaitReason      string            `json:"waitReason,omitempty"`
	WaitReasons     []WaitReason      `json:"waitReasons,omitempty"`
	Kind            string            `json:"kind,omitempty"`
	ScheduleID      string            `json:"scheduleId,omitempty"`
	Schedule        string            `json:"schedule,omitempty"`
	ScheduledAt     *time.Time        `json:"scheduledAt,omitempty"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func timeVal(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// MarshalJSON writes the task in the product guide's form:
// {"taskId": "…", "retryCount": 3, "retryDelay": 30, "failureAction":
// "alert", …}, durations in seconds, times in RFC 3339 UTC.
func (t Task) MarshalJSON() ([]byte, error) {
	return json.Marshal(taskJSON{
		TaskID: t.ID, Status: t.Status, Priority: t.Priority, Team: t.Team, TeamID: t.TeamID,
		Machine: t.Machine, MachineID: t.MachineID, Selector: t.Selector, Command: t.Command,
		RetryCount: t.Retry.RetryCount, RetryDelay: t.Retry.RetryDelay.Seconds(),
		RetryBackoff: t.Retry.Backoff, RetryMultiplier: t.Retry.Multiplier,
		RetryMaxDelay: t.Retry.MaxDelay.Seconds(), RetryJitter: t.Retry.Jitter,
		RetryOn: t.Retry.RetryOn, FailureAction: t.FailureAction,
		Timeout: t.Timeout.Seconds(), Env: t.Env, Secrets: t.Secrets, IdempotencyKey: t.IdempotencyKey,
		Attempts: t.Attempts, History: t.History, ExitCode: t.ExitCode,
		Stdout: t.Stdout, Stderr: t.Stderr,
		StdoutTruncated: t.StdoutTruncated, StderrTruncated: t.StderrTruncated,
		Error: t.Error, ErrorKind: t.ErrorKind,
		CreatedAt: timePtr(t.CreatedAt), StartedAt: timePtr(t.StartedAt),
		CompletedAt: timePtr(t.CompletedAt), NextAttemptAt: timePtr(t.NextAttemptAt),
		WaitReason: t.WaitMessage(), WaitReasons: t.Waiting, Kind: t.Kind,
		ScheduleID: t.ScheduleID, Schedule: t.Schedule, ScheduledAt: timePtr(t.ScheduledAt),
	})
}

// UnmarshalJSON reads the form MarshalJSON writes; every field but taskId is
// optional. Durations are seconds (fractions allowed).
func (t *Task) UnmarshalJSON(b []byte) error {
	var j taskJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("%w: task JSON: %v", ErrInvalidTask, err)
	}
	seconds := func(name string, f float64) (time.Duration, error) {
		if f < 0 || f > MaxTaskDuration.Seconds() {
			return 0, fmt.Errorf("%w: task JSON: %s %g is outside 0..1e9 seconds", ErrInvalidTask, name, f)
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	delay, err := seconds("retryDelay", j.RetryDelay)
	if err != nil {
		return err
	}
	maxDelay, err := seconds("retryMaxDelay", j.RetryMaxDelay)
	if err != nil {
		return err
	}
	timeout, err := seconds("timeout", j.Timeout)
	if err != nil {
		return err
	}
	*t = Task{
		ID: j.TaskID,
		TaskSpec: TaskSpec{
			Machine: j.Machine, Selector: j.Selector, Command: j.Command, Priority: j.Priority,
			Retry: RetryPolicy{
				RetryCount: j.RetryCount, RetryDelay: delay, Backoff: j.RetryBackoff,
				Multiplier: j.RetryMultiplier, MaxDelay: maxDelay, Jitter: j.RetryJitter,
				RetryOn: j.RetryOn,
			},
			FailureAction: j.FailureAction, Timeout: timeout, Env: j.Env,
			Secrets: j.Secrets, IdempotencyKey: j.IdempotencyKey,
		},
		Team: j.Team, TeamID: j.TeamID, MachineID: j.MachineID, Status: j.Status, Attempts: j.Attempts, History: j.History,
		ExitCode: j.ExitCode, Stdout: j.Stdout, Stderr: j.Stderr,
		StdoutTruncated: j.StdoutTruncated, StderrTruncated: j.StderrTruncated,
		Error: j.Error, ErrorKind: j.ErrorKind,
		CreatedAt: timeVal(j.CreatedAt), StartedAt: timeVal(j.StartedAt),
		CompletedAt: timeVal(j.CompletedAt), NextAttemptAt: timeVal(j.NextAttemptAt),
		Waiting: j.WaitReasons, ScheduleID: j.ScheduleID, Schedule: j.Schedule, ScheduledAt: timeVal(j.ScheduledAt),
	}
	return nil
}

// specJSON is how a TaskSpec is kept in the store (store.Task.Spec).
type specJSON struct {
	Command        string            `json:"command"`
	Retry          RetryPolicy       `json:"retry"`
	RetryDelayNS   time.Duration     `json:"retryDelayNs,omitempty"`
	MaxDelayNS     time.Duration     `json:"maxDelayNs,omitempty"`
	FailureAction  FailureAction     `json:"failureAction"`
	TimeoutNS      time.Duration     `json:"timeoutNs,omitempty"`
	Env            map[string]string `json:"env,omitempty"`
	Secrets        map[string]string `json:"secrets,omitempty"` // ENV → vault key; never values
	IdempotencyKey string            `json:"idempotencyKey,omitempty"`
	Selector       map[string]string `json:"selector,omitempty"` // placement's selector, if any
	// Maintenance is a job the worker runs itself (maintenance.go).
	Maintenance *maintenanceSpec `json:"maintenance,omitempty"`
	// The schedule that submitted the task, if any (schedule_fire.go).
	ScheduleID   string    `json:"scheduleId,omitempty"`
	ScheduleName string    `json:"schedule,omitempty"`
	ScheduledAt  time.Time `json:"scheduledAt,omitzero"`
}

func encodeSpec(s TaskSpec) ([]byte, error) {
	return json.Marshal(specJSON{
		Command: s.Command, Retry: s.Retry, RetryDelayNS: s.Retry.RetryDelay,
		MaxDelayNS: s.Retry.MaxDelay, FailureAction: s.FailureAction,
		TimeoutNS: s.Timeout, Env: s.Env, Secrets: s.Secrets, IdempotencyKey: s.IdempotencyKey,
		Selector: s.Selector,
	})
}

// taskFromRecord turns a store record into a Task.
func taskFromRecord(r store.Task) (*Task, error) {
	var sj specJSON
	if err := json.Unmarshal(r.Spec, &sj); err != nil {
		return nil, fmt.Errorf("%w: task %s has an unreadable spec: %v", ErrCorruptStore, r.ID, err)
	}
	sj.Retry.RetryDelay = sj.RetryDelayNS
	sj.Retry.MaxDelay = sj.MaxDelayNS
	t := &Task{
		ID: r.ID,
		TaskSpec: TaskSpec{
			Machine: r.Machine, Selector: sj.Selector, Command: sj.Command, Priority: Priority(r.Priority),
			Retry: sj.Retry, FailureAction: sj.FailureAction, Timeout: sj.TimeoutNS,
			Env: sj.Env, Secrets: sj.Secrets, IdempotencyKey: r.IdempotencyKey,
		},
		Team: r.Team, TeamID: r.TeamID, MachineID: r.MachineID, Status: Status(r.Status), Attempts: r.Attempts,
		ExitCode: r.ExitCode, Stdout: string(r.Stdout), Stderr: string(r.Stderr),
		StdoutTruncated: r.StdoutTruncated, StderrTruncated: r.StderrTruncated,
		Error: r.Error, ErrorKind: ErrorKind(r.ErrorKind),
		CreatedAt: r.CreatedAt, StartedAt: r.StartedAt, CompletedAt: r.CompletedAt,
		ScheduleID: sj.ScheduleID, Schedule: sj.ScheduleName, ScheduledAt: sj.ScheduledAt,
	}
	if r.Status == store.Pending && r.ReadyAt.After(r.CreatedAt) {
		t.NextAttemptAt = r.ReadyAt
	}
	if sj.Maintenance != nil {
		t.Kind = sj.Maintenance.Op
	}
	for _, a := range r.History {
		t.History = append(t.History, attemptFromRecord(a))
	}
	return t, nil
}

// ListFilter narrows Client.List. Zero fields match everything.
type ListFilter struct {
	Statuses []Status
	Machine  string // a registered machine's name: the tasks of that machine
	Team     string // a live team's name
	// TeamID selects one team's tasks by id: a live team's, or a deleted
	// team's (owners; see TeamFilter.IncludeDeleted), whose tasks no team
	// of the same name can see.
	TeamID   string
	Priority Priority // 0 = any
	Limit    int      // 0 = no limit
}

// Submit queues a task and returns at once with it (status PENDING). A
// spec naming a Team instead of a Machine is placed on the team's best
// machine (see TaskSpec.Team). Needs operator (or admin) of the machine's
// team. The checks authorization relies on (the actor's role, the machine
// still registered in the team the task is queued in) hold at the moment
// the task is written: the store checks them again in the write's
// transaction, so a machine moved to another team meanwhile fails the
// submit (ErrConflict) instead of queueing a task of one team on another
// team's machine. Nothing is written when an error is returned.
//
// When spec.IdempotencyKey names an earlier task of the same team (keys are
// scoped per team; another team's key is another key), that task is
// returned instead and nothing is queued: through Get's access check and
// redaction, audited as a task.create of that task with
// idempotent=existing.
//
// Errors: ErrNoActor, ErrPermissionDenied, ErrInvalidPriority,
// ErrInvalidTask, ErrUnknownMachine, ErrNoEligibleMachine, ErrConflict.
func (c *Client) Submit(ctx context.Context, spec TaskSpec) (*Task, error) {
	auth, err := c.taskAuth(ctx)
	if err != nil {
		return nil, err
	}
	p, err := c.prepareTask(ctx, spec, c.newPlacer(), auth, c.clock.Now().UTC())
	if err != nil {
		return nil, err
	}
	rec, created, err := c.engine.CreateTask(p.op.ctx(ctx, p.guards...), p.rec)
	if err != nil {
		return nil, p.op.fail(ctx, mapStoreErr(err))
	}
	if !created {
		return c.idempotentHit(ctx, p.op, rec)
	}
	t, err := taskFromRecord(rec)
	if err != nil {
		return nil, err
	}
	c.taskLog(t, 0).InfoContext(ctx, "task queued", "actor", p.op.actor)
	select {
	case c.wake <- struct{}{}:
	default:
	}
	c.notify()
	return t, nil
}

// idempotentHit returns the existing task a submission's idempotency key
// named, through Get's access check and redaction, and audits it: a
// task.create (result ok) of the existing task, idempotent=existing,
// instead of the create record of the task that was not queued.
func (c *Client) idempotentHit(ctx context.Context, o *op, rec store.Task) (*Task, error) {
	t, err := taskFromRecord(rec)
	if err != nil {
		return nil, err
	}
	_, g, err := c.authorize(ctx, authz.TaskRead, teamScope(rec.TeamID, rec.Team), audit.EntityTask, rec.ID,
		map[string]string{"idempotency_key": rec.IdempotencyKey})
	if err != nil {
		return nil, err
	}
	redactOutput(t, g)
	r := o.record(audit.ResultOK, map[string]string{"idempotent": "existing", "requested_id": o.eid, "status": string(rec.Status)})
	r.EntityID = rec.ID
	c.appendAudit(ctx, r)
	return t, nil
}

func (c *Client) taskLog(t *Task, attempt int) *slog.Logger {
	return c.log.With(slog.String("task_id", t.ID), slog.String("machine", t.Machine),
		slog.Int("priority", int(t.Priority)), slog.Int("attempt", attempt))
}

// getTask loads a task without an access check.
func (c *Client) getTask(ctx context.Context, id string) (*Task, error) {
	if err := checkTaskID("task", id); err != nil { // input.go
		return nil, err
	}
	r, err := c.engine.GetTask(ctx, id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("task %s: %w", quoteInput(id), ErrNotFound)
		}
		return nil, mapStoreErr(err)
	}
	return taskFromRecord(r)
}

// taskScope is the team scope of a task.
func taskScope(t *Task) scope { return teamScope(t.TeamID, t.Team) }

// readTask loads a task and checks that the actor may read it; output is
// blanked unless the actor may read output (viewers may not).
func (c *Client) readTask(ctx context.Context, id string, audited bool) (*Task, *op, authz.Grants, error) {
	if _, _, err := c.actor(ctx); err != nil {
		return nil, nil, authz.Grants{}, err
	}
	t, err := c.getTask(ctx, id)
	if err != nil {
		return nil, nil, authz.Grants{}, err
	}
	o, g, err := c.authorizeSeen(ctx, authz.TaskRead, taskNotFound(id), authz.TaskRead, taskScope(t), audit.EntityTask, id, nil)
	if err != nil {
		return nil, nil, g, err
	}
	redactOutput(t, g)
	if audited {
		o.done(ctx)
	}
	return t, o, g, nil
}

func redactOutput(t *Task, g authz.Grants) {
	if !authz.Allowed(g, authz.TaskOutput, t.TeamID) {
		t.Stdout, t.Stderr = "", ""
	}
}

// Get returns a task; a PENDING one with Waiting filled (why it waits and
// until when, see WaitReason). Viewers get it without its stdout and
// stderr. Errors: ErrNoActor, ErrPermissionDenied, ErrNotFound,
// ErrInvalidArgument (id is not a UUID).
func (c *Client) Get(ctx context.Context, id string) (*Task, error) {
	t, _, _, err := c.readTask(ctx, id, true)
	if err == nil && t.Status == StatusPending {
		if r, rerr := c.engine.GetTask(ctx, id); rerr == nil {
			c.explain(ctx, []*Task{t}, []store.Task{r}) // wait.go
		}
	}
	return t, err
}

// listScope resolves a ListFilter's team (a name, or TeamID) into a scope.
func (c *Client) listScope(ctx context.Context, team, teamID string) (scope, error) {
	switch {
	case teamID != "":
		return c.scopeOfID(ctx, teamID)
	case team != "":
		return c.resolveTeam(ctx, team)
	}
	return scope{}, nil
}

// List returns, in creation order, the tasks of the teams the actor
// belongs to (owners: all) that match f, the PENDING ones with Waiting
// filled. Viewers get them without output. A Team is the live team of that
// name: a deleted team's tasks are listed only by its id (f.TeamID).
// Errors: ErrNoActor, ErrPermissionDenied (f.Team the actor has no role
// in), ErrNotFound (f.Team unknown, for those who may list).
func (c *Client) List(ctx context.Context, f ListFilter) ([]*Task, error) {
	sc, err := c.listScope(ctx, f.Team, f.TeamID)
	if err != nil {
		return nil, err
	}
	teams, o, err := c.scopeTeams(ctx, authz.TaskList, sc, audit.EntityTask)
	if err != nil {
		return nil, err
	}
	g := o.grants // loaded once, by the check above
	sf := store.TaskFilter{TeamIDs: teams, Priority: int(f.Priority), Limit: f.Limit}
	if f.Machine != "" {
		m, err := c.engine.MachineByName(ctx, f.Machine)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return []*Task{}, nil
		case err != nil:
			return nil, mapStoreErr(err)
		}
		sf.MachineID = m.ID
	}
	for _, s := range f.Statuses {
		sf.Statuses = append(sf.Statuses, store.Status(s))
	}
	rs, err := c.engine.ListTasks(ctx, sf)
	if err != nil {
		return nil, mapStoreErr(err)
	}
	out := make([]*Task, 0, len(rs))
	for _, r := range rs {
		t, err := taskFromRecord(r)
		if err != nil {
			return nil, err
		}
		redactOutput(t, g)
		out = append(out, t)
	}
	c.explain(ctx, out, rs) // why the PENDING ones wait (wait.go)
	o.detail["tasks"] = strconv.Itoa(len(out))
	o.done(ctx)
	return out, nil
}

// Wait blocks until the task is COMPLETED, FAILED or CANCELLED and returns
// it, or until ctx ends (ctx.Err()). It sees changes made in this process at
// once and those of other processes within Config.PollInterval. Access is
// Get's, checked (and audited) when the wait starts.
// Errors: ErrNoActor, ErrPermissionDenied, ErrNotFound, ErrInvalidArgument
// (id is not a UUID).
func (c *Client) Wait(ctx context.Context, id string) (*Task, error) {
	_, _, g, err := c.readTask(ctx, id, true)
	if err != nil {
		return nil, err
	}
	for {
		ch := c.changes()
		t, err := c.getTask(ctx, id)
		if err != nil {
			return nil, err
		}
		if t.Status.Terminal() {
			redactOutput(t, g)
			return t, nil
		}
		timer := time.NewTimer(c.cfg.PollInterval)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-ch:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// Cancel cancels a task. A PENDING task becomes CANCELLED at once; an
// ASSIGNED or PROCESSING one has its remote command stopped by its worker
// and then becomes CANCELLED (Wait for it). So does a PENDING task whose
// earlier copy may still run on its machine (an attempt of OutcomeUnknown,
// see Task.WaitReason): it becomes CANCELLED once a worker has stopped that
// copy, so CANCELLED always means that no copy runs. Cancelling a
// CANCELLED task returns it unchanged. Needs operator (or admin) of the
// task's team.
//
// Errors: ErrNoActor, ErrPermissionDenied, ErrNotFound, ErrInvalidArgument
// (id is not a UUID); ErrNotCancellable
// for COMPLETED and FAILED tasks.
func (c *Client) Cancel(ctx context.Context, id string) (*Task, error) {
	if _, _, err := c.actor(ctx); err != nil {
		return nil, err
	}
	cur, err := c.getTask(ctx, id)
	if err != nil {
		return nil, err
	}
	o, g, err := c.authorizeSeen(ctx, authz.TaskRead, taskNotFound(id), authz.TaskCancel, taskScope(cur), audit.EntityTask, id, map[string]string{"status": string(cur.Status)})
	if err != nil {
		return nil, err
	}
	r, err := c.engine.Cancel(o.ctx(ctx), id, c.clock.Now().UTC())
	if err != nil {
		switch {
		case errors.Is(err, store.ErrNotFound):
			err = fmt.Errorf("task %s: %w", quoteInput(id), ErrNotFound)
		case errors.Is(err, store.ErrNotCancellable):
			err = fmt.Errorf("task %s is %s: %w", quoteInput(id), cur.Status, ErrNotCancellable)
		}
		return nil, o.fail(ctx, mapStoreErr(err))
	}
	c.mu.Lock()
	s := c.running[id]
	c.mu.Unlock()
	if s != nil {
		s.cancel(ErrTaskCancelled)
	}
	t, err := taskFromRecord(r)
	if err != nil {
		return nil, err
	}
	redactOutput(t, g)
	c.taskLog(t, t.Attempts).InfoContext(ctx, "task cancel requested", "status", string(t.Status), "actor", o.actor)
	c.notify()
	return t, nil
}

// QueueDepth counts PENDING tasks by priority (tasks waiting out a retry
// delay included) in the teams the actor may list.
// Errors: ErrNoActor, ErrPermissionDenied.
func (c *Client) QueueDepth(ctx context.Context) (map[Priority]int, error) {
	teams, o, err := c.scopeTeams(ctx, authz.TaskList, scope{}, audit.EntityTask)
	if err != nil {
		return nil, err
	}
	rows, err := c.engine.Depth(ctx)
	if err != nil {
		return nil, mapStoreErr(err)
	}
	out := map[Priority]int{}
	for _, r := range rows {
		if r.Status == store.Pending && (teams == nil || slices.Contains(teams, r.TeamID)) {
			out[Priority(r.Priority)] += r.Count
		}
	}
	o.done(ctx)
	return out, nil
}

// invalidUTF8At returns the offset of the first byte of s that is not part
// of valid UTF-8, or -1. Text the queue stores (JSON) must be valid UTF-8:
// encoding/json would replace such bytes with U+FFFD, and the task would
// run a command other than the one submitted.
func invalidUTF8At(s string) int {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(s[i:]); n <= 1 {
				return i
			}
		}
	}
	return -1
}
