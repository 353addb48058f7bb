package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rediacc/rediacc/ssh/sshtest"
)

// The machine hostkeys commands: list, forget (the next task cannot verify
// the host), import (it can again); bad arguments exit with their codes and
// change nothing.
func TestCLIMachineHostKeys(t *testing.T) {
	c := cli{t: t, dir: t.TempDir()}
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 6})
	c.ok("machine", "add", "m1", "--host", srv.Host, "--port", strconv.Itoa(srv.Port), "--user", srv.User,
		"--identity", srv.ClientKeyPath, "--known-hosts", filepath.Join(t.TempDir(), "absent"))
	if out := c.ok("machine", "hostkeys", "list", "m1"); out != "" {
		t.Fatalf("host keys of a machine added without any: %q", out)
	}
	if out := c.ok("machine", "hostkeys", "import", "m1", srv.KnownHostsPath); !strings.Contains(out, "1 host key line(s) added") {
		t.Fatalf("import: %q", out)
	}
	var lines []string
	if err := json.Unmarshal([]byte(c.ok("machine", "hostkeys", "list", "m1", "-o", "json")), &lines); err != nil || len(lines) != 1 || !strings.Contains(lines[0], srv.Host) {
		t.Fatalf("list -o json: %q %v", lines, err)
	}
	c.ok("create", "task", "--machine", "m1", "--command", "true")
	c.ok("worker", "--until-empty")
	other := filepath.Join(t.TempDir(), "other")
	if err := os.WriteFile(other, []byte("elsewhere.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"machine", "hostkeys", "import", "m1", other}, exitInvalid, "has no key for"},
		{[]string{"machine", "hostkeys", "import", "m1", "/no/such/file"}, exitInvalid, "/no/such/file"},
		{[]string{"machine", "hostkeys", "import", "ghost", srv.KnownHostsPath}, exitNotFound, "ghost"},
		{[]string{"machine", "hostkeys", "forget", "ghost"}, exitNotFound, "ghost"},
		{[]string{"machine", "hostkeys", "import", "m1"}, exitInvalid, "NAME and FILE"},
	} {
		code, _, errs := c.run(tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.says) {
			t.Errorf("%v: exit %d (want %d), stderr %q (want it to say %q)", tc.args, code, tc.code, errs, tc.says)
		}
	}
	if out := c.ok("machine", "hostkeys", "list", "m1"); strings.Count(out, "\n") != 1 {
		t.Fatalf("refused commands changed the lines: %q", out)
	}
	c.ok("machine", "hostkeys", "forget", "m1")
	id := strings.TrimSpace(c.ok("create", "task", "--machine", "m1", "--command", "true", "--failure-action", "none"))
	c.run("worker", "--until-empty")
	if out := c.ok("inspect", "queue", id); !strings.Contains(out, "FAILED") || !strings.Contains(out, "rediacc machine hostkeys import m1") {
		t.Fatalf("task after forget: %s", out)
	}
}
