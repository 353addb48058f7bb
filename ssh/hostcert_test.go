package ssh_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/rediacc/rediacc/ssh"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// Host certificates against a real sshd presenting a HostCertificate
// (127.0.0.84-85): @cert-authority lines as OpenSSH matches them, @revoked
// keys refused, the policy's own host CAs, the fallback to the plain key.

func caLine(patterns string, k xssh.PublicKey) string {
	return "@cert-authority " + patterns + " " + strings.TrimSpace(string(xssh.MarshalAuthorizedKey(k)))
}

func revokedLine(k xssh.PublicKey) string {
	return "@revoked * " + strings.TrimSpace(string(xssh.MarshalAuthorizedKey(k)))
}

func writeKnownHosts(t *testing.T, lines ...string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(f, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestHostCertificate(t *testing.T) {
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 84})
	hostCA, otherCA := newCA(t), newCA(t)
	cert, err := sshtest.SignHostCert(hostCA, o.HostPublicKey, []string{o.Host}, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	o.SetHostCertificate(cert)
	p := newPool(t, ssh.Config{})
	hostPort := fmt.Sprintf("[%s]:%d", o.Host, o.Port)
	plainLine := knownhosts.Line([]string{o.Addr()}, o.HostPublicKey)
	run := func(name string, policy ssh.HostKeyPolicy) error {
		tg := opensshTarget(name, o)
		tg.HostKey = policy
		_, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"})
		return err
	}
	cases := []struct {
		name  string
		lines []string
		want  error // nil: accepted
		msg   string
	}{
		// A CA line alone: the host's certificate is asked for and verified
		// (a plain key would be refused, see "plain key" below).
		{"any host", []string{caLine("*", hostCA.PublicKey())}, nil, ""},
		{"host and port", []string{caLine(hostPort, hostCA.PublicKey())}, nil, ""},
		{"hashed", []string{caLine(knownhosts.HashHostname(hostPort), hostCA.PublicKey())}, nil, ""},
		{"wildcard port", []string{caLine("[127.0.0.*]:*", hostCA.PublicKey())}, nil, ""},
		{"other hosts only", []string{caLine("*.example.com", hostCA.PublicKey())}, ssh.ErrUnknownHostKey, "that no @cert-authority line trusts for it) is not in known_hosts"},
		{"negated", []string{caLine("*,!"+hostPort, hostCA.PublicKey())}, ssh.ErrUnknownHostKey, "is not in known_hosts"},
		{"revoked host key", []string{caLine("*", hostCA.PublicKey()), revokedLine(o.HostPublicKey)}, ssh.ErrHostKeyMismatch, "revoked"},
		{"revoked CA", []string{caLine("*", hostCA.PublicKey()), revokedLine(hostCA.PublicKey())}, ssh.ErrHostKeyMismatch, "@revoked"},
		{"revoked CA, plain line", []string{caLine("*", hostCA.PublicKey()), revokedLine(hostCA.PublicKey()), plainLine}, nil, ""},
		{"untrusted CA", []string{caLine("*", otherCA.PublicKey())}, ssh.ErrHostKeyMismatch, "not trusted for " + hostPort},
		// OpenSSH's fallback: an untrusted certificate, but its key is listed.
		{"untrusted CA, plain line", []string{caLine("*", otherCA.PublicKey()), plainLine}, nil, ""},
	}
	for i, tc := range cases {
		err := run(fmt.Sprintf("hc-%d", i), ssh.KnownHosts(writeKnownHosts(t, tc.lines...)))
		if tc.want == nil && err != nil || tc.want != nil && (!errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg)) {
			t.Errorf("%s: err = %v, want %v with %q", tc.name, err, tc.want, tc.msg)
		}
	}
	// The team's own host CAs (HostKeyPolicy.WithHostCAs) with an empty file.
	if err := run("hc-policy", ssh.KnownHosts(writeKnownHosts(t)).WithHostCAs(hostCA.PublicKey())); err != nil {
		t.Errorf("policy host CA: %v", err)
	}
	if err := run("hc-policy-other", ssh.KnownHosts(writeKnownHosts(t)).WithHostCAs(otherCA.PublicKey())); !errors.Is(err, ssh.ErrHostKeyMismatch) {
		t.Errorf("policy host CA of another CA: %v, want ErrHostKeyMismatch", err)
	}
	// accept-new records the certified key, never the certificate.
	kh := writeKnownHosts(t)
	if err := run("hc-accept", ssh.AcceptNewHostKey(kh)); err != nil {
		t.Fatalf("accept-new: %v", err)
	}
	if b, _ := os.ReadFile(kh); !strings.Contains(string(b), plainLine) || strings.Contains(string(b), "cert-v01") {
		t.Errorf("accept-new recorded %q, want the plain line %q", b, plainLine)
	}

	// An expired certificate and one for another host name.
	for _, bad := range []struct {
		name       string
		principals []string
		after      time.Time
		before     time.Time
		msg        string
	}{
		{"expired", []string{o.Host}, time.Now().Add(-2 * time.Hour), time.Now().Add(-time.Hour), "this client's clock reads"},
		{"other name", []string{"db.example.com"}, time.Now().Add(-time.Minute), time.Now().Add(time.Hour), "is for the hosts [db.example.com], not " + o.Host},
	} {
		c, err := sshtest.SignHostCert(hostCA, o.HostPublicKey, bad.principals, bad.after, bad.before)
		if err != nil {
			t.Fatal(err)
		}
		o.SetHostCertificate(c)
		err = run("hc-"+bad.name, ssh.KnownHosts(writeKnownHosts(t, caLine("*", hostCA.PublicKey()))))
		if !errors.Is(err, ssh.ErrHostKeyMismatch) || !strings.Contains(err.Error(), bad.msg) {
			t.Errorf("%s certificate: %v, want ErrHostKeyMismatch with %q", bad.name, err, bad.msg)
		}
	}
}

// TestHostCertificateExpected: a host known_hosts says uses certificates
// but that presents a plain key is refused (not trusted on first use).
func TestHostCertificateExpected(t *testing.T) {
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 85})
	hostCA := newCA(t)
	p := newPool(t, ssh.Config{})
	for _, policy := range []ssh.HostKeyPolicy{
		ssh.KnownHosts(writeKnownHosts(t, caLine("*", hostCA.PublicKey()))),
		ssh.AcceptNewHostKey(writeKnownHosts(t, caLine("*", hostCA.PublicKey()))),
	} {
		tg := opensshTarget("plain-host", o)
		tg.HostKey = policy
		_, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"})
		if !errors.Is(err, ssh.ErrHostKeyMismatch) || !strings.Contains(err.Error(), "presented a plain key") || !strings.Contains(err.Error(), "HostCertificate") {
			t.Errorf("%s: %v, want ErrHostKeyMismatch: a certificate was expected", policy, err)
		}
	}
}

// TestHostCertificateFromSource: @cert-authority and @revoked lines held by
// a KnownHostsSource (a store's host keys) work as in a file: the CA's
// certificate is verified, a @revoked host key is refused naming the
// source's line, accept-new records nothing for a certified host.
func TestHostCertificateFromSource(t *testing.T) {
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 87})
	hostCA := newCA(t)
	cert, err := sshtest.SignHostCert(hostCA, o.HostPublicKey, []string{o.Host}, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	o.SetHostCertificate(cert)
	p := newPool(t, ssh.Config{})
	run := func(name string, policy ssh.HostKeyPolicy) error {
		tg := opensshTarget(name, o)
		tg.HostKey = policy
		_, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"})
		return err
	}
	src := &memSource{lines: []string{caLine("*", hostCA.PublicKey())}}
	if err := run("src-ca", ssh.KnownHostsFrom(src)); err != nil {
		t.Fatalf("@cert-authority in a source: %v", err)
	}
	if err := run("src-accept", ssh.AcceptNewHostKeyFrom(src)); err != nil || src.accepts != 0 {
		t.Fatalf("accept-new on a certified host: %v, %d lines recorded, want none", err, src.accepts)
	}
	src.lines = append(src.lines, revokedLine(o.HostPublicKey))
	if err := run("src-revoked", ssh.KnownHostsFrom(src)); !errors.Is(err, ssh.ErrHostKeyMismatch) || !strings.Contains(err.Error(), "test source line 2") {
		t.Fatalf("@revoked in a source: %v, want ErrHostKeyMismatch naming the source's line", err)
	}
	other := &memSource{lines: []string{caLine("*", newCA(t).PublicKey())}}
	if err := run("src-other", ssh.KnownHostsFrom(other)); !errors.Is(err, ssh.ErrHostKeyMismatch) || !strings.Contains(err.Error(), "test source line 1") {
		t.Fatalf("a certificate of a CA the source does not trust: %v, want ErrHostKeyMismatch naming the source's line", err)
	}
}
