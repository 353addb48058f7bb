package audit

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// CheckpointVersion is the version tag that starts a checkpoint's canonical
// encoding.
const CheckpointVersion = "rediacc.audit.checkpoint.v1"

// ErrCheckpointInvalid: a checkpoint whose MAC does not verify under the
// key it names, or a line of a checkpoint file that is not a checkpoint: the
// checkpoint file (or log) was altered. Errors wrapping it are
// *CheckpointError.
var ErrCheckpointInvalid = errors.New("audit: checkpoint does not verify")

// Checkpoint is the head of the trail at one moment (Seq, Hash, Time),
// sealed with a key of the [Keyring] and written outside the store (a file
// beside the log archive, the structured log), so that a later rewrite of
// the store and its head is caught ([CheckpointCheck]) even by a verifier
// facing someone who holds the key.
type Checkpoint struct {
	// Seq and Hash are the head's: its last record's sequence number (>= 1)
	// and seal.
	Seq  int64
	Hash string
	// Time is when the checkpoint was taken (UTC, millisecond precision).
	Time time.Time
	// KeyID names the key that sealed the checkpoint.
	KeyID string
	// MAC is the hex HMAC-SHA256, under KeyID, of the netstrings
	// CheckpointVersion, Seq (decimal), Hash, Time (TimeFormat), KeyID.
	MAC string
}

// Head returns the checkpoint's head.
func (c Checkpoint) Head() Head { return Head{Seq: c.Seq, Hash: c.Hash} }

func (c Checkpoint) canonical() []byte {
	b := appendNetstring(nil, CheckpointVersion)
	b = appendNetstring(b, strconv.FormatInt(c.Seq, 10))
	b = appendNetstring(b, c.Hash)
	b = appendNetstring(b, NormalizeTime(c.Time).Format(TimeFormat))
	return appendNetstring(b, c.KeyID)
}

// SealCheckpoint returns a checkpoint of head h taken at `at`, sealed with
// the current key. Errors: ErrKeyUnknown for the empty keyring;
// ErrInvalidKeyring for the empty head.
func (k *Keyring) SealCheckpoint(h Head, at time.Time) (Checkpoint, error) {
	if h.Seq < 1 || h.Hash == "" {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint of an empty trail", ErrInvalidKeyring)
	}
	c := Checkpoint{Seq: h.Seq, Hash: h.Hash, Time: NormalizeTime(at), KeyID: k.Current().ID}
	if c.KeyID == "" {
		return Checkpoint{}, fmt.Errorf("%w: no key to seal a checkpoint with", ErrKeyUnknown)
	}
	var err error
	c.MAC, err = k.mac(c.KeyID, c.canonical())
	return c, err
}

// CheckCheckpoint reports whether c's MAC verifies: nil, an error wrapping
// ErrKeyUnknown when the keyring does not hold c.KeyID, or
// ErrCheckpointInvalid.
func (k *Keyring) CheckCheckpoint(c Checkpoint) error {
	want, err := k.mac(c.KeyID, c.canonical())
	if err != nil {
		return err
	}
	if !hmac.Equal([]byte(want), []byte(c.MAC)) {
		return ErrCheckpointInvalid
	}
	return nil
}

// jsonCheckpoint is the JSON form of a Checkpoint (checkpoint files and the
// "checkpoint" attribute of the structured log).
type jsonCheckpoint struct {
	Seq   int64  `json:"seq"`
	Hash  string `json:"hash"`
	Time  string `json:"time"`
	KeyID string `json:"keyId"`
	MAC   string `json:"mac"`
}

// MarshalJSON encodes c as {"seq","hash","time","keyId","mac"}.
func (c Checkpoint) MarshalJSON() ([]byte, error) {
	return json.Marshal(jsonCheckpoint{Seq: c.Seq, Hash: c.Hash, Time: NormalizeTime(c.Time).Format(TimeFormat), KeyID: c.KeyID, MAC: c.MAC})
}

// UnmarshalJSON decodes the form MarshalJSON writes; unknown fields are an
// error.
func (c *Checkpoint) UnmarshalJSON(b []byte) error {
	var j jsonCheckpoint
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return err
	}
	t, err := time.Parse(time.RFC3339Nano, j.Time)
	if err != nil {
		return fmt.Errorf("checkpoint time: %w", err)
	}
	*c = Checkpoint{Seq: j.Seq, Hash: j.Hash, Time: NormalizeTime(t), KeyID: j.KeyID, MAC: j.MAC}
	return nil
}

// LogValue makes a checkpoint a group of the structured log with the JSON
// form's fields (seq, hash, time, keyId, mac), so [ReadCheckpoints] reads
// checkpoints back from a JSON log.
func (c Checkpoint) LogValue() slog.Value {
	return slog.GroupValue(slog.Int64("seq", c.Seq), slog.String("hash", c.Hash),
		slog.String("time", NormalizeTime(c.Time).Format(TimeFormat)), slog.String("keyId", c.KeyID), slog.String("mac", c.MAC))
}

// CheckpointEntry is a checkpoint read from a file, with where it was read.
type CheckpointEntry struct {
	Checkpoint
	// Source names the file (or log) and Line its line (from 1).
	Source string
	Line   int
}

func (e CheckpointEntry) where() string { return fmt.Sprintf("%s line %d", e.Source, e.Line) }

// CheckpointError reports a checkpoint that cannot be used: a line that is
// not a checkpoint, or a MAC that does not verify. errors.Is(err,
// ErrCheckpointInvalid) holds.
type CheckpointError struct {
	Source string
	Line   int
	Reason string
}

// Error implements error.
func (e *CheckpointError) Error() string {
	return fmt.Sprintf("audit checkpoint %s line %d does not verify: %s", e.Source, e.Line, e.Reason)
}

// Is reports whether target is ErrCheckpointInvalid.
func (e *CheckpointError) Is(target error) bool { return target == ErrCheckpointInvalid }

// ReadCheckpoints reads the checkpoints of a checkpoint file (one JSON
// checkpoint per line) or of a JSON log (lines whose "checkpoint" attribute
// is one; other log lines are skipped), naming them source. Blank lines are
// skipped; a line that is not JSON, or a checkpoint that does not decode,
// gives a *CheckpointError naming the line (the checkpoints read so far are
// returned with it).
func ReadCheckpoints(r io.Reader, source string) ([]CheckpointEntry, error) {
	var out []CheckpointEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		bad := func(reason string) error { return &CheckpointError{Source: source, Line: n, Reason: reason} }
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(line, &fields); err != nil {
			return out, bad("not a JSON object (want a checkpoint file or a JSON log, --log-format json)")
		}
		raw := json.RawMessage(line)
		if cp, ok := fields["checkpoint"]; ok {
			raw = cp
		} else if _, ok := fields["mac"]; !ok {
			continue // another log line
		}
		var c Checkpoint
		if err := json.Unmarshal(raw, &c); err != nil {
			return out, bad("not a checkpoint: " + err.Error())
		}
		out = append(out, CheckpointEntry{Checkpoint: c, Source: source, Line: n})
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("audit: read checkpoints from %s: %w", source, err)
	}
	return out, nil
}

// CheckpointCheck compares a trail with checkpoints of its head: feed it
// every record of the trail, in order ([CheckpointCheck.Observe]), then ask
// [CheckpointCheck.Check]. A checkpoint says "record Seq had seal Hash";
// a trail that no longer has that record with that seal was changed after
// the checkpoint, whatever key it holds.
type CheckpointCheck struct {
	cps  []CheckpointEntry // authenticated, by Seq
	want map[int64]bool
	got  map[int64]string
}

// NewCheckpointCheck authenticates entries with ring and returns a check
// over those that verify, and an error (nil when all verify) joining a
// *CheckpointError per checkpoint whose MAC does not verify and an error
// wrapping ErrKeyUnknown for those sealed with keys ring does not hold (they
// are left out).
func NewCheckpointCheck(ring *Keyring, entries []CheckpointEntry) (*CheckpointCheck, error) {
	c := &CheckpointCheck{want: map[int64]bool{}, got: map[int64]string{}}
	var (
		errs    []error
		unknown = map[string]int{}
	)
	for _, e := range entries {
		err := ring.CheckCheckpoint(e.Checkpoint)
		switch {
		case errors.Is(err, ErrKeyUnknown):
			unknown[e.KeyID]++
			continue
		case err != nil:
			errs = append(errs, &CheckpointError{Source: e.Source, Line: e.Line,
				Reason: fmt.Sprintf("its MAC does not match its content under key %s: the checkpoint was altered or forged", e.KeyID)})
			continue
		}
		c.cps = append(c.cps, e)
		c.want[e.Seq] = true
	}
	slices.SortStableFunc(c.cps, func(a, b CheckpointEntry) int { return cmp.Compare(a.Seq, b.Seq) })
	if len(unknown) > 0 {
		var ids []string
		n := 0
		for _, id := range slices.Sorted(maps.Keys(unknown)) {
			ids = append(ids, id)
			n += unknown[id]
		}
		errs = append(errs, fmt.Errorf("%w: %d checkpoints are sealed with key %s, which the keyring (%s) does not hold: they were not used",
			ErrKeyUnknown, n, strings.Join(ids, ", "), ring))
	}
	return c, errors.Join(errs...)
}

// Len returns how many authenticated checkpoints the check holds.
func (c *CheckpointCheck) Len() int { return len(c.cps) }

// Observe takes the next record of the trail.
func (c *CheckpointCheck) Observe(r Record) {
	if c.want[r.Seq] {
		if _, seen := c.got[r.Seq]; !seen {
			c.got[r.Seq] = r.Hash
		}
	}
}

// Check compares the records observed with the checkpoints, the trail
// ending at last. It returns nil or a [*TamperError] for the first
// checkpoint (lowest Seq) the trail contradicts: KindDeleted when the
// trail ends before it (the head moved backwards) or lacks its record,
// KindRewritten when its record now has another seal. The error's Seq is
// the first record no holding checkpoint vouches for (a checkpoint holds
// only the head's seal, so the change lies between that record and the
// contradicted checkpoint's).
func (c *CheckpointCheck) Check(last Head) error {
	var holding int64 // highest Seq of a checkpoint that holds
	held := func() string {
		if holding == 0 {
			return "no earlier checkpoint holds"
		}
		return fmt.Sprintf("the last checkpoint that holds is at seq %d", holding)
	}
	for _, e := range c.cps {
		got, ok := c.got[e.Seq]
		switch {
		case ok && got == e.Hash:
			holding = e.Seq
			continue
		case !ok && e.Seq > last.Seq:
			return &TamperError{Seq: holding + 1, Kind: KindDeleted,
				Detail: fmt.Sprintf("the trail ends at seq %d but the checkpoint of %s (%s) has its head at %s: records were removed and the head moved backwards (records %s are gone; records %s are not vouched for: %s)",
					last.Seq, e.Time.Format(TimeFormat), e.where(), e.Head(), span(last.Seq+1, e.Seq), span(holding+1, e.Seq), held())}
		case !ok:
			return &TamperError{Seq: e.Seq, Kind: KindDeleted,
				Detail: fmt.Sprintf("record %d, the head of the checkpoint of %s (%s), is missing", e.Seq, e.Time.Format(TimeFormat), e.where())}
		}
		return &TamperError{Seq: holding + 1, Kind: KindRewritten,
			Detail: fmt.Sprintf("the checkpoint of %s (%s) says record %d has seal %s, the trail's record %d has seal %s: records %s were changed, deleted, inserted or reordered after the checkpoint and the rest re-sealed (%s)",
				e.Time.Format(TimeFormat), e.where(), e.Seq, short(e.Hash), e.Seq, short(got), span(holding+1, e.Seq), held())}
	}
	return nil
}
