package rediacc

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	gossh "golang.org/x/crypto/ssh"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/vault"
	rssh "github.com/rediacc/rediacc/ssh"
)

// KeyRotationOptions says which SSH key RotateKey works on and how. Name
// exactly one of Machine, Key, or Team with All.
type KeyRotationOptions struct {
	// Machine names a machine: its key is rotated on every machine of the
	// team that shares it.
	Machine string
	// Key is a key's id or SHA256 fingerprint (as Keys lists them).
	Key string
	// Team with All rotates every key of the team (ssh-agent keys, which
	// rediacc cannot rotate, are skipped and reported).
	Team string
	All  bool

	// DryRun checks, on every machine, that the rotation can proceed
	// (login with the current key, sshd new enough for the key type,
	// authorized_keys present or creatable and writable, home directory)
	// and changes nothing.
	DryRun bool
	// Resume finishes an unfinished rotation: machines that failed get the
	// new key, then the old key is revoked everywhere. Without an
	// unfinished rotation it does nothing (Action "nothing to resume").
	Resume bool
	// Rollback makes the previous key current again, provided it still
	// logs in on every machine of the key (it does until the rotation
	// revokes it; after a complete rotation it no longer does), then
	// revokes the newer key. An unfinished rotation whose new key never
	// reached the vault is abandoned (its lines removed).
	Rollback bool

	// Type is the new key's type: "ed25519" (default) or "rsa"; Bits the
	// RSA size (default 4096, 3072..16384).
	Type string
	Bits int

	// Progress, when set, is told of every step on every machine (from
	// several goroutines, one call at a time).
	Progress func(KeyRotationEvent)
}

// KeyRotationEvent is one step of a rotation, for
// KeyRotationOptions.Progress.
type KeyRotationEvent struct {
	// Key is the key's fingerprint before the rotation; Machine the
	// machine ("" for a step of the whole key).
	Key     string
	Machine string
	// Step is "check", "generate", "install", "verify", "store", "revoke",
	// "prove", "rollback" or "done".
	Step string
	// Err is the step's failure, nil when it succeeded.
	Err error
	// Done and Total count the machine steps of the rotation.
	Done, Total int
}

// Actions of KeyRotationResult.Action.
const (
	KeyActionRotated     = "rotated"
	KeyActionResumed     = "resumed"
	KeyActionRolledBack  = "rolled back"
	KeyActionAbandoned   = "abandoned"
	KeyActionDryRun      = "dry run"
	KeyActionNothing     = "nothing to resume"
	KeyActionUnfinished  = "unfinished"
	KeyActionFailed      = "failed"
	KeyActionSkipped     = "skipped"
	KeyActionNotReady    = "not ready"
	rotationParallel     = 4
	rotationLockTTL      = 2 * time.Minute
	rotationProbeTimeout = 30 * time.Second
)

// KeyRotationResult is what RotateKey did to one key.
type KeyRotationResult struct {
	KeyID string `json:"keyId"`
	// Team is the key's team's name, TeamID its id.
	Team   string `json:"team"`
	TeamID string `json:"teamId"`
	// From and To are the key's fingerprints before and after (To is ""
	// when nothing changed).
	From string `json:"from"`
	To   string `json:"to,omitempty"`
	// Action is one of the KeyAction constants.
	Action string `json:"action"`
	// Note explains a skipped key or a restarted rotation.
	Note     string            `json:"note,omitempty"`
	Machines []MachineKeyState `json:"machines"`
}

// KeyRotationError reports a rotation that did not finish on every
// machine: Results lists the keys concerned, each machine with its state
// and, for the failed ones, the cause. A failed machine keeps a key that
// logs in (its old one, or both). errors.Is(err, ErrKeyRotationIncomplete)
// holds, and errors.Is matches the machines' causes too (ErrConnect,
// ErrAuthorizedKeysNotWritable, ErrHomeMissing, ErrRemoteWrite,
// ErrKeyTypeUnsupported, …).
type KeyRotationError struct {
	Results []KeyRotationResult
	causes  []error
}

func (e *KeyRotationError) Error() string {
	var b strings.Builder
	b.WriteString("key rotation incomplete:")
	for _, r := range e.Results {
		fmt.Fprintf(&b, " key %s of team %q (%s):", r.From, r.Team, r.Action)
		for _, m := range r.Machines {
			if m.State == KeyStateFailed {
				fmt.Fprintf(&b, " machine %s failed at %s: %s;", m.Machine, m.Step, m.Error)
			}
		}
		if r.Note != "" {
			b.WriteString(" " + r.Note + ";")
		}
	}
	return strings.TrimSuffix(b.String(), ";")
}

// Unwrap returns ErrKeyRotationIncomplete and the machines' causes.
func (e *KeyRotationError) Unwrap() []error {
	return append([]error{ErrKeyRotationIncomplete}, e.causes...)
}

// rotationHook, when set (tests), is called after each step with the step,
// the key's team and the machine ("" for steps of the whole key).
var rotationHook atomic.Pointer[func(step, team, machine string)]

func (r *rotation) hook(step, machine string) {
	if h := rotationHook.Load(); h != nil {
		(*h)(step, r.k.teamName, machine)
	}
}

// RotateKey rotates an SSH key on every machine that logs in with it, so
// that no sequence of failures can lock rediacc out:
//
//  1. a new key pair is made in memory (Ed25519 by default), never written
//     to disk unencrypted;
//  2. over the current key, its public key is added to each machine's
//     authorized_keys (Machine.AuthorizedKeysFile), atomically, keeping
//     every other line, the mode and the owner, marked with a comment
//     naming rediacc, the key, the machine and the date;
//  3. a new connection offering only the new key runs a command on each
//     machine; only then is the new key stored in the team vault as a new
//     version of each machine's identity (the previous version stays for
//     rollback), and new connections use it (in-flight sessions on old
//     connections finish);
//  4. once every machine accepted the new key, the old key's lines are
//     removed over new connections and a fresh connection offering only
//     the old key is shown to be refused.
//
// Machines that fail keep their old key (and the new one when it was
// installed), are listed with the cause in a *KeyRotationError, and the
// old key is revoked nowhere until every machine accepted the new one:
// RotateKey with Resume finishes the job later, Rollback restores the
// previous key while it still logs in. Workers offer a machine's current
// vault key and the version before it, so tasks keep running through every
// step, and through a failure at any step. One rotation works on a key at
// a time, across every process sharing the store (a lock in the store,
// released when its holder dies). Every step is audited (key.generate,
// key.install, key.verify, key.store, key.revoke, key.rollback,
// key.rotate.failed) with fingerprints and machine names, never key
// material. Needs key.rotate (team admin) in the key's team.
//
// Errors: ErrNoActor, ErrPermissionDenied, ErrNotFound (machine or key),
// ErrInvalidArgument (bad options; an ssh-agent key; a key in a store
// without a key inventory), ErrKeyRotationBusy (another rotation holds
// the key), ErrKeyRotationIncomplete (*KeyRotationError: some machines
// failed; an unfinished rotation without Resume or Rollback),
// ErrRollbackImpossible, ErrKeyTypeUnsupported, the vault's errors.
func (c *Client) RotateKey(ctx context.Context, opts KeyRotationOptions) ([]KeyRotationResult, error) {
	keys, typ, o, err := c.selectKeys(ctx, opts)
	if err != nil {
		return nil, err
	}
	actor := o.actor
	var (
		results []KeyRotationResult
		failed  []KeyRotationResult
		causes  []error
	)
	for _, k := range keys {
		if !k.src.rotatable() {
			note := "the ssh-agent's keys are not held by rediacc"
			if k.src == KeyBySSHCA {
				note = "certificates of the team's SSH CA, a key per connection: rotate the CA (team ssh-ca rotate)"
			}
			results = append(results, KeyRotationResult{KeyID: k.id, Team: k.teamName, TeamID: k.team, Action: KeyActionSkipped,
				Note: note, Machines: k.states(KeyStatePending)})
			continue
		}
		r := &rotation{c: c, k: k, opts: opts, typ: typ, actor: actor, hostCAs: c.ca.hosts.get(ctx, c, teamScope(k.team, k.teamName)), // sshca_sign.go
			guard: roleGuard(actor, authz.KeyRotate, teamScope(k.team, k.teamName)),
			log:   c.log.With(slog.String("key_id", k.id), slog.String("team", k.teamName), slog.String("fingerprint", k.fingerprint()))}
		res, err := r.run(ctx)
		results = append(results, res)
		if err != nil {
			var ke *KeyRotationError
			if !errors.As(err, &ke) {
				if len(keys) == 1 {
					return results, o.fail(ctx, err)
				}
				res.Action, res.Note = KeyActionFailed, err.Error()
				ke = &KeyRotationError{Results: []KeyRotationResult{res}, causes: []error{err}}
			}
			failed = append(failed, ke.Results...)
			causes = append(causes, ke.causes...)
		}
	}
	o.detail["keys"] = strconv.Itoa(len(results))
	if len(failed) > 0 {
		return results, o.fail(ctx, &KeyRotationError{Results: failed, causes: causes})
	}
	o.done(ctx)
	return results, nil
}

func (k *invKey) names() []string {
	var out []string
	for _, im := range k.machines {
		out = append(out, im.m.Name)
	}
	return out
}

func (k *invKey) states(state string) []MachineKeyState {
	var out []MachineKeyState
	for _, im := range k.machines {
		out = append(out, MachineKeyState{Machine: im.m.Name, State: state})
	}
	return out
}

// selectKeys checks opts, authorizes key.rotate in the keys' team and
// returns the keys opts names, the new key type and the audited operation.
func (c *Client) selectKeys(ctx context.Context, opts KeyRotationOptions) ([]*invKey, rssh.KeyType, *op, error) {
	actor, ok := ActorFrom(ctx)
	if !ok {
		return nil, "", nil, ErrNoActor
	}
	typ, err := validateRotation(opts)
	if err != nil {
		return nil, "", nil, err
	}
	var sc scope
	if opts.Team != "" {
		if sc, err = c.resolveTeam(ctx, opts.Team); err != nil {
			return nil, "", nil, err
		}
	}
	var machineID string
	if opts.Machine != "" {
		m, err := c.machine(ctx, opts.Machine)
		if err != nil {
			return nil, "", nil, err
		}
		if err := c.requireSeen(ctx, authz.KeyRotate, authz.MachineRead, teamScope(m.TeamID, m.Team), audit.EntityMachine, m.ID,
			map[string]string{"machine": m.Name}, machineNotFound(opts.Machine)); err != nil {
			return nil, "", nil, err // before naming the machine's team
		}
		if opts.Team != "" && sc.id != m.TeamID {
			return nil, "", nil, fmt.Errorf("%w: machine %s is in team %q, not %q", ErrInvalidArgument, m.Name, m.Team, opts.Team)
		}
		sc, machineID = teamScope(m.TeamID, m.Team), m.ID
	}
	if sc == (scope{}) { // a key by id or fingerprint: find its team among the actor's
		teams, o, err := c.scopeTeams(ctx, authz.KeyRotate, scope{}, audit.EntityKey)
		if err != nil {
			return nil, "", nil, err
		}
		inv, err := c.inventory(ctx, teams, true)
		if err != nil {
			return nil, "", nil, o.fail(ctx, err)
		}
		for _, k := range inv {
			if k.id == opts.Key || k.fingerprint() == opts.Key {
				sc = teamScope(k.team, k.teamName)
			}
		}
		if sc == (scope{}) {
			return nil, "", nil, o.fail(ctx, fmt.Errorf("%w: no key %s in the teams where %s may rotate keys (see rediacc machine keys)", ErrNotFound, quoteInput(opts.Key), actor))
		}
	}
	detail := map[string]string{"dry_run": strconv.FormatBool(opts.DryRun), "resume": strconv.FormatBool(opts.Resume),
		"rollback": strconv.FormatBool(opts.Rollback)}
	for k, v := range map[string]string{"machine": opts.Machine, "key": opts.Key, "type": string(typ)} {
		if v != "" {
			detail[k] = v
		}
	}
	if opts.All {
		detail["all"] = "true"
	}
	o, _, err := c.authorize(ctx, authz.KeyRotate, sc, audit.EntityKey, opts.Key, detail)
	if err != nil {
		return nil, "", nil, err
	}
	inv, err := c.inventory(ctx, []string{sc.id}, true)
	if err != nil {
		return nil, "", nil, o.fail(ctx, err)
	}
	var keys []*invKey
	for _, k := range inv {
		switch {
		case opts.All:
			keys = append(keys, k)
		case opts.Key != "" && (k.id == opts.Key || k.fingerprint() == opts.Key):
			keys = append(keys, k)
		case opts.Machine != "" && slices.ContainsFunc(k.machines, func(im *invMachine) bool { return im.m.ID == machineID }):
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, "", nil, o.fail(ctx, fmt.Errorf("%w: no key %s in team %s (see rediacc machine keys)", ErrNotFound, quoteInput(opts.Key+opts.Machine), quoteInput(sc.label())))
	}
	if !opts.All && keys[0].src == KeyBySSHCA {
		return nil, "", nil, o.fail(ctx, fmt.Errorf("%w: machine(s) %s have no long-lived key: they log in with certificates of team %q's SSH CA, made for each connection; rotate the CA instead (rediacc team ssh-ca rotate %s)",
			ErrInvalidArgument, strings.Join(keys[0].names(), ", "), keys[0].teamName, keys[0].teamName))
	}
	if !opts.All && keys[0].src == KeyInAgent {
		return nil, "", nil, o.fail(ctx, fmt.Errorf("%w: machine(s) %s log in with the ssh-agent's keys, which rediacc does not hold: rotate the agent's key yourself, or import a key file (machine add --identity)",
			ErrInvalidArgument, strings.Join(keys[0].names(), ", ")))
	}
	if len(keys) == 1 {
		o.eid = keys[0].id
		o.detail["fingerprint"] = keys[0].fingerprint()
	}
	return keys, typ, o, nil
}

// validateRotation checks the options and returns the new key's type.
func validateRotation(opts KeyRotationOptions) (rssh.KeyType, error) {
	typ, err := rssh.ParseKeyType(opts.Type)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	if typ == rssh.KeyRSA && opts.Bits != 0 && (opts.Bits < rssh.MinRSABits || opts.Bits > rssh.MaxRSABits) {
		return "", fmt.Errorf("%w: RSA key size %d bits is outside %d..%d", ErrInvalidArgument, opts.Bits, rssh.MinRSABits, rssh.MaxRSABits)
	}
	if typ == rssh.KeyEd25519 && opts.Bits != 0 {
		return "", fmt.Errorf("%w: --bits applies to RSA keys only (ed25519 keys have a fixed size)", ErrInvalidArgument)
	}
	named := 0
	for _, s := range []bool{opts.Machine != "", opts.Key != "", opts.All} {
		if s {
			named++
		}
	}
	switch {
	case named != 1:
		return "", fmt.Errorf("%w: name exactly one of a machine, a key, or a team with all its keys", ErrInvalidArgument)
	case opts.All && opts.Team == "":
		return "", fmt.Errorf("%w: rotating all keys needs a team", ErrInvalidArgument)
	case opts.Resume && opts.Rollback:
		return "", fmt.Errorf("%w: resume and rollback exclude each other", ErrInvalidArgument)
	case opts.Rollback && (opts.Type != "" || opts.Bits != 0):
		return "", fmt.Errorf("%w: a rollback restores the previous key: it takes no key type or size", ErrInvalidArgument)
	}
	return typ, nil
}

// cred is a private key (and its passphrase).
type cred struct {
	pem, pass []byte
	pub       gossh.PublicKey
}

func (cr cred) fp() string {
	if cr.pub == nil {
		return ""
	}
	return gossh.FingerprintSHA256(cr.pub)
}

// rotation is one key's rotation (or resume, rollback, dry run).
type rotation struct {
	c     *Client
	k     *invKey
	opts  KeyRotationOptions
	typ   rssh.KeyType
	actor string
	// guard: the actor still holds key.rotate in the key's team, checked
	// by the store in each of the rotation's writes (the lock, its
	// progress, the machines' records): a role revoked mid-rotation stops
	// it at its next write with ErrPermissionDenied, each machine keeping
	// a key that logs in (finish with Resume or Rollback as someone who
	// may).
	guard store.Condition
	log   *slog.Logger
	ke    store.KeyEngine
	owner string
	// hostCAs are the team's host CAs (SetSSHHostCAs): machines are
	// verified as for tasks.
	hostCAs []gossh.PublicKey

	mu     sync.Mutex // guards stored, rec (and st within it), done, causes
	stored store.Key
	rec    keyRecord
	done   int
	total  int
	causes []error

	oldPub gossh.PublicKey
	newKey cred
	prev   map[string]cred // by machine: the key being replaced
	others []Machine       // every live machine outside this key
}

func (r *rotation) st() *rotationState { return r.rec.Rotation }

// run does what r.opts says for r.k.
func (r *rotation) run(ctx context.Context) (KeyRotationResult, error) {
	k := r.k
	res := KeyRotationResult{KeyID: k.id, Team: k.teamName, TeamID: k.team, From: k.fingerprint()}
	for _, im := range k.machines {
		if im.pub == nil {
			return res, fmt.Errorf("%w: machine %s: its key cannot be read: %v", ErrKeyFile, im.m.Name, im.err)
		}
	}
	ke, err := r.c.keyEngine()
	if err != nil {
		return res, err
	}
	r.ke = ke
	if r.opts.DryRun {
		return r.dryRun(ctx, res)
	}
	if err := r.lock(ctx); err != nil {
		return res, err
	}
	stopRenew := r.keepLock()
	defer func() {
		stopRenew()
		r.unlock()
	}()
	if err := r.loadOthers(ctx); err != nil {
		return res, err
	}
	st := r.st()
	switch {
	case r.opts.Rollback:
		return r.rollback(ctx, res)
	case st != nil && !r.opts.Resume:
		res.Action = KeyActionUnfinished
		res.From, res.To = st.From, st.To
		res.Machines = st.public(k).Machines
		res.Note = "an earlier rotation of this key is unfinished: resume it (--resume) or roll it back (--rollback)"
		return res, &KeyRotationError{Results: []KeyRotationResult{res}}
	case st == nil && r.opts.Resume:
		res.Action = KeyActionNothing
		return res, nil
	}
	return r.rotate(ctx, res)
}

// lock takes the key's rotation lock (creating the key's record when it
// has none), or returns ErrKeyRotationBusy.
func (r *rotation) lock(ctx context.Context) error {
	c := r.c
	r.owner = c.id + "#" + uuid.NewString()
	for attempt := 0; attempt < 10; attempt++ {
		now := c.clock.Now().UTC()
		sk, err := r.ke.GetKey(ctx, r.k.id)
		if errors.Is(err, store.ErrNotFound) {
			view := c.view(r.k, now)
			rec := keyRecord{Type: view.Type, Bits: view.Bits, PublicKey: authorizedLine(r.k.pub), CreatedAt: view.CreatedAt,
				Lock: &keyLock{Owner: r.owner, Actor: r.actor, Until: now.Add(rotationLockTTL)}}
			data, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			sk, err = r.ke.CreateKey(r.guarded(ctx), store.Key{ID: r.k.id, TeamID: r.k.team, Fingerprint: r.k.fingerprint(), Data: data})
			if errors.Is(err, store.ErrExists) {
				continue
			}
			if err != nil {
				return mapStoreErr(err)
			}
			r.stored, r.rec = sk, rec
			return nil
		}
		if err != nil {
			return mapStoreErr(err)
		}
		if sk.TeamID != r.k.team {
			return fmt.Errorf("%w: key id %s belongs to team %q, not %q", ErrCorruptStore, r.k.id, sk.TeamID, r.k.team)
		}
		rec, err := decodeKeyRecord(sk)
		if err != nil {
			return err
		}
		if l := rec.Lock; l != nil && now.Before(l.Until) && !lockHolderDead(l.Owner) {
			return fmt.Errorf("%w: key %s of team %q is being rotated by %s (worker %s) until %s at the latest; try again later",
				ErrKeyRotationBusy, sk.Fingerprint, r.k.teamName, l.Actor, strings.SplitN(l.Owner, "#", 2)[0], l.Until.Format(time.RFC3339))
		}
		rec.Lock = &keyLock{Owner: r.owner, Actor: r.actor, Until: now.Add(rotationLockTTL)}
		data, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		sk.Data = data
		nk, err := r.ke.UpdateKey(r.guarded(ctx), sk)
		if errors.Is(err, store.ErrRevision) {
			continue
		}
		if err != nil {
			return mapStoreErr(err)
		}
		r.stored, r.rec = nk, rec
		return nil
	}
	return fmt.Errorf("%w: key %s of team %q: its record keeps changing; try again", ErrKeyRotationBusy, r.k.fingerprint(), r.k.teamName)
}

// lockHolderDead reports whether a lock owner ("host/pid/random#uuid") is
// a process of this host that no longer exists.
func lockHolderDead(owner string) bool {
	worker, _, _ := strings.Cut(owner, "#")
	return ownerDead(worker)
}

// keepLock renews the lock every third of its TTL until the returned stop.
func (r *rotation) keepLock() (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(rotationLockTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				if err := r.save(ctx); err != nil {
					r.log.Warn("renewing the key rotation lock failed", "error", err)
				}
				cancel()
			}
		}
	}()
	return func() { close(done); <-finished }
}

// save writes r.rec (with a renewed lock) to the store.
func (r *rotation) save(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.saveLocked(ctx, true)
}

func (r *rotation) saveLocked(ctx context.Context, keep bool) error {
	rec := r.rec
	if keep {
		rec.Lock = &keyLock{Owner: r.owner, Actor: r.actor, Until: r.c.clock.Now().UTC().Add(rotationLockTTL)}
	} else {
		rec.Lock = nil
	}
	if st := rec.Rotation; st != nil {
		st.UpdatedAt = r.c.clock.Now().UTC()
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	sk := r.stored
	sk.Data = data
	if rec.PublicKey != "" {
		sk.Fingerprint = fingerprintOf(rec.PublicKey)
	}
	nk, err := r.ke.UpdateKey(r.guarded(context.WithoutCancel(ctx)), sk)
	if !keep && isRoleGuard(err) {
		// The actor lost the role: release the lock alone, on the record
		// as last stored (nothing of this run's unsaved progress).
		nk, err = r.releaseOnly(context.WithoutCancel(ctx))
		rec = r.rec
		rec.Lock = nil
	}
	if errors.Is(err, store.ErrRevision) {
		return fmt.Errorf("%w: the lock on key %s was taken over by another rotation; this one stops", ErrKeyRotationBusy, r.k.fingerprint())
	}
	if err != nil {
		return mapStoreErr(err)
	}
	r.stored, r.rec.Lock = nk, rec.Lock
	return nil
}

// guarded is ctx with the rotation's role guard (see rotation.guard).
func (r *rotation) guarded(ctx context.Context) context.Context {
	if r.guard.Kind == "" {
		return ctx
	}
	return store.WithGuard(ctx, r.guard)
}

// isRoleGuard reports whether err is a store's refusal because the actor
// no longer holds the role.
func isRoleGuard(err error) bool {
	var ge *store.GuardError
	return errors.As(err, &ge) && ge.Condition.Kind == store.CondRole
}

// releaseOnly clears the lock on the key's record as last stored.
func (r *rotation) releaseOnly(ctx context.Context) (store.Key, error) {
	last, err := decodeKeyRecord(r.stored)
	if err != nil {
		return store.Key{}, err
	}
	last.Lock = nil
	data, err := json.Marshal(last)
	if err != nil {
		return store.Key{}, err
	}
	sk := r.stored
	sk.Data = data
	return r.ke.UpdateKey(ctx, sk)
}

func (r *rotation) unlock() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.saveLocked(ctx, false); err != nil {
		r.log.Warn("releasing the key rotation lock failed (it expires by itself)", "error", err)
	}
}

// setState records the state of machine (an id) in the unfinished rotation
// and saves it.
func (r *rotation) setState(ctx context.Context, machine, state, step string, cause error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.rec.Rotation
	if st == nil {
		return nil
	}
	ms := st.Machines[machine]
	if ms == nil {
		ms = &machineState{}
		st.Machines[machine] = ms
	}
	ms.State, ms.Step, ms.Error = state, step, ""
	if cause != nil {
		ms.Error = trimErr(cause)
	}
	return r.saveLocked(ctx, true)
}

func (r *rotation) machineState(id string) *machineState {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st := r.rec.Rotation; st != nil {
		if ms := st.Machines[id]; ms != nil {
			cp := *ms
			return &cp
		}
	}
	return &machineState{State: KeyStatePending}
}

// progress reports a step.
func (r *rotation) progress(machine, step string, err error) {
	if r.opts.Progress == nil {
		return
	}
	r.mu.Lock()
	if machine != "" {
		r.done++
	}
	ev := KeyRotationEvent{Key: r.k.fingerprint(), Machine: machine, Step: step, Err: err, Done: r.done, Total: r.total}
	r.mu.Unlock()
	progressMu.Lock()
	defer progressMu.Unlock()
	r.opts.Progress(ev)
}

var progressMu sync.Mutex

// audit appends a record of a rotation step.
func (r *rotation) audit(ctx context.Context, action, machine string, cause error, details map[string]string) {
	d := map[string]string{"key_id": r.k.id, "team_name": r.k.teamName}
	if machine != "" {
		d["machine"] = machine
	}
	for k, v := range details {
		d[k] = v
	}
	res := audit.ResultOK
	if cause != nil {
		res = audit.ResultError
		d["error"] = trimErr(cause)
	}
	r.c.appendAudit(ctx, audit.Record{Time: r.c.clock.Now().UTC(), Actor: r.actor, Action: action,
		EntityType: audit.EntityKey, EntityID: r.k.id, Team: r.k.team, Result: res, Details: d})
}

// loadOthers reads every live machine outside the key (for the
// shared-account check before revoking).
func (r *rotation) loadOthers(ctx context.Context) error {
	rs, err := r.c.engine.ListMachines(ctx, store.MachineFilter{})
	if err != nil {
		return mapStoreErr(err)
	}
	for _, rec := range rs {
		m, err := machineFromRecord(rec)
		if err != nil {
			continue
		}
		if !slices.ContainsFunc(r.k.machines, func(im *invMachine) bool { return im.m.ID == m.ID }) {
			r.others = append(r.others, m)
		}
	}
	return nil
}

// keysOf returns m's current key and, for a key in the vault, the version
// before it (zero cred when there is none).
func (r *rotation) keysOf(ctx context.Context, m Machine) (cur, prev cred, curVersion int, err error) {
	if m.IdentitySecret == "" {
		pemBytes, pass, err := r.c.currentKeyPEM(ctx, m)
		if err != nil {
			return cred{}, cred{}, 0, err
		}
		cur, err = newCred(pemBytes, pass)
		return cur, cred{}, 0, err
	}
	v, err := r.c.vault()
	if err != nil {
		return cred{}, cred{}, 0, err
	}
	pass, err := r.c.passphrase(ctx, m)
	if err != nil {
		return cred{}, cred{}, 0, fmt.Errorf("%w: passphrase for machine %s: %v", ErrWrongPassphrase, m.Name, err)
	}
	s, err := v.Get(ctx, m.TeamID, m.IdentitySecret)
	if err != nil {
		return cred{}, cred{}, 0, fmt.Errorf("%w: machine %s's identity %q: %v", ErrKeyFile, m.Name, m.IdentitySecret, vaultErr(err))
	}
	if cur, err = newCred(s.Value, pass); err != nil {
		return cred{}, cred{}, 0, err
	}
	if s.Version > 1 {
		p, err := v.GetVersion(ctx, m.TeamID, m.IdentitySecret, s.Version-1)
		if err == nil {
			prev, _ = newCred(p.Value, pass)
		} else if !errors.Is(err, vault.ErrSecretNotFound) {
			return cred{}, cred{}, 0, vaultErr(err)
		}
	}
	return cur, prev, s.Version, nil
}

func newCred(pemBytes, pass []byte) (cred, error) {
	s, err := parseSigner(pemBytes, pass)
	if err != nil {
		return cred{}, err
	}
	return cred{pem: pemBytes, pass: pass, pub: s.PublicKey()}, nil
}

// target is m reached with exactly the given keys (role says what for).
func (r *rotation) target(m Machine, role string, creds ...cred) rssh.Target {
	t := m.target(nil, nil)
	t.Name, t.Auth, t.HostKey = m.Name, nil, r.c.hostKeyPolicy(m)
	if len(r.hostCAs) > 0 {
		t.HostKey = t.HostKey.WithHostCAs(r.hostCAs...)
	}
	for _, cr := range creds {
		if cr.pem != nil {
			t.Auth = append(t.Auth, rssh.PrivateKey(cr.pem, cr.pass))
		}
	}
	if len(t.Auth) == 0 {
		r.log.Debug("key rotation: no key to offer", "machine", m.Name, "for", role)
	}
	return t
}

// fresh runs fn on a pool of its own, so that every connection it makes is
// new (and authenticates with the target's keys only), and closes it.
func (r *rotation) fresh(fn func(p *rssh.Pool) error) error {
	cfg := r.c.cfg.SSH
	if cfg.Logger == nil {
		cfg.Logger = r.c.log
	}
	cfg.MaxConnsPerHost = 1
	p := rssh.NewPool(cfg)
	defer p.Close()
	return fn(p)
}

// login runs a trivial command on t over a new connection.
func (r *rotation) login(ctx context.Context, t rssh.Target) (serverVersion string, err error) {
	ctx, cancel := context.WithTimeout(ctx, rotationProbeTimeout)
	defer cancel()
	err = r.fresh(func(p *rssh.Pool) error {
		var err error
		serverVersion, err = p.ServerVersion(ctx, t)
		if err != nil {
			return err
		}
		_, err = p.Run(ctx, t, rssh.Command{Cmd: "exit 0", Timeout: rotationProbeTimeout})
		return err
	})
	return serverVersion, err
}

// editContext bounds a step that edits a machine's authorized_keys. It is
// not cancelled with ctx: a cancellation (the task cancelled, the worker
// shutting down) takes effect between steps, never in the middle of a
// replacement. Each step checks ctx before it starts.
func editContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 2*rotationProbeTimeout)
}

// forEach runs fn for each machine, rotationParallel at a time, and waits.
func (r *rotation) forEach(ctx context.Context, ms []*invMachine, fn func(im *invMachine)) {
	sem := make(chan struct{}, rotationParallel)
	var wg sync.WaitGroup
	for _, im := range ms {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(im)
		}()
	}
	wg.Wait()
}

// check is the dry run's (and the rotation's) pre-flight on one machine:
// login with cr, sshd new enough for the key type, authorized_keys
// readable and replaceable.
func (r *rotation) check(ctx context.Context, m Machine, creds ...cred) error {
	ctx, cancel := context.WithTimeout(ctx, rotationProbeTimeout)
	defer cancel()
	return r.fresh(func(p *rssh.Pool) error {
		t := r.target(m, "check", creds...)
		ver, err := p.ServerVersion(ctx, t)
		if err != nil {
			return err
		}
		if !r.opts.Rollback && !rssh.KeyTypeSupported(ver, r.typ) {
			maj, min := rssh.MinOpenSSHFor(r.typ)
			return fmt.Errorf("%w: machine %s runs %s, too old for %s keys (OpenSSH %d.%d or later needed): rotate with --type rsa --bits 4096",
				ErrKeyTypeUnsupported, m.Name, ver, r.typ, maj, min)
		}
		f, err := p.ReadAuthorizedKeys(ctx, t, m.AuthorizedKeysFile)
		if err != nil {
			return err
		}
		if !f.Writable {
			return fmt.Errorf("%w: machine %s (%s@%s): %s: user %s cannot replace it; make it (and its directory) writable by %s",
				ErrAuthorizedKeysNotWritable, m.Name, m.User, t.Addr(), f.Problem, m.User, m.User)
		}
		return nil
	})
}

// dryRun checks every machine and changes nothing.
func (r *rotation) dryRun(ctx context.Context, res KeyRotationResult) (KeyRotationResult, error) {
	res.Action = KeyActionDryRun
	r.total = len(r.k.machines)
	var mu sync.Mutex
	states := map[string]MachineKeyState{}
	var causes []error
	r.forEach(ctx, r.k.machines, func(im *invMachine) {
		cur, prev, _, err := r.keysOf(ctx, im.m)
		if err == nil && r.opts.Rollback {
			if prev.pub == nil {
				err = fmt.Errorf("%w: machine %s has no previous key in the vault", ErrRollbackImpossible, im.m.Name)
			} else {
				cur = prev
			}
		}
		if err == nil {
			err = r.check(ctx, im.m, cur)
		}
		ms := MachineKeyState{Machine: im.m.Name, State: KeyStateReady}
		if err != nil {
			ms.State, ms.Step, ms.Error = KeyStateFailed, "check", err.Error()
		}
		mu.Lock()
		states[im.m.ID] = ms
		if err != nil {
			causes = append(causes, err)
		}
		mu.Unlock()
		r.progress(im.m.Name, "check", err)
	})
	for _, im := range r.k.machines {
		res.Machines = append(res.Machines, states[im.m.ID])
	}
	if len(causes) > 0 {
		res.Action = KeyActionNotReady
		return res, &KeyRotationError{Results: []KeyRotationResult{res}, causes: causes}
	}
	return res, nil
}

// authorizedLine is k in authorized_keys form without a comment.
func authorizedLine(k gossh.PublicKey) string {
	if k == nil {
		return ""
	}
	return strings.TrimSpace(string(gossh.MarshalAuthorizedKey(k)))
}

// rotate makes (or, resuming, recovers) the new key and takes every
// machine through install, verify, store, revoke and prove.
func (r *rotation) rotate(ctx context.Context, res KeyRotationResult) (KeyRotationResult, error) {
	k := r.k
	st := r.st()
	res.Action = KeyActionRotated
	if st != nil {
		res.Action = KeyActionResumed
	}
	// The keys of every machine: the one to replace, and (resuming) the
	// new one, found in the vault once stored.
	r.prev = map[string]cred{}
	var oldCred, newCred cred
	for _, im := range k.machines {
		cur, prev, _, err := r.keysOf(ctx, im.m)
		if err != nil {
			return res, err
		}
		switch {
		case st != nil && cur.fp() == st.To:
			newCred = cur
			r.prev[im.m.ID] = prev
		default:
			r.prev[im.m.ID] = cur
		}
		if oldCred.pub == nil {
			oldCred = r.prev[im.m.ID]
		}
	}
	if st != nil && newCred.pub == nil {
		// The interrupted attempt never stored its new key: it is lost.
		// Its lines are removed below (stale lines of this key) and the
		// rotation starts again with a new key.
		r.log.Info("the unfinished rotation's new key never reached the vault; starting again with a new key", "lost", st.To)
		res.Note = "the interrupted rotation's new key " + st.To + " never reached the vault; rotated with a new key instead"
		res.Action = KeyActionRotated
		r.mu.Lock()
		r.rec.Rotation = nil
		r.mu.Unlock()
		st = nil
	}
	r.oldPub = oldCred.pub
	if st == nil {
		r.oldPub = k.pub
		signer, pemBytes, err := rssh.GenerateKey(r.typ, r.opts.Bits, "rediacc key "+k.id)
		if err != nil {
			return res, err
		}
		newCred = cred{pem: pemBytes, pub: signer.PublicKey()}
		now := r.c.clock.Now().UTC()
		st = &rotationState{ID: uuid.NewString(), From: k.fingerprint(), To: newCred.fp(), ToPublicKey: authorizedLine(newCred.pub),
			ToType: newCred.pub.Type(), ToBits: rssh.KeyBits(newCred.pub), StartedAt: now, By: r.actor, Machines: map[string]*machineState{}}
		for _, im := range k.machines {
			st.Machines[im.m.ID] = &machineState{State: KeyStatePending}
		}
		r.mu.Lock()
		r.rec.Rotation = st
		err = r.saveLocked(ctx, true)
		r.mu.Unlock()
		if err != nil {
			return res, err
		}
		r.audit(ctx, "key.generate", "", nil, map[string]string{"fingerprint": st.To, "type": st.ToType,
			"bits": strconv.Itoa(st.ToBits), "replaces": st.From})
		r.progress("", "generate", nil)
		r.hook("generate", "")
	}
	r.newKey = newCred
	res.From, res.To = st.From, st.To
	r.total = 3 * len(k.machines)

	// Install and verify, machine by machine (a few at a time).
	r.forEach(ctx, k.machines, func(im *invMachine) {
		if ms := r.machineState(im.m.ID); ms.State == KeyStateRevoked {
			return
		}
		err := r.installAndVerify(ctx, im.m)
		if err != nil {
			r.fail(ctx, im.m, err)
		}
	})
	if err := ctx.Err(); err != nil {
		return r.result(res), err
	}
	verified := 0
	for _, im := range k.machines {
		if s := r.machineState(im.m.ID).State; s == KeyStateVerified || s == KeyStateRevoked {
			verified++
		}
	}
	if verified == 0 && !st.Stored {
		// Nobody took the new key: take its lines away again where we can
		// and leave everything as it was.
		r.forEach(ctx, k.machines, func(im *invMachine) { r.removeKey(ctx, im.m, r.newKey.pub, r.prev[im.m.ID]) })
		res = r.result(res)
		r.mu.Lock()
		r.rec.Rotation = nil
		err := r.saveLocked(ctx, true)
		r.mu.Unlock()
		res.Action = KeyActionFailed
		res.Note = "no machine accepted the new key: nothing changed (the old key still logs in everywhere)"
		rerr := r.errorFor(res)
		if err != nil {
			return res, errors.Join(rerr, err)
		}
		return res, rerr
	}
	if err := r.storeNew(ctx); err != nil {
		return r.result(res), err
	}
	if verified < len(k.machines) {
		res = r.result(res)
		res.Action = KeyActionUnfinished
		res.Note = "the old key is kept everywhere until every machine accepts the new one: fix the failed machines and resume (rotate-key --resume), or roll back (--rollback)"
		return res, r.errorFor(res)
	}
	// Every machine accepted the new key: revoke the old one.
	r.forEach(ctx, k.machines, func(im *invMachine) {
		if ms := r.machineState(im.m.ID); ms.State == KeyStateRevoked {
			return
		}
		if err := r.revoke(ctx, im.m); err != nil {
			r.fail(ctx, im.m, err)
		}
	})
	if err := ctx.Err(); err != nil {
		return r.result(res), err
	}
	res = r.result(res)
	for _, ms := range res.Machines {
		if ms.State != KeyStateRevoked {
			res.Action = KeyActionUnfinished
			res.Note = "the new key is in use everywhere; the old key could not be revoked on every machine: resume (rotate-key --resume) to finish"
			return res, r.errorFor(res)
		}
	}
	r.mu.Lock()
	r.rec.Rotation = nil
	err := r.saveLocked(ctx, true)
	r.mu.Unlock()
	r.progress("", "done", err)
	r.log.InfoContext(ctx, "SSH key rotated", "from", res.From, "to", res.To, "machines", strings.Join(k.names(), ","), "action", res.Action)
	return res, err
}

// result fills res.Machines from the rotation state.
func (r *rotation) result(res KeyRotationResult) KeyRotationResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	res.Machines = nil
	for _, im := range r.k.machines {
		ms := MachineKeyState{Machine: im.m.Name, State: KeyStatePending}
		if st := r.rec.Rotation; st != nil {
			if s := st.Machines[im.m.ID]; s != nil {
				ms = MachineKeyState{Machine: im.m.Name, State: s.State, Step: s.Step, Error: s.Error, Note: s.Note}
			}
		}
		res.Machines = append(res.Machines, ms)
	}
	return res
}

// errorFor builds the *KeyRotationError of res with the causes seen.
func (r *rotation) errorFor(res KeyRotationResult) error {
	r.mu.Lock()
	causes := slices.Clone(r.causes)
	r.mu.Unlock()
	if res.Machines == nil {
		res = r.result(res)
	}
	return &KeyRotationError{Results: []KeyRotationResult{res}, causes: causes}
}

// fail records that a machine failed at its current step.
func (r *rotation) fail(ctx context.Context, m Machine, err error) {
	step := "install"
	var se *stepError
	if errors.As(err, &se) {
		step = se.step
	}
	r.mu.Lock()
	r.causes = append(r.causes, err)
	r.mu.Unlock()
	if serr := r.setState(ctx, m.ID, KeyStateFailed, step, err); serr != nil {
		r.log.Warn("recording a failed machine in the rotation state failed", "machine", m.Name, "error", serr)
	}
	r.audit(ctx, "key.rotate.failed", m.Name, err, map[string]string{"step": step, "fingerprint": r.k.fingerprint()})
	r.log.Warn("key rotation: machine failed", "machine", m.Name, "step", step, "error", err)
}

// stepError ties an error to the step that failed.
type stepError struct {
	step string
	err  error
}

func (e *stepError) Error() string { return e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

func failedAt(step string, err error) error {
	if err == nil {
		return nil
	}
	return &stepError{step: step, err: err}
}

// installAndVerify adds the new key on m (over whichever of the old and
// new keys logs in) and logs in with the new key alone.
func (r *rotation) installAndVerify(ctx context.Context, m Machine) error {
	if err := ctx.Err(); err != nil {
		return failedAt("install", err)
	}
	old := r.prev[m.ID]
	var serverVersion string
	err := r.fresh(func(p *rssh.Pool) error {
		cctx, cancel := editContext(ctx)
		defer cancel()
		t := r.target(m, "install", old, r.newKey)
		ver, err := p.ServerVersion(cctx, t)
		if err != nil {
			return failedAt("connect", err)
		}
		serverVersion = ver
		if kt := rssh.KeyType(strings.TrimPrefix(r.newKey.pub.Type(), "ssh-")); !rssh.KeyTypeSupported(ver, kt) {
			maj, min := rssh.MinOpenSSHFor(kt)
			return failedAt("connect", fmt.Errorf("%w: machine %s runs %s, too old for %s keys (OpenSSH %d.%d or later needed): rotate with --type rsa --bits 4096",
				ErrKeyTypeUnsupported, m.Name, ver, r.newKey.pub.Type(), maj, min))
		}
		now := r.c.clock.Now().UTC()
		_, after, err := p.UpdateAuthorizedKeys(cctx, t, m.AuthorizedKeysFile, func(content []byte) ([]byte, error) {
			content, _ = rssh.RemoveAuthorizedKeys(content, func(l rssh.AuthorizedKeyLine) bool {
				return ourLine(l.Comment, r.k.id) && !rssh.SameKey(l.Key, r.newKey.pub) && !rssh.SameKey(l.Key, old.pub)
			})
			content, _ = rssh.AddAuthorizedKey(content, r.newKey.pub, keyComment(r.k.id, m, now))
			return content, nil
		})
		if err != nil {
			return failedAt("install", err)
		}
		path := m.AuthorizedKeysFile
		if after != nil {
			path = after.Path
		}
		r.audit(ctx, "key.install", m.Name, nil, map[string]string{"fingerprint": r.newKey.fp(), "file": path})
		return nil
	})
	if err != nil {
		return err
	}
	if err := r.setState(ctx, m.ID, KeyStateInstalled, "install", nil); err != nil {
		return failedAt("install", err)
	}
	r.progress(m.Name, "install", nil)
	r.hook("install", m.Name)
	if err := ctx.Err(); err != nil {
		return failedAt("verify", err)
	}

	_, err = r.login(ctx, r.target(m, "verify", r.newKey))
	if err != nil {
		if errors.Is(err, ErrAuthFailed) {
			path := m.AuthorizedKeysFile
			if path == "" {
				path = "~/" + rssh.DefaultAuthorizedKeysFile
			}
			err = fmt.Errorf("%w: machine %s refused the new %s key although it was added to %s: sshd there may read keys from another file (AuthorizedKeysFile: set the machine's authorized_keys path), refuse %s keys (PubkeyAcceptedAlgorithms) or be too old for them (it announces %q): %v",
				ErrKeyTypeUnsupported, m.Name, r.newKey.pub.Type(), path, r.newKey.pub.Type(), serverVersion, err)
		}
		r.audit(ctx, "key.verify", m.Name, err, map[string]string{"fingerprint": r.newKey.fp()})
		return failedAt("verify", err)
	}
	r.audit(ctx, "key.verify", m.Name, nil, map[string]string{"fingerprint": r.newKey.fp()})
	if err := r.setState(ctx, m.ID, KeyStateVerified, "verify", nil); err != nil {
		return failedAt("verify", err)
	}
	r.progress(m.Name, "verify", nil)
	r.hook("verify", m.Name)
	return nil
}

// removeKey takes key's lines off m over cr (best effort: for undoing an
// install no machine verified).
func (r *rotation) removeKey(ctx context.Context, m Machine, key gossh.PublicKey, cr cred) {
	err := r.fresh(func(p *rssh.Pool) error {
		cctx, cancel := editContext(ctx)
		defer cancel()
		_, _, err := p.UpdateAuthorizedKeys(cctx, r.target(m, "undo", cr), m.AuthorizedKeysFile, func(content []byte) ([]byte, error) {
			out, _ := rssh.RemoveAuthorizedKeys(content, func(l rssh.AuthorizedKeyLine) bool { return rssh.SameKey(l.Key, key) })
			return out, nil
		})
		return err
	})
	if err != nil {
		r.log.Info("could not take the unused new key off the machine (a later rotation will)", "machine", m.Name, "error", err)
	}
}

// storeNew stores the new key as the current version of every machine's
// identity in the vault (keeping the old one as the previous version),
// points the machines at it and records the rotation as stored. Machines
// whose identity was a file move to the vault (the file's key first, as
// the previous version). Idempotent: entries already holding the new key
// are left alone.
func (r *rotation) storeNew(ctx context.Context) error {
	c := r.c
	v, err := c.vault()
	if err != nil {
		return err
	}
	newFP := r.newKey.fp()
	for _, im := range r.k.machines {
		m := im.m
		ref := m.IdentitySecret
		if ref == "" {
			ref = ownIdentity(m.ID)
			old := r.prev[m.ID]
			pemBytes, err := unencryptedPEM(old)
			if err != nil {
				return fmt.Errorf("machine %s's identity file: %w", m.Name, err)
			}
			if _, err := v.Put(ctx, m.TeamID, ref, pemBytes, PutOptions{CAS: CAS(0)}); err != nil && !errors.Is(err, vault.ErrVersionConflict) {
				return fmt.Errorf("storing machine %s's current key in the vault: %w", m.Name, vaultErr(err))
			}
		}
		cur, err := v.Get(ctx, m.TeamID, ref)
		if err != nil {
			return fmt.Errorf("reading machine %s's identity from the vault: %w", m.Name, vaultErr(err))
		}
		if cr, err := newCred(cur.Value, nil); err != nil || cr.fp() != newFP {
			ver, err := v.Put(ctx, m.TeamID, ref, r.newKey.pem, PutOptions{CAS: CAS(cur.Version)})
			if err != nil {
				return fmt.Errorf("storing the new key of machine %s in the vault: %w", m.Name, vaultErr(err))
			}
			r.audit(ctx, "key.store", m.Name, nil, map[string]string{"fingerprint": newFP, "vault_key": ref, "version": strconv.Itoa(ver)})
		}
		r.hook("store", m.Name)
		if err := c.pointMachine(r.guarded(ctx), m, func(mm *Machine) {
			mm.IdentitySecret, mm.IdentityFile, mm.KeyID = ref, "", r.k.id
			mm.setPublicKey(r.newKey.pub)
		}); err != nil {
			return err
		}
		// The steps after this one (revoke) read the key where the machine
		// now points: the vault (an identity file's machine moved to it).
		im.m.IdentitySecret, im.m.IdentityFile, im.m.KeyID = ref, "", r.k.id
		c.pool.Forget(m.poolName()) // new connections use the new key; in-flight sessions finish
	}
	now := c.clock.Now().UTC()
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.rec.Rotation
	if !st.Stored {
		r.rec.Previous = st.From
		r.rec.CreatedAt, r.rec.RotatedAt = now, now
	}
	st.Stored = true
	r.rec.PublicKey, r.rec.Type, r.rec.Bits = st.ToPublicKey, st.ToType, st.ToBits
	if err := r.saveLocked(ctx, true); err != nil {
		return err
	}
	r.hook("store", "")
	return nil
}

// pointMachine updates machine m's record with change, as long as it is
// still the machine of m.TeamID (checked in the update's transaction, so a
// move in between is neither undone nor followed: ErrConflict) and the
// guards ctx carries hold (a rotation's: its actor's role).
func (c *Client) pointMachine(ctx context.Context, m Machine, change func(*Machine)) error {
	r, err := c.engine.GetMachine(ctx, m.ID)
	if err != nil {
		return mapStoreErr(err)
	}
	cur, err := machineFromRecord(r)
	if err != nil {
		return err
	}
	if cur.TeamID != m.TeamID || !r.DeletedAt.IsZero() {
		return fmt.Errorf("%w: machine %s left team %q during the key rotation", ErrConflict, m.Name, m.Team)
	}
	change(&cur)
	rec, err := cur.record()
	if err != nil {
		return err
	}
	rec.UpdatedAt = c.clock.Now().UTC()
	if err := c.engine.UpdateMachine(store.WithGuard(ctx, store.MachineInTeam(m.ID, m.TeamID)), rec); err != nil {
		return fmt.Errorf("updating machine %s: %w", m.Name, mapStoreErr(err))
	}
	return nil
}

// revoke removes the old key from m over a connection with the new key
// alone, then shows that a fresh connection with the old key alone is
// refused. The old key stays where another machine (outside this key)
// still logs in with it on the same account.
func (r *rotation) revoke(ctx context.Context, m Machine) error {
	// The invariant, checked where the write happens: the vault holds the
	// new key for m.
	cur, _, _, err := r.keysOf(ctx, m)
	if err != nil {
		return failedAt("revoke", err)
	}
	if cur.fp() != r.newKey.fp() {
		return failedAt("revoke", fmt.Errorf("machine %s's key in the vault is %s, not the new key %s: the old key is kept", m.Name, cur.fp(), r.newKey.fp()))
	}
	old := r.prev[m.ID]
	if err := ctx.Err(); err != nil {
		return failedAt("revoke", err)
	}
	for _, o := range r.others {
		if o.Host == m.Host && o.Port == m.Port && o.User == m.User && o.KeyFingerprint == old.fp() {
			note := fmt.Sprintf("old key kept on %s@%s:%d: machine %s (team %s) still logs in with it there", m.User, m.Host, m.Port, o.Name, o.Team)
			r.mu.Lock()
			if ms := r.rec.Rotation.Machines[m.ID]; ms != nil {
				ms.Note = note
			}
			r.mu.Unlock()
			r.audit(ctx, "key.revoke", m.Name, nil, map[string]string{"fingerprint": old.fp(), "kept": note})
			return r.setState(ctx, m.ID, KeyStateRevoked, "revoke", nil)
		}
	}
	err = r.fresh(func(p *rssh.Pool) error {
		cctx, cancel := editContext(ctx)
		defer cancel()
		_, _, err := p.UpdateAuthorizedKeys(cctx, r.target(m, "revoke", r.newKey), m.AuthorizedKeysFile, func(content []byte) ([]byte, error) {
			out, _ := rssh.RemoveAuthorizedKeys(content, func(l rssh.AuthorizedKeyLine) bool { return rssh.SameKey(l.Key, old.pub) })
			return out, nil
		})
		return err
	})
	r.audit(ctx, "key.revoke", m.Name, err, map[string]string{"fingerprint": old.fp()})
	if err != nil {
		return failedAt("revoke", err)
	}
	r.progress(m.Name, "revoke", nil)
	r.hook("revoke", m.Name)
	if err := r.prove(ctx, m, old); err != nil {
		return failedAt("prove", err)
	}
	if err := r.setState(ctx, m.ID, KeyStateRevoked, "prove", nil); err != nil {
		return failedAt("prove", err)
	}
	r.progress(m.Name, "prove", nil)
	r.hook("prove", m.Name)
	return nil
}

// prove shows that a fresh connection offering only old is refused.
func (r *rotation) prove(ctx context.Context, m Machine, old cred) error {
	_, err := r.login(ctx, r.target(m, "prove", old))
	switch {
	case err == nil:
		return fmt.Errorf("%w: machine %s still accepts the old key %s after its line was removed from authorized_keys: sshd there reads other key files too (AuthorizedKeysFile), or the key is authorized elsewhere; remove it there and resume",
			ErrAuthorizedKeysNotWritable, m.Name, old.fp())
	case errors.Is(err, ErrAuthFailed):
		return nil
	}
	return fmt.Errorf("could not show that machine %s refuses the old key %s: %w", m.Name, old.fp(), err)
}

// rollback makes the previous key current again (see
// KeyRotationOptions.Rollback).
func (r *rotation) rollback(ctx context.Context, res KeyRotationResult) (KeyRotationResult, error) {
	k := r.k
	st := r.st()
	res.Action = KeyActionRolledBack
	r.prev = map[string]cred{}
	if st != nil {
		// Is the new key in the vault yet?
		stored := false
		for _, im := range k.machines {
			cur, _, _, err := r.keysOf(ctx, im.m)
			if err != nil {
				return res, err
			}
			stored = stored || cur.fp() == st.To
		}
		if !stored {
			// Abandon it: take the new key's lines away (and any other
			// stale line of this key).
			newPub, _, _, _, err := gossh.ParseAuthorizedKey([]byte(st.ToPublicKey))
			if err != nil {
				return res, fmt.Errorf("%w: key %s: unfinished rotation without a readable new key: %v", ErrCorruptStore, k.id, err)
			}
			var causes []error
			var mu sync.Mutex
			r.forEach(ctx, k.machines, func(im *invMachine) {
				cur, _, _, err := r.keysOf(ctx, im.m)
				if err == nil {
					err = r.fresh(func(p *rssh.Pool) error {
						cctx, cancel := editContext(ctx)
						defer cancel()
						_, _, err := p.UpdateAuthorizedKeys(cctx, r.target(im.m, "abandon", cur), im.m.AuthorizedKeysFile, func(content []byte) ([]byte, error) {
							out, _ := rssh.RemoveAuthorizedKeys(content, func(l rssh.AuthorizedKeyLine) bool {
								return rssh.SameKey(l.Key, newPub) || (ourLine(l.Comment, k.id) && !rssh.SameKey(l.Key, cur.pub))
							})
							return out, nil
						})
						return err
					})
				}
				r.audit(ctx, "key.rollback", im.m.Name, err, map[string]string{"from": st.To, "to": st.From, "stored": "false"})
				mu.Lock()
				if err != nil {
					causes = append(causes, err)
					r.rec.Rotation.Machines[im.m.ID] = &machineState{State: KeyStateFailed, Step: "rollback", Error: trimErr(err)}
				}
				mu.Unlock()
				r.progress(im.m.Name, "rollback", err)
			})
			res.From, res.To, res.Action = st.To, st.From, KeyActionAbandoned
			if len(causes) > 0 {
				res = r.result(res)
				res.Note = "the new key was never stored, so the old one logs in everywhere; its lines could not be removed on every machine (a later rotation removes them)"
				r.mu.Lock()
				r.rec.Rotation = nil
				_ = r.saveLocked(ctx, true)
				r.mu.Unlock()
				return res, &KeyRotationError{Results: []KeyRotationResult{res}, causes: causes}
			}
			r.mu.Lock()
			r.rec.Rotation = nil
			err = r.saveLocked(ctx, true)
			r.mu.Unlock()
			res.Machines = k.states(KeyStateRevoked)
			return res, err
		}
	}
	// The previous version of every machine's identity must still log in.
	cur := map[string]cred{}
	var causes []error
	var mu sync.Mutex
	for _, im := range k.machines {
		c, p, _, err := r.keysOf(ctx, im.m)
		if err != nil {
			return res, err
		}
		if p.pub == nil {
			return res, fmt.Errorf("%w: machine %s has no previous key in the vault (it was never rotated, or joined after the last rotation)", ErrRollbackImpossible, im.m.Name)
		}
		cur[im.m.ID], r.prev[im.m.ID] = c, p
	}
	first := k.machines[0].m.ID
	res.From, res.To = cur[first].fp(), r.prev[first].fp()
	states := map[string]MachineKeyState{}
	r.forEach(ctx, k.machines, func(im *invMachine) {
		_, err := r.login(ctx, r.target(im.m, "rollback-check", r.prev[im.m.ID]))
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if errors.Is(err, ErrAuthFailed) {
				err = fmt.Errorf("%w: the previous key %s no longer logs in on machine %s (the rotation revoked it there): roll back only while it is still authorized; rotate again instead",
					ErrRollbackImpossible, r.prev[im.m.ID].fp(), im.m.Name)
			}
			causes = append(causes, err)
			states[im.m.ID] = MachineKeyState{Machine: im.m.Name, State: KeyStateFailed, Step: "check", Error: err.Error()}
		}
	})
	if len(causes) > 0 {
		for _, im := range k.machines {
			ms, ok := states[im.m.ID]
			if !ok {
				ms = MachineKeyState{Machine: im.m.Name, State: KeyStateReady}
			}
			res.Machines = append(res.Machines, ms)
		}
		res.Action = KeyActionFailed
		res.Note = "nothing changed"
		for i, c := range causes {
			if !errors.Is(c, ErrRollbackImpossible) {
				causes[i] = fmt.Errorf("%w: %w", ErrRollbackImpossible, c)
			}
		}
		return res, errors.Join(causes...)
	}
	// Restore: the previous key becomes current (a new version) everywhere.
	v, err := r.c.vault()
	if err != nil {
		return res, err
	}
	restored := r.prev[first]
	for _, im := range k.machines {
		m := im.m
		s, err := v.Get(ctx, m.TeamID, m.IdentitySecret)
		if err != nil {
			return res, vaultErr(err)
		}
		ver, err := v.Put(ctx, m.TeamID, m.IdentitySecret, r.prev[m.ID].pem, PutOptions{CAS: CAS(s.Version)})
		if err != nil {
			return res, fmt.Errorf("restoring machine %s's previous key in the vault: %w", m.Name, vaultErr(err))
		}
		if err := r.c.pointMachine(r.guarded(ctx), m, func(mm *Machine) { mm.KeyID = k.id; mm.setPublicKey(r.prev[m.ID].pub) }); err != nil {
			return res, err
		}
		r.c.pool.Forget(m.poolName())
		r.audit(ctx, "key.rollback", m.Name, nil, map[string]string{"from": cur[m.ID].fp(), "to": r.prev[m.ID].fp(), "version": strconv.Itoa(ver)})
	}
	now := r.c.clock.Now().UTC()
	r.mu.Lock()
	r.rec.Previous, r.rec.PublicKey, r.rec.RotatedAt = res.From, authorizedLine(restored.pub), now
	r.rec.Type, r.rec.Bits = restored.pub.Type(), rssh.KeyBits(restored.pub)
	r.rec.Rotation = &rotationState{ID: uuid.NewString(), From: res.From, To: res.To, ToPublicKey: authorizedLine(restored.pub),
		ToType: restored.pub.Type(), Stored: true, StartedAt: now, By: r.actor, Machines: map[string]*machineState{}}
	for _, im := range k.machines {
		r.rec.Rotation.Machines[im.m.ID] = &machineState{State: KeyStateVerified}
	}
	err = r.saveLocked(ctx, true)
	r.mu.Unlock()
	if err != nil {
		return res, err
	}
	r.hook("rollback", "")
	// Then revoke the key rolled back from, as a rotation would.
	r.newKey = restored
	for name, c := range cur {
		r.prev[name] = c
	}
	r.total = len(k.machines)
	r.forEach(ctx, k.machines, func(im *invMachine) {
		if err := r.revoke(ctx, im.m); err != nil {
			r.fail(ctx, im.m, err)
		}
	})
	res = r.result(res)
	res.Action = KeyActionRolledBack
	for _, ms := range res.Machines {
		if ms.State != KeyStateRevoked {
			res.Note = "the previous key is current again; the newer key could not be revoked on every machine: resume (rotate-key --resume) to finish"
			return res, r.errorFor(res)
		}
	}
	r.mu.Lock()
	r.rec.Rotation = nil
	err = r.saveLocked(ctx, true)
	r.mu.Unlock()
	r.log.InfoContext(ctx, "SSH key rolled back", "from", res.From, "to", res.To, "machines", strings.Join(k.names(), ","))
	return res, err
}

// unencryptedPEM returns cr's key as OpenSSH PEM without a passphrase, in
// memory, for the vault (which encrypts it): a file key moving into the
// vault must not need the file's passphrase any more.
func unencryptedPEM(cr cred) ([]byte, error) {
	if len(cr.pass) == 0 {
		return cr.pem, nil
	}
	raw, err := gossh.ParseRawPrivateKeyWithPassphrase(cr.pem, cr.pass)
	if err != nil {
		if _, perr := gossh.ParseRawPrivateKey(cr.pem); perr == nil {
			return cr.pem, nil // not encrypted after all
		}
		return nil, fmt.Errorf("%w: %v", ErrWrongPassphrase, err)
	}
	block, err := gossh.MarshalPrivateKey(raw, "")
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(block), nil
}
