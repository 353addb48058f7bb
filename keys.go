package rediacc

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	gossh "golang.org/x/crypto/ssh"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/store"
	rssh "github.com/rediacc/rediacc/ssh"
)

// Key rotation policy defaults.
const (
	// SuggestedMaxKeyAge is the key age the docs suggest for
	// KeyRotationPolicy.MaxAge: 90 days.
	SuggestedMaxKeyAge = 90 * 24 * time.Hour
	// DefaultKeyCheckInterval is how often a worker checks key ages
	// (KeyRotationPolicy.CheckInterval).
	DefaultKeyCheckInterval = time.Hour
)

// KeyRotationPolicy is Config.KeyRotation: how old an SSH key may get, and
// whether workers rotate older keys themselves. The zero value turns the
// policy off (keys are listed with their age, never flagged).
type KeyRotationPolicy struct {
	// MaxAge is the age past which a key is overdue: flagged in Keys and
	// MachineStatus, exported by the collector
	// (rediacc_ssh_key_overdue), and reported by a running worker in one
	// AlertKeyOverdue alert per check (rate limited like every alert).
	// 0 (the default) turns the policy off; SuggestedMaxKeyAge (90 days)
	// is a common choice. Age counts from the key's creation (its import
	// for a key that was never rotated).
	MaxAge time.Duration
	// Auto makes a running worker queue a rotation task (priority 4,
	// maintenance; see SubmitKeyRotation) for each overdue key of the teams
	// where its actor may rotate keys (key.rotate). Default off: overdue
	// keys are only reported.
	Auto bool
	// CheckInterval is how often a running worker checks key ages.
	// Default DefaultKeyCheckInterval (1 h); the first check runs when the
	// worker starts.
	CheckInterval time.Duration
	// KeyType ("ed25519", the default, or "rsa") and RSABits (default
	// 4096) are the kind of key rotations by policy make.
	KeyType string
	RSABits int
}

// KeySource says where the private key of an SSHKey is kept.
type KeySource string

// Key sources.
const (
	// KeyInVault: in the team vault (an imported identity, or a key made
	// by a rotation); rotation is possible.
	KeyInVault KeySource = "vault"
	// KeyInFile: an identity file on the worker's host; a rotation moves
	// the new key into the team vault (the file is left as it is, and its
	// key is revoked on the machines).
	KeyInFile KeySource = "file"
	// KeyInAgent: the keys of the ssh-agent; rediacc cannot rotate them.
	KeyInAgent KeySource = "agent"
	// KeyBySSHCA: no long-lived key at all: the machines (Auth AuthSSHCA)
	// log in with a key made for each connection and certified by the
	// team's SSH CA (sshca.go). Nothing to rotate here: rotate the CA
	// (RotateSSHCA).
	KeyBySSHCA KeySource = "ssh-ca"
)

// rotatable reports whether rediacc holds the private key, so that
// RotateKey can replace it.
func (s KeySource) rotatable() bool { return s == KeyInVault || s == KeyInFile }

// SSHKey is one entry of the key inventory: an SSH client key that one or
// more machines of a team log in with. It never holds key material.
type SSHKey struct {
	// ID is the key's immutable id; it stays the same across rotations.
	ID string `json:"id"`
	// Team is the name of the team that owns the key (and the machines
	// using it); TeamID its immutable id.
	Team   string `json:"team"`
	TeamID string `json:"teamId"`
	// Type is the SSH key type ("ssh-ed25519", "ssh-rsa", …); "" for the
	// agent's keys.
	Type string `json:"type,omitempty"`
	// Bits is the key size (RSA: modulus bits; Ed25519: 256).
	Bits int `json:"bits,omitempty"`
	// Fingerprint is the key's SHA256 fingerprint ("SHA256:…", as
	// ssh-keygen -l prints it): for the ssh-agent, the key pinned by
	// Machine.AgentKey, "" when any agent key may log in.
	Fingerprint string `json:"fingerprint,omitempty"`
	// Source is where the private key is kept.
	Source KeySource `json:"source"`
	// CreatedAt is when this key came into use: made by a rotation, or
	// imported with its first machine.
	CreatedAt time.Time `json:"createdAt"`
	// RotatedAt is when the key last replaced an earlier one (zero when
	// never).
	RotatedAt time.Time `json:"rotatedAt,omitzero"`
	// Age is how old the key is (now − CreatedAt); AgeSeconds the same in
	// seconds, for JSON.
	Age        time.Duration `json:"-"`
	AgeSeconds int64         `json:"ageSeconds"`
	// Overdue is true when Config.KeyRotation.MaxAge is set and Age is
	// past it.
	Overdue bool `json:"overdue"`
	// Machines lists, by name, the machines that log in with the key.
	Machines []string `json:"machines"`
	// Previous is the fingerprint of the key the last rotation replaced
	// (kept in the vault for RotateKey's Rollback), "" when none.
	Previous string `json:"previousFingerprint,omitempty"`
	// Rotation describes an unfinished rotation (nil when none): machines
	// that failed keep both keys until RotateKey with Resume finishes.
	Rotation *KeyRotationStatus `json:"rotation,omitempty"`
}

// KeyRotationStatus is the state of a key rotation that has not finished.
type KeyRotationStatus struct {
	// From and To are the old and the new key's fingerprints.
	From string `json:"from"`
	To   string `json:"to"`
	// Stored is true once the new key is in the vault (machines that
	// accepted it use it; the others still log in with the old one).
	Stored bool `json:"stored"`
	// StartedAt, UpdatedAt and By (the actor) describe the attempt.
	StartedAt time.Time `json:"startedAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	By        string    `json:"by,omitempty"`
	// Machines gives each machine's progress and, for those that failed,
	// the cause.
	Machines []MachineKeyState `json:"machines"`
}

// Per-machine states of a key rotation (MachineKeyState.State).
const (
	KeyStatePending   = "pending"   // nothing done yet
	KeyStateInstalled = "installed" // new key added to authorized_keys
	KeyStateVerified  = "verified"  // a new connection with only the new key logged in
	KeyStateRevoked   = "revoked"   // old key removed and proven refused
	KeyStateFailed    = "failed"    // see Error; keeps the old key (and the new one if installed)
	KeyStateReady     = "ready"     // dry run: the rotation can proceed here
)

// MachineKeyState is one machine's part in a key rotation.
type MachineKeyState struct {
	Machine string `json:"machine"`
	State   string `json:"state"`
	// Step is the step that failed ("connect", "install", "verify",
	// "store", "revoke", "prove"); Error its cause naming the machine.
	Step  string `json:"step,omitempty"`
	Error string `json:"error,omitempty"`
	// Note says what was left undone on purpose (e.g. the old key kept
	// because another machine still uses it on the same account).
	Note string `json:"note,omitempty"`
}

// KeyFilter narrows Client.Keys. Zero fields match everything.
type KeyFilter struct {
	// Team is the live team of that name; TeamID a team by id (it wins
	// over Team).
	Team   string
	TeamID string
}

// keyRecord is what store.Key.Data holds.
type keyRecord struct {
	Type      string    `json:"type,omitempty"`
	Bits      int       `json:"bits,omitempty"`
	PublicKey string    `json:"publicKey,omitempty"` // authorized_keys form of the current key
	CreatedAt time.Time `json:"createdAt"`
	RotatedAt time.Time `json:"rotatedAt,omitzero"`
	Previous  string    `json:"previous,omitempty"` // fingerprint before the last rotation
	// Lock holds the key for one rotation at a time (across workers).
	Lock *keyLock `json:"lock,omitempty"`
	// Rotation is the unfinished rotation, if any.
	Rotation *rotationState `json:"rotation,omitempty"`
}

type keyLock struct {
	Owner string    `json:"owner"` // worker id / rotation id
	Actor string    `json:"actor,omitempty"`
	Until time.Time `json:"until"`
}

// rotationState is the durable progress of a rotation (advisory: every
// step is re-checked against the vault and the machines when it resumes).
type rotationState struct {
	ID          string                   `json:"id"`
	From        string                   `json:"from"`
	To          string                   `json:"to"`
	ToPublicKey string                   `json:"toPublicKey"`
	ToType      string                   `json:"toType,omitempty"`
	ToBits      int                      `json:"toBits,omitempty"`
	Stored      bool                     `json:"stored"`
	StartedAt   time.Time                `json:"startedAt"`
	UpdatedAt   time.Time                `json:"updatedAt"`
	By          string                   `json:"by,omitempty"`
	Machines    map[string]*machineState `json:"machines"` // by machine id
}

type machineState struct {
	State string `json:"state"`
	Step  string `json:"step,omitempty"`
	Error string `json:"error,omitempty"`
	Note  string `json:"note,omitempty"`
}

func decodeKeyRecord(k store.Key) (keyRecord, error) {
	var r keyRecord
	if len(k.Data) == 0 {
		return r, nil
	}
	if err := json.Unmarshal(k.Data, &r); err != nil {
		return r, fmt.Errorf("%w: key %s has an unreadable record: %v", ErrCorruptStore, k.ID, err)
	}
	return r, nil
}

// keyNamespace derives the ids of keys first seen on machines, so that two
// processes finding the same key give it the same id.
var keyNamespace = uuid.MustParse("6f1c3b8e-6a57-4d3e-9a43-2f8e0c9b7d15")

// derivedKeyID is the id of the key with fingerprint fp in team teamID (a
// store from before team ids gave each team its name as its id, so the
// ids derived then stay the same).
func derivedKeyID(teamID, fp string) string {
	return uuid.NewSHA1(keyNamespace, []byte(teamID+"\x00"+fp)).String()
}

// keyEngine returns the store's key inventory, or an error when the store
// engine has none.
func (c *Client) keyEngine() (store.KeyEngine, error) {
	ke, ok := c.engine.(store.KeyEngine)
	if !ok {
		return nil, fmt.Errorf("%w: store %s keeps no SSH key inventory", ErrInvalidArgument, c.st)
	}
	return ke, nil
}

// invMachine is a machine as the inventory sees it.
type invMachine struct {
	m   Machine
	pub gossh.PublicKey // nil for the agent or when unknown
	src KeySource
	err error // why pub is unknown
}

// invKey is a key of the inventory with its machines.
type invKey struct {
	id       string
	team     string // the team's id
	teamName string
	src      KeySource
	pub      gossh.PublicKey
	machines []*invMachine
	rec      *keyRecord // the stored record, nil when none
	stored   store.Key
	agentFP  string // the pinned agent key (Machine.AgentKey), if any
}

func (k *invKey) fingerprint() string {
	if k.pub == nil {
		return k.agentFP
	}
	return gossh.FingerprintSHA256(k.pub)
}

// machinePublicKey returns m's public key: from its record, else (derive)
// from the key in the vault or the identity file.
func (c *Client) machinePublicKey(ctx context.Context, m Machine, derive bool) (gossh.PublicKey, error) {
	if m.publicKey != "" {
		k, _, _, _, err := gossh.ParseAuthorizedKey([]byte(m.publicKey))
		if err == nil {
			return k, nil
		}
	}
	if !derive {
		return nil, errors.New("public key not recorded yet")
	}
	pemBytes, pass, err := c.currentKeyPEM(ctx, m)
	if err != nil {
		return nil, err
	}
	s, err := parseSigner(pemBytes, pass)
	if err != nil {
		return nil, err
	}
	return s.PublicKey(), nil
}

// currentKeyPEM returns m's private key (vault or file) and its passphrase.
func (c *Client) currentKeyPEM(ctx context.Context, m Machine) ([]byte, []byte, error) {
	switch {
	case m.IdentitySecret != "":
		v, err := c.vault()
		if err != nil {
			return nil, nil, err
		}
		s, err := v.Get(ctx, m.TeamID, m.IdentitySecret)
		if err != nil {
			return nil, nil, identityErr(m, err)
		}
		return s.Value, nil, nil
	case m.IdentityFile != "":
		pass, err := c.passphrase(ctx, m)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: passphrase for %s: %v", ErrWrongPassphrase, m.IdentityFile, err)
		}
		b, err := os.ReadFile(m.IdentityFile)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: machine %s: %v", ErrKeyFile, m.Name, err)
		}
		return b, pass, nil
	}
	return nil, nil, fmt.Errorf("%w: machine %s logs in with the ssh-agent: rediacc holds no key of its own for it", ErrInvalidArgument, m.Name)
}

func parseSigner(pemBytes, pass []byte) (gossh.Signer, error) {
	if len(pass) > 0 {
		s, err := gossh.ParsePrivateKeyWithPassphrase(pemBytes, pass)
		if err == nil {
			return s, nil
		}
	}
	s, err := gossh.ParsePrivateKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeyFile, err)
	}
	return s, nil
}

func keySource(m Machine) KeySource {
	switch {
	case m.Auth == AuthSSHCA:
		return KeyBySSHCA
	case m.IdentitySecret != "":
		return KeyInVault
	case m.IdentityFile != "":
		return KeyInFile
	}
	return KeyInAgent // UseAgent, or AgentKey
}

// inventory groups the machines of teams (ids; nil: all) by key. derive reads
// keys from the vault or files for machines whose public key is not
// recorded (machines added before the inventory existed).
func (c *Client) inventory(ctx context.Context, teams []string, derive bool) ([]*invKey, error) {
	rs, err := c.engine.ListMachines(ctx, store.MachineFilter{TeamIDs: teams})
	if err != nil {
		return nil, mapStoreErr(err)
	}
	var recs map[string]store.Key
	if ke, err := c.keyEngine(); err == nil {
		ks, err := ke.ListKeys(ctx, store.KeyFilter{TeamIDs: teams})
		if err != nil {
			return nil, mapStoreErr(err)
		}
		recs = make(map[string]store.Key, len(ks))
		for _, k := range ks {
			recs[k.ID] = k
		}
	}
	byID := map[string]*invKey{}
	var out []*invKey
	for _, r := range rs {
		m, err := machineFromRecord(r)
		if err != nil {
			return nil, err
		}
		im := &invMachine{m: m, src: keySource(m)}
		id := m.KeyID
		if sk, ok := recs[id]; ok && sk.TeamID != m.TeamID {
			id = "" // moved from another team: a key of its new team
		}
		if im.src == KeyBySSHCA {
			id = derivedKeyID(m.Team, "ssh-ca") // one entry per team: its certificates
		} else if im.src == KeyInAgent {
			if id == "" { // one entry per pinned agent key, one for "any agent key"
				id = derivedKeyID(m.TeamID, "agent:"+m.AgentKey)
			}
		} else {
			im.pub, im.err = c.machinePublicKey(ctx, m, derive)
			if id == "" && im.pub != nil {
				id = derivedKeyID(m.TeamID, gossh.FingerprintSHA256(im.pub))
			}
			if id == "" {
				id = derivedKeyID(m.TeamID, "machine/"+m.ID) // key unknown: alone
			}
		}
		k := byID[m.TeamID+"\x00"+id]
		if k == nil {
			k = &invKey{id: id, team: m.TeamID, teamName: m.Team, src: im.src, pub: im.pub, agentFP: m.AgentKey}
			if sk, ok := recs[id]; ok && sk.TeamID == m.TeamID {
				rec, err := decodeKeyRecord(sk)
				if err != nil {
					return nil, err
				}
				k.rec, k.stored = &rec, sk
			}
			byID[m.TeamID+"\x00"+id] = k
			out = append(out, k)
		}
		if k.pub == nil {
			k.pub = im.pub
		}
		k.machines = append(k.machines, im)
	}
	slices.SortFunc(out, func(a, b *invKey) int {
		return cmp.Or(cmp.Compare(a.teamName, b.teamName), cmp.Compare(a.team, b.team), cmp.Compare(a.machines[0].m.Name, b.machines[0].m.Name))
	})
	return out, nil
}

// view turns an inventory key into an SSHKey at time now.
func (c *Client) view(k *invKey, now time.Time) SSHKey {
	s := SSHKey{ID: k.id, Team: k.teamName, TeamID: k.team, Source: k.src, Fingerprint: k.fingerprint()}
	if k.pub != nil {
		s.Type, s.Bits = k.pub.Type(), rssh.KeyBits(k.pub)
	}
	for _, im := range k.machines {
		s.Machines = append(s.Machines, im.m.Name)
		if s.CreatedAt.IsZero() || im.m.CreatedAt.Before(s.CreatedAt) {
			s.CreatedAt = im.m.CreatedAt
		}
	}
	if r := k.rec; r != nil {
		if !r.CreatedAt.IsZero() {
			s.CreatedAt = r.CreatedAt
		}
		s.RotatedAt, s.Previous = r.RotatedAt, r.Previous
		if st := r.Rotation; st != nil {
			s.Rotation = st.public(k)
		}
	}
	if !s.CreatedAt.IsZero() {
		s.Age = max(now.Sub(s.CreatedAt), 0)
		s.AgeSeconds = int64(s.Age / time.Second)
	}
	if max := c.cfg.KeyRotation.MaxAge; max > 0 && k.src.rotatable() && s.Age > max {
		s.Overdue = true
	}
	return s
}

// public describes st for the machines of k, in k's order.
func (st *rotationState) public(k *invKey) *KeyRotationStatus {
	p := &KeyRotationStatus{From: st.From, To: st.To, Stored: st.Stored, StartedAt: st.StartedAt, UpdatedAt: st.UpdatedAt, By: st.By}
	for _, im := range k.machines {
		ms := MachineKeyState{Machine: im.m.Name, State: KeyStatePending}
		if s := st.Machines[im.m.ID]; s != nil {
			ms.State, ms.Step, ms.Error, ms.Note = s.State, s.Step, s.Error, s.Note
		}
		p.Machines = append(p.Machines, ms)
	}
	return p
}

// Keys lists the SSH key inventory of the teams the actor belongs to
// (owners: all), or of f.Team (f.TeamID): each key machines log in with (imported
// identities and keys made by rotations, in the team vault; identity files;
// the ssh-agent), its type, SHA256 fingerprint, creation and rotation time,
// age, whether it is overdue (Config.KeyRotation.MaxAge), the machines that
// use it, and an unfinished rotation. Machines sharing a key (same key,
// same team) share one entry. No key material is returned. Needs key.list
// (any member of the team).
//
// Errors: ErrNoActor, ErrPermissionDenied (a Team the actor has no role in).
func (c *Client) Keys(ctx context.Context, f ...KeyFilter) ([]SSHKey, error) {
	var sc scope
	if len(f) > 0 {
		var err error
		if sc, err = c.listScope(ctx, f[0].Team, f[0].TeamID); err != nil {
			return nil, err
		}
	}
	teams, o, err := c.scopeTeams(ctx, authz.KeyList, sc, audit.EntityKey)
	if err != nil {
		return nil, err
	}
	inv, err := c.inventory(ctx, teams, true)
	if err != nil {
		return nil, err
	}
	now := c.clock.Now().UTC()
	out := make([]SSHKey, 0, len(inv))
	for _, k := range inv {
		out = append(out, c.view(k, now))
	}
	o.done(ctx)
	return out, nil
}

// keyComment is the comment of the authorized_keys line rediacc adds for
// key on machine m: the product, the key, the machine and the date.
func keyComment(keyID string, m Machine, at time.Time) string {
	return fmt.Sprintf("rediacc key=%s machine=%s added=%s", keyID, m.Name, at.UTC().Format("2006-01-02"))
}

// ourLine reports whether an authorized_keys comment marks a line rediacc
// added for keyID.
func ourLine(comment, keyID string) bool {
	return strings.HasPrefix(comment, "rediacc key="+keyID+" ") || comment == "rediacc key="+keyID
}

// setPublicKey records k as m's key.
func (m *Machine) setPublicKey(k gossh.PublicKey) {
	m.publicKey = strings.TrimSpace(string(gossh.MarshalAuthorizedKey(k)))
	m.KeyFingerprint = gossh.FingerprintSHA256(k)
}

// fingerprintOf returns the fingerprint of an authorized_keys line ("" if
// it does not parse).
func fingerprintOf(line string) string {
	if line == "" {
		return ""
	}
	k, _, _, _, err := gossh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return ""
	}
	return gossh.FingerprintSHA256(k)
}

// keyIDFor returns the inventory id of m's key: the id of another machine
// of the team with the same key, else the id derived from the team and
// fingerprint (a fresh one if a stored key already holds that id for a
// rotated-away fingerprint).
func (c *Client) keyIDFor(ctx context.Context, m Machine) (string, error) {
	rs, err := c.engine.ListMachines(ctx, store.MachineFilter{TeamID: m.TeamID})
	if err != nil {
		return "", mapStoreErr(err)
	}
	for _, r := range rs {
		o, err := machineFromRecord(r)
		if err != nil || o.KeyFingerprint != m.KeyFingerprint || o.ID == m.ID {
			continue
		}
		if o.KeyID != "" {
			return o.KeyID, nil
		}
		return derivedKeyID(m.TeamID, m.KeyFingerprint), nil
	}
	id := derivedKeyID(m.TeamID, m.KeyFingerprint)
	if ke, err := c.keyEngine(); err == nil {
		if k, err := ke.GetKey(ctx, id); err == nil && k.Fingerprint != m.KeyFingerprint {
			return uuid.NewString(), nil
		}
	}
	return id, nil
}

// identityPEMs returns the private keys m logs in with from the vault: the
// current version of its identity and the version before it when that is
// a different key (nil when m's identity is not in the vault).
func (c *Client) identityPEMs(ctx context.Context, m Machine) ([][]byte, error) {
	if m.IdentitySecret == "" {
		return nil, nil
	}
	v, err := c.vault()
	if err != nil {
		return nil, identityErr(m, err)
	}
	s, err := v.Get(ctx, m.TeamID, m.IdentitySecret)
	if err != nil {
		return nil, identityErr(m, err)
	}
	out := [][]byte{s.Value}
	if s.Version > 1 {
		p, err := v.GetVersion(ctx, m.TeamID, m.IdentitySecret, s.Version-1)
		if err == nil && !bytes.Equal(p.Value, s.Value) {
			out = append(out, p.Value)
		}
	}
	return out, nil
}

// keyStatus fills the key fields of the machines' statuses (from the store:
// keys not recorded yet are left blank).
func (c *Client) keyStatus(ctx context.Context, teams []string, out []MachineStatus) error {
	inv, err := c.inventory(ctx, teams, false)
	if err != nil {
		return err
	}
	now := c.clock.Now().UTC()
	byMachine := map[string]SSHKey{}
	for _, k := range inv {
		v := c.view(k, now)
		for _, im := range k.machines {
			byMachine[im.m.ID] = v
		}
	}
	for i := range out {
		if v, ok := byMachine[out[i].ID]; ok && v.Fingerprint != "" {
			out[i].KeyFingerprint, out[i].KeyAge, out[i].KeyAgeSeconds, out[i].KeyOverdue = v.Fingerprint, v.Age, v.AgeSeconds, v.Overdue
		}
	}
	return nil
}

// identityErr is the error of a machine identity kept in the vault that
// the vault did not give: ErrKeyFile, or — when the vault cannot be
// unlocked — its ErrWrongPassphrase as it is: a credential failure (CLI
// exit 2, ErrorKindWrongPassphrase), not a bad key.
func identityErr(m Machine, err error) error {
	err = vaultErr(err)
	if errors.Is(err, ErrWrongPassphrase) {
		return fmt.Errorf("machine %s's identity is in its team's vault, which cannot be unlocked: %w", m.Name, err)
	}
	return fmt.Errorf("%w: machine %s's identity %q: %v", ErrKeyFile, m.Name, m.IdentitySecret, err)
}
