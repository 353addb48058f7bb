package sqlite

import (
	"context"
	"database/sql"
	"sync"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
)

// Group commit. The changes of concurrent callers of one engine share
// write transactions: the first caller that finds no transaction running
// becomes the leader; it takes the write gate, begins a transaction and
// applies the changes waiting in the queue one after the other, its own
// first, each in a savepoint of its own (the first one needs none: its
// failure rolls back the whole, still empty, transaction), then commits and
// tells every caller its own result. Changes that arrive while the
// transaction runs join it as long as it has been open for less than
// Options.MaxDelay and holds fewer than Options.MaxBatch changes; the
// leader then hands the queue to the next waiting caller. Nobody waits for
// company: a caller alone is its own leader at once, and a change waits at
// most for the transaction that is running when it arrives.
//
// What each caller sees is what it saw with a transaction of its own: its
// guard conditions, its change, its audit records (chained onto the head
// as it stands when its change runs, so the trail stays one verifiable
// chain) and its alerts in one savepoint, so a change that fails (a guard
// not holding, a lost lease, a conflict) rolls back only itself; and it is
// told "done" only after the COMMIT that made its change durable, with the
// same durability as before (WAL, synchronous=NORMAL: a committed change
// survives kill -9). When an error breaks the transaction itself (SQLite
// rolled it back: I/O error, disk full), the change that hit it fails and
// the changes already applied in it are queued again, first, for the next
// transaction. The changes run with their caller's context values but
// without its cancellation: an abandoned caller must not interrupt the
// statements of others; a caller whose context ends before its change was
// taken leaves the queue, one whose change was taken waits for its result.
// Idea: the group commit of database logs (DeWitt et al., "Implementation
// techniques for main memory database systems", SIGMOD 1984), as in
// LevelDB's write queue.

// Group commit defaults (Options).
const (
	DefaultMaxBatch = 256
	DefaultMaxDelay = 2 * time.Millisecond
)

// Options tune an Engine (OpenOptions). The zero value gives the defaults.
type Options struct {
	// MaxBatch bounds the changes one write transaction holds; 0 means
	// DefaultMaxBatch, 1 turns group commit off (a transaction per change,
	// run with the caller's context).
	MaxBatch int
	// MaxDelay bounds how long a write transaction keeps taking changes
	// that arrive while it runs; 0 means DefaultMaxDelay. It is not a wait:
	// a transaction never waits for changes to arrive.
	MaxDelay time.Duration
}

// op is one caller's change (Engine.tx).
type op struct {
	ctx   context.Context
	recs  []audit.Record
	conds []store.Condition
	fn    func(ctx context.Context, tx *sql.Tx) (bool, error)

	taken bool          // by a leader (guarded by committer.mu)
	err   error         // the result, set before done is closed
	done  chan struct{} // closed when the result is final
	wake  chan struct{} // capacity 1: "you may lead"
}

func (o *op) finish(err error) {
	o.err = err
	close(o.done)
}

// committer is the engine's group commit queue.
type committer struct {
	maxOps   int
	maxDelay time.Duration

	mu      sync.Mutex
	queue   []*op // waiting changes, not taken, oldest first
	leading bool  // a leader is running a transaction
}

func (c *committer) init(o Options) {
	c.maxOps, c.maxDelay = o.MaxBatch, o.MaxDelay
	if c.maxOps <= 0 {
		c.maxOps = DefaultMaxBatch
	}
	if c.maxDelay <= 0 {
		c.maxDelay = DefaultMaxDelay
	}
}

// submit queues o and returns its result once it is final: it leads a
// transaction itself when no one else does and o is first in line.
func (c *committer) submit(e *Engine, o *op) error {
	o.done, o.wake = make(chan struct{}), make(chan struct{}, 1)
	c.mu.Lock()
	c.queue = append(c.queue, o)
	for {
		if !o.taken && !c.leading && c.queue[0] == o {
			c.leading = true
			c.mu.Unlock()
			e.lead(o)
			select {
			case <-o.done:
				return o.err
			default: // put back by requeue: it runs again
			}
			c.mu.Lock()
			continue
		}
		// A taken change may be put back (requeue) and woken to lead; its
		// caller's context counts only while it waits untaken.
		var cancel <-chan struct{}
		if !o.taken {
			cancel = o.ctx.Done()
		}
		c.mu.Unlock()
		select {
		case <-o.done:
			return o.err
		case <-o.wake:
		case <-cancel:
			c.mu.Lock()
			if !o.taken {
				c.remove(o)
				c.handOff()
				c.mu.Unlock()
				return o.ctx.Err()
			}
			c.mu.Unlock()
		}
		c.mu.Lock()
	}
}

// remove drops the untaken o from the queue (c.mu held).
func (c *committer) remove(o *op) {
	for i, q := range c.queue {
		if q == o {
			c.queue = append(c.queue[:i], c.queue[i+1:]...)
			return
		}
	}
}

// handOff wakes the first waiting caller to lead, when no one leads
// (c.mu held).
func (c *committer) handOff() {
	if !c.leading && len(c.queue) > 0 {
		select {
		case c.queue[0].wake <- struct{}{}:
		default:
		}
	}
}

// take returns the next change for a transaction that holds n changes and
// began at start, or nil when it should commit now.
func (c *committer) take(n int, start time.Time) *op {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) == 0 || n >= c.maxOps || (n > 0 && time.Since(start) >= c.maxDelay) {
		return nil
	}
	o := c.queue[0]
	c.queue[0] = nil
	c.queue = c.queue[1:]
	o.taken = true
	return o
}

// requeue puts the taken ops back at the front of the queue, in order.
func (c *committer) requeue(ops []*op) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, o := range ops {
		o.taken = false
	}
	c.queue = append(append(make([]*op, 0, len(ops)+len(c.queue)), ops...), c.queue...)
}

// lead runs one transaction for the queue, beginning with self (the first
// in line), and hands the queue on.
func (e *Engine) lead(self *op) {
	c := &e.gc
	if err := e.lockGate(self.ctx); err != nil {
		c.mu.Lock()
		c.remove(self)
		c.leading = false
		c.handOff()
		c.mu.Unlock()
		self.finish(err)
		return
	}
	e.runBatch()
	e.gate.unlock()
	c.mu.Lock()
	c.leading = false
	c.handOff()
	c.mu.Unlock()
}

// runBatch runs the changes it takes from the queue in one transaction and
// finishes each of them.
func (e *Engine) runBatch() {
	var (
		c     = &e.gc
		bg    = context.Background()
		start = time.Now()
		tx    *sql.Tx
		ran   []*op // applied in tx, waiting for its commit
	)
	for n := 0; ; n++ {
		o := c.take(n, start)
		if o == nil {
			break
		}
		if err := o.ctx.Err(); err != nil {
			o.finish(err)
			continue
		}
		ctx := context.WithoutCancel(o.ctx)
		if tx == nil {
			var err error
			if tx, err = e.w.BeginTx(bg, nil); err != nil {
				o.finish(e.classify(err))
				return
			}
		}
		if len(ran) == 0 {
			// Nothing else in tx: the change needs no savepoint.
			if err := e.runOp(ctx, tx, o); err != nil {
				e.rollback(tx)
				tx = nil
				o.finish(e.classify(err))
				continue
			}
			ran = append(ran, o)
			continue
		}
		head := e.ah // the audit head before o (audithead.go)
		opErr, broken := e.runSavepoint(ctx, tx, o)
		if broken != nil {
			// The transaction is gone: o's error broke it (or the
			// savepoint statements failed). The changes applied in it
			// run again in the next transaction.
			e.rollback(tx)
			if opErr == nil {
				opErr = broken
			}
			o.finish(e.classify(opErr))
			c.requeue(ran)
			return
		}
		if opErr != nil {
			e.ah = head // o's records were rolled back with it
			o.finish(e.classify(opErr))
			continue
		}
		ran = append(ran, o)
	}
	if tx == nil {
		return
	}
	err := e.classify(e.commit(bg, tx))
	for _, o := range ran {
		o.finish(err)
	}
}

// runSavepoint applies o inside a savepoint of tx: opErr is o's own
// failure (rolled back to the savepoint), broken an error that ended tx.
func (e *Engine) runSavepoint(ctx context.Context, tx *sql.Tx, o *op) (opErr, broken error) {
	if _, err := stmt(ctx, tx, e.st.savepoint).ExecContext(ctx); err != nil {
		return nil, err
	}
	if opErr = e.runOp(ctx, tx, o); opErr == nil {
		_, broken = stmt(ctx, tx, e.st.release).ExecContext(ctx)
		return nil, broken
	}
	if _, broken = stmt(ctx, tx, e.st.rollbackTo).ExecContext(ctx); broken == nil {
		_, broken = stmt(ctx, tx, e.st.release).ExecContext(ctx)
	}
	return opErr, broken
}
