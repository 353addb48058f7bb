package memory

import (
	"context"
	"fmt"
	"time"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

var _ store.Schedules = (*Engine)(nil)

// scheduleState holds the schedules (Engine.sch); maps made on first use.
type scheduleState struct {
	byID   map[string]*store.Schedule
	byName map[string]string       // name -> id
	fires  map[string][]store.Fire // schedule id -> fires, newest first
}

func (s *scheduleState) init() {
	if s.byID == nil {
		s.byID, s.byName, s.fires = map[string]*store.Schedule{}, map[string]string{}, map[string][]store.Fire{}
	}
}

// CreateSchedule inserts s. ErrExists; ErrInvalidArgument.
func (e *Engine) CreateSchedule(ctx context.Context, s store.Schedule) (store.Schedule, error) {
	s, err := fsm.NewSchedule(s, time.Now())
	if err != nil {
		return store.Schedule{}, err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return store.Schedule{}, err
	}
	defer e.mu.Unlock()
	e.sch.init()
	if _, ok := e.sch.byID[s.ID]; ok {
		return store.Schedule{}, fmt.Errorf("%w: schedule id %s", store.ErrExists, s.ID)
	}
	if _, ok := e.sch.byName[s.Name]; ok {
		return store.Schedule{}, fmt.Errorf("%w: schedule %s", store.ErrExists, s.Name)
	}
	c := fsm.CloneSchedule(s)
	e.sch.byID[s.ID], e.sch.byName[s.Name] = &c, s.ID
	e.record(recs)
	return s, nil
}

// UpdateSchedule replaces a schedule at version. ErrNotFound;
// ErrScheduleChanged; ErrExists; ErrInvalidArgument.
func (e *Engine) UpdateSchedule(ctx context.Context, s store.Schedule, version int64) (store.Schedule, error) {
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return store.Schedule{}, err
	}
	defer e.mu.Unlock()
	e.sch.init()
	old, ok := e.sch.byID[s.ID]
	if !ok {
		return store.Schedule{}, fmt.Errorf("%w: schedule %s", store.ErrNotFound, s.ID)
	}
	n, err := fsm.UpdateSchedule(*old, s, version, time.Now())
	if err != nil {
		return store.Schedule{}, err
	}
	if id, ok := e.sch.byName[n.Name]; ok && id != n.ID {
		return store.Schedule{}, fmt.Errorf("%w: schedule %s", store.ErrExists, n.Name)
	}
	delete(e.sch.byName, old.Name)
	e.sch.byName[n.Name] = n.ID
	e.sch.byID[n.ID] = &n
	e.record(recs)
	return fsm.CloneSchedule(n), nil
}

// DeleteSchedule deletes a schedule and its fires. ErrNotFound.
func (e *Engine) DeleteSchedule(ctx context.Context, id string) error {
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return err
	}
	defer e.mu.Unlock()
	e.sch.init()
	s, ok := e.sch.byID[id]
	if !ok {
		return fmt.Errorf("%w: schedule %s", store.ErrNotFound, id)
	}
	delete(e.sch.byName, s.Name)
	delete(e.sch.byID, id)
	delete(e.sch.fires, id)
	e.record(recs)
	return nil
}

// GetSchedule returns one schedule. ErrNotFound.
func (e *Engine) GetSchedule(ctx context.Context, id string) (store.Schedule, error) {
	if err := e.lock(ctx); err != nil {
		return store.Schedule{}, err
	}
	defer e.mu.Unlock()
	e.sch.init()
	s, ok := e.sch.byID[id]
	if !ok {
		return store.Schedule{}, fmt.Errorf("%w: schedule %s", store.ErrNotFound, id)
	}
	return fsm.CloneSchedule(*s), nil
}

// ScheduleByName returns the schedule named name. ErrNotFound.
func (e *Engine) ScheduleByName(ctx context.Context, name string) (store.Schedule, error) {
	if err := e.lock(ctx); err != nil {
		return store.Schedule{}, err
	}
	defer e.mu.Unlock()
	e.sch.init()
	id, ok := e.sch.byName[name]
	if !ok {
		return store.Schedule{}, fmt.Errorf("%w: schedule %s", store.ErrNotFound, name)
	}
	return fsm.CloneSchedule(*e.sch.byID[id]), nil
}

// ListSchedules returns the schedules matching f.
func (e *Engine) ListSchedules(ctx context.Context, f store.ScheduleFilter) ([]store.Schedule, error) {
	if err := e.lock(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	e.sch.init()
	var out []store.Schedule
	for _, s := range e.sch.byID {
		if fsm.MatchSchedule(s, f) {
			out = append(out, fsm.CloneSchedule(*s))
		}
	}
	fsm.SortSchedules(out, !f.DueBy.IsZero())
	return out, nil
}

// NextScheduleFire returns the earliest NextFireAt of the schedules that
// are not paused.
func (e *Engine) NextScheduleFire(ctx context.Context) (time.Time, bool, error) {
	if err := e.lock(ctx); err != nil {
		return time.Time{}, false, err
	}
	defer e.mu.Unlock()
	e.sch.init()
	var next time.Time
	for _, s := range e.sch.byID {
		if !s.Paused && !s.NextFireAt.IsZero() && (next.IsZero() || s.NextFireAt.Before(next)) {
			next = s.NextFireAt
		}
	}
	return next, !next.IsZero(), nil
}

// FireSchedule records one fire (see store.Schedules).
func (e *Engine) FireSchedule(ctx context.Context, f store.ScheduleFire) (store.FireResult, error) {
	f, err := fsm.CheckFire(f, time.Now())
	if err != nil {
		return store.FireResult{}, err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return store.FireResult{}, err
	}
	defer e.mu.Unlock()
	e.sch.init()
	sp, ok := e.sch.byID[f.ScheduleID]
	if !ok {
		return store.FireResult{}, fmt.Errorf("%w: schedule %s", store.ErrNotFound, f.ScheduleID)
	}
	if err := fsm.FireCheck(*sp, f); err != nil {
		return store.FireResult{}, err
	}
	for _, old := range e.sch.fires[f.ScheduleID] {
		if !f.Manual && !old.Manual && old.ScheduledAt.Equal(fsm.Time(f.ScheduledAt)) {
			return store.FireResult{}, fsm.FireExists(f)
		}
	}
	// Work on copies: nothing changes until every check has passed.
	open := make([]*store.Task, len(sp.OpenTaskIDs))
	for i, id := range sp.OpenTaskIDs {
		if en, ok := e.tasks[id]; ok {
			t := fsm.CloneTask(en.task)
			open[i] = &t
		}
	}
	outcome, reason, toCancel := fsm.Overlap(f, open)
	var created []store.Task
	if outcome == store.FireCreated {
		for i, t := range f.Tasks {
			if _, ok := e.tasks[t.ID]; ok {
				return store.FireResult{}, fsm.BatchErr(i, fmt.Errorf("%w: task %s", store.ErrExists, t.ID))
			}
			for _, c := range created {
				if c.ID == t.ID {
					return store.FireResult{}, fsm.BatchErr(i, fmt.Errorf("%w: task %s", store.ErrExists, t.ID))
				}
			}
			created = append(created, t)
		}
	}
	var cancelled []store.Task
	for _, t := range toCancel {
		if fsm.CancelPrevious(t, f.FiredAt) {
			cancelled = append(cancelled, fsm.CloneTask(*t))
		}
	}
	fire := fsm.NewFire(f, outcome, reason, created, cancelled)
	s := fsm.CloneSchedule(*sp)
	fsm.AfterFire(&s, f, fire, fsm.StillOpen(open))
	// Apply.
	for _, t := range cancelled {
		en := e.tasks[t.ID]
		e.set(en, fsm.CloneTask(t))
	}
	for _, t := range created {
		e.seq++
		en := &entry{seq: e.seq}
		e.set(en, fsm.CloneTask(t))
		e.tasks[t.ID] = en
	}
	fires := append([]store.Fire{fire}, e.sch.fires[f.ScheduleID]...)
	fsm.SortFires(fires)
	if len(fires) > store.KeepFires {
		fires = fires[:store.KeepFires]
	}
	e.sch.fires[f.ScheduleID] = fires
	e.sch.byID[s.ID] = &s
	e.record(recs)
	if f.Audit.Action != "" {
		e.record(fsm.FireAudit(f.Audit, fire, created, cancelled))
	}
	res := store.FireResult{Fire: fsm.CloneFire(fire), Schedule: fsm.CloneSchedule(s)}
	for _, t := range created {
		res.Tasks = append(res.Tasks, fsm.CloneTask(t))
	}
	res.Cancelled = cancelled
	return res, nil
}

// ListFires returns a schedule's fires, newest first. ErrNotFound.
func (e *Engine) ListFires(ctx context.Context, scheduleID string, limit int) ([]store.Fire, error) {
	if limit < 0 {
		return nil, fmt.Errorf("%w: list fires: limit %d", store.ErrInvalidArgument, limit)
	}
	if err := e.lock(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	e.sch.init()
	if _, ok := e.sch.byID[scheduleID]; !ok {
		return nil, fmt.Errorf("%w: schedule %s", store.ErrNotFound, scheduleID)
	}
	fs := e.sch.fires[scheduleID]
	if limit > 0 && len(fs) > limit {
		fs = fs[:limit]
	}
	out := make([]store.Fire, len(fs))
	for i, f := range fs {
		out[i] = fsm.CloneFire(f)
	}
	return out, nil
}
