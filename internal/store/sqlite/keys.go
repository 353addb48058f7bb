package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

var _ store.KeyEngine = (*Engine)(nil)

const keyColumns = `k.id, k.team_id, k.fingerprint, k.data, k.revision, k.created_at, k.updated_at`

// keyTeamName is the SQL of a key's team name (its id when the team row
// is gone).
const keyTeamName = `COALESCE((SELECT t.name FROM teams t WHERE t.id = k.team_id), k.team_id)`

func scanKey(s scanner) (store.Key, error) {
	var (
		k                store.Key
		created, updated sql.NullInt64
	)
	if err := s.Scan(&k.ID, &k.TeamID, &k.Fingerprint, &k.Data, &k.Revision, &created, &updated, &k.Team); err != nil {
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
	err = e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO ssh_keys (id, team_id, fingerprint, data, revision, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
			k.ID, k.TeamID, k.Fingerprint, k.Data, k.Revision, nanos(k.CreatedAt), nanos(k.UpdatedAt))
		if err != nil {
			return err
		}
		return existsIfUnchanged(ctx, tx, k.ID)
	})
	if err != nil {
		return store.Key{}, e.classify(err)
	}
	return e.GetKey(ctx, k.ID)
}

// existsIfUnchanged returns ErrExists when the INSERT … DO NOTHING before
// it in tx inserted nothing.
func existsIfUnchanged(ctx context.Context, tx *sql.Tx, id string) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT changes()`).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%w: key %s", store.ErrExists, id)
	}
	return nil
}

// GetKey implements store.KeyEngine.
func (e *Engine) GetKey(ctx context.Context, id string) (store.Key, error) {
	if err := e.check(ctx); err != nil {
		return store.Key{}, err
	}
	k, err := scanKey(e.r.QueryRowContext(ctx, `SELECT `+keyColumns+`, `+keyTeamName+` FROM ssh_keys k WHERE k.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Key{}, fmt.Errorf("%w: key %s", store.ErrNotFound, id)
	}
	return k, e.classify(err)
}

// ListKeys implements store.KeyEngine.
func (e *Engine) ListKeys(ctx context.Context, f store.KeyFilter) ([]store.Key, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	q := `SELECT ` + keyColumns + `, ` + keyTeamName + ` AS team FROM ssh_keys k`
	var args []any
	if f.TeamIDs != nil {
		if len(f.TeamIDs) == 0 {
			return nil, nil
		}
		q += ` WHERE k.team_id IN (?` + strings.Repeat(",?", len(f.TeamIDs)-1) + `)`
		for _, t := range f.TeamIDs {
			args = append(args, t)
		}
	}
	rows, err := e.r.QueryContext(ctx, q+` ORDER BY team, k.id`, args...)
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

// UpdateKey implements store.KeyEngine.
func (e *Engine) UpdateKey(ctx context.Context, u store.Key) (store.Key, error) {
	err := e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		cur, err := scanKey(tx.QueryRowContext(ctx, `SELECT `+keyColumns+`, `+keyTeamName+` FROM ssh_keys k WHERE k.id = ?`, u.ID))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: key %s", store.ErrNotFound, u.ID)
		}
		if err != nil {
			return err
		}
		next, err := fsm.UpdateKey(cur, u, time.Now())
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE ssh_keys SET fingerprint = ?, data = ?, revision = ?, updated_at = ? WHERE id = ?`,
			next.Fingerprint, next.Data, next.Revision, nanos(next.UpdatedAt), next.ID)
		return err
	})
	if err != nil {
		return store.Key{}, e.classify(err)
	}
	return e.GetKey(ctx, u.ID)
}

// DeleteKey implements store.KeyEngine.
func (e *Engine) DeleteKey(ctx context.Context, id string, revision int64) error {
	return e.classify(e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var cur int64
		err := tx.QueryRowContext(ctx, `SELECT revision FROM ssh_keys WHERE id = ?`, id).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: key %s", store.ErrNotFound, id)
		}
		if err != nil {
			return err
		}
		if revision != 0 && revision != cur {
			return fmt.Errorf("%w: key %s is at revision %d, not %d", store.ErrRevision, id, cur, revision)
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM ssh_keys WHERE id = ?`, id)
		return err
	}))
}
