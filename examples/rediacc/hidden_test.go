package main

import (
	"strconv"
	"strings"
	"testing"

	"github.com/rediacc/rediacc/ssh/sshtest"
)

// Existence oracle, through the CLI: a machine or task of a team the caller
// may not see answers exactly as an unknown one (exit 4, same message), so
// nobody learns what exists in other teams; a member who may see it but
// not change it gets exit 3.
func TestCLIHiddenMachinesAndTasks(t *testing.T) {
	c := cli{t: t, dir: t.TempDir()}
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 108})
	c.ok("team", "create", "alpha")
	c.ok("team", "create", "beta")
	c.ok("team", "member", "add", "alpha", "alice", "--role", "admin")
	c.ok("team", "member", "add", "beta", "bob", "--role", "admin")
	c.ok("team", "member", "add", "beta", "vera", "--role", "viewer")
	c.asOK("bob", "machine", "add", "bm", "--team", "beta", "--host", srv.Host, "--port", strconv.Itoa(srv.Port), "--user", srv.User,
		"--identity", srv.ClientKeyPath, "--known-hosts", srv.KnownHostsPath)
	task := strings.TrimSpace(c.asOK("bob", "create", "task", "--machine", "bm", "--command", "true"))
	const unknownTask = "00000000-0000-4000-8000-000000000000"

	cases := [][2][]string{ // another team's, unknown
		{{"machine", "remove", "bm"}, {"machine", "remove", "nosuch"}},
		{{"machine", "move", "bm", "--team", "alpha"}, {"machine", "move", "nosuch", "--team", "alpha"}},
		{{"machine", "drain", "bm"}, {"machine", "drain", "nosuch"}},
		{{"create", "task", "--machine", "bm", "--command", "true"}, {"create", "task", "--machine", "nosuch", "--command", "true"}},
		{{"inspect", "queue", task}, {"inspect", "queue", unknownTask}},
		{{"cancel", task}, {"cancel", unknownTask}},
		{{"logs", task}, {"logs", unknownTask}},
	}
	for _, tc := range cases {
		rc, _, rerr := c.as("alice", tc[0]...)
		fc, _, ferr := c.as("alice", tc[1]...)
		norm := func(s, name string) string { return strings.ReplaceAll(s, name, "NAME") }
		realName, fakeName := "bm", "nosuch"
		if tc[0][len(tc[0])-1] == task {
			realName, fakeName = task, unknownTask
		}
		if rc != fc || rc == exitPermission || norm(lastLine(rerr), realName) != norm(lastLine(ferr), fakeName) {
			t.Errorf("%v: exit %d %q\nunknown: exit %d %q\n(must be the same, not a permission error)", tc[0], rc, lastLine(rerr), fc, lastLine(ferr))
		}
		if strings.Contains(rerr, "beta") {
			t.Errorf("%v: the error names the hidden machine's team: %s", tc[0], rerr)
		}
	}
	// The machine is still there, the task still queued.
	c.asOK("bob", "machine", "list")
	if out := c.asOK("bob", "inspect", "queue", task); !strings.Contains(out, "PENDING") {
		t.Errorf("task after hidden cancel: %s", out)
	}
	// A viewer of beta sees the machine: removing it is a permission error.
	if code, _, errs := c.as("vera", "machine", "remove", "bm"); code != exitPermission {
		t.Errorf("viewer removes a machine of their team: exit %d %s, want %d", code, errs, exitPermission)
	}
}

// lastLine is the last non-empty line of s (the CLI's "error: …" line
// after any log lines).
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
