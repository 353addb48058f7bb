package postgres

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rediacc/rediacc/internal/store"
)

// refusedLogin reports whether err is a login that cannot succeed with the
// same credentials and settings: the server refused it (SQLSTATE class 28:
// invalid authorization specification, invalid password, a role not
// permitted to log in), or the client refused the server's authentication
// (the DSN's require_auth or channel_binding not met, a SCRAM exchange
// that failed). It happens when the store is opened and, on a pooled
// connection, whenever the server turns the login away later (password
// changed, role dropped or made NOLOGIN mid-run). A network failure during
// authentication is not one.
func refusedLogin(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return strings.HasPrefix(pe.Code, "28")
	}
	var (
		ce *pgconn.ConnectError
		ne net.Error
	)
	if !errors.As(err, &ce) || errors.As(err, &ne) {
		return false
	}
	msg := ce.Error()
	for _, s := range []string{"require_auth check failed", "failed SASL auth", "channel binding"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// loginError is err, a refused login (refusedLogin), as
// store.ErrUnauthenticated naming the store and what to check.
func (e *Engine) loginError(err error) error {
	return fmt.Errorf("postgres store %s: %w: %w (check the user and password in the store URL, its require_auth and channel_binding settings, and the server's pg_hba.conf)",
		e.desc, store.ErrUnauthenticated, err)
}
