package local

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/rediacc/rediacc/internal/vault"
)

// TestPurgeRemovesFiles: Purge unlinks the team's file and its backup
// (which held the previous version) from the directory; other teams' files
// stay, and a second instance on the same directory sees the vault empty.
func TestPurgeRemovesFiles(t *testing.T) {
	dir := t.TempDir()
	v := openPass(t, dir, testPass)
	defer v.Close()
	for _, val := range []string{"old-secret", "newer-secret"} {
		if _, err := v.Put(bg(), "gamma", "api/key", []byte(val), vault.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := v.Put(bg(), "delta", "api/key", []byte("delta's"), vault.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"gamma.age", "gamma.age.bak"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("before Purge: %v", err)
		}
	}
	other := openPass(t, dir, testPass)
	defer other.Close()
	if _, err := other.Get(bg(), "gamma", "api/key"); err != nil { // cached in the other instance
		t.Fatal(err)
	}
	if err := v.Purge(bg(), "gamma"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"gamma.age", "gamma.age.bak"} {
		if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s after Purge: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "delta.age")); err != nil {
		t.Fatalf("another team's file after Purge: %v", err)
	}
	if _, err := other.Get(bg(), "gamma", "api/key"); !errors.Is(err, vault.ErrSecretNotFound) {
		t.Fatalf("the other instance still reads the purged secret: %v", err)
	}
}
