package vault

import (
	"context"
	"errors"
	"fmt"
)

// Purger is implemented by backends that can destroy a team's whole vault
// at once, leaving nothing of it behind (see Purge).
type Purger interface {
	// Purge destroys every key of team's vault with all its versions and
	// whatever else the backend keeps for the team (backup copies,
	// metadata). Purging an empty or never-written vault succeeds.
	// Errors: ErrInvalidTeam, ErrPermissionDenied, ErrUnavailable,
	// ErrClosed, the context's error.
	Purge(ctx context.Context, team string) error
}

// Purge destroys team's vault in b: with b's own Purge when it is a
// Purger, else by deleting every listed key (each with all its versions).
func Purge(ctx context.Context, b Backend, team string) error {
	if p, ok := b.(Purger); ok {
		return p.Purge(ctx, team)
	}
	keys, err := b.List(ctx, team)
	if err != nil {
		return err
	}
	var errs []error
	for _, k := range keys {
		if err := b.Delete(ctx, team, k); err != nil && !errors.Is(err, ErrSecretNotFound) {
			errs = append(errs, fmt.Errorf("key %q: %w", k, err))
		}
	}
	return errors.Join(errs...)
}
