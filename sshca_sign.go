package rediacc

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/vault"
	"github.com/rediacc/rediacc/internal/vault/hashicorp"
	rssh "github.com/rediacc/rediacc/ssh"
)

// Signing certificates for machines with Auth AuthSSHCA, and the audit of
// what was signed.

// CertAuditWindow is how long a client aggregates the certificates it
// signs into one cert.sign audit record per actor, team, CA and outcome.
//
// Aggregated, not sampled: every certificate is counted, with the
// machines it was for, the first and last signing time and, for CA keys
// in the vault, the range of serial numbers (a client numbers its
// certificates consecutively from a random start), so any login sshd logs
// (key ID and serial) maps to exactly one record; a sample would leave
// most logins without one. One record per connection would grow the trail
// with the connection rate instead of with the operations people perform.
// A window's record is written when a later certificate falls outside it
// and when the Client closes; a process killed before that loses the
// window's record (sshd's log, and Vault's audit device for SSHCAVaultSSH,
// still hold every login).
const CertAuditWindow = 10 * time.Minute

// caClientState is a Client's SSH CA state (sshca.go, sshca_sign.go).
type caClientState struct {
	hosts      hostCACache
	keys       caKeyCache
	serial     atomic.Uint64
	serialOnce sync.Once
	audit      certAudit
}

// caKeyCache holds the parsed CA keys a client signs with, by team and CA.
type caKeyCache struct {
	mu sync.Mutex
	m  map[string]gossh.Signer
}

func (k *caKeyCache) get(team, id string) gossh.Signer {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.m[team+"\x00"+id]
}

func (k *caKeyCache) put(team, id string, s gossh.Signer) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[string]gossh.Signer{}
	}
	k.m[team+"\x00"+id] = s
}

func (k *caKeyCache) drop(team, id string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.m, team+"\x00"+id)
}

// nextSerial numbers the client's certificates consecutively from a
// random start.
func (c *Client) nextSerial() uint64 {
	c.ca.serialOnce.Do(func() {
		var b [8]byte
		_, _ = rand.Read(b[:])
		c.ca.serial.Store(binary.BigEndian.Uint64(b[:]) >> 2) // room to count up
	})
	return c.ca.serial.Add(1)
}

// certSigner certifies the ephemeral keys of one machine's connections.
type certSigner struct {
	c       *Client
	m       Machine
	purpose string // "task=ID", "probe=health", "probe=ca"
	ca      *SSHCA // the CA to use (probes); nil: the team's signing CA for m
}

var _ rssh.CertSigner = (*certSigner)(nil)

// teamSSH completes m's target t with its team's SSH CAs: certificates of
// the team CA as credentials, for purpose (named in the key ID), when m
// logs in with certificates; the team's host CAs (SetSSHHostCAs) beside
// its known_hosts.
func (c *Client) teamSSH(ctx context.Context, t *rssh.Target, m Machine, purpose string) {
	if m.Auth == AuthSSHCA {
		t.Auth = []rssh.Auth{rssh.Certificate(&certSigner{c: c, m: m, purpose: purpose}, c.clock.Now)}
	}
	if cas := c.ca.hosts.get(ctx, c, caScope(m)); len(cas) > 0 {
		t.HostKey = t.HostKey.WithHostCAs(cas...)
	}
}

// hostCACacheTTL is how long a client reuses a team's host CAs before
// reading them from the vault again (a change by another process takes
// effect within it; by this client, at once).
const hostCACacheTTL = 10 * time.Second

// hostCACache holds teams' host CAs, parsed.
type hostCACache struct {
	mu sync.Mutex
	m  map[string]hostCAs
}

type hostCAs struct {
	at   time.Time
	keys []gossh.PublicKey
}

func (h *hostCACache) get(ctx context.Context, c *Client, sc scope) []gossh.PublicKey {
	team := sc.id
	h.mu.Lock()
	e, ok := h.m[team]
	h.mu.Unlock()
	if ok && time.Since(e.at) < hostCACacheTTL {
		return e.keys
	}
	e = hostCAs{at: time.Now()}
	if v, err := c.vault(); err == nil {
		lines, err := c.hostCAs(ctx, v, sc)
		if err != nil { // cached too: one warning per hostCACacheTTL
			c.log.WarnContext(ctx, "reading the team's host CAs failed", "team", sc.label(), "error", err)
		}
		for _, l := range lines {
			if k, _, _, _, err := gossh.ParseAuthorizedKey([]byte(l)); err == nil {
				e.keys = append(e.keys, k)
			}
		}
	}
	h.mu.Lock()
	if h.m == nil {
		h.m = map[string]hostCAs{}
	}
	h.m[team] = e
	h.mu.Unlock()
	return e.keys
}

func (h *hostCACache) drop(team string) {
	h.mu.Lock()
	delete(h.m, team)
	h.mu.Unlock()
}

// SignCert implements rssh.CertSigner.
func (s *certSigner) SignCert(ctx context.Context, req rssh.CertRequest) (*gossh.Certificate, error) {
	c, m := s.c, s.m
	v, err := c.vault()
	if err != nil {
		return nil, fmt.Errorf("%w: machine %s signs with its team's SSH CA: %v", rssh.ErrCertificate, m.Name, err)
	}
	st, err := c.loadCA(ctx, v, caScope(m))
	if err != nil {
		return nil, caSignErr(m, err)
	}
	ca := st.signingCA(m)
	if s.ca != nil {
		ca = s.ca
	}
	keyID := fmt.Sprintf("rediacc worker=%s %s machine=%s", c.id, s.purpose, m.Name)
	if req.ClockProbe {
		keyID += " clock-probe"
	}
	ext := map[string]string{}
	for _, e := range m.CertExtensions {
		ext[e] = ""
	}
	var cert *gossh.Certificate
	switch ca.Kind {
	case SSHCAKey:
		var signer gossh.Signer
		if signer, err = c.caSigner(ctx, v, caScope(m), ca); err == nil {
			a := &rssh.CertAuthority{Signer: signer, TTL: st.CertTTL, Extensions: ext, Now: c.clock.Now, Serial: c.nextSerial,
				KeyID: func(rssh.CertRequest) string { return keyID }}
			cert, err = a.SignCert(ctx, req)
		}
	case SSHCAVaultSSH:
		cert, err = c.vaultSign(ctx, v, ca, st.CertTTL, req, keyID, ext)
	default:
		err = fmt.Errorf("%w: CA %s of team %q has the unknown kind %q", ErrCorruptStore, ca.ID, m.Team, ca.Kind)
	}
	if err != nil {
		err = caSignErr(m, err)
	}
	c.ca.audit.add(c, ctx, m, *ca, cert, st.CertTTL, err)
	return cert, err
}

// caSignErr wraps a signing failure as rssh.ErrCertificate naming the
// machine; an unreachable Vault is retryable (rssh.ErrConnect).
func caSignErr(m Machine, err error) error {
	if errors.Is(err, rssh.ErrCertificate) {
		return err
	}
	if errors.Is(err, vault.ErrUnavailable) {
		return &multiErr{msg: fmt.Sprintf("machine %s: team %q's SSH CA: %v", m.Name, m.Team, err), errs: []error{rssh.ErrCertificate, rssh.ErrConnect, err}}
	}
	return &multiErr{msg: fmt.Sprintf("machine %s: team %q's SSH CA: %v", m.Name, m.Team, err), errs: []error{rssh.ErrCertificate, err}}
}

// multiErr is an error with a message of its own wrapping several errors.
type multiErr struct {
	msg  string
	errs []error
}

func (e *multiErr) Error() string   { return e.msg }
func (e *multiErr) Unwrap() []error { return e.errs }

// caSigner returns the parsed key of a CA kept in the vault (cached).
func (c *Client) caSigner(ctx context.Context, v Vault, sc scope, ca *SSHCA) (gossh.Signer, error) {
	team := sc.label()
	if s := c.ca.keys.get(sc.id, ca.ID); s != nil {
		return s, nil
	}
	sec, err := v.Get(ctx, sc.id, SSHCASecretPrefix+ca.ID+"/key")
	if errors.Is(err, vault.ErrSecretNotFound) {
		return nil, fmt.Errorf("%w: the key of CA %s (%s) is missing from team %q's vault: restore the vault, or start over (rediacc team ssh-ca rotate %s)", ErrCorruptStore, ca.ID, ca.Fingerprint, team, team)
	}
	if err != nil {
		return nil, vaultErr(err)
	}
	defer clear(sec.Value)
	s, err := gossh.ParsePrivateKey(sec.Value)
	if err != nil {
		return nil, fmt.Errorf("%w: the key of CA %s in team %q's vault does not parse: %v", ErrCorruptStore, ca.ID, team, err)
	}
	if fp := gossh.FingerprintSHA256(s.PublicKey()); fp != ca.Fingerprint {
		return nil, fmt.Errorf("%w: the key of CA %s in team %q's vault is %s, not %s", ErrCorruptStore, ca.ID, team, fp, ca.Fingerprint)
	}
	c.ca.keys.put(sc.id, ca.ID, s)
	return s, nil
}

// vaultSign has HashiCorp Vault's SSH engine sign req.Key and checks that
// the certificate is what was asked for: the team's CA, the login user as
// the only principal, no extension or critical option beyond those asked,
// no longer than ttl.
func (c *Client) vaultSign(ctx context.Context, v Vault, ca *SSHCA, ttl time.Duration, req rssh.CertRequest, keyID string, ext map[string]string) (*gossh.Certificate, error) {
	eng, ok := v.(sshEngine)
	if !ok {
		return nil, fmt.Errorf("%w: CA %s is HashiCorp Vault's SSH engine at %s, but this client's vault is %T: configure the HashiCorp vault (--vault-backend hashicorp)", ErrInvalidArgument, ca.ID, ca.Mount, v)
	}
	sr := hashicorp.SSHSignRequest{Mount: ca.Mount, Role: ca.Role, PublicKey: string(gossh.MarshalAuthorizedKey(req.Key)),
		ValidPrincipals: req.User, TTL: ttl, KeyID: keyID, Extensions: ext}
	var opts map[string]string
	if req.ClockProbe {
		sr.TTL, sr.Extensions = 0, nil
		opts = map[string]string{"force-command": rssh.ClockProbeCommand}
		sr.CriticalOptions = opts
	}
	line, err := eng.SSHSign(ctx, sr)
	if err != nil {
		if strings.Contains(err.Error(), "key_id") {
			err = fmt.Errorf("%v (the role must allow key IDs: vault write %s/roles/%s allow_user_key_ids=true)", err, ca.Mount, ca.Role)
		}
		return nil, vaultErr(err)
	}
	pk, _, _, _, err := gossh.ParseAuthorizedKey([]byte(line))
	cert, ok := pk.(*gossh.Certificate)
	if err != nil || !ok {
		return nil, fmt.Errorf("Vault's SSH engine at %s returned no certificate (%v)", ca.Mount, err)
	}
	where := fmt.Sprintf("Vault role %s/roles/%s", ca.Mount, ca.Role)
	if fp := gossh.FingerprintSHA256(cert.SignatureKey); fp != ca.Fingerprint {
		return nil, fmt.Errorf("%s signed with CA %s, not the team's CA %s: the engine's CA key was replaced; rotate the team's CA (rediacc team ssh-ca rotate)", where, fp, ca.Fingerprint)
	}
	if !slices.Equal(cert.ValidPrincipals, []string{req.User}) {
		return nil, fmt.Errorf("%s signed for the principals [%s], not only %q: fix the role (allowed_users, default_user)", where, strings.Join(cert.ValidPrincipals, ", "), req.User)
	}
	if extra := beyond(cert.Extensions, ext); len(extra) > 0 {
		return nil, fmt.Errorf("%s adds the extensions %s that the machine did not ask for (its default_extensions): set default_extensions='{}' on the role, or list them on the machine (Machine.CertExtensions)", where, strings.Join(extra, ", "))
	}
	if extra := beyond(cert.CriticalOptions, opts); len(extra) > 0 {
		return nil, fmt.Errorf("%s adds the critical options %s that were not asked for: fix the role (default_critical_options)", where, strings.Join(extra, ", "))
	}
	// Vault dates certificates by its own clock: compare the length of the
	// validity (the role's not_before_duration back-dates it).
	if span := time.Duration(cert.ValidBefore-cert.ValidAfter) * time.Second; !req.ClockProbe && (cert.ValidBefore < cert.ValidAfter || span > ttl+5*time.Minute) {
		return nil, fmt.Errorf("%s signed a certificate valid for %s, beyond the team's certificate TTL of %s (and 5 min of back-dating)", where, span, ttl)
	}
	return cert, nil
}

// beyond returns the keys of got that want lacks, sorted.
func beyond(got, want map[string]string) []string {
	var out []string
	for k := range got {
		if _, ok := want[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// probeCA logs in to m with a certificate of ca, on a connection of its
// own, and returns nil when m accepted it (the refusal's diagnosis
// otherwise: *rssh.CertRejectedError).
func (c *Client) probeCA(ctx context.Context, m Machine, ca SSHCA) error {
	ctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	t := m.target(nil, nil)
	c.teamSSH(ctx, &t, m, "probe=ca")
	t.Auth = []rssh.Auth{rssh.Certificate(&certSigner{c: c, m: m, purpose: "probe=ca", ca: &ca}, c.clock.Now)}
	cfg := c.cfg.SSH
	if cfg.Logger == nil {
		cfg.Logger = c.log
	}
	p := rssh.NewPool(cfg)
	defer p.Close()
	_, err := p.Run(ctx, t, rssh.Command{Cmd: "true", Timeout: ProbeTimeout})
	return err
}

// checkMachineCAs runs after a health probe of m (health.go): a
// certificate refusal of the probe is recorded against its CA, and each
// CA of the team that m was never probed with, or refused more than
// caRecheckInterval ago, is tried with a login of its own, so that the
// next CA signs for m as soon as m trusts it and MachineStatus shows which
// CA each machine trusts.
func (c *Client) checkMachineCAs(ctx context.Context, m Machine, perr error) {
	if m.Auth != AuthSSHCA || ctx.Err() != nil {
		return
	}
	v, err := c.vault()
	if err != nil {
		return
	}
	st, err := c.loadCA(ctx, v, caScope(m))
	if err != nil {
		return
	}
	var rej *rssh.CertRejectedError
	// A revoked certificate says nothing against its CA: sshd accepted the
	// CA's probe certificate (rssh.CertRevoked).
	if errors.As(perr, &rej) && rej.Reason != rssh.CertRevoked {
		for _, ca := range st.CAs {
			if ca.Fingerprint == rej.CA && ca.State != SSHCARetired {
				c.logCheckErr(ctx, m, ca, c.recordCheck(ctx, v, caScope(m), m, ca.ID, perr))
			}
		}
		if st, err = c.loadCA(ctx, v, caScope(m)); err != nil {
			return
		}
	}
	now := c.clock.Now()
	for _, ca := range st.CAs {
		if ca.State == SSHCARetired {
			continue
		}
		ck, had := st.Checks[caMachineKey(m)][ca.ID]
		if had && (ck.OK || now.Sub(ck.At) < caRecheckInterval) {
			continue
		}
		err := c.probeCA(ctx, m, ca)
		if ctx.Err() != nil {
			return
		}
		c.logCheckErr(ctx, m, ca, c.recordCheck(ctx, v, caScope(m), m, ca.ID, err))
	}
}

func (c *Client) logCheckErr(ctx context.Context, m Machine, ca SSHCA, err error) {
	if err != nil {
		c.log.WarnContext(ctx, "recording which SSH CA a machine trusts failed", "machine", m.Name, "team", m.Team, "ca", ca.ID, "error", err)
	}
}

// machineCAChecks returns the checks of m against its team's active and
// next CAs, for MachineStatus; states caches the teams' CA states.
func (c *Client) machineCAChecks(ctx context.Context, m Machine, states map[string]*caState) []SSHCACheck {
	if m.Auth != AuthSSHCA {
		return nil
	}
	st, ok := states[m.TeamID]
	if !ok {
		if v, err := c.vault(); err == nil {
			st, _ = c.loadCA(ctx, v, caScope(m))
		}
		states[m.TeamID] = st
	}
	if st == nil {
		return []SSHCACheck{{Error: "the team has no SSH CA"}}
	}
	var out []SSHCACheck
	for _, ca := range st.public(m.Team, nil).CAs {
		if ca.State == SSHCARetired {
			continue
		}
		ck := st.Checks[caMachineKey(m)][ca.ID]
		out = append(out, SSHCACheck{CA: ca.ID, Fingerprint: ca.Fingerprint, State: ca.State, Trusted: ck.OK, CheckedAt: ck.At, Error: ck.Error})
	}
	return out
}

// certAudit aggregates signed certificates into cert.sign records (see
// CertAuditWindow).
type certAudit struct {
	mu     sync.Mutex
	groups map[certGroupKey]*certGroup
}

type certGroupKey struct{ actor, team, ca, err string }

type certGroup struct {
	ca                   SSHCA
	ttl                  time.Duration
	start, last          time.Time
	count                int
	serialMin, serialMax uint64
	machines             map[string]int
}

// add counts one signature (cert nil when it failed with err).
func (a *certAudit) add(c *Client, ctx context.Context, m Machine, ca SSHCA, cert *gossh.Certificate, ttl time.Duration, err error) {
	actor, _ := ActorFrom(ctx)
	if actor == "" {
		actor = c.workerActor
	}
	if actor == "" {
		actor = "worker:" + c.id
	}
	k := certGroupKey{actor: actor, team: m.TeamID, ca: ca.ID} // audit records name teams by id
	if err != nil {
		k.err = trimErr(err)
	}
	now := c.clock.Now().UTC()
	a.mu.Lock()
	var out []audit.Record
	g := a.groups[k]
	if g != nil && now.Sub(g.start) >= CertAuditWindow {
		out = append(out, g.record(c, k))
		g = nil
	}
	if g == nil {
		if a.groups == nil {
			a.groups = map[certGroupKey]*certGroup{}
		}
		g = &certGroup{ca: ca, ttl: ttl, start: now, machines: map[string]int{}}
		a.groups[k] = g
	}
	g.count++
	g.last = now
	g.machines[m.Name]++
	if cert != nil && ca.Kind == SSHCAKey {
		if g.serialMin == 0 || cert.Serial < g.serialMin {
			g.serialMin = cert.Serial
		}
		g.serialMax = max(g.serialMax, cert.Serial)
	}
	a.mu.Unlock()
	if len(out) > 0 {
		c.appendAudit(ctx, out...)
	}
}

// flush writes every open window's record (Client.Close).
func (a *certAudit) flush(c *Client, ctx context.Context) {
	a.mu.Lock()
	var out []audit.Record
	for _, k := range slices.SortedFunc(maps.Keys(a.groups), func(x, y certGroupKey) int {
		return strings.Compare(x.team+x.ca+x.actor+x.err, y.team+y.ca+y.actor+y.err)
	}) {
		out = append(out, a.groups[k].record(c, k))
	}
	a.groups = nil
	a.mu.Unlock()
	if len(out) > 0 {
		c.appendAudit(ctx, out...)
	}
}

// record is the cert.sign record of a window.
func (g *certGroup) record(c *Client, k certGroupKey) audit.Record {
	var ms []string
	for _, name := range slices.Sorted(maps.Keys(g.machines)) {
		ms = append(ms, name+":"+strconv.Itoa(g.machines[name]))
	}
	d := map[string]string{
		"count": strconv.Itoa(g.count), "machines": strings.Join(ms, " "), "fingerprint": g.ca.Fingerprint,
		"first": g.start.Format(time.RFC3339Nano), "last": g.last.Format(time.RFC3339Nano),
		"ttl": g.ttl.String(), "worker": c.id, "kind": string(g.ca.Kind),
	}
	if g.serialMax != 0 {
		d["serials"] = strconv.FormatUint(g.serialMin, 10) + "-" + strconv.FormatUint(g.serialMax, 10)
	}
	result := audit.ResultOK
	if k.err != "" {
		result, d["error"] = audit.ResultError, k.err
	}
	return audit.Record{Time: g.last, Actor: k.actor, Action: "cert.sign", EntityType: audit.EntitySSHCA,
		EntityID: g.ca.ID, Team: k.team, Result: result, Details: d}
}
