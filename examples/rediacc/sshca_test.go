package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/rediacc/rediacc/ssh/sshtest"
)

// TestCLISSHCA: team ssh-ca init|show|rotate and machine add --auth ssh-ca
// on a real sshd that installs what `show` prints.
func TestCLISSHCA(t *testing.T) {
	c := cli{t: t, dir: t.TempDir()}
	if code, _, errs := c.run("team", "ssh-ca", "show", "default"); code != 4 {
		t.Fatalf("show before any store: exit %d %s", code, errs)
	}
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 89})
	add := []string{"machine", "add", "cert-01", "--host", srv.Host, "--port", strconv.Itoa(srv.Port), "--user", srv.User,
		"--auth", "ssh-ca", "--known-hosts", srv.KnownHostsPath}
	if code, _, errs := c.run(add...); code != 4 || !strings.Contains(errs, "rediacc team ssh-ca init default") {
		t.Fatalf("ssh-ca machine before init: exit %d %s", code, errs)
	}
	if code, _, errs := c.run("team", "ssh-ca", "init", "default", "--cert-ttl", "5"); code != 5 || !strings.Contains(errs, "no unit") {
		t.Fatalf("--cert-ttl without unit: exit %d %s", code, errs)
	}
	if code, _, errs := c.run("team", "ssh-ca", "init", "default", "--vault-ssh-mount", "ssh"); code != 5 {
		t.Fatalf("mount without role: exit %d %s", code, errs)
	}
	out := c.ok("team", "ssh-ca", "init", "default", "--cert-ttl", "3m")
	if !strings.Contains(out, "certificates valid 3m0s") || strings.Count(out, "ssh-ed25519 ") != 1 {
		t.Fatalf("init printed:\n%s", out)
	}
	// What show prints installs as is in sshd's TrustedUserCAKeys file.
	shown := c.ok("team", "ssh-ca", "show", "default")
	srv.SetTrustedUserCAKeys(shown)
	c.ok(add...)
	if list := c.ok("machine", "list"); !strings.Contains(list, "ssh-ca certificates") {
		t.Errorf("machine list: %s", list)
	}
	id := strings.TrimSpace(c.ok("create", "task", "--machine", "cert-01", "--command", "echo via certificate"))
	c.ok("worker", "--until-empty")
	var task map[string]any
	if err := json.Unmarshal([]byte(c.ok("inspect", "queue", id, "-o", "json")), &task); err != nil || task["status"] != "COMPLETED" || task["stdout"] != "via certificate\n" {
		t.Fatalf("task: %v %v", task, err)
	}
	status := c.ok("machine", "status", "--probe")
	if !strings.Contains(status, "cert-01: trusts the active CA SHA256:") {
		t.Errorf("machine status:\n%s", status)
	}
	// Rotation: start, finish refused until the machine trusts the new CA.
	rot := c.ok("team", "ssh-ca", "rotate", "default")
	if strings.Count(rot, "ssh-ed25519 ") != 2 || !strings.Contains(rot, " next ") {
		t.Fatalf("rotate printed:\n%s", rot)
	}
	if code, _, errs := c.run("team", "ssh-ca", "rotate", "default", "--finish"); code != 1 || !strings.Contains(errs, "cert-01: ") || !strings.Contains(errs, "TrustedUserCAKeys") {
		t.Fatalf("finish before the machine trusts the new CA: exit %d %s", code, errs)
	}
	if code, _, errs := c.run("team", "ssh-ca", "rotate", "default", "--finish", "--abort"); code != 5 {
		t.Fatalf("--finish --abort: exit %d %s", code, errs)
	}
	srv.SetTrustedUserCAKeys(c.ok("team", "ssh-ca", "show", "default"))
	done := c.ok("team", "ssh-ca", "rotate", "default", "--finish")
	if !strings.Contains(done, "retired") || strings.Count(done, "\nssh-ed25519 ") != 1 {
		t.Fatalf("finish printed:\n%s", done)
	}
	var ca map[string]any
	if err := json.Unmarshal([]byte(c.ok("team", "ssh-ca", "show", "default", "-o", "json")), &ca); err != nil || len(ca["cas"].([]any)) != 2 {
		t.Fatalf("show -o json: %v %v", ca, err)
	}
	if code, _, errs := c.run("--as", "nobody", "team", "ssh-ca", "rotate", "default"); code != 3 {
		t.Fatalf("rotate by a non-member: exit %d %s", code, errs)
	}
}
