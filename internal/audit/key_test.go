package audit

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// testKeyring returns a keyring of one new key made to seal from seq from.
func testKeyring(t testing.TB, from int64) *Keyring {
	t.Helper()
	k, err := NewKeyring(NewKey(from, t0))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKeyringFileRoundTrip(t *testing.T) {
	k1 := NewKey(1, t0)
	k2 := NewKey(40, t0.Add(time.Hour))
	ring, err := NewKeyring(k1, k2)
	if err != nil {
		t.Fatal(err)
	}
	if ring.Current().ID != k2.ID || ring.KeyedFrom() != 1 || len(k1.ID) != 16 || k1.ID == k2.ID {
		t.Fatalf("current %s, keyed from %d, ids %s %s", ring.Current().ID, ring.KeyedFrom(), k1.ID, k2.ID)
	}
	file := ring.Marshal()
	back, err := ParseKeyring(file)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(back.IDs(), ring.IDs()) || back.Current().ID != k2.ID || !bytes.Equal(back.Marshal(), file) {
		t.Fatalf("round trip: %s vs %s", back, ring)
	}
	r := ring.Chain(Head{}, Record{Time: t0, Actor: "alice", Action: "team.create", Result: ResultOK})
	if ok, known := back.Sealed(r); !ok || !known {
		t.Fatal("a parsed keyring does not verify what the original sealed")
	}
	// Files merge by concatenation; a key present twice counts once.
	k3 := NewKey(90, t0.Add(2*time.Hour))
	merged, err := ParseKeyring(append(append(slices.Clone(file), k3.MarshalLine()...), k1.MarshalLine()...))
	if err != nil {
		t.Fatal(err)
	}
	if got := merged.IDs(); !slices.Equal(got, []string{k1.ID, k2.ID, k3.ID}) || merged.Current().ID != k3.ID {
		t.Fatalf("merged: %v, current %s", got, merged.Current().ID)
	}
	// A key's id depends on its secret only.
	again, _ := KeyFromSecret(k1.secret, 7, t0.Add(time.Minute))
	if again.ID != k1.ID {
		t.Fatal("the id depends on more than the secret")
	}
}

func TestKeyringNeverPrintsSecrets(t *testing.T) {
	k := NewKey(1, t0)
	ring, _ := NewKeyring(k)
	secret := base64.StdEncoding.EncodeToString(k.secret)
	for _, s := range []string{
		fmt.Sprint(k), fmt.Sprintf("%+v", k), fmt.Sprintf("%#v", k), fmt.Sprintf("%v", struct{ K Key }{k}),
		fmt.Sprint(ring), fmt.Sprintf("%+v", ring), fmt.Sprintf("%#v", ring),
	} {
		if strings.Contains(s, secret) || strings.Contains(s, fmt.Sprint(k.secret)) || !strings.Contains(s, k.ID) {
			t.Fatalf("printed %q", s)
		}
	}
	if !bytes.Contains(ring.Marshal(), []byte(secret)) {
		t.Fatal("Marshal does not hold the secret")
	}
}

func TestParseKeyringErrors(t *testing.T) {
	good := NewKey(1, t0).MarshalLine()
	short := fmt.Sprintf(`{"id":"x","from":1,"created":"2025-01-02T03:04:05Z","key":%q}`, base64.StdEncoding.EncodeToString(make([]byte, 16)))
	altered := bytes.Replace(good, []byte(`"id":"`), []byte(`"id":"0`), 1)
	for _, tc := range []struct {
		name, file, want string
	}{
		{"not JSON", "hello\n", "line 1"},
		{"unknown field", string(good[:len(good)-2]) + `,"extra":1}` + "\n", "line 1"},
		{"short key", "\n" + short + "\n", "line 2"},
		{"bad base64", `{"id":"x","from":1,"created":"2025-01-02T03:04:05Z","key":"!!!"}`, "base64"},
		{"bad time", strings.Replace(string(good), "T", " ", 1), "RFC 3339"},
		{"altered id", string(altered), "does not match its key"},
		{"empty", "\n\n", "no key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseKeyring([]byte(tc.file))
			if !errors.Is(err, ErrInvalidKeyring) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalidKeyring mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := KeyFromSecret(make([]byte, KeySize-1), 0, t0); !errors.Is(err, ErrInvalidKeyring) {
		t.Fatalf("short secret: %v", err)
	}
}

func TestKeyedRecords(t *testing.T) {
	ring := testKeyring(t, 1)
	r := ring.Chain(Head{}, fixed())
	if r.KeyID != ring.Current().ID || r.Hash == ComputeHash(r) || len(r.Hash) != 64 {
		t.Fatalf("keyed record: %+v", r)
	}
	if !bytes.HasPrefix(Canonical(r), []byte("16:rediacc.audit.v2,")) || !bytes.Contains(Canonical(r), []byte("16:"+r.KeyID+",")) {
		t.Fatalf("canonical v2: %q", Canonical(r))
	}
	// Every field, the key id included, is under the seal.
	for name, change := range map[string]func(*Record){
		"actor": func(r *Record) { r.Actor += "x" }, "seq": func(r *Record) { r.Seq++ },
		"time": func(r *Record) { r.Time = r.Time.Add(time.Millisecond) }, "details": func(r *Record) { r.Details = nil },
		"prevHash":             func(r *Record) { r.PrevHash = strings.Repeat("1", 64) },
		"keyId to another key": func(r *Record) { r.KeyID = NewKey(1, t0).ID },
	} {
		c := r
		change(&c)
		if ok, _ := ring.Sealed(c); ok {
			t.Errorf("%s changed, the seal still verifies", name)
		}
	}
	// Another key's seal is not this key's.
	other := testKeyring(t, 1)
	if ok, known := other.Sealed(r); ok || known {
		t.Fatalf("another keyring: ok %v known %v", ok, known)
	}
	// The nil keyring chains and verifies version 1 only.
	var none *Keyring
	v1 := none.Chain(Head{}, fixed())
	if v1.KeyID != "" || v1.Hash != ComputeHash(v1) {
		t.Fatalf("nil keyring chained %+v", v1)
	}
	if _, err := none.Seal(r); !errors.Is(err, ErrKeyUnknown) {
		t.Fatalf("nil keyring sealing a keyed record: %v", err)
	}
}

// The writer without the key: everything it can do to a keyed trail is
// caught by the records alone, or reported as unauthenticated (never
// "intact").
func TestVerifyKeylessWriter(t *testing.T) {
	const n = 12
	ring := testKeyring(t, 1)
	users := func(rs []Record) []Record { // bob's records are 2, 5, 8, 11
		for i := range rs {
			if i%3 == 1 {
				rs[i].Actor = "bob"
			}
		}
		return rs
	}
	fresh := func() []Record {
		rs := makeChainWith(nil, Head{}, n) // content only; re-chained below
		users(rs)
		out := make([]Record, 0, n)
		h := Head{}
		for _, r := range rs {
			c := ring.Chain(h, r)
			out = append(out, c)
			h = HeadOf(c)
		}
		return out
	}
	// rechain rebuilds a trail from the records' content with seal.
	rechain := func(rs []Record, seal func(h Head, r Record) Record) ([]Record, Head) {
		var out []Record
		h := Head{}
		for _, r := range rs {
			c := seal(h, r)
			out = append(out, c)
			h = HeadOf(c)
		}
		return out, h
	}
	keepPrefix := func(rs []Record, k int, seal func(h Head, r Record) Record) ([]Record, Head) {
		// records before k stay; from k on, re-chained with seal
		out := slices.Clone(rs[:k])
		h := HeadOf(rs[k-1])
		for _, r := range rs[k:] {
			c := seal(h, r)
			out = append(out, c)
			h = HeadOf(c)
		}
		return out, h
	}
	dropBob := func(rs []Record) []Record {
		return slices.DeleteFunc(slices.Clone(rs), func(r Record) bool { return r.Actor == "bob" })
	}
	sha := func(h Head, r Record) Record { return Chain(h, r) }
	shaKeepID := func(h Head, r Record) Record {
		id := r.KeyID
		r = link(h, r)
		r.KeyID = id
		r.Hash = ComputeHash(r)
		return r
	}
	mallory := testKeyring(t, 1)

	t.Run("the issue's script: one user's records deleted, the rest renumbered and re-hashed, head moved", func(t *testing.T) {
		// Today's unkeyed trail: the script goes unnoticed.
		plain, _ := rechain(fresh(), sha)
		out, head := keepPrefix(dropBob(plain), 1, sha)
		if err := VerifyWithHead(out, head); err != nil {
			t.Fatalf("the unkeyed rewrite was expected to verify (the issue's finding): %v", err)
		}
		// Keyed: record 1 stays; from record 2 (bob's first) on, plain
		// SHA-256 as the script does.
		out, head = keepPrefix(dropBob(fresh()), 1, sha)
		checkTamper(t, verifyWith(ring, out, &head), KindDowngraded, 2)
	})
	t.Run("whole trail rewritten as version 1", func(t *testing.T) {
		out, head := rechain(dropBob(fresh()), sha)
		checkTamper(t, verifyWith(ring, out, &head), KindDowngraded, 1)
	})
	t.Run("rewritten keeping the key id", func(t *testing.T) {
		out, head := keepPrefix(dropBob(fresh()), 1, shaKeepID)
		checkTamper(t, verifyWith(ring, out, &head), KindModified, 2)
	})
	t.Run("one record changed, re-hashed as version 1", func(t *testing.T) {
		rs := fresh()
		rs[at(6)].Action = "vault.read"
		rs[at(6)].KeyID = ""
		rs[at(6)].Hash = ComputeHash(rs[at(6)])
		checkTamper(t, verifyWith(ring, rs, nil), KindDowngraded, 6)
	})
	t.Run("re-sealed with the tamperer's own key", func(t *testing.T) {
		out, head := keepPrefix(dropBob(fresh()), 1, mallory.Chain)
		err := verifyWith(ring, out, &head)
		var ke *KeyError
		if !errors.As(err, &ke) || !errors.Is(err, ErrKeyUnknown) || errors.Is(err, ErrTampered) {
			t.Fatalf("err = %v, want a *KeyError (unauthenticated, not intact)", err)
		}
		if ke.Seq != 2 || ke.Count != int64(len(out)-1) || !slices.Equal(ke.KeyIDs, []string{mallory.Current().ID}) ||
			!strings.Contains(err.Error(), "forged") {
			t.Fatalf("%+v: %v", ke, err)
		}
	})
	t.Run("wrong key: unauthenticated, not tampered", func(t *testing.T) {
		rs := fresh()
		h := HeadOf(rs[n-1])
		for _, r := range []*Keyring{mallory, nil} {
			err := verifyWith(r, rs, &h)
			var ke *KeyError
			if !errors.As(err, &ke) || errors.Is(err, ErrTampered) || ke.Seq != 1 || ke.Count != n {
				t.Fatalf("keyring %v: err = %v", r, err)
			}
		}
	})
	t.Run("without the key, links are still checked", func(t *testing.T) {
		rs := fresh()
		h := HeadOf(rs[n-1])
		checkTamper(t, verifyWith(nil, slices.Delete(rs, at(5), at(5)+1), &h), KindDeleted, 5)
		// A changed field is not seen without the key: unauthenticated.
		rs = fresh()
		rs[at(3)].Team = "other"
		if err := verifyWith(nil, rs, &h); !errors.Is(err, ErrKeyUnknown) {
			t.Fatalf("err = %v, want ErrKeyUnknown", err)
		}
	})
	t.Run("intact", func(t *testing.T) {
		rs := fresh()
		h := HeadOf(rs[n-1])
		if err := verifyWith(ring, rs, &h); err != nil {
			t.Fatal(err)
		}
	})
}

// A trail keyed after an upgrade: version 1 records before the keyring's
// KeyedFrom verify; after it they are a downgrade.
func TestVerifyLegacyPrefix(t *testing.T) {
	legacy := makeChain(Head{}, 5)
	ring := testKeyring(t, 6)
	all := slices.Clone(legacy)
	h := HeadOf(legacy[4])
	for _, r := range makeChain(Head{}, 5) {
		c := ring.Chain(h, r)
		all = append(all, c)
		h = HeadOf(c)
	}
	if err := verifyWith(ring, all, &h); err != nil {
		t.Fatalf("legacy prefix then keyed: %v", err)
	}
	// A version 1 record after a keyed one, even before KeyedFrom: a
	// keyring whose keys' From is unknown (operator-supplied).
	secret := ring.Current().secret
	k0, _ := KeyFromSecret(secret, 0, t0)
	unknownFrom, _ := NewKeyring(k0)
	tail := slices.Clone(all)
	tail[at(8)] = rehashV1(tail[at(8)])
	checkTamper(t, verifyWith(unknownFrom, tail, &h), KindDowngraded, 8)
	// The whole keyed part rewritten as version 1: caught only through
	// KeyedFrom (the keyring remembers from where it seals).
	var out []Record
	hh := Head{}
	for _, r := range all {
		c := Chain(hh, r)
		out = append(out, c)
		hh = HeadOf(c)
	}
	checkTamper(t, verifyWith(ring, out, &hh), KindDowngraded, 6)
	if err := verifyWith(unknownFrom, out, &hh); err != nil {
		t.Fatalf("without KeyedFrom a wholly version 1 trail cannot be told from a legacy one (documented): %v", err)
	}
}

func rehashV1(r Record) Record {
	r.KeyID = ""
	r.Hash = ComputeHash(r)
	return r
}

// BenchmarkSeal: sealing one record, version 1 (SHA-256) and keyed
// (HMAC-SHA256), and verifying a 10,000-record keyed trail; compare with
// BenchmarkVerify (version 1) in the same run.
func BenchmarkSeal(b *testing.B) {
	ring := testKeyring(b, 1)
	r := fixed()
	b.Run("v1", func(b *testing.B) {
		for range b.N {
			_ = Chain(Head{}, r)
		}
	})
	b.Run("keyed", func(b *testing.B) {
		for range b.N {
			_ = ring.Chain(Head{}, r)
		}
	})
	b.Run("verify-keyed", func(b *testing.B) {
		rs := makeChainWith(ring, Head{}, 10000)
		head := HeadOf(rs[len(rs)-1])
		b.ResetTimer()
		for range b.N {
			if err := verifyWith(ring, rs, &head); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(rs)), "ns/record")
	})
}
