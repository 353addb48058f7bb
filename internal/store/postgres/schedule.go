package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

// Schedules and their fires (the schema migration that adds them).
//
// FireSchedule locks the schedule's row FOR UPDATE first: fires of one
// schedule are serialized, and the version check under the lock lets
// exactly one of several workers (on any host) record a fire; the unique
// index schedule_fires_key backs it.

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

func lastFireJSON(f *store.Fire) ([]byte, error) {
	if f == nil {
		return nil, nil
	}
	return json.Marshal(fireRow{ScheduledAt: f.ScheduledAt.UnixNano(), Manual: f.Manual, FiredAt: f.FiredAt.UnixNano(),
		Outcome: f.Outcome, Reason: f.Reason, TaskIDs: f.TaskIDs, CancelledIDs: f.CancelledIDs,
		MissedFrom: nanos(f.MissedFrom), MissedTo: nanos(f.MissedTo), CatchUp: f.CatchUp})
}

func lastFireFromJSON(id string, b []byte) (*store.Fire, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var r fireRow
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("schedule %s: last fire: %w", id, err)
	}
	f := fsm.CloneFire(store.Fire{ScheduleID: id, ScheduledAt: time.Unix(0, r.ScheduledAt).UTC(), Manual: r.Manual,
		FiredAt: time.Unix(0, r.FiredAt).UTC(), Outcome: r.Outcome, Reason: r.Reason, TaskIDs: r.TaskIDs,
		CancelledIDs: r.CancelledIDs, MissedFrom: fromNanos(r.MissedFrom), MissedTo: fromNanos(r.MissedTo), CatchUp: r.CatchUp})
	return &f, nil
}

func ids(ss []string) []string {
	if len(ss) == 0 {
		return nil
	}
	return ss
}

func scanSchedule(row pgx.Row) (store.Schedule, error) {
	var (
		s                      store.Schedule
		next, created, updated *int64
		last                   []byte
		open                   []string
	)
	if err := row.Scan(&s.ID, &s.Name, &s.TeamID, &s.Owner, &s.Spec, &s.Paused, &next, &s.Version, &created, &updated, &last, &open); err != nil {
		return store.Schedule{}, err
	}
	s.Spec = fsm.Bytes(s.Spec)
	s.NextFireAt, s.CreatedAt, s.UpdatedAt = fromNanos(next), fromNanos(created), fromNanos(updated)
	s.OpenTaskIDs = ids(open)
	var err error
	s.Last, err = lastFireFromJSON(s.ID, last)
	return s, err
}

// loadSchedule reads schedule col = v (through tx when not nil, locking
// it with forUpdate). ErrNotFound.
func (e *Engine) loadSchedule(ctx context.Context, tx pgx.Tx, col, v string, forUpdate bool) (store.Schedule, error) {
	q := `SELECT ` + scheduleCols + ` FROM schedules WHERE ` + col + ` = $1`
	var row pgx.Row
	switch {
	case tx == nil:
		row = e.pool.QueryRow(ctx, q, v)
	case forUpdate:
		row = tx.QueryRow(ctx, q+` FOR UPDATE`, v)
	default:
		row = tx.QueryRow(ctx, q, v)
	}
	s, err := scanSchedule(row)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Schedule{}, fmt.Errorf("%w: schedule %s", store.ErrNotFound, v)
	}
	return s, err
}

// saveSchedule writes every column of s (insert when new).
func saveSchedule(ctx context.Context, tx pgx.Tx, s *store.Schedule, insert bool) error {
	last, err := lastFireJSON(s.Last)
	if err != nil {
		return err
	}
	args := []any{s.ID, s.Name, s.TeamID, s.Owner, blob(s.Spec), s.Paused, nanos(s.NextFireAt), s.Version,
		nanos(s.CreatedAt), nanos(s.UpdatedAt), last, ids(s.OpenTaskIDs)}
	if insert {
		_, err = tx.Exec(ctx, `INSERT INTO schedules (`+scheduleCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`, args...)
		return err
	}
	_, err = tx.Exec(ctx, `UPDATE schedules SET name = $2, team = $3, owner = $4, spec = $5, paused = $6, next_fire_at = $7,
		version = $8, created_at = $9, updated_at = $10, last_fire = $11, open_task_ids = $12 WHERE id = $1`, args...)
	return err
}

// nameTaken returns ErrExists when another schedule has name.
func nameTaken(ctx context.Context, tx pgx.Tx, name, exceptID string) error {
	ok, err := exists(ctx, tx, `SELECT 1 FROM schedules WHERE name = $1 AND id <> $2`, name, exceptID)
	if err == nil && ok {
		err = fmt.Errorf("%w: schedule %s", store.ErrExists, name)
	}
	return err
}

// CreateSchedule inserts s. ErrExists; ErrInvalidArgument.
func (e *Engine) CreateSchedule(ctx context.Context, s store.Schedule) (store.Schedule, error) {
	s, err := fsm.NewSchedule(s, time.Now())
	if err != nil {
		return store.Schedule{}, err
	}
	err = e.write(ctx, func(tx pgx.Tx) error {
		if ok, err := exists(ctx, tx, `SELECT 1 FROM schedules WHERE id = $1`, s.ID); err != nil {
			return err
		} else if ok {
			return fmt.Errorf("%w: schedule id %s", store.ErrExists, s.ID)
		}
		if err := nameTaken(ctx, tx, s.Name, s.ID); err != nil {
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
	err := e.write(ctx, func(tx pgx.Tx) error {
		old, err := e.loadSchedule(ctx, tx, "id", s.ID, true)
		if err != nil {
			return err
		}
		n, err := fsm.UpdateSchedule(old, s, version, time.Now())
		if err != nil {
			return err
		}
		if err := nameTaken(ctx, tx, n.Name, n.ID); err != nil {
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
	return e.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM schedules WHERE id = $1`, id)
		if err == nil && tag.RowsAffected() == 0 {
			err = fmt.Errorf("%w: schedule %s", store.ErrNotFound, id)
		}
		return err // the fires go by ON DELETE CASCADE
	})
}

// GetSchedule returns one schedule. ErrNotFound.
func (e *Engine) GetSchedule(ctx context.Context, id string) (store.Schedule, error) {
	if err := e.check(ctx); err != nil {
		return store.Schedule{}, err
	}
	s, err := e.loadSchedule(ctx, nil, "id", id, false)
	return s, e.classify(err)
}

// ScheduleByName returns the schedule named name. ErrNotFound.
func (e *Engine) ScheduleByName(ctx context.Context, name string) (store.Schedule, error) {
	if err := e.check(ctx); err != nil {
		return store.Schedule{}, err
	}
	s, err := e.loadSchedule(ctx, nil, "name", name, false)
	return s, e.classify(err)
}

// ListSchedules returns the schedules matching f.
func (e *Engine) ListSchedules(ctx context.Context, f store.ScheduleFilter) ([]store.Schedule, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	var (
		where []string
		args  []any
	)
	if f.TeamIDs != nil {
		args = append(args, f.TeamIDs)
		where = append(where, fmt.Sprintf(`team = ANY($%d)`, len(args)))
	}
	order := ` ORDER BY name`
	if !f.DueBy.IsZero() {
		args = append(args, f.DueBy.UnixNano())
		where = append(where, fmt.Sprintf(`next_fire_at IS NOT NULL AND NOT paused AND next_fire_at <= $%d`, len(args)))
		order = ` ORDER BY next_fire_at, name`
	}
	q := `SELECT ` + scheduleCols + ` FROM schedules`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	rows, err := e.pool.Query(ctx, q+order, args...)
	if err != nil {
		return nil, e.classify(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Schedule, error) { return scanSchedule(row) })
	if len(out) == 0 {
		out = nil
	}
	return out, e.classify(err)
}

// NextScheduleFire returns the earliest NextFireAt of the schedules that
// are not paused.
func (e *Engine) NextScheduleFire(ctx context.Context) (time.Time, bool, error) {
	if err := e.check(ctx); err != nil {
		return time.Time{}, false, err
	}
	var n *int64
	if err := e.pool.QueryRow(ctx, `SELECT min(next_fire_at) FROM schedules WHERE next_fire_at IS NOT NULL AND NOT paused`).Scan(&n); err != nil {
		return time.Time{}, false, e.classify(err)
	}
	return fromNanos(n), n != nil, nil
}

// FireSchedule records one fire in one transaction (see store.Schedules).
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
	err = e.tx(ctx, nil, func(tx pgx.Tx) (bool, error) {
		res = store.FireResult{}
		s, err := e.loadSchedule(ctx, tx, "id", f.ScheduleID, true)
		if err != nil {
			return false, err
		}
		if err := fsm.FireCheck(s, f); err != nil {
			return false, err
		}
		if !f.Manual {
			if ok, err := exists(ctx, tx, `SELECT 1 FROM schedule_fires WHERE schedule_id = $1 AND scheduled_at = $2 AND NOT manual`,
				f.ScheduleID, f.ScheduledAt.UnixNano()); err != nil {
				return false, err
			} else if ok {
				return false, fsm.FireExists(f)
			}
		}
		open := make([]*store.Task, len(s.OpenTaskIDs))
		seqs := make([]int64, len(s.OpenTaskIDs))
		for i, id := range s.OpenTaskIDs {
			seq, t, err := e.loadTask(ctx, tx, id, true)
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
			for i := range f.Tasks {
				t := &f.Tasks[i]
				if ok, err := exists(ctx, tx, `SELECT 1 FROM tasks WHERE id = $1`, t.ID); err != nil {
					return false, err
				} else if ok {
					return false, fsm.BatchErr(i, fmt.Errorf("%w: task %s", store.ErrExists, t.ID))
				}
				args, err := taskArgs(t)
				if err != nil {
					return false, fsm.BatchErr(i, err)
				}
				if _, err := tx.Exec(ctx, sqlInsertTask, args...); err != nil {
					return false, fsm.BatchErr(i, err)
				}
				created = append(created, *t)
			}
		}
		for i, t := range open {
			if t == nil || !containsTask(toCancel, t) || !fsm.CancelPrevious(t, f.FiredAt) {
				continue
			}
			if err := saveTask(ctx, tx, seqs[i], t); err != nil {
				return false, err
			}
			cancelled = append(cancelled, *t)
		}
		fire := fsm.NewFire(f, outcome, reason, created, cancelled)
		fsm.AfterFire(&s, f, fire, fsm.StillOpen(open))
		if err := insertFire(ctx, tx, fire); err != nil {
			return false, err
		}
		if err := saveSchedule(ctx, tx, &s, false); err != nil {
			return false, err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM schedule_fires WHERE schedule_id = $1 AND seq NOT IN
			(SELECT seq FROM schedule_fires WHERE schedule_id = $1 ORDER BY scheduled_at DESC, manual, seq DESC LIMIT $2)`,
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
		if len(created) > 0 || len(cancelled) > 0 {
			if err := e.notify(ctx, tx); err != nil {
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

func containsTask(ts []*store.Task, t *store.Task) bool {
	for _, x := range ts {
		if x == t {
			return true
		}
	}
	return false
}

// ListFires returns a schedule's fires, newest first. ErrNotFound.
func (e *Engine) ListFires(ctx context.Context, scheduleID string, limit int) ([]store.Fire, error) {
	if limit < 0 {
		return nil, fmt.Errorf("%w: list fires: limit %d", store.ErrInvalidArgument, limit)
	}
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	if _, err := e.loadSchedule(ctx, nil, "id", scheduleID, false); err != nil {
		return nil, e.classify(err)
	}
	q := `SELECT scheduled_at, manual, fired_at, outcome, reason, task_ids, cancelled_ids, missed_from, missed_to, catch_up
		FROM schedule_fires WHERE schedule_id = $1 ORDER BY scheduled_at DESC, manual, seq DESC`
	args := []any{scheduleID}
	if limit > 0 {
		q, args = q+` LIMIT $2`, append(args, limit)
	}
	rows, err := e.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, e.classify(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Fire, error) {
		var (
			f                     store.Fire
			at, fired             int64
			mfrom, mto            *int64
			taskIDs, cancelledIDs []string
		)
		if err := row.Scan(&at, &f.Manual, &fired, &f.Outcome, &f.Reason, &taskIDs, &cancelledIDs, &mfrom, &mto, &f.CatchUp); err != nil {
			return store.Fire{}, err
		}
		f.ScheduleID = scheduleID
		f.ScheduledAt, f.FiredAt, f.MissedFrom, f.MissedTo = fromNanos(&at), fromNanos(&fired), fromNanos(mfrom), fromNanos(mto)
		f.TaskIDs, f.CancelledIDs = ids(taskIDs), ids(cancelledIDs)
		return f, nil
	})
	if len(out) == 0 {
		out = nil
	}
	return out, e.classify(err)
}

// insertFire records one fire.
func insertFire(ctx context.Context, tx pgx.Tx, fire store.Fire) error {
	_, err := tx.Exec(ctx, `INSERT INTO schedule_fires (schedule_id, scheduled_at, manual, fired_at, outcome, reason,
		task_ids, cancelled_ids, missed_from, missed_to, catch_up) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		fire.ScheduleID, fire.ScheduledAt.UnixNano(), fire.Manual, fire.FiredAt.UnixNano(), fire.Outcome, fire.Reason,
		ids(fire.TaskIDs), ids(fire.CancelledIDs), nanos(fire.MissedFrom), nanos(fire.MissedTo), fire.CatchUp)
	return err
}

// importSchedules writes a snapshot's schedules (state and version as
// they are), their fires, gates and windows within Import's transaction.
func importSchedules(ctx context.Context, tx pgx.Tx, s store.Snapshot) error {
	for i := range s.Schedules {
		if err := saveSchedule(ctx, tx, &s.Schedules[i], true); err != nil {
			return fmt.Errorf("schedule %s: %w", s.Schedules[i].Name, err)
		}
	}
	for _, f := range s.Fires {
		if err := insertFire(ctx, tx, f); err != nil {
			return fmt.Errorf("a fire of schedule %s at %s: %w", f.ScheduleID, f.ScheduledAt, err)
		}
	}
	for _, g := range s.Gates {
		if _, err := tx.Exec(ctx, `INSERT INTO gates (kind, target, since, actor, reason) VALUES ($1, $2, $3, $4, $5)`,
			string(g.Kind), g.Target, nanos(g.Since), g.Actor, g.Reason); err != nil {
			return fmt.Errorf("%s gate of %s: %w", g.Kind, g.Target, err)
		}
	}
	for _, w := range s.Windows {
		if _, err := tx.Exec(ctx, `INSERT INTO windows (`+windowCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			w.ID, w.TeamID, w.MachineID, w.Cron, w.TimeZone, int64(w.Duration), w.HoldFrom, nanos(w.CreatedAt), w.Actor); err != nil {
			return fmt.Errorf("maintenance window %s: %w", w.ID, err)
		}
	}
	return nil
}
