package ssh_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	xssh "golang.org/x/crypto/ssh"

	"github.com/rediacc/rediacc/ssh"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// otherLines is an authorized_keys file of other people's keys, options,
// comments and odd spacing that every edit must keep byte for byte.
func otherLines(t *testing.T) []byte { return sshtest.OtherAuthorizedKeys(t, "test") }

func fileInfo(t *testing.T, path string) (os.FileMode, int, int) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fi.Mode(), int(st.Uid), int(st.Gid)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// Adding a key and then removing another keeps every other line, the file's
// mode and owner; sshd (StrictModes on, keys in ~/.ssh) takes the new key
// and refuses the removed one.
func TestAuthorizedKeysEditOnOpenSSH(t *testing.T) {
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 11, AuthorizedKeysInHome: true})
	ctx := ctxT(t)
	p := newPool(t, ssh.Config{})
	others := otherLines(t)
	old := xssh.MarshalAuthorizedKey(srv.ClientSigner.PublicKey())
	initial := append(append(bytes.Clone(old), others...), '\n')
	initial = append(initial, "# trailing comment"...) // no final newline
	if err := os.WriteFile(srv.AuthorizedKeysPath, initial, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(srv.AuthorizedKeysPath, 0o640); err != nil { // an unusual mode that must be kept
		t.Fatal(err)
	}
	oldT := opensshTarget("edit", srv)

	f, err := p.ReadAuthorizedKeys(ctx, oldT, "")
	if err != nil {
		t.Fatal(err)
	}
	if !f.Exists || !f.Writable || f.Path != srv.AuthorizedKeysPath || !bytes.Equal(f.Content, initial) || f.Mode != 0o640 || f.UID != srv.UID || f.GID != srv.GID {
		t.Fatalf("read = path %s exists %v writable %v (%s) mode %v owner %d:%d, content equal %v",
			f.Path, f.Exists, f.Writable, f.Problem, f.Mode, f.UID, f.GID, bytes.Equal(f.Content, initial))
	}

	newSigner, newPEM, err := ssh.GenerateKey(ssh.KeyEd25519, 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	const comment = "rediacc machine=edit added=2026-01-02"
	before, after, err := p.UpdateAuthorizedKeys(ctx, oldT, "", func(c []byte) ([]byte, error) {
		out, _ := ssh.AddAuthorizedKey(c, newSigner.PublicKey(), comment)
		return out, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The new line goes before the last line, which has no line ending.
	last := bytes.LastIndexByte(initial, '\n') + 1
	want := bytes.Clone(initial[:last])
	want = append(append(want, bytes.TrimSpace(xssh.MarshalAuthorizedKey(newSigner.PublicKey()))...), " "+comment+"\n"...)
	want = append(want, initial[last:]...)
	got, _ := os.ReadFile(srv.AuthorizedKeysPath)
	if !bytes.Equal(got, want) || !bytes.Equal(after.Content, want) || !bytes.Equal(before.Content, initial) {
		t.Fatalf("after adding:\n%q\nwant\n%q", got, want)
	}
	if mode, uid, gid := fileInfo(t, srv.AuthorizedKeysPath); mode != 0o640 || uid != srv.UID || gid != srv.GID {
		t.Fatalf("mode %v owner %d:%d after the edit, want -rw-r----- %d:%d", mode, uid, gid, srv.UID, srv.GID)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(srv.AuthorizedKeysPath), ".authorized_keys.rediacc-*")); len(leftovers) > 0 {
		t.Fatalf("temporary files left: %v", leftovers)
	}
	// Adding it again changes nothing.
	if _, _, err := p.UpdateAuthorizedKeys(ctx, oldT, "", func(c []byte) ([]byte, error) {
		out, added := ssh.AddAuthorizedKey(c, newSigner.PublicKey(), comment)
		if added {
			t.Error("the key was added twice")
		}
		return out, nil
	}); err != nil {
		t.Fatal(err)
	}

	// A new connection offering only the new key logs in.
	newT := oldT
	newT.Name = "edit-new"
	newT.Auth = []ssh.Auth{ssh.PrivateKey(newPEM, nil)}
	fresh := newPool(t, ssh.Config{})
	if res, err := fresh.Run(ctx, newT, ssh.Command{Cmd: "echo in"}); err != nil || string(res.Stdout) != "in\n" {
		t.Fatalf("login with the new key: %v", err)
	}
	// Remove the old key over the new one: only its line goes.
	_, _, err = fresh.UpdateAuthorizedKeys(ctx, newT, "", func(c []byte) ([]byte, error) {
		out, n := ssh.RemoveAuthorizedKeys(c, func(l ssh.AuthorizedKeyLine) bool { return ssh.SameKey(l.Key, srv.ClientSigner.PublicKey()) })
		if n != 1 {
			t.Errorf("removed %d lines, want 1", n)
		}
		return out, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, _ = os.ReadFile(srv.AuthorizedKeysPath)
	if want2 := want[len(old):]; !bytes.Equal(got, want2) {
		t.Fatalf("after removing:\n%q\nwant\n%q", got, want2)
	}
	oldOnly := oldT
	oldOnly.Name = "edit-old-only"
	if _, err := newPool(t, ssh.Config{}).Run(ctx, oldOnly, ssh.Command{Cmd: "true"}); !errors.Is(err, ssh.ErrAuthFailed) {
		t.Fatalf("login with the removed key: %v, want ErrAuthFailed", err)
	}
	lines := ssh.AuthorizedKeyLines(got)
	if len(lines) != 5 || !ssh.SameKey(lines[4].Key, newSigner.PublicKey()) || lines[4].Comment != comment {
		t.Fatalf("parsed %d key lines after the edits", len(lines))
	}
}

// Read-only file, read-only directory, missing home, full disk: a clear
// error naming the machine, and the file unchanged.
func TestAuthorizedKeysEditErrors(t *testing.T) {
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 11, AuthorizedKeysInHome: true})
	ctx := ctxT(t)
	p := newPool(t, ssh.Config{})
	tg := opensshTarget("web-7", srv)
	k, _, _ := ssh.GenerateKey(ssh.KeyEd25519, 0, "")
	add := func(c []byte) ([]byte, error) { out, _ := ssh.AddAuthorizedKey(c, k.PublicKey(), "x"); return out, nil }
	sshDir := filepath.Dir(srv.AuthorizedKeysPath)
	initial, _ := os.ReadFile(srv.AuthorizedKeysPath)
	unchanged := func(t *testing.T) {
		t.Helper()
		if got, _ := os.ReadFile(srv.AuthorizedKeysPath); !bytes.Equal(got, initial) {
			t.Fatalf("authorized_keys changed:\n%q", got)
		}
		if leftovers, _ := filepath.Glob(filepath.Join(sshDir, ".authorized_keys.rediacc-*")); len(leftovers) > 0 {
			t.Fatalf("temporary files left: %v", leftovers)
		}
	}
	check := func(t *testing.T, err error, sentinel error, words ...string) {
		t.Helper()
		if !errors.Is(err, sentinel) {
			t.Fatalf("err = %v, want %v", err, sentinel)
		}
		for _, w := range append(words, "web-7") {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("error %q does not say %q", err, w)
			}
		}
		if ssh.IsRetryable(err) && sentinel != ssh.ErrRemoteWrite {
			t.Fatalf("%v is retryable", err)
		}
		unchanged(t)
	}

	t.Run("read-only file", func(t *testing.T) {
		os.Chmod(srv.AuthorizedKeysPath, 0o400)
		defer os.Chmod(srv.AuthorizedKeysPath, 0o600)
		_, _, err := p.UpdateAuthorizedKeys(ctx, tg, "", add)
		check(t, err, ssh.ErrAuthorizedKeysNotWritable, "not writable", srv.AuthorizedKeysPath)
	})
	t.Run("read-only directory", func(t *testing.T) {
		os.Chmod(sshDir, 0o500)
		defer os.Chmod(sshDir, 0o700)
		_, _, err := p.UpdateAuthorizedKeys(ctx, tg, "", add)
		check(t, err, ssh.ErrAuthorizedKeysNotWritable, "directory")
	})
	t.Run("full disk", func(t *testing.T) {
		// A small tmpfs holds ~/.ssh: the key file fits, a copy does not.
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=8k,mode=0700,uid=%d,gid=%d", srv.UID, srv.GID), "tmpfs", sshDir).CombinedOutput(); err != nil {
			t.Skipf("cannot mount a small tmpfs to fill (needs root and mount rights): %v: %s", err, out)
		}
		defer exec.Command("umount", sshDir).Run()
		if err := os.WriteFile(srv.AuthorizedKeysPath, initial, 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chown(srv.AuthorizedKeysPath, srv.UID, srv.GID)
		filler := filepath.Join(sshDir, "filler")
		f, _ := os.Create(filler)
		for {
			if _, err := f.Write(make([]byte, 512)); err != nil {
				break
			}
		}
		f.Close()
		_, _, err := p.UpdateAuthorizedKeys(ctx, tg, "", add)
		check(t, err, ssh.ErrRemoteWrite, "disk full")
	})
	t.Run("changed meanwhile", func(t *testing.T) {
		calls := 0
		_, after, err := p.UpdateAuthorizedKeys(ctx, tg, "", func(c []byte) ([]byte, error) {
			calls++
			if calls == 1 { // someone else edits the file between our read and write
				f, _ := os.OpenFile(srv.AuthorizedKeysPath, os.O_APPEND|os.O_WRONLY, 0)
				f.WriteString("# added by someone else\n")
				f.Close()
			}
			return add(c)
		})
		if err != nil || calls != 2 {
			t.Fatalf("err %v after %d edits, want nil after 2", err, calls)
		}
		got, _ := os.ReadFile(srv.AuthorizedKeysPath)
		if !bytes.Contains(got, []byte("# added by someone else\n")) || !bytes.Equal(got, after.Content) || len(ssh.AuthorizedKeyLines(got)) != 2 {
			t.Fatalf("content after a concurrent edit:\n%q", got)
		}
		if err := os.WriteFile(srv.AuthorizedKeysPath, initial, 0o600); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("symbolic link", func(t *testing.T) {
		real := filepath.Join(sshDir, "real_keys")
		os.Rename(srv.AuthorizedKeysPath, real)
		os.Symlink(real, srv.AuthorizedKeysPath)
		defer func() { os.Remove(srv.AuthorizedKeysPath); os.Rename(real, srv.AuthorizedKeysPath) }()
		_, _, err := p.UpdateAuthorizedKeys(ctx, tg, "", add)
		if !errors.Is(err, ssh.ErrAuthorizedKeysNotWritable) || !strings.Contains(err.Error(), "symbolic link") {
			t.Fatalf("err = %v, want ErrAuthorizedKeysNotWritable about the symbolic link", err)
		}
		if fi, _ := os.Lstat(srv.AuthorizedKeysPath); fi.Mode()&os.ModeSymlink == 0 {
			t.Fatal("the symbolic link was replaced")
		}
	})
}

// A user whose home directory is gone (keys kept elsewhere, as
// AuthorizedKeysFile may say): ErrHomeMissing naming the machine; an
// absolute path still works.
func TestAuthorizedKeysHomeMissing(t *testing.T) {
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 11, OwnUser: true})
	if err := os.RemoveAll(srv.Home); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	p := newPool(t, ssh.Config{})
	tg := opensshTarget("db-3", srv)
	_, err := p.ReadAuthorizedKeys(ctx, tg, "")
	if !errors.Is(err, ssh.ErrHomeMissing) || !strings.Contains(err.Error(), "db-3") || !strings.Contains(err.Error(), srv.Home) {
		t.Fatalf("err = %v, want ErrHomeMissing naming db-3 and %s", err, srv.Home)
	}
	_, _, err = p.UpdateAuthorizedKeys(ctx, tg, "", func(c []byte) ([]byte, error) { return append(c, "x\n"...), nil })
	if !errors.Is(err, ssh.ErrHomeMissing) {
		t.Fatalf("update: %v, want ErrHomeMissing", err)
	}
	f, err := p.ReadAuthorizedKeys(ctx, tg, srv.AuthorizedKeysPath)
	if err != nil || !f.Exists {
		t.Fatalf("absolute path: %v", err)
	}
}

func TestAuthorizedKeyLineEdits(t *testing.T) {
	others := otherLines(t)
	k, _, _ := ssh.GenerateKey(ssh.KeyEd25519, 0, "")
	for _, content := range [][]byte{others, append(bytes.Clone(others), '\n'), nil, []byte("no-newline")} {
		out, added := ssh.AddAuthorizedKey(content, k.PublicKey(), "c1\nc2")
		if !added || !bytes.Contains(out, []byte(" c1 c2\n")) || len(out) != len(content)+len(" c1 c2\n")+len(bytes.TrimSpace(xssh.MarshalAuthorizedKey(k.PublicKey()))) {
			t.Fatalf("add to %q: %q", content, out)
		}
		back, n := ssh.RemoveAuthorizedKeys(out, func(l ssh.AuthorizedKeyLine) bool { return ssh.SameKey(l.Key, k.PublicKey()) })
		if n != 1 || !bytes.Equal(back, content) && len(content) > 0 {
			t.Fatalf("remove from %q: %d, %q: not the content before", out, n, back)
		}
	}
	if got := len(ssh.AuthorizedKeyLines(others)); got != 4 {
		t.Fatalf("%d key lines in the sample, want 4", got)
	}
	same, n := ssh.RemoveAuthorizedKeys(others, func(ssh.AuthorizedKeyLine) bool { return false })
	if n != 0 || !bytes.Equal(same, others) {
		t.Fatal("removing nothing changed the content")
	}
	for _, l := range ssh.AuthorizedKeyLines(others) {
		if !bytes.Contains(others, l.Line) {
			t.Fatalf("line %q is not a byte-exact part of the file", l.Line)
		}
	}
}
