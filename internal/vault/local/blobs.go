package local

import (
	"context"
	"errors"
	"fmt"

	"github.com/rediacc/rediacc/internal/vault"
)

// Blobs keeps the teams' encrypted files somewhere other than the vault
// directory: rediacc keeps them in its queue store when that is shared by
// hosts (PostgreSQL), so that a worker on any host reads the same secrets.
// A Blobs only ever sees ciphertext: files are encrypted and decrypted by
// the Vault, as in the directory.
type Blobs interface {
	// Load returns team's file and its revision (nil and 0 when the team
	// has none).
	Load(ctx context.Context, team string) (raw []byte, revision int64, err error)
	// Save stores raw as team's file if its stored revision is still
	// revision (0: none stored), and returns ErrConflict otherwise (nothing
	// changed).
	Save(ctx context.Context, team string, raw []byte, revision int64) error
	// Teams returns the teams that have a file.
	Teams(ctx context.Context) ([]string, error)
	// Delete removes team's file (nil when it has none).
	Delete(ctx context.Context, team string) error
	// String names where the files are, in messages (e.g. "the store").
	String() string
}

// ErrConflict: Blobs.Save found the team's file changed since it was
// loaded. The Vault loads it again and re-applies its change (a
// check-and-set write of a secret is checked again against the new file).
var ErrConflict = errors.New("local vault: the team's file changed meanwhile")

// WithBlobs keeps the teams' encrypted files in b instead of the vault
// directory (nothing is written there; Restore has no backup to restore).
// Writers on any number of hosts are serialized by b's revisions instead
// of file locks.
func WithBlobs(b Blobs) Option {
	return func(c *config) error {
		if b == nil {
			return errors.New("local vault: nil Blobs")
		}
		c.blobs = b
		return nil
	}
}

// blobName names team's file in b, for messages.
func (v *Vault) blobName(team string) string {
	return fmt.Sprintf("%s's vault of team %s", v.cfg.blobs, team)
}

// loadBlob returns team's decrypted entries (shared with the cache), the
// ciphertext (nil when none) and its revision.
func (v *Vault) loadBlob(ctx context.Context, team string) (map[string]entry, []byte, int64, error) {
	raw, rev, err := v.cfg.blobs.Load(ctx, team)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("local vault: reading %s: %w", v.blobName(team), err)
	}
	if raw == nil {
		return map[string]entry{}, nil, 0, nil
	}
	entries, err := v.decryptCached(v.blobName(team), team, raw)
	if err != nil {
		return nil, nil, 0, err
	}
	return entries, raw, rev, nil
}

// updateBlob is update on b: load, apply fn to a copy, encrypt, save at
// the loaded revision; a conflict starts again from a fresh load.
func (v *Vault) updateBlob(ctx context.Context, team string, fn func(map[string]entry) error) error {
	for {
		if err := v.begin(ctx); err != nil {
			return err
		}
		entries, _, rev, err := v.loadBlob(ctx, team)
		if err != nil {
			return err
		}
		next := make(map[string]entry, len(entries)+1)
		for k, e := range entries {
			next[k] = e
		}
		if err := fn(next); err != nil {
			return err
		}
		raw, err := v.encrypt(team, next)
		if err != nil {
			return err
		}
		err = v.cfg.blobs.Save(ctx, team, raw, rev)
		if errors.Is(err, ErrConflict) {
			continue
		}
		if err != nil {
			return fmt.Errorf("local vault: writing %s: %w", v.blobName(team), err)
		}
		v.store(team, raw, next)
		return nil
	}
}

// checkUnlockBlobs decrypts the first readable team file in b to check
// the passphrase or identity.
func (v *Vault) checkUnlockBlobs() error {
	ctx := context.Background()
	teams, err := v.cfg.blobs.Teams(ctx)
	if err != nil {
		return fmt.Errorf("local vault: listing the teams' vaults in %s: %w", v.cfg.blobs, err)
	}
	for _, team := range teams {
		if vault.ValidateTeam(team) != nil {
			continue
		}
		_, _, _, err := v.loadBlob(ctx, team)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, vault.ErrWrongPassphrase):
			return err
		default:
			v.logger.Warn("local vault: cannot check team file", "team", team, "where", v.cfg.blobs.String(), "err", err)
		}
	}
	return nil
}

// purgeBlob is Purge on b.
func (v *Vault) purgeBlob(ctx context.Context, team string) error {
	if err := v.begin(ctx); err != nil {
		return err
	}
	v.writeMu.Lock()
	defer v.writeMu.Unlock()
	if err := v.cfg.blobs.Delete(ctx, team); err != nil {
		return fmt.Errorf("local vault: removing %s: %w", v.blobName(team), err)
	}
	v.mu.Lock()
	delete(v.cache, team)
	v.mu.Unlock()
	v.logger.Info("local vault purged", "team", team, "where", v.cfg.blobs.String())
	return nil
}
