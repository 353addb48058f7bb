package main

import (
	"strconv"
	"strings"
	"testing"

	"github.com/rediacc/rediacc/ssh/sshtest"
)

// Issue 8, kind 7: machine add --legacy-algorithms reaches a real sshd that
// offers only SHA-1 key exchange; without it the task fails naming the
// algorithm. A malformed --agent-key is invalid input.
func TestCLILegacyAlgorithmsAndAgentKey(t *testing.T) {
	c := cli{t: t, dir: t.TempDir()}
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 73, ExtraConfig: []string{"KexAlgorithms diffie-hellman-group14-sha1"}})
	add := func(name string, extra ...string) (int, string) {
		code, _, errs := c.run(append([]string{"machine", "add", name, "--host", srv.Host, "--port", strconv.Itoa(srv.Port), "--user", srv.User,
			"--identity", srv.ClientKeyPath, "--known-hosts", srv.KnownHostsPath}, extra...)...)
		return code, errs
	}
	if code, errs := add("old-default"); code != 0 {
		t.Fatalf("machine add: %d %s", code, errs)
	}
	if code, errs := add("old-legacy", "--legacy-algorithms"); code != 0 {
		t.Fatalf("machine add --legacy-algorithms: %d %s", code, errs)
	}
	startWorker(t, c)
	code, _, errs := c.run("create", "task", "--machine", "old-default", "--command", "echo ran", "--failure-action", "none", "--wait")
	if code == 0 || !strings.Contains(errs, "no common key exchange") || !strings.Contains(errs, "--legacy-algorithms") {
		t.Fatalf("default algorithms against a SHA-1-only sshd: exit %d, stderr %s", code, errs)
	}
	if out := c.ok("create", "task", "--machine", "old-legacy", "--command", "echo ran", "--wait"); !strings.Contains(out, "ran") {
		t.Fatalf("--legacy-algorithms: %s", out)
	}
	if code, errs := add("bad-fp", "--agent-key", "MD5:aa:bb"); code != exitInvalid || !strings.Contains(errs, "fingerprint") {
		t.Fatalf("--agent-key MD5:aa:bb: exit %d, stderr %s", code, errs)
	}
}
