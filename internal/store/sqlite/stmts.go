package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// The statements of the hot write paths (CreateTask, CreateTasks, Claim,
// Start, Heartbeat, Finish, Cancel and appending audit records) are
// prepared once, on the write connection, when the engine opens, and used
// in each write transaction through tx.StmtContext, which reuses the
// connection's prepared statement. Parsing these statements again on every call cost
// about a third of the CPU of a task's trip through the queue.
const (
	sqlLoadTask   = `SELECT ` + taskCols + ` FROM tasks WHERE id = ?`
	sqlTaskByKey  = `SELECT ` + taskCols + ` FROM tasks WHERE team_id = ? AND idempotency_key = ?`
	sqlTaskExists = `SELECT count(*) FROM tasks WHERE id = ?`
	sqlInsertTask = `INSERT INTO tasks (id, idempotency_key, team_id, machine_id, priority, spec, status, attempts, history,
		created_at, enqueued_at, ready_at, started_at, completed_at, lease_owner, lease_expires_at, cancel_requested,
		exit_code, stdout, stderr, stdout_truncated, stderr_truncated, error, error_kind)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	sqlSaveTask = `UPDATE tasks SET status = ?, attempts = ?, history = ?, enqueued_at = ?, ready_at = ?,
		started_at = ?, completed_at = ?, lease_owner = ?, lease_expires_at = ?, cancel_requested = ?,
		exit_code = ?, stdout = ?, stderr = ?, stdout_truncated = ?, stderr_truncated = ?, error = ?, error_kind = ?
		WHERE seq = ? AND status = ? AND lease_owner = ?`
	sqlRunning  = `SELECT machine_id, count(*) FROM tasks WHERE status IN ('ASSIGNED', 'PROCESSING') GROUP BY machine_id`
	sqlClaimRow = `UPDATE tasks SET status = 'ASSIGNED', lease_owner = ?, lease_expires_at = ?
		WHERE seq = ? AND status = 'PENDING' RETURNING ` + taskCols
	sqlHeartbeat = `UPDATE tasks SET lease_expires_at = ?
		WHERE id = ? AND lease_owner = ? AND status IN ('ASSIGNED', 'PROCESSING') RETURNING cancel_requested`
	// sqlBatchInsert (CreateTasks) inserts a task unless its id or
	// idempotency key is taken (no row then; CreateTasks finds out which).
	sqlBatchInsert = sqlInsertTask + ` ON CONFLICT DO NOTHING`
	// sqlCreateTask (CreateTask) inserts a task and returns it as stored,
	// or no row when its id (or key) is taken.
	sqlCreateTask  = sqlBatchInsert + ` RETURNING ` + taskCols
	sqlAuditHead   = `SELECT seq, hash FROM audit_head WHERE id = 1`
	sqlAuditInsert = `INSERT INTO audit (` + auditRowCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	sqlAuditMove   = `UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1`
)

// stmts are the engine's prepared statements (see above).
type stmts struct {
	loadTask, taskByKey, taskExists, insertTask, saveTask *sql.Stmt
	batchInsert                                           *sql.Stmt
	running, claimRow, heartbeat                          *sql.Stmt
	// Claim's source (claim.go): each statement returns at most one row
	// or is read to the end before the next is run.
	heads, headsOf, next, tags, saveTeamTag *sql.Stmt
	saveStamp                               *sql.Stmt
	auditHead, auditInsert, auditMove       *sql.Stmt
	// Group commit's savepoints (group.go).
	savepoint, release, rollbackTo *sql.Stmt
	// byQuery are the statements cachedTx serves, by their text.
	byQuery map[string]*sql.Stmt

	all []*sql.Stmt
}

// Savepoint statements (group.go).
const (
	sqlSavepoint  = `SAVEPOINT op`
	sqlRelease    = `RELEASE op`
	sqlRollbackTo = `ROLLBACK TO op`
)

// cachedQueries are read in write transactions on hot paths by code that
// takes a querier (guard conditions, the gates and windows a claim reads,
// the task CreateTask returns): cachedTx runs them prepared.
var cachedQueries = []string{
	sqlLoadTask, sqlCreateTask, sqlGates, sqlWindows,
	sqlGuardStoreRoles, sqlGuardMember, sqlGuardMachine, sqlGuardTeam,
	sqlGuardMachineRecord,
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
	prep(&s.heads, sqlHeads)
	prep(&s.headsOf, sqlHeadsOf)
	prep(&s.next, sqlNext)
	prep(&s.tags, sqlTags)
	prep(&s.saveTeamTag, sqlSaveTeamTag)
	prep(&s.saveStamp, sqlSaveStamp)
	prep(&s.auditHead, sqlAuditHead)
	prep(&s.auditInsert, sqlAuditInsert)
	prep(&s.auditMove, sqlAuditMove)
	prep(&s.savepoint, sqlSavepoint)
	prep(&s.release, sqlRelease)
	prep(&s.rollbackTo, sqlRollbackTo)
	s.byQuery = make(map[string]*sql.Stmt, len(cachedQueries))
	for _, q := range cachedQueries {
		var st *sql.Stmt
		prep(&st, q)
		s.byQuery[q] = st
	}
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

// cachedTx is a querier over tx that runs the statements of
// cachedQueries prepared, and any other as tx would.
type cachedTx struct {
	tx *sql.Tx
	st *stmts
}

func (e *Engine) cachedTx(tx *sql.Tx) querier { return cachedTx{tx: tx, st: e.st} }

func (c cachedTx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if c.st != nil {
		if st := c.st.byQuery[q]; st != nil {
			return stmt(ctx, c.tx, st).QueryContext(ctx, args...)
		}
	}
	return c.tx.QueryContext(ctx, q, args...)
}

func (c cachedTx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	if c.st != nil {
		if st := c.st.byQuery[q]; st != nil {
			return stmt(ctx, c.tx, st).QueryRowContext(ctx, args...)
		}
	}
	return c.tx.QueryRowContext(ctx, q, args...)
}
