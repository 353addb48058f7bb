// Package safefs opens the files of directories that hold rediacc's state
// (the data dir, the vault dir, the log archive) so that nobody but their
// owner can redirect a write or a read: such a directory must be a real
// directory (not a symbolic link), owned by the process's user and not
// writable by group or others, and files in it are opened with O_NOFOLLOW,
// so a link planted in it is refused instead of followed.
//
// The threat it answers: a process (often root) given a state directory that
// another user prepared would otherwise create, append to or read files at
// whatever paths links planted there name.
package safefs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// ErrUnsafe is wrapped by every refusal of this package: a directory that
// is a symbolic link, is owned by another user or is writable by group or
// others, and a file that is a symbolic link.
var ErrUnsafe = errors.New("unsafe path")

// CheckDir returns nil when dir is a directory (not a symbolic link) owned
// by the effective user and not writable by group or others, and every
// directory on the way to it is owned by root or the effective user and
// not writable by group or others unless sticky (as /tmp); otherwise an
// error wrapping ErrUnsafe that says how to fix it, or the error of Lstat.
func CheckDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if err := checkAncestors(dir); err != nil {
		return err
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		target, _ := filepath.EvalSymlinks(dir)
		return fmt.Errorf("%w: %s is a symbolic link (to %s): refusing to follow it; use the real path", ErrUnsafe, dir, target)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s is not a directory", ErrUnsafe, dir)
	}
	if uid, ok := owner(fi); ok && uid != os.Geteuid() {
		return fmt.Errorf("%w: %s is owned by %s, not by this process's user %s: files in it could be links its owner planted; "+
			"use a directory you own (mkdir -m 700 DIR), or chown it if it is yours", ErrUnsafe, dir, userName(uid), userName(os.Geteuid()))
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("%w: %s is writable by group or others (mode %s): anyone who can write in it can plant links to files this process would write; "+
			"run chmod go-w %s (better: chmod 700)", ErrUnsafe, dir, perm, dir)
	}
	return nil
}

// MkdirPrivate creates dir with mode 0700 (and missing parents likewise)
// unless it exists, then checks it with CheckDir. The directories on the
// way are checked before anything is created.
func MkdirPrivate(dir string) error {
	if err := checkAncestors(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		if _, lerr := os.Lstat(dir); lerr == nil {
			return CheckDir(dir) // e.g. a dangling link: say so
		}
		return err
	}
	return CheckDir(dir)
}

// OpenFile is os.OpenFile with O_NOFOLLOW: a symbolic link at path is
// refused (ErrUnsafe) instead of followed.
func OpenFile(path string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW, perm)
	if err != nil && errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("%w: %s is a symbolic link: refusing to follow it (remove it; this directory holds only rediacc's own files)", ErrUnsafe, path)
	}
	return f, err
}

// ReadFile is os.ReadFile through OpenFile.
func ReadFile(path string) ([]byte, error) {
	f, err := OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// WriteFileExcl creates path (which must not exist, not even as a link)
// with perm, writes data and fsyncs it; on failure it removes what it
// created.
func WriteFileExcl(path string, data []byte, perm os.FileMode) (err error) {
	f, err := OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	return f.Sync()
}

// checkAncestors checks the existing directories on the way to dir, along
// the path as written and along the path with its links resolved: whoever
// may write in one of them could replace what follows it.
func checkAncestors(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	paths := []string{abs}
	if real := resolveExisting(abs); real != abs {
		paths = append(paths, real)
	}
	for _, p := range paths {
		for a := filepath.Dir(p); ; a = filepath.Dir(a) {
			fi, err := os.Stat(a)
			if err == nil {
				uid, ok := owner(fi)
				if ok && uid != 0 && uid != os.Geteuid() {
					return fmt.Errorf("%w: %s, on the way to %s, is owned by %s: whoever owns it can replace what is in it; "+
						"use a directory whose parents only you and root own", ErrUnsafe, a, dir, userName(uid))
				}
				if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&os.ModeSticky == 0 {
					return fmt.Errorf("%w: %s, on the way to %s, is writable by group or others (mode %s) and not sticky: "+
						"anyone who can write in it can replace what is in it; run chmod go-w %s, or use another directory", ErrUnsafe, a, dir, fi.Mode().Perm(), a)
				}
			}
			if filepath.Dir(a) == a {
				break
			}
		}
	}
	return nil
}

// resolveExisting resolves the links of the longest existing prefix of p.
func resolveExisting(p string) string {
	var rest []string
	for cur := p; ; {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(append([]string{r}, rest...)...)
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return p
		}
		rest = append([]string{filepath.Base(cur)}, rest...)
		cur = parent
	}
}
