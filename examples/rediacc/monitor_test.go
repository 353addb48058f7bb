package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// lockedBuffer is a bytes.Buffer safe for a concurrently running command.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// hookReceiver is a real HTTP server on 127.0.0.1 that accepts webhooks
// signed with secret and keeps their bodies.
type hookReceiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	bodies []map[string]any
	bad    int
}

func newHookReceiver(t *testing.T, secret string) *hookReceiver {
	h := &hookReceiver{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		defer h.mu.Unlock()
		if !rediacc.VerifyWebhookSignature([]byte(secret), body, r.Header.Get(rediacc.WebhookSignatureHeader)) {
			h.bad++
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var m map[string]any
		_ = json.Unmarshal(body, &m)
		h.bodies = append(h.bodies, m)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookReceiver) received() ([]map[string]any, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]map[string]any(nil), h.bodies...), h.bad
}

func (c cli) addMachine(srv *sshtest.OpenSSH, name string) {
	c.t.Helper()
	c.ok("machine", "add", name, "--host", srv.Host, "--port", strconv.Itoa(srv.Port), "--user", srv.User,
		"--identity", srv.ClientKeyPath, "--known-hosts", srv.KnownHostsPath)
}

func TestCLIListQueueStats(t *testing.T) {
	c := cli{t: t, dir: t.TempDir()}
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 33})
	c.addMachine(srv, "web-01")
	for _, p := range []string{"1", "1", "4"} {
		c.ok("create", "task", "--machine", "web-01", "--priority", p, "--command", "true")
	}
	var s map[string]any
	if err := json.Unmarshal([]byte(c.ok("list", "queue", "--stats", "-o", "json")), &s); err != nil {
		t.Fatal(err)
	}
	if s["pending"] != 3.0 || s["running"] != 0.0 || s["oldestPendingTaskId"] == nil {
		t.Errorf("stats JSON: %v", s)
	}
	c.ok("worker", "--until-empty")
	out := c.ok("list", "queue", "--stats")
	for _, want := range []string{"STATUS", "1 critical", "5 minimal", "COMPLETED", "TEAM", "default", "MACHINE", "web-01",
		"Oldest pending:", "Running:", "3 completed, 0 failed", "Finished per minute:", "0.60"} {
		if !strings.Contains(out, want) {
			t.Errorf("stats table lacks %q:\n%s", want, out)
		}
	}
	if code, _, errs := c.run("--as", "stranger", "list", "queue", "--stats"); code != exitPermission {
		t.Errorf("stats as a user without a role: exit %d: %s", code, errs)
	}
}

// `worker --metrics-addr 127.0.0.1:0 --alert-webhook URL` serves /metrics
// and /healthz while it runs (values move as tasks run), POSTs a signed
// webhook for a failed task, and shuts the server down when it stops.
func TestCLIWorkerMetricsAndWebhook(t *testing.T) {
	t.Setenv(envWebhookSecret, "cli-secret")
	c := cli{t: t, dir: t.TempDir()}
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 34})
	c.addMachine(srv, "web-01")
	hooks := newHookReceiver(t, "cli-secret")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr lockedBuffer
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, []string{"--data-dir", c.dir, "--log-format", "json", "worker", "--health-interval", "-1s",
			"--metrics-addr", "127.0.0.1:0", "--alert-webhook", hooks.srv.URL}, &stdout, &stderr)
	}()
	var addr string
	waitUntil(t, "the metrics server's address in the logs", func() bool {
		addr = logAttr(stderr.String(), "metrics server listening", "addr")
		return addr != ""
	})
	base := "http://" + addr
	waitUntil(t, "healthz 200", func() bool { code, _ := httpGet(t, base+"/healthz"); return code == http.StatusOK })
	if _, body := httpGet(t, base+"/metrics"); !strings.Contains(body, `rediacc_tasks_finished_total{outcome="completed"} 0`) {
		t.Errorf("metrics before any task:\n%s", body)
	}

	for range 2 {
		c.ok("create", "task", "--machine", "web-01", "--command", "true")
	}
	failing := strings.TrimSpace(c.ok("create", "task", "--machine", "web-01", "--priority", "2", "--command", "exit 5", "--failure-action", "alert"))
	waitUntil(t, "the tasks in the metrics and the webhook", func() bool {
		_, body := httpGet(t, base+"/metrics")
		got, _ := hooks.received()
		return strings.Contains(body, `rediacc_tasks_finished_total{outcome="completed"} 2`) &&
			strings.Contains(body, `rediacc_tasks_finished_total{outcome="failed"} 1`) && len(got) == 1
	})
	got, bad := hooks.received()
	if bad != 0 || got[0]["taskId"] != failing || got[0]["exitCode"] != 5.0 || got[0]["priority"] != 2.0 ||
		got[0]["machine"] != "web-01" || got[0]["team"] != "default" || got[0]["attempts"] != 1.0 || got[0]["kind"] != "task.failed" {
		t.Errorf("webhook: %v (bad signatures: %d)", got, bad)
	}
	if _, body := httpGet(t, base+"/metrics"); !strings.Contains(body, `rediacc_alert_deliveries_total{result="delivered"} 1`) {
		t.Errorf("deliveries not counted:\n%s", body)
	}

	cancel()
	if code := <-exited; code != exitOK {
		t.Fatalf("worker exit %d: %s", code, stderr.String())
	}
	if conn, err := net.Dial("tcp", addr); err == nil {
		conn.Close()
		t.Errorf("metrics server still listening on %s after the worker stopped", addr)
	}
}

func TestCLIWorkerWebhookSecret(t *testing.T) {
	t.Setenv(envWebhookSecret, "")
	c := cli{t: t, dir: t.TempDir()}
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 35})
	c.addMachine(srv, "db-01")
	hooks := newHookReceiver(t, "from-the-vault")

	if code, _, errs := c.run("worker", "--until-empty", "--alert-webhook", hooks.srv.URL); code != exitInvalid || !strings.Contains(errs, "unsigned webhooks are refused") {
		t.Errorf("no secret: exit %d, %s", code, errs)
	}
	if code, _, errs := c.run("worker", "--until-empty", "--alert-webhook-secret", "k"); code != exitInvalid || !strings.Contains(errs, "needs --alert-webhook") {
		t.Errorf("secret without webhook: exit %d, %s", code, errs)
	}
	if code, _, errs := c.run("worker", "--until-empty", "--alert-webhook", hooks.srv.URL, "--alert-webhook-secret", "hooks/missing"); code == exitOK {
		t.Errorf("missing vault key: exit %d, %s", code, errs)
	}

	f := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(f, []byte("from-the-vault"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.ok("vault", "set", "--team", "default", "hooks/signing", "--value-file", f)
	id := strings.TrimSpace(c.ok("create", "task", "--machine", "db-01", "--command", "exit 9"))
	c.ok("worker", "--until-empty", "--health-interval", "-1s", "--alert-webhook", hooks.srv.URL, "--alert-webhook-secret", "hooks/signing")
	got, bad := hooks.received() // the worker's Close drained the queue
	if bad != 0 || len(got) != 1 || got[0]["taskId"] != id || got[0]["exitCode"] != 9.0 {
		t.Errorf("webhook signed with the vault's secret: %v (bad signatures: %d)", got, bad)
	}
}

// waitUntil polls cond (a deadline of 30 s, not a timing assertion).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// logAttr finds the JSON log record with message msg and returns its
// attribute key ("" when none yet).
func logAttr(logs, msg, key string) string {
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == msg {
			s, _ := rec[key].(string)
			return s
		}
	}
	return ""
}
