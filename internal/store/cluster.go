package store

import (
	"context"
	"time"
)

// Worker is a worker process registered in a store that many hosts share
// (Cluster).
type Worker struct {
	ID          string // the worker id used in leases ("host/pid/random")
	Host        string
	PID         int
	StartedAt   time.Time
	HeartbeatAt time.Time // last BeatWorker
	Running     int       // ASSIGNED and PROCESSING tasks leased by ID (ListWorkers fills it)
	Leader      bool      // holds the leadership now (ListWorkers fills it)
}

// Cluster is implemented by engines that workers on many hosts share
// (PostgreSQL). Engines without it serve the workers of one host, each of
// which runs the periodic duties itself.
type Cluster interface {
	// Wakeups returns a channel that receives a value soon after a task
	// may have become claimable anywhere (created, requeued, rescued, or a
	// machine slot freed by a finished task). Deliveries are coalesced and
	// may be lost (a dropped connection): callers still poll. The same
	// channel is returned on every call; it is never closed.
	Wakeups() <-chan struct{}

	// BeatWorker records w (inserted the first time, else its
	// HeartbeatAt updated). Running and Leader are ignored.
	// ErrInvalidArgument (empty ID, zero times).
	BeatWorker(ctx context.Context, w Worker) error
	// RemoveWorker deletes a worker's row (a worker stopping); unknown
	// ids are not an error.
	RemoveWorker(ctx context.Context, id string) error
	// ListWorkers returns the registered workers ordered by ID, with the
	// tasks each holds and which one leads.
	ListWorkers(ctx context.Context) ([]Worker, error)
	// RemoveStaleWorkers deletes the workers whose last heartbeat is
	// before `before` and returns their ids.
	RemoveStaleWorkers(ctx context.Context, before time.Time) ([]string, error)

	// Lead reports whether worker id leads, trying to become the leader
	// when no one does: at most one engine among all those sharing the
	// store leads at a time. Leadership lasts until Resign, Close, or the
	// loss of the engine's lock connection (a leader that dies or is cut
	// off loses it within the database's connection timeouts), so callers
	// ask again before each periodic duty.
	Lead(ctx context.Context, id string) (bool, error)
	// Resign gives the leadership up when held.
	Resign(ctx context.Context) error
}
