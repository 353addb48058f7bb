package audit

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Kinds of tampering reported in [TamperError].Kind.
const (
	// KindModified: a record's fields no longer match its hash, or a record
	// was changed and re-hashed so that the next record's link (or the
	// expected head) no longer matches it.
	KindModified = "modified"
	// KindDeleted: one or more records are missing: a gap in the sequence
	// numbers, a gap closed by renumbering the later records, or records
	// missing at the end (truncation, detected against an expected [Head]).
	KindDeleted = "deleted"
	// KindInserted: a record that is not part of the chain: a repeated
	// sequence number, a forged record the chain skips over, or records past
	// the expected [Head].
	KindInserted = "inserted"
	// KindReordered: genuine records in the wrong order: sequence numbers out
	// of order, or two records' sequence numbers swapped.
	KindReordered = "reordered"
	// KindDowngraded: a version 1 (unkeyed, plain SHA-256) record where only
	// keyed records may be: after a keyed record, or at or after the
	// keyring's [Keyring.KeyedFrom]. Someone without the key rewrote the
	// trail from there.
	KindDowngraded = "downgraded"
	// KindRewritten: the trail contradicts a [Checkpoint] of its head taken
	// earlier, while it verifies on its own: records up to the checkpoint's
	// sequence number were changed, deleted, inserted or reordered and the
	// rest re-sealed by someone holding the key (or the head was moved).
	// Seq is the first record no holding checkpoint vouches for.
	KindRewritten = "rewritten"
)

// ErrTampered is matched by every [*TamperError] (errors.Is(err, ErrTampered)).
var ErrTampered = errors.New("audit trail tampered with")

// ErrVerifierFinished is returned by [Verifier.Add] after [Verifier.Finish].
var ErrVerifierFinished = errors.New("audit: verifier already finished")

// KeyError reports records sealed with keys the verifier's keyring does not
// hold: the key was lost, not supplied or replaced by a different one (a
// wrong key has a different id), or the records are forgeries naming a key
// that never existed; without the key the two cannot be told apart. Their
// links were checked, their seals could not be. errors.Is(err,
// ErrKeyUnknown) holds; it is not a [*TamperError].
type KeyError struct {
	// Seq is the first such record.
	Seq int64
	// KeyIDs are the missing keys' ids, in order of first use.
	KeyIDs []string
	// Count is how many records could not be authenticated.
	Count int64
	// Held lists the ids the keyring does hold.
	Held []string
}

// Error implements error.
func (e *KeyError) Error() string {
	held := "no key"
	if len(e.Held) > 0 {
		held = "keys " + strings.Join(e.Held, ", ")
	}
	return fmt.Sprintf("audit trail not authenticated: %d records from seq %d are sealed with key %s, which the keyring (%s) does not hold: "+
		"add the key's line to the audit keyring (the key file) to verify them; until then they may be genuine or forged",
		e.Count, e.Seq, strings.Join(e.KeyIDs, ", "), held)
}

// Is reports whether target is [ErrKeyUnknown].
func (e *KeyError) Is(target error) bool { return target == ErrKeyUnknown }

// TamperError reports the first place where an audit trail does not verify.
//
// Seq is the chain position (sequence number) where the trail first goes
// wrong: for KindModified the altered record (when a record was altered and
// re-hashed, the one whose hash the next record no longer links to); for
// KindDeleted the first missing sequence number; for KindInserted the
// sequence number of the first record that does not belong; for
// KindReordered the first position holding the wrong record.
type TamperError struct {
	// Seq is the chain position where tampering is first detected.
	Seq int64
	// Kind is KindModified, KindDeleted, KindInserted or KindReordered: the
	// most likely explanation of what was seen.
	Kind string
	// Detail says what was seen, with sequence numbers and abbreviated hashes.
	Detail string
}

// Error implements error.
func (e *TamperError) Error() string {
	return fmt.Sprintf("audit trail tampered with: record %d %s: %s", e.Seq, e.Kind, e.Detail)
}

// Is reports whether target is [ErrTampered].
func (e *TamperError) Is(target error) bool { return target == ErrTampered }

// Verify checks a whole trail, records in the order given (a store passes
// them ordered by Seq), starting from the genesis. It returns nil or the
// [*TamperError] for the first bad record. A trail cut short at the end cannot
// be told from a shorter trail by the records alone: use [VerifyWithHead].
func Verify(records []Record) error {
	v := NewVerifier(Head{})
	for _, r := range records {
		if err := v.Add(r); err != nil {
			return err
		}
	}
	return v.Finish()
}

// Verify and VerifyWithHead use no keyring: keyed records give a
// [*KeyError] (use [NewVerifier] with [WithKeyring]).

// VerifyWithHead is [Verify] that also checks the trail ends exactly at head
// (the Seq and Hash of the last record, kept by the store apart from the
// records): records missing at the end are reported as KindDeleted, records
// after head as KindInserted, and a last record altered and re-hashed as
// KindModified.
func VerifyWithHead(records []Record, head Head) error {
	v := NewVerifier(Head{}, WithHead(head))
	for _, r := range records {
		if err := v.Add(r); err != nil {
			return err
		}
	}
	return v.Finish()
}

// windowSize is how many records, from the first one that does not fit, a
// Verifier looks at before it decides what kind of tampering it sees.
const windowSize = 32

// probeDistance bounds the search for the sequence number a record was hashed
// with when its own Seq does not match its hash.
const probeDistance = 64

// ringSize is how many recently accepted records a Verifier remembers, to
// recognize a record that links back past records inserted before it.
const ringSize = 64

// VerifierOption configures a [Verifier].
type VerifierOption func(*Verifier)

// WithHead makes the Verifier check that the chain ends exactly at head (see
// [VerifyWithHead]).
func WithHead(head Head) VerifierOption {
	return func(v *Verifier) { h := head; v.expect = &h }
}

// WithKeyring makes the Verifier check keyed records' seals with ring, and
// refuse version 1 records after a keyed one or at or after
// ring.KeyedFrom() (KindDowngraded). Without it (or with a nil ring) only
// version 1 records can be authenticated. Records sealed with a key the ring
// does not hold are accepted on their links and reported by
// [Verifier.Finish] as a [*KeyError], unless tampering is found.
func WithKeyring(ring *Keyring) VerifierOption {
	return func(v *Verifier) { v.keys = ring; v.keyedFrom = ring.KeyedFrom() }
}

// Verifier checks a chain incrementally, one record at a time, so a store can
// verify millions of records page by page, and a chain kept in segments
// (archived old records, then the live ones) can be checked either with one
// Verifier fed every segment in order, or one Verifier per segment, each
// started at the previous one's [Verifier.Head].
//
// When a record does not fit, the Verifier looks at up to 31 more records
// before it decides what kind of tampering it sees, so [Verifier.Add] may
// report a problem a few records late; [Verifier.Finish] must be called at the
// end of the input. After the first error every call returns that error.
// The kind reported is the most likely explanation of what was seen. Every
// single change to the records is detected (with [WithHead], also at the
// end); its kind is reliably told apart for one tampering at a time, except
// that two records whose sequence numbers were swapped more than 64 positions
// apart, without re-hashing, are reported as KindModified.
//
// A Verifier is not safe for concurrent use.
type Verifier struct {
	start   Head
	last    Head // last accepted record
	expect  *Head
	ring    [ringSize]Head // recently accepted heads, including start
	ringN   int            // number of valid entries
	ringI   int            // next write index
	count   int64
	pending []Record // pending[0] is the first record that did not fit
	err     *TamperError
	done    bool

	keys      *Keyring
	keyedFrom int64     // keys.KeyedFrom()
	keyed     bool      // a keyed record was accepted
	unknown   *KeyError // records accepted on their links only
}

// NewVerifier returns a Verifier for a chain that continues after start: the
// first record must have Seq start.Seq+1 and PrevHash start.LinkHash(). Use
// Head{} for a chain that starts at the genesis, and the head of the previous
// segment otherwise.
func NewVerifier(start Head, opts ...VerifierOption) *Verifier {
	v := &Verifier{start: start, last: start}
	v.remember(start)
	for _, o := range opts {
		o(v)
	}
	return v
}

// Head returns the last record accepted as part of the chain (the start head
// before any): after a successful Finish, the head of the verified chain, and
// the starting point for verifying the segment that follows.
func (v *Verifier) Head() Head { return v.last }

// Count returns how many records have been accepted as part of the chain.
func (v *Verifier) Count() int64 { return v.count }

// Add checks the next record. It returns nil while the chain is sound or while
// the Verifier is still looking at the records after one that did not fit,
// and a [*TamperError] once it has decided. After [Verifier.Finish] it returns
// [ErrVerifierFinished].
func (v *Verifier) Add(r Record) error {
	if v.err != nil {
		return v.err
	}
	if v.done {
		return ErrVerifierFinished
	}
	if len(v.pending) == 0 {
		if v.fits(r) {
			v.accept(r)
			return nil
		}
	}
	v.pending = append(v.pending, r)
	if len(v.pending) >= windowSize {
		v.err = v.classify()
		return v.err
	}
	return nil
}

// Finish ends the input: it decides about any record that did not fit, checks
// the expected head if one was given ([WithHead]), and returns nil, the
// [*TamperError] for the first bad record or, when none is found but some
// records are sealed with keys the keyring does not hold, a [*KeyError].
func (v *Verifier) Finish() error {
	if v.err != nil {
		return v.err
	}
	v.done = true
	if len(v.pending) > 0 {
		v.err = v.classify()
		return v.err
	}
	if err := v.finishHead(); err != nil {
		return err
	}
	if v.unknown != nil {
		v.unknown.Held = v.keys.IDs()
		return v.unknown
	}
	return nil
}

// finishHead checks the expected head ([WithHead]).
func (v *Verifier) finishHead() *TamperError {
	if v.expect != nil {
		h := *v.expect
		switch {
		case v.last.Seq < h.Seq:
			v.err = &TamperError{Seq: v.last.Seq + 1, Kind: KindDeleted,
				Detail: fmt.Sprintf("the trail ends at seq %d but its head is %s: records %s missing at the end (truncated)",
					v.last.Seq, h, span(v.last.Seq+1, h.Seq))}
			return v.err
		case v.last.Seq > h.Seq:
			// Only possible when the head lies before the start.
			v.err = &TamperError{Seq: h.Seq + 1, Kind: KindInserted,
				Detail: fmt.Sprintf("the trail starts after its head %s", h)}
			return v.err
		}
	}
	return nil
}

// barred reports whether a version 1 record may not stand at seq: after a
// keyed record, or at or after the keyring's KeyedFrom.
func (v *Verifier) barred(seq int64) bool {
	return v.keyed || (v.keyedFrom > 0 && seq >= v.keyedFrom)
}

// sealAt reports whether r's Hash is its seal had it been stored with
// sequence number seq, and may stand there. A record sealed with a key the
// keyring does not hold cannot be checked: it passes at its own seq only.
func (v *Verifier) sealAt(r Record, seq int64) bool {
	r.Seq = seq
	if r.KeyID == "" && v.barred(seq) {
		return false
	}
	ok, known := v.keys.Sealed(r)
	if !known {
		return seq == r.Seq
	}
	return ok
}

// fits reports whether r is the next record of the chain.
func (v *Verifier) fits(r Record) bool {
	if r.Seq != v.last.Seq+1 || r.PrevHash != v.last.LinkHash() {
		return false
	}
	if v.expect != nil {
		if r.Seq > v.expect.Seq || (r.Seq == v.expect.Seq && r.Hash != v.expect.Hash) {
			return false
		}
	}
	return v.sealAt(r, r.Seq)
}

func (v *Verifier) accept(r Record) {
	v.last = HeadOf(r)
	v.count++
	v.remember(v.last)
	if r.KeyID == "" {
		return
	}
	v.keyed = true
	if !v.keys.Has(r.KeyID) {
		if v.unknown == nil {
			v.unknown = &KeyError{Seq: r.Seq}
		}
		v.unknown.Count++
		if !slices.Contains(v.unknown.KeyIDs, r.KeyID) {
			v.unknown.KeyIDs = append(v.unknown.KeyIDs, r.KeyID)
		}
	}
}

func (v *Verifier) remember(h Head) {
	v.ring[v.ringI] = h
	v.ringI = (v.ringI + 1) % ringSize
	v.ringN = min(v.ringN+1, ringSize)
}

// recent returns the Seq of a remembered accepted record (or the start) whose
// link hash is hash.
func (v *Verifier) recent(hash string) (int64, bool) {
	for i := range v.ringN {
		h := v.ring[(v.ringI-1-i+ringSize)%ringSize]
		if h.LinkHash() == hash {
			return h.Seq, true
		}
	}
	return 0, false
}

// trueSeqs works out, for each pending record, the sequence number its hash
// was computed with (which is its original position in the chain): its own
// Seq if its hash is valid; otherwise a position suggested by its link (the
// record after a remembered record or after another pending record) or,
// failing that, a nearby number. known[i] is false when no sequence number
// makes the hash match: the record's content was changed.
func (v *Verifier) trueSeqs() (seq []int64, known, valid []bool) {
	a := v.pending
	seq = make([]int64, len(a))
	known = make([]bool, len(a))
	valid = make([]bool, len(a))
	for i, r := range a {
		if v.sealAt(r, r.Seq) {
			seq[i], known[i], valid[i] = r.Seq, true, true
		}
	}
	try := func(i int, c int64) bool {
		if c == a[i].Seq || !v.sealAt(a[i], c) {
			return false
		}
		seq[i], known[i] = c, true
		return true
	}
	for progress := true; progress; {
		progress = false
		for i, r := range a {
			if known[i] {
				continue
			}
			if q, ok := v.recent(r.PrevHash); ok && try(i, q+1) {
				progress = true
				continue
			}
			for j, b := range a {
				if j != i && known[j] && b.Hash == r.PrevHash && try(i, seq[j]+1) {
					progress = true
					break
				}
			}
		}
	}
	for i := range a {
		for d := int64(1); !known[i] && d <= probeDistance; d++ {
			if !try(i, a[i].Seq+d) {
				try(i, a[i].Seq-d)
			}
		}
	}
	return seq, known, valid
}

// classify decides what kind of tampering explains the pending records, the
// first of which did not fit after v.last.
func (v *Verifier) classify() *TamperError {
	a := v.pending
	a0 := a[0]
	last := v.last
	pos := last.Seq + 1
	seq, known, valid := v.trueSeqs()
	t0 := seq[0]
	te := func(at int64, kind, format string, args ...any) *TamperError {
		return &TamperError{Seq: at, Kind: kind, Detail: fmt.Sprintf(format, args...)}
	}

	// A valid record whose number was already used: a duplicate or forgery.
	if valid[0] && a0.Seq <= last.Seq {
		return te(a0.Seq, KindInserted, "record with seq %d (hash %s) repeats a sequence number already in the chain (last accepted %s)",
			a0.Seq, short(a0.Hash), last)
	}
	// A record linking back past the last accepted one: those in between were inserted.
	if q, ok := v.recent(a0.PrevHash); ok && q < last.Seq {
		return te(q+1, KindInserted, "record with seq %d links to record %d, so records %s are not part of the chain",
			a0.Seq, q, span(q+1, last.Seq))
	}
	// Records past the expected head.
	if v.expect != nil && last.Seq >= v.expect.Seq {
		return te(max(a0.Seq, pos), KindInserted, "record with seq %d (hash %s) follows the trail's head %s",
			a0.Seq, short(a0.Hash), *v.expect)
	}
	if !known[0] && a0.KeyID == "" && v.barred(pos) && ComputeHash(a0) == a0.Hash {
		why := "after keyed records"
		if !v.keyed {
			why = fmt.Sprintf("at or after seq %d, from which the keyring seals every record", v.keyedFrom)
		}
		return te(pos, KindDowngraded, "record with seq %d is an unkeyed (version 1, plain SHA-256) record %s: the trail was rewritten by someone without the key",
			a0.Seq, why)
	}
	if !known[0] {
		return te(pos, KindModified, "record with seq %d does not match its seal %s: its content was changed",
			a0.Seq, short(a0.Hash))
	}

	switch {
	case t0 == pos:
		// a0 was hashed as the record for this position.
		if a0.Seq != pos {
			for i := 1; i < len(a); i++ {
				if a[i].Seq == pos && known[i] && seq[i] == a0.Seq {
					return te(pos, KindReordered, "records %d and %d have swapped sequence numbers", pos, a0.Seq)
				}
			}
			return te(pos, KindModified, "record %d's sequence number was changed to %d", pos, a0.Seq)
		}
		belongsLater := false // a0 links to a record that comes after it
		for i := 1; i < len(a); i++ {
			if known[i] && a[i].Hash == a0.PrevHash {
				belongsLater = true
			}
		}
		for i := 1; i < len(a); i++ {
			if a[i].PrevHash == last.LinkHash() {
				if belongsLater {
					return te(pos, KindReordered, "record %d comes before the record it links to", a0.Seq)
				}
				return te(pos, KindInserted, "record with seq %d (hash %s) is skipped by the chain: record with seq %d links to record %d",
					a0.Seq, short(a0.Hash), a[i].Seq, last.Seq)
			}
		}
		if belongsLater {
			return te(pos, KindReordered, "record %d comes before the record it links to", a0.Seq)
		}
		if a0.PrevHash == last.LinkHash() {
			// Everything fits but the expected head.
			return te(pos, KindModified, "record %d (hash %s) is the trail's last record but the head says %s: it was changed and re-hashed",
				pos, short(a0.Hash), *v.expect)
		}
		if last.Seq == 0 {
			return te(pos, KindModified, "record %d links to %s, not to the genesis: it was changed and re-hashed",
				pos, short(a0.PrevHash))
		}
		return te(last.Seq, KindModified, "record %d links to hash %s but record %d has hash %s: record %d was changed and re-hashed",
			pos, short(a0.PrevHash), last.Seq, short(last.LinkHash()), last.Seq)

	case t0 > pos:
		// a0 belongs later: position pos is empty or holds it by mistake.
		for i := 1; i < len(a); i++ {
			if known[i] && seq[i] == pos {
				if valid[i] || a0.Seq == pos {
					return te(pos, KindReordered, "record %d appears before record %d", t0, pos)
				}
				return te(pos, KindModified, "record %d's sequence number was changed to %d", pos, a[i].Seq)
			}
		}
		for i := 1; i < len(a); i++ {
			if known[i] && seq[i] < t0 {
				return te(pos, KindReordered, "record %d appears before record %d", t0, seq[i])
			}
		}
		if a0.Seq != t0 {
			if len(a) == 1 || a[1].Seq == a0.Seq+1 && known[1] && seq[1] == t0+1 {
				return te(pos, KindDeleted, "records %s are missing and the later records were renumbered (record %d carries seq %d)",
					span(pos, t0-1), t0, a0.Seq)
			}
			return te(pos, KindReordered, "record %d was moved to seq %d", t0, a0.Seq)
		}
		return te(pos, KindDeleted, "records %s are missing: record %d follows record %d", span(pos, t0-1), t0, last.Seq)

	default: // t0 < pos: a0 was hashed for a position already passed.
		return te(pos, KindInserted, "record with seq %d was hashed as record %d, a position already in the chain", a0.Seq, t0)
	}
}

// span formats the range lo..hi of sequence numbers.
func span(lo, hi int64) string {
	if lo == hi {
		return fmt.Sprint(lo)
	}
	return fmt.Sprintf("%d..%d", lo, hi)
}
