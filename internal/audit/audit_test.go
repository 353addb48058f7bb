package audit

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 678_000_000, time.UTC)

// fixed is the record whose encoding and hash are pinned by golden values.
func fixed() Record {
	return Record{
		Seq:        1,
		Time:       t0,
		Actor:      "alice",
		Action:     "task.create",
		EntityType: EntityTask,
		EntityID:   "6f1c2f0e-0000-4000-8000-000000000001",
		Team:       "prod",
		Result:     ResultOK,
		Details:    map[string]string{"priority": "2", "machine": "db1"},
		PrevHash:   GenesisHash,
	}
}

const (
	goldenCanonical = "16:rediacc.audit.v1,1:1,24:2025-01-02T03:04:05.678Z,5:alice,11:task.create,4:task," +
		"36:6f1c2f0e-0000-4000-8000-000000000001,4:prod,2:ok,1:2,7:machine,3:db1,8:priority,1:2," +
		"64:" + GenesisHash + ","
	goldenHash = "7b23579af4dddf7189f21b5de8537b069eca93a7411911853e30ae6829c5282a" // printf "%s" "$goldenCanonical" | sha256sum
)

func TestCanonicalGolden(t *testing.T) {
	r := fixed()
	if got := string(Canonical(r)); got != goldenCanonical {
		t.Fatalf("Canonical changed (this breaks every stored trail):\n got %q\nwant %q", got, goldenCanonical)
	}
	if got := ComputeHash(r); got != goldenHash {
		t.Fatalf("ComputeHash = %s, want %s", got, goldenHash)
	}
	// Hash does not take part; the time zone and sub-millisecond digits do not either.
	r.Hash = "anything"
	r.Time = t0.In(time.FixedZone("X", 5*3600)).Add(999 * time.Microsecond)
	if got := ComputeHash(r); got != goldenHash {
		t.Fatalf("hash depends on Hash, zone or sub-ms time: %s", got)
	}
}

func TestCanonicalStable(t *testing.T) {
	// Map iteration order must not matter: build the same details many ways.
	base := fixed()
	base.Details = map[string]string{}
	for i := range 50 {
		base.Details[fmt.Sprintf("k%02d", i)] = strconv.Itoa(i)
	}
	want := Canonical(base)
	for range 20 {
		r := base
		r.Details = maps.Clone(base.Details)
		if got := Canonical(r); !bytes.Equal(got, want) {
			t.Fatal("Canonical is not deterministic")
		}
	}
	// nil and empty details are the same record.
	a, b := fixed(), fixed()
	a.Details, b.Details = nil, map[string]string{}
	if !bytes.Equal(Canonical(a), Canonical(b)) {
		t.Fatal("nil and empty Details encode differently")
	}
}

func TestCanonicalDistinguishesFields(t *testing.T) {
	// Each pair differs in one way a naive concatenation would lose.
	mods := []struct {
		name string
		a, b func(*Record)
	}{
		{"actor/action boundary", func(r *Record) { r.Actor, r.Action = "ab", "c" }, func(r *Record) { r.Actor, r.Action = "a", "bc" }},
		{"separator inside value", func(r *Record) { r.Actor, r.Action = "a,1:b", "" }, func(r *Record) { r.Actor, r.Action = "a", "b" }},
		{"details key/value boundary", func(r *Record) { r.Details = map[string]string{"ab": "c"} }, func(r *Record) { r.Details = map[string]string{"a": "bc"} }},
		{"details moved to team", func(r *Record) { r.Details = map[string]string{"x": "y"}; r.Team = "" }, func(r *Record) { r.Details = nil; r.Team = "1:x,1:y" }},
		{"empty value vs missing key", func(r *Record) { r.Details = map[string]string{"a": ""} }, func(r *Record) { r.Details = nil }},
		{"seq", func(r *Record) { r.Seq = 12 }, func(r *Record) { r.Seq = 1 }},
		{"negative seq", func(r *Record) { r.Seq = -1 }, func(r *Record) { r.Seq = 1 }},
		{"millisecond", func(r *Record) { r.Time = t0.Add(time.Millisecond) }, func(r *Record) {}},
		{"entity type/id", func(r *Record) { r.EntityType, r.EntityID = "task", "x" }, func(r *Record) { r.EntityType, r.EntityID = "taskx", "" }},
		{"result", func(r *Record) { r.Result = ResultDenied }, func(r *Record) {}},
		{"prevHash", func(r *Record) { r.PrevHash = strings.Repeat("1", 64) }, func(r *Record) {}},
	}
	for _, m := range mods {
		t.Run(m.name, func(t *testing.T) {
			a, b := fixed(), fixed()
			m.a(&a)
			m.b(&b)
			if bytes.Equal(Canonical(a), Canonical(b)) {
				t.Fatalf("two different records encode the same: %q", Canonical(a))
			}
			if ComputeHash(a) == ComputeHash(b) {
				t.Fatal("two different records hash the same")
			}
		})
	}
}

// decodeCanonical parses a canonical encoding back into a record, proving the
// encoding unambiguous (it is used by the fuzz test).
func decodeCanonical(b []byte) (Record, error) {
	next := func() (string, error) {
		i := bytes.IndexByte(b, ':')
		if i <= 0 {
			return "", errors.New("no length")
		}
		n, err := strconv.Atoi(string(b[:i]))
		if err != nil || n < 0 || i+1+n >= len(b) || b[i+1+n] != ',' {
			return "", fmt.Errorf("bad netstring at %q", b)
		}
		s := string(b[i+1 : i+1+n])
		b = b[i+2+n:]
		return s, nil
	}
	var f [10]string
	var r Record
	v, err := next()
	if err != nil || v != CanonicalVersion {
		return r, fmt.Errorf("version %q: %v", v, err)
	}
	for i := range 9 {
		if f[i], err = next(); err != nil {
			return r, err
		}
	}
	if r.Seq, err = strconv.ParseInt(f[0], 10, 64); err != nil {
		return r, err
	}
	if r.Time, err = time.Parse(TimeFormat, f[1]); err != nil {
		return r, err
	}
	r.Actor, r.Action, r.EntityType, r.EntityID, r.Team, r.Result = f[2], f[3], f[4], f[5], f[6], f[7]
	n, err := strconv.Atoi(f[8])
	if err != nil {
		return r, err
	}
	prevKey := ""
	for i := range n {
		k, err := next()
		if err != nil {
			return r, err
		}
		val, err := next()
		if err != nil {
			return r, err
		}
		if i > 0 && k <= prevKey {
			return r, errors.New("keys not sorted")
		}
		prevKey = k
		if r.Details == nil {
			r.Details = map[string]string{}
		}
		r.Details[k] = val
	}
	if r.PrevHash, err = next(); err != nil {
		return r, err
	}
	if len(b) != 0 {
		return r, errors.New("trailing bytes")
	}
	return r, nil
}

// sameRecord compares the fields Canonical covers, with its equivalences.
func sameRecord(a, b Record) bool {
	return a.Seq == b.Seq && NormalizeTime(a.Time).Equal(NormalizeTime(b.Time)) &&
		a.Actor == b.Actor && a.Action == b.Action && a.EntityType == b.EntityType &&
		a.EntityID == b.EntityID && a.Team == b.Team && a.Result == b.Result &&
		maps.Equal(a.Details, b.Details) && a.PrevHash == b.PrevHash
}

func FuzzCanonicalRoundTrip(f *testing.F) {
	f.Add(int64(1), int64(0), "alice", "task.create", "task", "id", "prod", "ok", "k", "v", "k2", "v2", GenesisHash)
	f.Add(int64(-5), int64(1e12), "a:b,", "1:x,", "", "", "", "", "", "", ",", ":", "")
	f.Fuzz(func(t *testing.T, seq, ms int64, actor, action, et, eid, team, result, k1, v1, k2, v2, prev string) {
		r := Record{Seq: seq, Time: time.UnixMilli(ms % 253402300799999).UTC(), Actor: actor, Action: action,
			EntityType: et, EntityID: eid, Team: team, Result: result, PrevHash: prev,
			Details: map[string]string{k1: v1, k2: v2}}
		if r.Time.Year() < 0 {
			t.Skip()
		}
		got, err := decodeCanonical(Canonical(r))
		if err != nil {
			t.Fatalf("decode %q: %v", Canonical(r), err)
		}
		if !sameRecord(got, r) {
			t.Fatalf("round trip changed the record:\n got %+v\nwant %+v", got, r)
		}
	})
}

func TestChain(t *testing.T) {
	details := map[string]string{"a": "1"}
	r1 := Chain(Head{}, Record{Time: t0.Add(123 * time.Microsecond), Actor: "alice", Action: "team.create", Result: ResultOK, Details: details})
	if r1.Seq != 1 || r1.PrevHash != GenesisHash || r1.Hash != ComputeHash(r1) {
		t.Fatalf("first record: %+v", r1)
	}
	if !r1.Time.Equal(t0) || r1.Time.Location() != time.UTC {
		t.Fatalf("time not normalized: %v", r1.Time)
	}
	details["a"] = "changed"
	if r1.Details["a"] != "1" {
		t.Fatal("Chain did not copy Details")
	}
	r2 := Chain(HeadOf(r1), Record{Time: t0, Actor: "bob", Action: "machine.add", Result: ResultOK})
	if r2.Seq != 2 || r2.PrevHash != r1.Hash || r2.Hash != ComputeHash(r2) {
		t.Fatalf("second record: %+v", r2)
	}
	if err := VerifyWithHead([]Record{r1, r2}, HeadOf(r2)); err != nil {
		t.Fatal(err)
	}
	if got := (Head{}).LinkHash(); got != GenesisHash {
		t.Fatalf("zero head links to %s", got)
	}
	if len(r1.Hash) != 64 || strings.ToLower(r1.Hash) != r1.Hash {
		t.Fatalf("hash %q is not lower-case hex SHA-256", r1.Hash)
	}
}

func TestValidate(t *testing.T) {
	ok := fixed()
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []func(*Record){
		func(r *Record) { r.Actor = "" },
		func(r *Record) { r.Action = "" },
		func(r *Record) { r.Time = time.Time{} },
		func(r *Record) { r.Result = "fine" },
		func(r *Record) { r.Team = "\xff" },
		func(r *Record) { r.Details = map[string]string{"k": "\xfe"} },
		func(r *Record) { r.Details = map[string]string{"\xfe": "v"} },
	}
	for i, m := range bad {
		r := fixed()
		m(&r)
		if err := r.Validate(); !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("case %d: Validate = %v, want ErrInvalidRecord", i, err)
		}
	}
}
