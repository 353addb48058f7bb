package rediacc

import (
	"context"
	"errors"
	"fmt"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/memory"
	"github.com/rediacc/rediacc/internal/store/sqlite"
)

// Store is where the queue, the machines and (later) teams and the audit
// trail live. Open one with OpenSQLite (durable, the default) or
// NewMemoryStore (tests and short-lived programs), and hand it to
// Config.Store. A Client closes the Store it was given.
type Store struct {
	e    store.Engine
	desc string
}

// OpenSQLite opens (creating if needed, mode 0600) the embedded SQLite store
// at path. Several processes may share one file. Returns ErrCorruptStore
// when the file is not a rediacc store, and ErrUnsafePath when it (or a
// file SQLite keeps beside it: -wal, -shm) is a symbolic link.
func OpenSQLite(ctx context.Context, path string) (*Store, error) {
	e, err := sqlite.Open(ctx, path)
	if err != nil {
		if u := unsafeErr(err); u != err {
			return nil, u // a symbolic link where the store's files go (datadir.go)
		}
		return nil, mapStoreErr(err)
	}
	return &Store{e: e, desc: "sqlite:" + path}, nil
}

// NewMemoryStore returns a store that lives in this process only.
func NewMemoryStore() *Store { return &Store{e: memory.New(), desc: "memory"} }

// String names the store ("sqlite:/path" or "memory").
func (s *Store) String() string { return s.desc }

// Close closes the store. A Client built on it (Config.Store) closes it on
// its own Close: call this only for a store no Client took, e.g. when New
// failed.
func (s *Store) Close() error { return s.e.Close() }

// mapStoreErr turns engine errors into the public sentinels.
func mapStoreErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("%w: %v", ErrNotFound, err)
	case errors.Is(err, store.ErrExists):
		return fmt.Errorf("%w: %v", ErrExists, err)
	case errors.Is(err, store.ErrNotCancellable):
		return fmt.Errorf("%w: %v", ErrNotCancellable, err)
	case errors.Is(err, store.ErrClosed):
		return fmt.Errorf("%w: %v", ErrClosed, err)
	case errors.Is(err, store.ErrCorrupt), errors.Is(err, store.ErrSchemaTooNew):
		return fmt.Errorf("%w: %v", ErrCorruptStore, err)
	case errors.Is(err, store.ErrMachineHasTasks):
		return fmt.Errorf("%w: %v", ErrMachineBusy, err)
	case errors.Is(err, store.ErrInvalidArgument):
		return fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	case errors.Is(err, store.ErrForbidden):
		return fmt.Errorf("%w: %v", ErrPermissionDenied, err)
	case errors.Is(err, store.ErrUnauthenticated):
		return fmt.Errorf("%w: %v", ErrCredentialsRefused, err)
	case errors.Is(err, store.ErrGuard):
		var ge *store.GuardError
		if errors.As(err, &ge) && ge.Condition.Kind == store.CondRole {
			return fmt.Errorf("%w: the role this operation needs is no longer held: %v", ErrPermissionDenied, err)
		}
		return fmt.Errorf("%w: %v", ErrConflict, err)
	}
	return err
}
