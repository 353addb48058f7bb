package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

// Schedules and their fires (the schema migration that adds them).

var _ store.Schedules = (*Engine)(nil)

const scheduleCols = `id, name, team, owner, spec, paused, next_fire_at, version, created_at, updated_at, last_fire, open_task_ids`

// fireRow is a fire's JSON form in schedules.last_fire.
type fireRow struct {
	ScheduledAt  int64    `json:"scheduled_at"`
	Manual       bool     `json:"manual,omitempty"`
	FiredAt      int64    `json:"fired_at"`
	Outcome      string   `json:"outcome"`
	Reason       string   `json:"reason,omitempty"`
	TaskIDs      []string `json:"task_ids,omitempty"`
	CancelledIDs []string `json:"cancelled_ids,omitempty"`
	MissedFrom   *int64   `json:"missed_from,omitempty"`
	MissedTo     *int64   `json:"missed_to,omitempty"`
	CatchUp      bool     `json:"catch_up,omitempty"`
}

func encodeLastFire(f *store.Fire) (any, error) {
	if f == nil {
		return nil, nil
	}
	b, err := json.Marshal(fireRow{ScheduledAt: f.ScheduledAt.UnixNano(), Manual: f.Manual, FiredAt: f.FiredAt.UnixNano(),
		Outcome: f.Outcome, Reason: f.Reason, TaskIDs: f.TaskIDs, CancelledIDs: f.CancelledIDs,
		MissedFrom: nsPtr(f.MissedFrom), MissedTo: nsPtr(f.MissedTo), CatchUp: f.CatchUp})
	return string(b), err
}

func decodeLastFire(id string, s sql.NullString) (*store.Fire, error) {
	if !s.Valid || s.String == "" {
		return nil, nil
	}
	var r fireRow
	if err := json.Unmarshal([]byte(s.String), &r); err != nil {
		return nil, fmt.Errorf("schedule %s: last fire: %w", id, err)
	}
	f := store.Fire{ScheduleID: id, ScheduledAt: time.Unix(0, r.ScheduledAt).UTC(), Manual: r.Manual,
		FiredAt: time.Unix(0, r.FiredAt).UTC(), Outcome: r.Outcome, Reason: r.Reason, TaskIDs: r.TaskIDs,
		CancelledIDs: r.CancelledIDs, MissedFrom: fromNsPtr(r.MissedFrom), MissedTo: fromNsPtr(r.MissedTo), CatchUp: r.CatchUp}
	f = fsm.CloneFire(f)
	return &f, nil
}

// encodeIDs writes ids as a JSON array, NULL when empty.
func encodeIDs(ids []string) any {
	if len(ids) == 0 {
		return nil
	}
	return jsonList(ids)
}

func decodeIDs(s sql.NullString) ([]string, error) {
	if !s.Valid || s.String == "" {
		return nil, nil
	}
	var ids []string
	if err := json.Unmarshal([]byte(s.String), &ids); err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, nil
	}
	return ids, nil
}

func scanSchedule(sc scanner) (store.Schedule, error) {
	var (
		s                      store.Schedule
		next, created, updated sql.NullInt64
		last, open             sql.NullString
	)
	if err := sc.Scan(&s.ID, &s.Name, &s.TeamID, &s.Owner, &s.Spec, &s.Paused, &next, &s.Version, &created, &updated, &last, &open); err != nil {
		return store.Schedule{}, err
	}
	s.Spec = fsm.Bytes(s.Spec)
	s.NextFireAt, s.CreatedAt, s.UpdatedAt = fromNanos(next), fromNanos(created), fromNanos(updated)
	var err error
	if s.Last, err = decodeLastFire(s.ID, last); err != nil {
		return store.Schedule{}, err
	}
	if s.OpenTaskIDs, err = decodeIDs(open); err != nil {
		return store.Schedule{}, fmt.Errorf("schedule %s: open tasks: %w", s.ID, err)
	}
	return s, nil
}

func querySchedules(ctx context.Context, q querier, where string, args ...any) ([]store.Schedule, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+scheduleCols+` FROM schedules `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Schedule
	for rows.Next() {
		s, err := scanSchedule(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// loadSchedule reads one schedule (by id, or by name) through q.
func loadSchedule(ctx context.Context, q querier, col, v string) (store.Schedule, error) {
	s, err := scanSchedule(q.QueryRowContext(ctx, `SELECT `+scheduleCols+` FROM schedules WHERE `+col+` = ?`, v))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Schedule{}, fmt.Errorf("%w: schedule %s", store.ErrNotFound, v)
	}
	return s, err
}

// saveSchedule writes every column of s (insert when new).
func saveSchedule(ctx context.Context, tx *sql.Tx, s *store.Schedule, insert bool) error {
	last, err := encodeLastFire(s.Last)
	if err != nil {
		return err
	}
	args := []any{s.ID, s.Name, s.TeamID, s.Owner, blob(s.Spec), s.Paused, nanos(s.NextFireAt), s.Version,
		nanos(s.CreatedAt), nanos(s.UpdatedAt), last, encodeIDs(s.OpenTaskIDs)}
	if insert {
		_, err = tx.ExecContext(ctx, `INSERT INTO schedules (`+scheduleCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, args...)
		return err
	}
	_, err = tx.ExecContext(ctx, `UPDATE schedules SET name = ?2, team = ?3, owner = ?4, spec = ?5, paused = ?6, next_fire_at = ?7,
		version = ?8, created_at = ?9, updated_at = ?10, last_fire = ?11, open_task_ids = ?12 WHERE id = ?1`, args...)
	return err
}

func scheduleNameTaken(ctx context.Context, tx *sql.Tx, name, exceptID string) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schedules WHERE name = ? AND id <> ?`, name, exceptID).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("%w: schedule %s", store.ErrExists, name)
	}
	return nil
}

// CreateSchedule inserts s. ErrExists; ErrInvalidArgument.
func (e *Engine) CreateSchedule(ctx context.Context, s store.Schedule) (store.Schedule, error) {
	s, err := fsm.NewSchedule(s, time.Now())
	if err != nil {
		return store.Schedule{}, err
	}
	err = e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schedules WHERE id = ?`, s.ID).Scan(&n); err != nil {
			return err
		} else if n > 0 {
			return fmt.Errorf("%w: schedule id %s", store.ErrExists, s.ID)
		}
		if err := scheduleNameTaken(ctx, tx, s.Name, s.ID); err != nil {
			return err
		}
		return saveSchedule(ctx, tx, &s, true)
	})
	if err != nil {
		return store.Schedule{}, err
	}
	return s, nil
}

// UpdateSchedule replaces a schedule at version. ErrNotFound;
// ErrScheduleChanged; ErrExists; ErrInvalidArgument.
func (e *Engine) UpdateSchedule(ctx context.Context, s store.Schedule, version int64) (store.Schedule, error) {
	var out store.Schedule
	err := e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		old, err := loadSchedule(ctx, tx, "id", s.ID)
		if err != nil {
			return err
		}
		n, err := fsm.UpdateSchedule(old, s, version, time.Now())
		if err != nil {
			return err
		}
		if err := scheduleNameTaken(ctx, tx, n.Name, n.ID); err != nil {
			return err
		}
		if err := saveSchedule(ctx, tx, &n, false); err != nil {
			return err
		}
		out = n
		return nil
	})
	if err != nil {
		return store.Schedule{}, err
	}
	return out, nil
}

// DeleteSchedule deletes a schedule and its fires. ErrNotFound.
func (e *Engine) DeleteSchedule(ctx context.Context, id string) error {
	return e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM schedules WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("%w: schedule %s", store.ErrNotFound, id)
		}
		return nil // the fires go by ON DELETE CASCADE
	})
}

// GetSchedule returns one schedule. ErrNotFound.
func (e *Engine) GetSchedule(ctx context.Context, id string) (store.Schedule, error) {
	if err := e.check(ctx); err != nil {
		return store.Schedule{}, err
	}
	s, err := loadSchedule(ctx, e.r, "id", id)
	return s, e.classify(err)
}

// ScheduleByName returns the schedule named name. ErrNotFound.
func (e *Engine) ScheduleByName(ctx context.Context, name string) (store.Schedule, error) {
	if err := e.check(ctx); err != nil {
		return store.Schedule{}, err
	}
	s, err := loadSchedule(ctx, e.r, "name", name)
	return s, e.classify(err)
}

// ListSchedules returns the schedules matching f; DueBy reads the
// schedules_due index.
func (e *Engine) ListSchedules(ctx context.Context, f store.ScheduleFilter) ([]store.Schedule, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	var (
		where []string
		args  []any
	)
	if f.TeamIDs != nil {
		where, args = append(where, `team IN (SELECT value FROM json_each(?))`), append(args, jsonList(f.TeamIDs))
	}
	order := ` ORDER BY name`
	if !f.DueBy.IsZero() {
		where, args = append(where, `next_fire_at IS NOT NULL AND next_fire_at <= ? AND paused = 0`), append(args, f.DueBy.UnixNano())
		order = ` ORDER BY next_fire_at, name`
	}
	q := ""
	if len(where) > 0 {
		q = "WHERE " + strings.Join(where, " AND ")
	}
	ss, err := querySchedules(ctx, e.r, q+order, args...)
	return ss, e.classify(err)
}

// NextScheduleFire returns the earliest NextFireAt of the schedules that
// are not paused.
func (e *Engine) NextScheduleFire(ctx context.Context) (time.Time, bool, error) {
	if err := e.check(ctx); err != nil {
		return time.Time{}, false, err
	}
	var n sql.NullInt64
	if err := e.r.QueryRowContext(ctx, `SELECT min(next_fire_at) FROM schedules WHERE next_fire_at IS NOT NULL AND paused = 0`).Scan(&n); err != nil {
		return time.Time{}, false, e.classify(err)
	}
	return fromNanos(n), n.Valid, nil
}

// FireSchedule records one fire in one write transaction (see
// store.Schedules): the version check, the unique fire key, the overlap
// policy, the tasks, the fire record, the schedule's new state and the
// audit records commit together or not at all.
func (e *Engine) FireSchedule(ctx context.Context, f store.ScheduleFire) (store.FireResult, error) {
	f, err := fsm.CheckFire(f, time.Now())
	if err != nil {
		return store.FireResult{}, err
	}
	recs, err := fsm.CtxAudit(ctx)
	if err != nil {
		return store.FireResult{}, err
	}
	var res store.FireResult
	err = e.tx(ctx, nil, func(ctx context.Context, tx *sql.Tx) (bool, error) {
		res = store.FireResult{}
		s, err := loadSchedule(ctx, tx, "id", f.ScheduleID)
		if err != nil {
			return false, err
		}
		if err := fsm.FireCheck(s, f); err != nil {
			return false, err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schedule_fires WHERE schedule_id = ? AND scheduled_at = ? AND manual = 0`,
			f.ScheduleID, f.ScheduledAt.UnixNano()).Scan(&n); err != nil {
			return false, err
		} else if n > 0 && !f.Manual {
			return false, fsm.FireExists(f)
		}
		// The open tasks, as they are now.
		open := make([]*store.Task, len(s.OpenTaskIDs))
		seqs := make([]int64, len(s.OpenTaskIDs))
		for i, id := range s.OpenTaskIDs {
			seq, t, err := loadTask(ctx, tx, id)
			if errors.Is(err, store.ErrNotFound) {
				continue // pruned: finished long ago
			} else if err != nil {
				return false, err
			}
			open[i], seqs[i] = &t, seq
		}
		outcome, reason, toCancel := fsm.Overlap(f, open)
		var created, cancelled []store.Task
		if outcome == store.FireCreated {
			exists := stmt(ctx, tx, e.st.taskExists)
			for i := range f.Tasks {
				t := &f.Tasks[i]
				if err := exists.QueryRowContext(ctx, t.ID).Scan(&n); err != nil {
					return false, err
				} else if n > 0 {
					return false, fsm.BatchErr(i, fmt.Errorf("%w: task %s", store.ErrExists, t.ID))
				}
				if err := e.insertTask(ctx, tx, t); err != nil {
					return false, fsm.BatchErr(i, err)
				}
				created = append(created, *t)
			}
		}
		for _, t := range toCancel {
			i := indexOf(open, t)
			was, wasOwner := t.Status, t.LeaseOwner
			if !fsm.CancelPrevious(t, f.FiredAt) {
				continue
			}
			if err := e.saveTask(ctx, tx, seqs[i], was, wasOwner, t); err != nil {
				return false, err
			}
			cancelled = append(cancelled, *t)
		}
		fire := fsm.NewFire(f, outcome, reason, created, cancelled)
		fsm.AfterFire(&s, f, fire, fsm.StillOpen(open))
		if _, err := tx.ExecContext(ctx, `INSERT INTO schedule_fires (schedule_id, scheduled_at, manual, fired_at, outcome, reason,
			task_ids, cancelled_ids, missed_from, missed_to, catch_up) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			fire.ScheduleID, fire.ScheduledAt.UnixNano(), fire.Manual, fire.FiredAt.UnixNano(), fire.Outcome, fire.Reason,
			encodeIDs(fire.TaskIDs), encodeIDs(fire.CancelledIDs), nanos(fire.MissedFrom), nanos(fire.MissedTo), fire.CatchUp); err != nil {
			return false, err
		}
		if err := saveSchedule(ctx, tx, &s, false); err != nil {
			return false, err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM schedule_fires WHERE schedule_id = ?1 AND seq NOT IN
			(SELECT seq FROM schedule_fires WHERE schedule_id = ?1 ORDER BY scheduled_at DESC, manual, seq DESC LIMIT ?2)`,
			f.ScheduleID, store.KeepFires); err != nil {
			return false, err
		}
		all := recs
		if f.Audit.Action != "" {
			all = append(append([]audit.Record(nil), recs...), fsm.FireAudit(f.Audit, fire, created, cancelled)...)
		}
		if len(all) > 0 {
			if _, err := e.appendAudit(ctx, tx, all); err != nil {
				return false, err
			}
		}
		res = store.FireResult{Fire: fire, Tasks: created, Cancelled: cancelled, Schedule: s}
		return false, nil // audit appended above
	})
	if err != nil {
		return store.FireResult{}, err
	}
	return res, nil
}

func indexOf(ts []*store.Task, t *store.Task) int {
	for i, x := range ts {
		if x == t {
			return i
		}
	}
	return -1
}

// ListFires returns a schedule's fires, newest first. ErrNotFound.
func (e *Engine) ListFires(ctx context.Context, scheduleID string, limit int) ([]store.Fire, error) {
	if limit < 0 {
		return nil, fmt.Errorf("%w: list fires: limit %d", store.ErrInvalidArgument, limit)
	}
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	if _, err := loadSchedule(ctx, e.r, "id", scheduleID); err != nil {
		return nil, e.classify(err)
	}
	q := `SELECT scheduled_at, manual, fired_at, outcome, reason, task_ids, cancelled_ids, missed_from, missed_to, catch_up
		FROM schedule_fires WHERE schedule_id = ? ORDER BY scheduled_at DESC, manual, seq DESC`
	args := []any{scheduleID}
	if limit > 0 {
		q, args = q+` LIMIT ?`, append(args, limit)
	}
	rows, err := e.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, e.classify(err)
	}
	defer rows.Close()
	var out []store.Fire
	for rows.Next() {
		var (
			f                     store.Fire
			at, fired, mfrom, mto sql.NullInt64
			taskIDs, cancelled    sql.NullString
		)
		if err := rows.Scan(&at, &f.Manual, &fired, &f.Outcome, &f.Reason, &taskIDs, &cancelled, &mfrom, &mto, &f.CatchUp); err != nil {
			return nil, e.classify(err)
		}
		f.ScheduleID = scheduleID
		f.ScheduledAt, f.FiredAt, f.MissedFrom, f.MissedTo = fromNanos(at), fromNanos(fired), fromNanos(mfrom), fromNanos(mto)
		if f.TaskIDs, err = decodeIDs(taskIDs); err != nil {
			return nil, err
		}
		if f.CancelledIDs, err = decodeIDs(cancelled); err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, e.classify(rows.Err())
}

// nsPtr is t in Unix nanoseconds, nil for the zero time (JSON fields).
func nsPtr(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	n := t.UnixNano()
	return &n
}

// fromNsPtr undoes nsPtr.
func fromNsPtr(p *int64) time.Time {
	if p == nil {
		return time.Time{}
	}
	return time.Unix(0, *p).UTC()
}
