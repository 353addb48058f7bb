package rediacc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/safefs"
)

// The audit trail's key and checkpoints (docs/AUDIT.md).
//
// Every audit record is sealed with an HMAC-SHA256 key that the store does
// not hold (the audit keyring: by default the file DataDir/audit.key, 0600,
// beside the vault's key), so a writer of the store without the key cannot
// re-seal a record it changed. Checkpoints of the chain's head, sealed with
// the same key, are appended to a file beside the log archive and to the
// structured log, so that a rewrite of the store and its head by someone
// who holds the key is caught by VerifyAudit(ctx, WithCheckpoints()).

// DefaultAuditCheckpointInterval is Config.AuditCheckpointInterval's
// default.
const DefaultAuditCheckpointInterval = time.Minute

// AuditCheckpointFileName is the checkpoint file's name in
// Config.ArchiveDir.
const AuditCheckpointFileName = "audit-checkpoints.jsonl"

// auditKeyFileName is the default keyring file's name in DataDir.
const auditKeyFileName = "audit.key"

var (
	// ErrAuditKeyUnknown: audit records (or checkpoints) are sealed with a
	// key the client's keyring does not hold: the key file was lost,
	// replaced or not supplied, or the records are forgeries naming a key
	// that never existed. Verification cannot tell which until the key is
	// back; it is not reported as tampering. Errors from VerifyAudit
	// wrapping it are *AuditKeyError.
	ErrAuditKeyUnknown = audit.ErrKeyUnknown
	// ErrAuditKeyring: the audit keyring (Config.AuditKeyFile, the default
	// DataDir/audit.key, or Config.AuditKeyring) cannot be read or parsed.
	// The client does not open: restore the file from a backup, or move it
	// aside to start a new key (records sealed with the old keys then stay
	// unverifiable, ErrAuditKeyUnknown).
	ErrAuditKeyring = audit.ErrInvalidKeyring
	// ErrAuditCheckpointInvalid: a checkpoint whose MAC does not verify, or
	// a line of a checkpoint file that is not a checkpoint: the checkpoint
	// file (or log) was altered. Errors wrapping it are
	// *AuditCheckpointError naming the file and line.
	ErrAuditCheckpointInvalid = audit.ErrCheckpointInvalid
)

// AuditKeyError reports audit records sealed with keys the keyring does not
// hold: the first one's Seq, the missing KeyIDs, how many records (Count)
// and the ids the keyring holds (Held).
type AuditKeyError = audit.KeyError

// AuditCheckpoint is a sealed checkpoint of the audit trail's head: Seq and
// Hash of its last record, Time it was taken, KeyID and MAC.
type AuditCheckpoint = audit.Checkpoint

// AuditCheckpointError names a checkpoint (Source file, Line) that does not
// verify.
type AuditCheckpointError = audit.CheckpointError

// AuditKey describes one key of the audit keyring (never its secret).
type AuditKey struct {
	// ID names the key in the records it seals (AuditRecord.KeyID).
	ID string `json:"id"`
	// From is the first sequence number the key was made to seal (0 when
	// unknown).
	From int64 `json:"from"`
	// Created is when the key was made.
	Created time.Time `json:"created"`
	// Current reports whether the key seals new records.
	Current bool `json:"current"`
}

// auditKeyState is the client's keyring and checkpoint bookkeeping.
type auditKeyState struct {
	mu        sync.Mutex
	ring      *audit.Keyring
	file      string // keyring file ("" when given in Config or ephemeral)
	source    string // for messages: the file, "Config.AuditKeyring" or "memory"
	ephemeral bool   // a key made for this process only (memory store)

	cpMu   sync.Mutex
	cpLast audit.Head // head of the last checkpoint this client wrote
}

// keyring returns the client's current keyring.
func (c *Client) keyring() *audit.Keyring {
	c.akey.mu.Lock()
	defer c.akey.mu.Unlock()
	return c.akey.ring
}

// openAuditKeyring loads the audit keyring (creating the default key file
// when missing) and hands it to the store engine (New). Where it comes
// from: Config.AuditKeyring; else Config.AuditKeyFile; else DataDir's
// audit.key. A store given without any of them (the library writes only
// under paths it was given) gets a key for this process only: quietly for
// a memory store, whose trail dies with the process too; with a warning
// for a durable one, whose records later processes cannot authenticate.
func (c *Client) openAuditKeyring(ctx context.Context) error {
	s := &c.akey
	switch {
	case len(c.cfg.AuditKeyring) > 0:
		ring, err := audit.ParseKeyring(c.cfg.AuditKeyring)
		if err != nil {
			return fmt.Errorf("rediacc: Config.AuditKeyring: %w", err)
		}
		s.ring, s.source = ring, "Config.AuditKeyring"
	case c.cfg.AuditKeyFile == "" && c.cfg.DataDir == "":
		head, err := c.access.AuditHead(ctx)
		if err != nil {
			return mapStoreErr(err)
		}
		s.ring, _ = audit.NewKeyring(audit.NewKey(head.Seq+1, c.clock.Now()))
		s.source, s.ephemeral = "memory", true
		if !c.st.inMemory() {
			c.log.Warn("no audit key file (Config.AuditKeyFile or DataDir): the audit records of this process are sealed with a key that dies with it; later processes cannot authenticate them (ErrAuditKeyUnknown)",
				"store", c.st.String(), "key_id", s.ring.Current().ID)
		}
	default:
		s.file = c.cfg.AuditKeyFile
		if s.file == "" {
			s.file = filepath.Join(c.cfg.DataDir, auditKeyFileName)
		}
		s.source = s.file
		ring, err := c.loadKeyFile(ctx, true)
		if err != nil {
			return err
		}
		s.ring = ring
	}
	c.access.SetAuditKeyring(s.ring)
	return nil
}

// loadKeyFile reads the keyring file, creating it with a new key when it
// does not exist and create is set.
func (c *Client) loadKeyFile(ctx context.Context, create bool) (*audit.Keyring, error) {
	path := c.akey.file
	b, err := readFileNoFollow(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		return c.createKeyFile(ctx, path)
	}
	if err != nil {
		return nil, fmt.Errorf("rediacc: read the audit key file: %w (%w)", err, ErrAuditKeyring)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		c.log.Warn("the audit key file is readable by other users: run chmod 600 on it", "file", path, "mode", fi.Mode().Perm().String())
	}
	ring, err := audit.ParseKeyring(b)
	if err != nil {
		return nil, fmt.Errorf("rediacc: audit key file %s: %w: restore it from a backup, or move it aside to start a new key (records sealed with its keys then no longer verify)", path, err)
	}
	return ring, nil
}

// createKeyFile writes a new keyring of one key, made to seal from the
// trail's next record, to path (0600), unless another process created the
// file first (then that one is read).
func (c *Client) createKeyFile(ctx context.Context, path string) (*audit.Keyring, error) {
	head, err := c.access.AuditHead(ctx)
	if err != nil {
		return nil, mapStoreErr(err)
	}
	key := audit.NewKey(head.Seq+1, c.clock.Now())
	if err := mkdirPrivate(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("rediacc: create the audit key file %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return nil, fmt.Errorf("rediacc: create the audit key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(key.MarshalLine())
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("rediacc: write the audit key file: %w", err)
	}
	// Link, unlike Rename, never replaces a file another process made.
	if err := os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
		return c.loadKeyFile(ctx, false)
	} else if err != nil {
		return nil, fmt.Errorf("rediacc: create the audit key file: %w", err)
	}
	ring, _ := audit.NewKeyring(key)
	log := c.log.With("file", path, "key_id", key.ID, "from_seq", key.From)
	if head.Seq == 0 {
		log.Info("audit key created")
		return ring, nil
	}
	last, _ := c.access.ListAudit(ctx, audit.Filter{AfterSeq: head.Seq - 1, Limit: 1})
	if len(last) == 1 && last[0].KeyID != "" {
		log.Warn("audit key file was missing: a new key seals the records from now on; the records sealed with the lost key stay unverifiable (ErrAuditKeyUnknown) until its line is added back to the file",
			"lost_key_id", last[0].KeyID)
	} else {
		log.Info("audit key created: the trail is keyed from now on (the records before were not)")
	}
	return ring, nil
}

// reloadKeyring re-reads the keyring file (another process may have
// rotated the key) and hands a changed keyring to the engine.
func (c *Client) reloadKeyring(ctx context.Context) (*audit.Keyring, error) {
	c.akey.mu.Lock()
	defer c.akey.mu.Unlock()
	if c.akey.file == "" {
		return c.akey.ring, nil
	}
	ring, err := c.loadKeyFile(ctx, false)
	if err != nil {
		return c.akey.ring, err
	}
	if string(ring.Marshal()) != string(c.akey.ring.Marshal()) {
		c.akey.ring = ring
		c.access.SetAuditKeyring(ring)
	}
	return ring, nil
}

// AuditKeys lists the audit keyring's keys (ids, never secrets), in the
// keyring file's order. Owners and auditors. Errors: ErrNoActor,
// ErrPermissionDenied, ErrAuditKeyring.
func (c *Client) AuditKeys(ctx context.Context) ([]AuditKey, error) {
	o, _, err := c.authorize(ctx, authz.AuditVerify, scope{}, audit.EntityAudit, "keys", nil)
	if err != nil {
		return nil, err
	}
	ring, err := c.reloadKeyring(ctx)
	if err != nil {
		return nil, o.fail(ctx, err)
	}
	var out []AuditKey
	for _, k := range ring.Keys() {
		out = append(out, AuditKey{ID: k.ID, From: k.From, Created: k.Created, Current: k.ID == ring.Current().ID})
	}
	o.action = "audit.key.list"
	o.done(ctx)
	return out, nil
}

// RotateAuditKey makes a new audit key and seals the records and
// checkpoints from now on with it. The new key is appended to the keyring
// file (the old keys stay: they verify the records they sealed); the
// rotation is audited (action audit.key.rotate, sealed with the new key)
// and checkpointed. Other processes keep sealing with the key they loaded
// until they reopen; their records verify all the same. Owners only.
//
// A keyring given in Config.AuditKeyring cannot be rotated here: add a key
// where it is kept (a keyring file rotated by another client, e.g. `rediacc
// audit key rotate --audit-key-file FILE`, has the line to add). A memory
// store's keyring is rotated in memory.
//
// Errors: ErrNoActor, ErrPermissionDenied, ErrInvalidArgument (a keyring
// from Config), ErrAuditKeyring.
func (c *Client) RotateAuditKey(ctx context.Context) (AuditKey, error) {
	o, err := c.authorizeOwner(ctx, "audit.key.rotate", audit.EntityAudit, map[string]string{})
	if err != nil {
		return AuditKey{}, err
	}
	key, err := c.rotateKey(ctx)
	if err != nil {
		return AuditKey{}, o.fail(ctx, err)
	}
	o.eid = key.ID
	o.detail["key_id"] = key.ID
	o.detail["from_seq"] = fmt.Sprint(key.From)
	o.done(ctx)
	if _, err := c.checkpoint(ctx, "key.rotate"); err != nil {
		c.log.WarnContext(ctx, "audit checkpoint after the key rotation failed", "error", err)
	}
	c.log.InfoContext(ctx, "audit key rotated", "key_id", key.ID, "from_seq", key.From, "keyring", c.akey.source)
	return AuditKey{ID: key.ID, From: key.From, Created: key.Created, Current: true}, nil
}

func (c *Client) rotateKey(ctx context.Context) (audit.Key, error) {
	c.akey.mu.Lock()
	defer c.akey.mu.Unlock()
	s := &c.akey
	if s.file == "" && !s.ephemeral {
		return audit.Key{}, fmt.Errorf("%w: the audit keyring was given in Config.AuditKeyring: add a new key where it is kept", ErrInvalidArgument)
	}
	head, err := c.access.AuditHead(ctx)
	if err != nil {
		return audit.Key{}, mapStoreErr(err)
	}
	key := audit.NewKey(head.Seq+1, c.clock.Now())
	ring, err := s.ring.Add(key)
	if err != nil {
		return audit.Key{}, err
	}
	if s.file != "" {
		f, err := safefs.OpenFile(s.file, os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			err = unsafeErr(err)
			return audit.Key{}, fmt.Errorf("rediacc: open the audit key file: %w", err)
		}
		_, err = f.Write(key.MarshalLine())
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return audit.Key{}, fmt.Errorf("rediacc: write the audit key file: %w", err)
		}
		if ring, err = c.loadKeyFile(ctx, false); err != nil { // with other processes' keys
			return audit.Key{}, err
		}
	}
	s.ring = ring
	c.access.SetAuditKeyring(ring)
	return key, nil
}

// AuditCheckpointFile returns the path of the checkpoint file the client
// appends to: Config.ArchiveDir/audit-checkpoints.jsonl; "" when the client
// has no archive directory (a store given without DataDir or ArchiveDir:
// checkpoints then go to the log only).
func (c *Client) AuditCheckpointFile() string {
	if c.cfg.ArchiveDir == "" {
		return ""
	}
	return filepath.Join(c.cfg.ArchiveDir, AuditCheckpointFileName)
}

// CheckpointAudit seals a checkpoint of the audit trail's head now, appends
// it to the checkpoint file (AuditCheckpointFile) and logs it (INFO,
// "audit checkpoint"), and returns it. Workers do it every
// Config.AuditCheckpointInterval, Prune and Close after their changes; this
// is for the moments an operator chooses (before a backup, after an
// incident). Ship the file or the log off the host to keep the evidence
// out of an intruder's reach. Owners and auditors; audited
// (audit.checkpoint) before the checkpoint, so it covers its own record.
// Errors: ErrNoActor, ErrPermissionDenied, and the file's I/O errors.
func (c *Client) CheckpointAudit(ctx context.Context) (AuditCheckpoint, error) {
	o, _, err := c.authorize(ctx, authz.AuditVerify, scope{}, audit.EntityAudit, "checkpoint", nil)
	if err != nil {
		return AuditCheckpoint{}, err
	}
	o.action = "audit.checkpoint"
	o.done(ctx)
	cp, err := c.checkpoint(ctx, "request")
	if err != nil {
		return AuditCheckpoint{}, err
	}
	return cp, nil
}

// checkpoint seals the trail's head and appends it to the checkpoint file
// (when the client has an archive directory) and the log, unless it is the
// head this client checkpointed last (then it returns it without writing).
func (c *Client) checkpoint(ctx context.Context, reason string) (AuditCheckpoint, error) {
	c.akey.cpMu.Lock()
	defer c.akey.cpMu.Unlock()
	head, err := c.access.AuditHead(ctx)
	if err != nil {
		return AuditCheckpoint{}, mapStoreErr(err)
	}
	ring := c.keyring()
	if head.Seq == 0 {
		return AuditCheckpoint{}, nil
	}
	cp, err := ring.SealCheckpoint(head, c.clock.Now())
	if err != nil {
		return AuditCheckpoint{}, err
	}
	if head == c.akey.cpLast {
		return cp, nil
	}
	file := c.AuditCheckpointFile()
	if file != "" {
		if _, _, err := c.archives(); err != nil { // the archive dir, bound to this store
			return AuditCheckpoint{}, err
		}
		if err := appendCheckpoint(file, cp); err != nil {
			return AuditCheckpoint{}, err
		}
	}
	c.log.InfoContext(ctx, "audit checkpoint", slog.Any("checkpoint", cp), "reason", reason, "file", file)
	c.akey.cpLast = head
	return cp, nil
}

// appendCheckpoint appends cp as one line (one write, O_APPEND: lines of
// several processes never interleave) to the checkpoint file, created
// 0600, never through a symbolic link.
func appendCheckpoint(path string, cp audit.Checkpoint) error {
	b, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	f, err := safefs.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("rediacc: audit checkpoint file: %w", unsafeErr(err))
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("rediacc: audit checkpoint file: %w", err)
	}
	return nil
}

// checkpointQuietly writes a checkpoint for a periodic or closing duty,
// logging a failure.
func (c *Client) checkpointQuietly(ctx context.Context, reason string) {
	if _, err := c.checkpoint(ctx, reason); err != nil {
		c.log.WarnContext(ctx, "audit checkpoint failed", "reason", reason, "error", err)
	}
}

// checkpointTicker ticks every Config.AuditCheckpointInterval for a
// running worker (nil channel when negative).
func (c *Client) checkpointTicker() (<-chan time.Time, func()) {
	if c.cfg.AuditCheckpointInterval < 0 {
		return nil, func() {}
	}
	t := time.NewTicker(c.cfg.AuditCheckpointInterval)
	return t.C, t.Stop
}
