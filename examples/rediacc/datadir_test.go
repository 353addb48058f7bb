package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Issue 8, kind 7: the CLI refuses a world-writable data dir (exit 3, the
// fix in the message) and creates nothing through a link planted in it.
func TestCLIRefusesUnsafeDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "shared")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "written-through-a-link")
	if err := os.Symlink(target, filepath.Join(dir, "vault.key")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	c := cli{t: t, dir: dir}
	code, _, errs := c.run("team", "create", "x")
	if code != exitPermission || !strings.Contains(errs, "chmod go-w") || !strings.Contains(errs, dir) {
		t.Fatalf("a world-writable data dir: exit %d, stderr %s", code, errs)
	}
	if _, err := os.Lstat(target); !os.IsNotExist(err) {
		t.Fatalf("a file was created through the planted link: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("the refused command wrote into the data dir: %v", ents)
	}
}
