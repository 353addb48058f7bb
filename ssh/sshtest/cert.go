package sshtest

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// NewCA returns a new ed25519 certificate authority key for tests.
func NewCA() (ssh.Signer, error) {
	s, _, err := GenerateSigner(nil)
	return s, err
}

// TrustUserCAs makes sshd accept user certificates signed by cas
// (sshd_config TrustedUserCAKeys, the file Dir/trusted_user_ca_keys). The
// first call adds the setting and restarts sshd; later calls only rewrite
// the file, which sshd reads at every authentication. With no cas, no
// certificate is accepted. It calls tb.Fatal on failure.
func (o *OpenSSH) TrustUserCAs(cas ...ssh.PublicKey) {
	o.tb.Helper()
	var b bytes.Buffer
	for _, k := range cas {
		b.Write(ssh.MarshalAuthorizedKey(k))
	}
	o.SetTrustedUserCAKeys(b.String())
}

// SetTrustedUserCAKeys is TrustUserCAs with the file's content given
// verbatim (one CA public key per line, comments allowed).
func (o *OpenSSH) SetTrustedUserCAKeys(content string) {
	o.tb.Helper()
	path := o.TrustedUserCAKeysPath()
	mustWrite(o.tb, path, []byte(content), 0o644)
	if o.ensureConfig("TrustedUserCAKeys " + path) {
		o.Stop()
		o.Start()
	}
}

// RevokeKeys makes sshd refuse the keys and certificates specs name
// (sshd_config RevokedKeys, a KRL built by ssh-keygen -k in
// Dir/revoked_keys.krl, replaced at each call). A spec is a line of
// ssh-keygen's KRL specification: "serial: 42", "id: KEY ID" (both of
// certificates signed by ca, which may be nil otherwise), "key: PUBLIC KEY"
// or a public key in authorized_keys form (a CA's key revokes every
// certificate it signed). The first call adds the setting and restarts
// sshd; later calls only rewrite the file, which sshd reads at every
// authentication. It calls tb.Fatal on failure.
func (o *OpenSSH) RevokeKeys(ca ssh.PublicKey, specs ...string) {
	o.tb.Helper()
	spec := filepath.Join(o.Dir, "revoked_keys.spec")
	mustWrite(o.tb, spec, []byte(strings.Join(specs, "\n")+"\n"), 0o644)
	krl := filepath.Join(o.Dir, "revoked_keys.krl")
	tmp := krl + ".new"
	_ = os.Remove(tmp)
	args := []string{"-k", "-f", tmp}
	if ca != nil {
		caFile := filepath.Join(o.Dir, "revoked_keys_ca.pub")
		mustWrite(o.tb, caFile, ssh.MarshalAuthorizedKey(ca), 0o644)
		args = append(args, "-s", caFile)
	}
	if out, err := exec.Command("ssh-keygen", append(args, spec)...).CombinedOutput(); err != nil {
		o.tb.Fatalf("sshtest: ssh-keygen -k: %v: %s", err, out)
	}
	if err := os.Rename(tmp, krl); err != nil { // sshd never reads a half-written list
		o.tb.Fatalf("sshtest: %v", err)
	}
	if o.ensureConfig("RevokedKeys " + krl) {
		o.Stop()
		o.Start()
	}
}

// TrustedUserCAKeysPath is the file TrustUserCAs writes.
func (o *OpenSSH) TrustedUserCAKeysPath() string { return filepath.Join(o.Dir, "trusted_user_ca_keys") }

// SetHostCertificate makes sshd present cert, a certificate of its host key
// (HostPublicKey), with that key (sshd_config HostCertificate) and restarts
// sshd. It calls tb.Fatal on failure.
func (o *OpenSSH) SetHostCertificate(cert *ssh.Certificate) {
	o.tb.Helper()
	path := filepath.Join(o.Dir, "ssh_host_key-cert.pub")
	mustWrite(o.tb, path, ssh.MarshalAuthorizedKey(cert), 0o644)
	o.ensureConfig("HostCertificate " + path)
	o.Stop() // sshd reads host certificates at start only
	o.Start()
}

// Reconfigure appends lines to sshd_config (the first value of a keyword
// wins in sshd_config: add only keywords not yet set) and restarts sshd.
func (o *OpenSSH) Reconfigure(lines ...string) {
	o.tb.Helper()
	for _, l := range lines {
		o.ensureConfig(l)
	}
	o.Stop()
	o.Start()
}

// ensureConfig appends line to sshd_config unless present and reports
// whether it did (sshd must then be restarted).
func (o *OpenSSH) ensureConfig(line string) bool {
	o.tb.Helper()
	cfg, err := os.ReadFile(o.ConfigPath)
	if err != nil {
		o.tb.Fatalf("sshtest: %v", err)
	}
	if bytes.Contains(cfg, []byte("\n"+line+"\n")) {
		return false
	}
	cfg = append(cfg, []byte(line+"\n")...)
	mustWrite(o.tb, o.ConfigPath, cfg, 0o644)
	return true
}

// SignUserCert returns a user certificate for key signed by ca, for
// principals, valid from validAfter to validBefore, with extensions and
// critical options (nil for none).
func SignUserCert(ca ssh.Signer, key ssh.PublicKey, principals []string, validAfter, validBefore time.Time, ext, opts map[string]string) (*ssh.Certificate, error) {
	return signCert(ca, key, ssh.UserCert, principals, validAfter, validBefore, ext, opts)
}

// SignHostCert returns a host certificate for key (a server's host key)
// signed by ca, for the host names principals (an empty list: any host),
// valid from validAfter to validBefore.
func SignHostCert(ca ssh.Signer, key ssh.PublicKey, principals []string, validAfter, validBefore time.Time) (*ssh.Certificate, error) {
	return signCert(ca, key, ssh.HostCert, principals, validAfter, validBefore, nil, nil)
}

func signCert(ca ssh.Signer, key ssh.PublicKey, typ uint32, principals []string, after, before time.Time, ext, opts map[string]string) (*ssh.Certificate, error) {
	var serial [8]byte
	_, _ = rand.Read(serial[:])
	c := &ssh.Certificate{
		Key: key, CertType: typ, KeyId: fmt.Sprintf("sshtest-%x", serial[:4]),
		Serial:          uint64(serial[0])<<8 | uint64(serial[1]),
		ValidPrincipals: principals,
		ValidAfter:      uint64(after.Unix()), ValidBefore: uint64(before.Unix()),
		Permissions: ssh.Permissions{CriticalOptions: opts, Extensions: ext},
	}
	if err := c.SignCert(rand.Reader, ca); err != nil {
		return nil, err
	}
	return c, nil
}

// checkUserCert authenticates a user certificate against cas (the
// in-process server's Options.UserCAs).
func checkUserCert(cas []ssh.PublicKey, meta ssh.ConnMetadata, cert *ssh.Certificate) (*ssh.Permissions, error) {
	cc := &ssh.CertChecker{IsUserAuthority: func(k ssh.PublicKey) bool {
		for _, ca := range cas {
			if bytes.Equal(ca.Marshal(), k.Marshal()) {
				return true
			}
		}
		return false
	}}
	return cc.Authenticate(meta, cert)
}
