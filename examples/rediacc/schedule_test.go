package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/rediacc/rediacc/ssh/sshtest"
)

// The schedule commands end to end on a real sshd: create, list, show,
// trigger (run now), the worker running the task, history, inspect
// showing the link, pause, resume, update, delete; and their exit codes.
func TestCLISchedules(t *testing.T) {
	c := cli{t: t, dir: t.TempDir()}
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 14})
	c.ok("machine", "add", "db-01", "--host", srv.Host, "--port", strconv.Itoa(srv.Port), "--user", srv.User,
		"--identity", srv.ClientKeyPath, "--known-hosts", srv.KnownHostsPath)
	out := c.ok("schedule", "create", "nightly-backup", "--cron", "0 2 * * *", "--tz", "Europe/Paris", "--machine", "db-01",
		"--priority", "1", "--command", "echo backed up", "--missed", "run-once", "--overlap", "cancel-previous")
	if !strings.Contains(out, "nightly-backup created") || !strings.Contains(out, "next fire") {
		t.Fatalf("create: %s", out)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(c.ok("schedule", "list", "-o", "json")), &list); err != nil || len(list) != 1 {
		t.Fatalf("list -o json: %v %v", list, err)
	}
	s := list[0]
	if s["name"] != "nightly-backup" || s["cron"] != "0 2 * * *" || s["timeZone"] != "Europe/Paris" || s["machine"] != "db-01" ||
		s["priority"] != 1.0 || s["missedRun"] != "run-once" || s["overlap"] != "cancel-previous" || s["nextFireAt"] == nil || s["owner"] == "" {
		t.Fatalf("schedule JSON: %v", s)
	}
	if table := c.ok("schedule", "list"); !strings.Contains(table, "NEXT FIRE") || !strings.Contains(table, "Europe/Paris") || !strings.Contains(table, "active") {
		t.Fatalf("list table: %s", table)
	}
	id := strings.TrimSpace(c.ok("schedule", "trigger", "nightly-backup"))
	if len(id) != 36 {
		t.Fatalf("trigger printed %q", id)
	}
	c.ok("worker", "--until-empty", "--health-interval", "-1s")
	var task map[string]any
	if err := json.Unmarshal([]byte(c.ok("inspect", "queue", id, "-o", "json")), &task); err != nil {
		t.Fatal(err)
	}
	if task["status"] != "COMPLETED" || task["schedule"] != "nightly-backup" || task["scheduleId"] != s["scheduleId"] || task["scheduledAt"] == nil {
		t.Fatalf("scheduled task: %v", task)
	}
	if out := c.ok("inspect", "queue", id); !strings.Contains(out, "Schedule:") || !strings.Contains(out, "nightly-backup") {
		t.Fatalf("inspect: %s", out)
	}
	if out := c.ok("schedule", "history", "nightly-backup"); !strings.Contains(out, "manual") || !strings.Contains(out, id) {
		t.Fatalf("history: %s", out)
	}
	if out := c.ok("schedule", "show", "nightly-backup"); !strings.Contains(out, "COMPLETED") || !strings.Contains(out, "cancel-previous") {
		t.Fatalf("show: %s", out)
	}
	if out := c.ok("schedule", "pause", "nightly-backup"); !strings.Contains(out, "paused") {
		t.Fatalf("pause: %s", out)
	}
	if out := c.ok("schedule", "list"); !strings.Contains(out, "paused") {
		t.Fatalf("list after pause: %s", out)
	}
	if out := c.ok("schedule", "resume", "nightly-backup"); !strings.Contains(out, "next fire") {
		t.Fatalf("resume: %s", out)
	}
	if out := c.ok("schedule", "update", "nightly-backup", "--cron", "30 3 * * *", "--command", "echo v2"); !strings.Contains(out, "30 3 * * *") {
		t.Fatalf("update: %s", out)
	}
	var shown map[string]any
	_ = json.Unmarshal([]byte(c.ok("schedule", "show", "nightly-backup", "-o", "json")), &shown)
	if shown["command"] != "echo v2" || shown["machine"] != "db-01" || shown["priority"] != 1.0 || shown["missedRun"] != "run-once" {
		t.Fatalf("after update (unchanged flags kept): %v", shown)
	}
	c.ok("team", "create", "prod")
	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"schedule", "create", "x", "--cron", "0 2 * *", "--machine", "db-01", "--command", "true"}, exitInvalid, "5 fields"},
		{[]string{"schedule", "create", "x", "--cron", "0 2 * * *", "--tz", "Mars/Base", "--machine", "db-01", "--command", "true"}, exitInvalid, "Mars/Base"},
		{[]string{"schedule", "create", "x", "--cron", "0 2 * * *", "--machine", "ghost", "--command", "true"}, exitInvalid, "ghost"},
		{[]string{"schedule", "create", "x", "--cron", "0 2 * * *", "--machine", "db-01", "--command", "true", "--overlap", "maybe"}, exitInvalid, "overlap"},
		{[]string{"schedule", "create", "x", "--machine", "db-01", "--command", "true"}, exitInvalid, "--cron"},
		{[]string{"schedule", "create", "nightly-backup", "--cron", "@daily", "--machine", "db-01", "--command", "true"}, exitError, "already exists"},
		{[]string{"schedule", "pause", "ghost"}, exitNotFound, "ghost"},
		{[]string{"schedule", "trigger", "ghost"}, exitNotFound, "ghost"},
		{[]string{"--as", "mallory", "schedule", "create", "m", "--cron", "@daily", "--team", "prod", "--command", "true"}, exitPermission, "mallory"},
		{[]string{"--as", "mallory", "schedule", "delete", "nightly-backup"}, exitNotFound, "not found"}, // no role in its team: as an unknown one
		{[]string{"schedule"}, exitInvalid, "subcommand"},
	} {
		code, _, errs := c.run(tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.says) {
			t.Errorf("%v: exit %d (want %d), stderr %q (want it to say %q)", tc.args, code, tc.code, errs, tc.says)
		}
	}
	c.ok("schedule", "delete", "nightly-backup")
	if out := c.ok("schedule", "list", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("list after delete: %s", out)
	}
}
