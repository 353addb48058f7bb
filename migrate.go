package rediacc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/sqlite"
	"github.com/rediacc/rediacc/internal/vault"
)

// MigrationReport counts what MigrateFromSQLite copied.
type MigrationReport struct {
	Teams        int `json:"teams"`
	Members      int `json:"members"`
	StoreRoles   int `json:"storeRoles"`
	Machines     int `json:"machines"`
	Tasks        int `json:"tasks"`
	AuditRecords int `json:"auditRecords"` // records after the trail's base
	// AuditBase is the sequence number of the last record trimmed from the
	// source trail before the copy (0: none); the copy keeps the same base.
	AuditBase    int64 `json:"auditBase"`
	SSHKeys      int   `json:"sshKeys"`
	HostKeys     int   `json:"hostKeys"`     // machines with host keys in the store
	VaultTeams   int   `json:"vaultTeams"`   // teams whose encrypted vault file was copied
	AuditHeadSeq int64 `json:"auditHeadSeq"` // the copy's last audit record
}

// MigrateFromSQLite copies the embedded store of data directory dir (its
// SQLite file rediacc.db and the local vault's encrypted team files
// dir/vault/TEAM.age) into dst, which must be a new, empty PostgreSQL store
// (OpenPostgres): teams, members, store roles, machines (with their host
// keys), tasks with their attempts and output, the SSH key inventory, the
// vault files (still encrypted: copied as they are) and the audit trail
// with its sequence numbers and seals intact, so that `audit verify` on
// the copy, with the same audit keyring (dir/audit.key unless another was
// used), passes. Everything is written in one transaction: a failed
// migration writes nothing. Run it while no worker uses dir's store (the
// source is read as it is at that moment; opening it applies pending
// schema migrations of this binary, as any client would). The log archive
// under dir/archive is not copied (pruned tasks and archived audit records
// stay readable there); dst's own archive starts empty.
//
// Errors: ErrNotFound (no store in dir), ErrInvalidArgument (dst is not a
// store that can be migrated into), ErrExists (dst is not empty; the
// message says what it holds), ErrCorruptStore.
func MigrateFromSQLite(ctx context.Context, dir string, dst *Store) (MigrationReport, error) {
	var rep MigrationReport
	imp, ok := dst.e.(store.Importer)
	if !ok {
		return rep, fmt.Errorf("%w: %s cannot be migrated into: give a PostgreSQL store", ErrInvalidArgument, dst)
	}
	path := filepath.Join(dir, "rediacc.db")
	if _, err := os.Stat(path); err != nil {
		return rep, fmt.Errorf("%w: no rediacc store in %s (%v)", ErrNotFound, dir, err)
	}
	src, err := sqlite.Open(ctx, path)
	if err != nil {
		return rep, mapStoreErr(unsafeErr(err))
	}
	defer src.Close()
	snap, err := store.ReadSnapshot(ctx, src)
	if err != nil {
		return rep, mapStoreErr(fmt.Errorf("reading %s: %w", path, err))
	}
	// The local vault's files, as they are (age ciphertext).
	files, err := filepath.Glob(filepath.Join(dir, "vault", "*.age"))
	if err != nil {
		return rep, err
	}
	for _, f := range files {
		team := strings.TrimSuffix(filepath.Base(f), ".age")
		if vault.ValidateTeam(team) != nil || slices.ContainsFunc(snap.Blobs, func(b store.Blob) bool { return b.Kind == store.BlobVault && b.Key == team }) {
			continue
		}
		raw, err := os.ReadFile(f)
		if err != nil {
			return rep, fmt.Errorf("reading vault file %s: %w", f, err)
		}
		fi, err := os.Stat(f)
		if err != nil {
			return rep, err
		}
		snap.Blobs = append(snap.Blobs, store.Blob{Kind: store.BlobVault, Key: team, Data: raw, Revision: 1, UpdatedAt: fi.ModTime()})
	}
	if err := imp.Import(ctx, snap); err != nil {
		if errors.Is(err, store.ErrExists) {
			return rep, fmt.Errorf("%w: %v", ErrExists, strings.TrimPrefix(err.Error(), store.ErrExists.Error()+": "))
		}
		return rep, mapStoreErr(err)
	}
	rep = MigrationReport{Teams: len(snap.Teams), Members: len(snap.Members), StoreRoles: len(snap.StoreRoles),
		Machines: len(snap.Machines), Tasks: len(snap.Tasks), AuditRecords: len(snap.Audit), AuditBase: snap.AuditBase.Seq,
		SSHKeys: len(snap.Keys), AuditHeadSeq: snap.AuditBase.Seq + int64(len(snap.Audit))}
	for _, b := range snap.Blobs {
		switch b.Kind {
		case store.BlobHostKeys:
			rep.HostKeys++
		case store.BlobVault:
			rep.VaultTeams++
		}
	}
	return rep, nil
}
