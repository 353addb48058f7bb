package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rediacc/rediacc/ssh/sshtest"
)

// startWorker runs `rediacc worker` on c's data dir until the test ends.
func startWorker(t *testing.T, c cli) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--data-dir", c.dir, "--log-format", "json", "--log-level", "error", "worker",
			"--busy-cpu", "101", "--busy-mem", "101"}, io.Discard, io.Discard)
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("worker exited %d", code)
		}
	})
}

func addMachine(c cli, name, team string, srv *sshtest.OpenSSH, labels ...string) {
	args := []string{"machine", "add", name, "--team", team, "--host", srv.Host, "--port", strconv.Itoa(srv.Port), "--user", srv.User,
		"--identity", srv.ClientKeyPath, "--known-hosts", srv.KnownHostsPath}
	for _, l := range labels {
		args = append(args, "--label", l)
	}
	c.ok(args...)
}

// machine status (before and after probing), create task --team --selector
// --all --wait (plain progress lines when stdout is not a terminal, then a
// per-machine result table), create batch (all or none, errors name the
// line), logs before and after prune, audit verify after prune.
func TestCLIStatusFanOutBatchLogs(t *testing.T) {
	c := cli{t: t, dir: t.TempDir()}
	c.ok("team", "create", "prod")
	srvs := map[string]*sshtest.OpenSSH{}
	for i, name := range []string{"web-1", "web-2", "db-1"} {
		srvs[name] = sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 40 + i})
		role := "role=web"
		if name == "db-1" {
			role = "role=db"
		}
		addMachine(c, name, "prod", srvs[name], role)
	}
	out := c.ok("machine", "status")
	for _, want := range []string{"MACHINE", "CPU %", "LOAD/CORE", "MEM %", "DISK %", "RUNNING", "LAST SEEN", "unknown"} {
		if !strings.Contains(out, want) {
			t.Errorf("machine status lacks %q:\n%s", want, out)
		}
	}
	var sts []map[string]any
	if err := json.Unmarshal([]byte(c.ok("machine", "status", "--probe", "-o", "json")), &sts); err != nil || len(sts) != 3 {
		t.Fatalf("machine status --probe -o json: %v %v", sts, err)
	}
	for _, s := range sts {
		if s["sample"] == nil || s["lastSeen"] == nil || s["healthy"] != true {
			t.Errorf("probed status: %v", s)
		}
	}
	table := c.ok("machine", "status", "--team", "prod")
	if !regexp.MustCompile(`web-1\s+prod\s+\d+\.\d\s+\d+\.\d\d\s+\d+\.\d\s+\d+\.\d\s+0\s+0\s+(just now|\d+s ago)`).MatchString(table) {
		t.Errorf("machine status table:\n%s", table)
	}
	t.Logf("machine status:\n%s", table)

	startWorker(t, c)
	out = c.ok("create", "task", "--team", "prod", "--selector", "role=web", "--all", "--command", "sleep 0.2; echo $SSH_CONNECTION", "--wait")
	t.Logf("create task --all --wait:\n%s", out)
	if !strings.Contains(out, "progress: 2/2 done (2 completed, 0 failed, 0 cancelled), 0 running") {
		t.Errorf("no final progress line:\n%s", out)
	}
	var ids []string
	for _, m := range []string{"web-1", "web-2"} {
		re := regexp.MustCompile(m + `\s+([0-9a-f-]{36})\s+COMPLETED\s+0\s+\S+\s+\S+ \d+ ` + regexp.QuoteMeta(srvs[m].Host) + ` `)
		mm := re.FindStringSubmatch(out)
		if mm == nil {
			t.Errorf("no result line for %s:\n%s", m, out)
			continue
		}
		ids = append(ids, mm[1])
	}
	if strings.Contains(out, "db-1") {
		t.Errorf("the db machine got a web task:\n%s", out)
	}
	if code, _, errs := c.run("create", "task", "--team", "prod", "--selector", "role=cache", "--all", "--command", "true"); code != exitInvalid || !strings.Contains(errs, "role=cache") {
		t.Errorf("fan-out to no machine: exit %d %s", code, errs)
	}

	// create batch: a bad line names its line and queues nothing.
	file := filepath.Join(t.TempDir(), "tasks.jsonl")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	count := func() int {
		var l []any
		if err := json.Unmarshal([]byte(c.ok("list", "queue", "-o", "json")), &l); err != nil {
			t.Fatal(err)
		}
		return len(l)
	}
	before := count()
	write(`{"machine": "db-1", "command": "echo batch one"}

{"team": "prod", "selector": {"role": "web"}, "command": "echo batch two", "priority": 2}
{"machine": "db-1", "command": "", "retryCount": 1}
`)
	if code, _, errs := c.run("create", "batch", "-f", file); code != exitInvalid || !strings.Contains(errs, "line 4") || !strings.Contains(errs, "command") {
		t.Errorf("bad batch: exit %d, stderr %s", code, errs)
	}
	write("{\"machine\": \"db-1\",\n")
	if code, _, errs := c.run("create", "batch", "-f", file); code != exitInvalid || !strings.Contains(errs, "line 1") {
		t.Errorf("unreadable batch: exit %d, stderr %s", code, errs)
	}
	if n := count(); n != before {
		t.Fatalf("failed batches queued %d tasks", n-before)
	}
	write(`{"machine": "db-1", "command": "echo batch one"}
{"taskId": "batch-two", "team": "prod", "selector": {"role": "web"}, "command": "echo batch two", "priority": 2, "retryCount": 2, "retryDelay": 1}
`)
	out = c.ok("create", "batch", "-f", file, "--wait")
	if !strings.Contains(out, "progress: 2/2 done") || strings.Count(out, "COMPLETED") != 2 || !strings.Contains(out, "batch two") {
		t.Errorf("batch --wait:\n%s", out)
	}
	c.ok("create", "batch", "-f", file) // batch-two is not queued twice; batch one is
	if n := count(); n != before+3 {
		t.Errorf("%d tasks queued by the batches, want 3", n-before)
	}

	// logs, then prune, then logs from the archive.
	if got := c.ok("logs", ids[0]); !strings.Contains(got, srvs["web-1"].Host+" ") {
		t.Errorf("logs before prune: %q", got)
	}
	deadline := time.Now().Add(30 * time.Second)
	for { // the last batch task must finish before pruning everything
		var l []any
		_ = json.Unmarshal([]byte(c.ok("list", "queue", "--status", "pending,assigned,processing", "-o", "json")), &l)
		if len(l) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, _, errs := c.run("--as", "nobody", "prune", "--older-than", "0s"); code != exitPermission {
		t.Errorf("prune by a non-owner: exit %d %s", code, errs)
	}
	out = c.ok("prune", "--older-than", "0s")
	if !strings.Contains(out, "tasks deleted") {
		t.Errorf("prune: %s", out)
	}
	if code, _, _ := c.run("inspect", "queue", ids[0]); code != exitNotFound {
		t.Errorf("inspect after prune: exit %d, want %d", code, exitNotFound)
	}
	if got := c.ok("logs", ids[1]); !strings.Contains(got, srvs["web-2"].Host+" ") {
		t.Errorf("logs after prune: %q", got)
	}
	var task map[string]any
	if err := json.Unmarshal([]byte(c.ok("logs", ids[1], "-o", "json")), &task); err != nil || task["status"] != "COMPLETED" || task["machine"] != "web-2" {
		t.Errorf("logs -o json after prune: %v %v", task, err)
	}
	if out := c.ok("audit", "verify"); !strings.Contains(strings.ToLower(out), "intact") {
		t.Errorf("audit verify after prune: %s", out)
	}
	if code, _, _ := c.run("logs", "00000000-0000-0000-0000-000000000000"); code != exitNotFound {
		t.Errorf("logs of an unknown task: exit %d", code)
	}
}
