package rediacc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/rediacc/rediacc/internal/safefs"
	"github.com/rediacc/rediacc/internal/store/memory"
)

// ErrUnsafePath: a directory that holds the client's state (Config.DataDir,
// Config.ArchiveDir, the local vault's directory) is a symbolic link, is
// owned by another user or is writable by group or others, or a file in it
// is a symbolic link. rediacc refuses to use it, since whoever can write in
// it could make this process (often root) write or read files elsewhere;
// the error says how to fix the directory. The CLI exits 3.
var ErrUnsafePath = errors.New("unsafe path")

// unsafeErr maps safefs's refusal onto ErrUnsafePath.
func unsafeErr(err error) error {
	if err != nil && errors.Is(err, safefs.ErrUnsafe) && !errors.Is(err, ErrUnsafePath) {
		return &isError{msg: err.Error(), err: err, is: ErrUnsafePath}
	}
	return err
}

// mkdirPrivate creates dir (0700) when missing and checks that it is safe
// to keep state in (ErrUnsafePath otherwise).
func mkdirPrivate(dir string) error {
	return unsafeErr(safefs.MkdirPrivate(dir))
}

// readFileNoFollow reads a file of a state directory without following a
// symbolic link.
func readFileNoFollow(path string) ([]byte, error) {
	b, err := safefs.ReadFile(path)
	return b, unsafeErr(err)
}

// writeFileExcl creates a file (0600) of a state directory; a link in its
// place is refused.
func writeFileExcl(path string, data []byte) error {
	return unsafeErr(safefs.WriteFileExcl(path, data, 0o600))
}

// openDataDir creates (0700) and checks the data dir (New). Beyond the
// checks of mkdirPrivate it warns when others may read it.
func openDataDir(cfg *Config) error {
	if err := mkdirPrivate(cfg.DataDir); err != nil {
		return fmt.Errorf("rediacc: data dir %s: %w", cfg.DataDir, err)
	}
	if fi, err := os.Stat(cfg.DataDir); err == nil && fi.Mode().Perm()&0o077 != 0 {
		cfg.Logger.Warn("data dir is readable by other users: it holds the queue, the vault key and the archive; run chmod 700 on it",
			"dir", cfg.DataDir, "mode", fi.Mode().Perm().String())
	}
	return nil
}

// inMemory reports whether s lives in this process only (NewMemoryStore).
func (s *Store) inMemory() bool {
	_, ok := s.e.(*memory.Engine)
	return ok
}

// newUndo is what New created (files and directories that did not exist
// before it), removed again when New fails: a failed New changes nothing.
// Directories are removed only when empty.
type newUndo struct {
	files, dirs []string
}

// noteFiles records the paths among files that do not exist now.
func (u *newUndo) noteFiles(files ...string) {
	for _, f := range files {
		if _, err := os.Lstat(f); errors.Is(err, os.ErrNotExist) {
			u.files = append(u.files, f)
		}
	}
}

// noteDir records dir (and its missing parents) when it does not exist now.
func (u *newUndo) noteDir(dir string) {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); !errors.Is(err, os.ErrNotExist) || d == filepath.Dir(d) {
			return
		}
		u.dirs = append(u.dirs, d) // innermost first
	}
}

// run removes what was recorded and created meanwhile.
func (u *newUndo) run() {
	for _, f := range u.files {
		_ = os.Remove(f)
	}
	for _, d := range u.dirs {
		_ = os.Remove(d) // only when empty
	}
}

// absPaths makes the paths of cfg absolute, resolved against the working
// directory New runs in: the data dir, the archive dir and the audit key
// file are written long after New (the archive on first use), when an
// embedding program may have changed its working directory; a relative
// path would then put the client's files wherever it went.
func absPaths(cfg *Config) error {
	for _, p := range []*string{&cfg.DataDir, &cfg.ArchiveDir, &cfg.AuditKeyFile} {
		if *p == "" || filepath.IsAbs(*p) {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return fmt.Errorf("rediacc: %s: %w", *p, err)
		}
		*p = abs
	}
	return nil
}
