package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rediacc/rediacc/internal/archive"
)

// The log archive in the database (table archive): finished tasks' records
// and old audit records that Prune moved out of the queue tables, readable
// from every host that opens the store (`rediacc logs TASK` of a pruned
// task works anywhere). Rows are the file archive's envelopes — kind, key,
// the record's time, the day it was archived, the record's JSON — and the
// table is append-only by a trigger like the audit table: no UPDATE, no
// TRUNCATE, and DELETE only of records that are not audit records (the
// retention of Config.ArchiveRetention). PostgreSQL compresses large
// values itself (TOAST).

// scanPage is how many records Scan reads per query.
const scanPage = 1000

// ArchiveLog returns the store's archive as an archive.Log with opts
// (SegmentMaxBytes bounds a record, Clock picks the archive day, Retention
// drives Prune). Logs of one engine share the table; Close ends only the
// log's own appends.
func (e *Engine) ArchiveLog(opts archive.Options) archive.Log {
	if opts.SegmentMaxBytes <= 0 {
		opts.SegmentMaxBytes = archive.DefaultSegmentMaxBytes
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	return &archiveLog{e: e, opts: opts}
}

type archiveLog struct {
	e      *Engine
	opts   archive.Options
	closed atomic.Bool
}

var (
	_ archive.Log     = (*archiveLog)(nil)
	_ archive.Indexed = (*archiveLog)(nil)
)

func (l *archiveLog) Append(ctx context.Context, kind, key string, at time.Time, v any) error {
	if err := archive.CheckKind(kind); err != nil {
		return err
	}
	if key == "" {
		return archive.ErrEmptyKey
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("archive: append %s %q: %w", kind, key, err)
	}
	if int64(len(raw)) > l.opts.SegmentMaxBytes {
		return fmt.Errorf("%w: %s %q is %d bytes, limit %d", archive.ErrTooLarge, kind, key, len(raw), l.opts.SegmentMaxBytes)
	}
	if l.closed.Load() {
		return archive.ErrClosed
	}
	if err := l.e.check(ctx); err != nil {
		return err
	}
	_, err = l.e.pool.Exec(ctx, `INSERT INTO archive (kind, key, at, day, value) VALUES ($1, $2, $3, $4, $5)`,
		kind, key, at.UnixNano(), archive.Day(l.opts.Clock()), raw)
	if err != nil {
		return fmt.Errorf("archive: append %s %q to %s: %w", kind, key, l.e.desc, l.e.classify(err))
	}
	return nil
}

func (l *archiveLog) Lookup(ctx context.Context, kind, key string) ([]json.RawMessage, error) {
	if err := archive.CheckKind(kind); err != nil {
		return nil, err
	}
	if key == "" {
		return nil, archive.ErrEmptyKey
	}
	if err := l.e.check(ctx); err != nil {
		return nil, err
	}
	rows, _ := l.e.pool.Query(ctx, `SELECT value FROM archive WHERE kind = $1 AND key = $2 ORDER BY seq DESC`, kind, key)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (json.RawMessage, error) {
		var b []byte
		err := r.Scan(&b)
		return json.RawMessage(b), err
	})
	if err != nil {
		return nil, fmt.Errorf("archive: lookup %s %q in %s: %w", kind, key, l.e.desc, l.e.classify(err))
	}
	return out, nil
}

func (l *archiveLog) Scan(ctx context.Context, kind string, fn func(key string, at time.Time, raw json.RawMessage) error) error {
	if err := archive.CheckKind(kind); err != nil {
		return err
	}
	type rec struct {
		seq int64
		key string
		at  int64
		raw []byte
	}
	var after int64
	for {
		if err := l.e.check(ctx); err != nil {
			return err
		}
		rows, _ := l.e.pool.Query(ctx, `SELECT seq, key, at, value FROM archive WHERE kind = $1 AND seq > $2 ORDER BY seq LIMIT $3`,
			kind, after, scanPage)
		page, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (rec, error) {
			var x rec
			err := r.Scan(&x.seq, &x.key, &x.at, &x.raw)
			return x, err
		})
		if err != nil {
			return fmt.Errorf("archive: scan %s in %s: %w", kind, l.e.desc, l.e.classify(err))
		}
		for _, x := range page {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := fn(x.key, time.Unix(0, x.at).UTC(), x.raw); err != nil {
				return err
			}
			after = x.seq
		}
		if len(page) < scanPage {
			return nil
		}
	}
}

// Prune deletes the records of every kind but audit whose archive day is
// wholly older than now − Retention, and returns the days removed as
// "postgres:KIND/DAY". Audit records are kept forever (the chain is
// verified from its first record; the table's trigger refuses to delete
// them).
func (l *archiveLog) Prune(ctx context.Context, now time.Time) ([]string, error) {
	last, ok := archive.LastExpiredDay(now, l.opts.Retention)
	if !ok {
		return nil, nil
	}
	if err := l.e.check(ctx); err != nil {
		return nil, err
	}
	rows, _ := l.e.pool.Query(ctx, `WITH gone AS (
			DELETE FROM archive WHERE kind <> $1 AND day <= $2 RETURNING kind, day)
		SELECT DISTINCT kind, day FROM gone ORDER BY kind, day`, archive.KindAudit, last)
	removed, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var kind, day string
		err := r.Scan(&kind, &day)
		return "postgres:" + kind + "/" + day, err
	})
	if err != nil {
		return nil, fmt.Errorf("archive: prune %s: %w", l.e.desc, l.e.classify(err))
	}
	return removed, nil
}

// Contains returns which of keys have a record of kind (archive.Indexed).
func (l *archiveLog) Contains(ctx context.Context, kind string, keys []string) (map[string]bool, error) {
	if err := archive.CheckKind(kind); err != nil {
		return nil, err
	}
	if err := l.e.check(ctx); err != nil {
		return nil, err
	}
	rows, _ := l.e.pool.Query(ctx, `SELECT DISTINCT key FROM archive WHERE kind = $1 AND key = ANY($2)`, kind, keys)
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("archive: lookup in %s: %w", l.e.desc, l.e.classify(err))
	}
	out := make(map[string]bool, len(found))
	for _, k := range found {
		out[k] = true
	}
	return out, nil
}

// Close makes further Appends of this log fail with archive.ErrClosed;
// reads still work (while the engine is open).
func (l *archiveLog) Close() error {
	l.closed.Store(true)
	return nil
}
