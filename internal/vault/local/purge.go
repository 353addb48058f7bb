package local

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/rediacc/rediacc/internal/vault"
)

var _ vault.Purger = (*Vault)(nil)

// Purge implements vault.Purger: under the team's writer locks it removes
// the team's vault file, its backup (<team>.age.bak, which holds the
// previous version) and any temporary file left by an interrupted write,
// drops the cached entries and syncs the directory. The files are
// unlinked, not overwritten (on journaling and copy-on-write file systems
// overwriting in place does not reach the old blocks anyway): protect the
// disk itself where that matters. The empty lock file stays (processes may
// be waiting on it). Purging a vault that was never written succeeds.
func (v *Vault) Purge(ctx context.Context, team string) error {
	if err := vault.ValidateTeam(team); err != nil {
		return err
	}
	if v.cfg.blobs != nil {
		return v.purgeBlob(ctx, team) // blobs.go
	}
	return v.locked(ctx, team, func() error { return v.purge(team) })
}

func (v *Vault) purge(team string) error {
	paths := []string{v.path(team), v.bakPath(team)}
	for _, p := range paths[:2] {
		tmps, _ := filepath.Glob(filepath.Join(v.dir, "."+filepath.Base(p)+".tmp-*"))
		paths = append(paths, tmps...)
	}
	var errs []error
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fsError("remove", p, err))
		}
	}
	v.mu.Lock()
	delete(v.cache, team)
	v.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := syncDir(v.dir); err != nil {
		return err
	}
	v.logger.Info("local vault purged", "team", team, "files", strings.Join(paths[:2], ", "))
	return nil
}
