package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCheckpointSealAndRead(t *testing.T) {
	ring := testKeyring(t, 1)
	rs := makeChainWith(ring, Head{}, 3)
	cp, err := ring.SealCheckpoint(HeadOf(rs[2]), t0.Add(1234*time.Microsecond))
	if err != nil {
		t.Fatal(err)
	}
	if cp.Seq != 3 || cp.Hash != rs[2].Hash || cp.KeyID != ring.Current().ID || !cp.Time.Equal(t0.Add(time.Millisecond)) {
		t.Fatalf("checkpoint %+v", cp)
	}
	if err := ring.CheckCheckpoint(cp); err != nil {
		t.Fatal(err)
	}
	for name, change := range map[string]func(*Checkpoint){
		"seq": func(c *Checkpoint) { c.Seq-- }, "hash": func(c *Checkpoint) { c.Hash = rs[1].Hash },
		"time": func(c *Checkpoint) { c.Time = c.Time.Add(time.Hour) }, "mac": func(c *Checkpoint) { c.MAC = strings.Repeat("0", 64) },
	} {
		c := cp
		change(&c)
		if err := ring.CheckCheckpoint(c); !errors.Is(err, ErrCheckpointInvalid) {
			t.Errorf("%s changed: %v", name, err)
		}
	}
	if err := testKeyring(t, 1).CheckCheckpoint(cp); !errors.Is(err, ErrKeyUnknown) {
		t.Errorf("another keyring: %v", err)
	}
	if _, err := (*Keyring)(nil).SealCheckpoint(HeadOf(rs[2]), t0); !errors.Is(err, ErrKeyUnknown) {
		t.Errorf("nil keyring: %v", err)
	}
	if _, err := ring.SealCheckpoint(Head{}, t0); err == nil {
		t.Error("checkpoint of an empty trail")
	}

	// The checkpoint file's line and the JSON log's attribute read back
	// alike; other log lines are skipped.
	line, _ := json.Marshal(cp)
	var logBuf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logBuf, nil))
	log.Info("worker started", "concurrency", 4)
	log.Info("audit checkpoint", "checkpoint", cp)
	for _, src := range []string{string(line) + "\n\n" + string(line) + "\n", logBuf.String()} {
		got, err := ReadCheckpoints(strings.NewReader(src), "f")
		if err != nil || len(got) == 0 {
			t.Fatalf("ReadCheckpoints(%q): %v, %v", src, got, err)
		}
		for _, e := range got {
			if e.Checkpoint != cp || e.Source != "f" || e.Line == 0 {
				t.Fatalf("read %+v, want %+v", e, cp)
			}
		}
	}
	for _, bad := range []string{"not json\n", `{"seq":1,"mac":"x","extra":1}`, `{"checkpoint":{"seq":"one"}}`} {
		_, err := ReadCheckpoints(strings.NewReader(string(line)+"\n"+bad), "f")
		var ce *CheckpointError
		if !errors.As(err, &ce) || ce.Line != 2 || !errors.Is(err, ErrCheckpointInvalid) {
			t.Errorf("ReadCheckpoints with %q: %v", bad, err)
		}
	}
}

// checkpointsOf seals checkpoints of rs's heads at the given seqs.
func checkpointsOf(t *testing.T, ring *Keyring, rs []Record, seqs ...int64) []CheckpointEntry {
	t.Helper()
	var out []CheckpointEntry
	for i, s := range seqs {
		cp, err := ring.SealCheckpoint(HeadOf(rs[at(s)]), t0.Add(time.Duration(s)*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, CheckpointEntry{Checkpoint: cp, Source: "cp", Line: i + 1})
	}
	return out
}

// checkAgainst verifies rs (ending at head) with ring, then against cps.
func checkAgainst(t *testing.T, ring *Keyring, rs []Record, head Head, cps []CheckpointEntry) error {
	t.Helper()
	if err := verifyWith(ring, rs, &head); err != nil {
		t.Fatalf("the rewritten trail should verify on its own (the tamperer holds the key): %v", err)
	}
	c, err := NewCheckpointCheck(ring, cps)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		c.Observe(r)
	}
	return c.Check(head)
}

// The writer who holds the key (but not the checkpoints): every rewrite
// covered by a checkpoint is caught.
func TestCheckpointsCatchKeyHolder(t *testing.T) {
	const n = 20
	ring := testKeyring(t, 1)
	reseal := func(rs []Record) ([]Record, Head) {
		var out []Record
		h := Head{}
		for _, r := range rs {
			c := ring.Chain(h, r)
			out = append(out, c)
			h = HeadOf(c)
		}
		return out, h
	}
	for _, tc := range []struct {
		name   string
		tamper func(rs []Record) ([]Record, Head)
		kind   string
		seq    int64
	}{
		{"record deleted, rest renumbered and re-sealed", func(rs []Record) ([]Record, Head) {
			return reseal(slices.Delete(rs, at(12), at(12)+1))
		}, KindRewritten, 11},
		{"record changed and re-sealed", func(rs []Record) ([]Record, Head) {
			rs[at(3)].Actor = "mallory"
			return reseal(rs)
		}, KindRewritten, 1},
		{"records reordered and re-sealed", func(rs []Record) ([]Record, Head) {
			rs[at(13)], rs[at(14)] = rs[at(14)], rs[at(13)]
			return reseal(rs)
		}, KindRewritten, 11},
		{"record inserted and re-sealed", func(rs []Record) ([]Record, Head) {
			return reseal(slices.Insert(rs, at(16), Record{Time: t0, Actor: "mallory", Action: "x", Result: ResultOK}))
		}, KindRewritten, 16},
		{"tail truncated, head moved back", func(rs []Record) ([]Record, Head) {
			return rs[:17], HeadOf(rs[16])
		}, KindDeleted, 16},
		{"tail truncated then regrown", func(rs []Record) ([]Record, Head) {
			return reseal(append(rs[:17:17], makeChain(Head{}, 6)...))
		}, KindRewritten, 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := makeChainWith(ring, Head{}, n)
			cps := checkpointsOf(t, ring, orig, 5, 10, 15, 20)
			rs, head := tc.tamper(slices.Clone(orig))
			checkTamper(t, checkAgainst(t, ring, rs, head, cps), tc.kind, tc.seq)
		})
	}
	t.Run("intact, checkpoints in any order", func(t *testing.T) {
		orig := makeChainWith(ring, Head{}, n)
		cps := checkpointsOf(t, ring, orig, 20, 5, 15, 10, 10)
		if err := checkAgainst(t, ring, orig, HeadOf(orig[n-1]), cps); err != nil {
			t.Fatal(err)
		}
		// Records after the last checkpoint are not covered (documented).
		rs, head := reseal(slices.Delete(slices.Clone(orig), n-1, n))
		if err := checkAgainst(t, ring, rs, head, checkpointsOf(t, ring, orig, 5, 15)); err != nil {
			t.Fatalf("a change after the last checkpoint: %v", err)
		}
	})
}

func TestCheckpointFileTampering(t *testing.T) {
	ring := testKeyring(t, 1)
	rs := makeChainWith(ring, Head{}, 10)
	cps := checkpointsOf(t, ring, rs, 4, 8)
	// A checkpoint moved to a rewritten trail's head without the key.
	forged := cps[1]
	forged.Hash = strings.Repeat("e", 64)
	// One sealed by a key the keyring does not hold.
	other := checkpointsOf(t, testKeyring(t, 1), rs, 9)[0]
	other.Line = 3
	c, err := NewCheckpointCheck(ring, []CheckpointEntry{cps[0], forged, other})
	var ce *CheckpointError
	if !errors.As(err, &ce) || ce.Line != 2 || !errors.Is(err, ErrCheckpointInvalid) || !errors.Is(err, ErrKeyUnknown) || errors.Is(err, ErrTampered) {
		t.Fatalf("err = %v", err)
	}
	if c.Len() != 1 {
		t.Fatalf("%d checkpoints kept, want the one that verifies", c.Len())
	}
}
