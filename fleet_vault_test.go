package rediacc_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rediacc/rediacc"
)

// TestPostgresVaultAnyHost: on a PostgreSQL store the local vault's
// encrypted files are in the database. A machine whose identity was
// imported into the team vault, and a task using a secret, run on a worker
// with another data dir (another host) holding only a copy of the vault
// key; the database holds age ciphertext, never the values; a host without
// the key is refused with a message saying what to do.
func TestPostgresVaultAnyHost(t *testing.T) {
	f := newFleet(t, 0, 10*time.Second)
	dirA := t.TempDir()
	a := f.client(func(c *rediacc.Config) { c.DataDir = dirA })
	srv := realSSHD(t, 44)
	if _, err := a.AddMachine(asOwner(), rediacc.Machine{Name: "vaulted", Host: srv.Host, Port: srv.Port, User: srv.User,
		IdentityFile: srv.ClientKeyPath, ImportIdentity: true, KnownHostsFile: srv.KnownHostsPath}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.SetSecret(asOwner(), rediacc.DefaultTeam, "db/password", []byte("s3cret-in-vault"), nil); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dirA, "vault.key")
	key, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dirA, "vault", "default.age")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a vault file was written on the first host: %v", err)
	}

	// A host without the key: refused, nothing created.
	bare := t.TempDir()
	noKey := f.client(func(c *rediacc.Config) { c.DataDir = bare })
	if _, err := noKey.GetSecret(asOwner(), rediacc.DefaultTeam, "db/password"); !errors.Is(err, rediacc.ErrWrongPassphrase) || !strings.Contains(err.Error(), "key file") {
		t.Fatalf("GetSecret on a host without the vault key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(bare, "vault.key")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a new vault key was made on a host whose store holds secrets: %v", err)
	}

	otherDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(otherDir, "vault.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	other := f.client(func(c *rediacc.Config) { c.DataDir = otherDir })
	tk := submit(t, f.c, rediacc.TaskSpec{Machine: "vaulted", Command: `test "$PW" = s3cret-in-vault && echo matched`,
		Secrets: map[string]string{"PW": "db/password"}})
	if err := other.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := get(t, f.c, tk.ID); got.Status != rediacc.StatusCompleted || got.Stdout != "matched\n" {
		t.Fatalf("task on another host: %s %q error %q", got.Status, got.Stdout, got.Error)
	}
	if _, err := other.SetSecret(asOwner(), rediacc.DefaultTeam, "db/password", []byte("rotated"), nil); err != nil {
		t.Fatal(err)
	}
	if s, err := a.GetSecret(asOwner(), rediacc.DefaultTeam, "db/password"); err != nil || string(s.Value) != "rotated" || s.Version != 2 {
		t.Fatalf("secret written on another host, read here: %+v, %v", s, err)
	}

	conn, err := pgx.Connect(ctxTimeout(t, time.Minute), f.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(asOwner())
	rows, err := conn.Query(asOwner(), `SELECT data FROM blobs WHERE kind = 'vault'`)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			t.Fatal(err)
		}
		n++
		if !strings.HasPrefix(string(data), "age-encryption.org/v1") || strings.Contains(string(data), "s3cret") || strings.Contains(string(data), "rotated") ||
			strings.Contains(string(data), "PRIVATE KEY") {
			t.Fatalf("the database holds more than age ciphertext: %.80q", data)
		}
	}
	if rows.Err() != nil || n != 1 {
		t.Fatalf("%d vault rows, %v; want the default team's one", n, rows.Err())
	}
}
