package ssh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// KnownHostsSource holds known_hosts lines somewhere other than a file on
// this host: rediacc keeps each machine's host keys in its store, so that
// a worker on any host verifies the machine against the same lines. The
// lines are OpenSSH known_hosts lines (hashed names, @cert-authority and
// @revoked markers included) and are checked exactly as a file's would be.
type KnownHostsSource interface {
	// KnownHosts returns the lines (newline-separated; may be empty).
	KnownHosts(ctx context.Context) ([]byte, error)
	// AcceptNew records line — a host's key met on first contact, as
	// knownhosts.Line writes it — unless the source already holds a line
	// for the host (another process may have recorded one since
	// KnownHosts), and returns the lines it holds now. It is called by
	// AcceptNewHostKeyFrom policies only.
	AcceptNew(ctx context.Context, line string) ([]byte, error)
	// String names the source in messages (e.g. "the store's host keys of
	// machine web-1").
	String() string
}

// KnownHostsFrom returns a strict policy over the lines src holds, and
// those of files when given (no file by default: not even
// ~/.ssh/known_hosts). Errors as KnownHosts: ErrUnknownHostKey when no
// line names the host, ErrHostKeyMismatch when lines name it but none has
// the presented key (or the key is @revoked); a source that cannot be read
// fails the dial with ErrUnknownHostKey wrapping its error.
func KnownHostsFrom(src KnownHostsSource, files ...string) HostKeyPolicy {
	return HostKeyPolicy{mode: modeKnownHosts, files: append([]string(nil), files...), src: src}
}

// AcceptNewHostKeyFrom returns a trust-on-first-use policy over the lines
// src holds: a host with no line there has its key recorded in src
// (KnownHostsSource.AcceptNew: the first key recorded wins when workers
// race); a host whose recorded key differs is refused with
// ErrHostKeyMismatch, as by KnownHostsFrom. Equivalent to OpenSSH's
// StrictHostKeyChecking=accept-new.
//
// Lines of files, when given, are checked too (a host they name is not
// trusted on first use) but never written.
func AcceptNewHostKeyFrom(src KnownHostsSource, files ...string) HostKeyPolicy {
	return HostKeyPolicy{mode: modeAcceptNew, src: src, files: append([]string(nil), files...)}
}

// AddHinter is implemented by sources that can say how a key is added to
// them (a command to run); the hint ends the ErrUnknownHostKey message.
type AddHinter interface {
	AddHint(addr string) string
}

// addHint is how to add a key for addr to the policy's source ("" for
// file-only policies, whose message names ssh-keyscan).
func (p HostKeyPolicy) addHint(addr string) string {
	if p.src == nil {
		return ""
	}
	if h, ok := p.src.(AddHinter); ok {
		return h.AddHint(addr)
	}
	return "add it to " + p.src.String() + ", or use the accept-new policy to trust it on first use"
}

// removeHint maps the source's name to how a line is removed from it (nil
// when the source gives no hint).
func (p HostKeyPolicy) removeHint(addr string) map[string]string {
	if h, ok := p.src.(RemoveHinter); ok {
		return map[string]string{p.src.String(): h.RemoveHint(addr)}
	}
	return nil
}

// knownHostsText is known_hosts content with the name messages give it.
type knownHostsText struct {
	name    string
	content []byte
}

// sourceTexts reads the policy's source, if any.
func (p HostKeyPolicy) sourceTexts(ctx context.Context, t *Target) ([]knownHostsText, error) {
	if p.src == nil {
		return nil, nil
	}
	b, err := p.src.KnownHosts(ctx)
	if err != nil {
		return nil, targetErr(t, ErrUnknownHostKey, err, "cannot read the known hosts of %s", p.src)
	}
	return []knownHostsText{{name: p.src.String(), content: b}}, nil
}

// knownHostsCallback builds x/crypto's knownhosts callback from the
// existing files among files and from texts (read through pipes, so that
// nothing is written to disk), and returns the names to show for the
// texts' paths in errors.
func knownHostsCallback(files []string, texts []knownHostsText) (xssh.HostKeyCallback, map[string]string, error) {
	existing, err := existingFiles(files)
	if err != nil {
		return nil, nil, err
	}
	var nonEmpty []knownHostsText
	for _, t := range texts {
		if len(strings.TrimSpace(string(t.content))) > 0 {
			nonEmpty = append(nonEmpty, t)
		}
	}
	if len(existing) == 0 && len(nonEmpty) == 0 {
		return func(string, net.Addr, xssh.PublicKey) error { return &knownhosts.KeyError{} }, nil, nil
	}
	if len(nonEmpty) == 0 {
		cb, err := knownhosts.New(existing...)
		return cb, nil, err
	}
	return knownHostsFromTexts(existing, nonEmpty)
}

// renameKnownKeys replaces the pipe paths in a knownhosts error's keys by
// the names of their texts.
func renameKnownKeys(err error, names map[string]string) error {
	if len(names) == 0 || err == nil {
		return err
	}
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	switch {
	case errors.As(err, &ke):
		out := &knownhosts.KeyError{Want: append([]knownhosts.KnownKey(nil), ke.Want...)}
		for i, w := range out.Want {
			if n, ok := names[w.Filename]; ok {
				out.Want[i].Filename = n
			}
		}
		return out
	case errors.As(err, &re):
		out := &knownhosts.RevokedError{Revoked: re.Revoked}
		if n, ok := names[re.Revoked.Filename]; ok {
			out.Revoked.Filename = n
		}
		return out
	}
	return err
}

// acceptNewInSource records key for addr in the policy's source and checks
// the presented key against the lines the source holds afterwards (another
// process may have recorded a different key first).
func (p HostKeyPolicy) acceptNewInSource(ctx context.Context, addr string, remote net.Addr, key xssh.PublicKey) error {
	b, err := p.src.AcceptNew(ctx, knownhosts.Line([]string{addr}, key))
	if err != nil {
		return fmt.Errorf("accept-new: recording the host key in %s: %w", p.src, err)
	}
	cb, names, err := knownHostsCallback(nil, []knownHostsText{{name: p.src.String(), content: b}})
	if err != nil {
		return fmt.Errorf("accept-new: %s: %w", p.src, err)
	}
	return renameKnownKeys(cb(addr, remote, key), names)
}

// existingFiles returns the files among files that exist (missing ones
// count as empty); a directory is an error.
func existingFiles(files []string) ([]string, error) {
	var existing []string
	for _, f := range files {
		st, err := os.Stat(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if st.IsDir() {
			return nil, fmt.Errorf("%s is a directory", f)
		}
		existing = append(existing, f)
	}
	return existing, nil
}

// RemoveHinter is implemented by sources that can say how a host's line
// is removed from them (a command to run); the hint ends the
// ErrHostKeyMismatch message when the mismatching line is the source's.
type RemoveHinter interface {
	RemoveHint(addr string) string
}

// KnownHostsLines returns the lines of content (OpenSSH known_hosts text)
// that give a key for addr ("host:port", or a host meaning port 22),
// hashed names and patterns included, in their order, exactly as x/crypto's
// knownhosts matches them. @cert-authority and @revoked lines are not host
// keys and are not returned. An error when content does not parse (it
// names the line).
func KnownHostsLines(content []byte, addr string) ([]string, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, "22")
	}
	cb, _, err := knownHostsCallback(nil, []knownHostsText{{name: "known_hosts text", content: content}})
	if err != nil {
		return nil, err
	}
	var ke *knownhosts.KeyError
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 22}
	if err := cb(addr, remote, probeKey()); !errors.As(err, &ke) || len(ke.Want) == 0 {
		return nil, nil
	}
	all := strings.Split(string(content), "\n")
	var out []string
	for _, w := range ke.Want {
		if w.Line >= 1 && w.Line <= len(all) {
			out = append(out, strings.TrimSpace(all[w.Line-1]))
		}
	}
	return out, nil
}

// KnownHostsLineAddr returns the address ("host:port") a line written by
// knownhosts.Line for one address is about.
func KnownHostsLineAddr(line string) (string, error) {
	f := strings.Fields(line)
	if len(f) < 3 || strings.HasPrefix(f[0], "@") || strings.HasPrefix(f[0], "|") || strings.ContainsAny(f[0], ",*?!") {
		return "", fmt.Errorf("not a known_hosts line for one plain address: %q", line)
	}
	h := f[0]
	if strings.HasPrefix(h, "[") {
		host, port, err := net.SplitHostPort(h)
		if err != nil {
			return "", fmt.Errorf("known_hosts address %q: %w", h, err)
		}
		return net.JoinHostPort(host, port), nil
	}
	return net.JoinHostPort(h, "22"), nil
}
