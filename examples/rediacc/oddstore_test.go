package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An empty store file is refused (not initialized), naming the file and
// what to do; an archive with no store beside it is refused with advice in
// the CLI's terms (--data-dir, not a Go field). The store file is left as
// it was.
func TestCLIOddStoreFiles(t *testing.T) {
	c := cli{t: t, dir: t.TempDir()}
	db := filepath.Join(c.dir, "rediacc.db")
	if err := os.WriteFile(db, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs := c.run("team", "create", "x")
	if code != exitError || !strings.Contains(errs, db) || !strings.Contains(errs, "empty") {
		t.Fatalf("empty store file: exit %d %s", code, errs)
	}
	if fi, err := os.Stat(db); err != nil || fi.Size() != 0 {
		t.Fatalf("the empty store file was changed: %v %v", fi, err)
	}
	for _, side := range []string{"-wal", "-shm", "-lock"} {
		if _, err := os.Stat(db + side); !os.IsNotExist(err) {
			t.Errorf("%s created: %v", filepath.Base(db+side), err)
		}
	}

	c = cli{t: t, dir: t.TempDir()}
	if err := os.MkdirAll(filepath.Join(c.dir, "archive"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "archive", "store-id"), []byte("0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs = c.run("team", "create", "x")
	if code != exitError || !strings.Contains(errs, "--data-dir") || strings.Contains(errs, "Config.") || !strings.Contains(errs, "0123456789abcdef") {
		t.Fatalf("archive without its store: exit %d %s", code, errs)
	}
	if _, err := os.Stat(filepath.Join(c.dir, "rediacc.db")); !os.IsNotExist(err) {
		t.Errorf("a store was created beside the archive: %v", err)
	}
}

// An empty --data-dir is refused (exit 5) before anything is written: the
// files would otherwise land in the working directory.
func TestCLIEmptyDataDir(t *testing.T) {
	t.Chdir(t.TempDir())
	var out, errb strings.Builder
	code := run(t.Context(), []string{"--data-dir", "", "team", "create", "x"}, &out, &errb)
	if code != exitInvalid || !strings.Contains(errb.String(), "--data-dir") {
		t.Fatalf("--data-dir \"\": exit %d %s", code, errb.String())
	}
	if ents, _ := os.ReadDir("."); len(ents) != 0 {
		t.Fatalf("files written in the working directory: %v", ents)
	}
}
