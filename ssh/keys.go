package ssh

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	xssh "golang.org/x/crypto/ssh"
)

// KeyType names a kind of client key GenerateKey makes.
type KeyType string

// Key types.
const (
	// KeyEd25519 is an Ed25519 key (RFC 8709): small and fast; needs
	// OpenSSH 6.5 or later on the server. The default.
	KeyEd25519 KeyType = "ed25519"
	// KeyRSA is an RSA key, signed with rsa-sha2-256/512 (RFC 8332) on
	// servers that offer them: for hosts too old for Ed25519.
	KeyRSA KeyType = "rsa"
)

// RSA key sizes accepted by GenerateKey, in bits.
const (
	MinRSABits     = 3072
	MaxRSABits     = 16384
	DefaultRSABits = 4096
)

// ParseKeyType reads "ed25519" or "rsa" (case-insensitive; "" is
// KeyEd25519). Other names give an error wrapping ErrInvalidCommand.
func ParseKeyType(s string) (KeyType, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "ed25519", "ssh-ed25519":
		return KeyEd25519, nil
	case "rsa", "ssh-rsa":
		return KeyRSA, nil
	}
	return "", fmt.Errorf("%w: key type %q: use ed25519 or rsa", ErrInvalidCommand, s)
}

// GenerateKey makes a new key pair in memory (crypto/ed25519 or
// crypto/rsa with crypto/rand) and returns its signer and its private key
// as unencrypted OpenSSH PEM, for the caller to store encrypted (a vault);
// nothing is written to disk. bits is the RSA size (0: DefaultRSABits;
// MinRSABits..MaxRSABits) and is ignored for Ed25519. comment goes into
// the PEM. Errors wrap ErrInvalidCommand for a bad type or size.
func GenerateKey(typ KeyType, bits int, comment string) (xssh.Signer, []byte, error) {
	var priv any
	switch typ {
	case KeyEd25519, "":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		priv = k
	case KeyRSA:
		if bits == 0 {
			bits = DefaultRSABits
		}
		if bits < MinRSABits || bits > MaxRSABits {
			return nil, nil, fmt.Errorf("%w: RSA key size %d bits is outside %d..%d", ErrInvalidCommand, bits, MinRSABits, MaxRSABits)
		}
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			return nil, nil, err
		}
		priv = k
	default:
		return nil, nil, fmt.Errorf("%w: key type %q: use ed25519 or rsa", ErrInvalidCommand, typ)
	}
	signer, err := xssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, nil, err
	}
	block, err := xssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, nil, err
	}
	return signer, pem.EncodeToMemory(block), nil
}

// KeyBits returns the size in bits of an RSA public key, 256 for Ed25519
// and ECDSA P-256 (the curve size for ECDSA), and 0 when unknown.
func KeyBits(k xssh.PublicKey) int {
	if ck, ok := k.(xssh.CryptoPublicKey); ok {
		switch pk := ck.CryptoPublicKey().(type) {
		case *rsa.PublicKey:
			return pk.N.BitLen()
		case ed25519.PublicKey:
			return 256
		case *ecdsa.PublicKey:
			return pk.Curve.Params().BitSize
		}
	}
	return 0
}

var opensshVersionRE = regexp.MustCompile(`OpenSSH_(\d+)\.(\d+)`)

// OpenSSHVersion reads the OpenSSH version from a server's identification
// string ("SSH-2.0-OpenSSH_9.2p1 Debian-2") and reports false for other
// servers.
func OpenSSHVersion(serverVersion string) (major, minor int, ok bool) {
	m := opensshVersionRE.FindStringSubmatch(serverVersion)
	if m == nil {
		return 0, 0, false
	}
	major, _ = strconv.Atoi(m[1])
	minor, _ = strconv.Atoi(m[2])
	return major, minor, true
}

// MinOpenSSHFor returns the oldest OpenSSH release whose sshd accepts
// client keys of type t: 6.5 for Ed25519 (released January 2014), and for
// RSA 7.2 (the first with rsa-sha2 signatures; OpenSSH 8.8 and later
// refuse the old SHA-1 ssh-rsa signatures, older ones accept only them).
// For RSA the requirement is soft: x/crypto signs with ssh-rsa when the
// server does not announce rsa-sha2, so only Ed25519 is refused on an old
// server.
func MinOpenSSHFor(t KeyType) (major, minor int) {
	if t == KeyRSA {
		return 7, 2
	}
	return 6, 5
}

// KeyTypeSupported reports whether an sshd announcing serverVersion
// accepts client keys of type t: false only for an OpenSSH older than
// MinOpenSSHFor(t) and Ed25519 (other servers are assumed to).
func KeyTypeSupported(serverVersion string, t KeyType) bool {
	maj, min, ok := OpenSSHVersion(serverVersion)
	if !ok || t != KeyEd25519 {
		return true
	}
	wm, wn := MinOpenSSHFor(t)
	return maj > wm || (maj == wm && min >= wn)
}
