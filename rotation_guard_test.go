package rediacc_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/rediacc/rediacc"
)

// A key rotation's store writes re-check, in their transaction, that the
// rotating user still holds key.rotate: a role revoked mid-rotation stops
// it at its next write (ErrPermissionDenied), no machine record takes the
// new key on the revoked user's behalf, its lock is released, and every
// machine keeps a key that logs in; an owner's resume then finishes it.
func TestRotationStopsWhenRoleRevoked(t *testing.T) {
	c, v := newKeyClient(t, nil)
	const team = "rot-revoke"
	f := newKeyFixture(t, c, v, team, 111, 112)
	owner := asOwner()
	if _, err := c.SetMember(owner, team, "ada", rediacc.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	before := map[string]string{}
	for _, n := range f.names {
		m, err := c.Machine(owner, n)
		if err != nil {
			t.Fatal(err)
		}
		before[n] = m.KeyFingerprint
	}
	var once sync.Once
	restore := rediacc.SetRotationHook(team, func(step, machine string) {
		if step == "verify" && machine == f.names[len(f.names)-1] { // the new key works everywhere; nothing stored yet
			once.Do(func() {
				if err := c.RemoveMember(owner, team, "ada"); err != nil {
					t.Error(err)
				}
			})
		}
	})
	_, err := c.RotateKey(as("ada"), rediacc.KeyRotationOptions{Machine: f.names[0]})
	restore()
	if !errors.Is(err, rediacc.ErrPermissionDenied) {
		t.Fatalf("rotation whose user lost the role midway: %v, want ErrPermissionDenied", err)
	}
	for _, n := range f.names {
		m, err := c.Machine(owner, n)
		if err != nil {
			t.Fatal(err)
		}
		if m.KeyFingerprint != before[n] {
			t.Errorf("%s: its record took the new key %s after ada lost the role (was %s)", n, m.KeyFingerprint, before[n])
		}
	}
	for i := range f.names {
		cur, _ := f.vaultKeys(t, i)
		if err := f.login(t, i, cur); err != nil {
			t.Fatalf("%s: the vault's key does not log in after the stopped rotation: %v", f.names[i], err)
		}
	}
	f.finish(t) // the lock was released: an owner finishes at once
}
