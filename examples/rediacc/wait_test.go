package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/rediacc/rediacc/ssh/sshtest"
)

// Duration flags take a unit; a bare number only where it is unambiguous
// (-1 for "off", 0 where zero is allowed).
func TestCLIDurationFlags(t *testing.T) {
	c := cli{t: t, dir: t.TempDir()}
	c.ok("team", "create", "prod") // creates the store
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"worker", "--until-empty", "--health-interval", "30"}, `"30" has no unit: write a duration with its unit, such as 90s, 10m or 1h30m, or -1 for no probes`},
		{[]string{"worker", "--until-empty", "--health-interval", "0"}, `"0" has no unit`},
		{[]string{"worker", "--until-empty", "--health-interval", "0s"}, `"0s" is zero`},
		{[]string{"worker", "--until-empty", "--max-hold", "soon"}, `"soon" is not a duration`},
		{[]string{"create", "task", "--machine", "m", "--command", "true", "--timeout", "90"}, `"90" has no unit`},
		{[]string{"create", "task", "--machine", "m", "--command", "true", "--timeout", "-5s"}, `"-5s" is negative`},
		{[]string{"worker", "--until-empty", "--team-weight", "prod=0"}, `weights are 1..1000`},
	} {
		code, _, errs := c.run(tc.args...)
		if code != exitInvalid || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, errs, exitInvalid, tc.want)
		}
	}
	c.ok("worker", "--until-empty", "--health-interval", "-1", "--max-hold", "-1", "--health-smoothing", "0")
	c.ok("worker", "--until-empty", "--health-interval", "-1s", "--team-weight", "default=3")
	c.ok("prune", "--older-than", "0")
}

// worker --until-empty exits 1, naming the tasks left and why, when they
// are another team's; inspect queue says why a task waits.
func TestCLIUntilEmptyHeld(t *testing.T) {
	c := cli{t: t, dir: t.TempDir()}
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 36})
	c.ok("team", "create", "web")
	c.ok("team", "create", "ops")
	c.ok("team", "member", "add", "ops", "olga", "--role", "operator")
	addMachine(c, "web-1", "web", srv)
	id := strings.TrimSpace(c.ok("create", "task", "--machine", "web-1", "--command", "true"))
	if out := c.ok("inspect", "queue", id); !strings.Contains(out, "Waiting:") || !strings.Contains(out, "ready: waiting for a worker with a free slot") {
		t.Errorf("inspect queue of a waiting task:\n%s", out)
	}
	var task map[string]any
	if err := json.Unmarshal([]byte(c.ok("inspect", "queue", id, "-o", "json")), &task); err != nil ||
		task["waitReason"] != "ready: waiting for a worker with a free slot" {
		t.Errorf("inspect -o json: waitReason %v (%v)", task["waitReason"], err)
	}
	code, _, errs := c.run("--as", "olga", "worker", "--until-empty")
	if code != exitError || !strings.Contains(errs, "1 task(s) left that this worker cannot run") ||
		!strings.Contains(errs, "1 task(s) of teams whose queue this worker's user may not see") || strings.Contains(errs, id) || strings.Contains(errs, "web") {
		t.Errorf("worker --until-empty with the task of a team olga may not see: exit %d\n%s", code, errs)
	}
	c.ok("team", "member", "add", "web", "olga", "--role", "viewer")
	code, _, errs = c.run("--as", "olga", "worker", "--until-empty")
	if code != exitError || !strings.Contains(errs, id+" (team web, machine web-1, priority 3): this worker (acting as olga) may not run team web's tasks") {
		t.Errorf("worker --until-empty with the task of a team olga views: exit %d\n%s", code, errs)
	}
	c.ok("worker", "--until-empty") // the owner runs it
}
