package sqlite_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/sqlite"
)

// An empty store file is damage, not a new store: Open refuses it naming
// the file and what to do, and changes nothing (no bytes, no side files).
func TestOpenRefusesEmptyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rediacc.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := sqlite.Open(context.Background(), path)
	if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "empty") || !strings.Contains(err.Error(), "backup") {
		t.Fatalf("open an empty file: %v, want ErrCorrupt naming the file and what to do", err)
	}
	ents, _ := os.ReadDir(dir)
	if fi, _ := os.Stat(path); len(ents) != 1 || fi.Size() != 0 {
		t.Fatalf("the refused open changed the directory: %d entries, size %d", len(ents), fi.Size())
	}
}

// A new store is created whole, also by several openers at once; no
// temporary file stays behind, and the file is 0600.
func TestOpenCreatesWhole(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "rediacc.db")
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, err := sqlite.Open(context.Background(), path)
			if err == nil {
				err = e.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("opener %d: %v", i, err)
		}
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Size() == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the new store file: %v %v", fi, err)
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	for _, e := range ents {
		if strings.Contains(e.Name(), ".new-") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
	e, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	e.Close()
}
