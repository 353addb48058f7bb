package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"

	"github.com/rediacc/rediacc"
)

// The CLI's actor (see docs/ROLES.md, "Trust boundaries"). The SDK trusts
// the actor its embedding program names; the CLI is an embedding program
// run by whoever can run it, so it names the operating-system login of the
// process, which the kernel vouches for. Acting as another user (--as,
// REDIACC_USER) is impersonation: allowed only to root and to the account
// that owns the data dir (who can read and rewrite the store file anyway),
// and recorded in the audit trail as the user with via=<login>. On a
// PostgreSQL store (--store postgres://...) the database login decides
// instead: without --as the actor is the rediacc user the login is mapped
// to, and --as needs the login's impersonation grant (docs/POSTGRES.md).

// errImpersonation: --as or REDIACC_USER named another user and the OS
// login may not act as others. It reads as a permission error (exit 3).
var errImpersonation = fmt.Errorf("%w: impersonation refused", rediacc.ErrPermissionDenied)

// osLogin is the process's OS login name and uid ("uid-N" when the uid has
// no passwd entry).
func osLogin() (string, int) {
	uid := os.Getuid()
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username, uid
	}
	return "uid-" + strconv.Itoa(uid), uid
}

// requestedActor is --as, else $REDIACC_USER ("" when neither is set).
func (g *globals) requestedActor() string {
	if g.as != "" {
		return g.as
	}
	return os.Getenv("REDIACC_USER")
}

// actorContext returns ctx acting as the CLI's actor: the OS login, or the
// user --as/REDIACC_USER names when the OS login may impersonate (root, or
// the data dir's owner), marked as impersonation.
func (g *globals) actorContext(ctx context.Context) (context.Context, error) {
	want := g.requestedActor()
	if strings.HasPrefix(g.storeURL, "postgres://") || strings.HasPrefix(g.storeURL, "postgresql://") {
		// PostgreSQL: the database login vouches, not the OS login. No --as
		// acts as the login's mapped user; --as needs the login's
		// impersonation grant (the SDK refuses otherwise: rediacc.LoginError).
		if want == "" {
			return ctx, nil
		}
		return rediacc.WithActor(ctx, want), nil
	}
	login, uid := osLogin()
	if want == "" || want == login {
		return rediacc.WithActor(ctx, login), nil
	}
	owner, known := dirOwner(g.dataDir)
	switch {
	case uid == 0:
	case known && owner == uid:
	case !known && g.dataDirMissing():
		// The first command creates the data dir: its owner will be this login.
	default:
		who := "the data dir's owner"
		if known {
			who = fmt.Sprintf("the data dir's owner (uid %d)", owner)
		}
		return nil, fmt.Errorf("%w: %s (uid %d) may not act as %s: only root or %s of %s may use --as or REDIACC_USER; run without them to act as %s",
			errImpersonation, login, uid, quoted(want), who, g.dataDir, login)
	}
	return rediacc.WithImpersonation(ctx, want, login), nil
}

// dataDirMissing reports whether the data dir does not exist yet.
func (g *globals) dataDirMissing() bool {
	_, err := os.Stat(g.dataDir)
	return errors.Is(err, os.ErrNotExist)
}
