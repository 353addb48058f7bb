package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/rediacc/rediacc/internal/sched"
)

// The statements of the hot write paths (CreateTask, CreateTasks, Claim,
// Start, Heartbeat, Finish, Cancel and appending audit records) are
// prepared once, on the write connection, when the engine opens, and used
// in each write transaction through tx.StmtContext, which reuses the
// connection's prepared statement. Parsing these statements again on every call cost
// about a third of the CPU of a task's trip through the queue.
const (
	sqlLoadTask   = `SELECT ` + taskCols + ` FROM tasks WHERE id = ?`
	sqlTaskByKey  = `SELECT ` + taskCols + ` FROM tasks WHERE idempotency_key = ?`
	sqlTaskExists = `SELECT count(*) FROM tasks WHERE id = ?`
	sqlInsertTask = `INSERT INTO tasks (id, idempotency_key, team, machine, priority, spec, status, attempts, history,
		created_at, enqueued_at, ready_at, started_at, completed_at, lease_owner, lease_expires_at, cancel_requested,
		exit_code, stdout, stderr, stdout_truncated, stderr_truncated, error)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	sqlSaveTask = `UPDATE tasks SET status = ?, attempts = ?, history = ?, enqueued_at = ?, ready_at = ?,
		started_at = ?, completed_at = ?, lease_owner = ?, lease_expires_at = ?, cancel_requested = ?,
		exit_code = ?, stdout = ?, stderr = ?, stdout_truncated = ?, stderr_truncated = ?, error = ?
		WHERE seq = ? AND status = ? AND lease_owner = ?`
	sqlRunning  = `SELECT machine, count(*) FROM tasks WHERE status IN ('ASSIGNED', 'PROCESSING') GROUP BY machine`
	sqlClaimRow = `UPDATE tasks SET status = 'ASSIGNED', lease_owner = ?, lease_expires_at = ?
		WHERE seq = ? AND status = 'PENDING' RETURNING ` + taskCols
	sqlLevel = `SELECT seq, id, machine, priority, enqueued_at, ready_at FROM tasks INDEXED BY tasks_claim
		WHERE status = 'PENDING' AND priority = ?1 AND ready_at <= ?2 ORDER BY enqueued_at, seq`
	sqlLevelIn = `SELECT seq, id, machine, priority, enqueued_at, ready_at FROM tasks INDEXED BY tasks_claim
		WHERE status = 'PENDING' AND priority = ?1 AND ready_at <= ?2 AND machine IN (SELECT value FROM json_each(?3))
		ORDER BY enqueued_at, seq`
	// sqlLevelBusy and sqlLevelInBusy read a level BusyMachines hold back
	// (sched.BusyFrom..5) without those machines' tasks, so a busy
	// machine's backlog is skipped inside SQLite rather than row by row in
	// Go (about 4x cheaper per skipped task).
	sqlLevelBusy = `SELECT seq, id, machine, priority, enqueued_at, ready_at FROM tasks INDEXED BY tasks_claim
		WHERE status = 'PENDING' AND priority = ?1 AND ready_at <= ?2 AND machine NOT IN (SELECT value FROM json_each(?3))
		ORDER BY enqueued_at, seq`
	sqlLevelInBusy = `SELECT seq, id, machine, priority, enqueued_at, ready_at FROM tasks INDEXED BY tasks_claim
		WHERE status = 'PENDING' AND priority = ?1 AND ready_at <= ?2 AND machine IN (SELECT value FROM json_each(?3))
		AND machine NOT IN (SELECT value FROM json_each(?4))
		ORDER BY enqueued_at, seq`
	sqlHeartbeat = `UPDATE tasks SET lease_expires_at = ?
		WHERE id = ? AND lease_owner = ? AND status IN ('ASSIGNED', 'PROCESSING') RETURNING cancel_requested`
	// sqlBatchInsert (CreateTasks) inserts a task unless its id or
	// idempotency key is taken (no row then; CreateTasks finds out which).
	sqlBatchInsert = sqlInsertTask + ` ON CONFLICT DO NOTHING`
	sqlAuditHead   = `SELECT seq, hash FROM audit_head WHERE id = 1`
	sqlAuditInsert = `INSERT INTO audit (` + auditRowCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	sqlAuditMove   = `UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1`
)

// stmts are the engine's prepared statements (see above).
type stmts struct {
	loadTask, taskByKey, taskExists, insertTask, saveTask *sql.Stmt
	batchInsert                                           *sql.Stmt
	running, claimRow, heartbeat                          *sql.Stmt
	// levels[p-1] and levelsIn[p-1] read priority p for Claim: five
	// statements, because the five levels are read at once and a prepared
	// statement has one cursor. levelsBusy and levelsInBusy are their
	// variants skipping busy machines, prepared for p >= sched.BusyFrom
	// only (nil below).
	levels, levelsIn                  [5]*sql.Stmt
	levelsBusy, levelsInBusy          [5]*sql.Stmt
	auditHead, auditInsert, auditMove *sql.Stmt

	all []*sql.Stmt
}

// prepare prepares the statements on the write connection.
func (e *Engine) prepare(ctx context.Context) error {
	s := &stmts{}
	var err error
	prep := func(dst **sql.Stmt, q string) {
		if err != nil {
			return
		}
		var st *sql.Stmt
		if st, err = e.w.PrepareContext(ctx, q); err != nil {
			err = fmt.Errorf("sqlite store %s: preparing %.40q…: %w", e.path, q, e.classify(err))
			return
		}
		*dst = st
		s.all = append(s.all, st)
	}
	prep(&s.loadTask, sqlLoadTask)
	prep(&s.taskByKey, sqlTaskByKey)
	prep(&s.taskExists, sqlTaskExists)
	prep(&s.insertTask, sqlInsertTask)
	prep(&s.batchInsert, sqlBatchInsert)
	prep(&s.saveTask, sqlSaveTask)
	prep(&s.running, sqlRunning)
	prep(&s.claimRow, sqlClaimRow)
	prep(&s.heartbeat, sqlHeartbeat)
	for i := range s.levels {
		prep(&s.levels[i], sqlLevel)
		prep(&s.levelsIn[i], sqlLevelIn)
		if i+1 >= sched.BusyFrom {
			prep(&s.levelsBusy[i], sqlLevelBusy)
			prep(&s.levelsInBusy[i], sqlLevelInBusy)
		}
	}
	prep(&s.auditHead, sqlAuditHead)
	prep(&s.auditInsert, sqlAuditInsert)
	prep(&s.auditMove, sqlAuditMove)
	if err != nil {
		_ = s.close()
		return err
	}
	e.st = s
	return nil
}

func (s *stmts) close() error {
	var errs []error
	for _, st := range s.all {
		errs = append(errs, st.Close())
	}
	return errors.Join(errs...)
}
