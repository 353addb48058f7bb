package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

var _ store.BlobEngine = (*Engine)(nil)

const blobSelect = `SELECT kind, key, data, revision, updated_at FROM blobs`

func scanBlob(s scanner) (store.Blob, error) {
	var (
		b       store.Blob
		updated sql.NullInt64
	)
	if err := s.Scan(&b.Kind, &b.Key, &b.Data, &b.Revision, &updated); err != nil {
		return store.Blob{}, err
	}
	b.UpdatedAt = fromNanos(updated)
	return b, nil
}

// blobRevision returns the stored revision of a blob (0: none).
func blobRevision(ctx context.Context, tx *sql.Tx, kind, key string) (int64, error) {
	var cur int64
	err := tx.QueryRowContext(ctx, `SELECT revision FROM blobs WHERE kind = ? AND key = ?`, kind, key).Scan(&cur)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return cur, err
}

// GetBlob implements store.BlobEngine.
func (e *Engine) GetBlob(ctx context.Context, kind, key string) (store.Blob, error) {
	if err := e.check(ctx); err != nil {
		return store.Blob{}, err
	}
	b, err := scanBlob(e.r.QueryRowContext(ctx, blobSelect+` WHERE kind = ? AND key = ?`, kind, key))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Blob{}, fmt.Errorf("%w: blob %s/%s", store.ErrNotFound, kind, key)
	}
	return b, e.classify(err)
}

// PutBlob implements store.BlobEngine (writers are serialized by the
// engine's write transaction).
func (e *Engine) PutBlob(ctx context.Context, b store.Blob) (store.Blob, error) {
	if err := fsm.CheckBlobName(b.Kind, b.Key); err != nil {
		return store.Blob{}, err
	}
	var out store.Blob
	err := e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		cur, err := blobRevision(ctx, tx, b.Kind, b.Key)
		if err != nil {
			return err
		}
		next, err := fsm.PutBlob(cur, b, time.Now())
		if err != nil {
			return err
		}
		data := next.Data
		if data == nil {
			data = []byte{}
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO blobs (kind, key, data, revision, updated_at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (kind, key) DO UPDATE SET data = excluded.data, revision = excluded.revision, updated_at = excluded.updated_at`,
			next.Kind, next.Key, data, next.Revision, nanos(next.UpdatedAt))
		out = next
		return err
	})
	if err != nil {
		return store.Blob{}, e.classify(err)
	}
	return out, nil
}

// DeleteBlob implements store.BlobEngine.
func (e *Engine) DeleteBlob(ctx context.Context, kind, key string, revision int64) error {
	return e.classify(e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		cur, err := blobRevision(ctx, tx, kind, key)
		if err != nil {
			return err
		}
		if cur == 0 {
			return fmt.Errorf("%w: blob %s/%s", store.ErrNotFound, kind, key)
		}
		if err := fsm.DeleteBlob(kind, key, cur, revision); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM blobs WHERE kind = ? AND key = ?`, kind, key)
		return err
	}))
}

// ListBlobs implements store.BlobEngine.
func (e *Engine) ListBlobs(ctx context.Context, kind string) ([]store.Blob, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	rows, err := e.r.QueryContext(ctx, blobSelect+` WHERE kind = ? ORDER BY key`, kind)
	if err != nil {
		return nil, e.classify(err)
	}
	defer rows.Close()
	var out []store.Blob
	for rows.Next() {
		b, err := scanBlob(rows)
		if err != nil {
			return nil, e.classify(err)
		}
		out = append(out, b)
	}
	return out, e.classify(rows.Err())
}
