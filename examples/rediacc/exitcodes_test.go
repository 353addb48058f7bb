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
// commands that use no secret need no vault passphrase.
func TestCLIExitCodesAuthAndIDs(t *testing.T) {
	c := binCLI{t: t, dir: t.TempDir()}
	right := c.with("REDIACC_VAULT_PASSPHRASE=right horse")
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 5})
	machine := func(cl binCLI, name, key string) {
		t.Helper()
		if code, _, errs := cl.run("", "machine", "add", name, "--host", srv.Host, "--port", strconv.Itoa(srv.Port), "--user", srv.User,
			"--identity", key, "--known-hosts", srv.KnownHostsPath); code != 0 {
			t.Fatalf("machine add %s: exit %d: %s", name, code, errs)
		}
	}
	machine(right, "good", srv.ClientKeyPath)
	machine(right, "stranger", writeKey(t))
	if code, _, errs := right.run("s3cret", "vault", "set", "--team", "default", "db/pw"); code != 0 {
		t.Fatalf("vault set: exit %d: %s", code, errs)
	}

	// The vault opens only where a secret is used: no passphrase needed
	// (and none asked for) to list, inspect, read logs.
	id := ""
	if code, out, errs := c.run("", "create", "task", "--machine", "good", "--command", "echo hi"); code != 0 {
		t.Fatalf("create task without the vault passphrase: exit %d: %s", code, errs)
	} else {
		id = strings.TrimSpace(out)
	}
	t.Setenv("REDIACC_VAULT_PASSPHRASE", "right horse") // the worker's; the runs above and below set theirs
	startWorker(t, cli{t: t, dir: c.dir})
	prompt := c.with() // --vault-passphrase-prompt with no terminal: refused if asked
	for _, args := range [][]string{
		{"list", "queue"}, {"team", "list"}, {"machine", "list"}, {"list", "audit-logs"}, {"role", "list"},
		{"create", "task", "--machine", "good", "--command", "true", "--wait"},
		{"inspect", "queue", id}, {"logs", id}, {"machine", "status"}, {"queue", "status"},
	} {
		if code, _, errs := prompt.run("", append([]string{"--vault-passphrase-prompt"}, args...)...); code != 0 {
			t.Errorf("%v needs no secret but exits %d: %s", args, code, errs)
		}
	}

	// 2: authentication.
	pass := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(pass, []byte("not it\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.expect(exitAuth, "key file", "vault", "get", "--team", "default", "db/pw")
	c.with("REDIACC_VAULT_PASSPHRASE=wrong").expect(exitAuth, "wrong passphrase", "vault", "list", "--team", "default")
	c.expect(exitAuth, "refused", "create", "task", "--machine", "stranger", "--command", "true", "--wait")
	// A worker that cannot unlock the vault holding the machine's key.
	noKey := cli{t: t, dir: c.dir}
	id = strings.TrimSpace(noKey.ok("create", "task", "--machine", "good", "--command", "true"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t.Setenv("REDIACC_VAULT_PASSPHRASE", "")
	if code := run(ctx, []string{"--data-dir", c.dir, "--log-level", "error", "--vault-passphrase-file", pass, "worker", "--until-empty"}, io.Discard, io.Discard); code != 0 {
		t.Errorf("worker --until-empty: exit %d", code)
	}
	t.Setenv("REDIACC_VAULT_PASSPHRASE", "right horse")
	var task map[string]any
	if err := json.Unmarshal([]byte(noKey.ok("inspect", "queue", id, "-o", "json")), &task); err != nil || task["errorKind"] != "wrong_passphrase" {
		t.Errorf("a task whose worker cannot unlock the vault holding its machine's key: errorKind %v (%v), want wrong_passphrase", task["errorKind"], err)
	}
	c.expect(exitAuth, "passphrase", "--identity-passphrase-file", pass, "machine", "add", "locked", "--host", srv.Host, "--port", strconv.Itoa(srv.Port),
		"--user", srv.User, "--identity", srv.EncryptedClientKeyPath, "--known-hosts", srv.KnownHostsPath)
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
