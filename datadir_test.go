package rediacc_test

import (
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
)

// plant makes link a symbolic link to target.
func plant(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// absent fails the test when path exists (a file created through a link).
func absent(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s was created through a planted link (%v)", path, err)
	}
}

// Issue 8, kind 7: a data dir that another user owns or may write in is
// refused, with an error saying how to fix it, and nothing is created at
// the paths links planted in it name — as root, for a directory prepared
// by another user.
func TestDataDirOfAnotherUserRefused(t *testing.T) {
	victim := t.TempDir() // where the links point: paths the other user chose
	targets := map[string]string{
		"vault.key":      filepath.Join(victim, "root-writes-key-here"),
		"rediacc.db":     filepath.Join(victim, "root-writes-db-here"),
		"rediacc.db-wal": filepath.Join(victim, "wal"),
		"archive":        filepath.Join(victim, "archive-dir"),
	}
	prepare := func(mode os.FileMode, chownTo int) string {
		dir := filepath.Join(t.TempDir(), "shared")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		for name, target := range targets {
			plant(t, target, filepath.Join(dir, name))
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		if chownTo >= 0 {
			if err := os.Lchown(dir, chownTo, chownTo); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	cases := map[string]struct {
		dir  string
		want string
	}{
		"world-writable": {prepare(0o777, -1), "chmod go-w"},
		"group-writable": {prepare(0o770, -1), "writable by group or others"},
	}
	if os.Geteuid() == 0 {
		nobody, err := user.Lookup("nobody")
		if err != nil {
			t.Fatalf("user nobody: %v", err)
		}
		uid, _ := strconv.Atoi(nobody.Uid)
		cases["owned by another user"] = struct {
			dir  string
			want string
		}{prepare(0o755, uid), "owned by nobody"}
		cases["owned by another user, world-writable"] = struct {
			dir  string
			want string
		}{prepare(0o777, uid), "not by this process's user"}
	} else {
		t.Log("not root: the cases of a directory owned by another user need root to chown")
	}
	// A safe directory under a parent that others may write in (or own):
	// they could swap it for another between two runs.
	underParent := func(mode os.FileMode, chownTo int) string {
		parent := filepath.Join(t.TempDir(), "parent")
		if err := os.Mkdir(parent, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(parent, mode); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(parent, "data")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if chownTo >= 0 {
			if err := os.Chown(parent, chownTo, chownTo); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	cases["under a world-writable parent"] = struct {
		dir  string
		want string
	}{underParent(0o777, -1), "on the way to"}
	if os.Geteuid() == 0 {
		cases["under a parent another user owns"] = struct {
			dir  string
			want string
		}{underParent(0o755, 65534), "on the way to"}
	}
	real := t.TempDir()
	link := filepath.Join(t.TempDir(), "link")
	plant(t, real, link)
	cases["a symbolic link"] = struct {
		dir  string
		want string
	}{link, "symbolic link"}

	for name, tc := range cases {
		_, err := rediacc.New(asOwner(), rediacc.Config{DataDir: tc.dir, Logger: testLogger(t), Health: rediacc.HealthConfig{Interval: -1}})
		if !errors.Is(err, rediacc.ErrUnsafePath) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.dir) {
			t.Errorf("%s: New: %v, want ErrUnsafePath saying %q", name, err, tc.want)
		}
		// The local vault alone (the CLI opens it before the client).
		_, err = rediacc.OpenLocalVault(filepath.Join(tc.dir, "vault"), rediacc.LocalVaultOptions{ScryptWorkFactor: 10, Logger: testLogger(t)})
		if !errors.Is(err, rediacc.ErrUnsafePath) {
			t.Errorf("%s: OpenLocalVault: %v, want ErrUnsafePath", name, err)
		}
		// The archive dir alone, under a safe data dir.
		_, err = rediacc.New(asOwner(), rediacc.Config{DataDir: t.TempDir(), ArchiveDir: tc.dir, Logger: testLogger(t), Health: rediacc.HealthConfig{Interval: -1}})
		if err == nil {
			t.Errorf("%s: an unsafe ArchiveDir was accepted", name)
		}
	}
	for _, target := range targets {
		absent(t, target)
	}
	if ents, _ := os.ReadDir(real); len(ents) != 0 {
		t.Errorf("files created in the directory a symbolic data dir points to: %v", ents)
	}
}

// Links planted in a data dir that passes the checks (made before it was
// chmod'ed, or by its owner by mistake) are refused, never followed: the
// store files, the vault key, the vault's lock and team files, the
// archive's store-id and kind directories.
func TestPlantedLinksNotFollowed(t *testing.T) {
	victim := t.TempDir()
	cases := map[string]struct {
		link string // relative to the data dir
		dir  bool   // the target is a directory
		use  func(t *testing.T, dir string) error
	}{
		"rediacc.db-wal": {"rediacc.db-wal", false, openClient},
		"rediacc.db":     {"rediacc.db", false, openClient},
		"vault.key": {"vault.key", false, func(t *testing.T, dir string) error {
			_, err := rediacc.OpenLocalVault(filepath.Join(dir, "vault"), rediacc.LocalVaultOptions{ScryptWorkFactor: 10, Logger: testLogger(t)})
			return err
		}},
		"vault lock file": {"vault/default.lock", false, func(t *testing.T, dir string) error {
			c, err := rediacc.New(asOwner(), rediacc.Config{DataDir: dir, Logger: testLogger(t), Health: rediacc.HealthConfig{Interval: -1}})
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.SetSecret(asOwner(), rediacc.DefaultTeam, "k", []byte("v"), nil)
			return err
		}},
		"archive store-id": {"archive/store-id", false, pruneOnce},
		"archive kind dir": {"archive/task", true, pruneOnce},
		"vault dir":        {"vault", true, openClientAndVault},
		"archive dir":      {"archive", true, pruneOnce},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			target := filepath.Join(victim, strings.ReplaceAll(name, " ", "-"))
			if tc.dir {
				if err := os.Mkdir(target, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, tc.link)), 0o700); err != nil {
				t.Fatal(err)
			}
			plant(t, target, filepath.Join(dir, tc.link))
			err := tc.use(t, dir)
			if !errors.Is(err, rediacc.ErrUnsafePath) || !strings.Contains(err.Error(), "symbolic link") {
				t.Errorf("a link at %s: %v, want ErrUnsafePath", tc.link, err)
			}
			if tc.dir {
				if ents, _ := os.ReadDir(target); len(ents) != 0 {
					t.Errorf("files created through the link %s: %v", tc.link, ents)
				}
			} else {
				absent(t, target)
			}
		})
	}
}

func openClient(t *testing.T, dir string) error {
	c, err := rediacc.New(asOwner(), rediacc.Config{DataDir: dir, Logger: testLogger(t), Health: rediacc.HealthConfig{Interval: -1}})
	if err == nil {
		c.Close()
	}
	return err
}

func openClientAndVault(t *testing.T, dir string) error {
	c, err := rediacc.New(asOwner(), rediacc.Config{DataDir: dir, Logger: testLogger(t), Health: rediacc.HealthConfig{Interval: -1}})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.SetSecret(asOwner(), rediacc.DefaultTeam, "k", []byte("v"), nil)
	return err
}

// pruneOnce runs a task and prunes it into the archive.
func pruneOnce(t *testing.T, dir string) error {
	c, err := rediacc.New(asOwner(), rediacc.Config{DataDir: dir, Logger: testLogger(t), PollInterval: 20 * time.Millisecond, Health: rediacc.HealthConfig{Interval: -1}})
	if err != nil {
		return err
	}
	defer c.Close()
	inProcessMachine(t, c, "m1")
	submit(t, c, rediacc.TaskSpec{Machine: "m1", Command: "true"})
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	_, err = c.Prune(asOwner(), 0)
	return err
}
