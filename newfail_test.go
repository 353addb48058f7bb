package rediacc_test

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rediacc/rediacc"
)

// A data dir whose store file is empty, truncated or foreign, or whose
// archive names a store that is not there, fails New with an error naming
// the file and what to do, and New changes nothing: no store initialized,
// no file or directory created.
func TestNewOnOddDataDirChangesNothing(t *testing.T) {
	type setup func(t *testing.T, dir string)
	write := func(name, data string) setup {
		return func(t *testing.T, dir string) {
			p := filepath.Join(dir, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	cases := []struct {
		name  string
		setup setup
		want  error
		says  []string
	}{
		{"empty store file", write("rediacc.db", ""), rediacc.ErrCorruptStore, []string{"rediacc.db", "empty", "backup", "delete the file"}},
		{"truncated store file", write("rediacc.db", "SQLite format 3\x00\x10\x00"), rediacc.ErrCorruptStore, []string{"rediacc.db"}},
		{"not a database", write("rediacc.db", strings.Repeat("hello, world\n", 400)), rediacc.ErrCorruptStore, []string{"rediacc.db", "not a SQLite database"}},
		{"archive of another store, no store", write("archive/store-id", "0123456789abcdef\n"), rediacc.ErrArchiveMismatch,
			[]string{"archive", "0123456789abcdef", "no store", "nothing was created"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(t, dir)
			before := snapshotTree(t, dir)
			_, err := rediacc.New(asOwner(), rediacc.Config{DataDir: dir, Logger: testLogger(t), Health: rediacc.HealthConfig{Interval: -1}})
			if !errors.Is(err, tc.want) {
				t.Fatalf("New: %v, want %v", err, tc.want)
			}
			for _, s := range tc.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("the error does not say %q: %v", s, err)
				}
			}
			if after := snapshotTree(t, dir); !maps.Equal(before, after) {
				t.Errorf("the failed New changed the data dir:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
	// A data dir New creates, then fails in (an unreadable audit key
	// file): removed again, with the store it created.
	parent := t.TempDir()
	dir := filepath.Join(parent, "a", "b")
	bad := filepath.Join(parent, "audit.key")
	if err := os.WriteFile(bad, []byte("not a keyring"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := rediacc.New(asOwner(), rediacc.Config{DataDir: dir, AuditKeyFile: bad, Logger: testLogger(t), Health: rediacc.HealthConfig{Interval: -1}})
	if !errors.Is(err, rediacc.ErrAuditKeyring) {
		t.Fatalf("New with a bad audit key file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(parent, "a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the failed New left the data dir it created: %v", err)
	}
}
