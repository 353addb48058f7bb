// Package rediacc runs shell tasks on fleets of machines over SSH: queued
// durably, scheduled by priority without starving the low levels, retried
// with backoff, and alerted on when they finally fail.
//
// A task is a shell command for a registered machine, with a priority from 1
// (critical: run now) to 5 (whenever there is room). A Client submits tasks to
// its Store (an embedded SQLite file by default) and, in Run, works as a
// worker: it claims tasks by priority (FIFO within a level, aging so that no
// level starves, one slot per machine held back for priority 1), runs them
// in-process over SSH (golang.org/x/crypto/ssh, host keys verified against
// known_hosts), retries failed attempts with github.com/cenkalti/backoff, and
// rescues the tasks of a worker that died. Many workers, in one process or
// several, may share one store.
//
// Quick start:
//
//	ctx := rediacc.WithActor(context.Background(), "ops") // every call names its actor
//	c, err := rediacc.New(ctx, rediacc.Config{DataDir: "/var/lib/rediacc"})
//	if err != nil { … }
//	defer c.Close()
//	_, err = c.AddMachine(ctx, rediacc.Machine{
//		Name: "prod-01", Host: "10.0.0.5", User: "deploy",
//		IdentityFile: "/etc/rediacc/id_ed25519", // host key checked in ~/.ssh/known_hosts
//	})
//	task, err := c.Submit(ctx, rediacc.TaskSpec{
//		Machine: "prod-01", Priority: rediacc.Critical,
//		Command: "systemctl restart webserver",
//		Retry:   rediacc.RetryPolicy{RetryCount: 3, RetryDelay: 30 * time.Second},
//	})
//	go c.Run(ctx) // the worker loop; or run workers elsewhere on the same store
//	done, err := c.Wait(ctx, task.ID)
//	fmt.Println(done.Status, *done.ExitCode, done.Stdout)
package rediacc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rediacc/rediacc/internal/store"
	rssh "github.com/rediacc/rediacc/ssh"
)

// Clock tells the time. Inject one (Config.Clock) to test retry delays and
// aging without sleeping; the idea is backoff's Clock.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Defaults of Config's zero fields.
const (
	DefaultConcurrency     = 16
	DefaultPerMachineLimit = 8 // below OpenSSH's MaxSessions of 10
	DefaultLeaseDuration   = 30 * time.Second
	DefaultPollInterval    = 500 * time.Millisecond
	DefaultTimeout         = time.Hour
	DefaultOutputLimit     = 1 << 20
)

// Config configures a Client. Every zero field has a documented default.
type Config struct {
	// Store holds the queue. Default: the store named by StoreURL, else the
	// SQLite file rediacc.db in DataDir. The Client closes it on Close.
	Store *Store
	// StoreURL names the store when Store is nil: "postgres://user@host/db"
	// (OpenPostgres: workers on many hosts share it), "sqlite:PATH" or
	// "memory" (see OpenStore). A store named here counts as given (Store):
	// DataDir has no default then. Default "": the SQLite file in DataDir.
	StoreURL string
	// DataDir is where the default store, the local vault and the log
	// archive live. Default, when Store is nil: $REDIACC_HOME, else
	// ~/.rediacc; with a Store and no DataDir, the client writes no file
	// (see ArchiveDir). Created 0700 when missing; it must be owned by this
	// process's user, not be a symbolic link and not be writable by group
	// or others, nor may any directory on the way to it (unless sticky, as
	// /tmp) be writable by others or owned by another user than root (New
	// returns ErrUnsafePath saying how to fix it); files in it are opened
	// without following links. A worker keeps there, in spool/, the results
	// its store could not take yet (files 0600), so that they survive a
	// restart; without a DataDir such results are kept in memory only.
	DataDir string
	// Logger receives structured logs; every record about a task carries
	// task_id, machine, priority and attempt. Default: slog.Default().
	Logger *slog.Logger
	// Clock is the time source of the queue (claims, retry delays, aging,
	// leases). Default: the system clock.
	Clock Clock
	// DefaultActor is the user that operations whose context names none
	// (WithActor) run as, for a program that acts for one user only (a
	// single-tenant service, a script). An actor set with WithActor always
	// wins. Default "": every operation must name its actor (ErrNoActor).
	// Like WithActor's user, it is trusted as given: see docs/ROLES.md.
	DefaultActor string

	// Concurrency bounds the tasks one worker (Run) runs at once. Default 16.
	Concurrency int
	// PerMachineLimit bounds the tasks running at once on one machine,
	// counted across every worker sharing the store. Default 8, below
	// OpenSSH's MaxSessions of 10.
	PerMachineLimit int
	// NoCriticalReserve turns off the slot per machine held back for
	// priority-1 tasks (lower priorities may then fill PerMachineLimit).
	NoCriticalReserve bool
	// AgingInterval raises a waiting task's effective priority one level
	// per interval of waiting. Default 5m; negative disables aging.
	AgingInterval time.Duration
	// LeaseDuration is how long a claimed task stays with its worker without
	// a heartbeat; a worker renews it every LeaseDuration/3. A task whose
	// worker died is rescued when its lease runs out, or at once when the
	// worker was a process on this host that no longer exists; before it
	// runs again, its earlier copy is stopped on the machine or its result
	// read there (see "Execution guarantee" in the README). A worker never
	// rescues a task it still holds. Default 30s; at least MinLeaseDuration
	// (New returns ErrInvalidArgument).
	LeaseDuration time.Duration
	// PollInterval is how often a worker looks for tasks submitted by other
	// processes. In-process submits wake it at once. Default 500ms.
	PollInterval time.Duration
	// DefaultTimeout bounds an attempt whose task has no Timeout.
	// Default 1h.
	DefaultTimeout time.Duration
	// OutputLimit caps the stdout and the stderr kept per attempt, in bytes.
	// Default 1 MiB.
	OutputLimit int
	// ShutdownGrace is how long running tasks may go on finishing when Run's
	// context ends, before they are interrupted and requeued (without
	// using up an attempt). Default 0: interrupt at once.
	ShutdownGrace time.Duration

	// SSH tunes connections (timeouts, keepalives, pool sizes).
	SSH rssh.Config
	// Vault holds the teams' secrets. Default: the local encrypted vault in
	// DataDir/vault (its encrypted files kept in the store itself when the
	// store is PostgreSQL, so that workers on every host read them: copy
	// the key file to each host), unlocked by the age identity file DataDir/vault.key
	// (created 0600 on first use). The Client closes it on Close.
	Vault Vault
	// Alerter is told when a task with FailureAlert finally fails, of
	// AlertRules crossed and of unhealthy machines, rate limited by
	// AlertRateWindow, through the alert outbox in the store (see Alerter):
	// each of its alerters (a FanoutAlerter's, split) is an endpoint that
	// every alert is delivered to, at least once, retried until
	// AlertMaxAge. Default: a LogAlerter on Logger. When it has a Close(ctx)
	// error method (WebhookAlerter, FanoutAlerter), Close closes it.
	Alerter Alerter
	// AllowedKeyPaths lists the files, or directories (every file below
	// them), that an actor who is not an owner may name as a machine's
	// IdentityFile, imported or not: this process reads the file for them.
	// Default: none (team admins then import keys from paths an owner
	// allowed, or ask an owner to add the machine). "/" allows any path.
	// Owners may always name any path. See docs/ROLES.md.
	AllowedKeyPaths []string
	// AllowedKnownHostsPaths lists the files or directories a non-owner
	// may name as a machine's KnownHostsFile (read by every worker,
	// appended to under HostKeyAcceptNew). Default: only the default file,
	// ~/.ssh/known_hosts of this process's user. "/" allows any path.
	AllowedKnownHostsPaths []string
	// KeyPassphrase returns the passphrase of a machine's identity file, or
	// nil when it has none. Default: none.
	KeyPassphrase func(ctx context.Context, m Machine) ([]byte, error)
	// Output, when set, receives each attempt's stdout and stderr as they
	// arrive (stream "stdout" or "stderr"). It must not block for long.
	Output func(taskID string, attempt int, stream string, p []byte)
	// WorkerID names this client's worker in leases and attempts.
	// Default: "host/pid/random".
	WorkerID string

	// Monitoring (metrics.go, alert.go, stats.go).

	// AlertRules are queue thresholds a running worker checks every
	// AlertInterval, raising AlertQueueDepth and AlertQueueAge alerts
	// through Alerter. Default: none.
	AlertRules []AlertRule
	// AlertInterval is how often a worker checks AlertRules.
	// Default DefaultAlertInterval (1 min).
	AlertInterval time.Duration
	// AlertRateWindow: after an alert for a condition (its kind, team,
	// machine, priority and task) is stored for Alerter, repeats of it are
	// held back and counted until this much time has passed (on Clock).
	// The decision is the store's, so it holds across restarts and workers.
	// Failures of different tasks are different conditions. Default
	// DefaultAlertRateWindow (5 min).
	AlertRateWindow time.Duration
	// AlertDrainTimeout bounds how long Close goes on delivering the alert
	// outbox's due alerts; those left stay in the store for the next
	// worker (none is dropped). Default DefaultAlertDrainTimeout (10 s).
	AlertDrainTimeout time.Duration
	// AlertMaxAge is how long an undelivered alert is retried (from its
	// Time, on Clock), and how long an endpoint no worker serves any more
	// keeps its deliveries; then they are given up (AlertExpired).
	// Default DefaultAlertMaxAge (24 h).
	AlertMaxAge time.Duration
	// AlertConcurrency bounds the deliveries this client attempts at once
	// per alert endpoint. Default DefaultAlertConcurrency (8).
	AlertConcurrency int
	// ScrapeTimeout bounds the store queries of one scrape of Collector
	// and of one /healthz check. Default DefaultScrapeTimeout (5 s).
	ScrapeTimeout time.Duration

	// Health, placement and the log archive (health.go, placement.go,
	// archive.go).

	// Health configures the workers' health probes of machines, how a
	// machine is judged busy (averages with hysteresis) and how long a
	// busy machine may hold work back (see HealthConfig). Every zero field
	// means its default; Health: HealthConfig{Interval: -1} turns the
	// worker's probes off.
	Health HealthConfig
	// HealthInterval is Health.Interval under its old name, read when
	// Health.Interval is zero.
	//
	// Deprecated: use Health.Interval.
	HealthInterval time.Duration
	// HealthThresholds is Health.Thresholds under its old name, read when
	// Health.Thresholds is zero.
	//
	// Deprecated: use Health.Thresholds.
	HealthThresholds HealthThresholds
	// TeamWeights are the teams' shares of the workers' claims within a
	// priority level, by team name: a team of weight 3 gets three claims
	// for every one of a team of weight 1 while both have work queued.
	// Teams not listed have weight 1 (equal shares); weights are 1..1000.
	// Set the same weights on every worker sharing a store (each claim
	// uses its worker's). See Client.Run for the scheduling order.
	TeamWeights map[string]int
	// ArchiveDir is the log archive's directory: finished tasks' records
	// and old audit records moved out of the store by Prune (files 0600;
	// the directory is checked like DataDir). Default: DataDir/archive.
	// With neither set (a Store given without DataDir) the client writes
	// no file: a NewMemoryStore client keeps its archive in memory; any
	// other has none, and Prune returns ErrNoArchive. An ArchiveDir holding
	// another store's archive, or one of unknown origin, makes New return
	// ErrArchiveMismatch; the archive is never moved or changed. A
	// PostgreSQL store keeps the archive in its database instead (every
	// host reads it): ArchiveDir then holds only the audit checkpoints.
	ArchiveDir string
	// ArchiveRetention is how long Prune keeps archived task records: a
	// task segment is removed once its whole day is older. 0 keeps them
	// forever. Archived audit records are always kept.
	ArchiveRetention time.Duration

	// The audit trail's key and checkpoints (auditkey.go, docs/AUDIT.md).

	// AuditKeyFile is the audit keyring file: the HMAC-SHA256 keys that
	// seal audit records, kept out of the store (one JSON line per key,
	// 0600). Created with a new key when missing. Default:
	// DataDir/audit.key. A Store given without DataDir (and without
	// AuditKeyring) gets a key for this process only: fine for a memory
	// store; for a durable one New logs a warning, as later processes
	// cannot authenticate those records. Keep the file, or a copy, where
	// whoever can write the store cannot read it.
	AuditKeyFile string
	// AuditKeyring, when set, is the keyring's content (the file form of
	// AuditKeyFile), for keys kept in a secret manager such as HashiCorp
	// Vault; it overrides AuditKeyFile and is never written anywhere.
	AuditKeyring []byte
	// AuditCheckpointInterval is how often a running worker seals a
	// checkpoint of the audit trail's head into
	// ArchiveDir/audit-checkpoints.jsonl (when there is an ArchiveDir) and
	// the log, when the head moved.
	// Prune and Close write one too. Default
	// DefaultAuditCheckpointInterval (1 min); negative turns the worker's
	// periodic checkpoints off.
	AuditCheckpointInterval time.Duration

	// KeyRotation is the SSH key rotation policy (keys.go): the age past
	// which keys are overdue, and whether workers rotate them. Default:
	// off (ages are shown, nothing is flagged).
	KeyRotation KeyRotationPolicy
}

// Client submits, inspects and runs tasks. It is safe for concurrent use.
type Client struct {
	cfg     Config
	engine  store.Engine
	st      *Store
	log     *slog.Logger
	clock   Clock
	pool    *rssh.Pool
	alerter Alerter
	id      string

	mu       sync.Mutex
	closed   bool
	changed  chan struct{} // closed and replaced on every local state change
	wake     chan struct{} // a submit nudges the worker
	running  map[string]*runSlot
	remotes  map[string]store.AttemptRemote // noted by runs, recorded by the next heartbeat (execution.go)
	spool    *resultSpool                   // results not recorded yet (spool.go)
	runCount int
	runStop  context.CancelFunc // stops the running worker (Close)
	runDone  chan struct{}      // closed when it has returned

	vaultMu sync.Mutex
	vlt     Vault

	access        store.Access
	ownerKnown    atomic.Bool   // the store has an owner
	login         *store.Login  // the database login and its user (PostgreSQL; nil for other engines): login.go
	workerActor   string        // the actor Run works as (set before tasks start)
	startMachines startMachines // the machines tasks started on (taskstart.go)

	metrics *metrics    // worker counters (metrics.go)
	ob      outboxState // the alert outbox (outbox.go)

	hstate  healthState  // busy machines for claims (health.go)
	idleWhy string       // why RunUntilEmpty last said it waits (wait.go)
	cstate  clusterState // registry, leadership, probe share (cluster.go)
	arch    archiveState // the log archive, opened on first use (archive.go)

	akey auditKeyState // the audit keyring and checkpoints (auditkey.go)

	// runCmd, when set (tests and benchmarks only: SetRunnerForTest), runs
	// attempts instead of the SSH pool.
	runCmd func(ctx context.Context, t rssh.Target, cmd rssh.Command) (*rssh.Result, error)
	// attemptHook, when set (tests only), is called by the goroutine of a
	// claimed task with step "executed" when its attempt has ended and
	// "released" once it gave up its entry in running.
	attemptHook func(taskID, step string)

	ca    caClientState // SSH CA keys, certificate serials and their audit (sshca_sign.go)
	sched scheduleState // firing schedules (schedule_fire.go)
}

// DefaultDataDir returns $REDIACC_HOME, else ~/.rediacc.
func DefaultDataDir() string {
	if d := os.Getenv("REDIACC_HOME"); d != "" {
		return d
	}
	return filepath.Join(homeDir(), ".rediacc")
}

// New opens a Client. It returns ErrCorruptStore when the default store file
// is not a rediacc store, ErrAuditKeyring when the audit keyring cannot be
// read (Config.AuditKeyFile), or the error that kept DataDir from being
// created.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.PerMachineLimit <= 0 {
		cfg.PerMachineLimit = DefaultPerMachineLimit
	}
	if cfg.AgingInterval == 0 {
		cfg.AgingInterval = DefaultAgingInterval
	}
	if cfg.LeaseDuration <= 0 {
		cfg.LeaseDuration = DefaultLeaseDuration
	} else if cfg.LeaseDuration < MinLeaseDuration {
		return nil, fmt.Errorf("%w: Config.LeaseDuration %s is shorter than MinLeaseDuration (%s): leases would run out between heartbeats", ErrInvalidArgument, cfg.LeaseDuration, MinLeaseDuration)
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.DefaultTimeout <= 0 {
		cfg.DefaultTimeout = DefaultTimeout
	}
	if cfg.OutputLimit <= 0 {
		cfg.OutputLimit = DefaultOutputLimit
	}
	if cfg.Alerter == nil {
		cfg.Alerter = &LogAlerter{Logger: cfg.Logger}
	}
	if cfg.WorkerID == "" {
		cfg.WorkerID = newWorkerID()
	}
	if cfg.DefaultActor != "" {
		if err := validateUser(cfg.DefaultActor); err != nil {
			return nil, fmt.Errorf("rediacc: Config.DefaultActor: %w", err)
		}
	}
	if err := alertingDefaults(&cfg); err != nil { // monitoring
		return nil, err
	}
	if err := checkTeamWeights(cfg.TeamWeights); err != nil { // fair.go
		return nil, err
	}
	if cfg.ScrapeTimeout <= 0 {
		cfg.ScrapeTimeout = DefaultScrapeTimeout
	}
	if cfg.AuditCheckpointInterval == 0 {
		cfg.AuditCheckpointInterval = DefaultAuditCheckpointInterval
	}
	st := cfg.Store
	built := false
	if st == nil && cfg.StoreURL != "" {
		var err error
		if st, err = OpenStore(ctx, cfg.StoreURL); err != nil {
			return nil, err
		}
		opened := st
		defer func() {
			if !built {
				_ = opened.e.Close() // New failed after opening the store
			}
		}()
	}
	if st == nil && cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir()
	}
	if err := absPaths(&cfg); err != nil { // datadir.go: later writes never depend on the working directory
		return nil, err
	}
	var undo newUndo // datadir.go: what New created, removed again if it fails
	defer func() {
		if !built {
			undo.run()
		}
	}()
	if cfg.DataDir != "" {
		undo.noteDir(cfg.DataDir)
		if err := openDataDir(&cfg); err != nil { // datadir.go
			return nil, err
		}
		undo.noteFiles(filepath.Join(cfg.DataDir, auditKeyFileName))
	}
	archiveDefaults(&cfg) // archive.go
	if st == nil {
		path := filepath.Join(cfg.DataDir, "rediacc.db")
		if err := newStoreBesideArchive(path, cfg.ArchiveDir); err != nil { // archive.go
			return nil, err
		}
		undo.noteFiles(path, path+"-wal", path+"-shm", path+"-journal", path+"-lock")
		var err error
		st, err = OpenSQLite(ctx, path)
		if err != nil {
			return nil, err
		}
	}
	healthDefaults(&cfg) // health.go
	sshCfg := cfg.SSH
	if sshCfg.Logger == nil {
		sshCfg.Logger = cfg.Logger
	}
	access, ok := st.e.(store.Access)
	if !ok {
		return nil, fmt.Errorf("rediacc: store %s keeps no teams or audit trail", st)
	}
	c := &Client{
		access: access,
		cfg:    cfg, engine: st.e, st: st, log: cfg.Logger, clock: cfg.Clock,
		pool: rssh.NewPool(sshCfg), alerter: cfg.Alerter, id: cfg.WorkerID,
		changed: make(chan struct{}), wake: make(chan struct{}, 1),
		running: map[string]*runSlot{},
		remotes: map[string]store.AttemptRemote{},
		spool:   newResultSpool(cfg.DataDir),
		metrics: newMetrics(),
	}
	c.sched.fires = newScheduleFires()
	if err := c.initOutbox(st.e); err != nil { // outbox.go
		if cfg.Store == nil {
			_ = st.e.Close()
		}
		_ = c.pool.Close()
		return nil, err
	}
	if cfg.ArchiveDir != "" {
		if _, err := c.checkArchive(ctx); err != nil { // archive.go: never another store's archive
			if cfg.Store == nil {
				_ = st.e.Close()
			}
			_ = c.pool.Close()
			return nil, err
		}
	}
	if err := c.readLogin(ctx); err != nil { // login.go
		if cfg.Store == nil {
			_ = st.e.Close()
		}
		_ = c.pool.Close()
		return nil, err
	}
	if err := c.openAuditKeyring(ctx); err != nil { // auditkey.go
		if cfg.Store == nil {
			_ = st.e.Close()
		}
		_ = c.pool.Close()
		return nil, err
	}
	built = true
	return c, nil
}

// newWorkerID returns "host/pid/random": the host and pid let a worker on the
// same host tell that a lease's owner process is gone.
func newWorkerID() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// WorkerID returns the id this client's worker uses in leases and attempts.
func (c *Client) WorkerID() string { return c.id }

// Store returns the client's store.
func (c *Client) Store() *Store { return c.st }

// Close drains the alert outbox (delivering due alerts for up to
// Config.AlertDrainTimeout; the rest stay stored for the next worker),
// closes the Alerter when it has a Close(ctx) error method, seals the log archive's open
// segments, stops the SSH pool and closes the store. A worker still running
// (Run) is stopped first, as if its context had ended, and Close waits for
// it to return. Later calls return ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.closed = true
	stop, done := c.runStop, c.runDone
	c.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	c.vaultMu.Lock()
	var verr error
	if c.vlt != nil {
		verr = c.vlt.Close()
	}
	c.vaultMu.Unlock()
	c.ca.audit.flush(c, context.Background()) // the signed certificates' last window (sshca_sign.go)
	// The audit trail's head this client leaves, checkpointed (auditkey.go).
	c.checkpointQuietly(context.Background(), "close")
	aerr := c.closeAlerter()   // drains the alert outbox (alert.go)
	arerr := c.closeArchives() // seals open archive segments (archive.go)
	return errors.Join(aerr, arerr, c.pool.Close(), c.engine.Close(), verr)
}

func (c *Client) notify() {
	c.mu.Lock()
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

func (c *Client) changes() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// liveWriter forwards an attempt's output to Config.Output.
type liveWriter struct {
	f       func(taskID string, attempt int, stream string, p []byte)
	id      string
	attempt int
	stream  string
}

func (w liveWriter) Write(p []byte) (int, error) {
	w.f(w.id, w.attempt, w.stream, p)
	return len(p), nil
}

var _ io.Writer = liveWriter{}

// trimErr keeps error strings in the queue short and single-line.
func trimErr(err error) string {
	if err == nil {
		return ""
	}
	s := strings.TrimSpace(err.Error())
	if len(s) > 4096 {
		s = s[:4096] + "…"
	}
	return s
}
