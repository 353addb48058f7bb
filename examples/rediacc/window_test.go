package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/rediacc/rediacc/ssh/sshtest"
)

// Windows, drain and pause through the CLI: create, list, the wait reason
// in inspect, the draining state in machine status, queue status, and the
// exit codes of bad input and missing rights.
func TestCLIWindowsDrainPause(t *testing.T) {
	c := cli{t: t, dir: t.TempDir()}
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 15})
	c.ok("machine", "add", "db-01", "--host", srv.Host, "--port", strconv.Itoa(srv.Port), "--user", srv.User,
		"--identity", srv.ClientKeyPath, "--known-hosts", srv.KnownHostsPath)
	// A window that opens in a year: the priority-5 task waits for it.
	var w map[string]any
	if err := json.Unmarshal([]byte(c.ok("window", "create", "--machine", "db-01", "--cron", "0 2 1 1 *", "--tz", "Europe/Paris",
		"--duration", "3h", "-o", "json")), &w); err != nil || w["holdFrom"] != 4.0 || w["open"] != false || w["opensAt"] == nil {
		t.Fatalf("window create -o json: %v %v", w, err)
	}
	if out := c.ok("window", "list"); !strings.Contains(out, "db-01") || !strings.Contains(out, "closed, opens") || !strings.Contains(out, "4-5") {
		t.Fatalf("window list: %s", out)
	}
	low := strings.TrimSpace(c.ok("create", "task", "--machine", "db-01", "--priority", "5", "--command", "echo archived"))
	if out := c.ok("inspect", "queue", low); !strings.Contains(out, "waiting for maintenance window, opens") || !strings.Contains(out, "Europe/Paris") {
		t.Fatalf("inspect of the held task: %s", out)
	}
	var task map[string]any
	_ = json.Unmarshal([]byte(c.ok("inspect", "queue", low, "-o", "json")), &task)
	if !strings.Contains(task["waitReason"].(string), "maintenance window") {
		t.Fatalf("waitReason: %v", task["waitReason"])
	}
	c.ok("window", "delete", w["windowId"].(string))
	// Drain: the task waits, machine status says draining.
	if out := c.ok("machine", "drain", "db-01", "--reason", "disk swap"); !strings.Contains(out, "draining") {
		t.Fatalf("drain: %s", out)
	}
	if out := c.ok("machine", "status"); !strings.Contains(out, "draining") || !strings.Contains(out, "disk swap") {
		t.Fatalf("machine status: %s", out)
	}
	if out := c.ok("inspect", "queue", low); !strings.Contains(out, "draining") || !strings.Contains(out, "machine resume db-01") {
		t.Fatalf("inspect while draining: %s", out)
	}
	if out := c.ok("queue", "status"); !strings.Contains(out, "drain") || !strings.Contains(out, "db-01") {
		t.Fatalf("queue status: %s", out)
	}
	c.ok("machine", "resume", "db-01")
	// Pause: the team's tasks are accepted, none claimed.
	c.ok("queue", "pause", "--team", "default", "--reason", "freeze")
	if out := c.ok("inspect", "queue", low); !strings.Contains(out, "paused") || !strings.Contains(out, "freeze") {
		t.Fatalf("inspect while paused: %s", out)
	}
	code, _, errs := c.run("worker", "--until-empty", "--health-interval", "-1")
	if code == 0 || !strings.Contains(errs, "paused") {
		t.Fatalf("worker --until-empty with the queue paused: exit %d %s", code, errs)
	}
	c.ok("queue", "resume", "--team", "default")
	c.ok("worker", "--until-empty", "--health-interval", "-1")
	if out := c.ok("inspect", "queue", low); !strings.Contains(out, "COMPLETED") {
		t.Fatalf("after resume: %s", out)
	}
	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"window", "create", "--machine", "db-01", "--cron", "@every 2h", "--duration", "1h"}, exitInvalid, "@every"},
		{[]string{"window", "create", "--machine", "db-01", "--cron", "@daily", "--duration", "9d"}, exitInvalid, "duration"},
		{[]string{"window", "create", "--cron", "@daily", "--duration", "1h"}, exitInvalid, "--machine or --team"},
		{[]string{"window", "create", "--machine", "ghost", "--cron", "@daily", "--duration", "1h"}, exitInvalid, "ghost"},
		{[]string{"window", "delete", "nope"}, exitInvalid, "nope"}, // not an id
		{[]string{"window", "delete", "00000000-0000-0000-0000-000000000000"}, exitNotFound, "not found"},
		{[]string{"machine", "drain", "ghost"}, exitNotFound, "ghost"},
		{[]string{"queue", "pause", "--team", "nope"}, exitNotFound, "nope"},
		{[]string{"queue", "pause"}, exitInvalid, "team"},
		{[]string{"--as", "mallory", "machine", "drain", "db-01"}, exitNotFound, "not found"}, // no role in its team: as an unknown machine
		{[]string{"--as", "mallory", "queue", "pause", "--team", "default"}, exitPermission, "queue.pause"},
	} {
		code, _, errs := c.run(tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.says) {
			t.Errorf("%v: exit %d (want %d), stderr %q (want it to say %q)", tc.args, code, tc.code, errs, tc.says)
		}
	}
}
