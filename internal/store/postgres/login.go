package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rediacc/rediacc/internal/store"
)

var _ store.Logins = (*Engine)(nil)

// SessionLogin returns the login of the engine's connections
// (session_user) and its stored mapping, or the default one.
func (e *Engine) SessionLogin(ctx context.Context) (store.Login, error) {
	if err := e.check(ctx); err != nil {
		return store.Login{}, err
	}
	var (
		l     store.Login
		added *int64
		user  *string
		imp   *bool
	)
	err := e.pool.QueryRow(ctx, `SELECT session_user, l.user_name, l.impersonate, l.added_at
		FROM (SELECT 1) AS one LEFT JOIN logins AS l ON l.login = session_user`).Scan(&l.Login, &user, &imp, &added)
	if err != nil {
		return store.Login{}, e.classify(err)
	}
	l.User = l.Login
	if user != nil {
		l.User, l.Impersonate, l.AddedAt, l.Stored = *user, *imp, fromNanos(added), true
	}
	return l, nil
}

// ListLogins returns the stored mappings ordered by login.
func (e *Engine) ListLogins(ctx context.Context) ([]store.Login, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	rows, _ := e.pool.Query(ctx, `SELECT login, user_name, impersonate, added_at FROM logins ORDER BY login`)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Login, error) {
		var l store.Login
		var added int64
		err := r.Scan(&l.Login, &l.User, &l.Impersonate, &added)
		l.AddedAt, l.Stored = time.Unix(0, added).UTC(), true
		return l, err
	})
	return out, e.classify(err)
}

// PutLogin stores a mapping, keeping the first AddedAt of a changed one.
func (e *Engine) PutLogin(ctx context.Context, l store.Login) error {
	if l.Login == "" || l.User == "" {
		return fmt.Errorf("%w: a login mapping needs a login and a user", store.ErrInvalidArgument)
	}
	if l.AddedAt.IsZero() {
		l.AddedAt = time.Now()
	}
	return e.write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO logins (login, user_name, impersonate, added_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (login) DO UPDATE SET user_name = excluded.user_name, impersonate = excluded.impersonate`,
			l.Login, l.User, l.Impersonate, l.AddedAt.UnixNano())
		return err
	})
}

// DeleteLogin removes a mapping. store.ErrNotFound.
func (e *Engine) DeleteLogin(ctx context.Context, login string) error {
	return e.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM logins WHERE login = $1`, login)
		if err == nil && tag.RowsAffected() == 0 {
			err = fmt.Errorf("%w: login %q has no mapping", store.ErrNotFound, login)
		}
		return err
	})
}
