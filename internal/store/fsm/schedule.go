package fsm

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
)

// Schedules: the checks, defaults and transitions every engine applies to
// schedules and their fires.

// CloneFire deep-copies f with normalized times.
func CloneFire(f store.Fire) store.Fire {
	f.ScheduledAt, f.FiredAt = Time(f.ScheduledAt), Time(f.FiredAt)
	f.MissedFrom, f.MissedTo = Time(f.MissedFrom), Time(f.MissedTo)
	f.TaskIDs = cloneIDs(f.TaskIDs)
	f.CancelledIDs = cloneIDs(f.CancelledIDs)
	return f
}

func cloneIDs(ids []string) []string {
	if len(ids) == 0 {
		return nil
	}
	return slices.Clone(ids)
}

// CloneSchedule deep-copies s.
func CloneSchedule(s store.Schedule) store.Schedule {
	s.Spec = Bytes(s.Spec)
	s.OpenTaskIDs = cloneIDs(s.OpenTaskIDs)
	if s.Last != nil {
		l := CloneFire(*s.Last)
		s.Last = &l
	}
	return s
}

func checkSchedule(s store.Schedule) error {
	switch {
	case s.Name == "":
		return fmt.Errorf("%w: schedule name is empty", store.ErrInvalidArgument)
	case s.TeamID == "":
		return fmt.Errorf("%w: schedule %s: team is empty", store.ErrInvalidArgument, s.Name)
	case s.Owner == "":
		return fmt.Errorf("%w: schedule %s: owner is empty", store.ErrInvalidArgument, s.Name)
	case s.Paused && !s.NextFireAt.IsZero():
		return fmt.Errorf("%w: schedule %s: a paused schedule has no next fire", store.ErrInvalidArgument, s.Name)
	}
	if err := checkTimes("CreatedAt", s.CreatedAt, "UpdatedAt", s.UpdatedAt, "NextFireAt", s.NextFireAt); err != nil {
		return fmt.Errorf("schedule %s: %w", s.Name, err)
	}
	return nil
}

// NewSchedule checks s and returns the schedule to insert: an id (a new
// UUID when empty), Version 1, CreatedAt now when zero, UpdatedAt
// CreatedAt when zero, no Last, no open tasks.
func NewSchedule(s store.Schedule, now time.Time) (store.Schedule, error) {
	if err := checkSchedule(s); err != nil {
		return store.Schedule{}, err
	}
	s = CloneSchedule(s)
	if s.ID == "" {
		s.ID = uuid.NewString()
	}
	if s.CreatedAt.IsZero() {
		s.CreatedAt = now
	}
	if s.UpdatedAt.IsZero() {
		s.UpdatedAt = s.CreatedAt
	}
	s.CreatedAt, s.UpdatedAt, s.NextFireAt = Time(s.CreatedAt), Time(s.UpdatedAt), Time(s.NextFireAt)
	s.Version, s.Last, s.OpenTaskIDs = 1, nil, nil
	return s, nil
}

// UpdateSchedule applies UpdateSchedule's change s to old at version:
// ErrScheduleChanged when old is at another version; the result keeps
// old's id, CreatedAt, Last and OpenTaskIDs, has Version+1 and UpdatedAt
// (now when zero).
func UpdateSchedule(old, s store.Schedule, version int64, now time.Time) (store.Schedule, error) {
	if err := checkSchedule(s); err != nil {
		return store.Schedule{}, err
	}
	if old.Version != version {
		return store.Schedule{}, changed(old, version)
	}
	out := CloneSchedule(old)
	out.Name, out.TeamID, out.Owner, out.Spec = s.Name, s.TeamID, s.Owner, Bytes(s.Spec)
	out.Paused, out.NextFireAt = s.Paused, Time(s.NextFireAt)
	out.UpdatedAt = Time(s.UpdatedAt)
	if out.UpdatedAt.IsZero() {
		out.UpdatedAt = Time(now)
	}
	out.Version++
	return out, nil
}

func changed(s store.Schedule, version int64) error {
	return fmt.Errorf("%w: schedule %s is at version %d, not %d", store.ErrScheduleChanged, s.Name, s.Version, version)
}

// CheckFire checks a ScheduleFire before the schedule is loaded and returns
// it normalized (Overlap defaulting to skip) with its tasks checked and
// defaulted (NewTasks; no idempotency key allowed).
func CheckFire(f store.ScheduleFire, now time.Time) (store.ScheduleFire, error) {
	bad := func(format string, a ...any) (store.ScheduleFire, error) {
		return f, fmt.Errorf("%w: fire of schedule %s: %s", store.ErrInvalidArgument, f.ScheduleID, fmt.Sprintf(format, a...))
	}
	switch {
	case f.ScheduleID == "":
		return bad("schedule id is empty")
	case f.ScheduledAt.IsZero() || f.FiredAt.IsZero():
		return bad("scheduled or fired time is zero")
	}
	if err := checkTimes("ScheduledAt", f.ScheduledAt, "FiredAt", f.FiredAt, "NextFireAt", f.NextFireAt,
		"MissedFrom", f.MissedFrom, "MissedTo", f.MissedTo); err != nil {
		return f, err
	}
	switch f.Overlap {
	case "":
		f.Overlap = store.OverlapSkip
	case store.OverlapSkip, store.OverlapAllow, store.OverlapCancelPrevious:
	default:
		return bad("overlap policy %q", f.Overlap)
	}
	switch f.Outcome {
	case store.FireCreated:
		if len(f.Tasks) == 0 {
			return bad("outcome %s without tasks", f.Outcome)
		}
	case store.FireMissed, store.FireFailed:
		if len(f.Tasks) > 0 {
			return bad("outcome %s with tasks", f.Outcome)
		}
	default:
		return bad("outcome %q (want %s, %s or %s)", f.Outcome, store.FireCreated, store.FireMissed, store.FireFailed)
	}
	for i, t := range f.Tasks {
		if t.IdempotencyKey != "" {
			return f, BatchErr(i, fmt.Errorf("%w: task %s of a schedule has an idempotency key", store.ErrInvalidArgument, t.ID))
		}
	}
	ts, err := NewTasks(f.Tasks, now)
	if err != nil {
		return f, err
	}
	f.Tasks = ts
	if f.Audit.Action != "" {
		recs := FireAudit(f.Audit, store.Fire{ScheduleID: f.ScheduleID, ScheduledAt: f.ScheduledAt, Outcome: f.Outcome}, f.Tasks, nil)
		if err := CheckAudit(recs); err != nil {
			return f, err
		}
	}
	return f, nil
}

// FireCheck is the part of FireSchedule an engine runs on the loaded
// schedule before anything else: the version (unless manual) and pause.
func FireCheck(s store.Schedule, f store.ScheduleFire) error {
	if f.Manual {
		return nil
	}
	if s.Version != f.Version || s.Paused {
		return changed(s, f.Version)
	}
	return nil
}

// FireExists is FireSchedule's error for a scheduled fire already
// recorded.
func FireExists(f store.ScheduleFire) error {
	return fmt.Errorf("%w: the fire of schedule %s at %s is already recorded", store.ErrExists, f.ScheduleID,
		f.ScheduledAt.UTC().Format(time.RFC3339Nano))
}

// Overlap applies f's overlap policy to the schedule's open tasks as
// loaded (missing ones left out). It returns the fire's outcome (f.Outcome,
// or FireSkipped), its reason, and the unfinished tasks to cancel (with
// OverlapCancelPrevious), in open order.
func Overlap(f store.ScheduleFire, open []*store.Task) (outcome, reason string, cancel []*store.Task) {
	if f.Outcome != store.FireCreated {
		return f.Outcome, f.Reason, nil
	}
	var unfinished []*store.Task
	for _, t := range open {
		if t != nil && !t.Status.Terminal() {
			unfinished = append(unfinished, t)
		}
	}
	if len(unfinished) == 0 {
		return f.Outcome, f.Reason, nil
	}
	switch f.Overlap {
	case store.OverlapAllow:
		return f.Outcome, f.Reason, nil
	case store.OverlapCancelPrevious:
		return f.Outcome, f.Reason, unfinished
	}
	var names []string
	for i, t := range unfinished {
		if i == 3 {
			names = append(names, fmt.Sprintf("and %d more", len(unfinished)-3))
			break
		}
		names = append(names, fmt.Sprintf("%s (%s)", t.ID, t.Status))
	}
	return store.FireSkipped, "the previous run is not finished: " + strings.Join(names, ", ") + " (overlap policy skip)", nil
}

// CancelPrevious cancels t (as Cancel does, at instant at) for the
// overlap policy cancel-previous, and reports whether it changed.
func CancelPrevious(t *store.Task, at time.Time) bool {
	ok, err := Cancel(t, at)
	return err == nil && ok
}

// NewFire is the fire record FireSchedule stores.
func NewFire(f store.ScheduleFire, outcome, reason string, created, cancelled []store.Task) store.Fire {
	fire := store.Fire{
		ScheduleID: f.ScheduleID, ScheduledAt: f.ScheduledAt, Manual: f.Manual, FiredAt: f.FiredAt,
		Outcome: outcome, Reason: reason, MissedFrom: f.MissedFrom, MissedTo: f.MissedTo, CatchUp: f.CatchUp,
	}
	for _, t := range created {
		fire.TaskIDs = append(fire.TaskIDs, t.ID)
	}
	for _, t := range cancelled {
		fire.CancelledIDs = append(fire.CancelledIDs, t.ID)
	}
	return CloneFire(fire)
}

// AfterFire moves s past the fire: Last, OpenTaskIDs (stillOpen, the
// unfinished earlier tasks after cancellation, then the created ones) and,
// for a scheduled fire, NextFireAt and Version+1.
func AfterFire(s *store.Schedule, f store.ScheduleFire, fire store.Fire, stillOpen []string) {
	last := CloneFire(fire)
	s.Last = &last
	open := append(slices.Clone(stillOpen), fire.TaskIDs...)
	s.OpenTaskIDs = cloneIDs(open)
	if !f.Manual {
		s.NextFireAt = Time(f.NextFireAt)
		s.Version++
	}
}

// StillOpen returns the ids of open tasks that are unfinished (after any
// cancellation), in open order.
func StillOpen(open []*store.Task) []string {
	var out []string
	for _, t := range open {
		if t != nil && !t.Status.Terminal() {
			out = append(out, t.ID)
		}
	}
	return out
}

// FireAudit builds a fire's audit records from the template tpl (Time,
// Actor, Team, Details): "schedule.fire" about the schedule with the
// outcome, then "task.create" for each created task and "task.cancel" for
// each cancelled one. The records are appended in the fire's transaction.
func FireAudit(tpl audit.Record, fire store.Fire, created, cancelled []store.Task) []audit.Record {
	base := func(action, etype, eid string, extra map[string]string) audit.Record {
		d := maps.Clone(tpl.Details)
		if d == nil {
			d = map[string]string{}
		}
		maps.Copy(d, extra)
		return audit.Record{Time: tpl.Time, Actor: tpl.Actor, Action: action, EntityType: etype, EntityID: eid,
			Team: tpl.Team, Result: audit.ResultOK, Details: d}
	}
	at := fire.ScheduledAt.UTC().Format(time.RFC3339Nano)
	fd := map[string]string{"scheduled_at": at, "outcome": fire.Outcome}
	if fire.Manual {
		fd["manual"] = "true"
	}
	if fire.Reason != "" {
		fd["reason"] = fire.Reason
	}
	if len(fire.TaskIDs) > 0 {
		fd["tasks"] = strings.Join(fire.TaskIDs, ",")
	}
	if len(fire.CancelledIDs) > 0 {
		fd["cancelled"] = strings.Join(fire.CancelledIDs, ",")
	}
	if !fire.MissedFrom.IsZero() {
		fd["missed_from"] = fire.MissedFrom.UTC().Format(time.RFC3339Nano)
		fd["missed_to"] = fire.MissedTo.UTC().Format(time.RFC3339Nano)
	}
	if fire.CatchUp {
		fd["catch_up"] = "true"
	}
	rec := base(tpl.Action, audit.EntitySchedule, fire.ScheduleID, fd)
	if fire.Outcome == store.FireFailed {
		rec.Result = audit.ResultError
	}
	out := []audit.Record{rec}
	for _, t := range created {
		d := map[string]string{"machine_id": t.MachineID, "priority": strconv.Itoa(t.Priority), "schedule": fire.ScheduleID, "scheduled_at": at}
		if t.Machine != "" { // its name, when the caller labelled it
			d["machine"] = t.Machine
		}
		out = append(out, base("task.create", audit.EntityTask, t.ID, d))
	}
	for _, t := range cancelled {
		out = append(out, base("task.cancel", audit.EntityTask, t.ID, map[string]string{
			"status": string(t.Status), "schedule": fire.ScheduleID, "reason": "overlap policy cancel-previous"}))
	}
	return out
}

// SortSchedules sorts schedules by name, or, when due is set, by NextFireAt
// then name.
func SortSchedules(ss []store.Schedule, due bool) {
	slices.SortFunc(ss, func(a, b store.Schedule) int {
		if due {
			if c := a.NextFireAt.Compare(b.NextFireAt); c != 0 {
				return c
			}
		}
		return cmp.Compare(a.Name, b.Name)
	})
}

// MatchSchedule reports whether s passes f.
func MatchSchedule(s *store.Schedule, f store.ScheduleFilter) bool {
	if f.TeamIDs != nil && !slices.Contains(f.TeamIDs, s.TeamID) {
		return false
	}
	if !f.DueBy.IsZero() && (s.Paused || s.NextFireAt.IsZero() || s.NextFireAt.After(f.DueBy)) {
		return false
	}
	return true
}

// SortFires sorts fires newest scheduled time first (scheduled before
// manual at the same instant); stable, so manual fires at one instant keep
// their order (the memory engine keeps the newest recorded first).
func SortFires(fs []store.Fire) {
	slices.SortStableFunc(fs, func(a, b store.Fire) int {
		if c := b.ScheduledAt.Compare(a.ScheduledAt); c != 0 {
			return c
		}
		switch {
		case a.Manual == b.Manual:
			return 0
		case a.Manual:
			return 1
		}
		return -1
	})
}
