package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// A webhook receiver that answers 503: the worker exits (its alert stays
// stored), `list alerts --undelivered` shows the alert waiting at the
// webhook with the receiver's answer, and the next worker delivers it once
// the receiver is back.
func TestCLIListAlertsUndelivered(t *testing.T) {
	t.Setenv(envWebhookSecret, "cli-alerts")
	var status atomic.Int32
	status.Store(http.StatusServiceUnavailable)
	var got atomic.Int32
	hooks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code := int(status.Load())
		if code == http.StatusOK {
			got.Add(1)
		}
		w.WriteHeader(code)
	}))
	defer hooks.Close()
	c := cli{t: t, dir: t.TempDir()}
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 80})
	c.addMachine(srv, "web-01")
	id := strings.TrimSpace(c.ok("create", "task", "--machine", "web-01", "--command", "exit 6", "--failure-action", "alert"))
	c.ok("worker", "--until-empty", "--health-interval", "-1s", "--alert-webhook", hooks.URL)

	var rs []map[string]any
	if err := json.Unmarshal([]byte(c.ok("list", "alerts", "--undelivered", "-o", "json")), &rs); err != nil || len(rs) != 1 {
		t.Fatalf("list alerts --undelivered: %v %v", rs, err)
	}
	a := rs[0]
	if a["taskId"] != id || a["kind"] != rediacc.AlertTaskFailed || a["id"] == "" || a["exitCode"] != 6.0 {
		t.Errorf("alert JSON: %v", a)
	}
	states := map[string]string{}
	for _, d := range a["deliveries"].([]any) {
		d := d.(map[string]any)
		states[d["endpoint"].(string)] = d["state"].(string)
		if strings.HasPrefix(d["endpoint"].(string), "webhook:") &&
			(d["attempts"].(float64) < 1 || !strings.Contains(d["lastError"].(string), "503") || d["nextAttemptAt"] == nil) {
			t.Errorf("webhook delivery: %v", d)
		}
	}
	if len(states) != 2 || states["log"] != rediacc.AlertDelivered {
		t.Errorf("delivery states: %v", states)
	}
	table := c.ok("list", "alerts")
	for _, want := range []string{"ALERT ID", id, "task.failed", "1/2", "NOT DELIVERED", "webhook:", "pending", "HTTP 503"} {
		if !strings.Contains(table, want) {
			t.Errorf("list alerts table lacks %q:\n%s", want, table)
		}
	}
	for _, bad := range [][]string{{"list", "alerts", "--limit", "-1"}, {"list", "alerts", "-o", "yaml"}, {"list", "alerts", "extra"}} {
		if code, _, _ := c.run(bad...); code != exitInvalid {
			t.Errorf("%v: exit %d, want %d", bad, code, exitInvalid)
		}
	}
	if code, _, errs := c.run("--as", "stranger", "list", "alerts"); code != exitPermission {
		t.Errorf("list alerts as a user without a role: exit %d: %s", code, errs)
	}

	status.Store(http.StatusOK)
	c.ok("worker", "--until-empty", "--health-interval", "-1s", "--alert-webhook", hooks.URL)
	if n := got.Load(); n != 1 {
		t.Errorf("the receiver got %d alerts after it recovered, want 1", n)
	}
	if out := strings.TrimSpace(c.ok("list", "alerts", "--undelivered", "-o", "json")); out != "[]" {
		t.Errorf("undelivered after the second worker: %s", out)
	}
}
