package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rediacc/rediacc/ssh/sshtest"
)

type cli struct {
	t   *testing.T
	dir string
}

// run runs the CLI with --data-dir set and returns exit code, stdout, stderr.
func (c cli) run(args ...string) (int, string, string) {
	c.t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), append([]string{"--data-dir", c.dir, "--log-format", "json"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func (c cli) ok(args ...string) string {
	c.t.Helper()
	code, out, errs := c.run(args...)
	if code != 0 {
		c.t.Fatalf("%v: exit %d\nstdout: %s\nstderr: %s", args, code, out, errs)
	}
	return out
}

func TestCLIEndToEndOnRealSSHD(t *testing.T) {
	c := cli{t: t, dir: t.TempDir()}
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 5})
	c.ok("machine", "add", "prod-01", "--host", srv.Host, "--port", strconv.Itoa(srv.Port), "--user", srv.User,
		"--identity", srv.ClientKeyPath, "--known-hosts", srv.KnownHostsPath)
	var machines []map[string]any
	if err := json.Unmarshal([]byte(c.ok("machine", "list", "-o", "json")), &machines); err != nil || len(machines) != 1 || machines[0]["name"] != "prod-01" {
		t.Fatalf("machine list: %v %v", machines, err)
	}
	id := strings.TrimSpace(c.ok("create", "task", "--machine", "prod-01", "--priority", "1", "--command", "echo restarted webserver",
		"--retry-count", "3", "--retry-delay", "1", "--failure-action", "alert", "--env", "A=b", "--timeout", "30s"))
	if len(id) != 36 {
		t.Fatalf("create task printed %q, want a UUID", id)
	}
	failing := strings.TrimSpace(c.ok("create", "task", "--machine", "prod-01", "--priority", "5", "--command", "exit 4", "--failure-action", "none"))
	c.ok("worker", "--until-empty", "--concurrency", "2")
	var task map[string]any
	if err := json.Unmarshal([]byte(c.ok("inspect", "queue", id, "-o", "json")), &task); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"taskId", "status", "priority", "machine", "command", "retryCount", "retryDelay", "failureAction",
		"attempts", "exitCode", "stdout", "stderr", "error", "createdAt", "startedAt", "completedAt"} {
		if _, ok := task[k]; !ok {
			t.Errorf("inspect -o json lacks %q: %v", k, task)
		}
	}
	if task["status"] != "COMPLETED" || task["stdout"] != "restarted webserver\n" || task["retryDelay"] != 1.0 || task["exitCode"] != 0.0 {
		t.Errorf("task: %v", task)
	}
	out := c.ok("inspect", "queue", failing)
	if !strings.Contains(out, "FAILED") || !strings.Contains(out, "Exit code:") {
		t.Errorf("inspect failing: %s", out)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(c.ok("list", "queue", "--status", "failed", "-o", "json")), &list); err != nil || len(list) != 1 || list[0]["taskId"] != failing {
		t.Errorf("list --status failed: %v %v", list, err)
	}
	if table := c.ok("list", "queue", "--machine", "prod-01"); !strings.Contains(table, id) || !strings.Contains(table, "COMPLETED") {
		t.Errorf("list queue table: %s", table)
	}
	if code, _, errs := c.run("cancel", id); code != 1 || !strings.Contains(errs, "cannot be cancelled") {
		t.Errorf("cancel completed: exit %d %s", code, errs)
	}
	pending := strings.TrimSpace(c.ok("create", "task", "--machine", "prod-01", "--command", "true"))
	if out := c.ok("cancel", pending); !strings.Contains(out, "cancelled") {
		t.Errorf("cancel pending: %s", out)
	}
}

func TestCLIExitCodes(t *testing.T) {
	c := cli{t: t, dir: t.TempDir()}
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 5})
	c.ok("machine", "add", "m1", "--host", srv.Host, "--port", strconv.Itoa(srv.Port), "--user", srv.User,
		"--identity", srv.ClientKeyPath, "--known-hosts", srv.KnownHostsPath)
	cases := []struct {
		args []string
		code int
		says string
	}{
		{[]string{"create", "task", "--machine", "m1", "--priority", "0", "--command", "true"}, exitInvalid, "priority"},
		{[]string{"create", "task", "--machine", "m1", "--priority", "6", "--command", "true"}, exitInvalid, "priority"},
		{[]string{"create", "task", "--machine", "m1", "--priority", "urgent", "--command", "true"}, exitInvalid, "urgent"},
		{[]string{"create", "task", "--machine", "m1", "--command", ""}, exitInvalid, "command"},
		{[]string{"create", "task", "--machine", "ghost", "--command", "true"}, exitInvalid, "ghost"},
		{[]string{"create", "task", "--machine", "m1", "--command", "true", "--timeout", "soon"}, exitInvalid, "timeout"},
		{[]string{"create", "task", "--machine", "m1", "--command", "true", "--retry-count", "-1"}, exitInvalid, "retryCount"},
		{[]string{"create", "task", "--machine", "m1", "--command", "true", "--failure-action", "page"}, exitInvalid, "failure action"},
		{[]string{"create", "task", "--machine", "m1", "--command", "true", "--env", "NOEQUALS"}, exitInvalid, "KEY=VALUE"},
		{[]string{"create", "task", "--command", "true"}, exitInvalid, "machine"},
		{[]string{"inspect", "queue", "00000000-0000-0000-0000-000000000000"}, exitNotFound, "not found"},
		{[]string{"cancel", "00000000-0000-0000-0000-000000000000"}, exitNotFound, "not found"},
		{[]string{"machine", "add", "m2", "--host", "h", "--port", "99999", "--identity", srv.ClientKeyPath}, exitInvalid, "port"},
		{[]string{"machine", "add", "m2", "--host", "h", "--identity", "/no/such/key"}, exitInvalid, "/no/such/key"},
		{[]string{"machine", "add", "m1", "--host", "h", "--identity", srv.ClientKeyPath}, exitError, "already exists"},
		{[]string{"list", "queue", "--status", "running"}, exitInvalid, "status"},
		{[]string{"list", "queue", "-o", "yaml"}, exitInvalid, "yaml"},
		{[]string{"bogus"}, exitInvalid, "unknown command"},
		{[]string{"list", "queue", "--no-such-flag"}, exitInvalid, "unknown flag"},
	}
	for _, tc := range cases {
		code, _, errs := c.run(tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.says) {
			t.Errorf("%v: exit %d (want %d), stderr %q (want it to say %q)", tc.args, code, tc.code, errs, tc.says)
		}
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(c.ok("list", "queue", "-o", "json")), &list); err != nil || len(list) != 0 {
		t.Errorf("invalid input wrote to the queue: %v %v", list, err)
	}
}

func TestQuickstart(t *testing.T) {
	c := cli{t: t, dir: t.TempDir()}
	out := c.ok("quickstart")
	for _, want := range []string{"critical", "minimal", "COMPLETED", "flaky job ok on retry", "Queue depth after"} {
		if !strings.Contains(out, want) {
			t.Errorf("quickstart output lacks %q:\n%s", want, out)
		}
	}
	// Order: the critical task ran first, the minimal one last.
	if i, j := strings.Index(out, "1 critical"), strings.Index(out, "5 minimal"); i < 0 || j < i {
		t.Errorf("quickstart order wrong:\n%s", out)
	}
	// Runs again on the same data dir.
	c.ok("quickstart")
}

func TestCLIWaitReportsFailure(t *testing.T) {
	c := cli{t: t, dir: t.TempDir()}
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 5})
	c.ok("machine", "add", "m1", "--host", srv.Host, "--port", strconv.Itoa(srv.Port), "--user", srv.User,
		"--identity", srv.ClientKeyPath, "--known-hosts", srv.KnownHostsPath)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		var out, errb bytes.Buffer
		run(ctx, []string{"--data-dir", c.dir, "worker", "--health-interval", "-1s"}, &out, &errb)
	}()
	code, out, errs := c.run("create", "task", "--machine", "m1", "--command", "echo out; exit 3", "--failure-action", "none", "--wait")
	stop()
	<-done
	if code != exitError || !strings.Contains(out, "FAILED exit 3") || !strings.Contains(out, "out") || !strings.Contains(errs, "FAILED") {
		t.Errorf("--wait on a failing task: exit %d\nstdout %q\nstderr %q", code, out, errs)
	}
	// Typos in a batch file are refused, not ignored.
	f := filepath.Join(t.TempDir(), "tasks.jsonl")
	if err := os.WriteFile(f, []byte(`{"machine":"m1","command":"true","priorty":1}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := c.run("create", "batch", "-f", f); code != exitInvalid || !strings.Contains(errs, `unknown field "priorty"`) {
		t.Errorf("batch with a typo: exit %d, %q", code, errs)
	}
	// Control characters in a command never reach the terminal raw.
	c.ok("create", "task", "--machine", "m1", "--command", "echo hi # \x1b]0;pwned\x07")
	if out := c.ok("list", "queue"); strings.ContainsAny(out, "\x1b\x07") {
		t.Errorf("list queue printed control characters: %q", out)
	}
}

// A read-only command on a data dir without a store creates nothing.
func TestCLIReadOnlyNeedsAStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "typo")
	c := cli{t: t, dir: dir}
	if code, _, errs := c.run("list", "queue"); code != exitNotFound || !strings.Contains(errs, "no rediacc store") {
		t.Errorf("list queue on an empty data dir: exit %d %q", code, errs)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("data dir created by a read-only command: %v", err)
	}
}
