package vaulttest

import (
	"errors"
	"testing"

	"github.com/rediacc/rediacc/internal/vault"
)

// testPurge: vault.Purge destroys one team's vault (every key, every
// version), leaves the other teams alone, succeeds on an empty vault, and
// a later write starts again at version 1. A backend that is a
// vault.Purger is checked through its own Purge.
func testPurge(t *testing.T, b vault.Backend) {
	put(t, b, "doomed", "db/password", []byte("v1"), nil)
	put(t, b, "doomed", "db/password", []byte("v2"), nil)
	put(t, b, "doomed", "machines/m-1/identity", []byte("key"), nil)
	put(t, b, "doomed", "api", []byte("x"), nil)
	if err := b.Delete(ctx(t), "doomed", "api"); err != nil { // a deleted key's backup copy must go too
		t.Fatal(err)
	}
	put(t, b, "kept", "db/password", []byte("other team"), nil)
	if err := vault.Purge(ctx(t), b, "doomed"); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	wantKeys(t, list(t, b, "doomed"))
	for _, k := range []string{"db/password", "machines/m-1/identity", "api"} {
		if _, err := b.Get(ctx(t), "doomed", k); !errors.Is(err, vault.ErrSecretNotFound) {
			t.Fatalf("Get(%s) after Purge: %v", k, err)
		}
	}
	wantSecret(t, get(t, b, "kept", "db/password"), "db/password", []byte("other team"), 1)
	if v := put(t, b, "doomed", "db/password", []byte("new"), vault.CAS(0)); v != 1 {
		t.Fatalf("a write after Purge got version %d, want 1", v)
	}
	if err := vault.Purge(ctx(t), b, "never-written"); err != nil {
		t.Fatalf("Purge of an empty vault: %v", err)
	}
	if err := vault.Purge(ctx(t), b, "../x"); !errors.Is(err, vault.ErrInvalidTeam) {
		t.Fatalf("Purge of an invalid team: %v", err)
	}
}
