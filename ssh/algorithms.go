package ssh

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	xssh "golang.org/x/crypto/ssh"
)

// ErrAlgorithmNegotiation: the server and this client share no algorithm
// of one kind (key exchange, host key, cipher, MAC, or the signature
// algorithm of our key). Old servers often offer only SHA-1 or CBC
// algorithms, which are refused by default; the error names the kind and
// both sides' lists. Not retryable.
var ErrAlgorithmNegotiation = errors.New("ssh: no common algorithm")

// Algorithms are the SSH algorithms a connection may use, by their OpenSSH
// names, in order of preference. An empty list means that kind's default
// from DefaultAlgorithms. Names must be implemented by
// golang.org/x/crypto/ssh (Validate).
type Algorithms struct {
	// KeyExchanges (OpenSSH's KexAlgorithms).
	KeyExchanges []string `json:"keyExchanges,omitempty"`
	// Ciphers (Ciphers).
	Ciphers []string `json:"ciphers,omitempty"`
	// MACs (MACs); AEAD ciphers (chacha20-poly1305, AES-GCM) need none.
	MACs []string `json:"macs,omitempty"`
	// HostKeys are the algorithms accepted for the server's host key
	// (HostKeyAlgorithms). Known-hosts policies narrow them further to the
	// key types recorded for the host.
	HostKeys []string `json:"hostKeys,omitempty"`
	// PublicKeyAuths are the signature algorithms our keys may sign with
	// (PubkeyAcceptedAlgorithms): a key none of whose algorithms is listed
	// is not offered.
	PublicKeyAuths []string `json:"publicKeyAuths,omitempty"`
}

// DefaultAlgorithms returns the client defaults of OpenSSH 9 (ssh_config's
// KexAlgorithms, Ciphers, MACs, HostKeyAlgorithms and
// PubkeyAcceptedAlgorithms), limited to what x/crypto/ssh implements and
// without the SHA-1 algorithms OpenSSH 9 still lists (hmac-sha1 and
// hmac-sha1-etm), plus mlkem768x25519-sha256 (OpenSSH 9.9's first choice).
// No diffie-hellman-group14-sha1, no hmac-sha1, no ssh-rsa (SHA-1)
// signatures, no CBC ciphers. This is what a Target with zero Algorithms
// offers.
func DefaultAlgorithms() Algorithms {
	return Algorithms{
		KeyExchanges: []string{
			xssh.KeyExchangeMLKEM768X25519, xssh.KeyExchangeCurve25519, "curve25519-sha256@libssh.org",
			xssh.KeyExchangeECDHP256, xssh.KeyExchangeECDHP384, xssh.KeyExchangeECDHP521,
			xssh.KeyExchangeDHGEXSHA256, xssh.KeyExchangeDH16SHA512, xssh.KeyExchangeDH14SHA256,
		},
		Ciphers: []string{
			xssh.CipherChaCha20Poly1305, xssh.CipherAES128CTR, xssh.CipherAES192CTR, xssh.CipherAES256CTR,
			xssh.CipherAES128GCM, xssh.CipherAES256GCM,
		},
		MACs: []string{xssh.HMACSHA256ETM, xssh.HMACSHA512ETM, xssh.HMACSHA256, xssh.HMACSHA512},
		HostKeys: []string{
			xssh.CertAlgoED25519v01, xssh.CertAlgoECDSA256v01, xssh.CertAlgoECDSA384v01, xssh.CertAlgoECDSA521v01,
			xssh.CertAlgoSKED25519v01, xssh.CertAlgoSKECDSA256v01, xssh.CertAlgoRSASHA512v01, xssh.CertAlgoRSASHA256v01,
			xssh.KeyAlgoED25519, xssh.KeyAlgoECDSA256, xssh.KeyAlgoECDSA384, xssh.KeyAlgoECDSA521,
			xssh.KeyAlgoSKED25519, xssh.KeyAlgoSKECDSA256, xssh.KeyAlgoRSASHA512, xssh.KeyAlgoRSASHA256,
		},
		PublicKeyAuths: []string{
			xssh.KeyAlgoED25519, xssh.KeyAlgoECDSA256, xssh.KeyAlgoECDSA384, xssh.KeyAlgoECDSA521,
			xssh.KeyAlgoSKED25519, xssh.KeyAlgoSKECDSA256, xssh.KeyAlgoRSASHA512, xssh.KeyAlgoRSASHA256,
		},
	}
}

// legacyExtra are the weak algorithms LegacyAlgorithms adds.
var legacyExtra = Algorithms{
	KeyExchanges:   []string{xssh.InsecureKeyExchangeDH14SHA1, xssh.InsecureKeyExchangeDHGEXSHA1, xssh.InsecureKeyExchangeDH1SHA1},
	Ciphers:        []string{xssh.InsecureCipherAES128CBC, xssh.InsecureCipherTripleDESCBC},
	MACs:           []string{xssh.HMACSHA1, xssh.InsecureHMACSHA196},
	HostKeys:       []string{xssh.CertAlgoRSAv01, xssh.KeyAlgoRSA},
	PublicKeyAuths: []string{xssh.KeyAlgoRSA},
}

// LegacyAlgorithms returns DefaultAlgorithms followed by the weak
// algorithms old servers (OpenSSH before 7.2, many embedded systems) may
// offer alone: SHA-1 key exchanges (diffie-hellman-group14-sha1,
// diffie-hellman-group-exchange-sha1, diffie-hellman-group1-sha1), SHA-1
// MACs (hmac-sha1, hmac-sha1-96), ssh-rsa SHA-1 host keys and signatures,
// and CBC ciphers (aes128-cbc, 3des-cbc). A modern server still negotiates
// the strong ones (they come first); an old one can be reached, at the
// cost of SHA-1's collision weakness and CBC's padding-oracle history. Use
// it for the machines that need it only.
func LegacyAlgorithms() Algorithms {
	d := DefaultAlgorithms()
	return Algorithms{
		KeyExchanges:   append(d.KeyExchanges, legacyExtra.KeyExchanges...),
		Ciphers:        append(d.Ciphers, legacyExtra.Ciphers...),
		MACs:           append(d.MACs, legacyExtra.MACs...),
		HostKeys:       append(d.HostKeys, legacyExtra.HostKeys...),
		PublicKeyAuths: append(d.PublicKeyAuths, legacyExtra.PublicKeyAuths...),
	}
}

// withDefaults fills each empty list from DefaultAlgorithms.
func (a Algorithms) withDefaults() Algorithms {
	d := DefaultAlgorithms()
	pick := func(l, def []string) []string {
		if len(l) == 0 {
			return def
		}
		return l
	}
	return Algorithms{
		KeyExchanges: pick(a.KeyExchanges, d.KeyExchanges), Ciphers: pick(a.Ciphers, d.Ciphers),
		MACs: pick(a.MACs, d.MACs), HostKeys: pick(a.HostKeys, d.HostKeys), PublicKeyAuths: pick(a.PublicKeyAuths, d.PublicKeyAuths),
	}
}

// Validate returns an error wrapping ErrInvalidCommand naming the first
// algorithm that x/crypto/ssh does not implement.
func (a Algorithms) Validate() error {
	sup, insec := xssh.SupportedAlgorithms(), xssh.InsecureAlgorithms()
	known := func(kind string, names, s, i []string, extra ...string) error {
		for _, n := range names {
			if !slices.Contains(s, n) && !slices.Contains(i, n) && !slices.Contains(extra, n) {
				return &wrapError{msg: fmt.Sprintf("ssh: unknown %s algorithm %q (known: %s)", kind, n,
					strings.Join(slices.Concat(s, i, extra), ", ")), errs: []error{ErrInvalidCommand}}
			}
		}
		return nil
	}
	return errors.Join(
		known("key exchange", a.KeyExchanges, sup.KeyExchanges, insec.KeyExchanges, "curve25519-sha256@libssh.org"),
		known("cipher", a.Ciphers, sup.Ciphers, insec.Ciphers),
		known("MAC", a.MACs, sup.MACs, insec.MACs),
		known("host key", a.HostKeys, sup.HostKeys, insec.HostKeys, xssh.CertAlgoSKED25519v01, xssh.CertAlgoSKECDSA256v01, xssh.KeyAlgoSKED25519, xssh.KeyAlgoSKECDSA256),
		known("public key", a.PublicKeyAuths, sup.PublicKeyAuths, insec.PublicKeyAuths),
	)
}

// signatureAlgorithms returns the signature algorithms a key of type
// pubType (a certificate type included) can sign with, strongest first.
func signatureAlgorithms(pubType string) []string {
	base := pubType
	if b, ok := strings.CutSuffix(pubType, "-cert-v01@openssh.com"); ok {
		base = b
		if strings.HasPrefix(b, "sk-") {
			base = b + "@openssh.com"
		}
	}
	if base == xssh.KeyAlgoRSA {
		return []string{xssh.KeyAlgoRSASHA512, xssh.KeyAlgoRSASHA256, xssh.KeyAlgoRSA}
	}
	return []string{base}
}

// restrictSigners returns the signers limited to the allowed signature
// algorithms; a key that could sign with none of them is left out and
// described in dropped.
func restrictSigners(signers []xssh.Signer, allowed []string) (out []xssh.Signer, dropped []string) {
	for _, s := range signers {
		pub := s.PublicKey()
		var algos []string
		for _, a := range signatureAlgorithms(pub.Type()) {
			if slices.Contains(allowed, a) {
				algos = append(algos, a)
			}
		}
		desc := pub.Type() + " " + xssh.FingerprintSHA256(pub)
		if len(algos) == 0 {
			dropped = append(dropped, desc)
			continue
		}
		as, ok := s.(xssh.AlgorithmSigner)
		if !ok {
			if !slices.Contains(algos, signatureAlgorithms(pub.Type())[0]) && !slices.Contains(algos, pub.Type()) {
				dropped = append(dropped, desc)
				continue
			}
			out = append(out, s)
			continue
		}
		rs, err := xssh.NewSignerWithAlgorithms(as, algos)
		if err != nil {
			dropped = append(dropped, desc+" ("+err.Error()+")")
			continue
		}
		out = append(out, rs)
	}
	return out, dropped
}

// negotiationErr explains a handshake that found no common algorithm, or
// returns nil when err is something else.
func negotiationErr(t *Target, err error) error {
	var ane *xssh.AlgorithmNegotiationError
	if errors.As(err, &ane) {
		hint := "configure the server to offer one of ours"
		if weak := legacyOffered(ane.What, ane.RequestedAlgorithms); len(weak) > 0 {
			hint = fmt.Sprintf("the server offers only weak algorithms (%s) that this client refuses by default: upgrade the server's sshd, "+
				"or allow them for this machine only (Target.Algorithms = ssh.LegacyAlgorithms(); rediacc: Machine.LegacyAlgorithms, --legacy-algorithms)",
				strings.Join(weak, ", "))
		}
		return targetErr(t, ErrAlgorithmNegotiation, nil, "no common %s algorithm: the server offers [%s], this client [%s]: %s",
			ane.What, strings.Join(ane.RequestedAlgorithms, ", "), strings.Join(ane.SupportedAlgorithms, ", "), hint)
	}
	if strings.Contains(err.Error(), "no common public key signature algorithm") {
		return targetErr(t, ErrAlgorithmNegotiation, err,
			"the server accepts none of the signature algorithms our key may use (an old server may accept only ssh-rsa SHA-1 signatures): "+
				"upgrade the server's sshd, use an ed25519 key, or allow SHA-1 for this machine only (ssh.LegacyAlgorithms; rediacc: --legacy-algorithms)")
	}
	return nil
}

// legacyOffered returns the algorithms of offered that LegacyAlgorithms
// would add for the negotiation step what.
func legacyOffered(what string, offered []string) []string {
	var pool []string
	switch {
	case strings.Contains(what, "key exchange"):
		pool = legacyExtra.KeyExchanges
	case strings.Contains(what, "host key"):
		pool = legacyExtra.HostKeys
	case strings.Contains(what, "cipher"):
		pool = legacyExtra.Ciphers
	case strings.Contains(what, "MAC"):
		pool = legacyExtra.MACs
	}
	var out []string
	for _, o := range offered {
		if slices.Contains(pool, o) {
			out = append(out, o)
		}
	}
	return out
}

// hostKeyAlgorithms returns the host key algorithms to accept: those
// recorded for the host in known_hosts that allowed permits (all allowed
// ones when none is recorded, or none of the recorded is permitted: the
// known_hosts check still decides about the key).
func hostKeyAlgorithms(recorded, allowed []string) []string {
	var out []string
	for _, a := range recorded {
		if slices.Contains(allowed, a) {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return allowed
	}
	return out
}
