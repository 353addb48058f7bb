// Package vault defines the storage-engine contract behind rediacc's team
// vaults: a [Backend] stores named byte-string secrets per team, with
// monotonically increasing versions and check-and-set writes modelled on
// HashiCorp Vault's KV v2 engine.
//
// Two engines implement it: the local age-encrypted vault
// (internal/vault/local) and the HashiCorp Vault KV v2 backend
// (internal/vault/hashicorp). Both pass the shared conformance suite in
// internal/vault/vaulttest. The public rediacc.Vault interface wraps a
// Backend one-to-one.
//
// Errors are returned wrapped with %w and name the team and key involved; test
// them with errors.Is against the sentinels below. No error message and no log
// line produced by this package or its engines ever contains a secret value.
package vault

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Backend is a team-scoped secret store. All methods are safe for concurrent
// use by multiple goroutines; the local engine is also safe for use by
// several processes sharing one directory.
//
// team must satisfy [ValidateTeam] (else [ErrInvalidTeam]) and key must satisfy
// [ValidateKey] (else [ErrInvalidKey]). Teams are isolated from each other: a
// key written under one team is invisible under any other.
type Backend interface {
	// Get returns the latest version of key in team's vault.
	// Errors: ErrSecretNotFound, ErrInvalidTeam, ErrInvalidKey,
	// ErrWrongPassphrase, ErrCorrupt, ErrPermissionDenied, ErrUnavailable, or
	// the context's error.
	Get(ctx context.Context, team, key string) (Secret, error)

	// Put stores value (any bytes, possibly empty or binary) as a new version
	// of key and returns that version number (1 for a new key). opts.CAS
	// makes the write conditional, see [PutOptions]; a failed condition
	// returns ErrVersionConflict and changes nothing. The backend does not
	// retain value: the caller may reuse the slice after Put returns.
	// Errors: ErrVersionConflict, ErrInvalidTeam, ErrInvalidKey,
	// ErrWrongPassphrase, ErrCorrupt, ErrPermissionDenied, ErrUnavailable, or
	// the context's error.
	Put(ctx context.Context, team, key string, value []byte, opts PutOptions) (version int, err error)

	// GetVersion returns version of key in team's vault: the latest
	// version or one of the earlier ones kept for rollback. Every backend
	// keeps at least the last [RetainedVersions] versions of a key (the
	// latest included); older ones may be gone. A version that does not
	// exist, was pruned or was deleted returns ErrSecretNotFound naming the
	// team, key and version; version < 1 too. Other errors as for Get.
	GetVersion(ctx context.Context, team, key string, version int) (Secret, error)

	// Delete removes key and all its versions; a later Put of the same key
	// starts again at version 1. Deleting a key that does not exist returns
	// ErrSecretNotFound. Other errors as for Put.
	Delete(ctx context.Context, team, key string) error

	// List returns every key of team's vault, sorted, including nested ones
	// such as "db/password". An empty or never-written vault yields an empty
	// list and no error. Errors: ErrInvalidTeam, ErrWrongPassphrase,
	// ErrCorrupt, ErrPermissionDenied, ErrUnavailable, or the context's error.
	List(ctx context.Context, team string) ([]string, error)

	// Close releases the backend's resources and stops its background
	// goroutines (token renewal). It is safe to call more than once; other
	// methods must not be called after Close (they return ErrClosed).
	Close() error
}

// Secret is one version of a stored secret.
type Secret struct {
	// Key is the secret's path inside its team's vault, e.g. "db/password".
	Key string
	// Value is the secret's bytes. It is a copy owned by the caller.
	Value []byte
	// Version is the version number of this value: 1 for the first write of
	// the key, incremented by one for every later write.
	Version int
	// CreatedAt is when this version was written (UTC), as the backend
	// recorded it; zero when the backend does not know.
	CreatedAt time.Time
}

// String returns a description of s that names its key and version but never
// its value, so that printing a Secret with %v or %s cannot leak it.
func (s Secret) String() string {
	return fmt.Sprintf("Secret{Key:%q Version:%d Value:<%d bytes redacted>}", s.Key, s.Version, len(s.Value))
}

// GoString is like String, for %#v.
func (s Secret) GoString() string { return s.String() }

// PutOptions are the per-call settings of [Backend.Put].
type PutOptions struct {
	// CAS is the check-and-set condition, as in HashiCorp Vault KV v2:
	// nil writes unconditionally; a pointer to 0 writes only if the key does
	// not exist; a pointer to n > 0 writes only if the key's current version
	// is exactly n. When the condition fails Put returns ErrVersionConflict
	// and nothing is changed.
	CAS *int
}

// CAS returns a pointer to v, for use as [PutOptions].CAS.
func CAS(v int) *int { return &v }

// Sentinel errors. Backends return them wrapped (with fmt.Errorf and %w) in
// messages that name the team, key, file or address involved.
var (
	// ErrSecretNotFound reports that a key does not exist in a team's vault.
	// Its messages name the team and the key, never a value.
	ErrSecretNotFound = errors.New("secret not found")

	// ErrVersionConflict reports a failed check-and-set: the key's current
	// version is not the one the caller expected. Its messages name the team,
	// the key, the expected and the current version.
	ErrVersionConflict = errors.New("version conflict")

	// ErrWrongPassphrase reports that a local vault could not be decrypted
	// with the configured passphrase or identity. Nothing was changed.
	ErrWrongPassphrase = errors.New("wrong passphrase or identity")

	// ErrCorrupt reports a vault file that is truncated or unreadable for a
	// reason other than a wrong passphrase. The message names the file and
	// its backup copy. Nothing was changed.
	ErrCorrupt = errors.New("vault data corrupt")

	// ErrInvalidKey reports a key that does not satisfy [ValidateKey].
	ErrInvalidKey = errors.New("invalid secret key")

	// ErrInvalidTeam reports a team name that does not satisfy [ValidateTeam].
	ErrInvalidTeam = errors.New("invalid team name")

	// ErrPermissionDenied reports that the backend refused access (HTTP 403
	// from HashiCorp Vault, EACCES on a local file). The message names the
	// path. It is rediacc.ErrPermissionDenied (the same value), so every
	// vault denial is a permission denial to a program using the SDK.
	ErrPermissionDenied = errors.New("permission denied")

	// ErrUnauthenticated reports that the backend no longer accepts the
	// client's credentials after it connected (HashiCorp Vault: the token
	// was revoked or has expired, and with AppRole a new login failed
	// too). Unlike ErrPermissionDenied, no policy change helps: the client
	// needs new credentials.
	// It is rediacc.ErrCredentialsRefused (the same value).
	ErrUnauthenticated = errors.New("credentials refused")

	// ErrUnavailable reports that the backend could not be reached
	// (connection refused, DNS failure, timeout). The message names the
	// address.
	ErrUnavailable = errors.New("vault unavailable")

	// ErrClosed reports a call on a backend after its Close.
	ErrClosed = errors.New("vault backend closed")
)

// RetainedVersions is how many versions of a key (the latest included)
// every backend keeps retrievable with GetVersion, at least: HashiCorp
// Vault KV v2's default max_versions. The local vault keeps exactly this
// many.
const RetainedVersions = 10

// MaxKeyLen is the maximum length of a secret key, in bytes.
const MaxKeyLen = 256

// MaxTeamLen is the maximum length of a team name, in bytes.
const MaxTeamLen = 64

// ValidateKey checks that key is a valid secret key: a non-empty path of at
// most [MaxKeyLen] bytes made of "/"-separated segments, each consisting of
// the characters [A-Za-z0-9._-]; empty segments (leading, trailing or double
// slashes) and the segments "." and ".." are rejected. The returned error
// wraps [ErrInvalidKey] and quotes the key.
func ValidateKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrInvalidKey)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("%w: key of %d bytes exceeds the maximum of %d", ErrInvalidKey, len(key), MaxKeyLen)
	}
	for _, seg := range strings.Split(key, "/") {
		switch seg {
		case "":
			return fmt.Errorf("%w: %s has an empty path segment", ErrInvalidKey, quoteInput(key))
		case ".", "..":
			return fmt.Errorf("%w: %s has a %s path segment", ErrInvalidKey, quoteInput(key), quoteInput(seg))
		}
		for i := 0; i < len(seg); i++ {
			if !nameByte(seg[i]) {
				return fmt.Errorf("%w: %s contains %q; allowed are A-Z a-z 0-9 . _ - and / between segments", ErrInvalidKey, quoteInput(key), seg[i])
			}
		}
	}
	return nil
}

// ValidateTeam checks that team is a valid team name: 1 to [MaxTeamLen] bytes
// of [A-Za-z0-9._-], starting with a letter or digit. Team names become file
// names and path segments, hence the strict alphabet. The returned error wraps
// [ErrInvalidTeam] and quotes the name.
func ValidateTeam(team string) error {
	if team == "" {
		return fmt.Errorf("%w: empty team name", ErrInvalidTeam)
	}
	if len(team) > MaxTeamLen {
		return fmt.Errorf("%w: team name of %d bytes exceeds the maximum of %d", ErrInvalidTeam, len(team), MaxTeamLen)
	}
	if !alnum(team[0]) {
		return fmt.Errorf("%w: %s must start with a letter or digit", ErrInvalidTeam, quoteInput(team))
	}
	for i := 0; i < len(team); i++ {
		if !nameByte(team[i]) {
			return fmt.Errorf("%w: %s contains %q; allowed are A-Z a-z 0-9 . _ -", ErrInvalidTeam, quoteInput(team), team[i])
		}
	}
	return nil
}

// Validate checks team with [ValidateTeam] and key with [ValidateKey].
func Validate(team, key string) error {
	if err := ValidateTeam(team); err != nil {
		return err
	}
	return ValidateKey(key)
}

func alnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func nameByte(c byte) bool { return alnum(c) || c == '.' || c == '_' || c == '-' }

// NotFoundError returns an error wrapping [ErrSecretNotFound] that names team
// and key.
func NotFoundError(team, key string) error {
	return fmt.Errorf("%w: team %s has no key %s", ErrSecretNotFound, quoteInput(team), quoteInput(key))
}

// VersionNotFoundError returns an error wrapping [ErrSecretNotFound] that
// names team, key and the missing version.
func VersionNotFoundError(team, key string, version int) error {
	return fmt.Errorf("%w: team %q has no version %d of key %q (it never existed, was deleted, or is older than the %d versions kept)",
		ErrSecretNotFound, team, version, key, RetainedVersions)
}

// ConflictError returns an error wrapping [ErrVersionConflict] that names team,
// key, the expected version and the current one (0 meaning the key does not
// exist).
func ConflictError(team, key string, expected, current int) error {
	cur := fmt.Sprintf("current version is %d", current)
	if current == 0 {
		cur = "the key does not exist"
	}
	exp := fmt.Sprintf("expected version %d", expected)
	if expected == 0 {
		exp = "expected the key not to exist"
	}
	return fmt.Errorf("%w: team %s key %s: check-and-set %s but %s", ErrVersionConflict, quoteInput(team), quoteInput(key), exp, cur)
}

// CheckCAS evaluates a check-and-set condition against a key's current
// version (0 when the key does not exist). It returns nil when the write may
// proceed and a [ConflictError] otherwise. Engines that enforce CAS
// themselves (the local vault) use it; remote engines delegate to the server.
func CheckCAS(team, key string, cas *int, current int) error {
	if cas == nil || *cas == current {
		return nil
	}
	return ConflictError(team, key, *cas, current)
}

// quoteInput quotes s for an error message, cut to its first 64 characters
// with a note of its length when it is longer: a key of a megabyte is not
// echoed whole.
func quoteInput(s string) string {
	if utf8.RuneCountInString(s) <= 64 {
		return strconv.Quote(s)
	}
	return strconv.Quote(string([]rune(s)[:64])) + fmt.Sprintf("…(%d bytes in all)", len(s))
}
