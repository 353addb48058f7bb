package ssh

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

type hostKeyMode int

const (
	modeKnownHosts hostKeyMode = iota // strict; the zero value
	modeAcceptNew
	modeInsecure
)

// HostKeyPolicy decides whether the key a host presents during the handshake
// is trusted. Build one with KnownHosts, AcceptNewHostKey or
// InsecureIgnoreHostKey. The zero value is KnownHosts() (strict checking
// against ~/.ssh/known_hosts).
//
// Known-hosts files are re-read on every dial (a file edited while the
// program runs takes effect on the next connection). The key types recorded
// for a host are offered as the client's HostKeyAlgorithms, so the server
// presents the recorded key type instead of whatever type it prefers.
type HostKeyPolicy struct {
	mode  hostKeyMode
	files []string
	src   KnownHostsSource // lines kept outside files (hostkeysource.go)
	cas   []xssh.PublicKey // host CAs trusted for every host (WithHostCAs)
}

// KnownHosts returns a strict policy: the host's key must be listed in one of
// files (OpenSSH known_hosts format, hashed names supported), or be certified
// by a CA a @cert-authority line trusts for the host (see hostcert.go; host
// certificates are then asked for first); @revoked keys are refused, also
// inside a certificate or as its CA. With no files it uses
// ~/.ssh/known_hosts. Missing files count as empty.
//
// Dialing fails with ErrUnknownHostKey when no line names the host and with
// ErrHostKeyMismatch when lines name the host but none has the presented key
// (or the key is @revoked, or a certificate expected for the host is missing
// or invalid).
func KnownHosts(files ...string) HostKeyPolicy {
	return HostKeyPolicy{mode: modeKnownHosts, files: append([]string(nil), files...)}
}

// AcceptNewHostKey returns a trust-on-first-use policy backed by file
// ("" means ~/.ssh/known_hosts): a host with no line in file has its key
// appended (the file is created with mode 0600 and missing directories with
// 0700), a host whose recorded key differs is refused with
// ErrHostKeyMismatch, exactly like KnownHosts. Appending is safe under
// concurrent dials from one or several processes (the file is locked and
// re-read before writing, so no duplicate lines are written). Equivalent to
// OpenSSH's StrictHostKeyChecking=accept-new.
func AcceptNewHostKey(file string) HostKeyPolicy {
	var files []string
	if file != "" {
		files = []string{file}
	}
	return HostKeyPolicy{mode: modeAcceptNew, files: files}
}

// InsecureIgnoreHostKey returns a policy that accepts any host key. It
// offers no protection against man-in-the-middle attacks: use it only for
// throw-away test servers.
func InsecureIgnoreHostKey() HostKeyPolicy {
	return HostKeyPolicy{mode: modeInsecure}
}

// String describes the policy, e.g. "known_hosts(/root/.ssh/known_hosts)".
func (p HostKeyPolicy) String() string {
	where := p.resolvedFiles()
	if p.src != nil {
		where = append([]string{p.src.String()}, where...)
	}
	switch p.mode {
	case modeInsecure:
		return "insecure-ignore-host-key"
	case modeAcceptNew:
		return "accept-new(" + strings.Join(where, ",") + ")"
	default:
		return "known_hosts(" + strings.Join(where, ",") + ")"
	}
}

// resolvedFiles returns the policy's files: ~/.ssh/known_hosts when it
// names none and has no source.
func (p HostKeyPolicy) resolvedFiles() []string {
	if len(p.files) > 0 || p.src != nil {
		return p.files
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		home = "~"
	}
	return []string{filepath.Join(home, ".ssh", "known_hosts")}
}

// probeKey is a throw-away public key used to learn which key types the
// known_hosts files record for a host.
var probeKey = sync.OnceValue(func() xssh.PublicKey {
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		panic(err)
	}
	k, err := xssh.NewPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return k
})

// hostKeyCheck is the per-dial state of a policy.
type hostKeyCheck struct {
	callback xssh.HostKeyCallback
	algos    []string

	mu  sync.Mutex
	err error // the classified error of the last callback invocation
}

func (hc *hostKeyCheck) lastErr() error {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	return hc.err
}

// prepare loads the policy's files (and source) for a dial to t.
func (p HostKeyPolicy) prepare(ctx context.Context, t *Target) (*hostKeyCheck, error) {
	hc := &hostKeyCheck{}
	if p.mode == modeInsecure {
		hc.callback = xssh.InsecureIgnoreHostKey()
		return hc, nil
	}
	files := p.resolvedFiles()
	where := files
	if p.src != nil {
		where = append([]string{p.src.String()}, files...)
	}
	addr := t.addr()
	texts, err := p.sourceTexts(ctx, t)
	if err != nil {
		return nil, err
	}
	known, names, err := knownHostsCallback(files, texts)
	var marks *hostMarks
	if err == nil {
		marks, err = scanHostMarks(files, texts) // hostcert.go
	}
	if err != nil {
		return nil, targetErr(t, ErrUnknownHostKey, err,
			"cannot read known_hosts (%s): fix the file or its permissions", strings.Join(where, ", "))
	}
	base := func(host string, remote net.Addr, key xssh.PublicKey) error {
		return renameKnownKeys(known(host, remote, key), names) // the sources' names, not their pipes
	}
	v := &hostVerifier{base: base, marks: marks, cas: marks.authoritiesFor(lookupName(addr)), now: time.Now}
	for _, k := range p.cas {
		v.cas = append(v.cas, caLine{key: k, where: "the policy's host CAs"})
	}
	hc.algos = recordedAlgorithms(v.plain, addr)
	if len(v.cas) > 0 { // certificates first, as OpenSSH orders them when it knows a CA
		plain := hc.algos
		if len(plain) == 0 {
			plain = plainHostAlgos
		}
		hc.algos = append(slices.Clone(hostCertAlgos), plain...)
	}
	hc.callback = func(_ string, remote net.Addr, key xssh.PublicKey) error {
		err := v.check(addr, remote, key)
		if err != nil && p.mode == modeAcceptNew {
			var ke *knownhosts.KeyError
			if errors.As(err, &ke) && len(ke.Want) == 0 {
				if p.src != nil {
					err = p.acceptNewInSource(ctx, addr, remote, recordable(key))
				} else {
					err = appendKnownHost(files[0], addr, remote, recordable(key))
				}
			}
		}
		err = classifyHostKeyErr(t, where, p.addHint(addr), p.removeHint(addr), key, err)
		hc.mu.Lock()
		hc.err = err
		hc.mu.Unlock()
		return err
	}
	return hc, nil
}

// recordedAlgorithms returns the host key algorithms matching the key types
// recorded for addr, or nil when none are recorded.
func recordedAlgorithms(cb xssh.HostKeyCallback, addr string) []string {
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 22}
	var ke *knownhosts.KeyError
	if err := cb(addr, remote, probeKey()); !errors.As(err, &ke) || len(ke.Want) == 0 {
		return nil
	}
	var algos []string
	seen := map[string]bool{}
	add := func(a string) {
		if !seen[a] {
			seen[a] = true
			algos = append(algos, a)
		}
	}
	for _, w := range ke.Want {
		switch typ := w.Key.Type(); typ {
		case xssh.KeyAlgoRSA:
			add(xssh.KeyAlgoRSASHA512)
			add(xssh.KeyAlgoRSASHA256)
			add(xssh.KeyAlgoRSA)
		default:
			add(typ)
		}
	}
	return algos
}

// classifyHostKeyErr turns a knownhosts error into ErrHostKeyMismatch or
// ErrUnknownHostKey with instructions.
func classifyHostKeyErr(t *Target, files []string, hint string, removeHint map[string]string, key xssh.PublicKey, err error) error {
	if err == nil {
		return nil
	}
	addr := t.addr()
	norm := knownhosts.Normalize(addr)
	presented := key.Type() + " " + xssh.FingerprintSHA256(key)
	if c, ok := key.(*xssh.Certificate); ok {
		presented = fmt.Sprintf("%s %s, in a certificate of CA %s that no @cert-authority line trusts for it",
			c.Key.Type(), xssh.FingerprintSHA256(c.Key), xssh.FingerprintSHA256(c.SignatureKey))
	}
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	var ce *hostCertError
	switch {
	case errors.As(err, &ce):
		return targetErr(t, ErrHostKeyMismatch, nil, "host key for %s refused: %s", addr, ce.msg)
	case errors.As(err, &re):
		return targetErr(t, ErrHostKeyMismatch, nil,
			"host key for %s (%s) is marked @revoked in %s line %d: refusing to connect; the host must get a new key",
			addr, presented, re.Revoked.Filename, re.Revoked.Line)
	case errors.As(err, &ke) && len(ke.Want) > 0:
		w := ke.Want[0]
		if h, ok := removeHint[w.Filename]; ok {
			return targetErr(t, ErrHostKeyMismatch, nil,
				"host key for %s does not match known_hosts (%s has %s %s; the host presented %s): "+
					"the host's key changed or this is not the host you expect; if the change is legitimate, %s",
				addr, w.Filename, w.Key.Type(), xssh.FingerprintSHA256(w.Key), presented, h)
		}
		return targetErr(t, ErrHostKeyMismatch, nil,
			"host key for %s does not match known_hosts file %s (line %d has %s %s; the host presented %s): "+
				"the host's key changed or this is not the host you expect; if the change is legitimate, "+
				"remove the old line (ssh-keygen -R '%s' -f %s) and connect again",
			addr, w.Filename, w.Line, w.Key.Type(), xssh.FingerprintSHA256(w.Key), presented, norm, w.Filename)
	case errors.As(err, &ke) && hint != "":
		return targetErr(t, ErrUnknownHostKey, nil,
			"host key for %s (%s) is not in known_hosts (%s): verify the fingerprint out of band, then %s",
			addr, presented, strings.Join(files, ", "), hint)
	case errors.As(err, &ke):
		host, port, _ := net.SplitHostPort(addr)
		return targetErr(t, ErrUnknownHostKey, nil,
			"host key for %s (%s) is not in known_hosts (%s): verify the fingerprint out of band, then add it "+
				"(ssh-keyscan -p %s %s >> %s) or use the AcceptNewHostKey policy to trust it on first use",
			addr, presented, strings.Join(files, ", "), port, host, files[0])
	case errors.Is(err, ErrHostKeyMismatch), errors.Is(err, ErrUnknownHostKey):
		return err
	default:
		return targetErr(t, ErrUnknownHostKey, err, "cannot verify host key for %s", addr)
	}
}

// appendKnownHost records key for addr in file unless a line for addr has
// appeared meanwhile; the file is locked while it is re-read and appended.
// It returns nil when the key is (now) recorded, or the knownhosts error
// when another writer recorded a different key.
func appendKnownHost(file, addr string, remote net.Addr, key xssh.PublicKey) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return fmt.Errorf("accept-new: create directory for %s: %w", file, err)
	}
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("accept-new: open %s: %w", file, err)
	}
	defer f.Close()
	unlock, err := lockFile(f)
	if err != nil {
		return fmt.Errorf("accept-new: lock %s: %w", file, err)
	}
	defer unlock()

	content, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("accept-new: read %s: %w", file, err)
	}
	db, err := knownhosts.New(file)
	if err == nil {
		err = db(addr, remote, key)
		var ke *knownhosts.KeyError
		if !errors.As(err, &ke) || len(ke.Want) > 0 {
			return err // recorded meanwhile (nil), a mismatch or revoked
		}
	} else if len(bytes.TrimSpace(content)) > 0 {
		return fmt.Errorf("accept-new: parse %s: %w", file, err)
	}
	var buf bytes.Buffer
	if len(content) > 0 && content[len(content)-1] != '\n' {
		buf.WriteByte('\n')
	}
	buf.WriteString(knownhosts.Line([]string{addr}, key))
	buf.WriteByte('\n')
	if _, err := f.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("accept-new: write %s: %w", file, err)
	}
	return f.Sync()
}
