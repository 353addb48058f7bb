package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/store"
)

// A change that breaks the shared transaction (here: it rolls it back)
// fails alone; the changes applied before it in that transaction run again
// in the next one and are committed; the caller of each is told its own
// result.
func TestGroupCommitBrokenTransaction(t *testing.T) {
	ctx := context.Background()
	e := openGrouped(t)
	create := func(id string) func(context.Context, *sql.Tx) (bool, error) {
		return func(ctx context.Context, tx *sql.Tx) (bool, error) {
			now := time.Now()
			task := store.Task{ID: id, TeamID: store.DefaultTeam, MachineID: "m", Priority: 3, Status: store.Pending,
				CreatedAt: now, EnqueuedAt: now, ReadyAt: now}
			return true, e.insertTask(ctx, tx, &task)
		}
	}
	release := make(chan struct{})
	first := make(chan error, 1)
	go func() { // the leader: its change waits until the others are queued
		first <- e.tx(ctx, nil, func(ctx context.Context, tx *sql.Tx) (bool, error) {
			<-release
			return create("t0")(ctx, tx)
		})
	}()
	for !e.leading() {
		time.Sleep(time.Millisecond)
	}
	results := make(chan error, 2)
	go func() { results <- e.tx(ctx, nil, create("t1")) }()
	for e.queued() < 1 {
		time.Sleep(time.Millisecond)
	}
	errBreak := errors.New("breaks the transaction")
	broken := make(chan error, 1)
	go func() {
		broken <- e.tx(ctx, nil, func(ctx context.Context, tx *sql.Tx) (bool, error) {
			if _, err := tx.ExecContext(ctx, `ROLLBACK`); err != nil {
				return false, err
			}
			return false, errBreak
		})
	}()
	for e.queued() < 2 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("first change: %v", err)
	}
	if err := <-results; err != nil {
		t.Fatalf("second change: %v", err)
	}
	if err := <-broken; !errors.Is(err, errBreak) {
		t.Fatalf("breaking change: %v, want its own error", err)
	}
	for _, id := range []string{"t0", "t1"} {
		if _, err := e.GetTask(ctx, id); err != nil {
			t.Errorf("task %s: %v (its change was told ok)", id, err)
		}
	}
}

func (e *Engine) leading() bool {
	e.gc.mu.Lock()
	defer e.gc.mu.Unlock()
	return e.gc.leading
}

func (e *Engine) queued() int {
	e.gc.mu.Lock()
	defer e.gc.mu.Unlock()
	return len(e.gc.queue)
}

// openGrouped opens an engine in a temporary directory whose write
// transactions keep taking changes for a minute (MaxDelay), so that a
// test decides what shares one; it is closed when the test ends.
func openGrouped(t *testing.T) *Engine {
	t.Helper()
	e, err := OpenOptions(context.Background(), filepath.Join(t.TempDir(), "store.db"), Options{MaxDelay: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}
