package ssh_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"strings"
	"sync"
	"testing"

	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/rediacc/rediacc/ssh"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// memSource is a KnownHostsSource in memory, as a store keeps it: AcceptNew
// records a line only while no plain line is held.
type memSource struct {
	mu      sync.Mutex
	lines   []string
	accepts int
	readErr error
}

func (m *memSource) KnownHosts(context.Context) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.readErr != nil {
		return nil, m.readErr
	}
	return []byte(strings.Join(m.lines, "\n")), nil
}

func (m *memSource) AcceptNew(_ context.Context, line string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	plain := false
	for _, l := range m.lines {
		plain = plain || !strings.HasPrefix(l, "@")
	}
	if !plain {
		m.lines = append(m.lines, line)
		m.accepts++
	}
	return []byte(strings.Join(m.lines, "\n")), nil
}

func (m *memSource) String() string { return "test source" }

// TestKnownHostsSource: a policy over lines held outside files verifies
// like a file: the recorded key passes, another key is a mismatch naming
// the source and line, an unknown host names the source, @revoked holds,
// accept-new records one line however many dials race, and a source that
// cannot be read fails the dial.
func TestKnownHostsSource(t *testing.T) {
	a := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 2})
	b := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 3})
	p := newPool(t, ssh.Config{})
	lineOf := func(o *sshtest.OpenSSH, k xssh.PublicKey) string { return knownhosts.Line([]string{o.Addr()}, k) }

	t.Run("recorded key", func(t *testing.T) {
		src := &memSource{lines: []string{"# a comment", lineOf(a, a.HostPublicKey), lineOf(b, b.HostPublicKey)}}
		for _, o := range []*sshtest.OpenSSH{a, b} {
			tg := opensshTarget("src-"+o.Host, o)
			tg.HostKey = ssh.KnownHostsFrom(src)
			runOK(t, p, tg, "true")
		}
	})
	t.Run("mismatch", func(t *testing.T) {
		src := &memSource{lines: []string{"# first", lineOf(b, a.HostPublicKey)}}
		tg := opensshTarget("beta", b)
		tg.HostKey = ssh.KnownHostsFrom(src)
		_, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"})
		if !errors.Is(err, ssh.ErrHostKeyMismatch) || ssh.IsRetryable(err) {
			t.Fatalf("err = %v, want ErrHostKeyMismatch", err)
		}
		for _, want := range []string{`"beta"`, "test source", "line 2", "does not match"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
		if strings.Contains(err.Error(), "/dev/fd") {
			t.Errorf("error %q names a pipe", err)
		}
	})
	t.Run("unknown", func(t *testing.T) {
		tg := opensshTarget("beta", b)
		tg.HostKey = ssh.KnownHostsFrom(&memSource{lines: []string{lineOf(a, a.HostPublicKey)}})
		_, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"})
		if !errors.Is(err, ssh.ErrUnknownHostKey) || !strings.Contains(err.Error(), "test source") {
			t.Fatalf("err = %v, want ErrUnknownHostKey naming the source", err)
		}
		tg.HostKey = ssh.KnownHostsFrom(&memSource{})
		if _, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"}); !errors.Is(err, ssh.ErrUnknownHostKey) {
			t.Fatalf("empty source: err = %v, want ErrUnknownHostKey", err)
		}
	})
	t.Run("revoked", func(t *testing.T) {
		src := &memSource{lines: []string{lineOf(b, b.HostPublicKey), "@revoked * " + string(bytes.TrimSpace(xssh.MarshalAuthorizedKey(b.HostPublicKey)))}}
		tg := opensshTarget("beta", b)
		tg.HostKey = ssh.KnownHostsFrom(src)
		_, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"})
		if !errors.Is(err, ssh.ErrHostKeyMismatch) || !strings.Contains(err.Error(), "@revoked in test source line 2") {
			t.Fatalf("err = %v, want ErrHostKeyMismatch naming the @revoked line", err)
		}
	})
	t.Run("accept new", func(t *testing.T) {
		src := &memSource{}
		var wg sync.WaitGroup
		errs := make(chan error, 6)
		for range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pp := ssh.NewPool(ssh.Config{})
				defer pp.Close()
				tg := opensshTarget("tofu", a)
				tg.HostKey = ssh.AcceptNewHostKeyFrom(src)
				_, err := pp.Run(context.Background(), tg, ssh.Command{Cmd: "true"})
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if src.accepts != 1 || len(src.lines) != 1 || src.lines[0] != lineOf(a, a.HostPublicKey) {
			t.Fatalf("source after racing first contacts: %d accepts, lines %q", src.accepts, src.lines)
		}
		// A host whose address is recorded with another key: refused,
		// nothing recorded.
		src.lines = []string{lineOf(b, a.HostPublicKey)} // b's address, a's key
		tg := opensshTarget("tofu-b", b)
		tg.HostKey = ssh.AcceptNewHostKeyFrom(src)
		if _, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"}); !errors.Is(err, ssh.ErrHostKeyMismatch) {
			t.Fatalf("err = %v, want ErrHostKeyMismatch", err)
		}
		if src.accepts != 1 {
			t.Fatalf("a mismatch recorded a key: %q", src.lines)
		}
	})
	t.Run("unreadable source", func(t *testing.T) {
		tg := opensshTarget("beta", b)
		tg.HostKey = ssh.KnownHostsFrom(&memSource{readErr: errors.New("database unreachable")})
		_, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"})
		if !errors.Is(err, ssh.ErrUnknownHostKey) || !strings.Contains(err.Error(), "database unreachable") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("bad line", func(t *testing.T) {
		tg := opensshTarget("beta", b)
		tg.HostKey = ssh.KnownHostsFrom(&memSource{lines: []string{"not a known_hosts line at all"}})
		_, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"})
		if err == nil || !strings.Contains(err.Error(), "test source") || strings.Contains(err.Error(), "/dev/fd") {
			t.Fatalf("err = %v, want an error naming the source", err)
		}
	})
}

// KnownHostsLines picks the lines naming an address, hashed and patterned
// names included, as knownhosts matches them; KnownHostsLineAddr reads the
// address back from a line knownhosts.Line wrote.
func TestKnownHostsLines(t *testing.T) {
	key := func() xssh.PublicKey {
		pub, _, err := ed25519.GenerateKey(nil)
		if err != nil {
			t.Fatal(err)
		}
		k, err := xssh.NewPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	k1, k2, k3 := key(), key(), key()
	l1 := knownhosts.Line([]string{"[10.0.0.1]:2222"}, k1)
	l2 := knownhosts.Line([]string{knownhosts.HashHostname("[10.0.0.1]:2222")}, k2)
	l3 := knownhosts.Line([]string{"10.0.0.1"}, k3) // port 22: another address
	text := strings.Join([]string{"# comment", l1, "", l3, "@revoked * " + strings.TrimSpace(string(xssh.MarshalAuthorizedKey(k3))), l2}, "\n")
	got, err := ssh.KnownHostsLines([]byte(text), "10.0.0.1:2222")
	if err != nil || len(got) != 2 || got[0] != l1 || got[1] != l2 {
		t.Fatalf("KnownHostsLines(:2222) = %q, %v; want the plain and the hashed line", got, err)
	}
	if got, err := ssh.KnownHostsLines([]byte(text), "10.0.0.1"); err != nil || len(got) != 1 || got[0] != l3 {
		t.Fatalf("KnownHostsLines(port 22) = %q, %v", got, err)
	}
	if got, err := ssh.KnownHostsLines([]byte(text), "10.0.0.9:22"); err != nil || len(got) != 0 {
		t.Fatalf("KnownHostsLines(unknown) = %q, %v", got, err)
	}
	if _, err := ssh.KnownHostsLines([]byte("10.0.0.1 ssh-ed25519 %%%\n"), "10.0.0.1:22"); err == nil || !strings.Contains(err.Error(), "known_hosts text") {
		t.Fatalf("garbage: %v", err)
	}
	for line, want := range map[string]string{l1: "10.0.0.1:2222", l3: "10.0.0.1:22"} {
		if got, err := ssh.KnownHostsLineAddr(line); err != nil || got != want {
			t.Errorf("KnownHostsLineAddr(%q) = %q, %v; want %s", line, got, err, want)
		}
	}
	for _, bad := range []string{l2, "@cert-authority * " + strings.TrimSpace(string(xssh.MarshalAuthorizedKey(k1))), "a,b ssh-ed25519 AAAA", "x"} {
		if _, err := ssh.KnownHostsLineAddr(bad); err == nil {
			t.Errorf("KnownHostsLineAddr(%q): no error", bad)
		}
	}
}
