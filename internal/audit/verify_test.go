package audit

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

var actions = []string{"task.create", "task.cancel", "team.member.add", "machine.add", "vault.read", "task.attempt.failed"}

// makeChain returns a valid trail of n version 1 records starting after
// start.
func makeChain(start Head, n int) []Record { return makeChainWith(nil, start, n) }

// makeChainWith returns a valid trail of n records sealed by ring (version 1
// when nil) starting after start.
func makeChainWith(ring *Keyring, start Head, n int) []Record {
	out := make([]Record, 0, n)
	h := start
	for i := range n {
		r := ring.Chain(h, Record{
			Time:       t0.Add(time.Duration(int(h.Seq)+i) * time.Second),
			Actor:      []string{"alice", "bob", "worker-1"}[i%3],
			Action:     actions[i%len(actions)],
			EntityType: EntityTask,
			EntityID:   fmt.Sprintf("task-%d", int(h.Seq)+i),
			Team:       []string{"prod", "staging"}[i%2],
			Result:     ResultOK,
			Details:    map[string]string{"attempt": fmt.Sprint(i % 4)},
		})
		out = append(out, r)
		h = HeadOf(r)
	}
	return out
}

func rehash(r Record) Record { r.Hash = ComputeHash(r); return r }

func sortBySeq(rs []Record) []Record {
	slices.SortStableFunc(rs, func(a, b Record) int { return cmp.Compare(a.Seq, b.Seq) })
	return rs
}

// at returns the index of the record with seq s in a freshly made chain.
func at(s int64) int { return int(s - 1) }

func TestVerifyIntact(t *testing.T) {
	for _, n := range []int{0, 1, 2, 10, 200} {
		rs := makeChain(Head{}, n)
		if err := Verify(rs); err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		head := Head{}
		if n > 0 {
			head = HeadOf(rs[n-1])
		}
		if err := VerifyWithHead(rs, head); err != nil {
			t.Fatalf("n=%d with head: %v", n, err)
		}
	}
}

// verifyWith verifies rs with ring, against head when not nil.
func verifyWith(ring *Keyring, rs []Record, head *Head) error {
	opts := []VerifierOption{WithKeyring(ring)}
	if head != nil {
		opts = append(opts, WithHead(*head))
	}
	v := NewVerifier(Head{}, opts...)
	for _, r := range rs {
		if err := v.Add(r); err != nil {
			return err
		}
	}
	return v.Finish()
}

func TestVerifyTampering(t *testing.T) {
	t.Run("v1", func(t *testing.T) { testVerifyTampering(t, nil) })
	// A writer who holds the key re-seals as it pleases: every kind of
	// tampering is still detected and told apart the same way.
	t.Run("keyed", func(t *testing.T) { testVerifyTampering(t, testKeyring(t, 1)) })
}

// testVerifyTampering runs the tampering table on a trail sealed by ring
// (version 1 when nil), the tamperer re-sealing with the same ring.
func testVerifyTampering(t *testing.T, ring *Keyring) {
	const n = 10
	// The table's words, bound to ring.
	Chain := ring.Chain
	rehash := func(r Record) Record { r.Hash, _ = ring.Seal(r); return r }
	makeChain := func(start Head, n int) []Record { return makeChainWith(ring, start, n) }
	Verify := func(rs []Record) error { return verifyWith(ring, rs, nil) }
	VerifyWithHead := func(rs []Record, h Head) error { return verifyWith(ring, rs, &h) }
	type tamper func(rs []Record) []Record
	tests := []struct {
		name     string
		tamper   tamper
		useHead  bool // verify against the untouched head
		kind     string
		seq      int64
		noHeadOK bool // undetectable without the head (documented limit)
	}{
		// --- modified
		{name: "actor changed", kind: KindModified, seq: 4, tamper: func(rs []Record) []Record { rs[at(4)].Actor = "mallory"; return rs }},
		{name: "result changed", kind: KindModified, seq: 4, tamper: func(rs []Record) []Record { rs[at(4)].Result = ResultOK + "!"; return rs }},
		{name: "details value changed", kind: KindModified, seq: 4, tamper: func(rs []Record) []Record {
			rs[at(4)].Details = map[string]string{"attempt": "9"}
			return rs
		}},
		{name: "details key added", kind: KindModified, seq: 1, tamper: func(rs []Record) []Record {
			rs[0].Details = map[string]string{"attempt": "0", "x": ""}
			return rs
		}},
		{name: "time changed by 1ms", kind: KindModified, seq: 7, tamper: func(rs []Record) []Record {
			rs[at(7)].Time = rs[at(7)].Time.Add(time.Millisecond)
			return rs
		}},
		{name: "hash field changed", kind: KindModified, seq: 5, tamper: func(rs []Record) []Record {
			rs[at(5)].Hash = strings.Repeat("a", 64)
			return rs
		}},
		{name: "hash upper-cased", kind: KindModified, seq: 5, tamper: func(rs []Record) []Record {
			rs[at(5)].Hash = strings.ToUpper(rs[at(5)].Hash)
			return rs
		}},
		{name: "prevHash changed", kind: KindModified, seq: 6, tamper: func(rs []Record) []Record {
			rs[at(6)].PrevHash = strings.Repeat("b", 64)
			return rs
		}},
		{name: "seq changed, storage order", kind: KindModified, seq: 4, tamper: func(rs []Record) []Record {
			rs[at(4)].Seq = 40
			return rs
		}},
		{name: "seq changed, read by seq", kind: KindModified, seq: 4, tamper: func(rs []Record) []Record {
			rs[at(4)].Seq = 40
			return sortBySeq(rs)
		}},
		{name: "changed and re-hashed", kind: KindModified, seq: 4, tamper: func(rs []Record) []Record {
			rs[at(4)].Actor = "mallory"
			rs[at(4)] = rehash(rs[at(4)])
			return rs
		}},
		{name: "first record re-linked and re-hashed", kind: KindModified, seq: 1, tamper: func(rs []Record) []Record {
			rs[0].PrevHash = strings.Repeat("c", 64)
			rs[0] = rehash(rs[0])
			return rs
		}},
		{name: "last record changed and re-hashed", kind: KindModified, seq: n, useHead: true, noHeadOK: true, tamper: func(rs []Record) []Record {
			rs[n-1].Result = ResultDenied
			rs[n-1] = rehash(rs[n-1])
			return rs
		}},
		// --- deleted
		{name: "middle record deleted", kind: KindDeleted, seq: 4, tamper: func(rs []Record) []Record { return slices.Delete(rs, at(4), at(4)+1) }},
		{name: "two records deleted", kind: KindDeleted, seq: 4, tamper: func(rs []Record) []Record { return slices.Delete(rs, at(4), at(6)) }},
		{name: "first record deleted", kind: KindDeleted, seq: 1, tamper: func(rs []Record) []Record { return rs[1:] }},
		{name: "deleted and later renumbered", kind: KindDeleted, seq: 4, tamper: func(rs []Record) []Record {
			rs = slices.Delete(rs, at(4), at(4)+1)
			for i := at(4); i < len(rs); i++ {
				rs[i].Seq--
			}
			return rs
		}},
		{name: "second to last deleted and last renumbered", kind: KindDeleted, seq: n - 1, tamper: func(rs []Record) []Record {
			rs = slices.Delete(rs, n-2, n-1)
			rs[n-2].Seq--
			return rs
		}},
		{name: "deleted and next re-linked", kind: KindDeleted, seq: 4, tamper: func(rs []Record) []Record {
			rs[at(5)].PrevHash = rs[at(3)].Hash
			rs[at(5)] = rehash(rs[at(5)])
			return slices.Delete(rs, at(4), at(4)+1)
		}},
		{name: "last record truncated", kind: KindDeleted, seq: n, useHead: true, noHeadOK: true, tamper: func(rs []Record) []Record { return rs[:n-1] }},
		{name: "last three truncated", kind: KindDeleted, seq: n - 2, useHead: true, noHeadOK: true, tamper: func(rs []Record) []Record { return rs[:n-3] }},
		{name: "everything deleted", kind: KindDeleted, seq: 1, useHead: true, noHeadOK: true, tamper: func(rs []Record) []Record { return nil }},
		// --- inserted
		{name: "forged linked record before original (duplicate seq)", kind: KindInserted, seq: 5, tamper: func(rs []Record) []Record {
			f := Chain(HeadOf(rs[at(4)]), Record{Time: t0, Actor: "mallory", Action: "vault.read", Result: ResultOK})
			return slices.Insert(rs, at(5), f)
		}},
		{name: "forged linked record after original (duplicate seq)", kind: KindInserted, seq: 5, tamper: func(rs []Record) []Record {
			f := Chain(HeadOf(rs[at(4)]), Record{Time: t0, Actor: "mallory", Action: "vault.read", Result: ResultOK})
			return slices.Insert(rs, at(6), f)
		}},
		{name: "forged unlinked record", kind: KindInserted, seq: 5, tamper: func(rs []Record) []Record {
			f := Chain(Head{Seq: 4, Hash: strings.Repeat("d", 64)}, Record{Time: t0, Actor: "mallory", Action: "vault.read", Result: ResultOK})
			return slices.Insert(rs, at(5), f)
		}},
		{name: "forged record, later ones renumbered", kind: KindInserted, seq: 5, tamper: func(rs []Record) []Record {
			f := Chain(HeadOf(rs[at(4)]), Record{Time: t0, Actor: "mallory", Action: "vault.read", Result: ResultOK})
			for i := at(5); i < len(rs); i++ {
				rs[i].Seq++
			}
			return slices.Insert(rs, at(5), f)
		}},
		{name: "forged record, later ones renumbered and re-hashed", kind: KindInserted, seq: 5, tamper: func(rs []Record) []Record {
			f := Chain(HeadOf(rs[at(4)]), Record{Time: t0, Actor: "mallory", Action: "vault.read", Result: ResultOK})
			for i := at(5); i < len(rs); i++ {
				rs[i].Seq++
				rs[i] = rehash(rs[i])
			}
			return slices.Insert(rs, at(5), f)
		}},
		{name: "two forged records, later ones renumbered", kind: KindInserted, seq: 5, tamper: func(rs []Record) []Record {
			f1 := Chain(HeadOf(rs[at(4)]), Record{Time: t0, Actor: "mallory", Action: "vault.read", Result: ResultOK})
			f2 := Chain(HeadOf(f1), Record{Time: t0, Actor: "mallory", Action: "vault.read", Result: ResultOK})
			for i := at(5); i < len(rs); i++ {
				rs[i].Seq += 2
			}
			return slices.Insert(rs, at(5), f1, f2)
		}},
		{name: "row duplicated", kind: KindInserted, seq: 3, tamper: func(rs []Record) []Record { return slices.Insert(rs, at(4), rs[at(3)]) }},
		{name: "forged record appended", kind: KindInserted, seq: n + 1, useHead: true, noHeadOK: true, tamper: func(rs []Record) []Record {
			return append(rs, Chain(HeadOf(rs[n-1]), Record{Time: t0, Actor: "mallory", Action: "vault.read", Result: ResultOK}))
		}},
		{name: "forged record appended with a gap", kind: KindInserted, seq: n + 5, useHead: true, tamper: func(rs []Record) []Record {
			return append(rs, Chain(Head{Seq: n + 4, Hash: rs[n-1].Hash}, Record{Time: t0, Actor: "mallory", Action: "x", Result: ResultOK}))
		}},
		// --- reordered
		{name: "rows swapped", kind: KindReordered, seq: 4, tamper: func(rs []Record) []Record {
			rs[at(4)], rs[at(7)] = rs[at(7)], rs[at(4)]
			return rs
		}},
		{name: "adjacent rows swapped", kind: KindReordered, seq: 4, tamper: func(rs []Record) []Record {
			rs[at(4)], rs[at(5)] = rs[at(5)], rs[at(4)]
			return rs
		}},
		{name: "first and last rows swapped", kind: KindReordered, seq: 1, tamper: func(rs []Record) []Record {
			rs[0], rs[n-1] = rs[n-1], rs[0]
			return rs
		}},
		{name: "row moved to the end", kind: KindReordered, seq: 2, tamper: func(rs []Record) []Record {
			r := rs[at(2)]
			return append(slices.Delete(rs, at(2), at(2)+1), r)
		}},
		{name: "seq values swapped, read by seq", kind: KindReordered, seq: 4, tamper: func(rs []Record) []Record {
			rs[at(4)].Seq, rs[at(7)].Seq = 7, 4
			return sortBySeq(rs)
		}},
		{name: "adjacent seq values swapped, read by seq", kind: KindReordered, seq: 4, tamper: func(rs []Record) []Record {
			rs[at(4)].Seq, rs[at(5)].Seq = 5, 4
			return sortBySeq(rs)
		}},
		{name: "seq values swapped, storage order", kind: KindReordered, seq: 4, tamper: func(rs []Record) []Record {
			rs[at(4)].Seq, rs[at(7)].Seq = 7, 4
			return rs
		}},
		{name: "seq values swapped and re-hashed, read by seq", kind: KindReordered, seq: 4, tamper: func(rs []Record) []Record {
			rs[at(4)].Seq, rs[at(7)].Seq = 7, 4
			rs[at(4)], rs[at(7)] = rehash(rs[at(4)]), rehash(rs[at(7)])
			return sortBySeq(rs)
		}},
		{name: "last two seq values swapped, read by seq", kind: KindReordered, seq: n - 1, tamper: func(rs []Record) []Record {
			rs[n-2].Seq, rs[n-1].Seq = n, n-1
			return sortBySeq(rs)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := makeChain(Head{}, n)
			head := HeadOf(orig[n-1])
			rs := tt.tamper(slices.Clone(orig))
			var err error
			if tt.useHead {
				err = VerifyWithHead(rs, head)
			} else {
				err = Verify(rs)
			}
			checkTamper(t, err, tt.kind, tt.seq)
			// With the head, everything is detected, and the same way unless
			// the head is the only witness.
			if err := VerifyWithHead(rs, head); !errors.Is(err, ErrTampered) {
				t.Errorf("VerifyWithHead = %v, want a TamperError", err)
			}
			if tt.noHeadOK {
				if err := Verify(rs); err != nil {
					t.Errorf("Verify without head = %v; the records alone were expected to look sound", err)
				}
			}
		})
	}
}

func checkTamper(t *testing.T, err error, kind string, seq int64) {
	t.Helper()
	var te *TamperError
	if !errors.As(err, &te) {
		t.Fatalf("err = %v, want *TamperError{%s at %d}", err, kind, seq)
	}
	if !errors.Is(err, ErrTampered) {
		t.Errorf("errors.Is(err, ErrTampered) = false")
	}
	if te.Kind != kind || te.Seq != seq {
		t.Fatalf("got %s at %d (%s), want %s at %d", te.Kind, te.Seq, te.Detail, kind, seq)
	}
	if te.Detail == "" || !strings.Contains(te.Error(), kind) {
		t.Errorf("uninformative error %q", te.Error())
	}
}

// Long chains: displacements larger than the look-ahead window.
func TestVerifyLongChain(t *testing.T) {
	const n = 300
	tests := []struct {
		name   string
		tamper func([]Record) []Record
		kind   string
		seq    int64
	}{
		{"rows 10 and 200 swapped", func(rs []Record) []Record { rs[at(10)], rs[at(200)] = rs[at(200)], rs[at(10)]; return rs }, KindReordered, 10},
		{"seq values 10 and 50 swapped, by seq", func(rs []Record) []Record {
			rs[at(10)].Seq, rs[at(50)].Seq = 50, 10
			return sortBySeq(rs)
		}, KindReordered, 10},
		{"100 records deleted", func(rs []Record) []Record { return slices.Delete(rs, at(100), at(200)) }, KindDeleted, 100},
		{"modified late", func(rs []Record) []Record { rs[at(299)].Team = "dev"; return rs }, KindModified, 299},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := tt.tamper(makeChain(Head{}, n))
			checkTamper(t, Verify(rs), tt.kind, tt.seq)
		})
	}
}

func TestVerifierReportsEarly(t *testing.T) {
	rs := makeChain(Head{}, 100)
	rs[at(10)].Actor = "mallory"
	v := NewVerifier(Head{})
	var err error
	added := 0
	for _, r := range rs {
		added++
		if err = v.Add(r); err != nil {
			break
		}
	}
	checkTamper(t, err, KindModified, 10)
	if added >= 10+windowSize {
		t.Errorf("reported after %d records, want within the %d-record window", added, windowSize)
	}
	if v.Count() != 9 || v.Head() != HeadOf(rs[at(9)]) {
		t.Errorf("Count, Head = %d, %v; want 9, head of record 9", v.Count(), v.Head())
	}
	// Sticky.
	if err2 := v.Add(rs[50]); err2 != err {
		t.Errorf("second Add = %v, want the same error", err2)
	}
	if err2 := v.Finish(); err2 != err {
		t.Errorf("Finish = %v, want the same error", err2)
	}
}

func TestVerifierFinished(t *testing.T) {
	rs := makeChain(Head{}, 3)
	v := NewVerifier(Head{})
	for _, r := range rs[:2] {
		if err := v.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Finish(); err != nil {
		t.Fatal(err)
	}
	if err := v.Add(rs[2]); !errors.Is(err, ErrVerifierFinished) {
		t.Fatalf("Add after Finish = %v", err)
	}
}

func TestVerifySegments(t *testing.T) {
	all := makeChain(Head{}, 40)
	archive, live := all[:25], all[25:]
	headArchive := HeadOf(archive[len(archive)-1])
	head := HeadOf(all[len(all)-1])

	t.Run("one verifier over both segments", func(t *testing.T) {
		v := NewVerifier(Head{}, WithHead(head))
		for _, seg := range [][]Record{archive, live} {
			for _, r := range seg {
				if err := v.Add(r); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := v.Finish(); err != nil {
			t.Fatal(err)
		}
		if v.Head() != head || v.Count() != 40 {
			t.Fatalf("Head, Count = %v, %d", v.Head(), v.Count())
		}
	})

	t.Run("one verifier per segment", func(t *testing.T) {
		v1 := NewVerifier(Head{})
		for _, r := range archive {
			if err := v1.Add(r); err != nil {
				t.Fatal(err)
			}
		}
		if err := v1.Finish(); err != nil {
			t.Fatal(err)
		}
		if v1.Head() != headArchive {
			t.Fatalf("archive head %v, want %v", v1.Head(), headArchive)
		}
		v2 := NewVerifier(v1.Head(), WithHead(head))
		for _, r := range live {
			if err := v2.Add(r); err != nil {
				t.Fatal(err)
			}
		}
		if err := v2.Finish(); err != nil {
			t.Fatal(err)
		}
		if v2.Count() != int64(len(live)) {
			t.Fatalf("Count = %d", v2.Count())
		}
	})

	verifyLive := func(start Head, rs []Record) error {
		v := NewVerifier(start, WithHead(head))
		for _, r := range rs {
			if err := v.Add(r); err != nil {
				return err
			}
		}
		return v.Finish()
	}
	t.Run("archive's last record changed and re-hashed", func(t *testing.T) {
		// The live segment no longer links to the archive's (new) head.
		forged := archive[len(archive)-1]
		forged.Actor = "mallory"
		forged = rehash(forged)
		checkTamper(t, verifyLive(HeadOf(forged), live), KindModified, 25)
	})
	t.Run("first live record deleted", func(t *testing.T) {
		checkTamper(t, verifyLive(headArchive, live[1:]), KindDeleted, 26)
	})
	t.Run("live record modified", func(t *testing.T) {
		rs := slices.Clone(live)
		rs[5].EntityID = "other"
		checkTamper(t, verifyLive(headArchive, rs), KindModified, 31)
	})
	t.Run("archive record repeated in live", func(t *testing.T) {
		rs := append([]Record{archive[len(archive)-1]}, live...)
		checkTamper(t, verifyLive(headArchive, rs), KindInserted, 25)
	})
}

// mutation is what Verify should report for one tampering.
type mutation struct {
	kind string // expected Kind
	seq  int64  // expected Seq
}

// mutate applies tampering number op to a clone of rs (n >= 3 records) and
// says what Verify should report.
func mutate(rs []Record, op, i, j uint8, val string, rng *rand.Rand) ([]Record, mutation) {
	n := len(rs)
	rs = slices.Clone(rs)
	a := int(i) % n
	b := int(j) % n
	if a == b {
		b = (a + 1 + rng.IntN(n-1)) % n
	}
	if a > b {
		a, b = b, a
	}
	s := func(k int) int64 { return int64(k + 1) }
	switch op % 12 {
	case 0: // change one field, no re-hash
		r := &rs[a]
		switch rng.IntN(9) {
		case 0:
			r.Actor += val + "x"
		case 1:
			r.Action = val + "!"
		case 2:
			r.EntityID += "."
		case 3:
			r.Team = r.Team + val + "?"
		case 4:
			r.Result = "denied" + val
		case 5:
			r.Time = r.Time.Add(time.Duration(1+rng.IntN(1e6)) * time.Millisecond)
		case 6:
			r.Details = map[string]string{val: val + "z"}
		case 7:
			r.PrevHash = fmt.Sprintf("%064x", rng.Uint64())
		case 8:
			r.Hash = fmt.Sprintf("%064x", rng.Uint64())
		}
		return rs, mutation{KindModified, s(a)}
	case 1: // change and re-hash
		rs[a].Actor += "y" + val
		rs[a] = rehash(rs[a])
		return rs, mutation{KindModified, s(a)}
	case 2: // delete one (the last one: truncation)
		return slices.Delete(rs, a, a+1), mutation{KindDeleted, s(a)}
	case 3: // delete a range
		return slices.Delete(rs, a, b+1), mutation{KindDeleted, s(a)}
	case 4: // truncate
		return rs[:a], mutation{KindDeleted, s(a)}
	case 5: // swap rows
		rs[a], rs[b] = rs[b], rs[a]
		return rs, mutation{KindReordered, s(a)}
	case 6: // swap seq values, read by seq
		rs[a].Seq, rs[b].Seq = rs[b].Seq, rs[a].Seq
		return sortBySeq(rs), mutation{KindReordered, s(a)}
	case 7: // forged linked record with a duplicate seq
		f := Chain(HeadOf(prevOf(rs, a)), Record{Time: t0, Actor: "mallory" + val, Action: "vault.read", Result: ResultOK})
		return slices.Insert(rs, a+rng.IntN(2), f), mutation{KindInserted, s(a)}
	case 8: // forged record, later renumbered
		f := Chain(HeadOf(prevOf(rs, a)), Record{Time: t0, Actor: "mallory" + val, Action: "vault.read", Result: ResultOK})
		for k := a; k < n; k++ {
			rs[k].Seq++
		}
		return slices.Insert(rs, a, f), mutation{KindInserted, s(a)}
	case 9: // appended
		f := Chain(HeadOf(rs[n-1]), Record{Time: t0, Actor: "mallory" + val, Action: "vault.read", Result: ResultOK})
		return append(rs, f), mutation{KindInserted, int64(n + 1)}
	case 10: // duplicate row
		return slices.Insert(rs, a+1, rs[a]), mutation{KindInserted, s(a)}
	default: // delete and renumber
		rs = slices.Delete(rs, a, a+1)
		for k := a; k < len(rs); k++ {
			rs[k].Seq--
		}
		return rs, mutation{KindDeleted, s(a)}
	}
}

// prevOf returns the record before index a, or the genesis as a record.
func prevOf(rs []Record, a int) Record {
	if a == 0 {
		return Record{Seq: 0, Hash: GenesisHash}
	}
	return rs[a-1]
}

func FuzzVerifyDetectsTampering(f *testing.F) {
	for op := range uint8(12) {
		f.Add(uint64(op), uint8(10), op, uint8(3), uint8(6), "v")
	}
	f.Add(uint64(99), uint8(3), uint8(5), uint8(0), uint8(2), "")
	f.Add(uint64(7), uint8(40), uint8(6), uint8(1), uint8(39), "x")
	f.Fuzz(func(t *testing.T, seed uint64, size, op, i, j uint8, val string) {
		rng := rand.New(rand.NewPCG(seed, 1))
		n := 3 + int(size)%60
		orig := makeChain(Head{}, n)
		head := HeadOf(orig[n-1])
		rs, want := mutate(orig, op, i, j, val, rng)
		err := VerifyWithHead(rs, head)
		var te *TamperError
		if !errors.As(err, &te) {
			t.Fatalf("op %d (i=%d j=%d n=%d): tampering not detected: %v", op%12, i, j, n, err)
		}
		if te.Kind != want.kind || te.Seq != want.seq {
			t.Fatalf("op %d (i=%d j=%d n=%d): got %s at %d (%s), want %s at %d",
				op%12, i, j, n, te.Kind, te.Seq, te.Detail, want.kind, want.seq)
		}
	})
}

// FuzzVerifyDetectsCombined applies up to four random tamperings in a row and
// requires only that the result, if it differs from the original trail, is
// detected against the head.
func FuzzVerifyDetectsCombined(f *testing.F) {
	f.Add(uint64(1), uint8(10), []byte{5, 3, 6, 5, 3, 6}, "")
	f.Add(uint64(2), uint8(20), []byte{11, 2, 9, 8, 4, 0, 7, 1, 1}, "x")
	f.Add(uint64(3), uint8(5), []byte{4, 4, 0, 9, 0, 0}, "y")
	f.Fuzz(func(t *testing.T, seed uint64, size uint8, ops []byte, val string) {
		rng := rand.New(rand.NewPCG(seed, 2))
		n := 3 + int(size)%40
		orig := makeChain(Head{}, n)
		head := HeadOf(orig[n-1])
		rs := orig
		for k := 0; k+2 < len(ops) && k < 12 && len(rs) >= 3; k += 3 {
			rs, _ = mutate(rs, ops[k], ops[k+1], ops[k+2], val, rng)
		}
		if sameTrail(rs, orig) {
			t.Skip("tamperings cancelled out")
		}
		if err := VerifyWithHead(rs, head); !errors.Is(err, ErrTampered) {
			t.Fatalf("ops %v: tampering not detected: %v", ops, err)
		}
	})
}

func sameTrail(a, b []Record) bool {
	return slices.EqualFunc(a, b, func(x, y Record) bool { return sameRecord(x, y) && x.Hash == y.Hash })
}

func BenchmarkVerify(b *testing.B) {
	rs := makeChain(Head{}, 10000)
	head := HeadOf(rs[len(rs)-1])
	b.ResetTimer()
	for range b.N {
		if err := VerifyWithHead(rs, head); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(rs)), "ns/record")
}
