package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/rediacc/rediacc/internal/store/postgres/pgtest"
	"github.com/rediacc/rediacc/internal/vault/vaulttest"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// binCLI runs the CLI as its own process (this test binary: TestMain runs
// the CLI when REDIACC_TEST_CLI=1), so that exit codes are the process's.
type binCLI struct {
	t   *testing.T
	dir string
	env []string
}

func (c binCLI) run(stdin string, args ...string) (int, string, string) {
	c.t.Helper()
	self, err := os.Executable()
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(self, append([]string{"--data-dir", c.dir, "--log-level", "error"}, args...)...)
	cmd.Env = append(append(os.Environ(), "REDIACC_TEST_CLI=1", "REDIACC_VAULT_PASSPHRASE="), c.env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String(), errb.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String(), errb.String()
	}
	c.t.Fatalf("running the CLI: %v", err)
	return 0, "", ""
}

func (c binCLI) with(env ...string) binCLI {
	c.env = append(append([]string(nil), c.env...), env...)
	return c
}

func (c binCLI) expect(code int, says string, args ...string) {
	c.t.Helper()
	got, out, errs := c.run("", args...)
	if got != code || !strings.Contains(errs, says) {
		c.t.Errorf("%v: exit %d (want %d), stderr %q (want it to say %q), stdout %q", args, got, code, errs, says, out)
	}
}

// writeKey writes a new ed25519 private key no server authorizes.
func writeKey(t *testing.T) string {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := gossh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "stranger")
	if err := os.WriteFile(p, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Exit codes of the built CLI: 2 for every authentication failure (vault
// passphrase or key file, identity passphrase, a machine refusing the
// identity, HashiCorp Vault refusing the token, PostgreSQL refusing the
// login), 5 for an id that is not an id, 4 for an id naming nothing; and
// commands that use no secret never unlock the vault.
func TestCLIExitCodesAuthAndIDs(t *testing.T) {
	// A data dir whose vault is locked by a passphrase (age scrypt: one
	// write, one failed read).
	locked := binCLI{t: t, dir: t.TempDir()}
	if code, _, errs := locked.with("REDIACC_VAULT_PASSPHRASE=right horse").run("s3cret", "vault", "set", "--team", "default", "db/pw"); code != 0 {
		t.Fatalf("vault set: exit %d: %s", code, errs)
	}
	locked.with("REDIACC_VAULT_PASSPHRASE=wrong").expect(exitAuth, "wrong passphrase", "vault", "list", "--team", "default")
	locked.expect(exitAuth, "key file", "vault", "get", "--team", "default", "db/pw")
	for _, args := range [][]string{{"list", "queue"}, {"team", "list"}, {"list", "audit-logs"}, {"role", "list"}} {
		if code, _, errs := locked.run("", args...); code != 0 {
			t.Errorf("%v needs no secret but exits %d without the vault passphrase: %s", args, code, errs)
		}
	}

	// A fleet whose vault (holding the machines' keys) has a key file.
	c := binCLI{t: t, dir: t.TempDir()}
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 5})
	machine := func(name, key string) {
		t.Helper()
		if code, _, errs := c.run("", "machine", "add", name, "--host", srv.Host, "--port", strconv.Itoa(srv.Port), "--user", srv.User,
			"--identity", key, "--known-hosts", srv.KnownHostsPath); code != 0 {
			t.Fatalf("machine add %s: exit %d: %s", name, code, errs)
		}
	}
	machine("good", srv.ClientKeyPath)
	machine("stranger", writeKey(t))
	pass := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(pass, []byte("not it\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.expect(exitAuth, "passphrase", "--identity-passphrase-file", pass, "machine", "add", "locked", "--host", srv.Host, "--port", strconv.Itoa(srv.Port),
		"--user", srv.User, "--identity", srv.EncryptedClientKeyPath, "--known-hosts", srv.KnownHostsPath)

	// A worker that cannot unlock the vault holding the machine's key fails
	// the task as wrong_passphrase (it runs before any other worker).
	noKey := cli{t: t, dir: c.dir}
	id := strings.TrimSpace(noKey.ok("create", "task", "--machine", "good", "--command", "true"))
	otherKey := filepath.Join(t.TempDir(), "other.key")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if code := run(ctx, []string{"--data-dir", c.dir, "--log-level", "error", "--vault-key-file", otherKey, "worker", "--until-empty"}, io.Discard, io.Discard); code != 0 {
		t.Errorf("worker --until-empty: exit %d", code)
	}
	var task map[string]any
	if err := json.Unmarshal([]byte(noKey.ok("inspect", "queue", id, "-o", "json")), &task); err != nil || task["errorKind"] != "wrong_passphrase" {
		t.Errorf("a task whose worker cannot unlock the vault holding its machine's key: errorKind %v (%v), want wrong_passphrase", task["errorKind"], err)
	}

	// The vault opens only where a secret is used: nothing asks for a
	// passphrase (--vault-passphrase-prompt with no terminal is refused
	// when it asks).
	startWorker(t, cli{t: t, dir: c.dir})
	for _, args := range [][]string{
		{"list", "queue"}, {"team", "list"}, {"machine", "list"}, {"create", "task", "--machine", "good", "--command", "true", "--wait"},
		{"inspect", "queue", id}, {"logs", id}, {"machine", "status"}, {"queue", "status"},
	} {
		if code, _, errs := c.run("", append([]string{"--vault-passphrase-prompt"}, args...)...); code != 0 {
			t.Errorf("%v needs no secret but exits %d: %s", args, code, errs)
		}
	}

	// 2: authentication.
	c.expect(exitAuth, "refused", "create", "task", "--machine", "stranger", "--command", "true", "--wait")
	addr, _ := vaulttest.StartDevServer(t)
	c.with("VAULT_TOKEN=not-a-token").expect(exitAuth, "VAULT_TOKEN", "--vault-backend", "hashicorp", "--vault-addr", addr, "vault", "list", "--team", "default")
	u, err := url.Parse(pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("no_such_role", "pw")
	c.expect(exitAuth, "refused the login", "--store", u.String(), "list", "queue")

	// 5: not an id; 4: an id of nothing.
	for _, args := range [][]string{{"logs", "notauuid"}, {"inspect", "queue", "notauuid"}, {"cancel", "notauuid"}, {"window", "delete", "notauuid"}} {
		c.expect(exitInvalid, "not an id", args...)
	}
	for _, args := range [][]string{{"logs", "00000000-0000-0000-0000-000000000000"}, {"inspect", "queue", "00000000-0000-0000-0000-000000000000"},
		{"cancel", "00000000-0000-0000-0000-000000000000"}, {"window", "delete", "00000000-0000-0000-0000-000000000000"}} {
		c.expect(exitNotFound, "not found", args...)
	}
}
