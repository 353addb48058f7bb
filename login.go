package rediacc

import (
	"context"
	"fmt"

	"github.com/rediacc/rediacc/internal/store"
)

// LoginError: on a PostgreSQL store, the database login the Client's
// connections authenticated as (session_user) may not act as the wanted
// user: the login is mapped to no rediacc user, or the wanted actor (set
// with WithActor, WithImpersonation or Config.DefaultActor) is another
// user and the login holds no impersonation grant. It wraps
// ErrPermissionDenied (CLI exit 3). The database enforces the same rule
// on every audit record it stores; the SDK refuses before the operation
// starts. See docs/POSTGRES.md, "Logins and the acting user".
type LoginError struct {
	Login  string // the database login (session_user)
	User   string // the rediacc user it is mapped to; "" when unmapped
	Wanted string // the actor the caller asked for; "" for the default
}

func (e *LoginError) Error() string {
	if e.User == "" {
		return fmt.Sprintf("%v: database login %q is mapped to no rediacc user: have the store's owner login map it "+
			"(INSERT INTO logins (login, user_name, impersonate, added_at) VALUES ('%s', '<user>', false, 0) in the store's schema; see docs/POSTGRES.md)",
			ErrPermissionDenied, e.Login, e.Login)
	}
	return fmt.Sprintf("%v: database login %q acts as rediacc user %q and may not act as %q (it holds no impersonation grant): "+
		"run without --as/WithActor to act as %q, or have the store's owner login grant it "+
		"(UPDATE logins SET impersonate = true WHERE login = '%s' in the store's schema; see docs/POSTGRES.md)",
		ErrPermissionDenied, e.Login, e.User, e.Wanted, e.User, e.Login)
}

func (e *LoginError) Unwrap() error { return ErrPermissionDenied }

// readLogin reads, once at New, the database login of the store's
// connections and its mapping (engines with logins: PostgreSQL).
func (c *Client) readLogin(ctx context.Context) error {
	lg, ok := c.engine.(store.Logins)
	if !ok {
		return nil
	}
	l, err := lg.SessionLogin(ctx)
	if err != nil {
		return fmt.Errorf("rediacc: reading the store's database login: %w", mapStoreErr(err))
	}
	c.login = &l
	return nil
}

// loginActor returns the actor of an operation on a store with logins:
// the login's user when wanted is "", wanted itself when it is the login's
// user or the login may impersonate; else a *LoginError.
func (c *Client) loginActor(wanted string) (string, error) {
	l := c.login
	if !l.Stored {
		return "", &LoginError{Login: l.Login, Wanted: wanted}
	}
	switch {
	case wanted == "":
		return l.User, nil
	case wanted == l.User || l.Impersonate:
		return wanted, nil
	}
	return "", &LoginError{Login: l.Login, User: l.User, Wanted: wanted}
}
