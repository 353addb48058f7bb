package ssh_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	xssh "golang.org/x/crypto/ssh"

	"github.com/rediacc/rediacc/ssh"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// Short-lived user certificates against a real sshd with TrustedUserCAKeys
// (127.0.0.80-83).

// certTarget is a Target on o that logs in with certificates of signer.
func certTarget(name string, o *sshtest.OpenSSH, signer ssh.CertSigner, now func() time.Time) ssh.Target {
	return ssh.Target{
		Name: name, Host: o.Host, Port: o.Port, User: o.User,
		Auth:    []ssh.Auth{ssh.Certificate(signer, now)},
		HostKey: ssh.KnownHosts(o.KnownHostsPath),
	}
}

func newCA(t *testing.T) xssh.Signer {
	t.Helper()
	ca, err := sshtest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestCertificateLogin(t *testing.T) {
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 80})
	ca := newCA(t)
	o.TrustUserCAs(ca.PublicKey())
	p := newPool(t, ssh.Config{})
	var signed atomic.Int32
	var serial atomic.Uint64
	serial.Store(7000)
	authority := &ssh.CertAuthority{
		Signer: ca,
		KeyID:  func(r ssh.CertRequest) string { signed.Add(1); return "rediacc task=t-42 machine=" + r.Machine },
		Serial: func() uint64 { return serial.Add(1) },
	}
	tg := certTarget("cert-1", o, authority, nil)
	res, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "id -un"})
	if err != nil {
		t.Fatalf("run with a certificate: %v", err)
	}
	if got := strings.TrimSpace(string(res.Stdout)); got != o.User {
		t.Fatalf("logged in as %q, want %q", got, o.User)
	}
	// sshd's own log ties the login to the task through the key ID.
	eventuallyLog(t, o, `ID rediacc task=t-42 machine=cert-1 (serial 7001)`)
	if _, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"}); err != nil {
		t.Fatal(err)
	}
	if n := signed.Load(); n != 1 {
		t.Errorf("%d certificates signed for one pooled connection, want 1", n)
	}
	p.Forget("cert-1")
	if _, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"}); err != nil {
		t.Fatal(err)
	}
	if n := signed.Load(); n != 2 {
		t.Errorf("%d certificates signed for two connections, want 2", n)
	}
}

// eventuallyLog waits until sshd's log contains s.
func eventuallyLog(t *testing.T, o *sshtest.OpenSSH, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(o.Log(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("sshd's log lacks %q:\n%s", s, o.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCertificateNoPtyByDefault: a CertAuthority certificate carries no
// extension, so sshd refuses a pty (and forwarding); a machine that asks
// for permit-pty gets it.
func TestCertificateNoPtyByDefault(t *testing.T) {
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 81})
	ca := newCA(t)
	o.TrustUserCAs(ca.PublicKey())
	for _, tc := range []struct {
		ext     map[string]string
		wantPty bool
	}{{nil, false}, {map[string]string{"permit-pty": ""}, true}} {
		cert, key := signFor(t, &ssh.CertAuthority{Signer: ca, Extensions: tc.ext}, o.User)
		if len(cert.Extensions) != len(tc.ext) {
			t.Fatalf("extensions %v, want %v", cert.Extensions, tc.ext)
		}
		cs, err := xssh.NewCertSigner(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		c, err := xssh.Dial("tcp", o.Addr(), &xssh.ClientConfig{User: o.User, Auth: []xssh.AuthMethod{xssh.PublicKeys(cs)},
			HostKeyCallback: xssh.FixedHostKey(o.HostPublicKey)})
		if err != nil {
			t.Fatalf("login: %v", err)
		}
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		err = s.RequestPty("xterm", 24, 80, nil)
		if (err == nil) != tc.wantPty {
			t.Errorf("extensions %v: pty request error %v, want a pty: %v", tc.ext, err, tc.wantPty)
		}
		s.Close()
		if ok, _, err := c.SendRequest("tcpip-forward", true, xssh.Marshal(struct {
			Addr string
			Port uint32
		}{"127.0.0.1", 0})); ok || err != nil {
			t.Errorf("extensions %v: remote port forwarding allowed (%v, %v)", tc.ext, ok, err)
		}
		c.Close()
	}
}

// signFor signs a new ephemeral key for user with a.
func signFor(t *testing.T, a *ssh.CertAuthority, user string) (*xssh.Certificate, xssh.Signer) {
	t.Helper()
	key, _, err := sshtest.GenerateSigner(nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := a.SignCert(context.Background(), ssh.CertRequest{Machine: "m", User: user, Key: key.PublicKey()})
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// TestCertificateRefusals: an expired or not yet valid certificate (the
// signer's clock injected), a CA sshd does not trust, a certificate for
// another principal: each refused by the real sshd, with the reason and,
// for the clock cases, both clocks.
func TestCertificateRefusals(t *testing.T) {
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 82})
	ca, other := newCA(t), newCA(t)
	o.TrustUserCAs(ca.PublicKey())
	p := newPool(t, ssh.Config{})
	skewed := func(d time.Duration) func() time.Time { return func() time.Time { return time.Now().Add(d) } }
	otherPrincipal := ssh.CertSignerFunc(func(ctx context.Context, r ssh.CertRequest) (*xssh.Certificate, error) {
		r.User = "someone-else"
		return (&ssh.CertAuthority{Signer: ca}).SignCert(ctx, r)
	})
	cases := []struct {
		name    string
		signer  ssh.CertSigner
		now     func() time.Time
		reason  ssh.CertRejection
		expired bool
		want    []string
	}{
		{"expired", &ssh.CertAuthority{Signer: ca, Now: skewed(-time.Hour)}, skewed(-time.Hour), ssh.CertExpired, true,
			[]string{"had expired by the machine's clock", "ahead", "signer's clock read"}},
		{"not yet valid", &ssh.CertAuthority{Signer: ca, Now: skewed(2 * time.Hour)}, skewed(2 * time.Hour), ssh.CertNotYetValid, true,
			[]string{"not yet valid by the machine's clock", "behind"}},
		{"untrusted CA", &ssh.CertAuthority{Signer: other}, nil, ssh.CertNotAccepted, false,
			[]string{"accepts no certificate of CA " + xssh.FingerprintSHA256(other.PublicKey()), "TrustedUserCAKeys"}},
		{"other principal", otherPrincipal, nil, ssh.CertNotAccepted, false,
			[]string{`principals [someone-else]`, "AuthorizedPrincipalsFile"}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tg := certTarget(fmt.Sprintf("refused-%d", i), o, tc.signer, tc.now)
			_, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"})
			var ce *ssh.CertRejectedError
			if !errors.As(err, &ce) || !errors.Is(err, ssh.ErrAuthFailed) || ssh.IsRetryable(err) {
				t.Fatalf("err = %v, want a CertRejectedError wrapping ErrAuthFailed, not retryable", err)
			}
			if ce.Reason != tc.reason || errors.Is(err, ssh.ErrCertExpired) != tc.expired {
				t.Fatalf("reason %s (expired %v), want %s: %v", ce.Reason, errors.Is(err, ssh.ErrCertExpired), tc.reason, err)
			}
			for _, w := range append(tc.want, tg.Name, o.Addr()) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			if tc.expired {
				if d := time.Since(ce.ServerTime); d < -5*time.Second || d > time.Minute {
					t.Errorf("server time %s is not the machine's clock (now %s)", ce.ServerTime, time.Now())
				}
				for _, tm := range []time.Time{ce.ServerTime, ce.SignerTime} {
					if s := tm.UTC().Format("2006-01-02 15:04:05"); !strings.Contains(err.Error(), s) {
						t.Errorf("error does not name the clock %s: %v", s, err)
					}
				}
			}
		})
	}
}

// TestCertificatePrincipalsFile: with AuthorizedPrincipalsFile, sshd wants
// the principal the file lists, not the user name.
func TestCertificatePrincipalsFile(t *testing.T) {
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 83})
	ca := newCA(t)
	o.TrustUserCAs(ca.PublicKey())
	principals := filepath.Join(o.Dir, "principals")
	if err := os.WriteFile(principals, []byte("deploy-role\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o.Reconfigure("AuthorizedPrincipalsFile " + principals)
	p := newPool(t, ssh.Config{})
	_, err := p.Run(context.Background(), certTarget("pf-user", o, &ssh.CertAuthority{Signer: ca}, nil), ssh.Command{Cmd: "true"})
	var ce *ssh.CertRejectedError
	if !errors.As(err, &ce) || ce.Reason != ssh.CertNotAccepted {
		t.Fatalf("certificate for the user name: err %v, want not accepted", err)
	}
	role := ssh.CertSignerFunc(func(ctx context.Context, r ssh.CertRequest) (*xssh.Certificate, error) {
		r.User = "deploy-role"
		return (&ssh.CertAuthority{Signer: ca}).SignCert(ctx, r)
	})
	if _, err := p.Run(context.Background(), certTarget("pf-role", o, role, nil), ssh.Command{Cmd: "true"}); err != nil {
		t.Fatalf("certificate for the listed principal: %v", err)
	}
}

// TestCertificateSignerErrors: a signer failure is ErrCertificate naming
// the machine, retryable only when it wraps ErrConnect; nothing is dialed.
func TestCertificateSignerErrors(t *testing.T) {
	p := newPool(t, ssh.Config{})
	otherKey, _, _ := sshtest.GenerateSigner(nil)
	ca := newCA(t)
	cases := []struct {
		name      string
		signer    ssh.CertSigner
		retryable bool
		want      string
	}{
		{"refused", ssh.CertSignerFunc(func(context.Context, ssh.CertRequest) (*xssh.Certificate, error) {
			return nil, errors.New("role does not allow user")
		}), false, "role does not allow user"},
		{"unreachable", ssh.CertSignerFunc(func(context.Context, ssh.CertRequest) (*xssh.Certificate, error) {
			return nil, fmt.Errorf("%w: vault at http://127.0.0.1:1 refused the connection", ssh.ErrConnect)
		}), true, "refused the connection"},
		{"another key", ssh.CertSignerFunc(func(ctx context.Context, r ssh.CertRequest) (*xssh.Certificate, error) {
			r.Key = otherKey.PublicKey()
			return (&ssh.CertAuthority{Signer: ca}).SignCert(ctx, r)
		}), false, "certified another key"},
		{"nil signer", nil, false, "CertSigner is nil"},
	}
	for _, tc := range cases {
		tg := ssh.Target{Name: "sign-" + tc.name, Host: "127.0.0.1", Port: 1, User: "u",
			Auth: []ssh.Auth{ssh.Certificate(tc.signer, nil)}, HostKey: ssh.InsecureIgnoreHostKey()}
		_, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"})
		if err == nil || ssh.IsRetryable(err) != tc.retryable || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tg.Name) {
			t.Errorf("%s: err = %v (retryable %v), want %q, retryable %v", tc.name, err, ssh.IsRetryable(err), tc.want, tc.retryable)
		}
		if tc.name != "nil signer" && !errors.Is(err, ssh.ErrCertificate) {
			t.Errorf("%s: %v does not wrap ErrCertificate", tc.name, err)
		}
	}
}

// TestCertificateRevoked: sshd with RevokedKeys (a KRL) refuses a
// certificate revoked by serial or by key ID while the CA's other
// certificates log in (ErrCertRevoked, naming the serial); a revoked CA
// refuses every certificate it signed (CertNotAccepted, naming
// RevokedKeys). None is retryable.
func TestCertificateRevoked(t *testing.T) {
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 86})
	ca := newCA(t)
	o.TrustUserCAs(ca.PublicKey())
	p := newPool(t, ssh.Config{})
	var serial atomic.Uint64
	serial.Store(500)
	authority := func(keyID string) *ssh.CertAuthority {
		return &ssh.CertAuthority{Signer: ca, Serial: func() uint64 { return serial.Add(1) },
			KeyID: func(r ssh.CertRequest) string {
				if r.ClockProbe {
					return keyID + " clock-probe"
				}
				return keyID
			}}
	}
	run := func(name string, a *ssh.CertAuthority) error {
		_, err := p.Run(context.Background(), certTarget(name, o, a, nil), ssh.Command{Cmd: "true"})
		return err
	}
	// The next serial (501) and a key ID are revoked; other certificates
	// of the CA, for the same user, still log in.
	o.RevokeKeys(ca.PublicKey(), "serial: 501", "id: rediacc task=t-revoked")
	for _, tc := range []struct {
		name, keyID, want string
	}{
		{"by-serial", "rediacc task=t-1", "serial 501 or its key ID"},
		{"by-key-id", "rediacc task=t-revoked", `key ID "rediacc task=t-revoked"`},
	} {
		err := run("revoked-"+tc.name, authority(tc.keyID))
		var ce *ssh.CertRejectedError
		if !errors.As(err, &ce) || ce.Reason != ssh.CertRevoked || !errors.Is(err, ssh.ErrCertRevoked) || !errors.Is(err, ssh.ErrAuthFailed) ||
			errors.Is(err, ssh.ErrCertExpired) || ssh.IsRetryable(err) {
			t.Fatalf("%s: err = %v, want a CertRejectedError (revoked) wrapping ErrCertRevoked and ErrAuthFailed, not retryable", tc.name, err)
		}
		for _, w := range []string{tc.want, "RevokedKeys", "revoked-" + tc.name, o.Addr()} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error lacks %q: %v", tc.name, w, err)
			}
		}
		if d := time.Since(ce.ServerTime); d < -5*time.Second || d > time.Minute {
			t.Errorf("%s: server time %s is not the machine's clock", tc.name, ce.ServerTime)
		}
	}
	if err := run("not-revoked", authority("rediacc task=t-2")); err != nil {
		t.Fatalf("a certificate neither revoked by serial nor by key ID: %v", err)
	}
	// The CA itself revoked: sshd refuses the probe too.
	o.RevokeKeys(nil, strings.TrimSpace(string(xssh.MarshalAuthorizedKey(ca.PublicKey()))))
	err := run("revoked-ca", authority("rediacc task=t-3"))
	var ce *ssh.CertRejectedError
	if !errors.As(err, &ce) || ce.Reason != ssh.CertNotAccepted || errors.Is(err, ssh.ErrCertRevoked) || ssh.IsRetryable(err) {
		t.Fatalf("revoked CA: err = %v, want not accepted", err)
	}
	for _, w := range []string{"accepts no certificate of CA " + xssh.FingerprintSHA256(ca.PublicKey()), "RevokedKeys", "TrustedUserCAKeys"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("revoked CA: error lacks %q: %v", w, err)
		}
	}
	// Revocation lifted: the same CA logs in again.
	o.RevokeKeys(nil)
	if err := run("lifted", authority("rediacc task=t-revoked")); err != nil {
		t.Fatalf("after the revocation list was emptied: %v", err)
	}
}
