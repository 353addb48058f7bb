// Package fsm is the queue's state machine, shared by the store engines: input
// checks, defaults, and each transition applied to a store.Task in memory. An
// engine loads a task, applies a transition here and saves the result, so the
// memory and SQL engines cannot drift apart on what a transition means. The
// claim order and per-machine rule live in internal/sched.
package fsm

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/rediacc/rediacc/internal/sched"
	"github.com/rediacc/rediacc/internal/store"
)

// DefaultTeam is a machine's or task's team when none was given.
const DefaultTeam = store.DefaultTeam

// Outcome of an attempt closed by Rescue: its copy may still run.
const OutcomeUnknown = store.OutcomeUnknown

// Unsettled returns the 1-based History position of the last entry whose
// outcome is unknown, or 0.
func Unsettled(t *store.Task) int {
	for i := len(t.History) - 1; i >= 0; i-- {
		if t.History[i].Outcome == store.OutcomeUnknown {
			return i + 1
		}
	}
	return 0
}

// Storable times: engines may store instants as int64 unix nanoseconds.
var (
	minTime = time.Unix(0, -1<<63+1).UTC()
	maxTime = time.Unix(0, 1<<63-1).UTC()
)

// Time normalizes t for storage: UTC, no monotonic reading; zero stays zero.
func Time(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.Round(0).UTC()
}

func checkTime(what string, t time.Time) error {
	if t.IsZero() {
		return nil
	}
	if t.Before(minTime) || t.After(maxTime) {
		return fmt.Errorf("%w: %s %v is outside the storable range (years 1678..2262)", store.ErrInvalidArgument, what, t)
	}
	return nil
}

func checkTimes(kv ...any) error {
	for i := 0; i+1 < len(kv); i += 2 {
		if err := checkTime(kv[i].(string), kv[i+1].(time.Time)); err != nil {
			return err
		}
	}
	return nil
}

// Bytes copies b; empty becomes nil.
func Bytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return bytes.Clone(b)
}

func intPtr(p *int) *int {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// CloneAttempt deep-copies a with normalized times.
func CloneAttempt(a store.Attempt) store.Attempt {
	a.ExitCode = intPtr(a.ExitCode)
	a.StartedAt = Time(a.StartedAt)
	a.EndedAt = Time(a.EndedAt)
	return a
}

// CloneTask deep-copies t: no slice or pointer is shared with the result.
func CloneTask(t store.Task) store.Task {
	t.Spec = Bytes(t.Spec)
	t.Stdout = Bytes(t.Stdout)
	t.Stderr = Bytes(t.Stderr)
	t.ExitCode = intPtr(t.ExitCode)
	if len(t.History) == 0 {
		t.History = nil
	} else {
		h := make([]store.Attempt, len(t.History))
		for i, a := range t.History {
			h[i] = CloneAttempt(a)
		}
		t.History = h
	}
	return t
}

// CloneMachine deep-copies m.
func CloneMachine(m store.Machine) store.Machine {
	m.Config = Bytes(m.Config)
	m.Health = Bytes(m.Health)
	return m
}

// NewMachine checks m and fills its defaults (a new UUID as ID, team,
// timestamps from now). Health, HealthAt and DeletedAt are cleared: only
// SetMachineHealth and DeleteMachine set them; Team (a name) is cleared:
// engines fill it on read.
func NewMachine(m store.Machine, now time.Time) (store.Machine, error) {
	if m.Name == "" {
		return store.Machine{}, fmt.Errorf("%w: machine name is empty", store.ErrInvalidArgument)
	}
	if m.Port < 0 || m.Port > 65535 {
		return store.Machine{}, fmt.Errorf("%w: machine %s: port %d", store.ErrInvalidArgument, m.Name, m.Port)
	}
	if err := checkTimes("CreatedAt", m.CreatedAt, "UpdatedAt", m.UpdatedAt); err != nil {
		return store.Machine{}, fmt.Errorf("machine %s: %w", m.Name, err)
	}
	m = CloneMachine(m)
	m.Health, m.HealthAt, m.DeletedAt, m.Team = nil, time.Time{}, time.Time{}, ""
	if m.ID == "" {
		m.ID = uuid.NewString()
	}
	if m.TeamID == "" {
		m.TeamID = DefaultTeam
	}
	if m.CreatedAt.IsZero() {
		m.CreatedAt = now
	}
	if m.UpdatedAt.IsZero() {
		m.UpdatedAt = m.CreatedAt
	}
	m.CreatedAt, m.UpdatedAt = Time(m.CreatedAt), Time(m.UpdatedAt)
	return m, nil
}

// UpdateMachine returns m checked and defaulted as a replacement of old:
// ID, CreatedAt, Health and HealthAt are kept from old, UpdatedAt defaults
// to now.
func UpdateMachine(old, m store.Machine, now time.Time) (store.Machine, error) {
	if m.UpdatedAt.IsZero() {
		m.UpdatedAt = now
	}
	m.ID, m.CreatedAt = old.ID, old.CreatedAt
	m, err := NewMachine(m, now)
	if err != nil {
		return store.Machine{}, err
	}
	m.Health, m.HealthAt = Bytes(old.Health), old.HealthAt
	return m, nil
}

// NewTask checks t and returns the task to insert: PENDING, no lease, an id
// (a new UUID when empty), TeamID (DefaultTeam when empty), CreatedAt (now
// when zero), EnqueuedAt (CreatedAt when zero), ReadyAt (EnqueuedAt when
// zero). The name fields (Team, Machine) are cleared: engines fill them on
// read.
func NewTask(t store.Task, now time.Time) (store.Task, error) {
	if t.MachineID == "" {
		return store.Task{}, fmt.Errorf("%w: task %s: machine id is empty", store.ErrInvalidArgument, t.ID)
	}
	if t.Priority < 1 || t.Priority > 5 {
		return store.Task{}, fmt.Errorf("%w: task %s: priority %d is not in 1..5", store.ErrInvalidArgument, t.ID, t.Priority)
	}
	if t.Attempts < 0 {
		return store.Task{}, fmt.Errorf("%w: task %s: attempts %d", store.ErrInvalidArgument, t.ID, t.Attempts)
	}
	if err := checkTimes("CreatedAt", t.CreatedAt, "EnqueuedAt", t.EnqueuedAt, "ReadyAt", t.ReadyAt, "StartedAt", t.StartedAt); err != nil {
		return store.Task{}, fmt.Errorf("task %s: %w", t.ID, err)
	}
	for _, a := range t.History {
		if err := checkTimes("History.StartedAt", a.StartedAt, "History.EndedAt", a.EndedAt); err != nil {
			return store.Task{}, fmt.Errorf("task %s: %w", t.ID, err)
		}
	}
	t = CloneTask(t)
	if t.ID == "" {
		t.ID = uuid.Must(uuid.NewV7()).String() // version 7: appended to the id index (see rediacc.newTaskID)
	}
	t.Status = store.Pending
	if t.TeamID == "" {
		t.TeamID = DefaultTeam
	}
	t.Team, t.Machine = "", ""
	if t.CreatedAt.IsZero() {
		t.CreatedAt = now
	}
	if t.EnqueuedAt.IsZero() {
		t.EnqueuedAt = t.CreatedAt
	}
	if t.ReadyAt.IsZero() {
		t.ReadyAt = t.EnqueuedAt
	}
	t.CreatedAt, t.EnqueuedAt, t.ReadyAt, t.StartedAt = Time(t.CreatedAt), Time(t.EnqueuedAt), Time(t.ReadyAt), Time(t.StartedAt)
	t.CompletedAt = time.Time{}
	t.LeaseOwner, t.LeaseExpiresAt, t.CancelRequested = "", time.Time{}, false
	return t, nil
}

// CheckFilter checks a TaskFilter.
func CheckFilter(f store.TaskFilter) error {
	if f.Limit < 0 {
		return fmt.Errorf("%w: limit %d", store.ErrInvalidArgument, f.Limit)
	}
	return checkTimes("CompletedAfter", f.CompletedAfter)
}

// Match reports whether t passes f (Limit aside).
func Match(t *store.Task, f store.TaskFilter) bool {
	if len(f.Statuses) > 0 && !slices.Contains(f.Statuses, t.Status) {
		return false
	}
	if f.TeamID != "" && t.TeamID != f.TeamID {
		return false
	}
	if f.TeamIDs != nil && !slices.Contains(f.TeamIDs, t.TeamID) {
		return false
	}
	if f.MachineID != "" && t.MachineID != f.MachineID {
		return false
	}
	if !f.CompletedAfter.IsZero() && (t.CompletedAt.IsZero() || t.CompletedAt.Before(f.CompletedAfter)) {
		return false
	}
	return f.Priority == 0 || t.Priority == f.Priority
}

// CompareTasks is ListTasks' order: CreatedAt, then ID.
func CompareTasks(a, b *store.Task) int {
	if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
		return c
	}
	return cmp.Compare(a.ID, b.ID)
}

// SortTasks sorts ts in ListTasks' order.
func SortTasks(ts []store.Task) {
	slices.SortFunc(ts, func(a, b store.Task) int { return CompareTasks(&a, &b) })
}

// CheckClaim checks a ClaimRequest.
func CheckClaim(r store.ClaimRequest) error {
	switch {
	case r.Owner == "":
		return fmt.Errorf("%w: claim: owner is empty", store.ErrInvalidArgument)
	case r.Max < 1:
		return fmt.Errorf("%w: claim: max %d < 1", store.ErrInvalidArgument, r.Max)
	case r.PerMachine < 0:
		return fmt.Errorf("%w: claim: per-machine limit %d < 0", store.ErrInvalidArgument, r.PerMachine)
	case r.MaxHold < 0:
		return fmt.Errorf("%w: claim: max hold %v < 0", store.ErrInvalidArgument, r.MaxHold)
	case r.Now.IsZero():
		return fmt.Errorf("%w: claim: Now is zero", store.ErrInvalidArgument)
	case !r.LeaseUntil.After(r.Now):
		return fmt.Errorf("%w: claim: lease until %v is not after now %v", store.ErrInvalidArgument, r.LeaseUntil, r.Now)
	}
	return checkTimes("claim Now", r.Now, "claim LeaseUntil", r.LeaseUntil)
}

// Policy is the scheduling part of r.
func Policy(r store.ClaimRequest) sched.Policy {
	return sched.Policy{
		Now:             r.Now,
		Max:             r.Max,
		PerMachine:      r.PerMachine,
		ReserveCritical: r.ReserveCritical,
		Aging:           r.Aging,
		Machines:        r.Machines,
		BusyMachines:    r.BusyMachines,
		MaxHold:         r.MaxHold,
		Weights:         r.Weights,
	}
}

// GatedPolicy is Policy(r) with the gates and windows in force, as the
// engine read them in the claim's transaction (window.go).
func GatedPolicy(r store.ClaimRequest, gates []store.Gate, windows []store.Window) sched.Policy {
	p := Policy(r)
	p.Gates = GateState(gates, windows, r.Now)
	return p
}

// Candidate is t as the scheduler sees it; seq is its creation sequence.
func Candidate(t *store.Task, seq int64) sched.Candidate {
	return sched.Candidate{ID: t.ID, Seq: seq, Team: t.TeamID, Machine: t.MachineID, Priority: t.Priority, EnqueuedAt: t.EnqueuedAt, ReadyAt: t.ReadyAt}
}

// Claim moves a PENDING task to ASSIGNED under r's lease.
func Claim(t *store.Task, r store.ClaimRequest) {
	t.Status = store.Assigned
	t.LeaseOwner = r.Owner
	t.LeaseExpiresAt = Time(r.LeaseUntil)
}

func leaseLost(t *store.Task, owner string) error {
	return fmt.Errorf("%w: task %s is %s, leased by %q, not %q", store.ErrLeaseLost, t.ID, t.Status, t.LeaseOwner, owner)
}

// Start moves an ASSIGNED task leased by owner to PROCESSING and appends the
// open attempt a (Number defaults to Attempts+1, Worker to owner).
// ErrInvalidArgument when a has no StartedAt or has an EndedAt;
// ErrDuplicateAttempt when owner already started it; ErrLeaseLost otherwise.
func Start(t *store.Task, owner string, a store.Attempt) error {
	switch {
	case owner == "":
		return fmt.Errorf("%w: start %s: owner is empty", store.ErrInvalidArgument, t.ID)
	case a.StartedAt.IsZero():
		return fmt.Errorf("%w: start %s: attempt has no StartedAt", store.ErrInvalidArgument, t.ID)
	case !a.EndedAt.IsZero():
		return fmt.Errorf("%w: start %s: attempt is already ended", store.ErrInvalidArgument, t.ID)
	}
	if err := checkTimes("attempt StartedAt", a.StartedAt); err != nil {
		return err
	}
	if t.Status == store.Processing && t.LeaseOwner == owner {
		return fmt.Errorf("%w: task %s was already started by %q", store.ErrDuplicateAttempt, t.ID, owner)
	}
	if t.Status != store.Assigned || t.LeaseOwner != owner {
		return leaseLost(t, owner)
	}
	if n := Unsettled(t); n > 0 {
		return fmt.Errorf("%w: task %s: attempt %d (history entry %d) may still run on the machine", store.ErrUnsettled, t.ID, t.History[n-1].Number, n)
	}
	a = CloneAttempt(a)
	if a.Number == 0 {
		a.Number = t.Attempts + 1
	}
	if a.Worker == "" {
		a.Worker = owner
	}
	t.Status = store.Processing
	if t.StartedAt.IsZero() {
		t.StartedAt = a.StartedAt
	}
	t.History = append(t.History, a)
	return nil
}

// Renew extends owner's lease on t to until, and reports whether t is still
// leased by owner.
func Renew(t *store.Task, owner string, until time.Time) bool {
	if !t.Status.Active() || t.LeaseOwner != owner {
		return false
	}
	t.LeaseExpiresAt = Time(until)
	return true
}

// CheckHeartbeat checks Heartbeat's arguments.
func CheckHeartbeat(owner string, until time.Time) error {
	if owner == "" {
		return fmt.Errorf("%w: heartbeat: owner is empty", store.ErrInvalidArgument)
	}
	if until.IsZero() {
		return fmt.Errorf("%w: heartbeat: until is zero", store.ErrInvalidArgument)
	}
	return checkTimes("heartbeat until", until)
}

// CheckFinish checks f before the task is loaded.
func CheckFinish(f store.Finish) error {
	switch {
	case f.ID == "":
		return fmt.Errorf("%w: finish: id is empty", store.ErrInvalidArgument)
	case f.Owner == "":
		return fmt.Errorf("%w: finish %s: owner is empty", store.ErrInvalidArgument, f.ID)
	case f.At.IsZero():
		return fmt.Errorf("%w: finish %s: At is zero", store.ErrInvalidArgument, f.ID)
	}
	switch f.Next {
	case store.Pending, store.Completed, store.Failed, store.Cancelled:
	default:
		return fmt.Errorf("%w: finish %s: next status %q", store.ErrInvalidArgument, f.ID, f.Next)
	}
	if f.Settles < 0 {
		return fmt.Errorf("%w: finish %s: settles %d", store.ErrInvalidArgument, f.ID, f.Settles)
	}
	return checkTimes("finish At", f.At, "finish ReadyAt", f.ReadyAt, "finish EnqueuedAt", f.EnqueuedAt,
		"attempt StartedAt", f.Attempt.StartedAt, "attempt EndedAt", f.Attempt.EndedAt)
}

// Finish closes t's current attempt and moves it to f.Next, if f.Owner
// holds it (ErrLeaseLost otherwise, t unchanged). The attempt replaces the
// open History entry, or is appended when there is none (unless it is the
// zero Attempt); its EndedAt defaults to f.At, Worker to f.Owner, Number to
// the open entry's or Attempts+1. A task whose cancellation was asked is
// CANCELLED rather than requeued when f.Next is PENDING.
func Finish(t *store.Task, f store.Finish) error {
	if err := CheckFinish(f); err != nil {
		return err
	}
	if !t.Status.Active() || t.LeaseOwner != f.Owner {
		return leaseLost(t, f.Owner)
	}
	at := Time(f.At)
	a := CloneAttempt(f.Attempt)
	if a.EndedAt.IsZero() {
		a.EndedAt = at
	}
	if a.Worker == "" {
		a.Worker = f.Owner
	}
	open := -1
	for i := len(t.History) - 1; i >= 0; i-- {
		if t.History[i].EndedAt.IsZero() {
			open = i
			break
		}
	}
	if f.Settles > 0 {
		if open >= 0 || f.Settles > len(t.History) || t.History[f.Settles-1].Outcome != store.OutcomeUnknown {
			return fmt.Errorf("%w: finish %s: history entry %d is not an unknown attempt to settle (or one is open)", store.ErrInvalidArgument, t.ID, f.Settles)
		}
		old := t.History[f.Settles-1]
		a = CloneAttempt(f.Attempt)
		if a.Number == 0 {
			a.Number = old.Number
		}
		if a.Worker == "" {
			a.Worker = old.Worker
		}
		if a.StartedAt.IsZero() {
			a.StartedAt = old.StartedAt
		}
		if a.EndedAt.IsZero() {
			a.EndedAt = old.EndedAt
		}
		if a.RunID == "" {
			a.RunID = old.RunID
		}
		if a.PGID == 0 {
			a.PGID, a.RemoteID = old.PGID, old.RemoteID
		}
		t.History[f.Settles-1] = a
		open = -2 // settled: nothing else is recorded
	}
	switch {
	case open == -2:
	case open >= 0:
		if a.Number == 0 {
			a.Number = t.History[open].Number
		}
		if a.StartedAt.IsZero() {
			a.StartedAt = t.History[open].StartedAt
		}
		t.History[open] = a
	case !isZeroAttempt(f.Attempt):
		if a.Number == 0 {
			a.Number = t.Attempts + 1
		}
		t.History = append(t.History, a)
	}
	if f.CountAttempt {
		t.Attempts++
	}
	next := f.Next
	if next == store.Pending && t.CancelRequested && Unsettled(t) == 0 {
		next = store.Cancelled
	}
	t.Status = next
	if next == store.Pending {
		t.ReadyAt = Time(f.ReadyAt)
		if t.ReadyAt.IsZero() {
			t.ReadyAt = at
		}
		if !f.EnqueuedAt.IsZero() {
			t.EnqueuedAt = Time(f.EnqueuedAt)
		}
		t.CompletedAt = time.Time{}
	} else {
		t.CompletedAt = at
	}
	t.LeaseOwner, t.LeaseExpiresAt = "", time.Time{}
	t.ExitCode = intPtr(f.ExitCode)
	t.Stdout, t.Stderr = Bytes(f.Stdout), Bytes(f.Stderr)
	t.StdoutTruncated, t.StderrTruncated = f.StdoutTruncated, f.StderrTruncated
	t.Error, t.ErrorKind = f.Error, f.ErrorKind
	return nil
}

func isZeroAttempt(a store.Attempt) bool {
	return a.Number == 0 && a.Worker == "" && a.StartedAt.IsZero() && a.EndedAt.IsZero() &&
		a.ExitCode == nil && a.Signal == "" && a.Error == "" && a.ErrorKind == "" && a.Outcome == "" &&
		!a.Recovered && a.RunID == "" && a.PGID == 0 && a.RemoteID == ""
}

// CheckSetRemote checks SetAttemptRemote's owner.
func CheckSetRemote(owner string) error {
	if owner == "" {
		return fmt.Errorf("%w: set attempt remote: owner is empty", store.ErrInvalidArgument)
	}
	return nil
}

// SetRemote records r on t's open attempt if t is PROCESSING under owner
// and that attempt's RunID is r.RunID; it reports whether t changed.
func SetRemote(t *store.Task, owner string, r store.AttemptRemote) bool {
	if t.Status != store.Processing || t.LeaseOwner != owner || r.RunID == "" {
		return false
	}
	for i := len(t.History) - 1; i >= 0; i-- {
		if a := &t.History[i]; a.EndedAt.IsZero() {
			if a.RunID != r.RunID {
				return false
			}
			a.PGID, a.RemoteID = r.PGID, r.RemoteID
			return true
		}
	}
	return false
}

// Held reports whether t is leased under one of hs.
func Held(t *store.Task, hs []store.Hold) bool {
	for _, h := range hs {
		if h.ID == t.ID && h.Owner == t.LeaseOwner {
			return true
		}
	}
	return false
}

// Cancel applies a cancellation at instant at and reports whether t changed:
// PENDING becomes CANCELLED; ASSIGNED/PROCESSING get CancelRequested;
// CANCELLED is left as is; COMPLETED/FAILED give ErrNotCancellable.
func Cancel(t *store.Task, at time.Time) (changed bool, err error) {
	if err := checkTimes("cancel at", at); err != nil {
		return false, err
	}
	switch t.Status {
	case store.Pending:
		if Unsettled(t) > 0 {
			// An earlier copy may still run: a worker settles it first.
			if t.CancelRequested {
				return false, nil
			}
			t.CancelRequested = true
			return true, nil
		}
		t.Status = store.Cancelled
		t.CompletedAt = Time(at)
		return true, nil
	case store.Assigned, store.Processing:
		if t.CancelRequested {
			return false, nil
		}
		t.CancelRequested = true
		return true, nil
	case store.Cancelled:
		return false, nil
	default:
		return false, fmt.Errorf("%w: task %s is %s", store.ErrNotCancellable, t.ID, t.Status)
	}
}

// Expired reports whether t is held under a lease that expired by now.
func Expired(t *store.Task, now time.Time) bool {
	return t.Status.Active() && !now.Before(t.LeaseExpiresAt)
}

// CheckRescue checks a RescueRequest.
func CheckRescue(r store.RescueRequest) error {
	if r.Now.IsZero() {
		return fmt.Errorf("%w: rescue: Now is zero", store.ErrInvalidArgument)
	}
	return checkTimes("rescue Now", r.Now)
}

// Rescue takes t back from its worker at instant now: an open History
// entry is closed as unknown (its copy may still run) with reason as its
// error; then CANCELLED when its cancellation was asked and no entry is
// unknown, else PENDING and ready at now, EnqueuedAt and Attempts
// unchanged. RescuedFrom names the lease owner it was taken from: an
// engine returns it and does not store it.
func Rescue(t *store.Task, now time.Time, reason string) {
	now = Time(now)
	for i := range t.History {
		if t.History[i].EndedAt.IsZero() {
			t.History[i].EndedAt = now
			t.History[i].Outcome = OutcomeUnknown
			if t.History[i].Error == "" {
				t.History[i].Error = reason
			}
		}
	}
	if t.CancelRequested && Unsettled(t) == 0 {
		t.Status = store.Cancelled
		t.CompletedAt = now
	} else {
		t.Status = store.Pending
		t.ReadyAt = now
	}
	t.RescuedFrom = t.LeaseOwner // reported with the result, never stored
	t.LeaseOwner, t.LeaseExpiresAt = "", time.Time{}
}

// RescueReason is the error recorded on an attempt rescued from owner.
func RescueReason(t *store.Task, now time.Time) string {
	if Expired(t, now) {
		return fmt.Sprintf("rescued: lease of worker %q expired at %s", t.LeaseOwner, t.LeaseExpiresAt.Format(time.RFC3339Nano))
	}
	return fmt.Sprintf("rescued: worker %q is gone", t.LeaseOwner)
}

var statusRank = map[store.Status]int{
	store.Pending: 0, store.Assigned: 1, store.Processing: 2,
	store.Completed: 3, store.Failed: 4, store.Cancelled: 5,
}

// SortDepth sorts Depth's rows: queue-state order (PENDING, ASSIGNED,
// PROCESSING, COMPLETED, FAILED, CANCELLED), then priority, team id,
// machine id.
func SortDepth(rows []store.DepthRow) {
	slices.SortFunc(rows, func(a, b store.DepthRow) int {
		ra, oka := statusRank[a.Status]
		rb, okb := statusRank[b.Status]
		if !oka {
			ra = len(statusRank)
		}
		if !okb {
			rb = len(statusRank)
		}
		return cmp.Or(
			cmp.Compare(ra, rb),
			cmp.Compare(a.Status, b.Status),
			cmp.Compare(a.Priority, b.Priority),
			cmp.Compare(a.TeamID, b.TeamID),
			cmp.Compare(a.MachineID, b.MachineID),
		)
	})
}
