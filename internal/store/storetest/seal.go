package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
)

// sealTests cover keyed audit records: every engine seals the records it
// appends with the keyring set by store.Access.SetAuditKeyring (embedding
// fsm.AuditSeal and chaining with its ChainAudit), and keeps each record's
// KeyID.
var sealTests = []struct {
	name string
	fn   func(*testing.T, *fixture)
}{
	{"Audit/Keyed/Append", testKeyedAppend},
	{"Audit/Keyed/EveryMutation", keyed(testAuditEveryMutation)},
	{"Audit/Keyed/Batch", keyed(testBatchAudit)},
	{"Audit/Keyed/Trim", keyed(testAuditTrim)},
	{"Audit/Keyed/MixedOperations", keyed(testAuditMixed)},
	{"Audit/Keyed/ConcurrentAppends", keyed(testAuditConcurrent)},
	{"Audit/Keyed/Rotation", testKeyRotation},
	{"Audit/Keyed/AfterVersion1", testKeyedAfterVersion1},
}

// Keyring returns a keyring of one new key made to seal from sequence
// number from on (for engine tests).
func Keyring(tb testing.TB, from int64) *audit.Keyring {
	tb.Helper()
	k, err := audit.NewKeyring(audit.NewKey(from, T0))
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// ringOf returns the keyring a seals with: its AuditKeyring method
// (fsm.AuditSeal's), nil when it has none.
func ringOf(a store.Access) *audit.Keyring {
	if h, ok := a.(interface{ AuditKeyring() *audit.Keyring }); ok {
		return h.AuditKeyring()
	}
	return nil
}

// keyed runs fn on an engine sealing with a new keyring, then checks that
// every record fn left is sealed with it and verifies only with it.
func keyed(fn func(*testing.T, *fixture)) func(*testing.T, *fixture) {
	return func(t *testing.T, f *fixture) {
		ring := Keyring(t, 1)
		f.a.SetAuditKeyring(ring)
		if ringOf(f.a) != ring {
			t.Fatalf("%T.AuditKeyring() is not the keyring set by SetAuditKeyring: embed fsm.AuditSeal", f.a)
		}
		fn(t, f)
		if !t.Failed() {
			checkSealed(t, f.a, ring)
		}
	}
}

// checkSealed checks that a's stored records are all sealed with ring's
// current key, verify with ring and are unauthenticated (a *KeyError,
// never "intact" nor "tampered") under another keyring or none.
func checkSealed(t *testing.T, a store.Access, ring *audit.Keyring) {
	t.Helper()
	all := VerifyAudit(t, a)
	if len(all) == 0 {
		t.Fatal("no audit record to check")
	}
	for _, r := range all {
		if r.KeyID != ring.Current().ID || len(r.Hash) != 64 || r.Hash == audit.ComputeHash(r) {
			t.Fatalf("record %d (%s) is not sealed with %s: key %q, hash %s", r.Seq, r.Action, ring.Current(), r.KeyID, r.Hash)
		}
	}
	base, _ := a.AuditBase(context.Background())
	head, _ := a.AuditHead(context.Background())
	for _, other := range []*audit.Keyring{Keyring(t, 1), nil} {
		err := verifyFrom(base, head, all, other)
		var ke *audit.KeyError
		if !errors.As(err, &ke) || errors.Is(err, audit.ErrTampered) || ke.Seq != all[0].Seq || ke.Count != int64(len(all)) {
			t.Fatalf("verified with %v: %v; want a *KeyError for all %d records", other, err, len(all))
		}
	}
}

func testKeyedAppend(t *testing.T, f *fixture) {
	ring := Keyring(t, 1)
	f.a.SetAuditKeyring(ring)
	in := []audit.Record{
		{Time: at(1234567), Actor: "alice", Action: "task.create", EntityType: audit.EntityTask, EntityID: "t1",
			Team: "prod", Result: audit.ResultOK, Details: map[string]string{"machine": "web"}, KeyID: "forged", Hash: "forged"},
		rec(time.Second, "bob", "vault.read"),
	}
	out, err := f.a.AppendAudit(f.ctx, in...)
	if err != nil {
		t.Fatal(err)
	}
	want := ring.Chain(audit.Head{}, in[0])
	want2 := ring.Chain(audit.HeadOf(want), in[1])
	want2.Details = nil
	if diff := cmp.Diff([]audit.Record{want, want2}, out); diff != "" {
		t.Fatalf("AppendAudit (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]audit.Record{want, want2}, AllAudit(t, f.a)); diff != "" {
		t.Fatalf("ListAudit (-want +got):\n%s", diff)
	}
	if h, _ := f.a.AuditHead(f.ctx); h != audit.HeadOf(want2) {
		t.Fatalf("head %v, want %v", h, audit.HeadOf(want2))
	}
	// A record changed behind the engine's back no longer verifies; one
	// re-hashed without the key is a downgrade.
	forged := want2
	forged.Actor = "mallory"
	if err := verifyFrom(audit.Head{}, audit.HeadOf(want2), []audit.Record{want, forged}, ring); !errors.Is(err, audit.ErrTampered) {
		t.Fatalf("changed record: %v", err)
	}
	forged = audit.Chain(audit.HeadOf(want), forged)
	var te *audit.TamperError
	err = verifyFrom(audit.Head{}, audit.HeadOf(forged), []audit.Record{want, forged}, ring)
	if !errors.As(err, &te) || te.Kind != audit.KindDowngraded || te.Seq != 2 {
		t.Fatalf("re-hashed as version 1: %v", err)
	}
	checkSealed(t, f.a, ring)
}

func testKeyRotation(t *testing.T, f *fixture) {
	ringA := Keyring(t, 1)
	f.a.SetAuditKeyring(ringA)
	f.team("prod")
	if _, err := f.a.AppendAudit(f.ctx, rec(0, "u", "a.1"), rec(0, "u", "a.2")); err != nil {
		t.Fatal(err)
	}
	keyB := audit.NewKey(3, T0.Add(time.Hour))
	ringAB, err := ringA.Add(keyB)
	if err != nil {
		t.Fatal(err)
	}
	f.a.SetAuditKeyring(ringAB)
	if _, err := f.a.CreateTeam(store.WithAudit(f.ctx, rec(time.Minute, "u", "b.1"), rec(time.Minute, "u", "b.2")), store.Team{Name: "dev"}); err != nil {
		t.Fatal(err)
	}
	all := VerifyAudit(t, f.a)
	var keys []string
	for _, r := range all {
		keys = append(keys, r.KeyID)
	}
	a, b := ringA.Current().ID, keyB.ID
	if fmt.Sprint(keys) != fmt.Sprint([]string{a, a, b, b}) {
		t.Fatalf("keys %v, want [%s %s %s %s]", keys, a, a, b, b)
	}
	head, _ := f.a.AuditHead(f.ctx)
	var ke *audit.KeyError
	if err := verifyFrom(audit.Head{}, head, all, ringA); !errors.As(err, &ke) || ke.Seq != 3 || ke.Count != 2 || ke.KeyIDs[0] != b {
		t.Fatalf("verified without the new key: %v", err)
	}
	onlyB, _ := audit.NewKeyring(keyB)
	if err := verifyFrom(audit.Head{}, head, all, onlyB); !errors.As(err, &ke) || ke.Seq != 1 || ke.Count != 2 || ke.KeyIDs[0] != a {
		t.Fatalf("verified without the old key: %v", err)
	}
}

// testKeyedAfterVersion1: a store written before keying (version 1
// records), then keyed from the next record: the whole trail verifies, and
// trimming across the boundary keeps it verifiable.
func testKeyedAfterVersion1(t *testing.T, f *fixture) {
	for i := range 3 {
		if _, err := f.a.AppendAudit(f.ctx, rec(time.Duration(i), "u", "legacy")); err != nil {
			t.Fatal(err)
		}
	}
	h, _ := f.a.AuditHead(f.ctx)
	ring, err := audit.NewKeyring(audit.NewKey(h.Seq+1, T0))
	if err != nil {
		t.Fatal(err)
	}
	f.a.SetAuditKeyring(ring)
	for i := range 3 {
		if _, err := f.a.AppendAudit(f.ctx, rec(time.Hour+time.Duration(i), "u", "keyed")); err != nil {
			t.Fatal(err)
		}
	}
	all := VerifyAudit(t, f.a)
	for _, r := range all {
		if (r.Seq <= 3) != (r.KeyID == "") {
			t.Fatalf("record %d key %q", r.Seq, r.KeyID)
		}
	}
	if err := f.a.TrimAudit(f.ctx, 2); err != nil {
		t.Fatal(err)
	}
	VerifyAudit(t, f.a)
	if err := f.a.TrimAudit(f.ctx, 4); err != nil {
		t.Fatal(err)
	}
	VerifyAudit(t, f.a)
	// Back to no keyring: version 1 records after keyed ones are a
	// downgrade, whoever writes them.
	f.a.SetAuditKeyring(nil)
	if _, err := f.a.AppendAudit(f.ctx, rec(2*time.Hour, "u", "unkeyed")); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckAudit(f.a); !errors.Is(err, audit.ErrTampered) {
		t.Fatalf("a version 1 record after keyed ones: %v", err)
	}
}
