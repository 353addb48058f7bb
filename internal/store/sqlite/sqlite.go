// Package sqlite is the embedded queue store engine: one SQLite file, through
// modernc.org/sqlite (pure Go, no cgo).
//
// Several processes may open the same file (a worker in one, the CLI
// submitting from another). Every state change is one write transaction
// begun with BEGIN IMMEDIATE, so it holds SQLite's single write lock from its
// first read: a claim computes its candidates and marks them ASSIGNED under
// that lock, and two claimers, in one process or in two, never get the same
// task or overrun a machine's limit. Within a process writes go through one
// connection; between processes a blocking flock on the sidecar file
// path+"-lock" queues them fairly (see gate.go), with SQLite's busy timeout
// (5s) as the backstop. Reads run on a separate pool and, in WAL mode, never
// wait for writers. The journal is WAL with synchronous=NORMAL, SQLite's
// recommended pairing: a commit survives the process being killed (the
// crash tests kill workers with SIGKILL), and the file is never corrupted;
// only a power loss or OS crash may roll back the last commits before the
// next checkpoint. synchronous=FULL (an fsync per commit) cost 30-40 % of
// the fan-out throughput here (docs/BENCHMARKS.md).
//
// Teams, members, store-wide roles and the hash-chained audit trail
// (store.Access) live in the same file. Audit records are chained onto the
// head kept in the audit_head table and inserted inside the write
// transaction of the change they describe, so writers in every process
// extend one linear chain, and a change is never committed without its
// records (or the records without the change).
//
// The file and its sidecars are created with mode 0600 (the directory 0700
// when created).
package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"

	"github.com/rediacc/rediacc/internal/safefs"
)

// BusyTimeout is how long a write waits for another process's write
// transaction before failing with "database is locked".
const BusyTimeout = 5 * time.Second

// Engine is the SQLite store.Engine. Open it with Open.
type Engine struct {
	fsm.AuditSeal // seals audit records (SetAuditKeyring)

	path   string
	w      *sql.DB   // one connection; BEGIN IMMEDIATE transactions
	r      *sql.DB   // read-only pool
	gate   *gate     // orders writers across processes (see gate.go)
	st     *stmts    // prepared on w (see stmts.go)
	gc     committer // group commit (group.go)
	ah     txHead    // the audit head of the running write transaction (audithead.go)
	closed atomic.Bool
}

var (
	_ store.Engine = (*Engine)(nil)
	_ store.Access = (*Engine)(nil)
)

// Open opens the store at path, creating the file (mode 0600, and its
// directory with mode 0700) and its schema when missing, and migrating an
// older schema. A file that is not a SQLite database, or is one but not a
// rediacc store, gives an error wrapping store.ErrCorrupt; a file written by
// a newer rediacc gives store.ErrSchemaTooNew. It is OpenOptions with the
// default Options (group commit on).
func Open(ctx context.Context, path string) (*Engine, error) {
	return OpenOptions(ctx, path, Options{})
}

// OpenOptions is Open with opts (see Options; group.go).
func OpenOptions(ctx context.Context, path string, opts Options) (*Engine, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: sqlite store path is empty", store.ErrInvalidArgument)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite store %s: %w", path, err)
	}
	if err := createFile(abs); err != nil {
		return nil, err
	}
	busy := fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds())
	w, err := sql.Open("sqlite", dsn(abs, url.Values{
		"_txlock": {"immediate"},
		"_pragma": {busy, "foreign_keys(1)", "synchronous(NORMAL)", "temp_store(MEMORY)"},
	}))
	if err != nil {
		return nil, fmt.Errorf("sqlite store %s: %w", abs, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	r, err := sql.Open("sqlite", dsn(abs, url.Values{
		"_pragma": {busy, "query_only(1)"},
	}))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite store %s: %w", abs, err)
	}
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4)
	e := &Engine{path: abs, w: w, r: r}
	e.gc.init(opts)
	fail := func(err error) (*Engine, error) {
		w.Close()
		r.Close()
		if e.gate != nil {
			e.gate.close()
		}
		return nil, err
	}
	if err := e.probe(ctx); err != nil {
		return fail(err)
	}
	if e.gate, err = openGate(abs + "-lock"); err != nil {
		return fail(err)
	}
	if err := e.migrate(ctx); err != nil {
		return fail(err)
	}
	if err := e.prepare(ctx); err != nil {
		return fail(err)
	}
	return e, nil
}

// Path returns the absolute path of the store's file.
func (e *Engine) Path() string { return e.path }

func dsn(abs string, q url.Values) string {
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: q.Encode()}
	return u.String()
}

// createFile creates path with mode 0600 (and missing directories with mode
// 0700) unless it exists; SQLite would create it with 0644. The store file
// and the files SQLite keeps beside it must not be symbolic links: SQLite
// would follow them (ErrInvalidArgument wrapping safefs.ErrUnsafe).
func createFile(path string) error {
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal", path + "-lock"} {
		if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			return fmt.Errorf("%w: sqlite store: %w: %s is a symbolic link: refusing to follow it; use the real path", store.ErrInvalidArgument, safefs.ErrUnsafe, p)
		}
	}
	st, err := os.Stat(path)
	switch {
	case err == nil && st.IsDir():
		return fmt.Errorf("%w: sqlite store %s is a directory", store.ErrInvalidArgument, path)
	case err == nil:
		return checkNotEmpty(path, st.Size()) // create.go
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("sqlite store %s: %w", path, err)
	case !isNewStoreTemp(path):
		return createStore(path) // create.go: whole, through a temporary file
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("sqlite store %s: %w", path, err)
	}
	f, err := safefs.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil // another process won the race
	}
	if err != nil {
		return fmt.Errorf("sqlite store %s: %w", path, err)
	}
	return f.Close()
}

func (e *Engine) corrupt(why string, err error) error {
	msg := fmt.Sprintf("%s: %s; move it aside or choose another path, a new store is created when the file is missing", e.path, why)
	if err != nil {
		return fmt.Errorf("%w: %s (%v)", store.ErrCorrupt, msg, err)
	}
	return fmt.Errorf("%w: %s", store.ErrCorrupt, msg)
}

// classify turns driver errors into store errors.
func (e *Engine) classify(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrConnDone) || strings.Contains(err.Error(), "sql: database is closed") {
		return fmt.Errorf("%w: %s", store.ErrClosed, e.path)
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_NOTADB:
			return e.corrupt("not a SQLite database", err)
		case sqlite3.SQLITE_CORRUPT:
			return e.corrupt("the database is damaged", err)
		}
	}
	return err
}

// probe checks that the file is a rediacc store (or empty) and turns on WAL.
func (e *Engine) probe(ctx context.Context) error {
	var appID int64
	if err := e.w.QueryRowContext(ctx, "PRAGMA application_id").Scan(&appID); err != nil {
		return e.classify(err)
	}
	var tables []string
	rows, err := e.w.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`)
	if err != nil {
		return e.classify(err)
	}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return e.classify(err)
		}
		tables = append(tables, name)
	}
	if err := rows.Close(); err != nil {
		return e.classify(err)
	}
	if appID != 0 && appID != applicationID {
		return e.corrupt(fmt.Sprintf("a SQLite database of another application (application_id %#x)", appID), nil)
	}
	if len(tables) > 0 && !slices.Contains(tables, "rediacc_schema") {
		return e.corrupt(fmt.Sprintf("a SQLite database but not a rediacc store (tables %s)", strings.Join(tables, ", ")), nil)
	}
	var mode string
	if err := e.w.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode); err != nil {
		return fmt.Errorf("sqlite store %s: enabling WAL: %w", e.path, e.classify(err))
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("sqlite store %s: journal mode is %q, want wal (is the file on a network file system?)", e.path, mode)
	}
	return nil
}

func (e *Engine) migrate(ctx context.Context) error {
	return e.tx(ctx, nil, func(ctx context.Context, tx *sql.Tx) (bool, error) { return false, e.migrateTx(ctx, tx) })
}

// migrateTx brings the schema to the latest version.
func (e *Engine) migrateTx(ctx context.Context, tx *sql.Tx) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'rediacc_schema'`).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		var others int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`).Scan(&others); err != nil {
			return err
		}
		if others > 0 {
			return e.corrupt("a SQLite database but not a rediacc store", nil)
		}
		if _, err := tx.ExecContext(ctx, `CREATE TABLE rediacc_schema (version INTEGER NOT NULL) STRICT;
			INSERT INTO rediacc_schema (version) VALUES (0);
			PRAGMA application_id = `+fmt.Sprint(applicationID)); err != nil {
			return err
		}
	}
	var versions []int
	rows, err := tx.QueryContext(ctx, `SELECT version FROM rediacc_schema`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return err
		}
		versions = append(versions, v)
	}
	if err := rows.Close(); err != nil {
		return err
	}
	if len(versions) != 1 || versions[0] < 0 {
		return e.corrupt(fmt.Sprintf("its schema version table holds %v", versions), nil)
	}
	v := versions[0]
	if v > len(migrations) {
		return fmt.Errorf("%w: %s has schema version %d, this build knows up to %d; upgrade rediacc", store.ErrSchemaTooNew, e.path, v, len(migrations))
	}
	for i := v; i < len(migrations); i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return fmt.Errorf("sqlite store %s: migration to version %d: %w", e.path, i+1, err)
		}
	}
	if v < len(migrations) {
		if _, err := tx.ExecContext(ctx, `UPDATE rediacc_schema SET version = ?`, len(migrations)); err != nil {
			return err
		}
	}
	return nil
}

// SchemaVersion is the schema version this build writes.
func SchemaVersion() int { return len(migrations) }

func (e *Engine) check(ctx context.Context) error {
	if e.closed.Load() {
		return fmt.Errorf("%w: %s", store.ErrClosed, e.path)
	}
	return ctx.Err()
}

// write runs fn in a BEGIN IMMEDIATE transaction on the write connection
// and, when fn returns nil, appends the audit records ctx carries
// (store.WithAudit) and enqueues its alerts (store.WithAlerts) in the same
// transaction and commits. The transaction may be shared with other
// callers' changes (group commit, see group.go); fn runs in it with a ctx
// that carries the caller's values but not its cancellation, and must use
// that ctx.
func (e *Engine) write(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return e.writeIf(ctx, func(ctx context.Context, tx *sql.Tx) (bool, error) { return true, fn(ctx, tx) })
}

// writeIf is write for a change that may turn out to be no change: the
// audit records are appended only when fn returns true.
func (e *Engine) writeIf(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) (bool, error)) error {
	recs, err := fsm.CtxAudit(ctx)
	if err != nil {
		return err
	}
	if _, err := fsm.CtxAlerts(ctx); err != nil {
		return err
	}
	return e.tx(ctx, recs, fn)
}

// tx runs fn in a BEGIN IMMEDIATE transaction on the write connection,
// after evaluating the guard conditions ctx carries (store.WithGuard) in
// it, appends recs and enqueues the alerts ctx carries when fn returns true
// and no error, and commits; on error nothing of it is written. It returns
// only once the transaction holding the change committed (or the change
// failed). With group commit (the default) the transaction may hold the
// changes of other callers too, each in its own savepoint (group.go).
func (e *Engine) tx(ctx context.Context, recs []audit.Record, fn func(ctx context.Context, tx *sql.Tx) (bool, error)) error {
	if err := e.check(ctx); err != nil {
		return err
	}
	conds, err := fsm.CtxGuard(ctx)
	if err != nil {
		return err
	}
	o := &op{ctx: ctx, recs: recs, conds: conds, fn: fn}
	if e.gc.maxOps <= 1 {
		return e.txAlone(o)
	}
	return e.gc.submit(e, o)
}

// txAlone runs o in a transaction of its own (group commit off: one
// transaction per change, with the caller's ctx).
func (e *Engine) txAlone(o *op) error {
	ctx := o.ctx
	if err := e.lockGate(ctx); err != nil {
		return err
	}
	defer e.gate.unlock()
	tx, err := e.w.BeginTx(ctx, nil)
	if err != nil {
		return e.classify(err)
	}
	if err := e.runOp(ctx, tx, o); err != nil {
		e.rollback(tx)
		return e.classify(err)
	}
	return e.classify(e.commit(ctx, tx))
}

// lockGate takes the write gate; ErrClosed when the engine closed.
func (e *Engine) lockGate(ctx context.Context) error {
	if err := e.gate.lock(ctx); err != nil {
		if errors.Is(err, errGateClosed) {
			return fmt.Errorf("%w: %s", store.ErrClosed, e.path)
		}
		return err
	}
	return nil
}

// runOp applies o inside tx: its guard conditions, its change, and, when
// the change changed something, its audit records and alerts.
func (e *Engine) runOp(ctx context.Context, tx *sql.Tx, o *op) error {
	if err := guard(ctx, e.cachedTx(tx), o.conds); err != nil {
		return err
	}
	changed, err := o.fn(ctx, tx)
	if err == nil && changed && len(o.recs) > 0 {
		_, err = e.appendAudit(ctx, tx, o.recs)
	}
	if alerts := store.AlertsFrom(ctx); err == nil && changed && len(alerts) > 0 {
		err = e.enqueueAlerts(ctx, tx, alerts) // the change's alerts (outbox.go)
	}
	return err
}

// ---- times and rows

func nanos(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixNano(), Valid: true}
}

func fromNanos(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

func nullInt(p *int) sql.NullInt64 {
	if p == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: int64(*p), Valid: true}
}

func intPtr(n sql.NullInt64) *int {
	if !n.Valid {
		return nil
	}
	v := int(n.Int64)
	return &v
}

func blob(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

func encodeHistory(h []store.Attempt) (any, error) {
	b, err := fsm.HistoryJSON(h)
	if b == nil || err != nil {
		return nil, err
	}
	return string(b), nil
}

func decodeHistory(s sql.NullString) ([]store.Attempt, error) {
	if !s.Valid {
		return nil, nil
	}
	return fsm.HistoryFromJSON([]byte(s.String))
}

// taskCols are the columns scanTask reads, ending with the names of the
// task's team and machine (the ids themselves when no such row exists),
// read by scalar subqueries so that the list serves SELECT … FROM tasks
// and UPDATE tasks … RETURNING alike.
const taskCols = `seq, id, idempotency_key, team_id, machine_id, priority, spec, status, attempts, history,
	created_at, enqueued_at, ready_at, started_at, completed_at, lease_owner, lease_expires_at, cancel_requested,
	exit_code, stdout, stderr, stdout_truncated, stderr_truncated, error, error_kind,
	` + teamNameOf + `, ` + machineNameOf

// teamNameOf and machineNameOf are the names of tasks.team_id and
// tasks.machine_id.
const (
	teamNameOf    = `COALESCE((SELECT name FROM teams WHERE teams.id = tasks.team_id), tasks.team_id)`
	machineNameOf = `COALESCE((SELECT name FROM machines WHERE machines.id = tasks.machine_id), tasks.machine_id)`
)

type scanner interface{ Scan(dest ...any) error }

func scanTask(s scanner) (int64, store.Task, error) {
	var (
		seq                                              int64
		t                                                store.Task
		status                                           string
		history                                          sql.NullString
		created, enqueued, ready, started, completed, le sql.NullInt64
		exit                                             sql.NullInt64
	)
	err := s.Scan(&seq, &t.ID, &t.IdempotencyKey, &t.TeamID, &t.MachineID, &t.Priority, &t.Spec, &status, &t.Attempts, &history,
		&created, &enqueued, &ready, &started, &completed, &t.LeaseOwner, &le, &t.CancelRequested,
		&exit, &t.Stdout, &t.Stderr, &t.StdoutTruncated, &t.StderrTruncated, &t.Error, &t.ErrorKind, &t.Team, &t.Machine)
	if err != nil {
		return 0, store.Task{}, err
	}
	t.Status = store.Status(status)
	t.CreatedAt, t.EnqueuedAt, t.ReadyAt = fromNanos(created), fromNanos(enqueued), fromNanos(ready)
	t.StartedAt, t.CompletedAt, t.LeaseExpiresAt = fromNanos(started), fromNanos(completed), fromNanos(le)
	t.ExitCode = intPtr(exit)
	t.Spec, t.Stdout, t.Stderr = fsm.Bytes(t.Spec), fsm.Bytes(t.Stdout), fsm.Bytes(t.Stderr)
	if t.History, err = decodeHistory(history); err != nil {
		return 0, store.Task{}, fmt.Errorf("task %s: %w", t.ID, err)
	}
	return seq, t, nil
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func queryTasks(ctx context.Context, q querier, where string, args ...any) ([]int64, []store.Task, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+taskCols+` FROM tasks `+where, args...)
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

func loadTask(ctx context.Context, q querier, id string) (int64, store.Task, error) {
	return loadedTask(id)(scanTask(q.QueryRowContext(ctx, sqlLoadTask, id)))
}

// loadedTask turns ErrNoRows from loading task id into ErrNotFound.
func loadedTask(id string) func(int64, store.Task, error) (int64, store.Task, error) {
	return func(seq int64, t store.Task, err error) (int64, store.Task, error) {
		if errors.Is(err, sql.ErrNoRows) {
			return 0, store.Task{}, fmt.Errorf("%w: task %s", store.ErrNotFound, id)
		}
		return seq, t, err
	}
}

// stmt is the engine's prepared statement s for use in tx.
func stmt(ctx context.Context, tx *sql.Tx, s *sql.Stmt) *sql.Stmt { return tx.StmtContext(ctx, s) }

func (e *Engine) insertTask(ctx context.Context, tx *sql.Tx, t *store.Task) error {
	h, err := encodeHistory(t.History)
	if err != nil {
		return err
	}
	_, err = stmt(ctx, tx, e.st.insertTask).ExecContext(ctx, insertArgs(t, h)...)
	return err
}

// insertArgs are the arguments of sqlInsertTask for t with encoded history h.
func insertArgs(t *store.Task, h any) []any {
	return []any{t.ID, t.IdempotencyKey, t.TeamID, t.MachineID, t.Priority, blob(t.Spec), string(t.Status), t.Attempts, h,
		nanos(t.CreatedAt), nanos(t.EnqueuedAt), nanos(t.ReadyAt), nanos(t.StartedAt), nanos(t.CompletedAt),
		t.LeaseOwner, nanos(t.LeaseExpiresAt), t.CancelRequested,
		nullInt(t.ExitCode), blob(t.Stdout), blob(t.Stderr), t.StdoutTruncated, t.StderrTruncated, t.Error, t.ErrorKind}
}

// saveTask writes t's mutable fields over row seq, only if the row is still
// in status `was` under lease owner `wasOwner`.
func (e *Engine) saveTask(ctx context.Context, tx *sql.Tx, seq int64, was store.Status, wasOwner string, t *store.Task) error {
	h, err := encodeHistory(t.History)
	if err != nil {
		return err
	}
	res, err := stmt(ctx, tx, e.st.saveTask).ExecContext(ctx,
		string(t.Status), t.Attempts, h, nanos(t.EnqueuedAt), nanos(t.ReadyAt),
		nanos(t.StartedAt), nanos(t.CompletedAt), t.LeaseOwner, nanos(t.LeaseExpiresAt), t.CancelRequested,
		nullInt(t.ExitCode), blob(t.Stdout), blob(t.Stderr), t.StdoutTruncated, t.StderrTruncated, t.Error, t.ErrorKind,
		seq, string(was), wasOwner)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n != 1 {
		return fmt.Errorf("%w: task %s changed under the write lock", store.ErrLeaseLost, t.ID)
	}
	return nil
}

// modify loads task id in a write transaction, applies fn and saves the
// result; nothing is written when fn fails.
func (e *Engine) modify(ctx context.Context, id string, fn func(t *store.Task) error) (store.Task, error) {
	var out store.Task
	err := e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		seq, t, err := loadedTask(id)(scanTask(stmt(ctx, tx, e.st.loadTask).QueryRowContext(ctx, id)))
		if err != nil {
			return err
		}
		was, wasOwner := t.Status, t.LeaseOwner
		if err := fn(&t); err != nil {
			return err
		}
		if err := e.saveTask(ctx, tx, seq, was, wasOwner, &t); err != nil {
			return err
		}
		out = t
		return nil
	})
	if err != nil {
		return store.Task{}, err
	}
	return out, nil
}

func jsonList(ss []string) string {
	if ss == nil {
		ss = []string{}
	}
	b, _ := json.Marshal(ss)
	return string(b)
}

// ---- machines

// machineCols are the columns CreateMachine writes; machineSelect adds the
// owning team's name, the health sample (SetMachineHealth) and deleted_at,
// which scanMachine reads.
const (
	machineCols   = `id, name, team_id, host, port, user_name, config, created_at, updated_at`
	machineSelect = `id, name, team_id, COALESCE((SELECT name FROM teams WHERE teams.id = machines.team_id), machines.team_id),
		host, port, user_name, config, created_at, updated_at, health, health_at, deleted_at`
)

func scanMachine(s scanner) (store.Machine, error) {
	var (
		m                                   store.Machine
		created, updated, healthAt, deleted sql.NullInt64
	)
	if err := s.Scan(&m.ID, &m.Name, &m.TeamID, &m.Team, &m.Host, &m.Port, &m.User, &m.Config, &created, &updated,
		&m.Health, &healthAt, &deleted); err != nil {
		return store.Machine{}, err
	}
	m.Config, m.Health = fsm.Bytes(m.Config), fsm.Bytes(m.Health)
	m.CreatedAt, m.UpdatedAt, m.HealthAt = fromNanos(created), fromNanos(updated), fromNanos(healthAt)
	m.DeletedAt = fromNanos(deleted)
	return m, nil
}

// liveMachineID returns the id of the live machine named name ("" when none).
func liveMachineID(ctx context.Context, q querier, name string) (string, error) {
	var id string
	err := q.QueryRowContext(ctx, `SELECT id FROM machines WHERE name = ? AND deleted_at IS NULL`, name).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return id, err
}

// liveMachine loads the live machine id. ErrNotFound.
func liveMachine(ctx context.Context, q querier, id string) (store.Machine, error) {
	m, err := scanMachine(q.QueryRowContext(ctx, `SELECT `+machineSelect+` FROM machines WHERE id = ? AND deleted_at IS NULL`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Machine{}, fmt.Errorf("%w: machine %s", store.ErrNotFound, id)
	}
	return m, err
}

// teamLive reports whether team id exists and is not deleted.
func teamLive(ctx context.Context, q querier, id string) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT count(*) FROM teams WHERE id = ? AND deleted_at IS NULL`, id).Scan(&n)
	return n > 0, err
}

// noUnfinished returns ErrMachineHasTasks when a task of machine (id,
// named name) is not terminal.
func noUnfinished(ctx context.Context, tx *sql.Tx, id, name string) error {
	var tid, status string
	err := tx.QueryRowContext(ctx, `SELECT id, status FROM tasks
		WHERE machine_id = ? AND status IN ('PENDING', 'ASSIGNED', 'PROCESSING') LIMIT 1`, id).Scan(&tid, &status)
	switch {
	case err == nil:
		return fsm.MachineHasTasks(name, tid, store.Status(status))
	case errors.Is(err, sql.ErrNoRows):
		return nil
	}
	return err
}

// CreateMachine inserts m. ErrExists; ErrNotFound; ErrInvalidArgument.
func (e *Engine) CreateMachine(ctx context.Context, m store.Machine) (store.Machine, error) {
	m, err := fsm.NewMachine(m, time.Now())
	if err != nil {
		return store.Machine{}, err
	}
	var out store.Machine
	err = e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if id, err := liveMachineID(ctx, tx, m.Name); err != nil {
			return err
		} else if id != "" {
			return fmt.Errorf("%w: machine %s", store.ErrExists, m.Name)
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM machines WHERE id = ?`, m.ID).Scan(&n); err != nil {
			return err
		} else if n > 0 {
			return fmt.Errorf("%w: machine id %s", store.ErrExists, m.ID)
		}
		if ok, err := teamLive(ctx, tx, m.TeamID); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("%w: team %s (of machine %s)", store.ErrNotFound, m.TeamID, m.Name)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO machines (`+machineCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			m.ID, m.Name, m.TeamID, m.Host, m.Port, m.User, blob(m.Config), nanos(m.CreatedAt), nanos(m.UpdatedAt)); err != nil {
			return err
		}
		out, err = liveMachine(ctx, tx, m.ID)
		return err
	})
	if err != nil {
		return store.Machine{}, err
	}
	return out, nil
}

// UpdateMachine replaces the live machine m.ID, keeping its CreatedAt.
// ErrNotFound; ErrExists; ErrMachineHasTasks; ErrInvalidArgument.
func (e *Engine) UpdateMachine(ctx context.Context, m store.Machine) error {
	return e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		old, err := liveMachine(ctx, tx, m.ID)
		if err != nil {
			return err
		}
		m, err := fsm.UpdateMachine(old, m, time.Now())
		if err != nil {
			return err
		}
		if id, err := liveMachineID(ctx, tx, m.Name); err != nil {
			return err
		} else if id != "" && id != m.ID {
			return fmt.Errorf("%w: machine %s", store.ErrExists, m.Name)
		}
		if m.TeamID != old.TeamID {
			if ok, err := teamLive(ctx, tx, m.TeamID); err != nil {
				return err
			} else if !ok {
				return fmt.Errorf("%w: team %s (of machine %s)", store.ErrNotFound, m.TeamID, m.Name)
			}
			if err := noUnfinished(ctx, tx, m.ID, m.Name); err != nil {
				return err
			}
		}
		_, err = tx.ExecContext(ctx, `UPDATE machines SET name = ?, team_id = ?, host = ?, port = ?, user_name = ?, config = ?,
			created_at = ?, updated_at = ? WHERE id = ?`,
			m.Name, m.TeamID, m.Host, m.Port, m.User, blob(m.Config), nanos(m.CreatedAt), nanos(m.UpdatedAt), m.ID)
		return err
	})
}

// GetMachine returns one machine by id, live or removed. ErrNotFound.
func (e *Engine) GetMachine(ctx context.Context, id string) (store.Machine, error) {
	if err := e.check(ctx); err != nil {
		return store.Machine{}, err
	}
	m, err := scanMachine(e.r.QueryRowContext(ctx, `SELECT `+machineSelect+` FROM machines WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Machine{}, fmt.Errorf("%w: machine id %s", store.ErrNotFound, id)
	}
	return m, e.classify(err)
}

// MachineByName returns the live machine named name. ErrNotFound.
func (e *Engine) MachineByName(ctx context.Context, name string) (store.Machine, error) {
	if err := e.check(ctx); err != nil {
		return store.Machine{}, err
	}
	m, err := scanMachine(e.r.QueryRowContext(ctx, `SELECT `+machineSelect+` FROM machines WHERE name = ? AND deleted_at IS NULL`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Machine{}, fmt.Errorf("%w: machine %s", store.ErrNotFound, name)
	}
	return m, e.classify(err)
}

// ListMachines returns the live machines matching f, ordered by name.
func (e *Engine) ListMachines(ctx context.Context, f store.MachineFilter) ([]store.Machine, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	q, args := `SELECT `+machineSelect+` FROM machines WHERE deleted_at IS NULL AND (?1 = '' OR team_id = ?1)`, []any{f.TeamID}
	if f.TeamIDs != nil {
		q, args = q+` AND team_id IN (SELECT value FROM json_each(?2))`, append(args, jsonList(f.TeamIDs))
	}
	rows, err := e.r.QueryContext(ctx, q+` ORDER BY name`, args...)
	if err != nil {
		return nil, e.classify(err)
	}
	defer rows.Close()
	var out []store.Machine
	for rows.Next() {
		m, err := scanMachine(rows)
		if err != nil {
			return nil, e.classify(err)
		}
		out = append(out, m)
	}
	return out, e.classify(rows.Err())
}

// DeleteMachine removes the live machine id, keeping its row.
// ErrNotFound; ErrMachineHasTasks.
func (e *Engine) DeleteMachine(ctx context.Context, id string, at time.Time) error {
	at, err := fsm.DeleteTime("machine", id, at, time.Now())
	if err != nil {
		return err
	}
	return e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		m, err := liveMachine(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := noUnfinished(ctx, tx, id, m.Name); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE machines SET deleted_at = ? WHERE id = ?`, nanos(at), id)
		return err
	})
}

// ---- tasks

// CreateTask inserts t as PENDING, or returns the task holding
// t.IdempotencyKey. ErrExists when the id is taken; ErrInvalidArgument.
func (e *Engine) CreateTask(ctx context.Context, t store.Task) (store.Task, bool, error) {
	t, err := fsm.NewTask(t, time.Now())
	if err != nil {
		return store.Task{}, false, err
	}
	var (
		out     store.Task
		created bool
	)
	err = e.writeIf(ctx, func(ctx context.Context, tx *sql.Tx) (bool, error) {
		if t.IdempotencyKey != "" {
			_, old, err := scanTask(stmt(ctx, tx, e.st.taskByKey).QueryRowContext(ctx, t.TeamID, t.IdempotencyKey))
			if err == nil {
				out = old
				// The records about the task not created are dropped.
				recs, err := fsm.CtxAudit(ctx)
				if err == nil {
					if keep := fsm.KeepAudit(recs, map[string]bool{t.ID: true}); len(keep) > 0 {
						_, err = e.appendAudit(ctx, tx, keep)
					}
				}
				return false, err
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return false, err
			}
		}
		h, err := encodeHistory(t.History)
		if err != nil {
			return false, err
		}
		// One statement inserts the task and reads it back; no row: the
		// id is taken (the key was found free above).
		_, stored, err := scanTask(e.cachedTx(tx).QueryRowContext(ctx, sqlCreateTask, insertArgs(&t, h)...))
		if errors.Is(err, sql.ErrNoRows) {
			return false, fmt.Errorf("%w: task %s", store.ErrExists, t.ID)
		} else if err != nil {
			return false, err
		}
		out, created = stored, true
		return true, nil
	})
	if err != nil {
		return store.Task{}, false, err
	}
	return out, created, nil
}

// GetTask returns one task with its History. ErrNotFound.
func (e *Engine) GetTask(ctx context.Context, id string) (store.Task, error) {
	if err := e.check(ctx); err != nil {
		return store.Task{}, err
	}
	_, t, err := loadTask(ctx, e.r, id)
	if err != nil {
		return store.Task{}, e.classify(err)
	}
	return t, nil
}

// ListTasks returns the tasks matching f ordered by CreatedAt then ID.
func (e *Engine) ListTasks(ctx context.Context, f store.TaskFilter) ([]store.Task, error) {
	if err := fsm.CheckFilter(f); err != nil {
		return nil, err
	}
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	q, args := taskQuery(f)
	_, ts, err := queryTasks(ctx, e.r, q, args...)
	return ts, e.classify(err)
}

// taskQuery translates f into ListTasks' clauses after FROM tasks, and
// their arguments. With CompletedAfter the rows come from the partial index
// tasks_completed (finished tasks only) and are sorted afterwards: a recent
// bound selects few rows, where walking tasks_created in ListTasks' order
// would read the whole table.
func taskQuery(f store.TaskFilter) (string, []any) {
	var (
		where []string
		args  []any
	)
	q := ""
	if pendingByCreation(f) { // schema_counts.go
		q = "INDEXED BY tasks_pending_created "
		where = append(where, `status = 'PENDING'`)
	} else if len(f.Statuses) > 0 {
		ss := make([]string, len(f.Statuses))
		for i, s := range f.Statuses {
			ss[i] = string(s)
		}
		where, args = append(where, `status IN (SELECT value FROM json_each(?))`), append(args, jsonList(ss))
	}
	if f.TeamID != "" {
		where, args = append(where, `team_id = ?`), append(args, f.TeamID)
	}
	if f.TeamIDs != nil {
		where, args = append(where, `team_id IN (SELECT value FROM json_each(?))`), append(args, jsonList(f.TeamIDs))
	}
	if f.MachineID != "" {
		where, args = append(where, `machine_id = ?`), append(args, f.MachineID)
	}
	if f.Priority != 0 {
		where, args = append(where, `priority = ?`), append(args, f.Priority)
	}
	if !f.CompletedAfter.IsZero() {
		q = "INDEXED BY tasks_completed "
		where, args = append(where, `completed_at >= ?`), append(args, f.CompletedAfter.UnixNano())
	}
	if len(where) > 0 {
		q += "WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY created_at, id"
	if f.Limit > 0 {
		q += " LIMIT ?"
		args = append(args, f.Limit)
	}
	return q, args
}

// Start moves an ASSIGNED task leased by owner to PROCESSING and appends the
// open attempt a. ErrNotFound; ErrLeaseLost; ErrDuplicateAttempt;
// ErrInvalidArgument.
func (e *Engine) Start(ctx context.Context, id, owner string, a store.Attempt) (store.Task, error) {
	return e.modify(ctx, id, func(t *store.Task) error { return fsm.Start(t, owner, a) })
}

// Heartbeat extends owner's leases on ids to until and reports the ids lost
// (not found, not active, or leased by another) and those whose
// cancellation was asked.
func (e *Engine) Heartbeat(ctx context.Context, owner string, ids []string, until time.Time) (store.Heartbeat, error) {
	if err := fsm.CheckHeartbeat(owner, until); err != nil {
		return store.Heartbeat{}, err
	}
	var hb store.Heartbeat
	err := e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		hb = store.Heartbeat{}
		if len(ids) == 0 {
			return nil
		}
		renew := stmt(ctx, tx, e.st.heartbeat)
		for _, id := range ids {
			var cancel bool
			err := renew.QueryRowContext(ctx, until.UnixNano(), id, owner).Scan(&cancel)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				hb.Lost = append(hb.Lost, id)
			case err != nil:
				return err
			case cancel:
				hb.CancelRequested = append(hb.CancelRequested, id)
			}
		}
		return nil
	})
	if err != nil {
		return store.Heartbeat{}, err
	}
	return hb, nil
}

// Finish closes the current attempt and moves the task to f.Next if f.Owner
// still holds it, checked and written in one transaction. ErrNotFound;
// ErrLeaseLost; ErrInvalidArgument.
func (e *Engine) Finish(ctx context.Context, f store.Finish) (store.Task, error) {
	if err := fsm.CheckFinish(f); err != nil {
		return store.Task{}, err
	}
	return e.modify(ctx, f.ID, func(t *store.Task) error { return fsm.Finish(t, f) })
}

// Cancel cancels a task (see store.Engine). ErrNotFound; ErrNotCancellable.
func (e *Engine) Cancel(ctx context.Context, id string, at time.Time) (store.Task, error) {
	return e.modify(ctx, id, func(t *store.Task) error {
		_, err := fsm.Cancel(t, at)
		return err
	})
}

// Rescue takes back the tasks whose lease expired or whose owner is dead.
// r.OwnerDead is called outside any transaction.
func (e *Engine) Rescue(ctx context.Context, r store.RescueRequest) ([]store.Task, error) {
	if err := fsm.CheckRescue(r); err != nil {
		return nil, err
	}
	if _, err := fsm.CtxAudit(ctx); err != nil {
		return nil, err
	}
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	now := r.Now.UnixNano()
	var dead []string
	if r.OwnerDead != nil {
		rows, err := e.r.QueryContext(ctx, `SELECT DISTINCT lease_owner FROM tasks
			WHERE status IN ('ASSIGNED', 'PROCESSING') AND lease_expires_at > ?`, now)
		if err != nil {
			return nil, e.classify(err)
		}
		var owners []string
		for rows.Next() {
			var o string
			if err := rows.Scan(&o); err != nil {
				rows.Close()
				return nil, e.classify(err)
			}
			owners = append(owners, o)
		}
		if err := rows.Close(); err != nil {
			return nil, e.classify(err)
		}
		for _, o := range owners {
			if r.OwnerDead(o) {
				dead = append(dead, o)
			}
		}
	}
	var out []store.Task
	err := e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		out = nil
		seqs, ts, err := queryTasks(ctx, tx, `WHERE status IN ('ASSIGNED', 'PROCESSING')
			AND (lease_expires_at IS NULL OR lease_expires_at <= ? OR lease_owner IN (SELECT value FROM json_each(?)))
			ORDER BY created_at, id`, now, jsonList(dead))
		if err != nil {
			return err
		}
		for i := range ts {
			t := &ts[i]
			if fsm.Held(t, r.Held) {
				continue
			}
			was, wasOwner := t.Status, t.LeaseOwner
			fsm.Rescue(t, r.Now, fsm.RescueReason(t, r.Now))
			if err := e.saveTask(ctx, tx, seqs[i], was, wasOwner, t); err != nil {
				return err
			}
			out = append(out, *t)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// SetAttemptRemote records where the open attempts of owner's tasks run,
// in one transaction; it returns the ids it did not update.
func (e *Engine) SetAttemptRemote(ctx context.Context, owner string, rs []store.AttemptRemote) ([]string, error) {
	if err := fsm.CheckSetRemote(owner); err != nil {
		return nil, err
	}
	var lost []string
	err := e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		lost = nil
		for _, r := range rs {
			seq, t, err := loadedTask(r.TaskID)(scanTask(stmt(ctx, tx, e.st.loadTask).QueryRowContext(ctx, r.TaskID)))
			if errors.Is(err, store.ErrNotFound) {
				lost = append(lost, r.TaskID)
				continue
			}
			if err != nil {
				return err
			}
			was, wasOwner := t.Status, t.LeaseOwner
			if !fsm.SetRemote(&t, owner, r) {
				lost = append(lost, r.TaskID)
				continue
			}
			if err := e.saveTask(ctx, tx, seq, was, wasOwner, &t); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return lost, nil
}

// NextReady returns the earliest ReadyAt among PENDING tasks; false when
// none is PENDING.
func (e *Engine) NextReady(ctx context.Context) (time.Time, bool, error) {
	if err := e.check(ctx); err != nil {
		return time.Time{}, false, err
	}
	var n sql.NullInt64
	if err := e.r.QueryRowContext(ctx, `SELECT min(ready_at) FROM tasks WHERE status = 'PENDING'`).Scan(&n); err != nil {
		return time.Time{}, false, e.classify(err)
	}
	return fromNanos(n), n.Valid, nil
}

// Depth counts tasks grouped by status, priority, team and machine, in the
// order of fsm.SortDepth, from the task_counts table (migration 13): its
// cost follows the number of groups, not of tasks.
func (e *Engine) Depth(ctx context.Context) ([]store.DepthRow, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	rows, err := e.r.QueryContext(ctx, sqlDepth) // schema_counts.go
	if err != nil {
		return nil, e.classify(err)
	}
	defer rows.Close()
	var out []store.DepthRow
	for rows.Next() {
		var (
			d store.DepthRow
			s string
		)
		if err := rows.Scan(&s, &d.Priority, &d.TeamID, &d.MachineID, &d.Team, &d.Machine, &d.Count); err != nil {
			return nil, e.classify(err)
		}
		d.Status = store.Status(s)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, e.classify(err)
	}
	fsm.SortDepth(out)
	return out, nil
}

// Close releases the engine; later calls, Close included, return ErrClosed.
func (e *Engine) Close() error {
	if !e.closed.CompareAndSwap(false, true) {
		return fmt.Errorf("%w: %s", store.ErrClosed, e.path)
	}
	return errors.Join(e.st.close(), e.r.Close(), e.w.Close(), e.gate.close())
}
