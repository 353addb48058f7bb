// Package local is the local encrypted vault engine: one age-encrypted file
// per team under a directory.
//
// # Layout
//
//	DIR/                 mode 0700 (created by Open when missing)
//	DIR/<team>.age       the team's vault, mode 0600: an age file whose
//	                     plaintext is a JSON object
//	                     {"<key>": {"value": "<base64>", "version": N, "updatedAt": "<RFC 3339>",
//	                                "history": [{"value": …, "version": N-9, "updatedAt": …}, …]}, ...}
//	                     (history: the vault.RetainedVersions-1 versions before N, oldest first)
//	DIR/<team>.age.bak   the previous good version, kept before every replace
//	DIR/<team>.lock      an empty file used for flock(2) between processes
//
// # Unlocking
//
// A vault is unlocked either with a passphrase ([WithPassphrase], age's
// scrypt recipient; the passphrase is kept in memory only, never on disk) or
// with an age X25519 identity file ([WithIdentityFile], the standard
// "AGE-SECRET-KEY-1..." key file text, as written by age-keygen). All teams in
// one directory are expected to use the same passphrase or identity: Open
// checks it against an existing team file and fails with
// vault.ErrWrongPassphrase when it does not match.
//
// # Durability
//
// Every write decrypts the current file (refusing to go on if that fails),
// copies it to <team>.age.bak, writes the new version to a temporary file in
// the same directory, fsyncs it, reads it back to check it, renames it over
// <team>.age and fsyncs the directory. Writers are serialized by a mutex
// within a process and by an exclusive flock on <team>.lock across processes.
// Readers take no lock: they always see either the old or the new file.
//
// A truncated or otherwise unreadable file yields vault.ErrCorrupt, with a
// message naming the file and how to restore the backup ([Vault.Restore]); a
// corrupt file is never overwritten by a write.
//
// Decrypted vault contents are cached in memory, keyed by a SHA-256 of the
// ciphertext, so that repeated reads do not pay the scrypt cost again. Close
// drops the cache and zeroes the in-memory passphrase (best effort: Go may
// have made copies).
package local

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"filippo.io/age"
	"golang.org/x/sys/unix"

	"github.com/rediacc/rediacc/internal/safefs"
	"github.com/rediacc/rediacc/internal/vault"
)

// DefaultScryptWorkFactor is the default scrypt work factor (log2 of N) used
// when encrypting with a passphrase. 18 is age's own default: about a second
// of CPU and 256 MiB of memory per encryption or (uncached) decryption.
const DefaultScryptWorkFactor = 18

// maxScryptWorkFactor is the highest work factor accepted when decrypting,
// unless the configured factor is higher (age's default limit is 22).
const maxScryptWorkFactor = 22

// lockPollInterval is how often a blocked writer retries flock(2) while
// watching its context.
const lockPollInterval = 5 * time.Millisecond

// Option configures [Open].
type Option func(*config) error

type config struct {
	passphrase   []byte
	identityPath string
	createID     bool
	workFactor   int
	logger       *slog.Logger
	now          func() time.Time
	blobs        Blobs // the teams' files kept elsewhere than dir (blobs.go)
}

// WithPassphrase unlocks the vault with a passphrase (age scrypt). p is copied;
// the caller may zero it after Open returns. An empty passphrase is rejected.
// Exactly one of WithPassphrase and [WithIdentityFile] must be given.
func WithPassphrase(p []byte) Option {
	return func(c *config) error {
		if len(p) == 0 {
			return errors.New("local vault: empty passphrase")
		}
		c.passphrase = bytes.Clone(p)
		return nil
	}
}

// WithIdentityFile unlocks the vault with the age X25519 identity stored in
// the key file at path (the "AGE-SECRET-KEY-1..." text written by
// age-keygen; comment lines are allowed). When the file does not exist and
// createIfMissing is true, Open generates a new identity and writes it there
// with mode 0600, creating missing parent directories with mode 0700; when it
// is false, Open fails with an error wrapping fs.ErrNotExist. Losing the key
// file means losing the vault: back it up.
func WithIdentityFile(path string, createIfMissing bool) Option {
	return func(c *config) error {
		if path == "" {
			return errors.New("local vault: empty identity file path")
		}
		c.identityPath = path
		c.createID = createIfMissing
		return nil
	}
}

// WithScryptWorkFactor sets the scrypt work factor (log2 of N, 1..30) used to
// encrypt with a passphrase. The default is [DefaultScryptWorkFactor] (18).
// Lower values are faster and weaker; tests use about 10. Files are always
// decrypted with the factor they were written with, up to max(22, logN).
func WithScryptWorkFactor(logN int) Option {
	return func(c *config) error {
		if logN < 1 || logN > 30 {
			return fmt.Errorf("local vault: scrypt work factor %d out of range 1..30", logN)
		}
		c.workFactor = logN
		return nil
	}
}

// WithLogger sets the logger for warnings (loose file permissions) and debug
// messages. Log records never contain secret values. The default discards
// nothing: it is slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l != nil {
			c.logger = l
		}
		return nil
	}
}

// WithClock sets the time source for the updatedAt field of stored secrets.
// The default is time.Now.
func WithClock(now func() time.Time) Option {
	return func(c *config) error {
		if now != nil {
			c.now = now
		}
		return nil
	}
}

// Vault is the local encrypted vault engine. It implements vault.Backend and
// is safe for concurrent use by goroutines and by processes sharing its
// directory.
type Vault struct {
	dir    string
	cfg    config
	logger *slog.Logger

	// identity mode
	x25519    age.Identity
	recipient age.Recipient

	writeMu sync.Mutex // serializes writers in this process

	// statTrusted: reads may skip an unchanged file by its stat
	// (loadRead): the directory is on a local file system.
	statTrusted bool

	mu     sync.Mutex // guards closed, cache and passphrase
	closed bool
	cache  map[string]cached
}

type cached struct {
	sum     [sha256.Size]byte
	entries map[string]entry
	// stat is the file whose content has sum, as a read saw it (readFast);
	// zero until a read records it.
	stat    fileStat
	statSet bool
}

// entry is the JSON form of one secret in the decrypted vault document.
type entry struct {
	Value     []byte    `json:"value"` // base64 in JSON
	Version   int       `json:"version"`
	UpdatedAt time.Time `json:"updatedAt"`
	// History holds earlier versions, oldest first, at most
	// vault.RetainedVersions-1 of them (absent in files written before
	// versions were kept).
	History []oldVersion `json:"history,omitempty"`
}

// oldVersion is an earlier version of an entry.
type oldVersion struct {
	Value     []byte    `json:"value"`
	Version   int       `json:"version"`
	UpdatedAt time.Time `json:"updatedAt"`
}

var _ vault.Backend = (*Vault)(nil)

// Open opens (creating it with mode 0700 if missing) the vault directory dir,
// which must be owned by this process's user, not be a symbolic link and
// not be writable by group or others (an error wrapping safefs.ErrUnsafe
// otherwise); its files are opened without following links.
// Exactly one of [WithPassphrase] and [WithIdentityFile] must be given.
//
// If dir already holds team files, Open decrypts one to check the passphrase
// or identity and fails with an error wrapping vault.ErrWrongPassphrase when it
// does not match (so that a typo does not start a second, differently
// encrypted team file). Other errors: the identity file is missing
// (fs.ErrNotExist) or malformed, dir cannot be created or read
// (vault.ErrPermissionDenied for EACCES).
func Open(dir string, opts ...Option) (*Vault, error) {
	cfg := config{workFactor: DefaultScryptWorkFactor, logger: slog.Default(), now: time.Now}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if (cfg.passphrase == nil) == (cfg.identityPath == "") {
		return nil, errors.New("local vault: exactly one of WithPassphrase and WithIdentityFile is required")
	}
	if dir == "" {
		return nil, errors.New("local vault: empty directory")
	}
	v := &Vault{dir: dir, cfg: cfg, logger: cfg.logger, cache: map[string]cached{}, statTrusted: statTrusted(dir)}

	// A directory another user owns or may write in could hold links that
	// make this process write its secrets elsewhere: refused (safefs).
	if cfg.blobs != nil {
		// The files are kept in cfg.blobs: nothing is written to dir.
	} else if err := safefs.MkdirPrivate(dir); err != nil {
		return nil, fsError("open vault directory", dir, err)
	}
	if fi, err := os.Stat(dir); err == nil && cfg.blobs == nil && fi.Mode().Perm()&0o077 != 0 {
		v.logger.Warn("local vault directory is readable by other users; chmod 700 it", "dir", dir, "mode", fi.Mode().Perm().String())
	}

	if cfg.identityPath != "" {
		if err := v.loadIdentity(); err != nil {
			return nil, err
		}
	}
	if err := v.checkUnlock(); err != nil {
		v.wipe()
		return nil, err
	}
	return v, nil
}

// loadIdentity reads (or creates) the identity file.
func (v *Vault) loadIdentity() error {
	path := v.cfg.identityPath
	data, err := v.readIdentity(path)
	if errors.Is(err, fs.ErrNotExist) && v.cfg.createID {
		data, err = createIdentityFile(path, v.cfg.now(), v.readIdentity)
		if err == nil {
			v.logger.Info("created age identity file for the local vault; back it up", "path", path)
		}
	}
	if err != nil {
		return fsError("read identity file", path, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		v.logger.Warn("age identity file is accessible by other users; chmod 600 it", "path", path, "mode", fi.Mode().Perm().String())
	}
	ids, err := age.ParseIdentities(bytes.NewReader(data))
	clear(data)
	if err != nil {
		return fmt.Errorf("local vault: identity file %s: %v", path, err)
	}
	switch id := ids[0].(type) {
	case *age.X25519Identity:
		v.x25519, v.recipient = id, id.Recipient()
	case *age.HybridIdentity:
		v.x25519, v.recipient = id, id.Recipient()
	default:
		return fmt.Errorf("local vault: identity file %s: unsupported identity type %T", path, id)
	}
	return nil
}

// readIdentity reads the identity file. One in the vault's directory or in
// its parent (the data dir, where the default one lives) is read without
// following a link; one elsewhere (a key the operator placed, perhaps a
// mounted secret made of links) is read as is.
func (v *Vault) readIdentity(path string) ([]byte, error) {
	d, vd := filepath.Dir(filepath.Clean(path)), filepath.Clean(v.dir)
	if d == vd || d == filepath.Dir(vd) {
		return safefs.ReadFile(path)
	}
	return os.ReadFile(path)
}

// createIdentityFile generates an X25519 identity and writes it to path with
// mode 0600 in age-keygen's format. If another process created the file in the
// meantime, that file is read instead.
func createIdentityFile(path string, now time.Time, read func(string) ([]byte, error)) ([]byte, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	text := fmt.Sprintf("# created: %s\n# public key: %s\n%s\n", now.UTC().Format(time.RFC3339), id.Recipient(), id)
	f, err := safefs.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return read(path)
	}
	if err != nil {
		return nil, err
	}
	if _, err = f.WriteString(text); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	return []byte(text), nil
}

// checkUnlock decrypts the first readable team file to check the passphrase
// or identity, and primes the cache with it.
func (v *Vault) checkUnlock() error {
	if v.cfg.blobs != nil {
		return v.checkUnlockBlobs()
	}
	ents, err := os.ReadDir(v.dir)
	if err != nil {
		return fsError("read vault directory", v.dir, err)
	}
	for _, e := range ents {
		name := e.Name()
		team, ok := strings.CutSuffix(name, ".age")
		if !ok || !e.Type().IsRegular() || vault.ValidateTeam(team) != nil {
			continue
		}
		_, _, err := v.load(context.Background(), team)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, vault.ErrWrongPassphrase):
			return err
		default:
			// Corrupt or unreadable: reported when that team is used.
			v.logger.Warn("local vault: cannot check team file", "team", team, "err", err)
		}
	}
	return nil
}

func (v *Vault) path(team string) string    { return filepath.Join(v.dir, team+".age") }
func (v *Vault) bakPath(team string) string { return filepath.Join(v.dir, team+".age.bak") }
func (v *Vault) lockPath(team string) string {
	return filepath.Join(v.dir, team+".lock")
}

// Dir returns the vault directory.
func (v *Vault) Dir() string { return v.dir }

// Recipient returns the age recipient (public key, "age1...") of the identity
// in identity-file mode, or "" in passphrase mode.
func (v *Vault) Recipient() string {
	if s, ok := v.recipient.(fmt.Stringer); ok {
		return s.String()
	}
	return ""
}

func (v *Vault) begin(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return fmt.Errorf("local vault %s: %w", v.dir, vault.ErrClosed)
	}
	return nil
}

// Get implements vault.Backend. Errors: vault.ErrSecretNotFound,
// vault.ErrInvalidTeam, vault.ErrInvalidKey, vault.ErrWrongPassphrase,
// vault.ErrCorrupt, vault.ErrPermissionDenied, vault.ErrClosed, ctx.Err().
func (v *Vault) Get(ctx context.Context, team, key string) (vault.Secret, error) {
	return v.lookup(ctx, team, key, 0)
}

// GetVersion implements vault.Backend: the latest version and the
// vault.RetainedVersions-1 before it are kept. Errors as for Get;
// vault.ErrSecretNotFound for a version not kept.
func (v *Vault) GetVersion(ctx context.Context, team, key string, version int) (vault.Secret, error) {
	if err := vault.Validate(team, key); err == nil && version < 1 {
		return vault.Secret{}, vault.VersionNotFoundError(team, key, version)
	}
	return v.lookup(ctx, team, key, version)
}

// lookup returns version of key (0: the latest).
func (v *Vault) lookup(ctx context.Context, team, key string, version int) (vault.Secret, error) {
	if err := vault.Validate(team, key); err != nil {
		return vault.Secret{}, err
	}
	if err := v.begin(ctx); err != nil {
		return vault.Secret{}, err
	}
	entries, _, err := v.loadRead(ctx, team)
	if err != nil {
		return vault.Secret{}, err
	}
	e, ok := entries[key]
	if !ok {
		return vault.Secret{}, vault.NotFoundError(team, key)
	}
	if version == 0 || version == e.Version {
		return vault.Secret{Key: key, Value: bytes.Clone(e.Value), Version: e.Version, CreatedAt: e.UpdatedAt}, nil
	}
	for _, h := range e.History {
		if h.Version == version {
			return vault.Secret{Key: key, Value: bytes.Clone(h.Value), Version: h.Version, CreatedAt: h.UpdatedAt}, nil
		}
	}
	return vault.Secret{}, vault.VersionNotFoundError(team, key, version)
}

// List implements vault.Backend. Errors: vault.ErrInvalidTeam,
// vault.ErrWrongPassphrase, vault.ErrCorrupt, vault.ErrPermissionDenied,
// vault.ErrClosed, ctx.Err().
func (v *Vault) List(ctx context.Context, team string) ([]string, error) {
	if err := vault.ValidateTeam(team); err != nil {
		return nil, err
	}
	if err := v.begin(ctx); err != nil {
		return nil, err
	}
	entries, _, err := v.loadRead(ctx, team)
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(entries))
	for k := range entries {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys, nil
}

// Put implements vault.Backend. Errors: vault.ErrVersionConflict,
// vault.ErrInvalidTeam, vault.ErrInvalidKey, vault.ErrWrongPassphrase,
// vault.ErrCorrupt, vault.ErrPermissionDenied, vault.ErrClosed, ctx.Err(),
// and I/O errors naming the file.
func (v *Vault) Put(ctx context.Context, team, key string, value []byte, opts vault.PutOptions) (int, error) {
	if err := vault.Validate(team, key); err != nil {
		return 0, err
	}
	var version int
	err := v.update(ctx, team, func(entries map[string]entry) error {
		cur := entries[key].Version // 0 when missing
		if err := vault.CheckCAS(team, key, opts.CAS, cur); err != nil {
			return err
		}
		version = cur + 1
		next := entry{Value: bytes.Clone(value), Version: version, UpdatedAt: v.cfg.now().UTC()}
		if old, ok := entries[key]; ok {
			hist := append(append([]oldVersion(nil), old.History...), oldVersion{Value: old.Value, Version: old.Version, UpdatedAt: old.UpdatedAt})
			if n := len(hist) - (vault.RetainedVersions - 1); n > 0 {
				hist = hist[n:]
			}
			next.History = hist
		}
		entries[key] = next
		return nil
	})
	if err != nil {
		return 0, err
	}
	return version, nil
}

// Delete implements vault.Backend. Errors: vault.ErrSecretNotFound and the
// errors of Put.
func (v *Vault) Delete(ctx context.Context, team, key string) error {
	if err := vault.Validate(team, key); err != nil {
		return err
	}
	return v.update(ctx, team, func(entries map[string]entry) error {
		if _, ok := entries[key]; !ok {
			return vault.NotFoundError(team, key)
		}
		delete(entries, key)
		return nil
	})
}

// Restore replaces team's vault file with its backup <team>.age.bak, after
// checking that the backup decrypts with this vault's passphrase or identity.
// It is the way out of vault.ErrCorrupt. The backup is left in place. Errors:
// fs.ErrNotExist when there is no backup,
// vault.ErrWrongPassphrase or vault.ErrCorrupt when the backup cannot be
// decrypted, vault.ErrInvalidTeam, vault.ErrClosed, ctx.Err().
func (v *Vault) Restore(ctx context.Context, team string) error {
	if err := vault.ValidateTeam(team); err != nil {
		return err
	}
	if v.cfg.blobs != nil {
		return fmt.Errorf("local vault: team %s: %w: its file is kept in the store, whose writes are transactional, so no backup is kept", team, fs.ErrNotExist)
	}
	return v.locked(ctx, team, func() error { return v.restore(team) })
}

// restore is Restore under the team's writer locks.
func (v *Vault) restore(team string) error {
	bak := v.bakPath(team)
	raw, err := safefs.ReadFile(bak)
	if err != nil {
		return fsError("read backup", bak, err)
	}
	entries, err := v.decrypt(bak, raw)
	if err != nil {
		return err
	}
	if err := writeAtomic(v.dir, v.path(team), raw); err != nil {
		return err
	}
	v.store(team, raw, entries)
	v.logger.Info("local vault restored from backup", "team", team, "file", v.path(team))
	return nil
}

// Close implements vault.Backend: it drops the decrypted cache and zeroes the
// in-memory passphrase. It is idempotent and always returns nil.
func (v *Vault) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.closed {
		v.closed = true
		v.wipeLocked()
	}
	return nil
}

func (v *Vault) wipe() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.wipeLocked()
}

func (v *Vault) wipeLocked() {
	// Cached values are dropped, not zeroed: a call racing with Close may
	// still be copying one.
	v.cache = map[string]cached{}
	clear(v.cfg.passphrase)
}

// locked runs fn under team's writer locks (the process's and the
// cross-process flock), unless the vault is closed.
func (v *Vault) locked(ctx context.Context, team string, fn func() error) error {
	if err := v.begin(ctx); err != nil {
		return err
	}
	v.writeMu.Lock()
	defer v.writeMu.Unlock()
	unlock, err := v.lock(ctx, team)
	if err != nil {
		return err
	}
	defer unlock()
	if err := v.begin(ctx); err != nil { // closed while waiting?
		return err
	}
	return fn()
}

// update runs fn on a private copy of team's entries under the writer locks,
// then writes the result back. fn's error aborts the write.
func (v *Vault) update(ctx context.Context, team string, fn func(map[string]entry) error) error {
	if v.cfg.blobs != nil {
		if err := v.begin(ctx); err != nil {
			return err
		}
		v.writeMu.Lock()
		defer v.writeMu.Unlock()
		return v.updateBlob(ctx, team, fn) // blobs.go: check-and-set, no file lock
	}
	return v.locked(ctx, team, func() error { return v.updateLocked(team, fn) })
}

func (v *Vault) updateLocked(team string, fn func(map[string]entry) error) error {
	entries, oldRaw, err := v.load(context.Background(), team)
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
	if oldRaw != nil {
		if err := writeAtomic(v.dir, v.bakPath(team), oldRaw); err != nil {
			return err
		}
	}
	if err := writeAtomic(v.dir, v.path(team), raw); err != nil {
		return err
	}
	v.store(team, raw, next)
	return nil
}

// lock takes the exclusive cross-process lock of team, polling so that ctx
// can cancel the wait.
func (v *Vault) lock(ctx context.Context, team string) (unlock func(), err error) {
	p := v.lockPath(team)
	f, err := safefs.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fsError("open lock file", p, err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fsError("lock", p, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("local vault: waiting for lock %s: %w", p, ctx.Err())
		case <-time.After(lockPollInterval):
		}
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

// load returns team's decrypted entries (shared with the cache: callers must
// not modify them) and the raw ciphertext (nil when the file does not exist).
func (v *Vault) load(ctx context.Context, team string) (map[string]entry, []byte, error) {
	if v.cfg.blobs != nil {
		entries, raw, _, err := v.loadBlob(ctx, team)
		return entries, raw, err
	}
	p := v.path(team)
	raw, err := safefs.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]entry{}, nil, nil
	}
	if err != nil {
		return nil, nil, fsError("read", p, err)
	}
	entries, err := v.decryptCached(p, team, raw)
	if err != nil {
		return nil, nil, err
	}
	return entries, raw, nil
}

// racyMargin: a file whose change time is within this of the clock when
// it was stat'ed is read again every time (loadRead). A variable for
// tests.
var racyMargin = 3 * time.Second

// loadRead is load for the reads (Get, GetVersion, List): when team's
// file is, by its device, inode, size, modification and change times, the
// one whose entries the cache holds, it is not read again (a task's
// machine identity is read from the vault for every task). Writes replace
// the file with a new one (a new inode), so a file written since — by
// this process or another — is read. A stat taken before a read is
// recorded with that read's content only when the cache still holds that
// content, so a stat never stands for an older content than its own.
func (v *Vault) loadRead(ctx context.Context, team string) (map[string]entry, []byte, error) {
	if v.cfg.blobs != nil {
		return v.load(ctx, team)
	}
	if !v.statTrusted {
		return v.load(ctx, team)
	}
	now := time.Now()
	fi, err := os.Lstat(v.path(team))
	if err != nil {
		return v.load(ctx, team)
	}
	st, ok := statOf(fi)
	if !ok {
		return v.load(ctx, team)
	}
	v.mu.Lock()
	c, hit := v.cache[team]
	v.mu.Unlock()
	if hit && c.statSet && c.stat == st {
		return c.entries, nil, nil
	}
	entries, raw, err := v.load(ctx, team)
	// A stat is recorded only when the file changed well before it was
	// taken (git's "racily clean" rule): a file system that keeps times
	// to the second (ext4 with 128-byte inodes, ext3, vfat) or to a
	// clock tick, and hands a freed inode number out again, can give a
	// file written in the same second the stat of the one read here.
	// Any later write changes the time past the recorded one.
	if err == nil && raw != nil && now.Sub(st.changed()) > racyMargin {
		sum := sha256.Sum256(raw)
		v.mu.Lock()
		if c, ok := v.cache[team]; ok && c.sum == sum {
			c.stat, c.statSet = st, true
			v.cache[team] = c
		}
		v.mu.Unlock()
	}
	return entries, raw, err
}

// decryptCached decrypts raw, team's file read from p, unless the cache
// holds its entries.
func (v *Vault) decryptCached(p, team string, raw []byte) (map[string]entry, error) {
	sum := sha256.Sum256(raw)
	v.mu.Lock()
	c, ok := v.cache[team]
	v.mu.Unlock()
	if ok && c.sum == sum {
		return c.entries, nil
	}
	entries, err := v.decrypt(p, raw)
	if err != nil {
		return nil, err
	}
	v.store(team, raw, entries)
	return entries, nil
}

func (v *Vault) store(team string, raw []byte, entries map[string]entry) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.closed {
		v.cache[team] = cached{sum: sha256.Sum256(raw), entries: entries}
	}
}

func (v *Vault) identity() (age.Identity, error) {
	if v.x25519 != nil {
		return v.x25519, nil
	}
	pass, err := v.pass()
	if err != nil {
		return nil, err
	}
	id, err := age.NewScryptIdentity(pass)
	if err != nil {
		return nil, fmt.Errorf("local vault: %v", err)
	}
	id.SetMaxWorkFactor(max(maxScryptWorkFactor, v.cfg.workFactor))
	return id, nil
}

// pass returns the passphrase, or vault.ErrClosed once Close has zeroed it.
func (v *Vault) pass() (string, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return "", fmt.Errorf("local vault %s: %w", v.dir, vault.ErrClosed)
	}
	return string(v.cfg.passphrase), nil
}

func (v *Vault) recip() (age.Recipient, error) {
	if v.recipient != nil {
		return v.recipient, nil
	}
	pass, err := v.pass()
	if err != nil {
		return nil, err
	}
	r, err := age.NewScryptRecipient(pass)
	if err != nil {
		return nil, fmt.Errorf("local vault: %v", err)
	}
	r.SetWorkFactor(v.cfg.workFactor)
	return r, nil
}

// decrypt decrypts and parses the vault file p whose content is raw.
func (v *Vault) decrypt(p string, raw []byte) (map[string]entry, error) {
	id, err := v.identity()
	if err != nil {
		return nil, err
	}
	r, err := age.Decrypt(bytes.NewReader(raw), id)
	var plain []byte
	if err == nil {
		plain, err = io.ReadAll(r)
		defer clear(plain)
	}
	if err != nil {
		var nomatch *age.NoIdentityMatchError
		if errors.As(err, &nomatch) || errors.Is(err, age.ErrIncorrectIdentity) {
			mode := "passphrase"
			if v.x25519 != nil {
				mode = "identity " + v.cfg.identityPath
			}
			return nil, fmt.Errorf("%w: %s cannot be decrypted with the configured %s; nothing was changed", vault.ErrWrongPassphrase, p, mode)
		}
		return nil, v.corrupt(p, err.Error())
	}
	entries := map[string]entry{}
	// The JSON error is not included: it could quote bytes of a secret.
	if err := json.Unmarshal(plain, &entries); err != nil {
		return nil, v.corrupt(p, "decrypted content is not a valid vault document")
	}
	for k, e := range entries {
		if vault.ValidateKey(k) != nil || e.Version < 1 {
			return nil, v.corrupt(p, "decrypted content has an invalid entry")
		}
		for i, h := range e.History {
			if h.Version < 1 || h.Version >= e.Version || (i > 0 && h.Version <= e.History[i-1].Version) {
				return nil, v.corrupt(p, "decrypted content has an invalid version history")
			}
			if h.Value == nil {
				e.History[i].Value = []byte{}
			}
		}
		if e.Value == nil {
			e.Value = []byte{}
			entries[k] = e
		}
	}
	return entries, nil
}

func (v *Vault) corrupt(p, why string) error {
	bak := p + ".bak"
	hint := fmt.Sprintf("no backup %s exists: restore the file from your own backups or remove it to start this team's vault afresh", bak)
	if _, err := os.Stat(bak); err == nil {
		hint = fmt.Sprintf("the previous good version is %s: restore it with Restore (or `cp %s %s`), or remove the file to start afresh", bak, bak, p)
	}
	return fmt.Errorf("%w: vault file %s is truncated or damaged (%s); it was left untouched and writes to it are refused; %s", vault.ErrCorrupt, p, why, hint)
}

// encrypt serializes and encrypts entries.
func (v *Vault) encrypt(team string, entries map[string]entry) ([]byte, error) {
	plain, err := json.Marshal(entries)
	if err != nil {
		return nil, fmt.Errorf("local vault: encode team %q: %v", team, err)
	}
	defer clear(plain)
	rcp, err := v.recip()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, rcp)
	if err != nil {
		return nil, fmt.Errorf("local vault: encrypt team %q: %v", team, err)
	}
	if _, err := w.Write(plain); err != nil {
		return nil, fmt.Errorf("local vault: encrypt team %q: %v", team, err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("local vault: encrypt team %q: %v", team, err)
	}
	return buf.Bytes(), nil
}

// writeAtomic replaces dst (in dir) with data: temporary file in dir, write,
// fsync, read back and compare, rename, fsync dir. On any error dst is left as
// it was.
func writeAtomic(dir, dst string, data []byte) (err error) {
	f, err := os.CreateTemp(dir, "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return fsError("create temporary file in", dir, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return fsError("chmod", tmp, err)
	}
	if _, err = f.Write(data); err != nil {
		return fsError("write", tmp, err)
	}
	if err = f.Sync(); err != nil {
		return fsError("fsync", tmp, err)
	}
	check := make([]byte, len(data)+1)
	n, rerr := f.ReadAt(check, 0)
	if rerr != nil && rerr != io.EOF {
		return fsError("read back", tmp, rerr)
	}
	if n != len(data) || !bytes.Equal(check[:n], data) {
		err = fmt.Errorf("local vault: %s did not read back as written; %s left unchanged", tmp, dst)
		return err
	}
	if err = f.Close(); err != nil {
		return fsError("close", tmp, err)
	}
	if err = os.Rename(tmp, dst); err != nil {
		return fsError("rename into", dst, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fsError("open directory", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fsError("fsync directory", dir, err)
	}
	return nil
}

// fsError wraps a file-system error naming the operation and path, mapping
// EACCES/EPERM to vault.ErrPermissionDenied.
func fsError(op, path string, err error) error {
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("local vault: %s %s: %w (%v)", op, path, vault.ErrPermissionDenied, err)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("local vault: %s %s: %w", op, path, err)
}
