package ssh

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Host certificates. A known_hosts line
//
//	@cert-authority *.example.com,[*.example.com]:2222 ssh-ed25519 AAAA…
//
// trusts every host whose name matches the patterns and whose host key is
// certified by that CA (sshd_config's HostCertificate); a line
//
//	@revoked * ssh-ed25519 AAAA…
//
// refuses that key wherever it appears: as a host's key, as the key inside
// its certificate, or as the CA that signed it. Patterns are matched as
// OpenSSH does (sshconnect.c, match_hostname): against "host" for port 22
// and "[host]:port" otherwise, with '*' and '?' wildcards, '!' negations
// and hashed (|1|…) entries, so "@cert-authority *" covers every port.
// HostKeyPolicy.WithHostCAs adds CAs trusted for every host without a line.

// hostCertAlgos are the host certificate algorithms offered first when a
// CA is trusted for the host (as OpenSSH orders them when it knows a CA).
var hostCertAlgos = []string{
	xssh.CertAlgoED25519v01, xssh.CertAlgoECDSA256v01, xssh.CertAlgoECDSA384v01, xssh.CertAlgoECDSA521v01,
	xssh.CertAlgoSKED25519v01, xssh.CertAlgoSKECDSA256v01, xssh.CertAlgoRSASHA512v01, xssh.CertAlgoRSASHA256v01,
	xssh.CertAlgoRSAv01,
}

// plainHostAlgos are the plain host key algorithms offered after them.
var plainHostAlgos = []string{
	xssh.KeyAlgoED25519, xssh.KeyAlgoECDSA256, xssh.KeyAlgoECDSA384, xssh.KeyAlgoECDSA521,
	xssh.KeyAlgoSKED25519, xssh.KeyAlgoSKECDSA256, xssh.KeyAlgoRSASHA512, xssh.KeyAlgoRSASHA256, xssh.KeyAlgoRSA,
}

// WithHostCAs returns p trusting, in addition to its known_hosts files,
// host certificates signed by cas for every host (the certificate must
// still name the host among its principals, be valid now and not be
// @revoked). It has no effect on InsecureIgnoreHostKey.
func (p HostKeyPolicy) WithHostCAs(cas ...xssh.PublicKey) HostKeyPolicy {
	p.cas = append(slices.Clip(p.cas), cas...)
	return p
}

// caLine is a @cert-authority line.
type caLine struct {
	patterns []string
	key      xssh.PublicKey
	where    string // "file line N"
}

// hostMarks are the marker lines of known_hosts files.
type hostMarks struct {
	cas     []caLine
	caAt    map[string]bool   // "file\x00line" of @cert-authority lines
	revoked map[string]string // plain key blob → "file line N"
}

func lineKey(file string, line int) string { return fmt.Sprintf("%s\x00%d", file, line) }

// scanHostMarks reads the @cert-authority and @revoked lines of files
// (missing files are skipped) and of texts (a KnownHostsSource's lines,
// named as in errors); lines that do not parse are skipped, as by
// knownhosts.
func scanHostMarks(files []string, texts []knownHostsText) (*hostMarks, error) {
	m := &hostMarks{caAt: map[string]bool{}, revoked: map[string]string{}}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if err := m.scan(f, b); err != nil {
			return nil, err
		}
	}
	for _, t := range texts {
		if err := m.scan(t.name, t.content); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// scan adds the marker lines of known_hosts content b, named name.
func (m *hostMarks) scan(name string, b []byte) error {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] != '@' {
			continue
		}
		marker, hosts, key, _, _, err := xssh.ParseKnownHosts(line)
		if err != nil || key == nil {
			continue
		}
		where := fmt.Sprintf("%s line %d", name, n)
		switch marker {
		case "cert-authority":
			m.cas = append(m.cas, caLine{patterns: hosts, key: key, where: where})
			m.caAt[lineKey(name, n)] = true
		case "revoked":
			m.revoked[string(key.Marshal())] = where
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	return nil
}

// lookupName is the name OpenSSH looks a host up by in known_hosts:
// "host" for port 22, "[host]:port" otherwise.
func lookupName(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if port == "22" {
		return host
	}
	return "[" + host + "]:" + port
}

// authoritiesFor returns the CA lines whose patterns match name.
func (m *hostMarks) authoritiesFor(name string) []caLine {
	var out []caLine
	for _, l := range m.cas {
		if matchHostPatterns(name, l.patterns) {
			out = append(out, l)
		}
	}
	return out
}

// revokedAt returns where k is @revoked, or "".
func (m *hostMarks) revokedAt(k xssh.PublicKey) string {
	if k == nil {
		return ""
	}
	return m.revoked[string(k.Marshal())]
}

// matchHostPatterns reports whether name matches a comma-split known_hosts
// pattern list: some pattern matches and no negated one does.
func matchHostPatterns(name string, patterns []string) bool {
	name = strings.ToLower(name)
	matched := false
	for _, p := range patterns {
		neg := strings.HasPrefix(p, "!")
		if neg {
			p = p[1:]
		}
		var ok bool
		if strings.HasPrefix(p, "|1|") {
			ok = hashedMatch(p, name)
		} else {
			ok = wildcard(strings.ToLower(p), name)
		}
		if ok {
			if neg {
				return false
			}
			matched = true
		}
	}
	return matched
}

// hashedMatch matches a hashed entry "|1|base64(salt)|base64(HMAC-SHA1(salt, name))".
func hashedMatch(entry, name string) bool {
	parts := strings.Split(entry, "|")
	if len(parts) != 4 {
		return false
	}
	salt, err1 := base64.StdEncoding.DecodeString(parts[2])
	want, err2 := base64.StdEncoding.DecodeString(parts[3])
	if err1 != nil || err2 != nil {
		return false
	}
	h := hmac.New(sha1.New, salt)
	h.Write([]byte(name))
	return hmac.Equal(h.Sum(nil), want)
}

// wildcard matches s against p, where '*' matches any run of characters
// and '?' any one (OpenSSH's match_pattern).
func wildcard(p, s string) bool {
	for len(p) > 0 {
		switch p[0] {
		case '*':
			for len(p) > 0 && p[0] == '*' {
				p = p[1:]
			}
			if p == "" {
				return true
			}
			for i := 0; i <= len(s); i++ {
				if wildcard(p, s[i:]) {
					return true
				}
			}
			return false
		case '?':
			if s == "" {
				return false
			}
		default:
			if s == "" || s[0] != p[0] {
				return false
			}
		}
		p, s = p[1:], s[1:]
	}
	return s == ""
}

// hostCertError is a host certificate that does not verify, for a host
// that known_hosts (or the policy's CAs) says uses certificates.
type hostCertError struct{ msg string }

func (e *hostCertError) Error() string { return e.msg }

// hostVerifier checks the keys a host presents: plain keys against the
// plain known_hosts lines (x/crypto's knownhosts), certificates against the
// CAs trusted for the host, with OpenSSH's fallback to the certified key
// as a plain key.
type hostVerifier struct {
	base  xssh.HostKeyCallback // knownhosts over the files
	marks *hostMarks
	cas   []caLine // trusted for this host: matching lines, then the policy's
	now   func() time.Time
}

// plain checks a plain key with knownhosts, ignoring @cert-authority lines
// (which knownhosts would report as keys the host should have).
func (v *hostVerifier) plain(addr string, remote net.Addr, key xssh.PublicKey) error {
	err := v.base(addr, remote, key)
	var ke *knownhosts.KeyError
	if errors.As(err, &ke) && len(ke.Want) > 0 {
		var keep []knownhosts.KnownKey
		for _, w := range ke.Want {
			if !v.marks.caAt[lineKey(w.Filename, w.Line)] {
				keep = append(keep, w)
			}
		}
		if len(keep) != len(ke.Want) {
			return &knownhosts.KeyError{Want: keep}
		}
	}
	return err
}

// check is the host key callback's verdict on key.
func (v *hostVerifier) check(addr string, remote net.Addr, key xssh.PublicKey) error {
	cert, isCert := key.(*xssh.Certificate)
	if !isCert {
		err := v.plain(addr, remote, key)
		var ke *knownhosts.KeyError
		if errors.As(err, &ke) && len(ke.Want) == 0 && len(v.cas) > 0 {
			return &hostCertError{msg: fmt.Sprintf("the host presented a plain key (%s %s), but certificates signed by %s are expected for it (%s): "+
				"give the host a certificate (sshd_config HostCertificate) or add its key to known_hosts",
				key.Type(), xssh.FingerprintSHA256(key), v.caNames(), v.caWhere())}
		}
		return err
	}
	certErr := v.checkCert(addr, remote, cert)
	if certErr == nil {
		return nil
	}
	// OpenSSH falls back to the certified key as a plain key.
	perr := v.plain(addr, remote, cert.Key)
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	switch {
	case perr == nil, errors.As(perr, &re):
		return perr
	case errors.As(perr, &ke) && len(ke.Want) > 0:
		return perr // the host's recorded plain key differs: a mismatch
	case len(v.cas) == 0 && v.marks.revokedAt(cert.SignatureKey) == "":
		return perr // nothing vouches for the host: unknown (accept-new may record its key)
	}
	return certErr
}

// checkCert verifies a host certificate against the CAs trusted for the
// host, with a message per failure.
func (v *hostVerifier) checkCert(addr string, remote net.Addr, cert *xssh.Certificate) error {
	host, _, _ := net.SplitHostPort(addr)
	desc := fmt.Sprintf("host certificate (key %s %s, serial %d, key ID %q, CA %s)",
		cert.Key.Type(), xssh.FingerprintSHA256(cert.Key), cert.Serial, cert.KeyId, xssh.FingerprintSHA256(cert.SignatureKey))
	if cert.CertType != xssh.HostCert {
		return &hostCertError{msg: desc + " is a user certificate, not a host certificate"}
	}
	for _, k := range []xssh.PublicKey{cert.Key, cert.SignatureKey} {
		if where := v.marks.revokedAt(k); where != "" {
			return &hostCertError{msg: fmt.Sprintf("%s: %s %s is marked @revoked in %s", desc, k.Type(), xssh.FingerprintSHA256(k), where)}
		}
	}
	trusted := false
	for _, ca := range v.cas {
		trusted = trusted || bytes.Equal(ca.key.Marshal(), cert.SignatureKey.Marshal())
	}
	if !trusted {
		return &hostCertError{msg: fmt.Sprintf("%s is signed by a CA that is not trusted for %s (trusted: %s, %s)", desc, lookupName(addr), v.caNames(), v.caWhere())}
	}
	if len(cert.ValidPrincipals) > 0 && !slices.Contains(cert.ValidPrincipals, host) {
		return &hostCertError{msg: fmt.Sprintf("%s is for the hosts [%s], not %s", desc, strings.Join(cert.ValidPrincipals, ", "), host)}
	}
	now := v.now()
	if after, before := certTime(cert.ValidAfter), certTime(cert.ValidBefore); now.Before(after) || !now.Before(before) {
		return &hostCertError{msg: fmt.Sprintf("%s is valid from %s to %s, and this client's clock reads %s: set the clocks right (NTP) or renew the certificate",
			desc, after.Format(time.RFC3339), before.Format(time.RFC3339), now.UTC().Format(time.RFC3339))}
	}
	cc := &xssh.CertChecker{
		IsHostAuthority: func(k xssh.PublicKey, _ string) bool { return bytes.Equal(k.Marshal(), cert.SignatureKey.Marshal()) },
		Clock:           v.now,
	}
	if err := cc.CheckHostKey(addr, remote, cert); err != nil {
		return &hostCertError{msg: fmt.Sprintf("%s does not verify: %v", desc, err)}
	}
	return nil
}

func (v *hostVerifier) caNames() string {
	var s []string
	for _, ca := range v.cas {
		s = append(s, ca.key.Type()+" "+xssh.FingerprintSHA256(ca.key))
	}
	return strings.Join(s, ", ")
}

func (v *hostVerifier) caWhere() string {
	var s []string
	for _, ca := range v.cas {
		s = append(s, ca.where)
	}
	return strings.Join(s, ", ")
}

// recordable is the key accept-new records for a host: a certificate's
// certified key, else key.
func recordable(key xssh.PublicKey) xssh.PublicKey {
	if c, ok := key.(*xssh.Certificate); ok {
		return c.Key
	}
	return key
}
