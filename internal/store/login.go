package store

import (
	"context"
	"errors"
	"time"
)

// ErrForbidden: the database refused the change to the engine's login (a
// privilege it lacks, or an audit record naming an actor it may not act
// as). The root package reports it as ErrPermissionDenied.
var ErrForbidden = errors.New("store: the database refused this to the store's login")

// Login maps a database login (the role a connection authenticated as:
// PostgreSQL's session_user) to the rediacc user it acts as.
type Login struct {
	Login string // the database role name
	User  string // the rediacc user it acts as; Login itself when no mapping is stored
	// Impersonate lets the login act as other users (a service embedding
	// the SDK that passes its own users with WithActor). Without it, every
	// audit record a connection of the login appends must name User as
	// the actor: the database refuses the others.
	Impersonate bool
	AddedAt     time.Time // zero when no mapping is stored
	Stored      bool      // a mapping is stored (SessionLogin: false means the default)
}

// Logins is implemented by engines whose connections authenticate
// (PostgreSQL): the acting user defaults to the login's user, and the
// engine refuses audit records naming another actor unless the login holds
// the impersonation grant. The login that created the store holds it
// (its mapping is stored with the schema), so a single-role deployment
// behaves as before; logins added later act as themselves until granted.
type Logins interface {
	// SessionLogin returns the login of the engine's connections and its
	// mapping (the default — User = Login, no impersonation — when none
	// is stored).
	SessionLogin(ctx context.Context) (Login, error)
	// ListLogins returns the stored mappings ordered by login.
	ListLogins(ctx context.Context) ([]Login, error)
	// PutLogin stores a mapping (AddedAt defaults to now; a changed
	// mapping keeps the first AddedAt). ErrInvalidArgument (empty login or
	// user); ErrForbidden for a login without write access to the
	// mapping table.
	PutLogin(ctx context.Context, l Login) error
	// DeleteLogin removes a mapping. ErrNotFound.
	DeleteLogin(ctx context.Context, login string) error
}
