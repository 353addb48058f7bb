package sqlite

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/rediacc/rediacc/internal/store"
)

// A new store is created whole: its schema is written into a temporary
// file beside the path (".NAME.new-…"), which is then hard-linked to the
// path. So a store file is never empty nor half-initialized, whoever opens
// it and whenever: an empty file at the path is damage (truncated, or
// written by something else), refused with ErrCorrupt, never taken for a
// new store and initialized. Two processes creating the same store at once
// both succeed: the first link wins and the other opens it.

// newTempMark marks the temporary file a store is created in.
const newTempMark = ".new-"

// isNewStoreTemp reports whether path is such a temporary file.
func isNewStoreTemp(path string) bool {
	b := filepath.Base(path)
	return strings.HasPrefix(b, ".") && strings.Contains(b, newTempMark)
}

// createStore creates the store at path (missing) through a temporary file.
func createStore(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("sqlite store %s: %w", path, err)
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(dir, "."+filepath.Base(path)+newTempMark+hex.EncodeToString(rnd[:]))
	defer func() {
		for _, p := range []string{tmp, tmp + "-wal", tmp + "-shm", tmp + "-journal", tmp + "-lock"} {
			_ = os.Remove(p)
		}
	}()
	e, err := Open(context.Background(), tmp)
	if err != nil {
		return err
	}
	if err := e.Close(); err != nil { // checkpoints: the file holds the whole schema
		return fmt.Errorf("sqlite store %s: creating it: %w", path, err)
	}
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, os.ErrExist) { // ErrExist: another process created it first
		return fmt.Errorf("sqlite store %s: creating it (a hard link from %s): %w", path, tmp, err)
	}
	return nil
}

// checkNotEmpty refuses an empty store file (see above). A file whose
// content is still in its write-ahead log (a store created by an older
// build, not yet checkpointed) is left to SQLite.
func checkNotEmpty(path string, size int64) error {
	if size > 0 || isNewStoreTemp(path) {
		return nil
	}
	if wal, err := os.Stat(path + "-wal"); err == nil && wal.Size() > 0 {
		return nil
	}
	return fmt.Errorf("%w: %s is empty (0 bytes), so it is not a rediacc store: a store file is never empty (this one was truncated, "+
		"or written by another program); nothing was changed: if it held your queue, restore it from a backup; "+
		"to start a new store, delete the file (a new one is created when it is missing)", store.ErrCorrupt, path)
}
