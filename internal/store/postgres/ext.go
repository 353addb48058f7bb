package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

// CreateTasks inserts ts as PENDING tasks in one transaction, all or none,
// applying CreateTask's rules to each in order. Errors name the task's
// index.
func (e *Engine) CreateTasks(ctx context.Context, ts []store.Task) ([]store.Task, error) {
	if len(ts) == 0 {
		return nil, e.check(ctx)
	}
	in, err := fsm.NewTasks(ts, time.Now())
	if err != nil {
		return nil, err
	}
	args := make([][]any, len(in))
	for i := range in {
		if args[i], err = taskArgs(&in[i]); err != nil {
			return nil, fsm.BatchErr(i, err)
		}
	}
	recs, err := fsm.CtxAudit(ctx)
	if err != nil {
		return nil, err
	}
	type key struct{ team, key string }
	var out []store.Task
	err = e.tx(ctx, nil, func(tx pgx.Tx) (bool, error) {
		out = make([]store.Task, len(in))
		keys := make(map[key]int) // key -> index of the batch task holding it
		b := &pgx.Batch{}
		var idx []int // batch task index of each queued insert
		for i := range in {
			t := &in[i]
			k := key{t.TeamID, t.IdempotencyKey}
			if _, ok := keys[k]; ok && t.IdempotencyKey != "" {
				continue
			}
			if t.IdempotencyKey != "" {
				keys[k] = i
			}
			b.Queue(sqlInsertTask+` ON CONFLICT DO NOTHING`, args[i]...)
			idx = append(idx, i)
		}
		res := tx.SendBatch(ctx, b)
		inserted := make(map[int]bool, len(idx))
		var firstErr error
		for _, i := range idx {
			tag, err := res.Exec()
			if err != nil {
				firstErr = fsm.BatchErr(i, err)
				break
			}
			inserted[i] = tag.RowsAffected() == 1
		}
		if err := res.Close(); firstErr == nil && err != nil {
			firstErr = err
		}
		if firstErr != nil {
			return false, firstErr
		}
		hits := map[string]bool{} // given ids of the tasks not inserted
		holder := func(t *store.Task) (int, bool) {
			j, ok := keys[key{t.TeamID, t.IdempotencyKey}]
			return j, ok && t.IdempotencyKey != ""
		}
		for i := range in {
			t := &in[i]
			if j, ok := holder(t); ok && j != i {
				hits[t.ID] = true
				continue // filled below from the holder
			}
			if inserted[i] {
				out[i] = fsm.CloneTask(*t)
				continue
			}
			// A conflict with a stored task: the key first (CreateTask
			// returns the holder of the key even when the id is taken
			// too), else the id.
			if t.IdempotencyKey != "" {
				_, old, err := scanTask(tx.QueryRow(ctx, `SELECT `+taskCols+` FROM tasks WHERE team_id = $1 AND idempotency_key = $2`,
					t.TeamID, t.IdempotencyKey))
				if err == nil {
					out[i], hits[t.ID] = old, true
					continue
				}
				if !errors.Is(err, pgx.ErrNoRows) {
					return false, fsm.BatchErr(i, err)
				}
			}
			return false, fsm.BatchErr(i, fmt.Errorf("%w: task %s", store.ErrExists, t.ID))
		}
		if err := fillNames(ctx, tx, out); err != nil {
			return false, err
		}
		for i := range in {
			if j, ok := holder(&in[i]); ok && j != i {
				out[i] = fsm.CloneTask(out[j])
			}
		}
		if keep := fsm.KeepAudit(recs, hits); len(keep) > 0 {
			if _, err := e.appendAudit(ctx, tx, keep); err != nil {
				return false, err
			}
		}
		if len(inserted) > 0 {
			return false, e.notify(ctx, tx)
		}
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// fillNames fills the Team and Machine names of ts (see store.Task),
// skipping the entries not filled yet (empty ids).
func fillNames(ctx context.Context, tx pgx.Tx, ts []store.Task) error {
	var teams, machines []string
	for _, t := range ts {
		teams, machines = append(teams, t.TeamID), append(machines, t.MachineID)
	}
	names := map[string]string{}
	rows, err := tx.Query(ctx, `SELECT 't' || id, name FROM teams WHERE id = ANY($1)
		UNION ALL SELECT 'm' || id, name FROM machines WHERE id = ANY($2)`, teams, machines)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var k, n string
		if err := rows.Scan(&k, &n); err != nil {
			return err
		}
		names[k] = n
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for i := range ts {
		t := &ts[i]
		if t.ID == "" {
			continue
		}
		t.Team, t.Machine = t.TeamID, t.MachineID
		if n, ok := names["t"+t.TeamID]; ok {
			t.Team = n
		}
		if n, ok := names["m"+t.MachineID]; ok {
			t.Machine = n
		}
	}
	return nil
}

// SetMachineHealth stores a live machine's last health sample.
// ErrNotFound; ErrInvalidArgument.
func (e *Engine) SetMachineHealth(ctx context.Context, id string, sample []byte, at time.Time) error {
	at, err := fsm.HealthTime(id, at, time.Now())
	if err != nil {
		return err
	}
	return e.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE machines SET health = $1, health_at = $2 WHERE id = $3 AND deleted_at IS NULL`, blob(sample), nanos(at), id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: machine %s", store.ErrNotFound, id)
		}
		return nil
	})
}

// QueuedByMachine counts the PENDING, ASSIGNED and PROCESSING tasks of each
// machine (of machines, when not nil).
func (e *Engine) QueuedByMachine(ctx context.Context, machines []string) (map[string]int, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	out := fsm.QueuedCounts(machines)
	if machines != nil && len(machines) == 0 {
		return out, nil
	}
	q, args := `SELECT machine_id, count(*) FROM tasks WHERE status IN ('PENDING', 'ASSIGNED', 'PROCESSING') GROUP BY machine_id`, []any(nil)
	if machines != nil {
		q = `SELECT machine_id, count(*) FROM tasks WHERE machine_id = ANY($1) AND status IN ('PENDING', 'ASSIGNED', 'PROCESSING') GROUP BY machine_id`
		args = []any{machines}
	}
	rows, err := e.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, e.classify(err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			m string
			n int64
		)
		if err := rows.Scan(&m, &n); err != nil {
			return nil, e.classify(err)
		}
		out[m] = int(n)
	}
	return out, e.classify(rows.Err())
}

// ListPrunable returns up to limit finished tasks completed before before,
// oldest first, read from the tasks_completed index. ErrInvalidArgument.
func (e *Engine) ListPrunable(ctx context.Context, before time.Time, limit int) ([]store.Task, error) {
	if err := fsm.CheckPrune(before, limit); err != nil {
		return nil, err
	}
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	_, ts, err := collectTasks(e.pool.Query(ctx, `SELECT `+taskCols+` FROM tasks
		WHERE completed_at < $1 AND status IN ('COMPLETED', 'FAILED', 'CANCELLED') ORDER BY completed_at, seq LIMIT $2`,
		before.UnixNano(), limit))
	return ts, e.classify(err)
}

// DeleteTasks deletes the finished tasks among ids in one transaction and
// returns how many.
func (e *Engine) DeleteTasks(ctx context.Context, ids []string) (int, error) {
	var n int64
	err := e.write(ctx, func(tx pgx.Tx) error {
		n = 0
		if len(ids) == 0 {
			return nil
		}
		tag, err := tx.Exec(ctx, `DELETE FROM tasks WHERE id = ANY($1) AND status IN ('COMPLETED', 'FAILED', 'CANCELLED')`, ids)
		if err != nil {
			return err
		}
		n = tag.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, err
	}
	return int(n), nil
}
