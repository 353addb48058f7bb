package audit

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// KeySize is the size in bytes of the keys [NewKey] makes, and the least a
// key may have: HMAC-SHA256 keys shorter than the hash output weaken it
// (RFC 2104, section 3).
const KeySize = 32

// keyIDLabel is the message whose HMAC under a key is that key's id.
const keyIDLabel = "rediacc.audit.key-id"

var (
	// ErrKeyUnknown: a record or checkpoint names a key the keyring does
	// not hold (lost, not supplied, or a forgery naming a key that never
	// existed: without the key the two cannot be told apart). Errors
	// wrapping it are *KeyError when they come from a [Verifier].
	ErrKeyUnknown = errors.New("audit: sealed with a key the keyring does not hold")
	// ErrInvalidKeyring: a keyring file or key that cannot be used (bad
	// line, short key, an id that does not match its key).
	ErrInvalidKeyring = errors.New("audit: invalid keyring")
)

// Key is one HMAC-SHA256 key of a [Keyring]. The secret is unexported and
// never printed: fmt shows a Key as its id. It leaves the package only
// through [Keyring.Marshal] and [Key.MarshalLine], to be written to a file
// of mode 0600.
type Key struct {
	// ID names the key in the records it seals (Record.KeyID): 16 hex
	// digits, the first 8 bytes of HMAC-SHA256(key, "rediacc.audit.key-id"),
	// so a wrong key shows as an unknown id, never as a forged record.
	ID string
	// From is the first sequence number the key was made to seal (the
	// trail's head + 1 when it was made); 0 when unknown. See
	// [Keyring.KeyedFrom].
	From int64
	// Created is when the key was made (UTC).
	Created time.Time

	secret []byte
}

// String returns "audit key <id>"; the secret is never printed.
func (k Key) String() string { return "audit key " + k.ID }

// GoString is String: %#v does not print the secret either.
func (k Key) GoString() string { return k.String() }

// NewKey returns a new random key (KeySize bytes from crypto/rand) made to
// seal records from sequence number from on.
func NewKey(from int64, created time.Time) Key {
	secret := make([]byte, KeySize)
	_, _ = rand.Read(secret) // never fails (crypto/rand since Go 1.24)
	k, _ := KeyFromSecret(secret, from, created)
	return k
}

// KeyFromSecret returns the key with the given secret (at least KeySize
// bytes; copied). Errors wrap ErrInvalidKeyring.
func KeyFromSecret(secret []byte, from int64, created time.Time) (Key, error) {
	if len(secret) < KeySize {
		return Key{}, fmt.Errorf("%w: the key has %d bytes, want at least %d", ErrInvalidKeyring, len(secret), KeySize)
	}
	if from < 0 {
		return Key{}, fmt.Errorf("%w: from %d is negative", ErrInvalidKeyring, from)
	}
	s := bytes.Clone(secret)
	return Key{ID: keyID(s), From: from, Created: created.UTC().Truncate(time.Second), secret: s}, nil
}

func keyID(secret []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(keyIDLabel))
	return hex.EncodeToString(m.Sum(nil)[:8])
}

// keyLine is a key's line in a keyring file.
type keyLine struct {
	ID      string `json:"id"`
	From    int64  `json:"from"`
	Created string `json:"created"`
	Key     string `json:"key"`
}

// MarshalLine returns the key's line of a keyring file, newline included:
// {"id":…,"from":…,"created":…,"key":base64}. It holds the secret.
func (k Key) MarshalLine() []byte {
	b, _ := json.Marshal(keyLine{ID: k.ID, From: k.From, Created: k.Created.UTC().Format(time.RFC3339),
		Key: base64.StdEncoding.EncodeToString(k.secret)})
	return append(b, '\n')
}

// Keyring holds the keys that seal and verify audit records: the current
// key (the newest) seals new records and checkpoints; every key verifies the
// records it sealed. A nil *Keyring is the empty keyring: it seals version 1
// records (plain SHA-256) and verifies only those. A Keyring is immutable
// and safe for concurrent use.
//
// Its file form (ParseKeyring, Marshal) is one JSON object per line, one
// line per key, e.g.
//
//	{"id":"3fa4c1d2e5f60718","from":1,"created":"2026-01-02T03:04:05Z","key":"…base64…"}
//
// so keyrings are merged by concatenating their files (a key present twice
// counts once).
type Keyring struct {
	keys []Key // in file order; unique ids
	cur  int   // index of the current key
}

// NewKeyring returns a keyring holding keys (at least one). The current key
// is the one created last (the later one on a tie). Errors wrap
// ErrInvalidKeyring.
func NewKeyring(keys ...Key) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no key", ErrInvalidKeyring)
	}
	k := &Keyring{}
	for _, key := range keys {
		if len(key.secret) < KeySize || key.ID != keyID(key.secret) {
			return nil, fmt.Errorf("%w: %s was not made by NewKey or KeyFromSecret", ErrInvalidKeyring, key)
		}
		if k.Has(key.ID) {
			continue
		}
		key.secret = bytes.Clone(key.secret)
		k.keys = append(k.keys, key)
		if !key.Created.Before(k.keys[k.cur].Created) {
			k.cur = len(k.keys) - 1
		}
	}
	return k, nil
}

// ParseKeyring reads a keyring file (see [Keyring]). Blank lines are
// skipped. Errors wrap ErrInvalidKeyring and name the line; they never
// quote a secret.
func ParseKeyring(b []byte) (*Keyring, error) {
	var keys []Key
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var l keyLine
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil || dec.More() {
			return nil, fmt.Errorf("%w: line %d is not a key line {\"id\",\"from\",\"created\",\"key\"}", ErrInvalidKeyring, n)
		}
		secret, err := base64.StdEncoding.DecodeString(l.Key)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: the key is not base64", ErrInvalidKeyring, n)
		}
		created, err := time.Parse(time.RFC3339, l.Created)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: created %q is not an RFC 3339 time", ErrInvalidKeyring, n, l.Created)
		}
		key, err := KeyFromSecret(secret, l.From, created)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if l.ID != key.ID {
			return nil, fmt.Errorf("%w: line %d: id %q does not match its key (the line was altered)", ErrInvalidKeyring, n, l.ID)
		}
		keys = append(keys, key)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKeyring, err)
	}
	return NewKeyring(keys...)
}

// Marshal returns the keyring's file form, one line per key in order. It
// holds the secrets.
func (k *Keyring) Marshal() []byte {
	var b []byte
	if k == nil {
		return b
	}
	for _, key := range k.keys {
		b = append(b, key.MarshalLine()...)
	}
	return b
}

// Add returns a keyring holding k's keys and key (then the current one when
// it is the newest).
func (k *Keyring) Add(key Key) (*Keyring, error) {
	var keys []Key
	if k != nil {
		keys = slices.Clone(k.keys)
	}
	return NewKeyring(append(keys, key)...)
}

// String lists the key ids, current one first: "audit keyring [3fa4… (current), 9b1e…]".
func (k *Keyring) String() string {
	if k == nil || len(k.keys) == 0 {
		return "audit keyring []"
	}
	ids := []string{k.keys[k.cur].ID + " (current)"}
	for i, key := range k.keys {
		if i != k.cur {
			ids = append(ids, key.ID)
		}
	}
	return "audit keyring [" + strings.Join(ids, ", ") + "]"
}

// GoString is String (no secrets).
func (k *Keyring) GoString() string { return k.String() }

// Current returns the key that seals new records (the zero Key for the
// empty keyring).
func (k *Keyring) Current() Key {
	if k == nil || len(k.keys) == 0 {
		return Key{}
	}
	return k.keys[k.cur]
}

// Keys returns the keys in file order.
func (k *Keyring) Keys() []Key {
	if k == nil {
		return nil
	}
	return slices.Clone(k.keys)
}

// IDs returns the key ids in file order.
func (k *Keyring) IDs() []string {
	var ids []string
	for _, key := range k.Keys() {
		ids = append(ids, key.ID)
	}
	return ids
}

// Has reports whether the keyring holds the key named id.
func (k *Keyring) Has(id string) bool {
	_, ok := k.secret(id)
	return ok
}

func (k *Keyring) secret(id string) ([]byte, bool) {
	if k == nil || id == "" {
		return nil, false
	}
	for _, key := range k.keys {
		if key.ID == id {
			return key.secret, true
		}
	}
	return nil, false
}

// KeyedFrom is the sequence number from which every record must be keyed:
// the smallest From of the keyring's keys (0 when none is known). A version
// 1 record at or after it can only have been written by someone without the
// key (a downgrade), and [Verifier] reports it (KindDowngraded).
func (k *Keyring) KeyedFrom() int64 {
	var from int64
	for _, key := range k.Keys() {
		if key.From > 0 && (from == 0 || key.From < from) {
			from = key.From
		}
	}
	return from
}

// mac returns the hex HMAC-SHA256 of msg under the key id.
func (k *Keyring) mac(id string, msg []byte) (string, error) {
	secret, ok := k.secret(id)
	if !ok {
		return "", fmt.Errorf("%w: key %s (the keyring holds %s)", ErrKeyUnknown, id, k)
	}
	m := hmac.New(sha256.New, secret)
	m.Write(msg)
	return hex.EncodeToString(m.Sum(nil)), nil
}

// Seal returns the seal r must carry as its Hash: the hex HMAC-SHA256 of
// [Canonical](r) under the key r.KeyID, or [ComputeHash](r) for a version 1
// record (r.KeyID empty). Errors: ErrKeyUnknown when the keyring does not
// hold r.KeyID.
func (k *Keyring) Seal(r Record) (string, error) {
	if r.KeyID == "" {
		return ComputeHash(r), nil
	}
	return k.mac(r.KeyID, Canonical(r))
}

// Sealed reports whether r.Hash is r's seal (see Seal); known is false
// when the keyring does not hold r.KeyID (nothing can then be said).
func (k *Keyring) Sealed(r Record) (ok, known bool) {
	want, err := k.Seal(r)
	if err != nil {
		return false, false
	}
	return hmac.Equal([]byte(want), []byte(r.Hash)), true
}

// Chain is [Chain] sealing with the current key: it returns r appended
// after prev with KeyID set to the current key's id and Hash its seal. The
// empty (nil) keyring chains a version 1 record, as Chain does. Store
// engines call it inside the transaction that appends r.
func (k *Keyring) Chain(prev Head, r Record) Record {
	cur := k.Current()
	if cur.ID == "" {
		return Chain(prev, r)
	}
	r = link(prev, r)
	r.KeyID = cur.ID
	r.Hash, _ = k.mac(cur.ID, Canonical(r))
	return r
}
