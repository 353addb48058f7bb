// Package vaulttest holds the conformance suite that every vault.Backend
// must pass, and helpers to start a real HashiCorp Vault dev server for tests.
package vaulttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/vault"
)

// Run runs the conformance suite against the backends returned by open.
//
// open is called once per subtest and must return a backend with no secrets
// in any team (for example a new directory, or a unique path prefix on a
// shared server). Run closes each backend when its subtest ends, so open must
// not close it itself (other cleanups are fine). Subtests do not run in
// parallel with each other.
func Run(t *testing.T, open func(t *testing.T) vault.Backend) {
	t.Helper()
	for _, tc := range append([]struct {
		name string
		fn   func(t *testing.T, b vault.Backend)
	}{
		{"PutGetListDelete", testPutGetListDelete},
		{"VersionsIncrease", testVersionsIncrease},
		{"CASCreateOnly", testCASCreateOnly},
		{"CASMatch", testCASMatch},
		{"CASStale", testCASStale},
		{"CASOnMissingKey", testCASOnMissingKey},
		{"DeleteResetsVersions", testDeleteResetsVersions},
		{"NotFound", testNotFound},
		{"TeamIsolation", testTeamIsolation},
		{"BinaryValues", testBinaryValues},
		{"ValuesAreCopied", testValuesAreCopied},
		{"InvalidKeys", testInvalidKeys},
		{"InvalidTeams", testInvalidTeams},
		{"ValidEdgeKeys", testValidEdgeKeys},
		{"ConcurrentCAS", testConcurrentCAS},
		{"CanceledContext", testCanceledContext},
		{"Closed", testClosed},
		{"Purge", testPurge},
	}, versionTests...) {
		t.Run(tc.name, func(t *testing.T) {
			b := open(t)
			t.Cleanup(func() {
				if err := b.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, b)
		})
	}
}

// ctx returns a context bounded by the test's deadline (or one minute).
func ctx(t *testing.T) context.Context {
	d := time.Now().Add(time.Minute)
	if dl, ok := t.Deadline(); ok && dl.Before(d) {
		d = dl
	}
	c, cancel := context.WithDeadline(context.Background(), d)
	t.Cleanup(cancel)
	return c
}

func put(t *testing.T, b vault.Backend, team, key string, value []byte, cas *int) int {
	t.Helper()
	v, err := b.Put(ctx(t), team, key, value, vault.PutOptions{CAS: cas})
	if err != nil {
		t.Fatalf("Put(%q, %q): %v", team, key, err)
	}
	return v
}

func get(t *testing.T, b vault.Backend, team, key string) vault.Secret {
	t.Helper()
	s, err := b.Get(ctx(t), team, key)
	if err != nil {
		t.Fatalf("Get(%q, %q): %v", team, key, err)
	}
	return s
}

func list(t *testing.T, b vault.Backend, team string) []string {
	t.Helper()
	keys, err := b.List(ctx(t), team)
	if err != nil {
		t.Fatalf("List(%q): %v", team, err)
	}
	return keys
}

func wantSecret(t *testing.T, got vault.Secret, key string, value []byte, version int) {
	t.Helper()
	if got.Key != key || !bytes.Equal(got.Value, value) || got.Version != version {
		t.Fatalf("got key %q version %d value %d bytes (equal=%v); want key %q version %d value %d bytes",
			got.Key, got.Version, len(got.Value), bytes.Equal(got.Value, value), key, version, len(value))
	}
}

func wantKeys(t *testing.T, got []string, want ...string) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !slices.Equal(got, want) {
		t.Fatalf("List = %q, want %q", got, want)
	}
}

// noValue checks that err's message contains none of values.
func noValue(t *testing.T, err error, values ...[]byte) {
	t.Helper()
	for _, v := range values {
		if len(v) > 0 && strings.Contains(err.Error(), string(v)) {
			t.Fatalf("error message leaks a secret value: %q", err.Error())
		}
	}
}

func testPutGetListDelete(t *testing.T, b vault.Backend) {
	wantKeys(t, list(t, b, "alpha"))
	v := put(t, b, "alpha", "db/password", []byte("s3cret-pw"), nil)
	if v != 1 {
		t.Fatalf("first Put version = %d, want 1", v)
	}
	put(t, b, "alpha", "api-token", []byte("tok"), nil)
	put(t, b, "alpha", "db/replica/password", []byte("r"), nil)
	wantSecret(t, get(t, b, "alpha", "db/password"), "db/password", []byte("s3cret-pw"), 1)
	wantSecret(t, get(t, b, "alpha", "api-token"), "api-token", []byte("tok"), 1)
	wantKeys(t, list(t, b, "alpha"), "api-token", "db/password", "db/replica/password")

	if err := b.Delete(ctx(t), "alpha", "db/password"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := b.Get(ctx(t), "alpha", "db/password"); !errors.Is(err, vault.ErrSecretNotFound) {
		t.Fatalf("Get after Delete: %v, want ErrSecretNotFound", err)
	}
	wantKeys(t, list(t, b, "alpha"), "api-token", "db/replica/password")
	err := b.Delete(ctx(t), "alpha", "db/password")
	if !errors.Is(err, vault.ErrSecretNotFound) {
		t.Fatalf("second Delete: %v, want ErrSecretNotFound", err)
	}
	if !strings.Contains(err.Error(), "db/password") {
		t.Fatalf("Delete error %q does not name the key", err)
	}
	// The sibling under the deleted key's "directory" survives.
	wantSecret(t, get(t, b, "alpha", "db/replica/password"), "db/replica/password", []byte("r"), 1)
}

func testVersionsIncrease(t *testing.T, b vault.Backend) {
	for i := 1; i <= 4; i++ {
		val := []byte(fmt.Sprintf("value-%d", i))
		if v := put(t, b, "t1", "k", val, nil); v != i {
			t.Fatalf("Put #%d returned version %d", i, v)
		}
		wantSecret(t, get(t, b, "t1", "k"), "k", val, i)
	}
	// Versions are per key.
	if v := put(t, b, "t1", "other", []byte("x"), nil); v != 1 {
		t.Fatalf("new key version = %d, want 1", v)
	}
}

func testCASCreateOnly(t *testing.T, b vault.Backend) {
	if v := put(t, b, "t1", "k", []byte("first"), vault.CAS(0)); v != 1 {
		t.Fatalf("CAS 0 on a new key: version %d, want 1", v)
	}
	_, err := b.Put(ctx(t), "t1", "k", []byte("second-value"), vault.PutOptions{CAS: vault.CAS(0)})
	if !errors.Is(err, vault.ErrVersionConflict) {
		t.Fatalf("CAS 0 on an existing key: %v, want ErrVersionConflict", err)
	}
	if !strings.Contains(err.Error(), `"k"`) || !strings.Contains(err.Error(), `"t1"`) {
		t.Fatalf("conflict error %q does not name team and key", err)
	}
	noValue(t, err, []byte("second-value"), []byte("first"))
	wantSecret(t, get(t, b, "t1", "k"), "k", []byte("first"), 1)
}

func testCASMatch(t *testing.T, b vault.Backend) {
	put(t, b, "t1", "k", []byte("v1"), nil)
	if v := put(t, b, "t1", "k", []byte("v2"), vault.CAS(1)); v != 2 {
		t.Fatalf("CAS 1: version %d, want 2", v)
	}
	if v := put(t, b, "t1", "k", []byte("v3"), vault.CAS(2)); v != 3 {
		t.Fatalf("CAS 2: version %d, want 3", v)
	}
	wantSecret(t, get(t, b, "t1", "k"), "k", []byte("v3"), 3)
}

func testCASStale(t *testing.T, b vault.Backend) {
	put(t, b, "t1", "k", []byte("v1"), nil)
	put(t, b, "t1", "k", []byte("v2"), nil)
	put(t, b, "t1", "k", []byte("v3"), nil)
	for _, stale := range []int{1, 2, 4, 99} {
		_, err := b.Put(ctx(t), "t1", "k", []byte("loser-value"), vault.PutOptions{CAS: vault.CAS(stale)})
		if !errors.Is(err, vault.ErrVersionConflict) {
			t.Fatalf("CAS %d with current 3: %v, want ErrVersionConflict", stale, err)
		}
		msg := err.Error()
		if !strings.Contains(msg, fmt.Sprint(stale)) || !strings.Contains(msg, "3") {
			t.Fatalf("conflict error %q does not name both versions (%d, 3)", msg, stale)
		}
		noValue(t, err, []byte("loser-value"), []byte("v3"))
	}
	wantSecret(t, get(t, b, "t1", "k"), "k", []byte("v3"), 3)
	wantKeys(t, list(t, b, "t1"), "k")
}

func testCASOnMissingKey(t *testing.T, b vault.Backend) {
	_, err := b.Put(ctx(t), "t1", "missing", []byte("v"), vault.PutOptions{CAS: vault.CAS(1)})
	if !errors.Is(err, vault.ErrVersionConflict) {
		t.Fatalf("CAS 1 on a missing key: %v, want ErrVersionConflict", err)
	}
	if _, err := b.Get(ctx(t), "t1", "missing"); !errors.Is(err, vault.ErrSecretNotFound) {
		t.Fatalf("failed CAS created the key: Get = %v", err)
	}
	wantKeys(t, list(t, b, "t1"))
}

func testDeleteResetsVersions(t *testing.T, b vault.Backend) {
	put(t, b, "t1", "k", []byte("a"), nil)
	put(t, b, "t1", "k", []byte("b"), nil)
	if err := b.Delete(ctx(t), "t1", "k"); err != nil {
		t.Fatal(err)
	}
	if v := put(t, b, "t1", "k", []byte("c"), vault.CAS(0)); v != 1 {
		t.Fatalf("Put after Delete: version %d, want 1", v)
	}
}

func testNotFound(t *testing.T, b vault.Backend) {
	secretValue := []byte("hunter2-do-not-print")
	put(t, b, "t1", "db/password", secretValue, nil)
	_, err := b.Get(ctx(t), "t1", "db/passwd")
	if !errors.Is(err, vault.ErrSecretNotFound) {
		t.Fatalf("Get missing: %v, want ErrSecretNotFound", err)
	}
	if !strings.Contains(err.Error(), "db/passwd") || !strings.Contains(err.Error(), "t1") {
		t.Fatalf("not-found error %q does not name the team and key", err)
	}
	noValue(t, err, secretValue)
	if _, err := b.Get(ctx(t), "never-written", "k"); !errors.Is(err, vault.ErrSecretNotFound) {
		t.Fatalf("Get in an empty team: %v, want ErrSecretNotFound", err)
	}
	// A key that is only a "directory" of other keys is not a secret.
	if _, err := b.Get(ctx(t), "t1", "db"); !errors.Is(err, vault.ErrSecretNotFound) {
		t.Fatalf("Get of a key prefix: %v, want ErrSecretNotFound", err)
	}
	if err := b.Delete(ctx(t), "t1", "db"); !errors.Is(err, vault.ErrSecretNotFound) {
		t.Fatalf("Delete of a key prefix: %v, want ErrSecretNotFound", err)
	}
	wantSecret(t, get(t, b, "t1", "db/password"), "db/password", secretValue, 1)
}

func testTeamIsolation(t *testing.T, b vault.Backend) {
	put(t, b, "team-a", "db/password", []byte("A-secret"), nil)
	put(t, b, "team-a", "shared", []byte("A-shared"), nil)
	put(t, b, "team-b", "shared", []byte("B-shared"), nil)

	if _, err := b.Get(ctx(t), "team-b", "db/password"); !errors.Is(err, vault.ErrSecretNotFound) {
		t.Fatalf("team-b sees team-a's key: %v", err)
	}
	wantKeys(t, list(t, b, "team-b"), "shared")
	wantKeys(t, list(t, b, "team-a"), "db/password", "shared")
	wantSecret(t, get(t, b, "team-b", "shared"), "shared", []byte("B-shared"), 1)
	wantSecret(t, get(t, b, "team-a", "shared"), "shared", []byte("A-shared"), 1)

	if err := b.Delete(ctx(t), "team-b", "db/password"); !errors.Is(err, vault.ErrSecretNotFound) {
		t.Fatalf("team-b deleted team-a's key: %v", err)
	}
	if err := b.Delete(ctx(t), "team-b", "shared"); err != nil {
		t.Fatal(err)
	}
	wantSecret(t, get(t, b, "team-a", "shared"), "shared", []byte("A-shared"), 1)
	// CAS is per team too.
	if v := put(t, b, "team-b", "db/password", []byte("B"), vault.CAS(0)); v != 1 {
		t.Fatalf("team-b CAS 0: version %d", v)
	}
	// Team names that are prefixes of each other stay apart.
	put(t, b, "team", "x", []byte("1"), nil)
	wantKeys(t, list(t, b, "team"), "x")
}

func testBinaryValues(t *testing.T, b vault.Backend) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	big := bytes.Repeat([]byte{0xff, 0x00, 0xfe, '\n'}, 16<<10) // 64 KiB
	cases := map[string][]byte{
		"all-bytes":    all,
		"invalid-utf8": {0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x28, 0xa1},
		"nul":          {0, 0, 0},
		"empty":        {},
		"utf8":         []byte("pässwörd ✓ 🔑"),
		"json-like":    []byte(`{"value":"x","encoding":"base64"}`),
		"big":          big,
	}
	for k, v := range cases {
		put(t, b, "bin", k, v, nil)
	}
	for k, v := range cases {
		wantSecret(t, get(t, b, "bin", k), k, v, 1)
	}
}

func testValuesAreCopied(t *testing.T, b vault.Backend) {
	val := []byte("original")
	put(t, b, "t1", "k", val, nil)
	copy(val, "MUTATED!")
	got := get(t, b, "t1", "k")
	wantSecret(t, got, "k", []byte("original"), 1)
	copy(got.Value, "MUTATED!")
	wantSecret(t, get(t, b, "t1", "k"), "k", []byte("original"), 1)
}

// InvalidKeys lists keys that every backend must reject with vault.ErrInvalidKey.
var InvalidKeys = []string{
	"", "/", "/a", "a/", "a//b", ".", "..", "a/./b", "a/../b", "../a", "a/..",
	"a b", "a\x00b", "a\nb", "ä", "a*", "a?", "a%2f", "a\\b", "~a", "a:b",
	strings.Repeat("a", vault.MaxKeyLen+1),
}

// InvalidTeams lists team names that every backend must reject with
// vault.ErrInvalidTeam.
var InvalidTeams = []string{
	"", ".", "..", ".hidden", "-dash", "_u", "a/b", "../a", "a b", "a\x00", "ä",
	"a:b", strings.Repeat("t", vault.MaxTeamLen+1),
}

func testInvalidKeys(t *testing.T, b vault.Backend) {
	c := ctx(t)
	for _, k := range InvalidKeys {
		if _, err := b.Put(c, "t1", k, []byte("v"), vault.PutOptions{}); !errors.Is(err, vault.ErrInvalidKey) {
			t.Errorf("Put key %q: %v, want ErrInvalidKey", k, err)
		}
		if _, err := b.Get(c, "t1", k); !errors.Is(err, vault.ErrInvalidKey) {
			t.Errorf("Get key %q: %v, want ErrInvalidKey", k, err)
		}
		if err := b.Delete(c, "t1", k); !errors.Is(err, vault.ErrInvalidKey) {
			t.Errorf("Delete key %q: %v, want ErrInvalidKey", k, err)
		}
	}
	wantKeys(t, list(t, b, "t1"))
}

func testInvalidTeams(t *testing.T, b vault.Backend) {
	c := ctx(t)
	for _, team := range InvalidTeams {
		if _, err := b.Put(c, team, "k", []byte("v"), vault.PutOptions{}); !errors.Is(err, vault.ErrInvalidTeam) {
			t.Errorf("Put team %q: %v, want ErrInvalidTeam", team, err)
		}
		if _, err := b.Get(c, team, "k"); !errors.Is(err, vault.ErrInvalidTeam) {
			t.Errorf("Get team %q: %v, want ErrInvalidTeam", team, err)
		}
		if err := b.Delete(c, team, "k"); !errors.Is(err, vault.ErrInvalidTeam) {
			t.Errorf("Delete team %q: %v, want ErrInvalidTeam", team, err)
		}
		if _, err := b.List(c, team); !errors.Is(err, vault.ErrInvalidTeam) {
			t.Errorf("List team %q: %v, want ErrInvalidTeam", team, err)
		}
	}
}

func testValidEdgeKeys(t *testing.T, b vault.Backend) {
	long := strings.Repeat("k", vault.MaxKeyLen-2) + "/x"
	keys := []string{"a", "A.b_c-D", "x/y/z", "..a/b..", "-/_/.x", long, "1"}
	for i, k := range keys {
		put(t, b, "edge.team_1-X", k, []byte{byte(i)}, nil)
	}
	for i, k := range keys {
		wantSecret(t, get(t, b, "edge.team_1-X", k), k, []byte{byte(i)}, 1)
	}
	want := slices.Clone(keys)
	slices.Sort(want)
	wantKeys(t, list(t, b, "edge.team_1-X"), want...)
}

func testConcurrentCAS(t *testing.T, b vault.Backend) {
	const writers, rounds = 6, 3
	put(t, b, "t1", "counter", []byte("0"), nil)
	c := ctx(t)
	for round := 1; round <= rounds; round++ {
		var (
			wg        sync.WaitGroup
			mu        sync.Mutex
			winners   []int
			conflicts int
			others    []error
		)
		start := make(chan struct{})
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				val := []byte(fmt.Sprintf("round-%d-writer-%d", round, w))
				v, err := b.Put(c, "t1", "counter", val, vault.PutOptions{CAS: vault.CAS(round)})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					winners = append(winners, w)
					if v != round+1 {
						others = append(others, fmt.Errorf("winner got version %d, want %d", v, round+1))
					}
				case errors.Is(err, vault.ErrVersionConflict):
					conflicts++
				default:
					others = append(others, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if len(others) > 0 {
			t.Fatalf("round %d: unexpected errors: %v", round, others)
		}
		if len(winners) != 1 || conflicts != writers-1 {
			t.Fatalf("round %d: %d winners and %d conflicts, want exactly 1 and %d", round, len(winners), conflicts, writers-1)
		}
		want := []byte(fmt.Sprintf("round-%d-writer-%d", round, winners[0]))
		wantSecret(t, get(t, b, "t1", "counter"), "counter", want, round+1)
	}
}

func testCanceledContext(t *testing.T, b vault.Backend) {
	put(t, b, "t1", "k", []byte("v"), nil)
	c, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Get(c, "t1", "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("Get with a canceled context: %v, want context.Canceled", err)
	}
	if _, err := b.GetVersion(c, "t1", "k", 1); !errors.Is(err, context.Canceled) {
		t.Errorf("GetVersion with a canceled context: %v, want context.Canceled", err)
	}
	if _, err := b.Put(c, "t1", "k", []byte("w"), vault.PutOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with a canceled context: %v, want context.Canceled", err)
	}
	if _, err := b.List(c, "t1"); !errors.Is(err, context.Canceled) {
		t.Errorf("List with a canceled context: %v, want context.Canceled", err)
	}
	if err := b.Delete(c, "t1", "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("Delete with a canceled context: %v, want context.Canceled", err)
	}
	wantSecret(t, get(t, b, "t1", "k"), "k", []byte("v"), 1)
}

func testClosed(t *testing.T, b vault.Backend) {
	put(t, b, "t1", "k", []byte("v"), nil)
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := b.Get(ctx(t), "t1", "k"); !errors.Is(err, vault.ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
	if _, err := b.Put(ctx(t), "t1", "k", []byte("w"), vault.PutOptions{}); !errors.Is(err, vault.ErrClosed) {
		t.Errorf("Put after Close: %v, want ErrClosed", err)
	}
	if _, err := b.GetVersion(ctx(t), "t1", "k", 1); !errors.Is(err, vault.ErrClosed) {
		t.Errorf("GetVersion after Close: %v, want ErrClosed", err)
	}
}
