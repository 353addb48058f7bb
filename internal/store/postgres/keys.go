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

var _ store.KeyEngine = (*Engine)(nil)

// keySelect reads keys with their team's name (its id when the team row is
// gone).
const keySelect = `SELECT id, team_id, fingerprint, data, revision, created_at, updated_at,
	COALESCE((SELECT t.name FROM teams t WHERE t.id = ssh_keys.team_id), team_id) AS team_name FROM ssh_keys`

func scanKey(row pgx.Row) (store.Key, error) {
	var (
		k                store.Key
		created, updated *int64
	)
	if err := row.Scan(&k.ID, &k.TeamID, &k.Fingerprint, &k.Data, &k.Revision, &created, &updated, &k.Team); err != nil {
		return store.Key{}, err
	}
	k.CreatedAt, k.UpdatedAt = fromNanos(created), fromNanos(updated)
	return k, nil
}

// CreateKey implements store.KeyEngine.
func (e *Engine) CreateKey(ctx context.Context, k store.Key) (store.Key, error) {
	k, err := fsm.NewKey(k, time.Now())
	if err != nil {
		return store.Key{}, err
	}
	err = e.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO ssh_keys (id, team_id, fingerprint, data, revision, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING`,
			k.ID, k.TeamID, k.Fingerprint, blob(k.Data), k.Revision, nanos(k.CreatedAt), nanos(k.UpdatedAt))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: key %s", store.ErrExists, k.ID)
		}
		return nil
	})
	if err != nil {
		return store.Key{}, err
	}
	return e.GetKey(ctx, k.ID)
}

// GetKey implements store.KeyEngine.
func (e *Engine) GetKey(ctx context.Context, id string) (store.Key, error) {
	if err := e.check(ctx); err != nil {
		return store.Key{}, err
	}
	k, err := scanKey(e.pool.QueryRow(ctx, keySelect+` WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Key{}, fmt.Errorf("%w: key %s", store.ErrNotFound, id)
	}
	return k, e.classify(err)
}

// ListKeys implements store.KeyEngine.
func (e *Engine) ListKeys(ctx context.Context, f store.KeyFilter) ([]store.Key, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	q, args := keySelect, []any{}
	if f.TeamIDs != nil {
		if len(f.TeamIDs) == 0 {
			return nil, nil
		}
		q += ` WHERE team_id = ANY($1)`
		args = append(args, f.TeamIDs)
	}
	rows, err := e.pool.Query(ctx, q+` ORDER BY team_name, id`, args...)
	if err != nil {
		return nil, e.classify(err)
	}
	defer rows.Close()
	var out []store.Key
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, e.classify(err)
		}
		out = append(out, k)
	}
	return out, e.classify(rows.Err())
}

// UpdateKey implements store.KeyEngine: the row is locked (FOR UPDATE)
// while its revision is compared, so concurrent updates of one revision
// have exactly one winner.
func (e *Engine) UpdateKey(ctx context.Context, u store.Key) (store.Key, error) {
	var out store.Key
	err := e.write(ctx, func(tx pgx.Tx) error {
		cur, err := scanKey(tx.QueryRow(ctx, keySelect+` WHERE id = $1 FOR UPDATE`, u.ID))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: key %s", store.ErrNotFound, u.ID)
		}
		if err != nil {
			return err
		}
		next, err := fsm.UpdateKey(cur, u, time.Now())
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE ssh_keys SET fingerprint = $1, data = $2, revision = $3, updated_at = $4 WHERE id = $5`,
			next.Fingerprint, blob(next.Data), next.Revision, nanos(next.UpdatedAt), next.ID)
		out = next
		return err
	})
	if err != nil {
		return store.Key{}, err
	}
	return out, nil
}

// DeleteKey implements store.KeyEngine.
func (e *Engine) DeleteKey(ctx context.Context, id string, revision int64) error {
	return e.write(ctx, func(tx pgx.Tx) error {
		var cur int64
		err := tx.QueryRow(ctx, `SELECT revision FROM ssh_keys WHERE id = $1 FOR UPDATE`, id).Scan(&cur)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: key %s", store.ErrNotFound, id)
		}
		if err != nil {
			return err
		}
		if revision != 0 && revision != cur {
			return fmt.Errorf("%w: key %s is at revision %d, not %d", store.ErrRevision, id, cur, revision)
		}
		_, err = tx.Exec(ctx, `DELETE FROM ssh_keys WHERE id = $1`, id)
		return err
	})
}
