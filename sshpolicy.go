package rediacc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/rediacc/rediacc/internal/authz"
	rssh "github.com/rediacc/rediacc/ssh"
)

// SSHAlgorithms are the SSH algorithms (OpenSSH names) a machine's
// connections may use: key exchanges, ciphers, MACs, host key and
// signature algorithms. See ssh.Algorithms, ssh.DefaultAlgorithms (OpenSSH
// 9's defaults without SHA-1) and ssh.LegacyAlgorithms.
type SSHAlgorithms = rssh.Algorithms

// ErrAlgorithmNegotiation: a machine's sshd and this client share no
// algorithm of one kind; an old sshd offering only SHA-1 or CBC algorithms
// needs Machine.LegacyAlgorithms. Never retried.
var ErrAlgorithmNegotiation = rssh.ErrAlgorithmNegotiation

// sshAlgorithms returns the algorithms m's connections may use: the
// defaults, or the legacy sets with LegacyAlgorithms, each replaced by the
// matching non-empty list of m.Algorithms.
func (m Machine) sshAlgorithms() rssh.Algorithms {
	a := rssh.DefaultAlgorithms()
	if m.LegacyAlgorithms {
		a = rssh.LegacyAlgorithms()
	}
	over := func(dst *[]string, src []string) {
		if len(src) > 0 {
			*dst = slices.Clone(src)
		}
	}
	over(&a.KeyExchanges, m.Algorithms.KeyExchanges)
	over(&a.Ciphers, m.Algorithms.Ciphers)
	over(&a.MACs, m.Algorithms.MACs)
	over(&a.HostKeys, m.Algorithms.HostKeys)
	over(&a.PublicKeyAuths, m.Algorithms.PublicKeyAuths)
	return a
}

// normalizeSSH validates the SSH settings of m (called by normalize): the
// pinned agent key (which implies UseAgent) and the algorithm names.
func (m *Machine) normalizeSSH() error {
	if m.AgentKey != "" {
		if !rssh.ValidFingerprint(m.AgentKey) {
			return fmt.Errorf("agent key %s is not a SHA256 fingerprint (SHA256: and 43 base64 characters, as ssh-add -l prints it)", quoteInput(m.AgentKey))
		}
		m.UseAgent = true
	}
	if err := m.Algorithms.Validate(); err != nil {
		return fmt.Errorf("algorithms: %v", strings.TrimPrefix(err.Error(), "ssh: "))
	}
	return nil
}

// defaultKnownHosts is the known_hosts file a machine without one uses:
// that of this process's user.
func defaultKnownHosts() string { return filepath.Join(homeDir(), ".ssh", "known_hosts") }

// checkSSHPaths enforces who may name the files a machine makes this
// process read or write: its identity file (read when the machine is
// added, to import the key or check it, and, when not imported, by every
// worker) and its known_hosts file (read by every worker, appended to under
// HostKeyAcceptNew). Owners may name any path; anyone else only paths
// under Config.AllowedKeyPaths and Config.AllowedKnownHostsPaths (by
// default: no identity file, to be imported from the vault instead of
// read from disk, and only this process's user's ~/.ssh/known_hosts).
// Paths are compared after resolving symbolic links, so a link in an
// allowed directory does not lead out of it. The denial is audited and
// returned as ErrPermissionDenied.
func (c *Client) checkSSHPaths(ctx context.Context, o *op, g authz.Grants, m Machine) error {
	if slices.Contains(g.StoreRoles, authz.Owner) {
		return nil
	}
	if m.IdentityFile != "" && !pathAllowed(m.IdentityFile, c.cfg.AllowedKeyPaths) {
		return c.deny(ctx, o, fmt.Sprintf("identity file %s is outside Config.AllowedKeyPaths %s: this process would read it for you; "+
			"only an owner may name such a path (ask one to add the machine or to allow the directory), or import the key into the team vault from a path that is allowed",
			m.IdentityFile, describePaths(c.cfg.AllowedKeyPaths)))
	}
	allowedKH := c.cfg.AllowedKnownHostsPaths
	if allowedKH == nil {
		allowedKH = []string{defaultKnownHosts()}
	}
	if m.KnownHostsFile != "" && !pathAllowed(m.KnownHostsFile, allowedKH) {
		return c.deny(ctx, o, fmt.Sprintf("known_hosts file %s is outside Config.AllowedKnownHostsPaths %s: the workers would read it (and append to it under accept-new); "+
			"use the default (%s) or ask an owner", m.KnownHostsFile, describePaths(allowedKH), defaultKnownHosts()))
	}
	return nil
}

func describePaths(ps []string) string {
	if len(ps) == 0 {
		return "(none)"
	}
	return "[" + strings.Join(ps, ", ") + "]"
}

// pathAllowed reports whether p (absolute) is one of allowed or lies below
// one of them, comparing paths with their symbolic links resolved ("/"
// allows everything).
func pathAllowed(p string, allowed []string) bool {
	real := resolvePath(p)
	for _, a := range allowed {
		if a == "" {
			continue
		}
		abs, err := filepath.Abs(a)
		if err != nil {
			continue
		}
		ra := resolvePath(abs)
		if ra == string(filepath.Separator) || real == ra || strings.HasPrefix(real, ra+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// resolvePath returns p with symbolic links resolved in its longest
// existing prefix (a file that does not exist yet resolves through its
// directory).
func resolvePath(p string) string {
	p = filepath.Clean(p)
	var rest []string
	for cur := p; ; {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(append([]string{r}, rest...)...)
		} else if !errors.Is(err, os.ErrNotExist) {
			return p
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return p
		}
		rest = append([]string{filepath.Base(cur)}, rest...)
		cur = parent
	}
}
