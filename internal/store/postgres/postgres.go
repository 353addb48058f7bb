// Package postgres is the queue store engine that workers on many hosts
// share: one PostgreSQL database (or one schema of it), through
// github.com/jackc/pgx/v5 and its pgxpool.
//
// It keeps the contract of internal/store (the conformance suite in
// internal/store/storetest runs unchanged against it) under real
// concurrency between processes and hosts:
//
//   - Every state change is one READ COMMITTED transaction that locks the
//     rows it changes; transactions that deadlock or fail to serialize are
//     retried whole.
//   - Claim runs internal/sched's rule over the tasks_pending index under
//     the store's claim lock (the fairness tags are a global clock every
//     claim advances), so the running counts it reads are exact: the
//     per-machine limit and the slot held back for priority 1 hold across
//     every worker; the task rows it reads are locked FOR UPDATE SKIP
//     LOCKED. See claim.go.
//   - Audit records are chained onto the head row (audit_head), locked FOR
//     UPDATE by the appending transaction just before commit, so writers in
//     every process extend one linear chain. The audit table is append-only
//     by a trigger (schema.go).
//   - Creating or requeueing a task sends a NOTIFY on the store's channel;
//     Wakeups delivers them to idle workers (cluster.go), which still poll
//     as a fallback.
//   - Leader election (Lead) uses a session advisory lock on a dedicated
//     connection; the workers registry is a table (cluster.go).
//
// Open applies the schema migrations (schema.go) with jackc/tern's migrate
// package: written by pgx's author for pgx connections, it runs each
// migration in a transaction with its version update and holds an
// advisory lock while migrating, so processes opening a new store at once
// migrate it once; a store whose schema is newer than this build is refused
// with store.ErrSchemaTooNew.
//
// Several stores may share one database in different schemas: the DSN's
// search_path chooses the schema (created when missing), and advisory lock
// keys and the notification channel are derived from it.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/tern/v2/migrate"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

// versionTable holds the schema version (tern's table, in the store's schema).
const versionTable = "rediacc_schema_version"

// Engine is the PostgreSQL store.Engine and store.Access. Open it with Open.
type Engine struct {
	fsm.AuditSeal // seals audit records (SetAuditKeyring)

	pool   *pgxpool.Pool
	desc   string // DSN without password, for messages
	schema string // current_schema() of the store's connections
	closed atomic.Bool

	listenOnce sync.Once
	listen     *listener // LISTEN connection (cluster.go), started by Wakeups
	leadMu     sync.Mutex
	lead       *leader // the leader's lock connection (cluster.go)
}

var (
	_ store.Engine  = (*Engine)(nil)
	_ store.Access  = (*Engine)(nil)
	_ store.Cluster = (*Engine)(nil)
	_ store.Outbox  = (*Engine)(nil) // outbox.go
)

// Open connects to the database named by dsn (a postgres:// URL or a
// key=value connection string, as pgx accepts; pool settings such as
// pool_max_conns are honoured), creates the schema named by the DSN's
// search_path when missing, and brings the store's tables to this build's
// version. Errors: store.ErrInvalidArgument (unparsable DSN),
// store.ErrSchemaTooNew, store.ErrCorrupt (the schema holds tables that are
// not a rediacc store), or the connection error.
func Open(ctx context.Context, dsn string) (*Engine, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%w: postgres store: %v", store.ErrInvalidArgument, err)
	}
	desc := redactDSN(dsn)
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "rediacc"
	}
	if cfg.MaxConns < 8 && !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns = 8
	}
	e := &Engine{desc: desc}
	if err := e.prepareSchema(ctx, cfg.ConnConfig); err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres store %s: %w", desc, err)
	}
	e.pool = pool
	if err := pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&e.schema); err != nil {
		pool.Close()
		if refusedLogin(err) {
			return nil, e.loginError(err)
		}
		return nil, fmt.Errorf("postgres store %s: %w", desc, err)
	}
	return e, nil
}

// redactDSN drops the password of a URL DSN (key=value DSNs are reduced to
// their host and database).
func redactDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		return u.Redacted()
	}
	if cfg, err := pgconn.ParseConfig(dsn); err == nil {
		return fmt.Sprintf("host=%s port=%d dbname=%s user=%s", cfg.Host, cfg.Port, cfg.Database, cfg.User)
	}
	return "postgres"
}

// prepareSchema creates the DSN's schema when missing and migrates it, on a
// connection of its own.
func (e *Engine) prepareSchema(ctx context.Context, cc *pgx.ConnConfig) error {
	conn, err := pgx.ConnectConfig(ctx, cc)
	if refusedLogin(err) { // authfail.go
		return e.loginError(err)
	}
	if err != nil {
		return fmt.Errorf("postgres store %s: %w", e.desc, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var schema *string
	if err := conn.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return fmt.Errorf("postgres store %s: %w", e.desc, err)
	}
	if schema == nil {
		// search_path names a schema that does not exist yet: create the
		// first one it names.
		var sp string
		if err := conn.QueryRow(ctx, `SHOW search_path`).Scan(&sp); err != nil {
			return fmt.Errorf("postgres store %s: %w", e.desc, err)
		}
		name := strings.Trim(strings.TrimSpace(strings.Split(sp, ",")[0]), `"`)
		if name == "" || name == "$user" {
			return fmt.Errorf("%w: postgres store %s: search_path %q names no schema to create", store.ErrInvalidArgument, e.desc, sp)
		}
		// IF NOT EXISTS does not make two creators at once safe (the
		// loser gets a unique violation): a violation means another
		// process created it.
		var pe *pgconn.PgError
		if _, err := conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{name}.Sanitize()); err != nil &&
			!(errors.As(err, &pe) && pe.Code == "23505") {
			return fmt.Errorf("postgres store %s: creating schema %s: %w", e.desc, name, err)
		}
		// This session resolved search_path before the schema existed
		// (and, when another process created it, may not have seen the
		// catalog change yet): setting search_path again makes it resolve
		// anew, so that the migrations create their tables in the schema.
		if _, err := conn.Exec(ctx, `SELECT set_config('search_path', current_setting('search_path'), false)`); err != nil {
			return fmt.Errorf("postgres store %s: %w", e.desc, err)
		}
		if err := conn.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
			return fmt.Errorf("postgres store %s: %w", e.desc, err)
		}
		if schema == nil || *schema != name {
			return fmt.Errorf("postgres store %s: schema %s was created but search_path %q does not select it; check the schema's privileges (CREATE and USAGE for this login)", e.desc, name, sp)
		}
	}
	if err := e.probe(ctx, conn, *schema); err != nil {
		return err
	}
	m, err := migrate.NewMigrator(ctx, conn, versionTable)
	if err != nil {
		return fmt.Errorf("postgres store %s: schema version table: %w", e.desc, err)
	}
	for i, sql := range migrations {
		m.AppendMigration(fmt.Sprintf("rediacc %d", i+1), sql, "")
	}
	v, err := m.GetCurrentVersion(ctx)
	if err != nil {
		return fmt.Errorf("postgres store %s: reading the schema version: %w", e.desc, err)
	}
	if int(v) > len(migrations) {
		return schemaTooNew(e.desc, *schema, int(v))
	}
	if err := m.Migrate(ctx); err != nil {
		var bad migrate.BadVersionError
		if errors.As(err, &bad) {
			// Another process of a newer build migrated meanwhile.
			if v, verr := m.GetCurrentVersion(ctx); verr == nil && int(v) > len(migrations) {
				return schemaTooNew(e.desc, *schema, int(v))
			}
		}
		return fmt.Errorf("postgres store %s: migrating schema %s: %w", e.desc, *schema, err)
	}
	return nil
}

func schemaTooNew(desc, schema string, v int) error {
	return fmt.Errorf("%w: postgres store %s (schema %s) has schema version %d, this build knows up to %d; upgrade rediacc",
		store.ErrSchemaTooNew, desc, schema, v, len(migrations))
}

// probe refuses a schema that holds tables but no rediacc version table.
func (e *Engine) probe(ctx context.Context, conn *pgx.Conn, schema string) error {
	var tables []string
	rows, err := conn.Query(ctx, `SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = $1 ORDER BY tablename`, schema)
	if err != nil {
		return fmt.Errorf("postgres store %s: %w", e.desc, err)
	}
	tables, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("postgres store %s: %w", e.desc, err)
	}
	if len(tables) > 0 && !containsStr(tables, versionTable) {
		if len(tables) > 8 {
			tables = append(tables[:8], "…")
		}
		return fmt.Errorf("%w: postgres store %s: schema %s holds tables (%s) but is not a rediacc store; choose another schema (search_path) or database",
			store.ErrCorrupt, e.desc, schema, strings.Join(tables, ", "))
	}
	return nil
}

func containsStr(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// SchemaVersion is the schema version this build writes.
func SchemaVersion() int { return len(migrations) }

// Schema returns the PostgreSQL schema holding the store.
func (e *Engine) Schema() string { return e.schema }

// String names the store (its DSN without password).
func (e *Engine) String() string { return e.desc }

// Pool returns the engine's connection pool, for code built on this engine
// in internal/ (tests, later store features). Closing the engine closes it.
func (e *Engine) Pool() *pgxpool.Pool { return e.pool }

// lockKey is the advisory lock key of (kind, name) in this store's schema:
// stores in different schemas of one database never share a key.
func (e *Engine) lockKey(kind, name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("rediacc\x00"))
	h.Write([]byte(e.schema))
	h.Write([]byte{0})
	h.Write([]byte(kind))
	h.Write([]byte{0})
	h.Write([]byte(name))
	return int64(h.Sum64())
}

func (e *Engine) check(ctx context.Context) error {
	if e.closed.Load() {
		return fmt.Errorf("%w: %s", store.ErrClosed, e.desc)
	}
	return ctx.Err()
}

// classify turns driver errors into store errors.
func (e *Engine) classify(err error) error {
	if err == nil {
		return nil
	}
	if e.closed.Load() && strings.Contains(err.Error(), "closed pool") {
		return fmt.Errorf("%w: %s", store.ErrClosed, e.desc)
	}
	if refusedLogin(err) { // a pooled connection's login refused later (authfail.go)
		return e.loginError(err)
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "23505": // unique_violation
			return fmt.Errorf("%w: %s (%s)", store.ErrExists, pe.Message, pe.ConstraintName)
		case "42501": // insufficient_privilege: a privilege, or the audit actor rule (login.go)
			msg := pe.Message
			if pe.Hint != "" {
				msg += " (" + pe.Hint + ")"
			}
			return fmt.Errorf("%w: %s", store.ErrForbidden, msg)
		case "22P02", "23514", "22003", "22021", "22P05", "54000":
			// invalid text, check violation, out of range, bad encoding
			// (text holding NUL or invalid UTF-8), too large
			return fmt.Errorf("%w: %s", store.ErrInvalidArgument, pe.Message)
		}
	}
	return err
}

// retryable reports whether a transaction failed only because of another
// one (deadlock, serialization failure) and may be run again.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

// write runs fn in one transaction and, when fn returns nil, enqueues the
// alerts (store.WithAlerts) and appends the audit records ctx carries
// (store.WithAudit) in the same transaction and commits.
func (e *Engine) write(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return e.writeIf(ctx, func(tx pgx.Tx) (bool, error) { return true, fn(tx) })
}

// writeIf is write for a change that may turn out to be no change: the
// audit records are appended only when fn returns true.
func (e *Engine) writeIf(ctx context.Context, fn func(tx pgx.Tx) (bool, error)) error {
	recs, err := fsm.CtxAudit(ctx)
	if err != nil {
		return err
	}
	if _, err := fsm.CtxAlerts(ctx); err != nil {
		return err
	}
	return e.tx(ctx, recs, fn)
}

// maxTries bounds the runs of a transaction that keeps deadlocking.
const maxTries = 8

// tx runs fn in one READ COMMITTED transaction, after evaluating the guard
// conditions ctx carries (store.WithGuard, guard.go) in it, enqueues the
// alerts ctx carries and appends recs when fn returns true and no error,
// and commits; on error nothing is written. A transaction aborted by a
// deadlock or a serialization failure is run again (fn must start from
// scratch each time).
func (e *Engine) tx(ctx context.Context, recs []audit.Record, fn func(tx pgx.Tx) (bool, error)) error {
	conds, err := fsm.CtxGuard(ctx)
	if err != nil {
		return err
	}
	for try := 1; ; try++ {
		if err := e.check(ctx); err != nil {
			return err
		}
		err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
			if err := guard(ctx, tx, conds); err != nil {
				return err
			}
			changed, err := fn(tx)
			if alerts := store.AlertsFrom(ctx); err == nil && changed && len(alerts) > 0 {
				err = e.enqueueAlerts(ctx, tx, alerts) // the change's alerts (outbox.go)
			}
			if err == nil && changed && len(recs) > 0 {
				_, err = e.appendAudit(ctx, tx, recs)
			}
			return err
		})
		if err != nil && retryable(err) && try < maxTries {
			select {
			case <-time.After(time.Duration(rand.Int64N(int64(try) * int64(5*time.Millisecond)))):
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		return e.classify(err)
	}
}

// Close releases the engine: the leader's lock connection (leadership
// ends), the listener and the pool. Later calls, Close included, return
// store.ErrClosed.
func (e *Engine) Close() error {
	if !e.closed.CompareAndSwap(false, true) {
		return fmt.Errorf("%w: %s", store.ErrClosed, e.desc)
	}
	e.closeCluster()
	e.pool.Close()
	return nil
}
