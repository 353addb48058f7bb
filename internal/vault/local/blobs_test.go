package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"

	"github.com/rediacc/rediacc/internal/vault"
	"github.com/rediacc/rediacc/internal/vault/vaulttest"
)

// memBlobs is a Blobs in memory, with a store's check-and-set revisions.
type memBlobs struct {
	mu    sync.Mutex
	files map[string][]byte
	revs  map[string]int64
	saves int
}

func newMemBlobs() *memBlobs {
	return &memBlobs{files: map[string][]byte{}, revs: map[string]int64{}}
}

func (m *memBlobs) Load(_ context.Context, team string) ([]byte, int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.files[team]), m.revs[team], nil
}

func (m *memBlobs) Save(_ context.Context, team string, raw []byte, rev int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.revs[team] != rev {
		return ErrConflict
	}
	m.files[team], m.revs[team] = bytes.Clone(raw), rev+1
	m.saves++
	return nil
}

func (m *memBlobs) Teams(context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for t := range m.files {
		out = append(out, t)
	}
	sort.Strings(out)
	return out, nil
}

func (m *memBlobs) Delete(_ context.Context, team string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.files, team)
	delete(m.revs, team)
	return nil
}

func (m *memBlobs) String() string { return "the test store" }

func TestConformanceBlobs(t *testing.T) {
	vaulttest.Run(t, func(t *testing.T) vault.Backend {
		v, err := Open(t.TempDir(), WithPassphrase(testPass), WithScryptWorkFactor(testWorkFactor), WithBlobs(newMemBlobs()))
		if err != nil {
			t.Fatal(err)
		}
		return v
	})
}

// Two vaults (two hosts) share one Blobs: check-and-set writes from both
// race, every write lands once, each sees the other's secrets; the Blobs
// holds ciphertext only and no file is written to the directories; a
// wrong identity is refused at Open.
func TestBlobsShared(t *testing.T) {
	b := newMemBlobs()
	key := filepath.Join(t.TempDir(), "key.txt")
	dirA, dirB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	a, err := Open(dirA, WithIdentityFile(key, true), WithBlobs(b))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.Put(bg(), "ops", "seed", []byte("plain-secret-value"), vault.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	other, err := Open(dirB, WithIdentityFile(key, false), WithBlobs(b))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	const each = 10
	var wg sync.WaitGroup
	for i, v := range []*Vault{a, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range each {
				// A counter both increment with check-and-set.
				for {
					cur, err := v.Get(bg(), "ops", "counter")
					version := 0
					if err == nil {
						version = cur.Version
					} else if !errors.Is(err, vault.ErrSecretNotFound) {
						t.Error(err)
						return
					}
					_, err = v.Put(bg(), "ops", "counter", []byte(fmt.Sprint(version+1)), vault.PutOptions{CAS: &version})
					if err == nil {
						break
					}
					if !errors.Is(err, vault.ErrVersionConflict) {
						t.Error(err)
						return
					}
				}
				if _, err := v.Put(bg(), "ops", fmt.Sprintf("k-%d-%d", i, n), []byte("v"), vault.PutOptions{}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	s, err := other.Get(bg(), "ops", "counter")
	if err != nil || s.Version != 2*each || string(s.Value) != fmt.Sprint(2*each) {
		t.Fatalf("counter = %+v, %v; want version and value %d (a lost update otherwise)", s, err, 2*each)
	}
	keys, err := a.List(bg(), "ops")
	if err != nil || len(keys) != 2+2*each {
		t.Fatalf("keys = %v, %v", keys, err)
	}
	if bytes.Contains(b.files["ops"], []byte("plain-secret-value")) || !bytes.HasPrefix(b.files["ops"], []byte("age-encryption.org/v1")) {
		t.Fatalf("the Blobs holds something other than an age file: %.60q", b.files["ops"])
	}
	for _, d := range []string{dirA, dirB} {
		if ents, err := os.ReadDir(d); err == nil && len(ents) > 0 {
			t.Errorf("files written to %s: %v", d, ents)
		}
	}
	if _, err := Open(t.TempDir(), WithIdentityFile(filepath.Join(t.TempDir(), "other-key"), true), WithBlobs(b)); !errors.Is(err, vault.ErrWrongPassphrase) {
		t.Fatalf("Open with another identity: %v, want ErrWrongPassphrase", err)
	}
	if err := a.Restore(bg(), "ops"); err == nil {
		t.Fatal("Restore without a backup: no error")
	}
}
