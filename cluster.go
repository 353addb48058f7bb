package rediacc

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/postgres"
)

// Workers on many hosts (a PostgreSQL store): the store wakes idle workers
// through LISTEN/NOTIFY, keeps a registry of the running workers, and
// elects one leader among them for the periodic duties (rescuing the tasks
// of dead workers, threshold alerts, removing stale registry rows); health
// probes are spread over the registered workers. With the SQLite or memory
// store every worker does its duties itself, as before.

// OpenPostgres opens the PostgreSQL store named by dsn, a postgres:// URL
// or a key=value connection string as github.com/jackc/pgx/v5 accepts them
// (pool settings such as pool_max_conns included). The DSN's search_path
// chooses the schema, created when missing, so that several stores may
// share one database. Open creates or migrates the schema (each migration
// in a transaction, under an advisory lock: processes opening a new store
// at once migrate it once). Any number of workers on any number of hosts
// may share one store.
//
// Errors: ErrInvalidArgument (unparsable DSN), ErrCorruptStore (the schema
// is newer than this build, or holds tables that are not a rediacc store),
// or the connection error.
func OpenPostgres(ctx context.Context, dsn string) (*Store, error) {
	e, err := postgres.Open(ctx, dsn)
	if err != nil {
		return nil, mapStoreErr(err)
	}
	return &Store{e: e, desc: "postgres:" + e.String()}, nil
}

// OpenStore opens the store named by url: "postgres://…" or
// "postgresql://…" (OpenPostgres), "sqlite:PATH" (OpenSQLite) or "memory"
// (NewMemoryStore). ErrInvalidArgument for any other form.
func OpenStore(ctx context.Context, url string) (*Store, error) {
	switch {
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		return OpenPostgres(ctx, url)
	case strings.HasPrefix(url, "sqlite:"):
		path := strings.TrimPrefix(strings.TrimPrefix(url, "sqlite:"), "//")
		if path == "" {
			return nil, fmt.Errorf("%w: store URL %q names no file (use sqlite:/path/to/rediacc.db)", ErrInvalidArgument, url)
		}
		return OpenSQLite(ctx, path)
	case url == "memory":
		return NewMemoryStore(), nil
	}
	scheme, _, _ := strings.Cut(url, ":")
	return nil, fmt.Errorf("%w: store URL scheme %q: use postgres://user@host/db, sqlite:/path/to/rediacc.db or memory", ErrInvalidArgument, scheme)
}

// WorkerInfo is a worker registered in a shared (PostgreSQL) store.
type WorkerInfo struct {
	ID          string    `json:"id"`   // as in leases and attempts: "host/pid/random"
	Host        string    `json:"host"` // host name
	PID         int       `json:"pid"`
	StartedAt   time.Time `json:"started"`
	HeartbeatAt time.Time `json:"lastHeartbeat"`
	Running     int       `json:"runningTasks"` // tasks it holds (ASSIGNED or PROCESSING)
	Leader      bool      `json:"leader"`       // runs the periodic duties now
}

// ListWorkers returns the workers registered in the store (ordered by id):
// those running Run or RunUntilEmpty now, and those that stopped
// heartbeating less than a few lease durations ago. Only a store shared by
// many hosts (OpenPostgres) keeps a registry: other stores return
// ErrNotSupported. It needs task.list on every team (owner, auditor):
// running counts cover all teams.
func (c *Client) ListWorkers(ctx context.Context) ([]WorkerInfo, error) {
	teams, o, err := c.scopeTeams(ctx, authz.TaskList, scope{}, audit.EntityTask)
	if err != nil {
		return nil, err
	}
	if teams != nil {
		return nil, o.fail(ctx, fmt.Errorf("%w: %s may not list workers: their running counts cover every team (owner or auditor only)", ErrPermissionDenied, o.actor))
	}
	cl, ok := c.engine.(store.Cluster)
	if !ok {
		return nil, o.fail(ctx, fmt.Errorf("%w: store %s keeps no workers registry (it serves the workers of one host; use a PostgreSQL store)", ErrNotSupported, c.st))
	}
	ws, err := cl.ListWorkers(ctx)
	if err != nil {
		return nil, o.fail(ctx, mapStoreErr(err))
	}
	out := make([]WorkerInfo, len(ws))
	for i, w := range ws {
		out[i] = WorkerInfo{ID: w.ID, Host: w.Host, PID: w.PID, StartedAt: w.StartedAt, HeartbeatAt: w.HeartbeatAt, Running: w.Running, Leader: w.Leader}
	}
	o.done(ctx)
	return out, nil
}

// clusterState is a running worker's part in a shared store.
type clusterState struct {
	mu      sync.Mutex
	started time.Time
	leading bool
	share   probeShare
}

// probeShare says which machines this worker probes: those whose name
// hashes to index among n workers.
type probeShare struct{ index, n int }

func (s probeShare) mine(machine string) bool {
	if s.n <= 1 {
		return true
	}
	h := fnv.New32a()
	h.Write([]byte(machine))
	return int(h.Sum32()%uint32(s.n)) == s.index
}

// clusterEngine returns the store as a Cluster, or nil.
func (c *Client) clusterEngine() store.Cluster {
	cl, _ := c.engine.(store.Cluster)
	return cl
}

// wakeups is the store's wake-up channel (nil when it has none: a nil
// channel never receives).
func (c *Client) wakeups() <-chan struct{} {
	if cl := c.clusterEngine(); cl != nil {
		return cl.Wakeups()
	}
	return nil
}

// beatWorker registers this worker or refreshes its heartbeat, and
// recomputes its share of the health probes.
func (c *Client) beatWorker(ctx context.Context, log *slog.Logger) {
	cl := c.clusterEngine()
	if cl == nil {
		return
	}
	now := c.clock.Now().UTC()
	c.cstate.mu.Lock()
	if c.cstate.started.IsZero() {
		c.cstate.started = now
	}
	started := c.cstate.started
	c.cstate.mu.Unlock()
	host, _ := os.Hostname()
	if err := cl.BeatWorker(ctx, store.Worker{ID: c.id, Host: host, PID: os.Getpid(), StartedAt: started, HeartbeatAt: now}); err != nil {
		if ctx.Err() == nil {
			log.WarnContext(ctx, "worker heartbeat failed", "error", err)
		}
		return
	}
	ws, err := cl.ListWorkers(ctx)
	if err != nil {
		return
	}
	live := ws[:0]
	for _, w := range ws {
		if now.Sub(w.HeartbeatAt) < 3*c.cfg.LeaseDuration {
			live = append(live, w)
		}
	}
	for i, w := range live {
		if w.ID == c.id {
			c.cstate.mu.Lock()
			c.cstate.share = probeShare{index: i, n: len(live)}
			c.cstate.mu.Unlock()
		}
	}
}

// unregisterWorker removes this worker from the registry and gives up the
// leadership.
func (c *Client) unregisterWorker(ctx context.Context) {
	cl := c.clusterEngine()
	if cl == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = cl.Resign(ctx)
	_ = cl.RemoveWorker(ctx, c.id)
	c.cstate.mu.Lock()
	c.cstate.leading, c.cstate.started = false, time.Time{}
	c.cstate.mu.Unlock()
}

// leads reports whether this worker runs the periodic duties now: always
// for a store of one host, else while it holds the store's leadership.
func (c *Client) leads(ctx context.Context, log *slog.Logger) bool {
	cl := c.clusterEngine()
	if cl == nil {
		return true
	}
	ok, err := cl.Lead(ctx, c.id)
	if err != nil && ctx.Err() == nil {
		log.WarnContext(ctx, "leader election failed", "error", err)
	}
	c.cstate.mu.Lock()
	was := c.cstate.leading
	c.cstate.leading = ok
	c.cstate.mu.Unlock()
	switch {
	case ok && !was:
		log.InfoContext(ctx, "this worker leads: it runs rescues, threshold alerts and registry cleanup")
	case !ok && was:
		log.WarnContext(ctx, "this worker no longer leads")
	}
	if ok {
		if gone, err := cl.RemoveStaleWorkers(ctx, c.clock.Now().UTC().Add(-10*c.cfg.LeaseDuration)); err == nil && len(gone) > 0 {
			log.InfoContext(ctx, "removed workers that stopped heartbeating", "workers", gone)
		}
	}
	return ok
}

// probesMachine reports whether this worker probes machine's health: every
// machine for a store of one host, else its share among the registered
// workers.
func (c *Client) probesMachine(machine string) bool {
	c.cstate.mu.Lock()
	defer c.cstate.mu.Unlock()
	return c.cstate.share.mine(machine)
}
