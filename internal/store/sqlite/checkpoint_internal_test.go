package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// padPages commits, in one write transaction of e, n rows of a page each
// (a table of its own, created when missing).
func padPages(t *testing.T, e *Engine, n int) {
	t.Helper()
	err := e.tx(context.Background(), nil, func(ctx context.Context, tx *sql.Tx) (bool, error) {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS pad (b BLOB)`); err != nil {
			return false, err
		}
		for range n {
			if _, err := tx.ExecContext(ctx, `INSERT INTO pad (b) VALUES (?)`, bytes.Repeat([]byte{'x'}, 4000)); err != nil {
				return false, err
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// lastCheckpointErr is the error of e's last failed background checkpoint.
func lastCheckpointErr(e *Engine) error {
	if p := e.ckpt.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// A commit leaves its pages in the write-ahead log (the writer checkpoints
// in its commits only as a backstop, above walBackstopPages) and the
// engine's checkpointer copies them into the database file in the
// background, with no further write: the database file grows to hold them
// while the engine stays open and idle. Before, a commit of fewer than
// 1,000 pages stayed in the log until a later commit checkpointed it,
// inside that commit.
func TestBackgroundCheckpoint(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	e, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var backstop int
	if err := e.w.QueryRow(`PRAGMA wal_autocheckpoint`).Scan(&backstop); err != nil || backstop != walBackstopPages {
		t.Fatalf("writer's wal_autocheckpoint %d (%v), want %d", backstop, err, walBackstopPages)
	}
	before := fileSize(t, path)
	padPages(t, e, 100)
	for deadline := time.Now().Add(30 * time.Second); fileSize(t, path) < before+100*4000; {
		if time.Now().After(deadline) {
			t.Fatalf("the database file is still %d bytes (%d before the commit of 100 pages): no checkpoint ran (%d runs, last error %v)",
				fileSize(t, path), before, e.ckpt.runs.Load(), lastCheckpointErr(e))
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, not waiting for a time
	}
}

// The write-ahead log stays bounded when the background checkpoints do not
// run (here: one every hour, the first one over before the writes): the
// writer's commits checkpoint it above walBackstopPages, so the log never
// holds much more than that plus one transaction.
func TestWALBoundedWithoutBackgroundCheckpoints(t *testing.T) {
	defer func(i time.Duration, p int) { checkpointInterval, walBackstopPages = i, p }(checkpointInterval, walBackstopPages)
	checkpointInterval, walBackstopPages = time.Hour, 100
	path := filepath.Join(t.TempDir(), "store.db")
	e, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	padPages(t, e, 1) // the checkpointer's first (and, within the hour, only) run follows this
	// SQLite runs one checkpoint at a time: while that run lasts, the
	// commits' backstop checkpoints are skipped; wait until it is over.
	for deadline := time.Now().Add(30 * time.Second); e.ckpt.runs.Load() == 0 && lastCheckpointErr(e) == nil; {
		if time.Now().After(deadline) {
			t.Fatal("the checkpointer's first run did not end")
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, not waiting for a time
	}
	const perTx, txs = 40, 30
	for range txs {
		padPages(t, e, perTx)
	}
	// A frame is a page and a 24-byte header; the log has a 32-byte header.
	bound := int64(walBackstopPages+perTx+10) * (4096 + 24)
	if got := fileSize(t, path+"-wal"); got > bound {
		t.Fatalf("write-ahead log of %d bytes after %d pages committed, want at most %d (backstop %d pages)", got, perTx*txs, bound, walBackstopPages)
	}
	if n := e.ckpt.runs.Load(); n > 1 {
		t.Fatalf("%d background checkpoints within the hour's interval, want at most 1", n)
	}
}
