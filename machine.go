package rediacc

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	gossh "golang.org/x/crypto/ssh"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/store"
	rssh "github.com/rediacc/rediacc/ssh"
)

// HostKeyPolicy says how a machine's SSH host key is checked.
type HostKeyPolicy string

// Host-key policies. Only the one whose name says Insecure skips the check.
const (
	// HostKeyKnownHosts verifies the host key against the machine's host
	// keys in the store (copied from Machine.KnownHostsFile by AddMachine,
	// or by Client.ImportHostKeys; see hostkeys.go) and the lines of
	// KnownHostsFile where that file exists on the worker's host: an
	// unknown host gives ErrUnknownHostKey, a different key
	// ErrHostKeyMismatch. The default.
	HostKeyKnownHosts HostKeyPolicy = "known-hosts"
	// HostKeyAcceptNew trusts a host's key the first time it is seen and
	// records it in the store, where every worker on any host then verifies
	// against it (OpenSSH's StrictHostKeyChecking=accept-new; the first
	// worker to record a key wins, audited as machine.hostkeys.accept); a
	// later different key is still refused with ErrHostKeyMismatch.
	// KnownHostsFile is read, never written.
	HostKeyAcceptNew HostKeyPolicy = "accept-new"
	// HostKeyInsecureIgnore accepts any host key. It allows a
	// man-in-the-middle to read everything, secrets included: tests only.
	HostKeyInsecureIgnore HostKeyPolicy = "insecure-ignore"
)

// Machine is a host that runs tasks over SSH. ID is immutable; Name is
// unique among registered machines, and free again once the machine is
// removed (a new machine of that name gets a new id and inherits nothing:
// not its tasks' history, not its vault identity, not its pooled
// connections).
type Machine struct {
	// ID is the machine's immutable id, set by AddMachine (a UUID).
	ID string `json:"id,omitempty"`
	// Name identifies the machine in tasks: 1..63 characters of
	// [a-z0-9._-], starting with a letter or digit.
	Name string `json:"name"`
	// Team owns the machine (its name); "" means "default". TeamID is the
	// team's id, set on read.
	Team   string `json:"team,omitempty"`
	TeamID string `json:"teamId,omitempty"`
	// Host is a DNS name (at most 253 characters) or an IP address (IPv6
	// with or without brackets), without a port. Required.
	Host string `json:"host"`
	// Port defaults to 22; range 1..65535.
	Port int `json:"port"`
	// User defaults to the current OS user: 1..64 characters of letters,
	// digits, '.', '_', '-', '@', '\', '$'.
	User string `json:"user"`
	// IdentityFile is a private key file (OpenSSH, PKCS#1/#8 PEM), optionally
	// passphrase-protected (the passphrase comes from Config.KeyPassphrase,
	// never from the machine record). Empty with UseAgent: the ssh-agent.
	IdentityFile string `json:"identityFile,omitempty"`
	// IdentitySecret is the key, in the machine's team vault, of its private
	// key (PEM). Set by AddMachine when ImportIdentity is true; the queue
	// store then holds only this reference, never the key.
	IdentitySecret string `json:"identitySecret,omitempty"`
	// ImportIdentity makes AddMachine copy IdentityFile into the team vault
	// (under "machines/ID/identity", the machine's id) and keep only the
	// reference.
	ImportIdentity bool `json:"-"`
	// UseAgent authenticates with the keys of the ssh-agent at $SSH_AUTH_SOCK.
	UseAgent bool `json:"useAgent,omitempty"`
	// AgentKey pins the agent key offered to this machine by its SHA256
	// fingerprint ("SHA256:…", as ssh-add -l prints it): only that key is
	// offered, like OpenSSH's IdentitiesOnly, and a task fails with
	// ErrAuthFailed naming it when the agent lacks it. Setting it implies
	// UseAgent. Empty: every agent key is offered (each counts against the
	// server's MaxAuthTries, and the server learns them all).
	AgentKey string `json:"agentKey,omitempty"`
	// LegacyAlgorithms makes this machine's connections also offer the
	// weak algorithms an old sshd may offer alone (ssh.LegacyAlgorithms:
	// SHA-1 key exchanges and MACs, ssh-rsa SHA-1 host keys and
	// signatures, CBC ciphers), after the strong ones. WEAKER: set it only
	// for a host that fails with ErrAlgorithmNegotiation and cannot be
	// upgraded. Default: OpenSSH 9's defaults without SHA-1.
	LegacyAlgorithms bool `json:"legacyAlgorithms,omitempty"`
	// Algorithms replaces, per non-empty list, the algorithms this
	// machine's connections offer (OpenSSH names; AddMachine refuses a name
	// x/crypto/ssh does not implement).
	Algorithms SSHAlgorithms `json:"algorithms,omitzero"`
	// HostKeyPolicy defaults to HostKeyKnownHosts.
	HostKeyPolicy HostKeyPolicy `json:"hostKeyPolicy"`
	// KnownHostsFile defaults to ~/.ssh/known_hosts. AddMachine copies its
	// lines for the machine's address into the store; workers also read it
	// where it exists on their host.
	KnownHostsFile string `json:"knownHostsFile,omitempty"`
	// Auth is how the machine's connections authenticate: AuthKey
	// (IdentityFile), AuthAgent (UseAgent, AgentKey) or AuthSSHCA
	// (short-lived certificates of the team's SSH CA, sshca.go; the
	// machine then has no identity of its own). Empty: AuthKey with an
	// identity, AuthAgent with the agent.
	Auth MachineAuth `json:"auth,omitempty"`
	// CertExtensions are the certificate extensions an AuthSSHCA
	// machine's certificates carry (permit-pty, permit-port-forwarding,
	// permit-agent-forwarding, permit-X11-forwarding, permit-user-rc).
	// Default none: no pty, no forwarding, no ~/.ssh/rc.
	CertExtensions []string `json:"certExtensions,omitempty"`
	// Labels are key=value tags that TaskSpec.Selector matches: at most
	// MaxLabels; keys 1..63 characters of letters, digits, '.', '_', '/',
	// '-', starting with a letter or digit; values at most
	// MaxLabelValueBytes of UTF-8 without ',' or control characters.
	Labels map[string]string `json:"labels,omitempty"`
	// AuthorizedKeysFile is where the login user's authorized_keys file is
	// on the machine, for key rotation: relative to the user's home
	// directory, or absolute. Default ".ssh/authorized_keys" (OpenSSH's
	// default AuthorizedKeysFile).
	AuthorizedKeysFile string `json:"authorizedKeysFile,omitempty"`
	// KeyID is the machine's SSH key in the key inventory (Client.Keys):
	// machines of a team that log in with the same key share it. Set by
	// AddMachine; ignored on input.
	KeyID string `json:"keyId,omitempty"`
	// KeyFingerprint is the SHA256 fingerprint of the machine's key ("" for
	// the ssh-agent). Set by AddMachine and by key rotations; ignored on
	// input.
	KeyFingerprint string `json:"keyFingerprint,omitempty"`

	CreatedAt time.Time `json:"createdAt,omitzero"`

	// HostKeyUnknown is set by AddMachine (only) when no key of the host
	// is known under HostKeyKnownHosts: KnownHostsFile has no line for
	// its address and its team trusts no host CA. The machine is added,
	// but every connection fails with ErrUnknownHostKey until a verified
	// key is imported (ImportHostKeys) or the machine is added again with
	// HostKeyAcceptNew (trust on first use). AddMachine also logs a
	// warning saying so.
	HostKeyUnknown bool `json:"hostKeyUnknown,omitempty"`

	publicKey string // authorized_keys form of the key, from the record
}

var machineNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidateName returns ErrInvalidMachine unless name is a valid machine name.
func validateMachineName(name string) error {
	if !machineNameRE.MatchString(name) {
		return fmt.Errorf("%w: name %s must be 1..63 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit", ErrInvalidMachine, quoteInput(name))
	}
	return nil
}

func homeDir() string {
	if h, err := os.UserHomeDir(); err == nil {
		return h
	}
	return "/"
}

func currentUser() string {
	for _, k := range []string{"USER", "LOGNAME"} {
		if u := os.Getenv(k); u != "" {
			return u
		}
	}
	return "root"
}

// normalize fills defaults and validates; it returns ErrInvalidMachine
// naming the bad field.
func (m Machine) normalize() (Machine, error) {
	bad := func(format string, a ...any) (Machine, error) {
		return m, fmt.Errorf("%w: machine %q: %s", ErrInvalidMachine, m.Name, fmt.Sprintf(format, a...))
	}
	if err := validateMachineName(m.Name); err != nil {
		return m, err
	}
	if m.Team == "" {
		m.Team = DefaultTeam
	}
	m.Host = strings.TrimSpace(m.Host)
	host, err := checkHost(m.Host) // limits.go
	if err != nil {
		return bad("%v", err)
	}
	m.Host = host
	if m.Port == 0 {
		m.Port = 22
	}
	if m.Port < 1 || m.Port > 65535 {
		return bad("port %d is outside 1..65535", m.Port)
	}
	if m.User == "" {
		m.User = currentUser()
	}
	if err := checkLoginUser(m.User); err != nil {
		return bad("%v", err)
	}
	if err := checkLabels("label", m.Labels); err != nil {
		return bad("%v", err)
	}
	if err := m.normalizeSSH(); err != nil { // sshpolicy.go
		return bad("%v", err)
	}
	if m.HostKeyPolicy == "" {
		m.HostKeyPolicy = HostKeyKnownHosts
	}
	switch m.HostKeyPolicy {
	case HostKeyKnownHosts, HostKeyAcceptNew, HostKeyInsecureIgnore:
	default:
		return bad("host-key policy %q is not %q, %q or %q", m.HostKeyPolicy, HostKeyKnownHosts, HostKeyAcceptNew, HostKeyInsecureIgnore)
	}
	if m.KnownHostsFile == "" && m.HostKeyPolicy != HostKeyInsecureIgnore {
		m.KnownHostsFile = filepath.Join(homeDir(), ".ssh", "known_hosts")
	}
	if m.KnownHostsFile != "" {
		abs, err := filepath.Abs(m.KnownHostsFile)
		if err != nil {
			return bad("known_hosts path %q: %v", m.KnownHostsFile, err)
		}
		m.KnownHostsFile = abs
		if fi, err := os.Stat(abs); err == nil && !fi.Mode().IsRegular() {
			return bad("known_hosts path %s is not a regular file", abs)
		}
	}
	m.KeyID, m.KeyFingerprint, m.publicKey = "", "", ""
	if strings.ContainsRune(m.AuthorizedKeysFile, 0) || strings.ContainsRune(m.AuthorizedKeysFile, '\n') {
		return bad("authorized_keys path %q contains a NUL or newline", m.AuthorizedKeysFile)
	}
	if err := m.normalizeAuth(); err != nil { // sshca.go
		return bad("%v", err)
	}
	if m.Auth != AuthSSHCA && m.IdentityFile == "" && m.IdentitySecret == "" && !m.UseAgent {
		return bad("no identity: give an identity (private key) file or use the ssh-agent")
	}
	if m.IdentityFile != "" {
		abs, err := filepath.Abs(m.IdentityFile)
		if err != nil {
			return bad("identity path %q: %v", m.IdentityFile, err)
		}
		m.IdentityFile = abs
	}
	return m, nil
}

// machineConfig is the part of a Machine kept in store.Machine.Config.
type machineConfig struct {
	IdentityFile   string            `json:"identityFile,omitempty"`
	IdentitySecret string            `json:"identitySecret,omitempty"`
	UseAgent       bool              `json:"useAgent,omitempty"`
	AgentKey       string            `json:"agentKey,omitempty"`
	Legacy         bool              `json:"legacyAlgorithms,omitempty"`
	Algorithms     SSHAlgorithms     `json:"algorithms,omitzero"`
	HostKeyPolicy  HostKeyPolicy     `json:"hostKeyPolicy"`
	KnownHostsFile string            `json:"knownHostsFile,omitempty"`
	Labels         map[string]string `json:"labels,omitempty"`
	// Key inventory (keys.go): the key's id, its public key (authorized_keys
	// form, no comment) and where authorized_keys is on the machine.
	KeyID              string      `json:"keyId,omitempty"`
	PublicKey          string      `json:"publicKey,omitempty"`
	AuthorizedKeysFile string      `json:"authorizedKeysFile,omitempty"`
	Auth               MachineAuth `json:"auth,omitempty"`
	CertExtensions     []string    `json:"certExtensions,omitempty"`
}

func (m Machine) record() (store.Machine, error) {
	cfg, err := json.Marshal(machineConfig{
		IdentityFile: m.IdentityFile, IdentitySecret: m.IdentitySecret, UseAgent: m.UseAgent,
		AgentKey: m.AgentKey, Legacy: m.LegacyAlgorithms, Algorithms: m.Algorithms,
		HostKeyPolicy: m.HostKeyPolicy, KnownHostsFile: m.KnownHostsFile, Labels: m.Labels,
		KeyID: m.KeyID, PublicKey: m.publicKey, AuthorizedKeysFile: m.AuthorizedKeysFile,
		Auth: m.Auth, CertExtensions: m.CertExtensions,
	})
	if err != nil {
		return store.Machine{}, err
	}
	return store.Machine{ID: m.ID, Name: m.Name, TeamID: m.TeamID, Host: m.Host, Port: m.Port, User: m.User, Config: cfg, CreatedAt: m.CreatedAt}, nil
}

func machineFromRecord(r store.Machine) (Machine, error) {
	var c machineConfig
	if err := json.Unmarshal(r.Config, &c); err != nil {
		return Machine{}, fmt.Errorf("%w: machine %s has an unreadable config: %v", ErrCorruptStore, r.Name, err)
	}
	return Machine{
		ID: r.ID, Name: r.Name, Team: r.Team, TeamID: r.TeamID, Host: r.Host, Port: r.Port, User: r.User,
		IdentityFile: c.IdentityFile, IdentitySecret: c.IdentitySecret, UseAgent: c.UseAgent, HostKeyPolicy: c.HostKeyPolicy,
		AgentKey: c.AgentKey, LegacyAlgorithms: c.Legacy, Algorithms: c.Algorithms,
		KnownHostsFile: c.KnownHostsFile, Labels: c.Labels, CreatedAt: r.CreatedAt,
		KeyID: c.KeyID, publicKey: c.PublicKey, KeyFingerprint: fingerprintOf(c.PublicKey),
		AuthorizedKeysFile: c.AuthorizedKeysFile,
		Auth:               c.Auth, CertExtensions: c.CertExtensions,
	}, nil
}

// target builds the SSH target of m. passphrase may be nil; keyPEMs are
// the identity read from the vault when m.IdentitySecret is set (the
// current version, then the one before it), offered in that order.
func (m Machine) target(passphrase []byte, keyPEMs ...[]byte) rssh.Target {
	t := rssh.Target{Name: m.poolName(), Host: m.Host, Port: m.Port, User: m.User}
	for _, keyPEM := range keyPEMs {
		if len(keyPEM) > 0 {
			t.Auth = append(t.Auth, rssh.PrivateKey(keyPEM, passphrase))
		}
	}
	if m.IdentityFile != "" {
		t.Auth = append(t.Auth, rssh.KeyFile(m.IdentityFile, passphrase))
	}
	switch {
	case m.AgentKey != "":
		t.Auth = append(t.Auth, rssh.AgentKeys(m.AgentKey)) // only the pinned key
	case m.UseAgent:
		t.Auth = append(t.Auth, rssh.Agent())
	}
	t.Algorithms = m.sshAlgorithms() // sshpolicy.go
	switch m.HostKeyPolicy {
	case HostKeyAcceptNew:
		t.HostKey = rssh.AcceptNewHostKey(m.KnownHostsFile)
	case HostKeyInsecureIgnore:
		t.HostKey = rssh.InsecureIgnoreHostKey()
	default:
		t.HostKey = rssh.KnownHosts(m.KnownHostsFile)
	}
	return t
}

// checkKeyFile loads a private key file so a bad file or passphrase is
// reported when the machine is added, and returns its bytes. Errors:
// ErrKeyFile, ErrWrongPassphrase.
func checkKeyFile(path string, passphrase []byte) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeyFile, err)
	}
	return b, checkKey(b, path, passphrase)
}

func checkKey(b []byte, path string, passphrase []byte) error {
	var err error
	if len(passphrase) > 0 {
		_, err = gossh.ParsePrivateKeyWithPassphrase(b, passphrase)
	} else {
		_, err = gossh.ParsePrivateKey(b)
	}
	var missing *gossh.PassphraseMissingError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &missing):
		return fmt.Errorf("%w: identity file %s is encrypted and no passphrase was given", ErrWrongPassphrase, path)
	case errors.Is(err, x509.IncorrectPasswordError), strings.Contains(err.Error(), "decryption password incorrect"):
		return fmt.Errorf("%w: identity file %s: the passphrase does not decrypt it", ErrWrongPassphrase, path)
	}
	return fmt.Errorf("%w: identity file %s is not a private key: %v", ErrKeyFile, path, err)
}

// poolName is the name a machine's connections have in the SSH pool (and
// in SSH errors): its name, with its id when they differ, so that a new
// machine of a removed one's name never shares its connections.
func poolName(m store.Machine) string {
	return Machine{ID: m.ID, Name: m.Name}.poolName()
}

// poolName is the name m's connections have in the SSH pool (see the
// function poolName).
func (m Machine) poolName() string {
	if m.ID == "" || m.ID == m.Name {
		return m.Name
	}
	return m.Name + "#" + m.ID
}

// AddMachine registers m in its team (DefaultTeam when m.Team is empty)
// under a new id. It returns the machine with its defaults filled in. When
// m has an identity file, the key is loaded (with Config.KeyPassphrase) so
// a bad file fails here, not at run time. Every check (the name, the team,
// a machine of that name already registered, the key) runs before
// anything is written; with ImportIdentity the key is written into the
// team vault under the new machine's id, and removed again if the machine
// cannot be registered. Needs admin of the team (or owner).
//
// Errors: ErrNoActor, ErrPermissionDenied, ErrInvalidMachine (bad name,
// host, port, policy, no identity), ErrKeyFile, ErrWrongPassphrase,
// ErrExists, ErrNotFound (team).
func (c *Client) AddMachine(ctx context.Context, m Machine) (Machine, error) {
	if m.Team == "" {
		m.Team = DefaultTeam
	}
	sc, err := c.resolveTeam(ctx, m.Team)
	if err != nil {
		return Machine{}, err
	}
	o, g, err := c.authorize(ctx, authz.MachineAdd, sc, audit.EntityMachine, "",
		map[string]string{"machine": m.Name, "host": m.Host, "port": strconv.Itoa(m.Port), "user": m.User})
	if err != nil {
		return Machine{}, err
	}
	m, err = m.normalize()
	if err != nil {
		return Machine{}, o.fail(ctx, err)
	}
	if err := c.checkSSHPaths(ctx, o, g, m); err != nil { // sshpolicy.go: who may name files this process reads
		return Machine{}, err
	}
	m.ID, m.TeamID = uuid.NewString(), sc.id
	o.eid = m.ID
	if _, err := c.engine.MachineByName(ctx, m.Name); err == nil {
		return Machine{}, o.fail(ctx, fmt.Errorf("machine %s: %w (remove it first or pick another name)", quoteInput(m.Name), ErrExists))
	} else if !errors.Is(err, store.ErrNotFound) {
		return Machine{}, o.fail(ctx, mapStoreErr(err))
	}
	if err := c.checkMachineCA(ctx, m, sc); err != nil { // sshca.go: an ssh-ca machine needs its team's CA
		return Machine{}, o.fail(ctx, err)
	}
	var imported bool                       // this call wrote the identity into the vault
	hostLines, err := c.machineHostLines(m) // hostkeys.go: the file's lines for m, copied into the store
	if err != nil {
		return Machine{}, o.fail(ctx, err)
	}
	if hostLines != nil {
		o.detail["host_keys"] = strconv.Itoa(len(hostLines))
	}
	if m.IdentityFile != "" {
		pass, err := c.passphrase(ctx, m)
		if err != nil {
			return Machine{}, o.fail(ctx, err)
		}
		keyPEM, err := checkKeyFile(m.IdentityFile, pass)
		if err != nil {
			return Machine{}, o.fail(ctx, err)
		}
		if s, err := parseSigner(keyPEM, pass); err == nil {
			m.setPublicKey(s.PublicKey())
		}
		if m.ImportIdentity {
			v, err := c.vault()
			if err != nil {
				return Machine{}, o.fail(ctx, err)
			}
			ref := ownIdentity(m.ID)
			// The key names the new machine's id: it cannot be another
			// machine's; CAS 0 makes sure nothing is overwritten.
			if _, err := v.Put(ctx, sc.id, ref, keyPEM, PutOptions{CAS: CAS(0)}); err != nil {
				return Machine{}, o.fail(ctx, vaultErr(err))
			}
			imported = true
			o.detail["identity"] = "vault:" + ref
			m.IdentitySecret, m.IdentityFile = ref, ""
		}
	}
	if m.publicKey != "" {
		if m.KeyID, err = c.keyIDFor(ctx, m); err != nil {
			c.dropIdentity(ctx, m)
			return Machine{}, o.fail(ctx, err)
		}
		o.detail["key_fingerprint"] = m.KeyFingerprint
	}
	now := c.clock.Now().UTC()
	m.CreatedAt = now
	rec, err := m.record()
	if err != nil {
		return Machine{}, o.fail(ctx, err)
	}
	rec.UpdatedAt = now
	// The host keys under the new id first (no other machine has it).
	if err := c.setHostKeys(ctx, m, hostLines); err != nil {
		if imported {
			c.dropIdentity(ctx, m)
		}
		return Machine{}, o.fail(ctx, fmt.Errorf("machine %q: storing its host keys: %w", m.Name, err))
	}
	stored, err := c.engine.CreateMachine(o.ctx(ctx), rec)
	if err != nil {
		if imported {
			c.dropIdentity(ctx, m) // undo what this call wrote, nothing else
		}
		if derr := c.setHostKeys(context.WithoutCancel(ctx), m, nil); derr != nil {
			c.log.ErrorContext(ctx, "removing the host keys of a machine that was not added", "machine", m.Name, "error", derr)
		}
		switch {
		case errors.Is(err, store.ErrExists):
			err = fmt.Errorf("machine %s: %w (remove it first or pick another name)", quoteInput(m.Name), ErrExists)
		case errors.Is(err, store.ErrNotFound):
			err = fmt.Errorf("team %s: %w (create it first: rediacc team create)", quoteInput(m.Team), ErrNotFound)
		}
		return Machine{}, o.fail(ctx, mapStoreErr(err))
	}
	m.Team = stored.Team
	if m.HostKeyPolicy == HostKeyKnownHosts && len(hostLines) == 0 && hostLines != nil && len(c.ca.hosts.get(ctx, c, sc)) == 0 {
		m.HostKeyUnknown = true
		c.log.WarnContext(ctx, "machine added, but no key of its host is known: its connections will fail with an unknown host key until a verified key is imported, or the machine is added again trusting the first key seen",
			"machine", m.Name, "addr", net.JoinHostPort(m.Host, strconv.Itoa(m.Port)), "known_hosts", m.KnownHostsFile)
	}
	c.log.InfoContext(ctx, "machine added", "machine", m.Name, "machine_id", m.ID, "team", m.Team, "addr", net.JoinHostPort(m.Host, strconv.Itoa(m.Port)), "host_key_policy", string(m.HostKeyPolicy))
	return m, nil
}

// MachineSecretPrefix starts the vault keys that hold machines' SSH
// identities ("machines/ID/identity"). Tasks cannot name them as secrets.
const MachineSecretPrefix = "machines/"

// ownIdentity is the vault key of machine id's imported identity.
func ownIdentity(id string) string { return MachineSecretPrefix + id + "/identity" }

// dropIdentity deletes a machine's imported identity from its team vault:
// only the key named after the machine's id (an IdentitySecret naming some
// other key of the vault is not the machine's to delete).
func (c *Client) dropIdentity(ctx context.Context, m Machine) {
	if m.IdentitySecret == "" || m.IdentitySecret != ownIdentity(m.ID) {
		return
	}
	v, err := c.vault()
	if err == nil {
		err = v.Delete(ctx, m.TeamID, m.IdentitySecret)
	}
	if err != nil && !errors.Is(err, ErrSecretNotFound) {
		c.log.WarnContext(ctx, "machine identity left in the vault", "machine", m.Name, "team", m.Team, "key", m.IdentitySecret, "error", err)
	}
}

// machine loads the live machine named name without an access check
// (internal use).
func (c *Client) machine(ctx context.Context, name string) (Machine, error) {
	r, err := c.engine.MachineByName(ctx, name)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Machine{}, machineNotFound(name)
		}
		return Machine{}, mapStoreErr(err)
	}
	return machineFromRecord(r)
}

// Machine returns the machine named name. Needs a role in its team.
// Errors: ErrNoActor, ErrPermissionDenied, ErrNotFound.
func (c *Client) Machine(ctx context.Context, name string) (Machine, error) {
	if _, _, err := c.actor(ctx); err != nil {
		return Machine{}, err
	}
	m, err := c.machine(ctx, name)
	if err != nil {
		return Machine{}, err
	}
	o, _, err := c.authorizeSeen(ctx, authz.MachineRead, machineNotFound(name), authz.MachineRead, teamScope(m.TeamID, m.Team), audit.EntityMachine, m.ID, map[string]string{"machine": name})
	if err != nil {
		return Machine{}, err
	}
	o.done(ctx)
	return m, nil
}

// MachineFilter narrows Client.Machines. Zero fields match everything.
type MachineFilter struct {
	Team string // a team's name
}

// Machines lists, by name, the machines of the teams the actor belongs to
// (owners: all). Errors: ErrNoActor, ErrPermissionDenied (a Team the actor
// has no role in).
func (c *Client) Machines(ctx context.Context, f ...MachineFilter) ([]Machine, error) {
	var sc scope
	if len(f) > 0 && f[0].Team != "" {
		var err error
		if sc, err = c.resolveTeam(ctx, f[0].Team); err != nil {
			return nil, err
		}
	}
	teams, o, err := c.scopeTeams(ctx, authz.MachineList, sc, audit.EntityMachine)
	if err != nil {
		return nil, err
	}
	rs, err := c.engine.ListMachines(ctx, store.MachineFilter{TeamIDs: teams})
	if err != nil {
		return nil, mapStoreErr(err)
	}
	out := make([]Machine, 0, len(rs))
	for _, r := range rs {
		m, err := machineFromRecord(r)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	o.done(ctx)
	return out, nil
}

// RemoveMachine unregisters a machine, drops its pooled connections and
// deletes its imported identity from the vault. Its record stays (by id) so
// its tasks keep naming it; the name is free for a new machine. Needs
// admin of its team. Errors: ErrNoActor, ErrPermissionDenied, ErrNotFound;
// ErrMachineBusy while it has unfinished tasks; ErrConflict when it moved
// meanwhile. A schedule pinned to it stays (its team may pin it to another
// machine): its fires fail, each with a schedule.failed alert.
func (c *Client) RemoveMachine(ctx context.Context, name string) error {
	if _, _, err := c.actor(ctx); err != nil {
		return err
	}
	m, err := c.machine(ctx, name)
	if err != nil {
		return err
	}
	o, _, err := c.authorizeSeen(ctx, authz.MachineRead, machineNotFound(name), authz.MachineRemove, teamScope(m.TeamID, m.Team), audit.EntityMachine, m.ID, map[string]string{"machine": name})
	if err != nil {
		return err
	}
	if err := c.engine.DeleteMachine(o.ctx(ctx, store.MachineInTeam(m.ID, m.TeamID)), m.ID, c.clock.Now().UTC()); err != nil {
		switch {
		case errors.Is(err, store.ErrNotFound):
			err = fmt.Errorf("machine %s: %w", quoteInput(name), ErrNotFound)
		case errors.Is(err, store.ErrMachineHasTasks):
			err = fmt.Errorf("machine %q: %w (cancel or wait for them first)", name, ErrMachineBusy)
		}
		return o.fail(ctx, mapStoreErr(err))
	}
	c.pool.Forget(m.poolName())
	c.dropIdentity(ctx, m)
	return nil
}

func (c *Client) passphrase(ctx context.Context, m Machine) ([]byte, error) {
	if c.cfg.KeyPassphrase == nil {
		return nil, nil
	}
	return c.cfg.KeyPassphrase(ctx, m)
}
