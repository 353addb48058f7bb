package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

var _ store.BlobEngine = (*Engine)(nil)

const blobSelect = `SELECT kind, key, data, revision, updated_at FROM blobs`

func scanBlob(row pgx.Row) (store.Blob, error) {
	var (
		b       store.Blob
		updated *int64
	)
	if err := row.Scan(&b.Kind, &b.Key, &b.Data, &b.Revision, &updated); err != nil {
		return store.Blob{}, err
	}
	b.UpdatedAt = fromNanos(updated)
	return b, nil
}

// blobRevision returns the stored revision of a blob (0: none), locking
// its row until tx ends.
func blobRevision(ctx context.Context, tx pgx.Tx, kind, key string) (int64, error) {
	var cur int64
	err := tx.QueryRow(ctx, `SELECT revision FROM blobs WHERE kind = $1 AND key = $2 FOR UPDATE`, kind, key).Scan(&cur)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return cur, err
}

// GetBlob implements store.BlobEngine.
func (e *Engine) GetBlob(ctx context.Context, kind, key string) (store.Blob, error) {
	if err := e.check(ctx); err != nil {
		return store.Blob{}, err
	}
	b, err := scanBlob(e.pool.QueryRow(ctx, blobSelect+` WHERE kind = $1 AND key = $2`, kind, key))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Blob{}, fmt.Errorf("%w: blob %s/%s", store.ErrNotFound, kind, key)
	}
	return b, e.classify(err)
}

// PutBlob implements store.BlobEngine: an existing row is locked (FOR
// UPDATE) while its revision is compared; of two first puts of one blob,
// the second's INSERT finds the first's row (ON CONFLICT DO NOTHING) and
// fails with ErrRevision. Either way one revision has exactly one winner.
func (e *Engine) PutBlob(ctx context.Context, b store.Blob) (store.Blob, error) {
	if err := fsm.CheckBlobName(b.Kind, b.Key); err != nil {
		return store.Blob{}, err
	}
	var out store.Blob
	err := e.write(ctx, func(tx pgx.Tx) error {
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
		if cur == 0 {
			tag, err := tx.Exec(ctx, `INSERT INTO blobs (kind, key, data, revision, updated_at) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (kind, key) DO NOTHING`, next.Kind, next.Key, data, next.Revision, nanos(next.UpdatedAt))
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				return fmt.Errorf("%w: blob %s/%s was created meanwhile", store.ErrRevision, b.Kind, b.Key)
			}
		} else if _, err := tx.Exec(ctx, `UPDATE blobs SET data = $1, revision = $2, updated_at = $3 WHERE kind = $4 AND key = $5`,
			data, next.Revision, nanos(next.UpdatedAt), next.Kind, next.Key); err != nil {
			return err
		}
		out = next
		return nil
	})
	if err != nil {
		return store.Blob{}, err
	}
	return out, nil
}

// DeleteBlob implements store.BlobEngine.
func (e *Engine) DeleteBlob(ctx context.Context, kind, key string, revision int64) error {
	return e.write(ctx, func(tx pgx.Tx) error {
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
		_, err = tx.Exec(ctx, `DELETE FROM blobs WHERE kind = $1 AND key = $2`, kind, key)
		return err
	})
}

// ListBlobs implements store.BlobEngine.
func (e *Engine) ListBlobs(ctx context.Context, kind string) ([]store.Blob, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	rows, err := e.pool.Query(ctx, blobSelect+` WHERE kind = $1 ORDER BY key`, kind)
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
