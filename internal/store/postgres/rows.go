package postgres

import (
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

// Times are stored as bigint unix nanoseconds, NULL for the zero time.

func nanos(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	n := t.UnixNano()
	return &n
}

func fromNanos(n *int64) time.Time {
	if n == nil {
		return time.Time{}
	}
	return time.Unix(0, *n).UTC()
}

func blob(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// historyJSON encodes h for the history column (nil for none).
func historyJSON(h []store.Attempt) ([]byte, error) { return fsm.HistoryJSON(h) }

func historyFromJSON(b []byte) ([]store.Attempt, error) { return fsm.HistoryFromJSON(b) }

// taskCols are the columns scanTask reads, ending with the names of the
// task's team and machine (the ids themselves when no such row exists),
// read by scalar subqueries so that the list serves SELECT … FROM tasks
// and UPDATE tasks … RETURNING alike.
const taskCols = `seq, id, idempotency_key, team_id, machine_id, priority, spec, status, attempts, history,
	created_at, enqueued_at, ready_at, started_at, completed_at, lease_owner, lease_expires_at, cancel_requested,
	exit_code, stdout, stderr, stdout_truncated, stderr_truncated, error, error_kind,
	COALESCE((SELECT name FROM teams WHERE teams.id = tasks.team_id), tasks.team_id),
	COALESCE((SELECT name FROM machines WHERE machines.id = tasks.machine_id), tasks.machine_id)`

// scanTask reads one row of taskCols.
func scanTask(row pgx.Row) (int64, store.Task, error) {
	var (
		seq                                              int64
		t                                                store.Task
		status                                           string
		prio                                             int16
		exit                                             *int32
		history                                          []byte
		created, enqueued, ready, started, completed, le *int64
	)
	err := row.Scan(&seq, &t.ID, &t.IdempotencyKey, &t.TeamID, &t.MachineID, &prio, &t.Spec, &status, &t.Attempts, &history,
		&created, &enqueued, &ready, &started, &completed, &t.LeaseOwner, &le, &t.CancelRequested,
		&exit, &t.Stdout, &t.Stderr, &t.StdoutTruncated, &t.StderrTruncated, &t.Error, &t.ErrorKind, &t.Team, &t.Machine)
	if err != nil {
		return 0, store.Task{}, err
	}
	t.Priority = int(prio)
	t.Status = store.Status(status)
	t.CreatedAt, t.EnqueuedAt, t.ReadyAt = fromNanos(created), fromNanos(enqueued), fromNanos(ready)
	t.StartedAt, t.CompletedAt, t.LeaseExpiresAt = fromNanos(started), fromNanos(completed), fromNanos(le)
	if exit != nil {
		v := int(*exit)
		t.ExitCode = &v
	}
	t.Spec, t.Stdout, t.Stderr = fsm.Bytes(t.Spec), fsm.Bytes(t.Stdout), fsm.Bytes(t.Stderr)
	if t.History, err = historyFromJSON(history); err != nil {
		return 0, store.Task{}, fmt.Errorf("task %s: %w", t.ID, err)
	}
	return seq, t, nil
}

// collectTasks reads every row of rows (taskCols).
func collectTasks(rows pgx.Rows, err error) ([]int64, []store.Task, error) {
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var (
		seqs  []int64
		tasks []store.Task
	)
	for rows.Next() {
		seq, t, err := scanTask(rows)
		if err != nil {
			return nil, nil, err
		}
		seqs, tasks = append(seqs, seq), append(tasks, t)
	}
	return seqs, tasks, rows.Err()
}

func exitCode(p *int) *int32 {
	if p == nil {
		return nil
	}
	v := int32(*p)
	return &v
}

// taskArgs are the values of sqlInsertTask's columns for t.
func taskArgs(t *store.Task) ([]any, error) {
	h, err := historyJSON(t.History)
	if err != nil {
		return nil, err
	}
	return []any{t.ID, t.IdempotencyKey, t.TeamID, t.MachineID, t.Priority, blob(t.Spec), string(t.Status), t.Attempts, h,
		nanos(t.CreatedAt), nanos(t.EnqueuedAt), nanos(t.ReadyAt), nanos(t.StartedAt), nanos(t.CompletedAt),
		t.LeaseOwner, nanos(t.LeaseExpiresAt), t.CancelRequested,
		exitCode(t.ExitCode), blob(t.Stdout), blob(t.Stderr), t.StdoutTruncated, t.StderrTruncated, t.Error, t.ErrorKind}, nil
}

const sqlInsertTask = `INSERT INTO tasks (id, idempotency_key, team_id, machine_id, priority, spec, status, attempts, history,
	created_at, enqueued_at, ready_at, started_at, completed_at, lease_owner, lease_expires_at, cancel_requested,
	exit_code, stdout, stderr, stdout_truncated, stderr_truncated, error, error_kind)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)`
