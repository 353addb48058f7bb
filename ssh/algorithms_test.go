package ssh_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	xssh "golang.org/x/crypto/ssh"

	"github.com/rediacc/rediacc/ssh"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// Issue 8, kind 7: a real sshd configured to offer only weak (SHA-1, CBC)
// algorithms is refused by default, with an error naming the negotiation
// step and the algorithms, and reached with LegacyAlgorithms.
func TestWeakOnlyServerRefusedByDefault(t *testing.T) {
	cases := []struct {
		name string
		opts sshtest.OpenSSHOptions
		what string // the negotiation step the error names
		weak string // the weak algorithm it names
	}{
		{"SHA-1 key exchange", sshtest.OpenSSHOptions{ExtraConfig: []string{"KexAlgorithms diffie-hellman-group14-sha1"}},
			"key exchange", "diffie-hellman-group14-sha1"},
		{"SHA-1 MAC", sshtest.OpenSSHOptions{ExtraConfig: []string{"Ciphers aes128-ctr,aes256-ctr", "MACs hmac-sha1"}},
			"MAC", "hmac-sha1"},
		{"CBC cipher", sshtest.OpenSSHOptions{ExtraConfig: []string{"Ciphers aes128-cbc"}},
			"cipher", "aes128-cbc"},
		{"ssh-rsa host key", sshtest.OpenSSHOptions{KeyType: "rsa", ExtraConfig: []string{"HostKeyAlgorithms ssh-rsa"}},
			"host key", "ssh-rsa"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Loopback = 64 + i
			srv := sshtest.StartOpenSSH(t, tc.opts)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			tg := opensshTarget("old-host", srv)
			_, err := newPool(t, ssh.Config{}).Run(ctx, tg, ssh.Command{Cmd: "echo ok"})
			if !errors.Is(err, ssh.ErrAlgorithmNegotiation) || ssh.IsRetryable(err) {
				t.Fatalf("default algorithms against a server offering only %s: %v", tc.weak, err)
			}
			for _, want := range []string{"no common", tc.what, tc.weak, "--legacy-algorithms", "old-host"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("the error does not say %q: %v", want, err)
				}
			}
			tg.Algorithms = ssh.LegacyAlgorithms()
			res, err := newPool(t, ssh.Config{}).Run(ctx, tg, ssh.Command{Cmd: "echo ok"})
			if err != nil || string(res.Stdout) != "ok\n" {
				t.Fatalf("with LegacyAlgorithms: %v", err)
			}
		})
	}
}

// The default sets hold no SHA-1 key exchange or MAC, no ssh-rsa and no
// CBC; the legacy sets add them after the strong ones; RSA keys sign with
// SHA-2 by default, on a real sshd.
func TestDefaultAlgorithmSets(t *testing.T) {
	d := ssh.DefaultAlgorithms()
	for _, weak := range []string{"diffie-hellman-group14-sha1", "diffie-hellman-group1-sha1", "diffie-hellman-group-exchange-sha1",
		"hmac-sha1", "hmac-sha1-96", "ssh-rsa", "aes128-cbc", "3des-cbc", "ssh-rsa-cert-v01@openssh.com"} {
		for _, l := range [][]string{d.KeyExchanges, d.Ciphers, d.MACs, d.HostKeys, d.PublicKeyAuths} {
			if slices.Contains(l, weak) {
				t.Errorf("DefaultAlgorithms holds %s", weak)
			}
		}
	}
	l := ssh.LegacyAlgorithms()
	if !slices.Equal(l.KeyExchanges[:len(d.KeyExchanges)], d.KeyExchanges) || !slices.Contains(l.KeyExchanges, "diffie-hellman-group14-sha1") ||
		!slices.Contains(l.MACs, "hmac-sha1") || !slices.Contains(l.HostKeys, "ssh-rsa") || !slices.Contains(l.PublicKeyAuths, "ssh-rsa") {
		t.Errorf("LegacyAlgorithms: %+v", l)
	}
	if err := d.Validate(); err != nil {
		t.Error(err)
	}
	if err := l.Validate(); err != nil {
		t.Error(err)
	}
	if err := (ssh.Algorithms{MACs: []string{"hmac-md5"}}).Validate(); !errors.Is(err, ssh.ErrInvalidCommand) || !strings.Contains(err.Error(), "hmac-md5") {
		t.Errorf("an unknown MAC: %v", err)
	}

	// An RSA key on a default sshd signs with rsa-sha2-512, never ssh-rsa.
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 69, KeyType: "rsa", LogLevel: "VERBOSE"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := newPool(t, ssh.Config{}).Run(ctx, opensshTarget("rsa", srv), ssh.Command{Cmd: "true"}); err != nil {
		t.Fatal(err)
	}
	if log := srv.Log(); !strings.Contains(log, "Accepted publickey") || !strings.Contains(log, "RSA SHA256:") {
		t.Fatalf("sshd log: %s", log)
	}
	if srv.ClientSigner.PublicKey().Type() != xssh.KeyAlgoRSA {
		t.Fatalf("the test key is %s", srv.ClientSigner.PublicKey().Type())
	}
}

// An RSA key never signs with ssh-rsa (SHA-1) by default: a real sshd that
// accepts only ssh-rsa signatures logs that it was offered rsa-sha2-512 and
// refuses; a server announcing only ssh-rsa in server-sig-algs (x/crypto's,
// standing in for the servers before OpenSSH 7.2, which announce nothing and
// so get ssh-rsa from a legacy client) is refused with
// ErrAlgorithmNegotiation, and reached with LegacyAlgorithms.
func TestNoSHA1SignaturesByDefault(t *testing.T) {
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 68, KeyType: "rsa",
		ExtraConfig: []string{"PubkeyAcceptedAlgorithms ssh-rsa"}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := newPool(t, ssh.Config{}).Run(ctx, opensshTarget("old-policy", srv), ssh.Command{Cmd: "true"})
	if !errors.Is(err, ssh.ErrAuthFailed) {
		t.Fatalf("a server accepting only ssh-rsa signatures: %v", err)
	}
	if log := srv.Log(); !strings.Contains(log, "signature algorithm rsa-sha2-512 not in PubkeyAcceptedAlgorithms") {
		t.Fatalf("sshd did not see an rsa-sha2-512 signature attempt:\n%s", log)
	}

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaSigner, err := xssh.NewSignerFromKey(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	old := sshtest.NewServer(t, sshtest.Options{AuthorizedKeys: []xssh.PublicKey{rsaSigner.PublicKey()},
		PublicKeyAuthAlgorithms: []string{xssh.KeyAlgoRSA}})
	tg := inprocTarget(t, "sha1-only", old)
	tg.Auth = []ssh.Auth{ssh.Signers(rsaSigner)}
	_, err = newPool(t, ssh.Config{}).Run(ctx, tg, ssh.Command{Cmd: "true"})
	if !errors.Is(err, ssh.ErrAlgorithmNegotiation) || !strings.Contains(err.Error(), "ssh-rsa") || !strings.Contains(err.Error(), "--legacy-algorithms") {
		t.Fatalf("a server announcing only ssh-rsa signatures: %v", err)
	}
	tg.Algorithms = ssh.LegacyAlgorithms()
	if _, err := newPool(t, ssh.Config{}).Run(ctx, tg, ssh.Command{Cmd: "true"}); err != nil {
		t.Fatalf("with LegacyAlgorithms: %v", err)
	}
}
