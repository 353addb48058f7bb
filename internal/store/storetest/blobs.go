package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
)

// blobTests are the conformance tests of store.BlobEngine.
var blobTests = []struct {
	name string
	fn   func(*testing.T, *fixture)
}{
	{"Blobs/CRUD", testBlobCRUD},
	{"Blobs/Revision", testBlobRevision},
	{"Blobs/ConcurrentPuts", testBlobConcurrentPuts},
	{"Blobs/Audit", testBlobAudit},
}

func (f *fixture) blobs() store.BlobEngine {
	f.t.Helper()
	be, ok := f.e.(store.BlobEngine)
	if !ok {
		f.t.Fatalf("%T does not implement store.BlobEngine", f.e)
	}
	return be
}

func testBlobCRUD(t *testing.T, f *fixture) {
	be := f.blobs()
	if _, err := be.GetBlob(f.ctx, store.BlobHostKeys, "m1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetBlob of nothing: %v, want ErrNotFound", err)
	}
	binary := []byte{0, 1, 2, 0xff, '\n', 0}
	b, err := be.PutBlob(f.ctx, store.Blob{Kind: store.BlobHostKeys, Key: "m1", Data: binary})
	if err != nil || b.Revision != 1 || !bytes.Equal(b.Data, binary) || b.UpdatedAt.IsZero() {
		t.Fatalf("PutBlob = %+v, %v", b, err)
	}
	for _, k := range []string{"m3", "m0"} {
		if _, err := be.PutBlob(f.ctx, store.Blob{Kind: store.BlobHostKeys, Key: k, Data: []byte(k)}); err != nil {
			t.Fatal(err)
		}
	}
	// Same key, other kind: another blob. An empty value is kept empty.
	if _, err := be.PutBlob(f.ctx, store.Blob{Kind: store.BlobVault, Key: "m1"}); err != nil {
		t.Fatal(err)
	}
	got, err := be.GetBlob(f.ctx, store.BlobHostKeys, "m1")
	if err != nil || !bytes.Equal(got.Data, binary) || got.Revision != 1 || !got.UpdatedAt.Equal(b.UpdatedAt) {
		t.Fatalf("GetBlob = %+v, %v; want %+v", got, err, b)
	}
	if v, err := be.GetBlob(f.ctx, store.BlobVault, "m1"); err != nil || len(v.Data) != 0 || v.Revision != 1 {
		t.Fatalf("vault blob = %+v, %v", v, err)
	}
	list, err := be.ListBlobs(f.ctx, store.BlobHostKeys)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, b := range list {
		keys = append(keys, b.Key)
	}
	if strings.Join(keys, ",") != "m0,m1,m3" || string(list[0].Data) != "m0" {
		t.Fatalf("ListBlobs = %v (%+v)", keys, list)
	}
	if list, err := be.ListBlobs(f.ctx, "nothing"); err != nil || len(list) != 0 {
		t.Fatalf("ListBlobs(nothing) = %+v, %v", list, err)
	}
	for _, bad := range []store.Blob{{Key: "k"}, {Kind: "k"}, {Kind: "k", Key: strings.Repeat("x", 256)}, {Kind: strings.Repeat("x", 65), Key: "k"}} {
		if _, err := be.PutBlob(f.ctx, bad); !errors.Is(err, store.ErrInvalidArgument) {
			t.Fatalf("PutBlob(kind %d bytes, key %d bytes): %v, want ErrInvalidArgument", len(bad.Kind), len(bad.Key), err)
		}
	}
	if err := be.DeleteBlob(f.ctx, store.BlobHostKeys, "m1", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := be.GetBlob(f.ctx, store.BlobHostKeys, "m1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetBlob after delete: %v", err)
	}
	if err := be.DeleteBlob(f.ctx, store.BlobHostKeys, "m1", 0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeleteBlob twice: %v", err)
	}
	// A deleted blob starts again at revision 1.
	if b, err := be.PutBlob(f.ctx, store.Blob{Kind: store.BlobHostKeys, Key: "m1", Data: []byte("again")}); err != nil || b.Revision != 1 {
		t.Fatalf("PutBlob after delete = %+v, %v", b, err)
	}
}

func testBlobRevision(t *testing.T, f *fixture) {
	be := f.blobs()
	b, err := be.PutBlob(f.ctx, store.Blob{Kind: store.BlobVault, Key: "team-a", Data: []byte("v1")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := be.PutBlob(f.ctx, store.Blob{Kind: store.BlobVault, Key: "team-a", Data: []byte("again")}); !errors.Is(err, store.ErrRevision) {
		t.Fatalf("create over a stored blob: %v, want ErrRevision", err)
	}
	b.Data = []byte("v2")
	if b, err = be.PutBlob(f.ctx, b); err != nil || b.Revision != 2 {
		t.Fatalf("PutBlob at revision 1 = %+v, %v", b, err)
	}
	stale := b
	stale.Revision, stale.Data = 1, []byte("stale")
	if _, err := be.PutBlob(f.ctx, stale); !errors.Is(err, store.ErrRevision) {
		t.Fatalf("stale PutBlob: %v, want ErrRevision", err)
	}
	if _, err := be.PutBlob(f.ctx, store.Blob{Kind: store.BlobVault, Key: "team-b", Revision: 3}); !errors.Is(err, store.ErrRevision) {
		t.Fatalf("PutBlob of an absent blob at revision 3: %v, want ErrRevision", err)
	}
	if _, err := be.GetBlob(f.ctx, store.BlobVault, "team-b"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused put created the blob: %v", err)
	}
	if err := be.DeleteBlob(f.ctx, store.BlobVault, "team-a", 1); !errors.Is(err, store.ErrRevision) {
		t.Fatalf("stale DeleteBlob: %v, want ErrRevision", err)
	}
	if got, err := be.GetBlob(f.ctx, store.BlobVault, "team-a"); err != nil || got.Revision != 2 || string(got.Data) != "v2" {
		t.Fatalf("after stale writes: %+v, %v", got, err)
	}
	if err := be.DeleteBlob(f.ctx, store.BlobVault, "team-a", 2); err != nil {
		t.Fatal(err)
	}
}

// Read-modify-write loops racing on one blob: every writer's change is
// kept (a lost update would drop one), each revision has one winner.
func testBlobConcurrentPuts(t *testing.T, f *fixture) {
	be := f.blobs()
	const writers, each = 6, 5
	var wg sync.WaitGroup
	var mu sync.Mutex
	conflicts := 0
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				for {
					cur, err := be.GetBlob(f.ctx, store.BlobHostKeys, "shared")
					if err != nil && !errors.Is(err, store.ErrNotFound) {
						t.Errorf("GetBlob: %v", err)
						return
					}
					cur.Kind, cur.Key = store.BlobHostKeys, "shared"
					cur.Data = append(cur.Data, fmt.Sprintf("w%d-%d\n", w, i)...)
					_, err = be.PutBlob(f.ctx, cur)
					if err == nil {
						break
					}
					if !errors.Is(err, store.ErrRevision) {
						t.Errorf("PutBlob: %v", err)
						return
					}
					mu.Lock()
					conflicts++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	got, err := be.GetBlob(f.ctx, store.BlobHostKeys, "shared")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(got.Data)), "\n")
	if len(lines) != writers*each || got.Revision != writers*each {
		t.Fatalf("%d lines at revision %d after %d puts (%d conflicts): a put was lost or doubled", len(lines), got.Revision, writers*each, conflicts)
	}
	seen := map[string]bool{}
	for _, l := range lines {
		if seen[l] {
			t.Fatalf("line %q twice", l)
		}
		seen[l] = true
	}
}

// Puts and deletes carry their audit records in the same transaction; a
// refused one appends none.
func testBlobAudit(t *testing.T, f *fixture) {
	be := f.blobs()
	rec := func(action string) audit.Record {
		return audit.Record{Time: T0, Actor: "alice", Action: action, EntityType: audit.EntityMachine, EntityID: "m1", Team: "default", Result: audit.ResultOK}
	}
	b, err := be.PutBlob(store.WithAudit(f.ctx, rec("machine.hostkeys")), store.Blob{Kind: store.BlobHostKeys, Key: "m1", Data: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := be.PutBlob(store.WithAudit(f.ctx, rec("lost.put")), store.Blob{Kind: store.BlobHostKeys, Key: "m1"}); !errors.Is(err, store.ErrRevision) {
		t.Fatalf("stale put: %v", err)
	}
	if err := be.DeleteBlob(store.WithAudit(f.ctx, rec("lost.delete")), store.BlobHostKeys, "m1", b.Revision+1); !errors.Is(err, store.ErrRevision) {
		t.Fatalf("stale delete: %v", err)
	}
	if err := be.DeleteBlob(store.WithAudit(f.ctx, rec("machine.hostkeys.forget")), store.BlobHostKeys, "m1", b.Revision); err != nil {
		t.Fatal(err)
	}
	rs, err := f.a.ListAudit(f.ctx, audit.Filter{EntityType: audit.EntityMachine})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, r := range rs {
		actions = append(actions, r.Action)
	}
	if fmt.Sprint(actions) != "[machine.hostkeys machine.hostkeys.forget]" {
		t.Fatalf("audit actions %v, want [machine.hostkeys machine.hostkeys.forget]", actions)
	}
}
