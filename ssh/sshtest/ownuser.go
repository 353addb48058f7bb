package sshtest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/crypto/ssh"
)

// createOwnUser creates a login user named "rdc" and 8 random hex digits
// with home directory home (created, owned by the user, mode 0755), shell
// /bin/sh and the password field "*" (no password, not locked: sshd
// without PAM accepts keys). It returns the name and ids.
func createOwnUser(home string) (name string, uid, gid int, err error) {
	var b [4]byte
	_, _ = rand.Read(b[:])
	name = "rdc" + hex.EncodeToString(b[:])
	err = withUserLock(func() error {
		out, err := exec.Command(sbin("useradd"), "-M", "-d", home, "-s", "/bin/sh", "-p", "*", name).CombinedOutput()
		if err != nil {
			return fmt.Errorf("useradd %s: %v: %s", name, err, bytes.TrimSpace(out))
		}
		return nil
	})
	if err != nil {
		return "", 0, 0, err
	}
	u, err := user.Lookup(name)
	if err != nil {
		return "", 0, 0, err
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	if err := os.MkdirAll(home, 0o755); err != nil {
		return "", 0, 0, err
	}
	if err := os.Chown(home, uid, gid); err != nil {
		return "", 0, 0, err
	}
	return name, uid, gid, os.Chmod(home, 0o755)
}

// deleteOwnUser removes a user made by createOwnUser (its home directory is
// in the test's temporary directory and goes with it).
func deleteOwnUser(tb testing.TB, name string) {
	err := withUserLock(func() error {
		out, err := exec.Command(sbin("userdel"), name).CombinedOutput()
		if err != nil {
			return fmt.Errorf("userdel %s: %v: %s", name, err, bytes.TrimSpace(out))
		}
		return nil
	})
	if err != nil {
		tb.Logf("sshtest: %v", err)
	}
}

// withUserLock runs fn holding the lock that serialises changes to the
// user database between test processes.
func withUserLock(fn func() error) error {
	userOnce.Lock()
	defer userOnce.Unlock()
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "rediacc-sshtest-user.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	return fn()
}

// writeOwned writes path (mode 0600) and its directory (0700), both owned
// by uid:gid, as ssh-keygen and ssh-copy-id leave them.
func writeOwned(path string, data []byte, uid, gid int) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return err
	}
	for _, p := range []string{dir, path} {
		if err := os.Chown(p, uid, gid); err != nil {
			return err
		}
	}
	return os.Chmod(dir, 0o700)
}

// OtherAuthorizedKeys returns authorized_keys lines of other people, as a
// shared account holds them: a comment, keys with options (from=,
// command= with escaped quotes), a CRLF line ending, a blank line, odd
// spacing, and a last line without a line ending. Tools that edit the
// file must keep them byte for byte. who goes into the comments.
func OtherAuthorizedKeys(tb testing.TB, who string) []byte {
	tb.Helper()
	var keys []string
	for i := 0; i < 4; i++ {
		s, _, err := GenerateSigner(nil)
		if err != nil {
			tb.Fatal(err)
		}
		keys = append(keys, string(bytes.TrimSpace(ssh.MarshalAuthorizedKey(s.PublicKey()))))
	}
	return []byte("# " + who + ": kept by hand — do not reorder\n" +
		`from="10.0.0.0/8,!10.1.2.3",no-agent-forwarding ` + keys[0] + " alice@laptop\n" +
		"\n" +
		`command="/usr/local/bin/backup --only \"db\"",no-pty,restrict ` + keys[1] + " backup-robot@" + who + "\r\n" +
		"   " + keys[2] + "   bob with spaces   \n" +
		"not a key line at all\n" +
		keys[3] + " carol-no-newline-at-end")
}
