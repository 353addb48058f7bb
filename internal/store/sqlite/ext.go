package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

// Batches, machine health, placement counts, pruning and audit trimming
// (schema migration 3).

const (
	sqlTerminal = `('COMPLETED', 'FAILED', 'CANCELLED')`
	sqlQueued   = `('PENDING', 'ASSIGNED', 'PROCESSING')`
)

// CreateTasks inserts ts as PENDING tasks in one write transaction, all or
// none, applying CreateTask's rules to each in order. Errors name the
// task's index. Tasks without an idempotency key go in by insertRows at a
// time, in one INSERT statement (issue 11: per-statement costs were a
// third of a large submission's); a statement that fails on a constraint
// changes nothing (SQLite undoes the statement) and its tasks go in one by
// one, as the others do: one INSERT … ON CONFLICT DO NOTHING each, where
// only a conflict (an idempotency key or id already taken) costs a lookup
// and the error names the task that failed.
func (e *Engine) CreateTasks(ctx context.Context, ts []store.Task) ([]store.Task, error) {
	if len(ts) == 0 {
		return nil, e.check(ctx)
	}
	in, err := fsm.NewTasks(ts, time.Now())
	if err != nil {
		return nil, err
	}
	recs, err := fsm.CtxAudit(ctx)
	if err != nil {
		return nil, err
	}
	var out []store.Task
	err = e.tx(ctx, nil, func(ctx context.Context, tx *sql.Tx) (bool, error) {
		out = make([]store.Task, len(in))
		ins := stmt(ctx, tx, e.st.batchInsert)
		type key struct{ team, key string }
		keys := make(map[key]int) // key -> index of the batch task holding it
		hits := map[string]bool{} // given ids of the tasks not inserted
		var rows *sql.Stmt        // insertRows tasks a statement, prepared on first use
		defer func() {
			if rows != nil {
				rows.Close()
			}
		}()
		for i := 0; i < len(in); i++ {
			if j := i + insertRows; j <= len(in) && !hasKeys(in[i:j]) {
				done, err := insertRowsOnce(ctx, tx, &rows, in[i:j])
				if err != nil {
					return false, fsm.BatchErr(i, err)
				}
				if done {
					for k := i; k < j; k++ {
						out[k] = fsm.CloneTask(in[k])
					}
					i = j - 1
					continue
				}
				// A constraint failed (a task id taken): one by one below.
			}
			t := &in[i]
			if j, ok := keys[key{t.TeamID, t.IdempotencyKey}]; ok && t.IdempotencyKey != "" {
				out[i], hits[t.ID] = fsm.CloneTask(out[j]), true
				continue
			}
			h, err := encodeHistory(t.History)
			if err != nil {
				return false, fsm.BatchErr(i, err)
			}
			res, err := ins.ExecContext(ctx, insertArgs(t, h)...)
			if err != nil {
				return false, fsm.BatchErr(i, err)
			}
			if n, err := res.RowsAffected(); err != nil {
				return false, err
			} else if n == 1 {
				if t.IdempotencyKey != "" {
					keys[key{t.TeamID, t.IdempotencyKey}] = i
				}
				out[i] = fsm.CloneTask(*t)
				continue
			}
			// A conflict with a stored task or an earlier one of the batch
			// (already in the table): the key first (CreateTask returns the
			// holder of the key even when the id is taken too), else the id.
			if t.IdempotencyKey != "" {
				_, old, err := scanTask(stmt(ctx, tx, e.st.taskByKey).QueryRowContext(ctx, t.TeamID, t.IdempotencyKey))
				if err == nil {
					out[i], hits[t.ID] = old, true
					continue
				}
				if !errors.Is(err, sql.ErrNoRows) {
					return false, fsm.BatchErr(i, err)
				}
			}
			return false, fsm.BatchErr(i, fmt.Errorf("%w: task %s", store.ErrExists, t.ID))
		}
		if err := e.fillNames(ctx, tx, out); err != nil {
			return false, err
		}
		if keep := fsm.KeepAudit(recs, hits); len(keep) > 0 {
			if _, err := e.appendAudit(ctx, tx, keep); err != nil {
				return false, err
			}
		}
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// insertRows is how many tasks one multi-row INSERT of CreateTasks holds:
// 24 columns each, 768 parameters (SQLite allows 32,766).
const insertRows = 32

// hasKeys reports whether a task of ts has an idempotency key.
func hasKeys(ts []store.Task) bool {
	for i := range ts {
		if ts[i].IdempotencyKey != "" {
			return true
		}
	}
	return false
}

// insertRowsOnce inserts ts (insertRows tasks, none with an idempotency
// key) with one INSERT statement, prepared into *st on first use. done is
// false when a constraint failed: the statement then changed nothing, and
// the caller inserts the tasks one by one to find the one that failed.
func insertRowsOnce(ctx context.Context, tx *sql.Tx, st **sql.Stmt, ts []store.Task) (done bool, err error) {
	if *st == nil {
		if *st, err = tx.PrepareContext(ctx, sqlInsertTaskRows(len(ts))); err != nil {
			return false, err
		}
	}
	args := make([]any, 0, len(ts)*24)
	for i := range ts {
		h, err := encodeHistory(ts[i].History)
		if err != nil {
			return false, nil // the one-by-one insert reports it with its index
		}
		args = append(args, insertArgs(&ts[i], h)...)
	}
	res, err := (*st).ExecContext(ctx, args...)
	var se *sqlite.Error
	if errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_CONSTRAINT {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if n, err := res.RowsAffected(); err != nil || n != int64(len(ts)) {
		return false, fmt.Errorf("inserting %d tasks in one statement: %d rows inserted (%v)", len(ts), n, err)
	}
	return true, nil
}

// sqlInsertTaskRows is sqlInsertTask with n rows of values.
func sqlInsertTaskRows(n int) string {
	i := strings.LastIndex(sqlInsertTask, "(")
	row := sqlInsertTask[i:]
	return sqlInsertTask[:i] + strings.Repeat(row+", ", n-1) + row
}

// fillNames fills the Team and Machine names of ts (see store.Task) with
// one query per distinct team and machine.
func (e *Engine) fillNames(ctx context.Context, q querier, ts []store.Task) error {
	teams, machines := map[string]string{}, map[string]string{}
	for _, t := range ts {
		teams[t.TeamID], machines[t.MachineID] = t.TeamID, t.MachineID
	}
	for _, lk := range []struct {
		names map[string]string
		query string
	}{{teams, `SELECT name FROM teams WHERE id = ?`}, {machines, `SELECT name FROM machines WHERE id = ?`}} {
		for id := range lk.names {
			var name string
			err := q.QueryRowContext(ctx, lk.query, id).Scan(&name)
			switch {
			case err == nil:
				lk.names[id] = name
			case !errors.Is(err, sql.ErrNoRows):
				return err
			}
		}
	}
	for i := range ts {
		ts[i].Team, ts[i].Machine = teams[ts[i].TeamID], machines[ts[i].MachineID]
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
	return e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE machines SET health = ?, health_at = ? WHERE id = ? AND deleted_at IS NULL`,
			blob(sample), nanos(at), id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("%w: machine %s", store.ErrNotFound, id)
		}
		return nil
	})
}

// QueuedByMachine counts the PENDING, ASSIGNED and PROCESSING tasks of each
// machine (of machines, when not nil), from the tasks_machine index.
func (e *Engine) QueuedByMachine(ctx context.Context, machines []string) (map[string]int, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	out := fsm.QueuedCounts(machines)
	if machines != nil && len(machines) == 0 {
		return out, nil
	}
	q, args := `SELECT machine_id, count(*) FROM tasks WHERE status IN `+sqlQueued+` GROUP BY machine_id`, []any(nil)
	if machines != nil {
		q = `SELECT machine_id, count(*) FROM tasks INDEXED BY tasks_machine
			WHERE machine_id IN (SELECT value FROM json_each(?)) AND status IN ` + sqlQueued + ` GROUP BY machine_id`
		args = []any{jsonList(machines)}
	}
	rows, err := e.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, e.classify(err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			m string
			n int
		)
		if err := rows.Scan(&m, &n); err != nil {
			return nil, e.classify(err)
		}
		out[m] = n
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
	_, ts, err := queryTasks(ctx, e.r, `INDEXED BY tasks_completed
		WHERE completed_at < ? AND status IN `+sqlTerminal+` ORDER BY completed_at, seq LIMIT ?`,
		before.UnixNano(), limit)
	return ts, e.classify(err)
}

// sqlDeleteFinished deletes the finished tasks among a JSON list of ids.
// The unary + keeps the status test off the indexes: the rows are found by
// id (its unique index), not by walking every finished task.
const sqlDeleteFinished = `DELETE FROM tasks
	WHERE id IN (SELECT value FROM json_each(?)) AND +status IN ` + sqlTerminal

// DeleteTasks deletes the finished tasks among ids in one transaction and
// returns how many.
func (e *Engine) DeleteTasks(ctx context.Context, ids []string) (int, error) {
	var n int64
	err := e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		n = 0
		if len(ids) == 0 {
			return nil
		}
		res, err := tx.ExecContext(ctx, sqlDeleteFinished, jsonList(ids))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, err
	}
	return int(n), nil
}

// readHead reads the single row of audit_head or audit_base.
func readHead(ctx context.Context, q querier, table string) (audit.Head, error) {
	var h audit.Head
	err := q.QueryRowContext(ctx, `SELECT seq, hash FROM `+table+` WHERE id = 1`).Scan(&h.Seq, &h.Hash)
	if errors.Is(err, sql.ErrNoRows) {
		return audit.Head{}, fmt.Errorf("%w: the audit trail's %s row is missing", store.ErrCorrupt, table)
	}
	return h, err
}

// TrimAudit deletes the audit records with Seq <= uptoSeq and moves the
// base, in one write transaction. ErrInvalidArgument; ErrCorrupt.
func (e *Engine) TrimAudit(ctx context.Context, uptoSeq int64) error {
	return e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		base, err := readHead(ctx, tx, "audit_base")
		if err != nil {
			return err
		}
		head, err := e.headTx(ctx, tx) // as this transaction moved it
		if err != nil {
			return err
		}
		trim, err := fsm.CheckTrim(uptoSeq, base, head)
		if err != nil || !trim {
			return err
		}
		nb := audit.Head{Seq: uptoSeq}
		err = tx.QueryRowContext(ctx, `SELECT hash FROM audit WHERE seq = ?`, uptoSeq).Scan(&nb.Hash)
		if errors.Is(err, sql.ErrNoRows) {
			return fsm.MissingAudit(uptoSeq, base, head)
		} else if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM audit WHERE seq <= ?`, uptoSeq); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE audit_base SET seq = ?, hash = ? WHERE id = 1`, nb.Seq, nb.Hash)
		return err
	})
}

// AuditBase returns the last trimmed record's Seq and Hash (zero when
// nothing was trimmed).
func (e *Engine) AuditBase(ctx context.Context) (audit.Head, error) {
	if err := e.check(ctx); err != nil {
		return audit.Head{}, err
	}
	h, err := readHead(ctx, e.r, "audit_base")
	return h, e.classify(err)
}
