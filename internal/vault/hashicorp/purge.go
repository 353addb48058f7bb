package hashicorp

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/vault/api"

	"github.com/rediacc/rediacc/internal/vault"
)

var _ vault.Purger = (*Backend)(nil)

// Purge implements vault.Purger: it deletes the metadata, and so every
// version, of every entry under the team's path prefix, those whose names
// are not valid keys (written by other tools) included. Errors:
// vault.ErrInvalidTeam, vault.ErrPermissionDenied (the token needs list
// and delete on the metadata path), vault.ErrUnavailable,
// vault.ErrClosed, ctx's error.
func (b *Backend) Purge(ctx context.Context, team string) error {
	if err := vault.ValidateTeam(team); err != nil {
		return err
	}
	base := b.teamPrefix(team)
	return b.do(ctx, func() error {
		var paths []string
		if err := b.walkEntries(ctx, base, "", func(rel string) { paths = append(paths, base+rel) }); err != nil {
			return err
		}
		var errs []error
		for _, p := range paths {
			if err := b.kv.DeleteMetadata(ctx, p); err != nil && !errors.Is(err, api.ErrSecretNotFound) {
				errs = append(errs, b.mapErr("delete", b.mount+"/metadata/"+p, err))
			}
		}
		if len(errs) > 0 {
			return fmt.Errorf("hashicorp vault: purge of team %q: %w", team, errors.Join(errs...))
		}
		return nil
	})
}
