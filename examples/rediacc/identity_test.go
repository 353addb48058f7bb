package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/rediacc/rediacc/ssh/sshtest"
)

// as runs the CLI as user (root, or the data dir's owner, may: the test
// creates the data dir).
func (c cli) as(user string, args ...string) (int, string, string) {
	c.t.Helper()
	return c.run(append([]string{"--as", user}, args...)...)
}

// asOK is as, failing the test on a non-zero exit.
func (c cli) asOK(user string, args ...string) string {
	c.t.Helper()
	code, out, errs := c.as(user, args...)
	if code != 0 {
		c.t.Fatalf("as %s %v: exit %d\nstdout: %s\nstderr: %s", user, args, code, out, errs)
	}
	return out
}

// Issue 8, kind 1, through the CLI: the example of the issue. gamma is
// deleted and created again; the new gamma's admin sees nothing of the old
// one (vault, finished tasks, audit records); the owner still does, by id.
func TestCLITeamNameReuse(t *testing.T) {
	c := cli{t: t, dir: t.TempDir()}
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 107})
	c.ok("team", "create", "gamma")
	c.ok("team", "member", "add", "gamma", "alice", "--role", "admin")
	c.asOK("alice", "vault", "set", "--team", "gamma", "api/key", "--value-file", writeFile(t, "old-secret"))
	c.asOK("alice", "machine", "add", "gm", "--team", "gamma", "--host", srv.Host, "--port", strconv.Itoa(srv.Port), "--user", srv.User,
		"--identity", srv.ClientKeyPath, "--known-hosts", srv.KnownHostsPath)
	oldTask := strings.TrimSpace(c.asOK("alice", "create", "task", "--machine", "gm", "--command", "echo old-output", "--env", "HINT=old-env"))
	c.ok("worker", "--until-empty", "--health-interval", "-1s")
	c.asOK("alice", "machine", "remove", "gm")

	if code, _, errs := c.run("team", "delete", "gamma"); code == 0 || !strings.Contains(errs, "vault holds") || !strings.Contains(errs, "secret") || !strings.Contains(errs, "--purge-vault") {
		t.Fatalf("team delete with secrets: exit %d %s", code, errs)
	}
	var teams []map[string]any
	if err := json.Unmarshal([]byte(c.ok("team", "list", "-o", "json")), &teams); err != nil {
		t.Fatal(err)
	}
	oldID := ""
	for _, tm := range teams {
		if tm["name"] == "gamma" {
			oldID, _ = tm["id"].(string)
		}
	}
	if oldID == "" {
		t.Fatalf("team list -o json has no id: %v", teams)
	}
	c.ok("team", "delete", "gamma", "--purge-vault")
	c.ok("team", "create", "gamma")
	c.ok("team", "member", "add", "gamma", "mallory", "--role", "admin")

	if code, out, errs := c.as("mallory", "vault", "get", "--team", "gamma", "api/key"); code != exitNotFound || strings.Contains(out, "old-secret") {
		t.Errorf("mallory: vault get: exit %d %q %s", code, out, errs)
	}
	var tasks []map[string]any
	if err := json.Unmarshal([]byte(c.asOK("mallory", "list", "queue", "--team", "gamma", "-o", "json")), &tasks); err != nil || len(tasks) != 0 {
		t.Errorf("mallory: list queue --team gamma: %v %v", tasks, err)
	}
	if out := c.asOK("mallory", "list", "audit-logs", "--team", "gamma", "-o", "json"); strings.Contains(out, "alice") || strings.Contains(out, oldTask) {
		t.Errorf("mallory reads the old gamma's audit records:\n%s", out)
	}
	if code, _, _ := c.as("mallory", "list", "queue", "--team-id", oldID); code != exitPermission {
		t.Errorf("mallory: list queue --team-id OLD: exit %d", code)
	}
	if code, out, _ := c.as("mallory", "logs", oldTask); code != exitNotFound || strings.Contains(out, "old-output") { // hidden: as an unknown id
		t.Errorf("mallory: logs OLD_TASK: exit %d %q", code, out)
	}

	// The owner: the deleted team is listed with --all, its tasks and
	// records by id.
	all := c.ok("team", "list", "--all", "-o", "json")
	if !strings.Contains(all, oldID) || !strings.Contains(all, "deletedAt") {
		t.Errorf("team list --all: %s", all)
	}
	if out := c.ok("list", "queue", "--team-id", oldID, "-o", "json"); !strings.Contains(out, oldTask) || !strings.Contains(out, "old-output") {
		t.Errorf("owner: list queue --team-id OLD: %s", out)
	}
	if out := c.ok("list", "audit-logs", "--team-id", oldID, "-o", "json"); !strings.Contains(out, "team.vault.purge") || !strings.Contains(out, "alice") {
		t.Errorf("owner: list audit-logs --team-id OLD: %s", out)
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "value")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Issue 8, kind 6: the CLI's actor is the OS login. --as (or
// REDIACC_USER) names another user only for root or the data dir's owner,
// and is audited as impersonation (actor=boss, via=LOGIN).
func TestCLIActorIsTheOSLogin(t *testing.T) {
	login, _ := osLogin()
	c := cli{t: t, dir: t.TempDir()} // created by this user: its owner
	c.ok("team", "create", "t1")     // the first actor owns the store: the OS login
	c.ok("role", "add", "boss", "--role", "owner")
	c.asOK("boss", "team", "create", "t2")
	t.Setenv("REDIACC_USER", "boss")
	c.ok("team", "create", "t3")
	var recs []map[string]any
	if err := json.Unmarshal([]byte(c.ok("list", "audit-logs", "--action", "team.create", "-o", "json")), &recs); err != nil {
		t.Fatal(err)
	}
	want := []struct{ actor, via string }{{login, ""}, {"boss", login}, {"boss", login}}
	if len(recs) != 3 {
		t.Fatalf("team.create records: %v", recs)
	}
	for i, w := range want {
		d, _ := recs[i]["details"].(map[string]any)
		via, _ := d["via"].(string)
		if recs[i]["actor"] != w.actor || via != w.via {
			t.Errorf("record %d: actor %v via %q, want %+v", i, recs[i]["actor"], via, w)
		}
	}
}

// Issue 8, kind 6: an OS user that is neither root nor the data dir's
// owner cannot act as anyone else: exit 3, saying why, before the store is
// opened.
func TestCLIImpersonationRefused(t *testing.T) {
	if os.Getuid() != 0 {
		// Not root: a data dir this user does not own is enough.
		code, _, errs := cli{t: t, dir: "/"}.run("--as", "boss", "list", "queue")
		if code != exitPermission || !strings.Contains(errs, "may not act as") {
			t.Fatalf("--as boss on a data dir owned by another user: exit %d %s", code, errs)
		}
		return
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("the test needs the user nobody: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	bin := copyTestBinary(t)
	rootDir := t.TempDir() // owned by root, 0700
	cli{t: t, dir: rootDir}.ok("team", "create", "t1")
	for _, tc := range []struct {
		name string
		args []string
		env  []string
	}{
		{"--as", []string{"--as", "boss", "list", "queue"}, nil},
		{"REDIACC_USER", []string{"list", "queue"}, []string{"REDIACC_USER=boss"}},
	} {
		code, out, errs := runAsUser(t, bin, uint32(uid), uint32(gid), tc.env, append([]string{"--data-dir", rootDir}, tc.args...)...)
		if code != exitPermission || !strings.Contains(errs, "may not act as \"boss\"") || !strings.Contains(errs, "only root or the data dir's owner") {
			t.Errorf("%s as nobody on root's data dir: exit %d\nstdout %s\nstderr %s", tc.name, code, out, errs)
		}
	}
	// nobody owns its own data dir: it may act as another user there.
	own, err := os.MkdirTemp("", "rediacc-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(own) })
	if err := os.Chown(own, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(own, 0o700); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runAsUser(t, bin, uint32(uid), uint32(gid), nil, "--data-dir", own, "--as", "boss", "team", "create", "t1")
	if code != 0 {
		t.Errorf("nobody acting as boss on its own data dir: exit %d\nstdout %s\nstderr %s", code, out, errs)
	}
}

// copyTestBinary copies this test binary where any user may run it.
func copyTestBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "rediacc-cli-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	bin := filepath.Join(dir, "rediacc")
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return bin
}

// runAsUser runs the CLI (bin, see TestMain) as uid:gid.
func runAsUser(t *testing.T, bin string, uid, gid uint32, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--log-format", "json"}, args...)...)
	cmd.Env = append([]string{"REDIACC_TEST_CLI=1", "HOME=/tmp", "PATH=/usr/bin:/bin"}, env...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String(), errb.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String(), errb.String()
	}
	t.Fatalf("running %s as %d: %v", bin, uid, err)
	return 0, "", ""
}
