package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rediacc/rediacc/internal/store/postgres/pgtest"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// TestCLIOnPostgres: --store postgres://… runs the CLI against a
// PostgreSQL store: a worker runs the task submitted by another command,
// and list workers shows the registry. The machine's identity is imported
// into the local vault, whose encrypted files are in PostgreSQL: the worker
// runs with another data dir (another host) holding only a copy of the
// vault key file, and no vault file is written on either.
func TestCLIOnPostgres(t *testing.T) {
	url := pgtest.Schema(t)
	a := cli{t: t, dir: t.TempDir()}
	b := cli{t: t, dir: t.TempDir()}
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 6})
	a.ok("--store", url, "machine", "add", "pg-01", "--host", srv.Host, "--port", strconv.Itoa(srv.Port), "--user", srv.User,
		"--identity", srv.ClientKeyPath, "--known-hosts", srv.KnownHostsPath)
	key, err := os.ReadFile(filepath.Join(a.dir, "vault.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.dir, "vault.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(a.ok("--store", url, "create", "task", "--machine", "pg-01", "--priority", "1", "--command", "echo from-postgres"))
	b.ok("--store", url, "worker", "--until-empty", "--health-interval", "-1s")
	var task map[string]any
	if err := json.Unmarshal([]byte(a.ok("--store", url, "inspect", "queue", id, "-o", "json")), &task); err != nil {
		t.Fatal(err)
	}
	if task["status"] != "COMPLETED" || task["stdout"] != "from-postgres\n" {
		t.Fatalf("task run by the other host's worker: %v", task)
	}
	for _, d := range []string{a.dir, b.dir} {
		if files, _ := filepath.Glob(filepath.Join(d, "vault", "*.age")); len(files) > 0 {
			t.Errorf("vault files written on a host: %v", files)
		}
	}
	var ws []map[string]any
	if err := json.Unmarshal([]byte(a.ok("--store", url, "list", "workers", "-o", "json")), &ws); err != nil {
		t.Fatal(err)
	}
	if len(ws) != 0 {
		t.Fatalf("list workers after the worker stopped: %v, want none", ws)
	}
	// A store URL the CLI does not know: exit 5, nothing created.
	if code, _, errs := a.run("--store", "mysql://x", "machine", "list"); code != exitInvalid || !strings.Contains(errs, "mysql") {
		t.Fatalf("--store mysql://x: exit %d, %s", code, errs)
	}
	// The SQLite default keeps no registry (another data dir: this one's
	// archive belongs to the PostgreSQL store).
	a = cli{t: t, dir: t.TempDir()}
	a.ok("machine", "add", "local", "--host", srv.Host, "--port", strconv.Itoa(srv.Port), "--user", srv.User,
		"--identity", srv.ClientKeyPath, "--known-hosts", srv.KnownHostsPath)
	if code, _, errs := a.run("list", "workers"); code != exitError || !strings.Contains(errs, "PostgreSQL") {
		t.Fatalf("list workers on SQLite: exit %d, %s", code, errs)
	}
}
