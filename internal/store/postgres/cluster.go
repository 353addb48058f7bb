package postgres

import (
	"context"
	"fmt"

	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"

	"github.com/rediacc/rediacc/internal/store"
)

// Workers on many hosts: wake-ups (LISTEN/NOTIFY), leader election and the
// workers registry (store.Cluster).

// channel is the store's notification channel (schema-specific, so stores
// in different schemas of one database do not wake each other).
func (e *Engine) channel() string { return fmt.Sprintf("rediacc_%x", uint64(e.lockKey("channel", ""))) }

// lockConnConfig is the configuration of the engine's dedicated
// connections (listener, leader lock): server-side TCP keepalives and a TCP
// user timeout, so that the server ends the session, and releases the
// leader's lock, within seconds of the peer vanishing without a word.
func (e *Engine) lockConnConfig() *pgx.ConnConfig {
	cc := e.pool.Config().ConnConfig.Copy()
	if cc.RuntimeParams == nil {
		cc.RuntimeParams = map[string]string{}
	}
	for k, v := range map[string]string{
		"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3",
		"tcp_user_timeout": "10000",
	} {
		if _, ok := cc.RuntimeParams[k]; !ok {
			cc.RuntimeParams[k] = v
		}
	}
	return cc
}

// listener holds the LISTEN connection and forwards notifications.
type listener struct {
	ch     chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

// Wakeups returns the channel that receives a value after a NOTIFY on the
// store's channel (a task created or requeued, or a machine slot freed), or
// after the listening connection was re-established (notifications may have
// been missed meanwhile). The LISTEN connection is opened on first call and
// reconnects with backoff.
func (e *Engine) Wakeups() <-chan struct{} {
	e.listenOnce.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		l := &listener{ch: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
		e.leadMu.Lock()
		closed := e.closed.Load()
		if !closed {
			e.listen = l
		}
		e.leadMu.Unlock()
		if closed {
			cancel()
			close(l.done)
			return
		}
		go e.listenLoop(ctx, l)
	})
	if e.listen == nil {
		return nil
	}
	return e.listen.ch
}

func (l *listener) wake() {
	select {
	case l.ch <- struct{}{}:
	default:
	}
}

func (e *Engine) listenLoop(ctx context.Context, l *listener) {
	defer close(l.done)
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval, bo.MaxElapsedTime = 50*time.Millisecond, 5*time.Second, 0
	for ctx.Err() == nil {
		conn, err := pgx.ConnectConfig(ctx, e.lockConnConfig())
		if err == nil {
			_, err = conn.Exec(ctx, `LISTEN `+pgx.Identifier{e.channel()}.Sanitize())
			if err == nil {
				bo.Reset()
				l.wake() // notifications may have been missed while reconnecting
				for {
					if _, err = conn.WaitForNotification(ctx); err != nil {
						break
					}
					l.wake()
				}
			}
			conn.Close(context.Background())
		}
		select {
		case <-ctx.Done():
		case <-time.After(bo.NextBackOff()):
		}
	}
}

// leader is the connection holding (or trying for) the leader's lock.
type leader struct {
	conn *pgx.Conn
	held bool
}

// Lead reports whether worker id leads, trying for the leader's lock (a
// session advisory lock on a dedicated connection) when this engine does
// not hold it. A held lock is checked on its connection each time: a
// connection that died means the lock is gone.
func (e *Engine) Lead(ctx context.Context, id string) (bool, error) {
	if err := e.check(ctx); err != nil {
		return false, err
	}
	e.leadMu.Lock()
	defer e.leadMu.Unlock()
	if e.closed.Load() {
		return false, fmt.Errorf("%w: %s", store.ErrClosed, e.desc)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if e.lead != nil && e.lead.conn.IsClosed() {
		e.lead = nil
	}
	if e.lead == nil {
		conn, err := pgx.ConnectConfig(ctx, e.lockConnConfig())
		if err != nil {
			return false, fmt.Errorf("postgres store %s: leader connection: %w", e.desc, err)
		}
		e.lead = &leader{conn: conn}
	}
	l := e.lead
	var ok bool
	var err error
	if l.held {
		err = l.conn.QueryRow(ctx, `SELECT true`).Scan(&ok)
	} else {
		err = l.conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, e.lockKey("leader", "")).Scan(&ok)
	}
	if err != nil {
		l.conn.Close(context.Background())
		e.lead = nil
		return false, fmt.Errorf("postgres store %s: leader lock: %w", e.desc, err)
	}
	became := ok && !l.held
	l.held = ok
	if became {
		if _, err := e.pool.Exec(ctx, `UPDATE workers SET leader_pid = $2 WHERE id = $1`, id, int32(l.conn.PgConn().PID())); err != nil {
			return true, fmt.Errorf("postgres store %s: recording the leader: %w", e.desc, e.classify(err))
		}
	}
	return ok, nil
}

// Resign gives the leadership up (closing the lock connection).
func (e *Engine) Resign(ctx context.Context) error {
	e.leadMu.Lock()
	defer e.leadMu.Unlock()
	if e.lead != nil {
		e.lead.conn.Close(ctx)
		e.lead = nil
	}
	return nil
}

// closeCluster ends the listener and the leader's connection.
func (e *Engine) closeCluster() {
	e.leadMu.Lock()
	l, ld := e.listen, e.lead
	e.lead = nil
	e.leadMu.Unlock()
	if ld != nil {
		ld.conn.Close(context.Background())
	}
	if l != nil {
		l.cancel()
		<-l.done
	}
}

// BeatWorker inserts w or refreshes its heartbeat.
func (e *Engine) BeatWorker(ctx context.Context, w store.Worker) error {
	if w.ID == "" || w.StartedAt.IsZero() || w.HeartbeatAt.IsZero() {
		return fmt.Errorf("%w: worker %q: id, start and heartbeat times are required", store.ErrInvalidArgument, w.ID)
	}
	if err := e.check(ctx); err != nil {
		return err
	}
	_, err := e.pool.Exec(ctx, `INSERT INTO workers (id, host, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at`,
		w.ID, w.Host, int32(w.PID), w.StartedAt.UnixNano(), w.HeartbeatAt.UnixNano())
	return e.classify(err)
}

// RemoveWorker deletes a worker's row.
func (e *Engine) RemoveWorker(ctx context.Context, id string) error {
	if err := e.check(ctx); err != nil {
		return err
	}
	_, err := e.pool.Exec(ctx, `DELETE FROM workers WHERE id = $1`, id)
	return e.classify(err)
}

// RemoveStaleWorkers deletes the workers whose last heartbeat is before
// `before`.
func (e *Engine) RemoveStaleWorkers(ctx context.Context, before time.Time) ([]string, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	rows, _ := e.pool.Query(ctx, `DELETE FROM workers WHERE heartbeat_at < $1 RETURNING id`, before.UnixNano())
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return ids, e.classify(err)
}

// ListWorkers returns the registered workers ordered by id, with the tasks
// each holds, and Leader set for the one whose recorded lock connection
// holds the leader's lock now (pg_locks).
func (e *Engine) ListWorkers(ctx context.Context) ([]store.Worker, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	key := uint64(e.lockKey("leader", ""))
	rows, err := e.pool.Query(ctx, `SELECT w.id, w.host, w.pid, w.started_at, w.heartbeat_at,
			(SELECT count(*) FROM tasks t WHERE t.lease_owner = w.id AND t.status IN ('ASSIGNED', 'PROCESSING')),
			w.leader_pid IS NOT NULL AND EXISTS (SELECT 1 FROM pg_locks l
				WHERE l.locktype = 'advisory' AND l.granted AND l.pid = w.leader_pid
				AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
				AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid AND l.objsubid = 1)
		FROM workers w ORDER BY w.id`, int64(key>>32), int64(key&0xffffffff))
	if err != nil {
		return nil, e.classify(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Worker, error) {
		var (
			w          store.Worker
			pid        int32
			started, b int64
			running    int64
		)
		err := row.Scan(&w.ID, &w.Host, &pid, &started, &b, &running, &w.Leader)
		w.PID, w.Running = int(pid), int(running)
		w.StartedAt, w.HeartbeatAt = fromNanos(&started), fromNanos(&b)
		return w, err
	})
	return out, e.classify(err)
}
