package ssh

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	xssh "golang.org/x/crypto/ssh"
)

// Certificate defaults (CertAuthority's zero fields).
const (
	// DefaultCertTTL is how long a user certificate is valid after it is
	// signed: long enough for one handshake on a busy host, short enough
	// that a stolen certificate is soon worthless. OpenSSH checks the
	// validity at authentication only: a connection outlives it.
	DefaultCertTTL = 5 * time.Minute
	// DefaultCertBackdate is how far before the signing time a certificate
	// becomes valid, so that a server whose clock is a little behind the
	// signer's accepts it (HashiCorp Vault's SSH engine back-dates by 30 s,
	// its not_before_duration).
	DefaultCertBackdate = time.Minute
	// ClockProbeCommand is the forced command of a clock-probe certificate
	// (CertRequest.ClockProbe): it prints the server's clock in seconds
	// since the epoch, UTC.
	ClockProbeCommand = "date -u +%s"
)

// Certificate errors.
var (
	// ErrCertificate: a CertSigner could not issue a usable user
	// certificate (the CA is missing or unreachable, refused to sign, or
	// returned a certificate for another key or of the wrong type). The
	// error names the machine and the signer's reason. Not retryable
	// unless it also wraps ErrConnect (a signer that could not be reached).
	ErrCertificate = errors.New("ssh: no usable certificate")
	// ErrCertExpired: the server refused a user certificate whose validity
	// does not contain the server's clock (read by a clock probe): expired,
	// or not yet valid, by the server's clock. The *CertRejectedError
	// names both clocks. It also wraps ErrAuthFailed. Not retryable.
	ErrCertExpired = errors.New("ssh: certificate outside its validity by the server's clock")
	// ErrCertRevoked: the server refused a user certificate although it
	// accepted, at a time inside that certificate's validity, a probe
	// certificate of the same CA for the same user: sshd refused this
	// certificate itself, which it does when its serial, key ID or key is
	// in its revoked keys (sshd_config RevokedKeys, a KRL). The
	// *CertRejectedError names the serial and key ID. It also wraps
	// ErrAuthFailed. Not retryable. A revoked CA is CertNotAccepted: sshd
	// then refuses the probe too.
	ErrCertRevoked = errors.New("ssh: certificate revoked by the server")
)

// CertRequest is what a CertSigner is asked to certify: an ephemeral public
// key, for one connection of a Target.
type CertRequest struct {
	// Machine, Addr ("host:port") and User are the Target's Name, address
	// and login user. A certificate for the connection must list User as a
	// principal, unless the server maps principals to users itself
	// (sshd's AuthorizedPrincipalsFile).
	Machine, Addr, User string
	// Key is the ephemeral public key to certify (Ed25519, generated in
	// memory for this connection only).
	Key xssh.PublicKey
	// ClockProbe asks for a certificate used once, after the server refused
	// one, to read the server's clock: it must carry the critical option
	// force-command=ClockProbeCommand (a certificate without it is not
	// used), no extensions, and a validity as wide as the signer allows,
	// so that a server whose clock is far from the signer's accepts it. A
	// signer that cannot issue one returns an error; the refusal is then
	// reported without the server's clock.
	ClockProbe bool
}

// CertSigner issues user certificates: HashiCorp Vault's SSH secrets
// engine, a CA key held in memory (CertAuthority), or anything else that
// signs OpenSSH certificates.
type CertSigner interface {
	// SignCert returns a user certificate (CertType xssh.UserCert) for
	// req.Key. An error that wraps ErrConnect makes the connection attempt
	// retryable (see IsRetryable).
	SignCert(ctx context.Context, req CertRequest) (*xssh.Certificate, error)
}

// CertSignerFunc adapts a function to CertSigner.
type CertSignerFunc func(ctx context.Context, req CertRequest) (*xssh.Certificate, error)

// SignCert calls f.
func (f CertSignerFunc) SignCert(ctx context.Context, req CertRequest) (*xssh.Certificate, error) {
	return f(ctx, req)
}

var (
	_ CertSigner = CertSignerFunc(nil)
	_ CertSigner = (*CertAuthority)(nil)
)

// Certificate authenticates each new connection with a short-lived user
// certificate: an Ed25519 key pair is generated in memory for the
// connection (never written anywhere, dropped after the handshake), s
// certifies its public key, and the certificate is offered (OpenSSH's
// TrustedUserCAKeys on the server decides). now is the clock s dates
// certificates by (nil: time.Now); it is named in errors.
//
// When the server refuses the certificate, Run asks s for a clock-probe
// certificate (CertRequest.ClockProbe), logs in with it to read the
// server's clock and returns a *CertRejectedError saying why: the
// certificate was outside its validity by the server's clock
// (ErrCertExpired, with both clocks), the server accepts no certificate
// of this CA for the user (untrusted or revoked CA, or a principal sshd's
// AuthorizedPrincipalsFile does not list), or it accepted the probe but
// not this certificate, which it revoked (ErrCertRevoked). A signer
// failure is ErrCertificate.
func Certificate(s CertSigner, now func() time.Time) Auth {
	if now == nil {
		now = time.Now
	}
	return Auth{
		desc: "short-lived certificate",
		loadCtx: func(ctx context.Context, t *Target) (authParts, error) {
			if s == nil {
				return authParts{}, targetErr(t, ErrInvalidCommand, nil, "Certificate: the CertSigner is nil")
			}
			signedAt := now()
			signer, cert, err := certifiedKey(ctx, s, CertRequest{Machine: t.Name, Addr: t.addr(), User: t.User})
			if err != nil {
				return authParts{}, certErr(t, err)
			}
			return authParts{signers: []xssh.Signer{signer}, cert: &certUse{cert: cert, signedAt: signedAt, signer: s}}, nil
		},
	}
}

// certUse is a certificate offered on a dial, kept to explain a refusal.
type certUse struct {
	cert     *xssh.Certificate
	signedAt time.Time // the signer's clock when it was asked
	signer   CertSigner
}

// certErr wraps a signer's failure as ErrCertificate naming the machine.
func certErr(t *Target, err error) error {
	if errors.Is(err, ErrCertificate) {
		return targetErr(t, nil, err, "certificate")
	}
	return targetErr(t, ErrCertificate, err, "no certificate for user %q", t.User)
}

// certifiedKey generates an ephemeral key, has s certify it and returns
// the certificate signer. req.Key is set here.
func certifiedKey(ctx context.Context, s CertSigner, req CertRequest) (xssh.Signer, *xssh.Certificate, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	key, err := xssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, nil, err
	}
	req.Key = key.PublicKey()
	cert, err := s.SignCert(ctx, req)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case cert == nil:
		return nil, nil, errors.New("the signer returned no certificate")
	case !bytes.Equal(cert.Key.Marshal(), req.Key.Marshal()):
		return nil, nil, fmt.Errorf("the signer certified another key (%s) than the one it was given (%s)",
			xssh.FingerprintSHA256(cert.Key), xssh.FingerprintSHA256(req.Key))
	case cert.CertType != xssh.UserCert:
		return nil, nil, fmt.Errorf("the signer returned a host certificate (type %d) instead of a user certificate", cert.CertType)
	case cert.SignatureKey == nil:
		return nil, nil, errors.New("the certificate is not signed")
	}
	cs, err := xssh.NewCertSigner(cert, key)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate signer: %v", err)
	}
	return cs, cert, nil
}

// CertRejection says why a server refused a user certificate.
type CertRejection string

// Reasons of a CertRejectedError.
const (
	// CertExpired: the server's clock was past the certificate's validity.
	CertExpired CertRejection = "expired"
	// CertNotYetValid: the server's clock was before the validity.
	CertNotYetValid CertRejection = "not-yet-valid"
	// CertNotAccepted: the server accepts no certificate of this CA for
	// the user, whatever its validity (the clock probe was refused too):
	// the CA is not in sshd's TrustedUserCAKeys or is in its RevokedKeys,
	// or sshd's AuthorizedPrincipalsFile does not list the principal.
	CertNotAccepted CertRejection = "not-accepted"
	// CertRevoked: the server accepted a probe certificate of the same CA
	// for the same user, at a time inside the refused certificate's
	// validity, so it refused that certificate itself: its serial, key ID
	// or key is in sshd's RevokedKeys.
	CertRevoked CertRejection = "revoked"
	// CertRefused: refused for a reason the probe could not tell (the
	// signer issues no probe certificates, or the probe failed otherwise).
	CertRefused CertRejection = "refused"
)

// CertRejectedError reports a user certificate that the server refused.
// It wraps ErrAuthFailed, ErrCertExpired for CertExpired and
// CertNotYetValid, and ErrCertRevoked for CertRevoked.
type CertRejectedError struct {
	// Machine, User and Addr identify the connection.
	Machine, User, Addr string
	// KeyID, Serial, Principals and CA (the SHA256 fingerprint of the
	// signing key) describe the refused certificate.
	KeyID      string
	Serial     uint64
	Principals []string
	CA         string
	// ValidAfter and ValidBefore bound its validity (UTC).
	ValidAfter, ValidBefore time.Time
	// SignerTime is the signer's clock when the certificate was requested.
	SignerTime time.Time
	// ServerTime is the server's clock as read by the clock probe; zero
	// when it could not be read.
	ServerTime time.Time
	// Reason is the diagnosis.
	Reason CertRejection
	// ProbeErr is why the server's clock could not be read (nil when it
	// was, or for CertNotAccepted).
	ProbeErr error
}

func (e *CertRejectedError) Error() string {
	const tf = "2006-01-02 15:04:05 MST"
	var b strings.Builder
	fmt.Fprintf(&b, "ssh: machine %q (%s@%s): sshd refused the certificate (key ID %q, serial %d, principals [%s], CA %s, valid %s to %s): ",
		e.Machine, e.User, e.Addr, e.KeyID, e.Serial, strings.Join(e.Principals, ", "), e.CA,
		e.ValidAfter.UTC().Format(tf), e.ValidBefore.UTC().Format(tf))
	skew := func() string {
		d := e.ServerTime.Sub(e.SignerTime).Round(time.Second)
		switch {
		case d > 0:
			return fmt.Sprintf("the machine's clock is %s ahead of the signer's", d)
		case d < 0:
			return fmt.Sprintf("the machine's clock is %s behind the signer's", -d)
		}
		return "the two clocks agree"
	}
	switch e.Reason {
	case CertExpired, CertNotYetValid:
		what := "it had expired"
		if e.Reason == CertNotYetValid {
			what = "it was not yet valid"
		}
		fmt.Fprintf(&b, "%s by the machine's clock, which read %s, while the signer's clock read %s when it signed it (%s): "+
			"set both clocks right (NTP), or sign certificates with a longer validity or back-dating",
			what, e.ServerTime.UTC().Format(tf), e.SignerTime.UTC().Format(tf), skew())
	case CertNotAccepted:
		fmt.Fprintf(&b, "sshd accepts no certificate of CA %s for user %q (a probe certificate valid at any time was refused too): "+
			"add the CA's public key to the file sshd_config's TrustedUserCAKeys names (and take it out of RevokedKeys if it is listed there), or, where sshd uses AuthorizedPrincipalsFile, list the principal %q for the user",
			e.CA, e.User, strings.Join(e.Principals, ","))
	case CertRevoked:
		fmt.Fprintf(&b, "sshd accepted a probe certificate of the same CA for the same user when its clock read %s, inside this certificate's validity, "+
			"so it refused this certificate itself: its serial %d or its key ID is in the file sshd_config's RevokedKeys names "+
			"(remove the entry there if the revocation was a mistake)",
			e.ServerTime.UTC().Format(tf), e.Serial)
	default:
		fmt.Fprintf(&b, "the signer's clock read %s when it signed it; the machine's clock could not be read", e.SignerTime.UTC().Format(tf))
		if e.ProbeErr != nil {
			fmt.Fprintf(&b, " (%v)", e.ProbeErr)
		}
		b.WriteString(": sshd does not trust the CA (TrustedUserCAKeys), does not allow the principal (AuthorizedPrincipalsFile), or its clock is outside the validity")
	}
	return b.String()
}

// Unwrap returns ErrAuthFailed and, for a validity problem, ErrCertExpired.
func (e *CertRejectedError) Unwrap() []error {
	switch e.Reason {
	case CertExpired, CertNotYetValid:
		return []error{ErrAuthFailed, ErrCertExpired}
	case CertRevoked:
		return []error{ErrAuthFailed, ErrCertRevoked}
	}
	return []error{ErrAuthFailed}
}

// certTime converts a certificate time (seconds, CertTimeInfinity for
// "forever") to a time.Time.
func certTime(v uint64) time.Time {
	if v > 1<<62 {
		return time.Unix(1<<62, 0).UTC() // far enough: "forever"
	}
	return time.Unix(int64(v), 0).UTC()
}

// certRejected explains why the server refused cu's certificate: it reads
// the server's clock with a probe certificate when the signer issues one.
func (p *Pool) certRejected(ctx context.Context, t *Target, cu *certUse) error {
	c := cu.cert
	e := &CertRejectedError{
		Machine: t.Name, User: t.User, Addr: t.addr(), KeyID: c.KeyId, Serial: c.Serial,
		Principals: slices.Clone(c.ValidPrincipals), CA: xssh.FingerprintSHA256(c.SignatureKey),
		ValidAfter: certTime(c.ValidAfter), ValidBefore: certTime(c.ValidBefore), SignerTime: cu.signedAt.UTC(),
		Reason: CertRefused,
	}
	server, err := p.probeClock(ctx, t, cu.signer)
	switch {
	case err == nil:
		e.ServerTime = server
		switch {
		case uint64(server.Unix()) >= c.ValidBefore:
			e.Reason = CertExpired
		case uint64(server.Unix()) < c.ValidAfter:
			e.Reason = CertNotYetValid
		default: // same CA, same user, a time inside the validity: this certificate is refused
			e.Reason = CertRevoked
		}
	case errors.Is(err, ErrAuthFailed):
		e.Reason = CertNotAccepted
	default:
		e.ProbeErr = err
	}
	p.log.Debug("ssh: certificate refused", "machine", t.Name, "addr", t.addr(), "reason", e.Reason, "key_id", c.KeyId, "probe_error", err)
	return e
}

// probeClock logs in to t with a clock-probe certificate from s and returns
// the server's clock. Errors wrap ErrAuthFailed when the server refused the
// probe certificate too.
func (p *Pool) probeClock(ctx context.Context, t *Target, s CertSigner) (time.Time, error) {
	signer, cert, err := certifiedKey(ctx, s, CertRequest{Machine: t.Name, Addr: t.addr(), User: t.User, ClockProbe: true})
	if err != nil {
		return time.Time{}, fmt.Errorf("no probe certificate: %w", err)
	}
	if cert.CriticalOptions["force-command"] != ClockProbeCommand || len(cert.Extensions) > 0 {
		return time.Time{}, fmt.Errorf("the signer's probe certificate does not force %q or carries extensions: not used", ClockProbeCommand)
	}
	hc, err := t.HostKey.prepare(ctx, t)
	if err != nil {
		return time.Time{}, err
	}
	d := net.Dialer{Timeout: p.cfg.DialTimeout}
	nc, err := d.DialContext(ctx, "tcp", t.addr())
	if err != nil {
		return time.Time{}, fmt.Errorf("probe dial: %v", err)
	}
	defer nc.Close()
	deadline := time.Now().Add(p.cfg.HandshakeTimeout + p.cfg.SessionOpenTimeout)
	_ = nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	algos := t.Algorithms.withDefaults()
	signers, _ := restrictSigners([]xssh.Signer{signer}, algos.PublicKeyAuths)
	cc, chans, reqs, err := xssh.NewClientConn(nc, t.addr(), &xssh.ClientConfig{
		Config: xssh.Config{KeyExchanges: algos.KeyExchanges, Ciphers: algos.Ciphers, MACs: algos.MACs},
		User:   t.User, Auth: []xssh.AuthMethod{xssh.PublicKeys(signers...)}, HostKeyCallback: hc.callback,
		HostKeyAlgorithms: hostKeyAlgorithms(hc.algos, algos.HostKeys),
	})
	if err != nil {
		if isAuthError(err) {
			return time.Time{}, fmt.Errorf("%w: the probe certificate was refused too", ErrAuthFailed)
		}
		return time.Time{}, fmt.Errorf("probe handshake: %v", err)
	}
	client := xssh.NewClient(cc, chans, reqs)
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		return time.Time{}, fmt.Errorf("probe session: %v", err)
	}
	defer sess.Close()
	out, err := sess.Output(ClockProbeCommand)
	if err != nil {
		return time.Time{}, fmt.Errorf("probe command %q: %v", ClockProbeCommand, err)
	}
	secs, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("probe command %q printed %q, not seconds", ClockProbeCommand, clip(string(out), 60))
	}
	return time.Unix(secs, 0).UTC(), nil
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// CertAuthority signs user certificates with a CA key held in memory, as
// `ssh-keygen -s CA -I ID -n USER -V -1m:+5m` does (x/crypto/ssh's
// Certificate.SignCert). It implements CertSigner: each certificate lists
// the login user as its only principal, is valid from Backdate before the
// signing time to TTL after it, and carries Extensions (none by default:
// no pty, no agent, port or X11 forwarding, no ~/.ssh/rc) and no critical
// options.
type CertAuthority struct {
	// Signer is the CA's private key. Required.
	Signer xssh.Signer
	// TTL is how long a certificate stays valid after signing. Default
	// DefaultCertTTL (5 min).
	TTL time.Duration
	// Backdate moves the start of the validity back, for servers whose
	// clock is behind. Default DefaultCertBackdate (1 min).
	Backdate time.Duration
	// Extensions are the certificate extensions (OpenSSH names:
	// permit-pty, permit-agent-forwarding, permit-port-forwarding,
	// permit-X11-forwarding, permit-user-rc; values empty). Default none.
	Extensions map[string]string
	// KeyID returns the certificate's key ID, which sshd logs with every
	// login it accepts. Default: "USER@MACHINE".
	KeyID func(CertRequest) string
	// Serial returns the certificate's serial number. Default: random.
	Serial func() uint64
	// Now is the clock certificates are dated by. Default time.Now.
	Now func() time.Time
}

// SignCert implements CertSigner. A clock-probe certificate is valid from
// the epoch to "forever" but forces ClockProbeCommand and has no
// extensions: its key lives in memory for one connection, and the most it
// can do is print the server's clock.
func (ca *CertAuthority) SignCert(_ context.Context, req CertRequest) (*xssh.Certificate, error) {
	if ca == nil || ca.Signer == nil {
		return nil, fmt.Errorf("%w: CertAuthority without a CA key", ErrCertificate)
	}
	if req.Key == nil || req.User == "" {
		return nil, fmt.Errorf("%w: a certificate needs a key and a user", ErrCertificate)
	}
	now := time.Now
	if ca.Now != nil {
		now = ca.Now
	}
	ttl, back := ca.TTL, ca.Backdate
	if ttl <= 0 {
		ttl = DefaultCertTTL
	}
	if back <= 0 {
		back = DefaultCertBackdate
	}
	id := req.User + "@" + req.Machine
	if ca.KeyID != nil {
		id = ca.KeyID(req)
	}
	serial := randomSerial()
	if ca.Serial != nil {
		serial = ca.Serial()
	}
	t := now()
	cert := &xssh.Certificate{
		Key: req.Key, Serial: serial, CertType: xssh.UserCert, KeyId: id,
		ValidPrincipals: []string{req.User},
		ValidAfter:      uint64(max(t.Add(-back).Unix(), 0)),
		ValidBefore:     uint64(t.Add(ttl).Unix()),
	}
	if req.ClockProbe {
		cert.ValidAfter, cert.ValidBefore = 0, xssh.CertTimeInfinity
		cert.CriticalOptions = map[string]string{"force-command": ClockProbeCommand}
	} else if len(ca.Extensions) > 0 {
		cert.Extensions = make(map[string]string, len(ca.Extensions))
		for k, v := range ca.Extensions {
			cert.Extensions[k] = v
		}
	}
	if err := cert.SignCert(rand.Reader, ca.Signer); err != nil {
		return nil, fmt.Errorf("%w: sign: %v", ErrCertificate, err)
	}
	return cert, nil
}

func randomSerial() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:])
}

// CertExtensions returns the OpenSSH user-certificate extensions a
// certificate may carry (ssh-keygen's -O permit-* options), sorted.
func CertExtensions() []string {
	return []string{"permit-X11-forwarding", "permit-agent-forwarding", "permit-port-forwarding", "permit-pty", "permit-user-rc"}
}
