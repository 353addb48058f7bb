package main

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	gossh "golang.org/x/crypto/ssh"

	"github.com/rediacc/rediacc/ssh/sshtest"
)

// The key commands end to end on a real sshd reading ~/.ssh/authorized_keys:
// keys listed with fingerprint and age, a dry run, a rotation, a refused
// rollback, a queued rotation run by a worker, and exit codes for bad input.
func TestCLIKeyRotation(t *testing.T) {
	c := cli{t: t, dir: t.TempDir()}
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 51, AuthorizedKeysInHome: true})
	c.ok("machine", "add", "db-01", "--host", srv.Host, "--port", strconv.Itoa(srv.Port), "--user", srv.User,
		"--identity", srv.ClientKeyPath, "--known-hosts", srv.KnownHostsPath)
	fp := gossh.FingerprintSHA256(srv.ClientSigner.PublicKey())

	keys := func() []map[string]any {
		t.Helper()
		var ks []map[string]any
		if err := json.Unmarshal([]byte(c.ok("machine", "keys", "-o", "json")), &ks); err != nil || len(ks) != 1 {
			t.Fatalf("machine keys -o json: %v %v", ks, err)
		}
		return ks
	}
	if k := keys()[0]; k["fingerprint"] != fp || k["type"] != "ssh-ed25519" || k["source"] != "vault" {
		t.Fatalf("key before: %v", k)
	}
	if out := c.ok("machine", "list"); !strings.Contains(out, "KEY FINGERPRINT") || !strings.Contains(out, fp) || !strings.Contains(out, "0h") {
		t.Fatalf("machine list:\n%s", out)
	}
	if out := c.ok("machine", "keys", "--max-key-age", "1ns"); !strings.Contains(out, "OVERDUE") || !strings.Contains(out, "db-01") {
		t.Fatalf("machine keys with a tiny max age:\n%s", out)
	}
	if out := c.ok("machine", "status", "--max-key-age", "1ns"); !strings.Contains(out, "key overdue") {
		t.Fatalf("machine status with a tiny max age:\n%s", out)
	}
	if out := c.ok("machine", "keys", "--max-key-age", "90d"); strings.Contains(out, "OVERDUE") {
		t.Fatalf("a new key is overdue at 90d:\n%s", out)
	}

	before, _ := os.ReadFile(srv.AuthorizedKeysPath)
	if out := c.ok("machine", "rotate-key", "db-01", "--dry-run"); !strings.Contains(out, "dry run") || !strings.Contains(out, "ready") {
		t.Fatalf("dry run:\n%s", out)
	}
	if after, _ := os.ReadFile(srv.AuthorizedKeysPath); string(after) != string(before) {
		t.Fatal("the dry run changed authorized_keys")
	}
	out := c.ok("machine", "rotate-key", "db-01")
	if !strings.Contains(out, "rotated") || !strings.Contains(out, "revoked") {
		t.Fatalf("rotate-key:\n%s", out)
	}
	k := keys()[0]
	if k["fingerprint"] == fp || k["previousFingerprint"] != fp {
		t.Fatalf("key after the rotation: %v", k)
	}
	if b, _ := os.ReadFile(srv.AuthorizedKeysPath); !strings.Contains(string(b), "rediacc key=") || strings.Contains(string(b), strings.TrimSpace(string(gossh.MarshalAuthorizedKey(srv.ClientSigner.PublicKey())))) {
		t.Fatalf("authorized_keys after the rotation:\n%s", b)
	}
	if code, _, errs := c.run("machine", "rotate-key", "db-01", "--rollback"); code != 1 || !strings.Contains(errs, "rollback impossible") {
		t.Fatalf("rollback after a complete rotation: exit %d: %s", code, errs)
	}

	// Queued: a task of priority 4 that a worker runs.
	id := strings.Fields(c.ok("machine", "rotate-key", "db-01", "--queue"))[0]
	var task map[string]any
	if err := json.Unmarshal([]byte(c.ok("inspect", "queue", id, "-o", "json")), &task); err != nil || task["kind"] != "key.rotate" || task["priority"] != 4.0 {
		t.Fatalf("queued rotation: %v %v", task, err)
	}
	c.ok("worker", "--until-empty", "--health-interval", "-1s")
	if err := json.Unmarshal([]byte(c.ok("inspect", "queue", id, "-o", "json")), &task); err != nil || task["status"] != "COMPLETED" {
		t.Fatalf("rotation task after the worker: %v %v", task, err)
	}
	if k2 := keys()[0]; k2["fingerprint"] == k["fingerprint"] {
		t.Fatalf("the queued rotation did not rotate: %v", k2)
	}

	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"machine", "rotate-key"}, exitInvalid},
		{[]string{"machine", "rotate-key", "db-01", "--type", "dsa"}, exitInvalid},
		{[]string{"machine", "rotate-key", "db-01", "--bits", "4096"}, exitInvalid},
		{[]string{"machine", "rotate-key", "db-01", "--resume", "--rollback"}, exitInvalid},
		{[]string{"machine", "rotate-key", "db-01", "--queue", "--dry-run"}, exitInvalid},
		{[]string{"machine", "rotate-key", "nope"}, exitNotFound},
		{[]string{"machine", "keys", "--max-key-age", "soon"}, exitInvalid},
		{[]string{"machine", "rotate-key", "db-01", "--as", "mallory"}, exitNotFound}, // no role in its team: as an unknown machine
	} {
		if code, _, errs := c.run(tc.args...); code != tc.code {
			t.Errorf("%v: exit %d, want %d (%s)", tc.args, code, tc.code, errs)
		}
	}
	if out := c.ok("machine", "rotate-key", "db-01", "--resume"); !strings.Contains(out, "nothing to resume") {
		t.Fatalf("resume with nothing unfinished:\n%s", out)
	}
}
