package main

import (
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rediacc/rediacc/internal/store/postgres/pgtest"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// store migrate-from-sqlite copies a data dir's store into PostgreSQL;
// audit verify passes on the copy with the source's keyring, the copied
// task is there; bad invocations exit with their codes.
func TestCLIMigrateFromSQLite(t *testing.T) {
	src := cli{t: t, dir: t.TempDir()}
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 7})
	src.ok("machine", "add", "m1", "--host", srv.Host, "--port", strconv.Itoa(srv.Port), "--user", srv.User,
		"--identity", srv.ClientKeyPath, "--known-hosts", srv.KnownHostsPath)
	id := strings.TrimSpace(src.ok("create", "task", "--machine", "m1", "--command", "echo migrated"))
	src.ok("worker", "--until-empty", "--health-interval", "-1s")

	url := pgtest.Schema(t)
	other := cli{t: t, dir: t.TempDir()}
	if code, _, errs := other.run("store", "migrate-from-sqlite", src.dir); code != exitInvalid || !strings.Contains(errs, "--store postgres://") {
		t.Fatalf("without --store: exit %d %s", code, errs)
	}
	var rep map[string]any
	if err := json.Unmarshal([]byte(other.ok("--store", url, "store", "migrate-from-sqlite", src.dir, "-o", "json")), &rep); err != nil || rep["tasks"] != 1.0 || rep["machines"] != 1.0 {
		t.Fatalf("migrate -o json: %v %v", rep, err)
	}
	if code, _, errs := other.run("--store", url, "store", "migrate-from-sqlite", src.dir); code != exitError || !strings.Contains(errs, "not empty") {
		t.Fatalf("second migration: exit %d %s", code, errs)
	}
	if code, _, errs := other.run("--store", pgtest.Schema(t), "store", "migrate-from-sqlite", filepath.Join(src.dir, "nope")); code != exitNotFound {
		t.Fatalf("no store in DIR: exit %d %s", code, errs)
	}
	key := filepath.Join(src.dir, "audit.key")
	// The copy's owner is the OS login that ran the SQLite CLI; on
	// PostgreSQL the actor defaults to the database login's user, so act
	// as the owner with --as (the schema's creator login holds the
	// impersonation grant).
	me, _ := osLogin()
	if out := other.ok("--store", url, "--as", me, "--audit-key-file", key, "audit", "verify"); !strings.Contains(strings.ToLower(out), "intact") && !strings.Contains(out, "ok") {
		t.Fatalf("audit verify on the copy: %s", out)
	}
	var task map[string]any
	if err := json.Unmarshal([]byte(other.ok("--store", url, "--as", me, "--audit-key-file", key, "inspect", "queue", id, "-o", "json")), &task); err != nil || task["stdout"] != "migrated\n" {
		t.Fatalf("the copied task: %v %v", task, err)
	}
}
