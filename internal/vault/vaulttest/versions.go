package vaulttest

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/vault"
)

// versionTests are the conformance tests of version history (GetVersion),
// which key rotation relies on for rollback.
var versionTests = []struct {
	name string
	fn   func(t *testing.T, b vault.Backend)
}{
	{"VersionHistory", testVersionHistory},
	{"VersionRetention", testVersionRetention},
	{"VersionErrors", testVersionErrors},
	{"VersionsGoWithDelete", testVersionsGoWithDelete},
}

func getVersion(t *testing.T, b vault.Backend, team, key string, version int) vault.Secret {
	t.Helper()
	s, err := b.GetVersion(ctx(t), team, key, version)
	if err != nil {
		t.Fatalf("GetVersion(%q, %q, %d): %v", team, key, version, err)
	}
	return s
}

// Every earlier version reads back with its own value and number; the latest
// is the same through Get and GetVersion; CreatedAt is set and does not go
// backwards.
func testVersionHistory(t *testing.T, b vault.Backend) {
	before := time.Now().Add(-time.Minute)
	for i := 1; i <= 3; i++ {
		put(t, b, "t1", "machines/k/identity", []byte(fmt.Sprintf("key-v%d", i)), nil)
	}
	put(t, b, "t1", "other", []byte("x"), nil)
	var prev time.Time
	for i := 1; i <= 3; i++ {
		s := getVersion(t, b, "t1", "machines/k/identity", i)
		wantSecret(t, s, "machines/k/identity", []byte(fmt.Sprintf("key-v%d", i)), i)
		if s.CreatedAt.IsZero() || s.CreatedAt.Before(before) || s.CreatedAt.Before(prev) {
			t.Fatalf("version %d CreatedAt = %v (previous %v, test start %v)", i, s.CreatedAt, prev, before)
		}
		prev = s.CreatedAt
	}
	latest := get(t, b, "t1", "machines/k/identity")
	wantSecret(t, latest, "machines/k/identity", []byte("key-v3"), 3)
	if !latest.CreatedAt.Equal(prev) {
		t.Fatalf("Get CreatedAt %v differs from GetVersion's %v", latest.CreatedAt, prev)
	}
	// Values of old versions are copies too.
	s := getVersion(t, b, "t1", "machines/k/identity", 1)
	copy(s.Value, "MUTATE")
	wantSecret(t, getVersion(t, b, "t1", "machines/k/identity", 1), "machines/k/identity", []byte("key-v1"), 1)
	// A CAS write after reading an old version still needs the latest.
	if _, err := b.Put(ctx(t), "t1", "machines/k/identity", []byte("stale"), vault.PutOptions{CAS: vault.CAS(1)}); !errors.Is(err, vault.ErrVersionConflict) {
		t.Fatalf("CAS on an old version: %v, want ErrVersionConflict", err)
	}
}

// At least vault.RetainedVersions versions (the latest included) stay
// retrievable.
func testVersionRetention(t *testing.T, b vault.Backend) {
	const writes = vault.RetainedVersions + 3
	for i := 1; i <= writes; i++ {
		put(t, b, "t1", "k", []byte(fmt.Sprintf("v%d", i)), nil)
	}
	for i := writes - vault.RetainedVersions + 1; i <= writes; i++ {
		wantSecret(t, getVersion(t, b, "t1", "k", i), "k", []byte(fmt.Sprintf("v%d", i)), i)
	}
}

func testVersionErrors(t *testing.T, b vault.Backend) {
	secret := []byte("do-not-print-me")
	put(t, b, "t1", "k", secret, nil)
	put(t, b, "t1", "k", []byte("second"), nil)
	for _, v := range []int{0, -1, 3, 99} {
		_, err := b.GetVersion(ctx(t), "t1", "k", v)
		if !errors.Is(err, vault.ErrSecretNotFound) {
			t.Fatalf("GetVersion(k, %d): %v, want ErrSecretNotFound", v, err)
		}
		if !strings.Contains(err.Error(), `"k"`) || !strings.Contains(err.Error(), fmt.Sprint(v)) {
			t.Fatalf("GetVersion(k, %d) error %q does not name the key and version", v, err)
		}
		noValue(t, err, secret)
	}
	if _, err := b.GetVersion(ctx(t), "t1", "missing", 1); !errors.Is(err, vault.ErrSecretNotFound) {
		t.Fatalf("GetVersion of a missing key: %v, want ErrSecretNotFound", err)
	}
	if _, err := b.GetVersion(ctx(t), "other-team", "k", 1); !errors.Is(err, vault.ErrSecretNotFound) {
		t.Fatalf("GetVersion in another team: %v, want ErrSecretNotFound", err)
	}
	if _, err := b.GetVersion(ctx(t), "t1", "../k", 1); !errors.Is(err, vault.ErrInvalidKey) {
		t.Fatalf("GetVersion of an invalid key: %v, want ErrInvalidKey", err)
	}
	if _, err := b.GetVersion(ctx(t), "../t", "k", 1); !errors.Is(err, vault.ErrInvalidTeam) {
		t.Fatalf("GetVersion in an invalid team: %v, want ErrInvalidTeam", err)
	}
}

// Delete removes every version: a key written again does not bring the old
// values back.
func testVersionsGoWithDelete(t *testing.T, b vault.Backend) {
	put(t, b, "t1", "k", []byte("old-1"), nil)
	put(t, b, "t1", "k", []byte("old-2"), nil)
	if err := b.Delete(ctx(t), "t1", "k"); err != nil {
		t.Fatal(err)
	}
	for _, v := range []int{1, 2} {
		if _, err := b.GetVersion(ctx(t), "t1", "k", v); !errors.Is(err, vault.ErrSecretNotFound) {
			t.Fatalf("GetVersion %d after Delete: %v, want ErrSecretNotFound", v, err)
		}
	}
	put(t, b, "t1", "k", []byte("new-1"), nil)
	wantSecret(t, getVersion(t, b, "t1", "k", 1), "k", []byte("new-1"), 1)
	if _, err := b.GetVersion(ctx(t), "t1", "k", 2); !errors.Is(err, vault.ErrSecretNotFound) {
		t.Fatalf("GetVersion 2 after Delete and one Put: %v, want ErrSecretNotFound", err)
	}
}
