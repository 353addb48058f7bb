package local

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"golang.org/x/sys/unix"

	"github.com/rediacc/rediacc/internal/vault"
	"github.com/rediacc/rediacc/internal/vault/vaulttest"
)

// testWorkFactor keeps scrypt fast in tests (2^10 iterations).
const testWorkFactor = 10

var testPass = []byte("correct horse battery staple")

func openPass(t *testing.T, dir string, pass []byte) *Vault {
	t.Helper()
	v, err := Open(dir, WithPassphrase(pass), WithScryptWorkFactor(testWorkFactor))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return v
}

func bg() context.Context { return context.Background() }

func TestConformancePassphrase(t *testing.T) {
	vaulttest.Run(t, func(t *testing.T) vault.Backend {
		return openPass(t, t.TempDir(), testPass)
	})
}

func TestConformanceIdentityFile(t *testing.T) {
	vaulttest.Run(t, func(t *testing.T) vault.Backend {
		dir := t.TempDir()
		v, err := Open(filepath.Join(dir, "vault"), WithIdentityFile(filepath.Join(dir, "key.txt"), true))
		if err != nil {
			t.Fatal(err)
		}
		return v
	})
}

func TestOpenOptions(t *testing.T) {
	dir := t.TempDir()
	for name, opts := range map[string][]Option{
		"none":        nil,
		"both":        {WithPassphrase(testPass), WithIdentityFile(filepath.Join(dir, "k"), true)},
		"empty pass":  {WithPassphrase(nil)},
		"empty path":  {WithIdentityFile("", true)},
		"work factor": {WithPassphrase(testPass), WithScryptWorkFactor(0)},
	} {
		if v, err := Open(dir, opts...); err == nil {
			v.Close()
			t.Errorf("%s: Open succeeded", name)
		}
	}
	if _, err := Open("", WithPassphrase(testPass)); err == nil {
		t.Error("Open with an empty dir succeeded")
	}
}

func TestPersistenceAndLayout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vaults")
	at := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	v, err := Open(dir, WithPassphrase(testPass), WithScryptWorkFactor(testWorkFactor), WithClock(func() time.Time { return at }))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Put(bg(), "prod", "db/password", []byte("pw-one"), vault.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Put(bg(), "prod", "db/password", []byte("pw-two"), vault.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	v.Close()

	// Modes.
	for p, want := range map[string]os.FileMode{
		dir:                                0o700,
		filepath.Join(dir, "prod.age"):     0o600,
		filepath.Join(dir, "prod.age.bak"): 0o600,
		filepath.Join(dir, "prod.lock"):    0o600,
	} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", p, fi.Mode().Perm(), want)
		}
	}
	// No temporary files left, nothing else in the directory.
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "prod.age,prod.age.bak,prod.lock" {
		t.Errorf("directory holds %v", names)
	}

	// The file is a standard age file with the documented JSON plaintext.
	doc := decryptFile(t, filepath.Join(dir, "prod.age"), testPass)
	e := doc["db/password"]
	if e.Version != 2 || e.UpdatedAt != at.Format(time.RFC3339) {
		t.Errorf("entry = %+v", e)
	}
	if raw, _ := base64.StdEncoding.DecodeString(e.Value); string(raw) != "pw-two" {
		t.Errorf("value decodes to %q", raw)
	}
	// The backup is the previous version.
	if bak := decryptFile(t, filepath.Join(dir, "prod.age.bak"), testPass); bak["db/password"].Version != 1 {
		t.Errorf("backup holds %+v, want version 1", bak)
	}

	// Neither the passphrase nor the values are stored in clear.
	for _, name := range names {
		data, _ := os.ReadFile(filepath.Join(dir, name))
		for _, s := range [][]byte{testPass, []byte("pw-one"), []byte("pw-two"), []byte(base64.StdEncoding.EncodeToString([]byte("pw-two")))} {
			if bytes.Contains(data, s) {
				t.Errorf("%s contains %q in clear", name, s)
			}
		}
	}

	// Reopen: data persists.
	v2 := openPass(t, dir, testPass)
	defer v2.Close()
	s, err := v2.Get(bg(), "prod", "db/password")
	if err != nil || string(s.Value) != "pw-two" || s.Version != 2 {
		t.Fatalf("after reopen: %v %v", s, err)
	}
}

type jsonEntry struct {
	Value     string `json:"value"`
	Version   int    `json:"version"`
	UpdatedAt string `json:"updatedAt"`
}

func decryptFile(t *testing.T, path string, pass []byte) map[string]jsonEntry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	id, _ := age.NewScryptIdentity(string(pass))
	r, err := age.Decrypt(f, id)
	if err != nil {
		t.Fatalf("age.Decrypt(%s): %v", path, err)
	}
	plain, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	doc := map[string]jsonEntry{}
	if err := json.Unmarshal(plain, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

func TestWrongPassphrase(t *testing.T) {
	dir := t.TempDir()
	v := openPass(t, dir, testPass)
	if _, err := v.Put(bg(), "prod", "k", []byte("value"), vault.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	v.Close()
	before := snapshot(t, dir)

	_, err := Open(dir, WithPassphrase([]byte("wrong")), WithScryptWorkFactor(testWorkFactor))
	if !errors.Is(err, vault.ErrWrongPassphrase) {
		t.Fatalf("Open with the wrong passphrase: %v, want ErrWrongPassphrase", err)
	}
	if strings.Contains(err.Error(), "wrong\"") || strings.Contains(err.Error(), string(testPass)) {
		t.Fatalf("error leaks a passphrase: %v", err)
	}
	// An identity file does not open a passphrase vault either.
	_, err = Open(dir, WithIdentityFile(filepath.Join(t.TempDir(), "id"), true))
	if !errors.Is(err, vault.ErrWrongPassphrase) {
		t.Fatalf("Open with an identity: %v, want ErrWrongPassphrase", err)
	}
	if after := snapshot(t, dir); !equalSnap(before, after) {
		t.Fatal("a failed unlock changed the directory")
	}
}

// TestWrongPassphraseAfterOpen covers a team file written by someone else with
// another passphrase after Open's check.
func TestWrongPassphraseAfterOpen(t *testing.T) {
	dir := t.TempDir()
	v := openPass(t, dir, testPass) // empty dir: nothing to check
	defer v.Close()
	other := openPass(t, dir, []byte("other pass"))
	if _, err := other.Put(bg(), "dev", "k", []byte("v"), vault.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	other.Close()
	before := snapshot(t, dir)
	if _, err := v.Get(bg(), "dev", "k"); !errors.Is(err, vault.ErrWrongPassphrase) {
		t.Fatalf("Get: %v", err)
	}
	if _, err := v.Put(bg(), "dev", "k", []byte("x"), vault.PutOptions{}); !errors.Is(err, vault.ErrWrongPassphrase) {
		t.Fatalf("Put: %v", err)
	}
	if _, err := v.List(bg(), "dev"); !errors.Is(err, vault.ErrWrongPassphrase) {
		t.Fatalf("List: %v", err)
	}
	if !equalSnap(before, snapshot(t, dir)) {
		t.Fatal("a failed write changed the directory")
	}
}

func TestIdentityFile(t *testing.T) {
	base := t.TempDir()
	keyPath := filepath.Join(base, "config", "rediacc", "vault.key")
	dir := filepath.Join(base, "vault")

	if _, err := Open(dir, WithIdentityFile(keyPath, false)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing identity without create: %v, want fs.ErrNotExist", err)
	}
	v, err := Open(dir, WithIdentityFile(keyPath, true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Put(bg(), "prod", "k", []byte("value"), vault.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	recipient := v.Recipient()
	v.Close()

	fi, err := os.Stat(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	if di, _ := os.Stat(filepath.Dir(keyPath)); di.Mode().Perm() != 0o700 {
		t.Errorf("key dir mode %v, want 0700", di.Mode().Perm())
	}
	text, _ := os.ReadFile(keyPath)
	if !strings.Contains(string(text), "# public key: "+recipient+"\n") || !strings.Contains(string(text), "AGE-SECRET-KEY-1") {
		t.Errorf("key file is not in age-keygen format:\n%s", strings.SplitN(string(text), "AGE-SECRET", 2)[0])
	}
	// The key file opens the vault with the age library directly.
	ids, err := age.ParseIdentities(bytes.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(filepath.Join(dir, "prod.age"))
	defer f.Close()
	if _, err := age.Decrypt(f, ids...); err != nil {
		t.Fatalf("age cannot decrypt with the key file: %v", err)
	}

	// Reopen with the same file (create=true must not replace it).
	v2, err := Open(dir, WithIdentityFile(keyPath, true))
	if err != nil {
		t.Fatal(err)
	}
	if s, err := v2.Get(bg(), "prod", "k"); err != nil || string(s.Value) != "value" {
		t.Fatalf("reopen: %v %v", s, err)
	}
	v2.Close()
	if again, _ := os.ReadFile(keyPath); !bytes.Equal(again, text) {
		t.Fatal("key file was rewritten")
	}

	// Another identity is the wrong one.
	if _, err := Open(dir, WithIdentityFile(filepath.Join(base, "other.key"), true)); !errors.Is(err, vault.ErrWrongPassphrase) {
		t.Fatalf("Open with another identity: %v, want ErrWrongPassphrase", err)
	}
	// A passphrase is wrong too.
	if _, err := Open(dir, WithPassphrase(testPass), WithScryptWorkFactor(testWorkFactor)); !errors.Is(err, vault.ErrWrongPassphrase) {
		t.Fatalf("Open with a passphrase: %v, want ErrWrongPassphrase", err)
	}
	// A malformed key file is an error that does not quote the file.
	bad := filepath.Join(base, "bad.key")
	os.WriteFile(bad, []byte("AGE-SECRET-KEY-1NOTAKEY\n"), 0o600)
	if _, err := Open(filepath.Join(base, "v3"), WithIdentityFile(bad, false)); err == nil || strings.Contains(err.Error(), "NOTAKEY") {
		t.Fatalf("malformed key file: %v", err)
	}
}

func TestCorruptFile(t *testing.T) {
	dir := t.TempDir()
	v := openPass(t, dir, testPass)
	defer v.Close()
	ctx := bg()
	if _, err := v.Put(ctx, "prod", "k", []byte("v1"), vault.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Put(ctx, "prod", "k", []byte("v2"), vault.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	main := filepath.Join(dir, "prod.age")
	good, _ := os.ReadFile(main)

	for name, damaged := range map[string][]byte{
		"truncated payload": good[:len(good)-10],
		"truncated header":  good[:20],
		"empty":             {},
		"garbage":           []byte("this is not an age file\n"),
		"flipped byte":      flip(good, len(good)-5),
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(main, damaged, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := v.Get(ctx, "prod", "k")
			if !errors.Is(err, vault.ErrCorrupt) {
				t.Fatalf("Get: %v, want ErrCorrupt", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, main) || !strings.Contains(msg, main+".bak") {
				t.Fatalf("error does not name the file and its backup: %v", msg)
			}
			if _, err := v.Put(ctx, "prod", "k", []byte("v3"), vault.PutOptions{}); !errors.Is(err, vault.ErrCorrupt) {
				t.Fatalf("Put on a corrupt file: %v, want ErrCorrupt", err)
			}
			if _, err := v.List(ctx, "prod"); !errors.Is(err, vault.ErrCorrupt) {
				t.Fatalf("List: %v", err)
			}
			if now, _ := os.ReadFile(main); !bytes.Equal(now, damaged) {
				t.Fatal("the damaged file was overwritten")
			}
			// Another team is unaffected.
			if _, err := v.Put(ctx, "dev", "k", []byte("x"), vault.PutOptions{}); err != nil {
				t.Fatal(err)
			}
			// Restore brings back the last good version before the damage (v1).
			if err := v.Restore(ctx, "prod"); err != nil {
				t.Fatal(err)
			}
			s, err := v.Get(ctx, "prod", "k")
			if err != nil || string(s.Value) != "v1" || s.Version != 1 {
				t.Fatalf("after Restore: %v %v", s, err)
			}
			// Put the good file back for the next case.
			os.WriteFile(main, good, 0o600)
		})
	}

	// A corrupt backup cannot be restored.
	os.WriteFile(main+".bak", []byte("junk"), 0o600)
	if err := v.Restore(ctx, "prod"); !errors.Is(err, vault.ErrCorrupt) {
		t.Fatalf("Restore of a corrupt backup: %v", err)
	}
	if err := v.Restore(ctx, "nobackup"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Restore without backup: %v", err)
	}
	// A corrupt file without backup says so.
	os.WriteFile(filepath.Join(dir, "solo.age"), []byte("junk"), 0o600)
	if _, err := v.Get(ctx, "solo", "k"); !errors.Is(err, vault.ErrCorrupt) || !strings.Contains(err.Error(), "no backup") {
		t.Fatalf("corrupt without backup: %v", err)
	}
	// Open still works when a team file is corrupt (it is reported on use).
	v2 := openPass(t, dir, testPass)
	v2.Close()
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x01
	return c
}

func TestLockWaitHonorsContext(t *testing.T) {
	dir := t.TempDir()
	v := openPass(t, dir, testPass)
	defer v.Close()
	f, err := os.OpenFile(filepath.Join(dir, "prod.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(bg(), 100*time.Millisecond)
	defer cancel()
	if _, err := v.Put(ctx, "prod", "k", []byte("v"), vault.PutOptions{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Put under a held lock: %v, want DeadlineExceeded", err)
	}
	// Readers are not blocked by a writer's lock.
	if _, err := v.List(bg(), "prod"); err != nil {
		t.Fatal(err)
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	if _, err := v.Put(bg(), "prod", "k", []byte("v"), vault.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestTwoInstancesOneDir runs CAS increments from two Vaults on one directory
// (separate lock file descriptions, as two processes would have).
func TestTwoInstancesOneDir(t *testing.T) {
	dir := t.TempDir()
	a, b := openPass(t, dir, testPass), openPass(t, dir, testPass)
	defer a.Close()
	defer b.Close()
	const perWorker = 10
	var wg sync.WaitGroup
	for _, v := range []*Vault{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := increment(v, perWorker); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	s, err := a.Get(bg(), "prod", "counter")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(s.Value); got != strconv.Itoa(4*perWorker) || s.Version != 4*perWorker {
		t.Fatalf("counter = %s version %d, want %d", got, s.Version, 4*perWorker)
	}
}

// increment adds n to the counter secret with CAS retries.
func increment(v *Vault, n int) error {
	for i := 0; i < n; {
		cur, version := 0, 0
		s, err := v.Get(bg(), "prod", "counter")
		switch {
		case err == nil:
			cur, _ = strconv.Atoi(string(s.Value))
			version = s.Version
		case !errors.Is(err, vault.ErrSecretNotFound):
			return err
		}
		_, err = v.Put(bg(), "prod", "counter", []byte(strconv.Itoa(cur+1)), vault.PutOptions{CAS: vault.CAS(version)})
		if errors.Is(err, vault.ErrVersionConflict) {
			continue
		}
		if err != nil {
			return err
		}
		i++
	}
	return nil
}

// TestCrossProcess runs CAS increments from two child processes.
func TestCrossProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	const perProc = 8
	var cmds []*exec.Cmd
	for i := 0; i < 2; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
		cmd.Env = append(os.Environ(), "REDIACC_LOCAL_VAULT_HELPER="+dir, "REDIACC_LOCAL_VAULT_N="+strconv.Itoa(perProc))
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for _, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("helper: %v", err)
		}
	}
	v := openPass(t, dir, testPass)
	defer v.Close()
	s, err := v.Get(bg(), "prod", "counter")
	if err != nil {
		t.Fatal(err)
	}
	if string(s.Value) != strconv.Itoa(2*perProc) || s.Version != 2*perProc {
		t.Fatalf("counter = %s version %d, want %d", s.Value, s.Version, 2*perProc)
	}
}

func TestHelperProcess(t *testing.T) {
	dir := os.Getenv("REDIACC_LOCAL_VAULT_HELPER")
	if dir == "" {
		t.Skip("helper for TestCrossProcess")
	}
	n, _ := strconv.Atoi(os.Getenv("REDIACC_LOCAL_VAULT_N"))
	v := openPass(t, dir, testPass)
	defer v.Close()
	if err := increment(v, n); err != nil {
		t.Fatal(err)
	}
}

func TestSecretStringRedacts(t *testing.T) {
	s := vault.Secret{Key: "db/password", Value: []byte("hunter2"), Version: 3}
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", s, s, s, s)} {
		if strings.Contains(out, "hunter2") {
			t.Fatalf("formatting leaks the value: %s", out)
		}
	}
}

func TestCacheSeesOtherWriters(t *testing.T) {
	dir := t.TempDir()
	a, b := openPass(t, dir, testPass), openPass(t, dir, testPass)
	defer a.Close()
	defer b.Close()
	for i := 1; i <= 3; i++ {
		val := []byte(fmt.Sprint("value-", i))
		if _, err := b.Put(bg(), "prod", "k", val, vault.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		s, err := a.Get(bg(), "prod", "k")
		if err != nil || !bytes.Equal(s.Value, val) || s.Version != i {
			t.Fatalf("reader sees %v %v", s, err)
		}
	}
}

type snap map[string][]byte

func snapshot(t *testing.T, dir string) snap {
	t.Helper()
	s := snap{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".lock") {
			continue
		}
		s[e.Name()], _ = os.ReadFile(filepath.Join(dir, e.Name()))
	}
	return s
}

func equalSnap(a, b snap) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !bytes.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// Reads skip the file when it is, by its stat, the one the cache holds
// (loadRead). A change made in place — same size, same modification time
// restored, only the change time moves — is still seen: another vault's
// content is read, a corrupt one fails with ErrCorrupt instead of the
// cached value being served.
func TestReadCacheSeesInPlaceChanges(t *testing.T) {
	old := racyMargin
	racyMargin = -time.Hour // record every stat: the files here are new
	t.Cleanup(func() { racyMargin = old })
	// Two vaults whose files have the same size (the ciphertexts' sizes
	// vary by a byte or two with the JSON's times).
	var (
		a            *Vault
		path         string
		mine, theirs []byte
	)
	for i := 0; i < 100; i++ {
		dir, other := t.TempDir(), t.TempDir()
		a = openPass(t, dir, testPass)
		b := openPass(t, other, testPass)
		if _, err := a.Put(bg(), "prod", "k", []byte("value-a"), vault.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Put(bg(), "prod", "k", []byte("value-b"), vault.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		b.Close()
		path = filepath.Join(dir, "prod.age")
		mine, _ = os.ReadFile(path)
		theirs, _ = os.ReadFile(filepath.Join(other, "prod.age"))
		if len(mine) == len(theirs) && len(mine) > 0 {
			break
		}
		a.Close()
	}
	if len(mine) != len(theirs) {
		t.Fatalf("no two vault files of the same size in 100 tries (%d, %d)", len(mine), len(theirs))
	}
	defer a.Close()
	for i := 0; i < 2; i++ { // the second read takes the fast path
		if s, err := a.Get(bg(), "prod", "k"); err != nil || string(s.Value) != "value-a" {
			t.Fatalf("Get %d: %v %v", i, s, err)
		}
	}
	overwrite := func(data []byte) {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
			t.Fatal(err)
		}
	}
	overwrite(theirs)
	if s, err := a.Get(bg(), "prod", "k"); err != nil || string(s.Value) != "value-b" {
		t.Fatalf("after an in-place change: %v %v, want value-b", s, err)
	}
	if _, err := a.Get(bg(), "prod", "k"); err != nil { // cached again
		t.Fatal(err)
	}
	garbage := bytes.Repeat([]byte{'x'}, len(mine))
	overwrite(garbage)
	if s, err := a.Get(bg(), "prod", "k"); !errors.Is(err, vault.ErrCorrupt) {
		t.Fatalf("after a corrupt in-place change: %v %v, want ErrCorrupt", s, err)
	}
}

// BenchmarkGetUnchanged: Get of a key whose team file has not changed
// since the last read (a worker reading a machine's identity for every
// task), the file older than racyMargin.
func BenchmarkGetUnchanged(b *testing.B) {
	old := racyMargin
	racyMargin = -time.Hour // as if written long ago
	b.Cleanup(func() { racyMargin = old })
	v, err := Open(b.TempDir(), WithPassphrase(testPass), WithScryptWorkFactor(testWorkFactor))
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close()
	for i := range 20 {
		if _, err := v.Put(bg(), "prod", fmt.Sprint("key-", i), bytes.Repeat([]byte{'k'}, 400), vault.PutOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		if _, err := v.Get(bg(), "prod", "key-3"); err != nil {
			b.Fatal(err)
		}
	}
}

// A file changed less than racyMargin before it was stat'ed is never
// skipped by its stat: on a file system with times to the second, a later
// file of the same size reusing the inode number would have the same stat.
func TestReadCacheRacyFile(t *testing.T) {
	v := openPass(t, t.TempDir(), testPass)
	defer v.Close()
	if _, err := v.Put(bg(), "prod", "k", []byte("value"), vault.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	recorded := func() bool {
		v.mu.Lock()
		defer v.mu.Unlock()
		return v.cache["prod"].statSet
	}
	for i := 0; i < 2; i++ {
		if _, err := v.Get(bg(), "prod", "k"); err != nil {
			t.Fatal(err)
		}
	}
	if recorded() {
		t.Fatalf("the stat of a file written just now was recorded (racyMargin %s)", racyMargin)
	}
	if !v.statTrusted {
		t.Skip("the test directory is on a file system whose stat is not trusted")
	}
	old := racyMargin
	racyMargin = -time.Hour
	t.Cleanup(func() { racyMargin = old })
	if _, err := v.Get(bg(), "prod", "k"); err != nil {
		t.Fatal(err)
	}
	if !recorded() {
		t.Fatal("the stat of an old enough file was not recorded")
	}
}
