package rediacc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/vault"
	"github.com/rediacc/rediacc/internal/vault/hashicorp"
	"github.com/rediacc/rediacc/internal/vault/local"
)

// Vault keeps each team's secrets (credentials of its environment), so that
// no secret is ever written into a task: a task names the secrets it needs
// (TaskSpec.Secrets) and the worker resolves them at run time. Keys are
// paths such as "db/password"; values are byte strings. Put takes a
// check-and-set version (PutOptions.CAS) like HashiCorp Vault's KV v2: a
// write naming a stale version fails with ErrVersionConflict.
//
// Two implementations: OpenLocalVault (age-encrypted files, the embedded
// default) and NewHashiCorpVault (HashiCorp Vault, KV version 2).
type Vault = vault.Backend

// Secret is a vault entry. Its String method never prints the value.
type Secret = vault.Secret

// PutOptions tunes Vault.Put: CAS nil writes unconditionally, CAS 0 only
// creates, CAS n only replaces version n.
type PutOptions = vault.PutOptions

// CAS returns a pointer to v, for PutOptions.CAS.
func CAS(v int) *int { return vault.CAS(v) }

// Vault errors.
var (
	// ErrSecretNotFound: the team's vault has no such key. The message names
	// the team and key, never a value.
	ErrSecretNotFound = vault.ErrSecretNotFound
	// ErrVersionConflict: a check-and-set write named a stale version.
	ErrVersionConflict = vault.ErrVersionConflict
	// ErrVaultCorrupt: a vault file is truncated or damaged; the previous
	// version is kept beside it (.bak).
	ErrVaultCorrupt = vault.ErrCorrupt
	// ErrNoVault: the client has no vault (Config.Vault unset and no
	// DataDir for the default one).
	ErrNoVault = errors.New("no vault configured: set Config.Vault or Config.DataDir")
)

// LocalVaultOptions unlocks a local vault: with Passphrase (age's scrypt
// mode; never stored) or, when it is empty, with the age identity file
// IdentityFile (created 0600 on first use when missing).
type LocalVaultOptions struct {
	Passphrase []byte
	// IdentityFile defaults to DIR/../vault.key.
	IdentityFile string
	// ScryptWorkFactor is age's scrypt log2(N); default 18 (about 1 s and
	// 256 MiB per write). Tests may lower it.
	ScryptWorkFactor int
	// Logger receives the vault's own records (e.g. the identity file being
	// created). Default: slog.Default().
	Logger *slog.Logger
	// Store, when set, keeps the teams' encrypted files in this queue store
	// instead of dir (nothing is written to dir), so that workers on every
	// host sharing a PostgreSQL store read the same secrets. Files are
	// encrypted and decrypted here, on the client: the store holds age
	// ciphertext only. Concurrent writers (any host) are serialized by the
	// store's check-and-set revisions. Every host must unlock it with the
	// same passphrase or identity file (copy the key file). The Client's
	// default vault does this when its store is PostgreSQL.
	Store *Store
}

// OpenLocalVault opens the local encrypted vault in dir (0700; one
// age-encrypted file per team, 0600, written atomically with a .bak of the
// previous version). dir (and, with the default key file, its parent) must
// be owned by this process's user, not be a symbolic link and not be
// writable by group or others; files in it are opened without following
// links. Errors: ErrWrongPassphrase (the passphrase or identity does not
// decrypt existing files; nothing changed), ErrVaultCorrupt, ErrUnsafePath.
func OpenLocalVault(dir string, opts LocalVaultOptions) (Vault, error) {
	if abs, err := filepath.Abs(dir); err == nil && dir != "" { // its files are written later: never relative to a working directory that moved
		dir = abs
	}
	if opts.IdentityFile != "" {
		if abs, err := filepath.Abs(opts.IdentityFile); err == nil {
			opts.IdentityFile = abs
		}
	}
	var o []local.Option
	if len(opts.Passphrase) > 0 {
		o = append(o, local.WithPassphrase(opts.Passphrase))
	} else {
		id := opts.IdentityFile
		if id == "" {
			// The default key file lives in the data dir: check it too.
			parent := filepath.Dir(filepath.Clean(dir))
			if err := mkdirPrivate(parent); err != nil {
				return nil, fmt.Errorf("vault: %w", err)
			}
			id = filepath.Join(parent, "vault.key")
		}
		// A new key file only for a vault without secrets: one made for a
		// vault encrypted to a passphrase (or to a lost key) could never
		// open it.
		existing, _ := filepath.Glob(filepath.Join(dir, "*.age"))
		if opts.Store != nil {
			existing = nil
			if be, ok := opts.Store.e.(store.BlobEngine); ok {
				if bs, err := be.ListBlobs(context.Background(), store.BlobVault); err != nil {
					return nil, mapStoreErr(err)
				} else if len(bs) > 0 {
					existing = []string{"the store"}
				}
			}
		}
		if _, err := os.Stat(id); errors.Is(err, os.ErrNotExist) && len(existing) > 0 {
			return nil, &isError{msg: fmt.Sprintf("vault: %s holds secrets but its key file %s does not exist: give the passphrase the vault was created with, or restore the key file", dir, id), err: vault.ErrWrongPassphrase, is: ErrWrongPassphrase}
		}
		o = append(o, local.WithIdentityFile(id, true))
	}
	if opts.Logger != nil {
		o = append(o, local.WithLogger(opts.Logger))
	}
	if opts.Store != nil {
		be, ok := opts.Store.e.(store.BlobEngine)
		if !ok {
			return nil, fmt.Errorf("%w: store %s cannot keep vault files", ErrInvalidArgument, opts.Store)
		}
		o = append(o, local.WithBlobs(storeVaultFiles{be: be}))
	}
	if opts.ScryptWorkFactor > 0 {
		o = append(o, local.WithScryptWorkFactor(opts.ScryptWorkFactor))
	}
	v, err := local.Open(dir, o...)
	return v, vaultErr(err)
}

// HashiCorpVaultConfig configures NewHashiCorpVault: Address, Mount
// (default "secret"), PathPrefix (default "rediacc/{team}/"), Token or
// AppRole auth (tokens are renewed; AppRole logs in again when renewal
// stops), Timeout (default 30s).
type HashiCorpVaultConfig = hashicorp.Config

// HashiCorpAppRole holds AppRole credentials (RoleID, SecretID, MountPath).
type HashiCorpAppRole = hashicorp.AppRole

// NewHashiCorpVault connects to HashiCorp Vault (KV version 2) through
// github.com/hashicorp/vault/api. Errors: ErrCredentialsRefused (the token
// is invalid or expired, or the AppRole login was refused).
func NewHashiCorpVault(ctx context.Context, cfg HashiCorpVaultConfig) (Vault, error) {
	v, err := hashicorp.New(ctx, cfg)
	if errors.Is(err, vault.ErrPermissionDenied) { // at connection: the token or the AppRole login
		return nil, &isError{msg: err.Error() + " (check VAULT_TOKEN, or the AppRole role and secret ids)", err: err, is: ErrCredentialsRefused}
	}
	return v, vaultErr(err)
}

// vaultErr maps the vault's wrong-passphrase and unsafe-path errors onto
// the public ones.
func vaultErr(err error) error {
	err = unsafeErr(err)
	if err != nil && errors.Is(err, vault.ErrWrongPassphrase) && !errors.Is(err, ErrWrongPassphrase) {
		return &isError{msg: "vault: " + err.Error() + " (check the passphrase or the age key file the vault was opened with)", err: err, is: ErrWrongPassphrase}
	}
	if err != nil && (errors.Is(err, vault.ErrInvalidKey) || errors.Is(err, vault.ErrInvalidTeam)) {
		return fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	return err
}

// vault returns the client's vault, opening the default local one on first
// use.
func (c *Client) vault() (Vault, error) {
	c.vaultMu.Lock()
	defer c.vaultMu.Unlock()
	if c.vlt != nil {
		return c.vlt, nil
	}
	if c.cfg.Vault != nil {
		c.vlt = c.cfg.Vault
		return c.vlt, nil
	}
	if c.cfg.DataDir == "" {
		return nil, ErrNoVault
	}
	opts := LocalVaultOptions{Logger: c.log}
	if _, shared := c.engine.(store.Cluster); shared && c.st != nil {
		opts.Store = c.st // workers on every host read the same files
	}
	v, err := OpenLocalVault(filepath.Join(c.cfg.DataDir, "vault"), opts)
	if err != nil {
		return nil, err
	}
	c.vlt = v
	return v, nil
}

// SetSecret writes a secret into team's vault and returns its new version.
// cas, when not nil, is the version the write expects (0: the key must not
// exist). Team admins and owners. Audited with the key, never the value.
// The vault is keyed by the team's id: a rename keeps it, a later team of
// the same name does not see it.
// Errors: ErrNoActor, ErrPermissionDenied, ErrInvalidArgument (bad key),
// ErrVersionConflict, ErrNotFound (team).
func (c *Client) SetSecret(ctx context.Context, team, key string, value []byte, cas *int) (int, error) {
	d := map[string]string{"key": key}
	if cas != nil {
		d["cas"] = strconv.Itoa(*cas)
	}
	o, v, err := c.vaultOp(ctx, authz.VaultWrite, team, key, d)
	if err != nil {
		return 0, err
	}
	ver, err := v.Put(ctx, o.team.id, key, value, PutOptions{CAS: cas})
	if err != nil {
		return 0, o.fail(ctx, vaultErr(err))
	}
	o.detail["version"] = strconv.Itoa(ver)
	o.done(ctx)
	return ver, nil
}

// vaultOp authorizes action on team's vault (a team name) and returns the
// operation and the vault.
func (c *Client) vaultOp(ctx context.Context, action authz.Action, team, key string, detail map[string]string) (*op, Vault, error) {
	sc, err := c.resolveTeam(ctx, team)
	if err != nil {
		return nil, nil, err
	}
	o, _, err := c.authorize(ctx, action, sc, audit.EntityVault, key, detail)
	if err != nil {
		return nil, nil, err
	}
	if err := checkCASecretKey(key); err != nil { // sshca.go: the CA key never leaves the vault
		return nil, nil, o.fail(ctx, err)
	}
	v, err := c.vault()
	if err != nil {
		return nil, nil, o.fail(ctx, err)
	}
	return o, v, nil
}

// GetSecret reads a secret's value. Team admins and owners (operators use
// secrets in tasks but never read them). Audited with the key.
// Errors: ErrNoActor, ErrPermissionDenied, ErrNotFound (team),
// ErrSecretNotFound.
func (c *Client) GetSecret(ctx context.Context, team, key string) (Secret, error) {
	o, v, err := c.vaultOp(ctx, authz.VaultRead, team, key, map[string]string{"key": key})
	if err != nil {
		return Secret{}, err
	}
	s, err := v.Get(ctx, o.team.id, key)
	if err != nil {
		return Secret{}, o.fail(ctx, vaultErr(err))
	}
	o.detail["version"] = strconv.Itoa(s.Version)
	o.done(ctx)
	return s, nil
}

// ListSecrets lists the keys (never values) of team's vault. Admins,
// operators and owners. Errors: ErrNoActor, ErrPermissionDenied,
// ErrNotFound (team).
func (c *Client) ListSecrets(ctx context.Context, team string) ([]string, error) {
	o, v, err := c.vaultOp(ctx, authz.VaultList, team, "", nil)
	if err != nil {
		return nil, err
	}
	keys, err := v.List(ctx, o.team.id)
	if err != nil {
		return nil, o.fail(ctx, vaultErr(err))
	}
	o.detail["keys"] = strconv.Itoa(len(keys))
	o.done(ctx)
	return keys, nil
}

// DeleteSecret removes a key (all versions) from team's vault. Team admins
// and owners. Errors: ErrNoActor, ErrPermissionDenied, ErrNotFound (team),
// ErrSecretNotFound.
func (c *Client) DeleteSecret(ctx context.Context, team, key string) error {
	o, v, err := c.vaultOp(ctx, authz.VaultDelete, team, key, map[string]string{"key": key})
	if err != nil {
		return err
	}
	if err := v.Delete(ctx, o.team.id, key); err != nil {
		return o.fail(ctx, vaultErr(err))
	}
	o.done(ctx)
	return nil
}

// resolveSecrets reads the values of a task's secrets (ENV → key) from the
// vault of the task's own team (sc: the id the task was queued under, never
// its machine's current team). A missing key is ErrSecretNotFound naming
// the key.
func (c *Client) resolveSecrets(ctx context.Context, sc scope, refs map[string]string) (map[string][]byte, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	v, err := c.vault()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidTask, err)
	}
	out := make(map[string][]byte, len(refs))
	for env, key := range refs {
		s, err := v.Get(ctx, sc.id, key)
		if err != nil {
			if errors.Is(err, vault.ErrSecretNotFound) {
				return nil, fmt.Errorf("%w: task secret %s refers to key %q, which team %q's vault lacks (add it: rediacc vault set --team %s %s)", ErrSecretNotFound, env, key, sc.label(), sc.label(), key)
			}
			return nil, vaultErr(err)
		}
		out[env] = s.Value
	}
	if err := checkSecretValues(refs, out); err != nil { // limits.go
		return nil, err
	}
	return out, nil
}

// isError carries a message of its own while matching another sentinel
// with errors.Is (so the vault's wrong-passphrase error does not read as an
// SSH one).
type isError struct {
	msg string
	err error
	is  error
}

func (e *isError) Error() string        { return e.msg }
func (e *isError) Unwrap() error        { return e.err }
func (e *isError) Is(target error) bool { return target == e.is }

// storeVaultFiles keeps the local vault's encrypted team files in the
// queue store (store.BlobVault, keyed by team), for local.WithBlobs.
type storeVaultFiles struct{ be store.BlobEngine }

func (s storeVaultFiles) Load(ctx context.Context, team string) ([]byte, int64, error) {
	b, err := s.be.GetBlob(ctx, store.BlobVault, team)
	if errors.Is(err, store.ErrNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, mapStoreErr(err)
	}
	return b.Data, b.Revision, nil
}

func (s storeVaultFiles) Save(ctx context.Context, team string, raw []byte, revision int64) error {
	_, err := s.be.PutBlob(ctx, store.Blob{Kind: store.BlobVault, Key: team, Data: raw, Revision: revision})
	if errors.Is(err, store.ErrRevision) {
		return local.ErrConflict
	}
	return mapStoreErr(err)
}

func (s storeVaultFiles) Teams(ctx context.Context) ([]string, error) {
	bs, err := s.be.ListBlobs(ctx, store.BlobVault)
	if err != nil {
		return nil, mapStoreErr(err)
	}
	teams := make([]string, 0, len(bs))
	for _, b := range bs {
		teams = append(teams, b.Key)
	}
	return teams, nil
}

func (s storeVaultFiles) Delete(ctx context.Context, team string) error {
	for {
		b, err := s.be.GetBlob(ctx, store.BlobVault, team)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return mapStoreErr(err)
		}
		err = s.be.DeleteBlob(ctx, store.BlobVault, team, b.Revision)
		if errors.Is(err, store.ErrRevision) || errors.Is(err, store.ErrNotFound) {
			continue // changed or removed meanwhile: look again
		}
		return mapStoreErr(err)
	}
}

func (s storeVaultFiles) String() string { return "the store" }
