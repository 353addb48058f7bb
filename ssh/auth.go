package ssh

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"

	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// Auth is one source of client credentials for a Target. Build it with
// KeyFile, PrivateKey, Signers, Agent, AgentKeys, Certificate or Password;
// the zero value is invalid
// (Run fails with ErrInvalidCommand).
//
// Credentials are loaded before each dial (so a bad key file fails fast,
// without a connection, and a rotated key file is picked up by the next
// connection). All public keys of a Target's Auth list are offered in one
// "publickey" method, in list order, followed by passwords.
type Auth struct {
	desc    string
	load    func() (authParts, error)
	loadCtx func(ctx context.Context, t *Target) (authParts, error) // per-connection credentials (Certificate)
}

type authParts struct {
	signers  []xssh.Signer
	password string
	hasPass  bool
	release  func()
	cert     *certUse // the certificate offered (Certificate), to explain a refusal
}

// String describes the credential source without secrets, e.g.
// "key file /home/me/.ssh/id_ed25519".
func (a Auth) String() string { return a.desc }

// KeyFile authenticates with the private key in the file at path (OpenSSH,
// PKCS#1, PKCS#8 or SEC1 PEM; RSA, ECDSA, Ed25519). passphrase decrypts an
// encrypted key; it is ignored for an unencrypted key and may be nil.
//
// Loading fails with ErrKeyFile (wrapped with the path) when the file is
// missing, unreadable or unparseable, and with ErrWrongPassphrase when the
// key is encrypted and passphrase is empty or wrong.
func KeyFile(path string, passphrase []byte) Auth {
	pass := append([]byte(nil), passphrase...)
	return Auth{
		desc: "key file " + path,
		load: func() (authParts, error) {
			pemBytes, err := os.ReadFile(path)
			if err != nil {
				return authParts{}, &wrapError{
					msg:  fmt.Sprintf("private key file %s: %v: check the path and its permissions", path, err),
					errs: []error{ErrKeyFile, err},
				}
			}
			s, err := parseKey(pemBytes, pass, "private key file "+path)
			if err != nil {
				return authParts{}, err
			}
			return authParts{signers: []xssh.Signer{s}}, nil
		},
	}
}

// PrivateKey authenticates with a PEM-encoded private key held in memory
// (e.g. fetched from a vault). passphrase decrypts an encrypted key and may
// be nil. Loading fails with ErrKeyFile when pemBytes cannot be parsed and
// with ErrWrongPassphrase when the passphrase is missing or wrong.
func PrivateKey(pemBytes, passphrase []byte) Auth {
	pemCopy := append([]byte(nil), pemBytes...)
	pass := append([]byte(nil), passphrase...)
	return Auth{
		desc: "in-memory private key",
		load: func() (authParts, error) {
			s, err := parseKey(pemCopy, pass, "in-memory private key")
			if err != nil {
				return authParts{}, err
			}
			return authParts{signers: []xssh.Signer{s}}, nil
		},
	}
}

// Signers authenticates with already loaded keys. It never fails to load.
func Signers(signers ...xssh.Signer) Auth {
	ss := append([]xssh.Signer(nil), signers...)
	return Auth{
		desc: fmt.Sprintf("%d signer(s)", len(ss)),
		load: func() (authParts, error) { return authParts{signers: ss}, nil },
	}
}

// Password authenticates with a password ("password" method). OpenSSH
// servers often disable it; prefer keys.
func Password(password string) Auth {
	return Auth{
		desc: "password",
		load: func() (authParts, error) { return authParts{password: password, hasPass: true}, nil },
	}
}

// Agent authenticates with the keys held by the ssh-agent listening on the
// Unix socket named by $SSH_AUTH_SOCK: every key it holds is offered, in
// the agent's order (a server counts each against its MaxAuthTries, and
// learns which keys the agent holds). Prefer AgentKeys with the key meant
// for the host. The agent connection is opened before each dial and closed
// after the handshake.
//
// Loading fails with ErrAuthFailed when SSH_AUTH_SOCK is unset or the agent
// cannot be reached or listed.
func Agent() Auth { return agentAuth(nil) }

// AgentKeys authenticates with the keys of the ssh-agent (as Agent) whose
// SHA256 fingerprints ("SHA256:…", as ssh-keygen -l and ssh-add -l print
// them) are listed: only those are offered to the server, like OpenSSH's
// IdentitiesOnly with an IdentityFile. Loading fails with ErrAuthFailed,
// naming the fingerprints, when the agent holds none of them, and with
// ErrInvalidCommand for a malformed fingerprint.
func AgentKeys(fingerprints ...string) Auth {
	if len(fingerprints) == 0 {
		return Auth{desc: "ssh-agent (no key pinned)", load: func() (authParts, error) {
			return authParts{}, &wrapError{msg: "ssh-agent: AgentKeys needs at least one fingerprint (use Agent to offer every key)", errs: []error{ErrInvalidCommand}}
		}}
	}
	return agentAuth(append([]string(nil), fingerprints...))
}

// ValidFingerprint reports whether fp is a SHA256 key fingerprint as
// ssh.FingerprintSHA256 writes it: "SHA256:" and 43 characters of
// unpadded base64.
func ValidFingerprint(fp string) bool {
	b64, ok := strings.CutPrefix(fp, "SHA256:")
	if !ok || len(b64) != 43 {
		return false
	}
	_, err := base64.RawStdEncoding.DecodeString(b64)
	return err == nil
}

// agentAuth offers the agent's keys, only those of pinned when not nil.
func agentAuth(pinned []string) Auth {
	desc := "ssh-agent"
	if pinned != nil {
		desc = "ssh-agent key " + strings.Join(pinned, ", ")
	}
	return Auth{
		desc: desc,
		load: func() (authParts, error) {
			for _, fp := range pinned {
				if !ValidFingerprint(fp) {
					return authParts{}, &wrapError{msg: fmt.Sprintf("ssh-agent: %q is not a SHA256 key fingerprint (SHA256: and 43 base64 characters, as ssh-add -l prints it)", fp),
						errs: []error{ErrInvalidCommand}}
				}
			}
			sock := os.Getenv("SSH_AUTH_SOCK")
			if sock == "" {
				return authParts{}, &wrapError{
					msg:  "ssh-agent: SSH_AUTH_SOCK is not set: start an agent (eval $(ssh-agent); ssh-add KEY) or use KeyFile",
					errs: []error{ErrAuthFailed},
				}
			}
			c, err := net.Dial("unix", sock)
			if err != nil {
				return authParts{}, &wrapError{
					msg:  fmt.Sprintf("ssh-agent: cannot connect to SSH_AUTH_SOCK=%s: %v: is the agent running?", sock, err),
					errs: []error{ErrAuthFailed, err},
				}
			}
			signers, err := agent.NewClient(c).Signers()
			if err != nil {
				c.Close()
				return authParts{}, &wrapError{
					msg:  fmt.Sprintf("ssh-agent: list keys from %s: %v", sock, err),
					errs: []error{ErrAuthFailed, err},
				}
			}
			if pinned != nil {
				var keep []xssh.Signer
				var held []string
				for _, s := range signers {
					fp := xssh.FingerprintSHA256(s.PublicKey())
					held = append(held, fp)
					if slices.Contains(pinned, fp) {
						keep = append(keep, s)
					}
				}
				if len(keep) == 0 {
					c.Close()
					return authParts{}, &wrapError{
						msg: fmt.Sprintf("ssh-agent: the agent at %s holds no key %s (it holds %d: %s): add it (ssh-add KEYFILE) or fix the pinned fingerprint",
							sock, strings.Join(pinned, ", "), len(held), strings.Join(held, ", ")),
						errs: []error{ErrAuthFailed},
					}
				}
				signers = keep
			}
			return authParts{signers: signers, release: func() { c.Close() }}, nil
		},
	}
}

// parseKey parses a PEM private key, mapping failures to ErrKeyFile and
// ErrWrongPassphrase. what names the key in messages.
func parseKey(pemBytes, passphrase []byte, what string) (xssh.Signer, error) {
	s, err := xssh.ParsePrivateKey(pemBytes)
	if err == nil {
		return s, nil
	}
	var missing *xssh.PassphraseMissingError
	if !errors.As(err, &missing) {
		return nil, &wrapError{
			msg:  fmt.Sprintf("%s: cannot parse: %v", what, err),
			errs: []error{ErrKeyFile, err},
		}
	}
	if len(passphrase) == 0 {
		return nil, &wrapError{
			msg:  what + ": the key is encrypted and no passphrase was given",
			errs: []error{ErrWrongPassphrase},
		}
	}
	s, err = xssh.ParsePrivateKeyWithPassphrase(pemBytes, passphrase)
	if err == nil {
		return s, nil
	}
	if errors.Is(err, x509.IncorrectPasswordError) {
		return nil, &wrapError{
			msg:  what + ": wrong passphrase",
			errs: []error{ErrWrongPassphrase, err},
		}
	}
	return nil, &wrapError{
		msg:  fmt.Sprintf("%s: cannot decrypt: %v", what, err),
		errs: []error{ErrKeyFile, err},
	}
}

// loadAuth loads all credentials of t into client auth methods. release
// must be called after the handshake.
// certs are the certificates offered (Certificate), to explain a refusal.
func loadAuth(ctx context.Context, t *Target) (methods []xssh.AuthMethod, release func(), certs []*certUse, err error) {
	var releases []func()
	release = func() {
		for _, r := range releases {
			r()
		}
	}
	var signers []xssh.Signer
	var passwords []string
	for i, a := range t.Auth {
		var p authParts
		var err error
		switch {
		case a.loadCtx != nil:
			p, err = a.loadCtx(ctx, t)
			if err != nil {
				release()
				return nil, nil, nil, err // names the machine already
			}
		case a.load != nil:
			p, err = a.load()
		default:
			release()
			return nil, nil, nil, targetErr(t, ErrInvalidCommand, nil, "Target.Auth[%d] is the zero Auth: build it with KeyFile, PrivateKey, Signers, Agent, Certificate or Password", i)
		}
		if err != nil {
			release()
			return nil, nil, nil, targetErr(t, nil, err, "load credentials")
		}
		if p.release != nil {
			releases = append(releases, p.release)
		}
		if p.cert != nil {
			certs = append(certs, p.cert)
		}
		signers = append(signers, p.signers...)
		if p.hasPass {
			passwords = append(passwords, p.password)
		}
	}
	// Only signature algorithms the Target allows (no ssh-rsa SHA-1 by
	// default): a key that could sign with none of them is not offered.
	signers, dropped := restrictSigners(signers, t.Algorithms.withDefaults().PublicKeyAuths)
	if len(signers) > 0 {
		methods = append(methods, xssh.PublicKeys(signers...))
	}
	if len(passwords) > 0 {
		i := 0
		methods = append(methods, xssh.RetryableAuthMethod(xssh.PasswordCallback(func() (string, error) {
			if i >= len(passwords) {
				return "", errors.New("no more passwords")
			}
			i++
			return passwords[i-1], nil
		}), len(passwords)))
	}
	if len(methods) == 0 && len(dropped) > 0 {
		release()
		return nil, nil, nil, targetErr(t, ErrAlgorithmNegotiation, nil,
			"no credentials to offer: the keys %s can sign with none of Target.Algorithms.PublicKeyAuths", strings.Join(dropped, ", "))
	}
	if len(methods) == 0 {
		release()
		return nil, nil, nil, targetErr(t, ErrAuthFailed, nil, "no credentials to offer (Target.Auth is empty or the agent holds no keys)")
	}
	return methods, release, certs, nil
}
