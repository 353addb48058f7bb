package store

import (
	"context"
	"errors"
	"time"
)

// ErrRevision: a conditional update named a revision the record no longer
// has (someone changed it since it was read). Nothing was changed.
var ErrRevision = errors.New("store: record changed since it was read")

// Key is a record of the SSH key inventory: one SSH client key that one
// or more machines of a team log in with, its rotation state and the lock
// that lets one rotation at a time work on it (across every worker sharing
// the store). The key material itself is never here: it lives in the team
// vault. ID is immutable; Fingerprint changes when the key is rotated.
type Key struct {
	// ID is the key's immutable id (the root package derives it; required).
	ID string
	// TeamID is the owning team's id.
	TeamID string
	// Team is the team's name, filled on read (ignored on write).
	Team string
	// Fingerprint is the current key's SHA256 fingerprint ("SHA256:…").
	Fingerprint string
	// Data is opaque JSON owned by the root package (type, times, rotation
	// state, lock).
	Data []byte
	// Revision is 1 once created and grows by one with every update; an
	// update names the revision it read (optimistic concurrency).
	Revision int64
	// CreatedAt and UpdatedAt are set by the engine (now) on create and
	// update.
	CreatedAt time.Time
	UpdatedAt time.Time
}

// KeyFilter narrows ListKeys. Zero fields match everything.
type KeyFilter struct {
	// TeamIDs keeps keys of any of these teams (ids); nil = any.
	TeamIDs []string
}

// KeyEngine keeps the SSH key inventory. Engines implement it beside
// Engine and Access; the conformance tests are in storetest (Keys).
// Mutating methods append the context's audit records in the same
// transaction as their change, like every Engine method.
type KeyEngine interface {
	// CreateKey inserts k with Revision 1 and returns it as stored.
	// ErrExists when the id is taken; ErrInvalidArgument (empty ID or
	// TeamID).
	CreateKey(ctx context.Context, k Key) (Key, error)
	// GetKey returns one key. ErrNotFound.
	GetKey(ctx context.Context, id string) (Key, error)
	// ListKeys returns keys ordered by team name, then id.
	ListKeys(ctx context.Context, f KeyFilter) ([]Key, error)
	// UpdateKey replaces the Fingerprint and Data of key k.ID if its stored
	// Revision is still k.Revision, and returns it with the next revision.
	// ErrRevision when the revision differs (nothing changed); ErrNotFound.
	// TeamID cannot change (it is ignored).
	UpdateKey(ctx context.Context, k Key) (Key, error)
	// DeleteKey removes key id if its stored revision is revision (0: any).
	// ErrNotFound; ErrRevision.
	DeleteKey(ctx context.Context, id string, revision int64) error
}
