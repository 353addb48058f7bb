package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
)

// keyTests are the conformance tests of the SSH key inventory
// (store.KeyEngine).
var keyTests = []struct {
	name string
	fn   func(*testing.T, *fixture)
}{
	{"Keys/CRUD", testKeyCRUD},
	{"Keys/Revision", testKeyRevision},
	{"Keys/ConcurrentUpdates", testKeyConcurrentUpdates},
	{"Keys/Audit", testKeyAudit},
}

func (f *fixture) keys() store.KeyEngine {
	f.t.Helper()
	ke, ok := f.e.(store.KeyEngine)
	if !ok {
		f.t.Fatalf("%T does not implement store.KeyEngine", f.e)
	}
	return ke
}

func testKeyCRUD(t *testing.T, f *fixture) {
	f.team("team-a", "team-b")
	ke := f.keys()
	k, err := ke.CreateKey(f.ctx, store.Key{ID: "k1", TeamID: "team-a", Fingerprint: "SHA256:one", Data: []byte(`{"a":1}`), Revision: 7})
	if err != nil {
		t.Fatal(err)
	}
	if k.Revision != 1 || k.Team != "team-a" || k.TeamID != "team-a" || k.CreatedAt.IsZero() || !k.CreatedAt.Equal(k.UpdatedAt) || string(k.Data) != `{"a":1}` {
		t.Fatalf("created key = %+v", k)
	}
	if _, err := ke.CreateKey(f.ctx, store.Key{ID: "k1", TeamID: "team-b", Fingerprint: "SHA256:x"}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second CreateKey k1: %v, want ErrExists", err)
	}
	for _, bad := range []store.Key{{TeamID: "team-a"}, {ID: "k9"}} {
		if _, err := ke.CreateKey(f.ctx, bad); !errors.Is(err, store.ErrInvalidArgument) {
			t.Fatalf("CreateKey(%+v): %v, want ErrInvalidArgument", bad, err)
		}
	}
	if _, err := ke.CreateKey(f.ctx, store.Key{ID: "k0", TeamID: "team-b", Fingerprint: "SHA256:zero"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ke.CreateKey(f.ctx, store.Key{ID: "k2", TeamID: "team-a", Fingerprint: "SHA256:two"}); err != nil {
		t.Fatal(err)
	}
	got, err := ke.GetKey(f.ctx, "k1")
	if err != nil || got.Fingerprint != "SHA256:one" || string(got.Data) != `{"a":1}` {
		t.Fatalf("GetKey = %+v, %v", got, err)
	}
	got.Data[0] = 'X' // callers own their copies
	if again, _ := ke.GetKey(f.ctx, "k1"); string(again.Data) != `{"a":1}` {
		t.Fatal("a caller's change reached the store")
	}
	if _, err := ke.GetKey(f.ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetKey(nope): %v", err)
	}
	all, err := ke.ListKeys(f.ctx, store.KeyFilter{})
	if err != nil || fmt.Sprint(keyIDs(all)) != "[k1 k2 k0]" {
		t.Fatalf("ListKeys = %v, %v; want [k1 k2 k0] (team name, then id)", keyIDs(all), err)
	}
	some, err := ke.ListKeys(f.ctx, store.KeyFilter{TeamIDs: []string{"team-b"}})
	if err != nil || fmt.Sprint(keyIDs(some)) != "[k0]" {
		t.Fatalf("ListKeys(team-b) = %v, %v", keyIDs(some), err)
	}
	if none, err := ke.ListKeys(f.ctx, store.KeyFilter{TeamIDs: []string{}}); err != nil || len(none) != 0 {
		t.Fatalf("ListKeys(no team) = %v, %v", keyIDs(none), err)
	}
	if err := ke.DeleteKey(f.ctx, "k2", 0); err != nil {
		t.Fatal(err)
	}
	if err := ke.DeleteKey(f.ctx, "k2", 0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second DeleteKey: %v", err)
	}
}

func keyIDs(ks []store.Key) []string {
	var out []string
	for _, k := range ks {
		out = append(out, k.ID)
	}
	return out
}

// An update names the revision it read: a stale one changes nothing.
func testKeyRevision(t *testing.T, f *fixture) {
	f.team("team-a")
	ke := f.keys()
	k, err := ke.CreateKey(f.ctx, store.Key{ID: "k1", TeamID: "team-a", Fingerprint: "SHA256:one", Data: []byte(`{"v":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	k.Fingerprint, k.Data, k.TeamID = "SHA256:two", []byte(`{"v":2}`), "elsewhere"
	u, err := ke.UpdateKey(f.ctx, k)
	if err != nil || u.Revision != 2 || u.Fingerprint != "SHA256:two" || string(u.Data) != `{"v":2}` || u.TeamID != "team-a" || !u.CreatedAt.Equal(k.CreatedAt) {
		t.Fatalf("UpdateKey = %+v, %v", u, err)
	}
	k.Data = []byte(`{"v":"stale"}`) // still revision 1
	if _, err := ke.UpdateKey(f.ctx, k); !errors.Is(err, store.ErrRevision) {
		t.Fatalf("stale UpdateKey: %v, want ErrRevision", err)
	}
	if err := ke.DeleteKey(f.ctx, "k1", 1); !errors.Is(err, store.ErrRevision) {
		t.Fatalf("stale DeleteKey: %v, want ErrRevision", err)
	}
	if got, _ := ke.GetKey(f.ctx, "k1"); got.Revision != 2 || string(got.Data) != `{"v":2}` {
		t.Fatalf("after stale writes: %+v", got)
	}
	if _, err := ke.UpdateKey(f.ctx, store.Key{ID: "nope", Revision: 1}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("UpdateKey(nope): %v", err)
	}
	if err := ke.DeleteKey(f.ctx, "k1", 2); err != nil {
		t.Fatal(err)
	}
}

// Writers racing on one revision: exactly one wins each round (the
// rotation lock relies on it).
func testKeyConcurrentUpdates(t *testing.T, f *fixture) {
	f.team("team-a")
	ke := f.keys()
	k, err := ke.CreateKey(f.ctx, store.Key{ID: "k1", TeamID: "team-a", Fingerprint: "SHA256:one"})
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 3; round++ {
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins, losses := 0, 0
		for w := 0; w < 6; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				u := k
				u.Data = []byte(fmt.Sprintf(`{"writer":%d}`, w))
				_, err := ke.UpdateKey(f.ctx, u)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case errors.Is(err, store.ErrRevision):
					losses++
				default:
					t.Errorf("UpdateKey: %v", err)
				}
			}()
		}
		wg.Wait()
		if wins != 1 || losses != 5 {
			t.Fatalf("round %d: %d wins, %d losses; want 1 and 5", round, wins, losses)
		}
		if k, err = ke.GetKey(f.ctx, "k1"); err != nil || k.Revision != int64(round+2) {
			t.Fatalf("round %d: %+v, %v", round, k, err)
		}
	}
}

// Changes carry their audit records in the same transaction; a failed one
// appends none.
func testKeyAudit(t *testing.T, f *fixture) {
	f.team("team-a")
	ke := f.keys()
	rec := func(action string) audit.Record {
		return audit.Record{Time: T0, Actor: "alice", Action: action, EntityType: audit.EntityKey, EntityID: "k1", Team: "team-a", Result: audit.ResultOK}
	}
	k, err := ke.CreateKey(store.WithAudit(f.ctx, rec("key.generate")), store.Key{ID: "k1", TeamID: "team-a", Fingerprint: "SHA256:one"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ke.UpdateKey(store.WithAudit(f.ctx, rec("key.store")), k); err != nil {
		t.Fatal(err)
	}
	if _, err := ke.UpdateKey(store.WithAudit(f.ctx, rec("key.lost")), k); !errors.Is(err, store.ErrRevision) {
		t.Fatalf("stale update: %v", err)
	}
	rs, err := f.a.ListAudit(f.ctx, audit.Filter{EntityType: audit.EntityKey})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, r := range rs {
		actions = append(actions, r.Action)
	}
	if fmt.Sprint(actions) != "[key.generate key.store]" {
		t.Fatalf("audit actions %v, want [key.generate key.store]", actions)
	}
}
