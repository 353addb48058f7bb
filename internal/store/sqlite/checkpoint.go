package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"sync/atomic"
	"time"
)

// Checkpoints. In WAL mode a commit appends the changed pages to the
// write-ahead log, and a checkpoint copies them back into the database
// file (then syncs the log and the file), after which the log starts over.
// SQLite runs that checkpoint by default in the connection whose COMMIT
// leaves the log above 1,000 pages, inside that commit: the claim or
// finish that happened to commit then paid for copying the pages and two
// fsyncs, while holding the write lock (and the write gate every writer of
// the store waits on), which made the tail of the claim latency
// (docs/BENCHMARKS.md, "Backlog").
//
// Here the writer connection checkpoints in its commit only as a backstop,
// when the log passes walBackstopPages (so the log stays bounded even if
// the background checkpoints cannot run or keep up; SQLite runs one
// checkpoint at a time, so while another one runs, in this process or
// another, a commit skips its own and the log may pass the backstop by
// what is written meanwhile), and a goroutine of
// the engine runs PASSIVE checkpoints on a connection of its own, at most
// every checkpointInterval and only after a write transaction: a PASSIVE
// checkpoint never takes the write lock nor waits for readers or writers
// (it copies the pages no reader still needs; SQLite, "Write-Ahead
// Logging", section 3), so writers go on while it runs. Durability is
// unchanged: a commit is durable once in the log (synchronous=NORMAL, see
// the package comment) and a checkpoint killed half-way is redone from the
// log, as SQLite guarantees. Close stops the goroutine before closing the
// connections; the last connection to close checkpoints the whole log and
// deletes it, as before.

// checkpointInterval is the least time between two background checkpoints.
var checkpointInterval = 200 * time.Millisecond

// walBackstopPages is the writer connection's wal_autocheckpoint: the log
// size, in pages (4 KiB), above which a commit checkpoints itself.
var walBackstopPages = 10000

// checkpointer runs the background checkpoints (see above).
type checkpointer struct {
	db       *sql.DB // one connection
	interval time.Duration
	kickc    chan struct{} // capacity 1: "a write transaction ended"
	stop     chan struct{}
	done     chan struct{}
	ctx      context.Context // ended by close: interrupts a checkpoint
	cancel   context.CancelFunc
	runs     atomic.Int64          // checkpoints run (tests)
	lastErr  atomic.Pointer[error] // error of the last checkpoint that failed (tests)
}

// startCheckpointer opens the checkpointer's connection to the store at
// abs and starts its goroutine.
func startCheckpointer(abs string) (*checkpointer, error) {
	db, err := sql.Open("sqlite", dsn(abs, url.Values{
		"_pragma": {fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds())},
	}))
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	c := &checkpointer{db: db, interval: checkpointInterval,
		kickc: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	go c.run()
	return c, nil
}

// kick tells the checkpointer a write transaction ended; it never blocks.
func (c *checkpointer) kick() {
	if c == nil { // during Open, before the checkpointer starts
		return
	}
	select {
	case c.kickc <- struct{}{}:
	default:
	}
}

func (c *checkpointer) run() {
	defer close(c.done)
	var last time.Time
	for {
		select {
		case <-c.stop:
			return
		case <-c.kickc:
		}
		if wait := c.interval - time.Since(last); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-c.stop:
				t.Stop()
				return
			case <-t.C:
			}
		}
		last = time.Now()
		c.checkpoint()
	}
}

// checkpoint runs one PASSIVE checkpoint. A failure is kept for tests and
// otherwise left to the writer: the backstop checkpoints in its commits
// and reports what fails there.
func (c *checkpointer) checkpoint() {
	var busy, frames, copied int64
	if err := c.db.QueryRowContext(c.ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &frames, &copied); err != nil {
		c.lastErr.Store(&err)
		return
	}
	c.runs.Add(1)
}

// close stops the goroutine (interrupting a checkpoint in progress, which
// SQLite redoes later from the log) and closes the connection.
func (c *checkpointer) close() error {
	if c == nil {
		return nil
	}
	close(c.stop)
	c.cancel()
	<-c.done
	return c.db.Close()
}
