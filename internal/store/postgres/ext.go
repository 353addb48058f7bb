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
	var out []store.Task
	err = e.write(ctx, func(tx pgx.Tx) error {
		out = make([]store.Task, len(in))
		keys := make(map[string]int) // key -> index of the batch task holding it
		b := &pgx.Batch{}
		var idx []int // batch task index of each queued insert
		for i := range in {
			t := &in[i]
			if _, ok := keys[t.IdempotencyKey]; ok && t.IdempotencyKey != "" {
				continue
			}
			if t.IdempotencyKey != "" {
				keys[t.IdempotencyKey] = i
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
			return firstErr
		}
		for i := range in {
			t := &in[i]
			if j, ok := keys[t.IdempotencyKey]; ok && t.IdempotencyKey != "" && j != i {
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
				_, old, err := scanTask(tx.QueryRow(ctx, `SELECT `+taskCols+` FROM tasks WHERE idempotency_key = $1`, t.IdempotencyKey))
				if err == nil {
					out[i] = old
					continue
				}
				if !errors.Is(err, pgx.ErrNoRows) {
					return fsm.BatchErr(i, err)
				}
			}
			return fsm.BatchErr(i, fmt.Errorf("%w: task %s", store.ErrExists, t.ID))
		}
		for i := range in {
			if j, ok := keys[in[i].IdempotencyKey]; ok && in[i].IdempotencyKey != "" && j != i {
				out[i] = fsm.CloneTask(out[j])
			}
		}
		if len(inserted) > 0 {
			return e.notify(ctx, tx)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// SetMachineHealth stores a machine's last health sample. ErrNotFound;
// ErrInvalidArgument.
func (e *Engine) SetMachineHealth(ctx context.Context, name string, sample []byte, at time.Time) error {
	at, err := fsm.HealthTime(name, at, time.Now())
	if err != nil {
		return err
	}
	return e.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE machines SET health = $1, health_at = $2 WHERE name = $3`, blob(sample), nanos(at), name)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: machine %s", store.ErrNotFound, name)
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
	q, args := `SELECT machine, count(*) FROM tasks WHERE status IN ('PENDING', 'ASSIGNED', 'PROCESSING') GROUP BY machine`, []any(nil)
	if machines != nil {
		q = `SELECT machine, count(*) FROM tasks WHERE machine = ANY($1) AND status IN ('PENDING', 'ASSIGNED', 'PROCESSING') GROUP BY machine`
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
