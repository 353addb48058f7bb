// Package audit is the tamper-evident audit trail's hash chain: the [Record],
// its canonical encoding and its seal (an HMAC-SHA256 under a key the store
// does not hold, see [Keyring]), chaining a record onto the trail, verifying a
// trail ([Verify], [VerifyWithHead], [Verifier]), checkpoints of the chain's
// head kept outside the store ([Checkpoint]), JSON Lines export ([WriteJSONL],
// [ReadJSONL]) and query filters ([Filter]). It does no storage: a store
// engine keeps the records and, separately, the chain's [Head], and calls this
// package to build and check them.
//
// # The chain
//
// Records are numbered 1, 2, 3, … (Seq). Each record carries the hash of the
// record before it (PrevHash; [GenesisHash] for record 1) and its own seal
// (Hash): for a keyed record (KeyID set, version 2) the hex HMAC-SHA256 of
// [Canonical] under the key KeyID names; for a record of version 1 (KeyID
// empty, written before the trail was keyed) the hex SHA-256 of [Canonical].
// Changing any field of a record changes its seal, and re-sealing a changed
// record breaks the link from the record after it; only rewriting every later
// record goes unnoticed, and that is caught by comparing the end of the chain
// with a [Head] kept elsewhere, and by [Checkpoint]s kept outside the store.
// Without the key, a keyed record cannot be re-sealed at all; a writer who
// falls back to version 1 is caught because version 1 is accepted only
// before the first keyed record ([Keyring.KeyedFrom]).
//
// # Canonical encoding (versions 1 and 2)
//
// [Canonical] is a sequence of netstrings (len ":" bytes ","; len in decimal
// ASCII, the length in bytes), in this fixed order:
//
//	"rediacc.audit.v1"   version tag ("rediacc.audit.v2" for a keyed record)
//	Seq                  decimal, e.g. "42" (a minus sign if negative)
//	Time                 UTC, millisecond precision: "2006-01-02T15:04:05.000Z"
//	Actor, Action, EntityType, EntityID, Team, Result
//	len(Details)         decimal count of pairs
//	key, value           one netstring each, per pair, keys in byte order
//	KeyID                version 2 only
//	PrevHash
//
// For example record 1 by alice with no details starts
// "16:rediacc.audit.v1,1:1,24:2025-01-02T03:04:05.678Z,5:alice,…". Every
// element is self-delimiting and the number of elements is fixed by the
// version tag and the count, so the encoding is unambiguous: two records
// encode alike only if all their fields are equal. Two things are
// deliberately the same record: instants that agree to the millisecond (the
// encoding is in UTC and truncates below a millisecond; [Chain] normalizes
// Time the same way), and a nil and an empty Details map. Strings are encoded
// as raw bytes, so any byte sequence, including invalid UTF-8, is covered;
// [Record.Validate] rejects invalid UTF-8 because JSON cannot carry it.
package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// GenesisHash is the PrevHash of the first record of a trail: 64 zeros.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// TimeFormat is the layout of a record's time in the canonical encoding and in
// JSON: RFC 3339 in UTC with exactly three fractional digits.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// CanonicalVersion is the version tag that starts the canonical encoding of
// a version 1 record (KeyID empty, sealed with plain SHA-256).
const CanonicalVersion = "rediacc.audit.v1"

// CanonicalVersionKeyed is the version tag that starts the canonical
// encoding of a keyed record (version 2: KeyID set, sealed with
// HMAC-SHA256; see [Keyring]).
const CanonicalVersionKeyed = "rediacc.audit.v2"

// Results of an operation, for [Record].Result.
const (
	// ResultOK: the operation was allowed and succeeded.
	ResultOK = "ok"
	// ResultDenied: the actor's role did not allow the operation.
	ResultDenied = "denied"
	// ResultError: the operation was allowed but failed.
	ResultError = "error"
)

// Entity types, for [Record].EntityType.
const (
	// EntityTask: a task; EntityID is its id.
	EntityTask = "task"
	// EntityMachine: a machine; EntityID is its name.
	EntityMachine = "machine"
	// EntityTeam: a team; EntityID is its name.
	EntityTeam = "team"
	// EntityMember: a team member or a store-wide role holder; EntityID is the user name.
	EntityMember = "member"
	// EntityVault: a vault secret; EntityID is its key (never its value).
	EntityVault = "vault"
	// EntityAudit: the audit trail itself (reads, verification, export).
	EntityAudit = "audit"
	// EntityKey: an SSH key of the key inventory; EntityID is its id
	// (records carry fingerprints and machine names, never key material).
	EntityKey = "key"
	// EntitySSHCA: a team's SSH certificate authority; EntityID is the
	// CA's id (records carry fingerprints, never key material).
	EntitySSHCA = "ssh-ca"
	// EntitySchedule: a schedule (recurring task); EntityID is its id.
	EntitySchedule = "schedule"
	// EntityWindow: a maintenance window; EntityID is its id.
	EntityWindow = "window"
)

// ErrInvalidRecord is returned, wrapped with the field at fault, by
// [Record.Validate].
var ErrInvalidRecord = errors.New("invalid audit record")

// Record is one entry of the audit trail: one operation, allowed or denied.
type Record struct {
	// Seq is the record's position in the trail, from 1.
	Seq int64
	// Time is when the operation happened; kept in UTC with millisecond
	// precision (finer precision is not part of the hash).
	Time time.Time
	// Actor is the user (or worker) who performed the operation.
	Actor string
	// Action names the operation, e.g. "task.create", "task.cancel",
	// "team.member.add", "machine.add", "vault.read", "task.attempt.failed".
	Action string
	// EntityType is the kind of thing acted on: one of the Entity constants.
	EntityType string
	// EntityID is the id or name of the thing acted on.
	EntityID string
	// Team is the team the entity belongs to ("" for store-wide operations).
	Team string
	// Result is one of ResultOK, ResultDenied, ResultError.
	Result string
	// Details holds extra facts (never secret values). Nil and empty are the
	// same record. Chain and Keyring.Chain drop the pairs whose value is
	// empty: a fact that does not apply is absent from a stored record.
	Details map[string]string
	// PrevHash is the hex hash of the previous record, GenesisHash for Seq 1.
	PrevHash string
	// KeyID names the key of the [Keyring] that sealed the record (16 hex
	// digits); "" for a version 1 record, written before the trail was
	// keyed.
	KeyID string
	// Hash is the record's seal: the hex HMAC-SHA256 of Canonical(record)
	// under the key KeyID, or, for a version 1 record, the hex SHA-256 of
	// Canonical(record).
	Hash string
}

// Validate reports whether r can be stored and exported: Actor and Action
// non-empty, Result one of the Result constants, Time set, and every string
// valid UTF-8. It does not check Seq or the hashes (see [Verify]). Errors wrap
// [ErrInvalidRecord].
func (r Record) Validate() error {
	switch {
	case r.Actor == "":
		return fmt.Errorf("%w: empty actor", ErrInvalidRecord)
	case r.Action == "":
		return fmt.Errorf("%w: empty action", ErrInvalidRecord)
	case r.Time.IsZero():
		return fmt.Errorf("%w: zero time", ErrInvalidRecord)
	}
	switch r.Result {
	case ResultOK, ResultDenied, ResultError:
	default:
		return fmt.Errorf("%w: result %q is not %q, %q or %q", ErrInvalidRecord, r.Result, ResultOK, ResultDenied, ResultError)
	}
	if err := checkUTF8(r); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidRecord, err)
	}
	return nil
}

// checkUTF8 reports the first string field of r that is not valid UTF-8.
func checkUTF8(r Record) error {
	fields := []struct{ name, v string }{
		{"actor", r.Actor}, {"action", r.Action}, {"entityType", r.EntityType},
		{"entityId", r.EntityID}, {"team", r.Team}, {"result", r.Result},
		{"prevHash", r.PrevHash}, {"keyId", r.KeyID}, {"hash", r.Hash},
	}
	for _, f := range fields {
		if !utf8.ValidString(f.v) {
			return fmt.Errorf("%s is not valid UTF-8", f.name)
		}
	}
	for k, v := range r.Details {
		if !utf8.ValidString(k) {
			return fmt.Errorf("details key %q is not valid UTF-8", k)
		}
		if !utf8.ValidString(v) {
			return fmt.Errorf("details[%q] is not valid UTF-8", k)
		}
	}
	return nil
}

// NormalizeTime returns t in UTC truncated to the millisecond: the instant the
// canonical encoding records.
func NormalizeTime(t time.Time) time.Time {
	return t.UTC().Truncate(time.Millisecond)
}

// Canonical returns the canonical encoding of every field of r except Hash
// (see the package documentation for the exact format): version 2 when
// r.KeyID is set, else version 1.
func Canonical(r Record) []byte {
	n := 80 + len(r.Actor) + len(r.Action) + len(r.EntityType) + len(r.EntityID) +
		len(r.Team) + len(r.Result) + len(r.PrevHash) + len(r.KeyID) + 16*len(r.Details)
	for k, v := range r.Details {
		n += len(k) + len(v)
	}
	b := make([]byte, 0, n)
	if r.KeyID != "" {
		b = appendNetstring(b, CanonicalVersionKeyed)
	} else {
		b = appendNetstring(b, CanonicalVersion)
	}
	b = appendNetstring(b, strconv.FormatInt(r.Seq, 10))
	b = appendNetstring(b, NormalizeTime(r.Time).Format(TimeFormat))
	b = appendNetstring(b, r.Actor)
	b = appendNetstring(b, r.Action)
	b = appendNetstring(b, r.EntityType)
	b = appendNetstring(b, r.EntityID)
	b = appendNetstring(b, r.Team)
	b = appendNetstring(b, r.Result)
	b = appendNetstring(b, strconv.Itoa(len(r.Details)))
	for _, k := range slices.Sorted(maps.Keys(r.Details)) {
		b = appendNetstring(b, k)
		b = appendNetstring(b, r.Details[k])
	}
	if r.KeyID != "" {
		b = appendNetstring(b, r.KeyID)
	}
	b = appendNetstring(b, r.PrevHash)
	return b
}

func appendNetstring(b []byte, s string) []byte {
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, ':')
	b = append(b, s...)
	return append(b, ',')
}

// ComputeHash returns the lower-case hex SHA-256 of [Canonical](r): the
// seal of a version 1 record (KeyID empty). Keyed records are sealed by
// [Keyring.Seal].
func ComputeHash(r Record) string {
	sum := sha256.Sum256(Canonical(r))
	return hex.EncodeToString(sum[:])
}

// Head identifies the end of a chain (or of a segment of it): the last
// record's Seq and Hash. The zero Head is the empty chain: Seq 0 and, as far
// as linking is concerned, [GenesisHash]. A store keeps the head of its trail
// apart from the records, so that [VerifyWithHead] can detect records deleted
// from (or added to) the end.
type Head struct {
	// Seq is the last record's Seq (0 for an empty chain).
	Seq int64
	// Hash is the last record's Hash ("" or GenesisHash for an empty chain).
	Hash string
}

// HeadOf returns the head of a chain whose last record is r.
func HeadOf(r Record) Head { return Head{Seq: r.Seq, Hash: r.Hash} }

// LinkHash is the hash the next record must carry as its PrevHash: h.Hash, or
// GenesisHash for the zero Head.
func (h Head) LinkHash() string {
	if h.Seq == 0 && h.Hash == "" {
		return GenesisHash
	}
	return h.Hash
}

// String formats h as "seq 12 (hash 3fa4…)", for messages.
func (h Head) String() string {
	return fmt.Sprintf("seq %d (hash %s)", h.Seq, short(h.LinkHash()))
}

// Chain returns r appended after prev as a version 1 record (unkeyed, plain
// SHA-256): Seq = prev.Seq+1, PrevHash = prev.LinkHash(), KeyID cleared,
// Time normalized with [NormalizeTime], Details copied (so later changes to
// the caller's map cannot break the hash) without its empty values, and Hash
// computed. Use
// Chain(Head{}, r) for the first record of a trail and Chain(HeadOf(last), r)
// after that. Store engines chain with [Keyring.Chain], which seals with the
// keyring's current key (and falls back to Chain without a keyring).
func Chain(prev Head, r Record) Record {
	r = link(prev, r)
	r.KeyID = ""
	r.Hash = ComputeHash(r)
	return r
}

// link sets the fields Chain and Keyring.Chain share.
func link(prev Head, r Record) Record {
	r.Seq = prev.Seq + 1
	r.PrevHash = prev.LinkHash()
	r.Time = NormalizeTime(r.Time)
	r.Details = maps.Clone(r.Details)
	// A detail that does not apply is absent, never empty: no record says
	// "dead_worker=" or "reason=".
	maps.DeleteFunc(r.Details, func(_, v string) bool { return v == "" })
	return r
}

// short abbreviates a hash for messages.
func short(h string) string {
	if len(h) > 12 {
		return h[:12] + "…"
	}
	if h == "" {
		return `""`
	}
	return h
}
