package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/store/storetest"
)

// BenchmarkConcurrentBare is the baseline of BenchmarkConcurrent: the same
// shape, driven by the same storetest.DriveConcurrent (storetest.Submitters
// goroutines creating tasks one by one, a dispatcher claiming up to its
// free slots out of storetest.Slots, each claimed task started and
// finished by a goroutine of its own), an audit row with every change,
// written as plainly as SQLite allows with the same
// driver (modernc.org/sqlite) and the same durability (WAL,
// synchronous=NORMAL, one write connection, BEGIN IMMEDIATE): one table of
// tasks with the one index a claim needs, one table of audit rows without
// index, hash or chain, no guards, no counts, no group commit — a
// transaction per change. Its tasks/s is what the driver gives for four
// durable transactions per task on this host: the ceiling the engine is
// measured against.
//
//	go test -run '^$' -bench 'BenchmarkConcurrent(Bare)?$' -benchtime 3000x -count 6 ./internal/store/sqlite
func BenchmarkConcurrentBare(b *testing.B) {
	dsn := "file:" + filepath.Join(b.TempDir(), "bare.db") + "?" + url.Values{
		"_txlock": {"immediate"},
		"_pragma": {"busy_timeout(10000)", "journal_mode(WAL)", "synchronous(NORMAL)", "temp_store(MEMORY)"},
	}.Encode()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, q := range []string{
		`CREATE TABLE tasks (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, machine TEXT NOT NULL, priority INTEGER NOT NULL,
			status TEXT NOT NULL, owner TEXT, spec BLOB NOT NULL, stdout BLOB, exit_code INTEGER, updated_at INTEGER NOT NULL)`,
		`CREATE INDEX tasks_claim ON tasks (status, priority, seq)`,
		`CREATE TABLE audit (seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, task TEXT NOT NULL)`,
	} {
		if _, err := db.Exec(q); err != nil {
			b.Fatal(err)
		}
	}
	// write runs fn in a transaction of its own, with an audit row.
	write := func(ctx context.Context, action, id string, fn func(tx *sql.Tx) error) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err := fn(tx); err != nil {
			_ = tx.Rollback()
			return err
		}
		if _, err := tx.Exec(`INSERT INTO audit (at, actor, action, task) VALUES (?, 'bench', ?, ?)`, time.Now().UnixNano(), action, id); err != nil {
			_ = tx.Rollback()
			return err
		}
		return tx.Commit()
	}
	set := func(tx *sql.Tx, id, from, to string) error {
		res, err := tx.Exec(`UPDATE tasks SET status = ?, updated_at = ? WHERE id = ? AND status = ? AND owner = 'bench'`, to, time.Now().UnixNano(), id, from)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("task %s: not %s", id, from)
		}
		return nil
	}
	storetest.DriveConcurrent(b, storetest.Lifecycle[string]{
		Create: func(ctx context.Context, i int) error {
			id := fmt.Sprintf("t%09d", i)
			return write(ctx, "task.create", id, func(tx *sql.Tx) error {
				_, err := tx.Exec(`INSERT INTO tasks (id, machine, priority, status, spec, updated_at) VALUES (?, ?, ?, 'PENDING', ?, ?)`,
					id, fmt.Sprint("m", i%10), 1+i%5, []byte(`{"command":"true"}`), time.Now().UnixNano())
				return err
			})
		},
		Claim: func(ctx context.Context, max int) ([]string, error) {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return nil, err
			}
			defer func() { _ = tx.Rollback() }()
			rows, err := tx.Query(`SELECT id FROM tasks WHERE status = 'PENDING' ORDER BY priority, seq LIMIT ?`, max)
			if err != nil {
				return nil, err
			}
			var ids []string
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					rows.Close()
					return nil, err
				}
				ids = append(ids, id)
			}
			rows.Close()
			now := time.Now().UnixNano()
			for _, id := range ids {
				if _, err := tx.Exec(`UPDATE tasks SET status = 'ASSIGNED', owner = 'bench', updated_at = ? WHERE id = ?`, now, id); err != nil {
					return nil, err
				}
				if _, err := tx.Exec(`INSERT INTO audit (at, actor, action, task) VALUES (?, 'bench', 'task.assign', ?)`, now, id); err != nil {
					return nil, err
				}
			}
			return ids, tx.Commit()
		},
		Run: func(ctx context.Context, id string) error {
			if err := write(ctx, "task.start", id, func(tx *sql.Tx) error { return set(tx, id, "ASSIGNED", "PROCESSING") }); err != nil {
				return fmt.Errorf("start: %w", err)
			}
			if err := write(ctx, "task.complete", id, func(tx *sql.Tx) error {
				if err := set(tx, id, "PROCESSING", "COMPLETED"); err != nil {
					return err
				}
				_, err := tx.Exec(`UPDATE tasks SET stdout = ?, exit_code = 0 WHERE id = ?`, []byte("ok\n"), id)
				return err
			}); err != nil {
				return fmt.Errorf("finish: %w", err)
			}
			return nil
		},
	})
}
