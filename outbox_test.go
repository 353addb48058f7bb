package rediacc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
)

// The alert outbox against a real HTTP receiver on 127.0.0.1 and real sshd
// machines: alerts survive a receiver that is down, a stopped and a killed
// worker; they are delivered concurrently once it recovers, once at a time
// by workers sharing a store; a backlog shows in the metrics and in
// ListAlerts.

// Environment of the killed worker process (TestAlertOutboxSurvivesSIGKILL,
// TestAlertOutboxPostgresWorkerKilled).
const (
	outboxChildDir    = "REDIACC_OUTBOX_CHILD_DIR"
	outboxChildURL    = "REDIACC_OUTBOX_CHILD_URL"
	outboxChildSecret = "REDIACC_OUTBOX_CHILD_SECRET"
	// Optional: a store URL (PostgreSQL), the worker id, the audit keyring
	// file, and the worker's lease, also its webhook's timeout (a
	// time.Duration string; default 1m).
	outboxChildStore    = "REDIACC_OUTBOX_CHILD_STORE"
	outboxChildWorkerID = "REDIACC_OUTBOX_CHILD_WORKER_ID"
	outboxChildAuditKey = "REDIACC_OUTBOX_CHILD_AUDIT_KEY"
	outboxChildLease    = "REDIACC_OUTBOX_CHILD_LEASE"
)

// init turns the test binary into a worker that delivers alerts to a
// webhook, until it is killed, when outboxChildDir is set.
func init() {
	dir := os.Getenv(outboxChildDir)
	if dir == "" {
		return
	}
	lease := time.Minute
	if v := os.Getenv(outboxChildLease); v != "" {
		var err error
		if lease, err = time.ParseDuration(v); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(2)
		}
	}
	wh, err := rediacc.NewWebhookAlerter(rediacc.WebhookConfig{URL: os.Getenv(outboxChildURL), Secret: []byte(os.Getenv(outboxChildSecret)),
		InitialInterval: 50 * time.Millisecond, MaxInterval: 300 * time.Millisecond, Timeout: lease})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	c, err := rediacc.New(asOwner(), rediacc.Config{DataDir: dir, StoreURL: os.Getenv(outboxChildStore), WorkerID: os.Getenv(outboxChildWorkerID),
		AuditKeyFile: os.Getenv(outboxChildAuditKey), Logger: slog.New(slog.DiscardHandler), PollInterval: 20 * time.Millisecond,
		LeaseDuration: lease, Health: rediacc.HealthConfig{Interval: -1}, Alerter: wh})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	_ = c.Run(asOwner())
	os.Exit(0)
}

// hookBody is the part of a webhook body the outbox tests read.
type hookBody struct {
	ID         string `json:"id"`
	Kind       string `json:"kind"`
	TaskID     string `json:"taskId"`
	Team       string `json:"team"`
	Suppressed int    `json:"suppressed"`
}

// outboxSink is a real HTTP receiver that checks signatures, answers with
// a status that the test switches, and records every alert id it
// acknowledged, how many requests ran at once, and whether two requests
// for one alert ever overlapped.
type outboxSink struct {
	t      *testing.T
	srv    *httptest.Server
	secret []byte

	status atomic.Int32                 // answer to every request; 0 = hang until released
	bad    func(b hookBody) bool        // these alerts get 500 whatever the status
	delay  time.Duration                // before answering 2xx
	hang   chan struct{}                // closed to release hanging requests (they then get 503)
	hangMu sync.Mutex                   // guards hang
	seen   func(b hookBody, status int) // optional observer

	mu          sync.Mutex
	requests    int
	byStatus    map[int]int
	inflight    int
	maxInflight int
	inflightID  map[string]int
	overlaps    int
	ok          map[string]int // 2xx answers per alert id
	bodies      map[string]hookBody
	okTimes     []time.Time
	badHeaders  int
}

func newOutboxSink(t *testing.T, secret string) *outboxSink {
	s := &outboxSink{t: t, secret: []byte(secret), byStatus: map[int]int{}, inflightID: map[string]int{},
		ok: map[string]int{}, bodies: map[string]hookBody{}, hang: make(chan struct{})}
	s.status.Store(http.StatusOK)
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(func() {
		s.release()
		s.srv.Close()
	})
	return s
}

// release lets hanging requests end (with 503).
func (s *outboxSink) release() {
	s.hangMu.Lock()
	defer s.hangMu.Unlock()
	select {
	case <-s.hang:
	default:
		close(s.hang)
	}
}

func (s *outboxSink) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if !rediacc.VerifyWebhookSignature(s.secret, body, r.Header.Get(rediacc.WebhookSignatureHeader)) {
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var b hookBody
	if err := json.Unmarshal(body, &b); err != nil {
		s.t.Errorf("webhook body: %v: %s", err, body)
	}
	s.mu.Lock()
	s.requests++
	if b.ID == "" || r.Header.Get(rediacc.WebhookDeliveryHeader) != b.ID || r.Header.Get(rediacc.WebhookEventHeader) != b.Kind {
		s.badHeaders++
	}
	s.inflight++
	if s.status.Load() == http.StatusOK {
		s.maxInflight = max(s.maxInflight, s.inflight) // peak of the deliveries being accepted
	}
	s.inflightID[b.ID]++
	if s.inflightID[b.ID] > 1 {
		s.overlaps++
	}
	s.mu.Unlock()
	code := int(s.status.Load())
	switch {
	case s.bad != nil && s.bad(b):
		code = http.StatusInternalServerError
	case code == 0:
		select {
		case <-s.hang:
		case <-r.Context().Done(): // the client gave up
		}
		code = http.StatusServiceUnavailable
	case code == http.StatusOK && s.delay > 0:
		time.Sleep(s.delay) // lets concurrent deliveries overlap here
	}
	s.mu.Lock()
	s.inflight--
	s.inflightID[b.ID]--
	s.byStatus[code]++
	if code == http.StatusOK {
		s.ok[b.ID]++
		s.bodies[b.ID] = b
		s.okTimes = append(s.okTimes, time.Now())
	}
	s.mu.Unlock()
	if s.seen != nil {
		s.seen(b, code)
	}
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "0")
	}
	w.WriteHeader(code)
}

// delivered returns how many distinct alerts were acknowledged.
func (s *outboxSink) delivered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ok)
}

func (s *outboxSink) count() (requests int, byStatus map[int]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int]int{}
	for k, v := range s.byStatus {
		out[k] = v
	}
	return s.requests, out
}

// check reports duplicates, overlapping requests for one alert and bad
// headers.
func (s *outboxSink) check(t *testing.T, wantExactlyOnce bool) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.overlaps > 0 {
		t.Errorf("%d requests for an alert arrived while another for the same alert was in flight", s.overlaps)
	}
	if s.badHeaders > 0 {
		t.Errorf("%d requests whose delivery id or event header did not match the body", s.badHeaders)
	}
	if wantExactlyOnce {
		for id, n := range s.ok {
			if n != 1 {
				t.Errorf("alert %s acknowledged %d times, want once", id, n)
			}
		}
	}
}

// outboxWebhook makes a webhook alerter to s with quick backoff.
func outboxWebhook(t *testing.T, s *outboxSink) *rediacc.WebhookAlerter {
	t.Helper()
	wh, err := rediacc.NewWebhookAlerter(rediacc.WebhookConfig{URL: s.srv.URL + "/hook?token=abc", Secret: s.secret,
		InitialInterval: 50 * time.Millisecond, MaxInterval: 300 * time.Millisecond, Timeout: 5 * time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = wh.Close(context.Background()) })
	return wh
}

// failingTasks submits n tasks that fail at once (exit 3, no retry, alert).
func failingTasks(t *testing.T, c *rediacc.Client, machine string, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		task := submit(t, c, rediacc.TaskSpec{Machine: machine, Command: fmt.Sprintf("echo failing %d >&2; exit 3", i)})
		ids = append(ids, task.ID)
	}
	return ids
}

// startWorker runs c.Run until the returned stop is called.
func startWorker(t *testing.T, c *rediacc.Client) (stop func()) {
	ctx, cancel := context.WithCancel(asOwner())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func waitFailed(t *testing.T, c *rediacc.Client, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d FAILED tasks", n), func() bool {
		ts, err := c.List(asOwner(), rediacc.ListFilter{Statuses: []rediacc.Status{rediacc.StatusFailed}})
		return err == nil && len(ts) == n
	})
}

// waitSettled waits until the store records every alert as delivered (a
// receiver counts an alert before the worker reads its answer).
func waitSettled(t *testing.T, c *rediacc.Client) {
	t.Helper()
	waitFor(t, "the deliveries recorded in the store", func() bool { return len(undelivered(t, c)) == 0 })
}

func undelivered(t *testing.T, c *rediacc.Client) []rediacc.AlertRecord {
	t.Helper()
	rs, err := c.ListAlerts(asOwner(), rediacc.AlertFilter{Undelivered: true})
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// webhookEndpoint returns the name of the webhook endpoint among rs's deliveries.
func webhookEndpoint(t *testing.T, rs []rediacc.AlertRecord) string {
	t.Helper()
	for _, r := range rs {
		for _, d := range r.Deliveries {
			if strings.HasPrefix(d.Endpoint, "webhook:") {
				if strings.Contains(d.Endpoint, "token") || strings.Contains(d.Endpoint, "/hook") {
					t.Errorf("endpoint name %q shows the URL's path or query", d.Endpoint)
				}
				return d.Endpoint
			}
		}
	}
	t.Fatalf("no webhook delivery in %+v", rs)
	return ""
}

// The case: the receiver answers 503 while 20 tasks fail. Every
// alert is stored with its task's failure and waits (the backlog shows in
// the metrics and in ListAlerts) while the endpoint backs off as a whole;
// once the receiver recovers, all 20 arrive, concurrently, each once.
func TestAlertOutboxReceiverDownThenUp(t *testing.T) {
	sink := newOutboxSink(t, "outbox-secret")
	sink.status.Store(http.StatusServiceUnavailable)
	sink.delay = 100 * time.Millisecond
	c := newClient(t, func(cfg *rediacc.Config) { cfg.Alerter = outboxWebhook(t, sink) })
	realMachine(t, c, "m1", 70)
	ids := failingTasks(t, c, "m1", 20)
	scrape := serveMetrics(t, c)
	stop := startWorker(t, c)
	waitFailed(t, c, 20)
	waitFor(t, "the receiver to refuse a delivery", func() bool { n, _ := sink.count(); return n >= 1 })

	rs := undelivered(t, c)
	if len(rs) != 20 {
		t.Fatalf("%d undelivered alerts while the receiver is down, want 20", len(rs))
	}
	ep := webhookEndpoint(t, rs)
	for _, r := range rs {
		if r.ID == "" || r.Kind != rediacc.AlertTaskFailed || !slices.Contains(ids, r.TaskID) || r.ExitCode == nil || *r.ExitCode != 3 {
			t.Errorf("stored alert: %+v", r.Alert)
		}
	}
	m := scrape()
	if got := m[`rediacc_alerts_undelivered{endpoint="`+ep+`"}`]; got != 20 {
		t.Errorf("rediacc_alerts_undelivered for %s = %v, want 20", ep, got)
	}
	if m[`rediacc_alert_oldest_undelivered_age_seconds{endpoint="`+ep+`"}`] <= 0 {
		t.Errorf("oldest undelivered age not positive: %v", m)
	}
	outage, _ := sink.count()

	recovered := time.Now()
	sink.status.Store(http.StatusOK)
	waitFor(t, "all 20 alerts at the recovered receiver", func() bool { return sink.delivered() == 20 })
	waitSettled(t, c)
	stop()
	sink.check(t, true)
	sink.mu.Lock()
	first, last, most := sink.okTimes[0], sink.okTimes[len(sink.okTimes)-1], sink.maxInflight
	sink.mu.Unlock()
	t.Logf("outage: %d requests for 20 alerts; after recovery: first delivery %s later, all 20 within %s (spread %s), up to %d requests at once",
		outage, first.Sub(recovered).Round(time.Millisecond), last.Sub(recovered).Round(time.Millisecond), last.Sub(first).Round(time.Millisecond), most)
	if most < 2 {
		t.Errorf("deliveries after the recovery never overlapped (at most %d at once): not concurrent", most)
	}
	if rs := undelivered(t, c); len(rs) != 0 {
		t.Errorf("%d alerts still undelivered", len(rs))
	}
	if got := scrape()[`rediacc_alerts_undelivered{endpoint="`+ep+`"}`]; got != 0 {
		t.Errorf("backlog after delivery: %v", got)
	}
	all, err := c.ListAlerts(asOwner(), rediacc.AlertFilter{})
	if err != nil || len(all) != 20 {
		t.Fatalf("ListAlerts: %d, %v", len(all), err)
	}
	for _, r := range all {
		if !r.Delivered() || len(r.Deliveries) != 1 || r.Deliveries[0].Attempts < 1 || r.Deliveries[0].DoneAt.IsZero() {
			t.Errorf("alert %s deliveries: %+v", r.ID, r.Deliveries)
		}
		if b := sink.bodies[r.ID]; b.TaskID != r.TaskID || b.Kind != rediacc.AlertTaskFailed {
			t.Errorf("received body for %s: %+v", r.ID, b)
		}
	}
	// Delivered alerts leave the store with Prune.
	if res, err := c.Prune(asOwner(), 0); err != nil || res.AlertsDeleted != 20 {
		t.Errorf("Prune: %+v, %v; want 20 alerts deleted", res, err)
	}
	if rs, err := c.ListAlerts(asOwner(), rediacc.AlertFilter{}); err != nil || len(rs) != 0 {
		t.Errorf("alerts after Prune: %d, %v", len(rs), err)
	}
}

// A worker stopped while the receiver is down leaves its alerts in the
// store (Close drains for AlertDrainTimeout, then gives up waiting, not the
// alerts); the next worker on the same store delivers all of them.
func TestAlertOutboxSurvivesStop(t *testing.T) {
	sink := newOutboxSink(t, "outbox-secret")
	sink.status.Store(http.StatusServiceUnavailable)
	dir := t.TempDir()
	tune := func(cfg *rediacc.Config) {
		cfg.DataDir = dir
		cfg.Alerter = outboxWebhook(t, sink)
		cfg.AlertDrainTimeout = 300 * time.Millisecond
	}
	c1 := newClient(t, tune)
	realMachine(t, c1, "m1", 71)
	failingTasks(t, c1, "m1", 20)
	if err := c1.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := c1.Close(); err != nil {
		t.Fatalf("Close with undelivered alerts: %v", err)
	}
	if n := sink.delivered(); n != 0 {
		t.Fatalf("%d alerts delivered to a receiver that answers 503", n)
	}

	c2 := newClient(t, tune)
	if rs := undelivered(t, c2); len(rs) != 20 {
		t.Fatalf("after the stop: %d undelivered alerts in the store, want 20", len(rs))
	}
	sink.status.Store(http.StatusOK)
	stop := startWorker(t, c2)
	waitFor(t, "all 20 alerts after the restart", func() bool { return sink.delivered() == 20 })
	waitSettled(t, c2)
	stop()
	sink.check(t, true)
	if rs := undelivered(t, c2); len(rs) != 0 {
		t.Errorf("%d alerts still undelivered", len(rs))
	}
}

// A worker killed with SIGKILL while deliveries are in flight (the
// receiver holds them) and others wait: a new worker on the same store
// takes the dead worker's leases back at once (its process is gone) and
// delivers every alert.
func TestAlertOutboxSurvivesSIGKILL(t *testing.T) {
	sink := newOutboxSink(t, "kill-secret")
	sink.status.Store(0) // hang: deliveries stay in flight
	dir := t.TempDir()
	ctx := asOwner()
	c, err := rediacc.New(ctx, rediacc.Config{DataDir: dir, Logger: testLogger(t), PollInterval: 20 * time.Millisecond,
		LeaseDuration: time.Minute, Health: rediacc.HealthConfig{Interval: -1}, Alerter: outboxWebhook(t, sink)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	realMachine(t, c, "m1", 72)
	failingTasks(t, c, "m1", 20)

	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), outboxChildDir+"="+dir, outboxChildURL+"="+sink.srv.URL+"/hook?token=abc",
		outboxChildSecret+"=kill-secret")
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	waitFailed(t, c, 20)
	waitFor(t, "deliveries in flight at the receiver", func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return sink.inflight >= 2
	})
	sink.mu.Lock()
	held := sink.inflight
	sink.mu.Unlock()
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	sink.status.Store(http.StatusOK)
	sink.release() // the dead worker's requests end with 503
	if rs := undelivered(t, c); len(rs) != 20 {
		t.Fatalf("after SIGKILL: %d undelivered alerts, want 20", len(rs))
	}
	t.Logf("killed the worker with %d deliveries in flight", held)

	// The leases run for a minute and more; the waits below are shorter.
	stop := startWorker(t, c)
	waitFor(t, "all 20 alerts after the kill", func() bool { return sink.delivered() == 20 })
	waitSettled(t, c)
	stop()
	sink.check(t, true)
	if rs := undelivered(t, c); len(rs) != 0 {
		t.Errorf("%d alerts still undelivered", len(rs))
	}
}

// Two workers sharing one store (and one webhook endpoint) deliver each
// alert once, never both at the same time.
func TestAlertOutboxTwoWorkersOneStore(t *testing.T) {
	sink := newOutboxSink(t, "pair-secret")
	sink.delay = 30 * time.Millisecond
	dir := t.TempDir()
	tune := func(cfg *rediacc.Config) {
		cfg.DataDir = dir
		cfg.Alerter = outboxWebhook(t, sink)
		cfg.AlertConcurrency = 3
	}
	c1, c2 := newClient(t, tune), newClient(t, tune)
	realMachine(t, c1, "m1", 73)
	realMachine(t, c1, "m2", 74)
	failingTasks(t, c1, "m1", 20)
	failingTasks(t, c1, "m2", 20)
	m1, m2 := serveMetrics(t, c1), serveMetrics(t, c2)
	stop1, stop2 := startWorker(t, c1), startWorker(t, c2)
	waitFor(t, "all 40 alerts", func() bool { return sink.delivered() == 40 })
	waitSettled(t, c1)
	stop1()
	stop2()
	sink.check(t, true)
	count := func(m map[string]float64) float64 {
		n := 0.0
		for k, v := range m {
			if strings.HasPrefix(k, "rediacc_alert_attempts_total{") && strings.Contains(k, `result="delivered"`) {
				n += v
			}
		}
		return n
	}
	a, b := count(m1()), count(m2())
	t.Logf("deliveries: worker 1 %v, worker 2 %v", a, b)
	rs, err := c1.ListAlerts(asOwner(), rediacc.AlertFilter{})
	if err != nil {
		t.Fatal(err)
	}
	tasks := map[string]int{}
	for _, r := range rs {
		tasks[r.TaskID]++
	}
	if len(rs) != 40 || len(tasks) != 40 {
		t.Errorf("%d alerts about %d tasks, want one about each of the 40", len(rs), len(tasks))
	}
	if a+b != float64(len(rs)) {
		t.Errorf("the workers delivered %v alerts between them, want %d", a+b, len(rs))
	}
}

// A receiver that never recovers: the backlog and the oldest alert's age
// grow in the metrics and the alerts are listed as undelivered with the
// receiver's answer; after AlertMaxAge they are given up, visibly.
func TestAlertOutboxReceiverNeverRecovers(t *testing.T) {
	sink := newOutboxSink(t, "dead-secret")
	sink.status.Store(http.StatusServiceUnavailable)
	clock := &fakeClock{now: time.Now().UTC()}
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.Alerter = rediacc.FanoutAlerter(&rediacc.LogAlerter{Logger: testLogger(t)}, outboxWebhook(t, sink))
		cfg.Clock = clock
		cfg.AlertMaxAge = time.Minute // expiry checked every 6 s
	})
	realMachine(t, c, "m1", 75)
	failingTasks(t, c, "m1", 3)
	scrape := serveMetrics(t, c)
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	stop := startWorker(t, c) // keeps retrying
	waitFor(t, "a refused attempt recorded", func() bool {
		for _, r := range undelivered(t, c) {
			for _, d := range r.Deliveries {
				if d.Attempts > 0 && strings.Contains(d.LastError, "503") {
					return true
				}
			}
		}
		return false
	})
	rs := undelivered(t, c)
	ep := webhookEndpoint(t, rs)
	for _, r := range rs {
		for _, d := range r.Deliveries {
			switch {
			case d.Endpoint == "log" && d.State != rediacc.AlertDelivered:
				t.Errorf("the log endpoint waits for the webhook: %+v", d)
			case d.Endpoint == ep && (d.State != rediacc.AlertPending || d.NextAttemptAt.IsZero()):
				t.Errorf("webhook delivery: %+v", d)
			}
		}
	}
	clock.Advance(30 * time.Second)
	m := scrape()
	if m[`rediacc_alerts_undelivered{endpoint="`+ep+`"}`] != 3 || m[`rediacc_alerts_undelivered{endpoint="log"}`] != 0 {
		t.Errorf("backlog metrics: %v", m)
	}
	if age := m[`rediacc_alert_oldest_undelivered_age_seconds{endpoint="`+ep+`"}`]; age < 30 {
		t.Errorf("oldest undelivered age %v, want at least 30 s", age)
	}
	clock.Advance(time.Hour) // past AlertMaxAge
	waitFor(t, "the alerts given up after AlertMaxAge", func() bool {
		rs, err := c.ListAlerts(asOwner(), rediacc.AlertFilter{})
		if err != nil {
			return false
		}
		for _, r := range rs {
			for _, d := range r.Deliveries {
				if d.Endpoint == ep && d.State != rediacc.AlertExpired {
					return false
				}
			}
		}
		return true
	})
	stop()
	for _, r := range undelivered(t, c) {
		for _, d := range r.Deliveries {
			if d.Endpoint == ep && (!strings.Contains(d.LastError, "expired") || !strings.Contains(d.LastError, "503")) {
				t.Errorf("expired delivery's error: %q", d.LastError)
			}
		}
	}
	if got := scrape()[`rediacc_alerts_undelivered{endpoint="`+ep+`"}`]; got != 0 {
		t.Errorf("backlog after expiry: %v", got)
	}
}

// One alert its receiver refuses (500) does not hold back the others; a
// receiver that holds every request does not delay another endpoint.
func TestAlertOutboxEndpointsIndependent(t *testing.T) {
	picky := newOutboxSink(t, "picky")
	var badTask atomic.Value
	badTask.Store("")
	picky.bad = func(b hookBody) bool { return b.TaskID == badTask.Load().(string) }
	slow := newOutboxSink(t, "slow")
	slow.status.Store(0) // holds every request
	var fastMu sync.Mutex
	fast := map[string]bool{}
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.Alerter = rediacc.FanoutAlerter(
			rediacc.NameAlerter("picky", outboxWebhook(t, picky)),
			rediacc.NameAlerter("slow", outboxWebhook(t, slow)),
			rediacc.NameAlerter("fast", rediacc.AlerterFunc(func(_ context.Context, a rediacc.Alert) error {
				fastMu.Lock()
				fast[a.ID] = true
				fastMu.Unlock()
				return nil
			})))
		cfg.AlertConcurrency = 4
	})
	realMachine(t, c, "m1", 76)
	ids := failingTasks(t, c, "m1", 10)
	badTask.Store(ids[0])
	stop := startWorker(t, c)
	waitFor(t, "all 10 alerts at the fast endpoint and 9 at the picky one", func() bool {
		fastMu.Lock()
		n := len(fast)
		fastMu.Unlock()
		return n == 10 && picky.delivered() == 9
	})
	slow.mu.Lock()
	held, done := slow.inflight, len(slow.ok)
	slow.mu.Unlock()
	if done != 0 || held > 4 {
		t.Errorf("the slow receiver: %d answered, %d held (want 0, at most AlertConcurrency 4)", done, held)
	}
	waitFor(t, "the refused alert retried", func() bool {
		rs, _ := c.ListAlerts(asOwner(), rediacc.AlertFilter{TaskID: ids[0]})
		for _, r := range rs {
			for _, d := range r.Deliveries {
				if d.Endpoint == "picky" && d.Attempts >= 2 && d.State == rediacc.AlertPending && strings.Contains(d.LastError, "500") {
					return true
				}
			}
		}
		return false
	})
	slow.status.Store(http.StatusOK)
	slow.release()
	waitFor(t, "the slow receiver catching up", func() bool { return slow.delivered() == 10 })
	badTask.Store("") // the picky receiver takes it now
	waitFor(t, "the refused alert delivered at last", func() bool { return picky.delivered() == 10 })
	stop()
	picky.check(t, true)
}

// The rate limit is the store's: after a restart, a repeat within the
// window is still held back, and the alert after the window counts the
// repeats held back before and after the restart.
func TestAlertRateLimitSurvivesRestart(t *testing.T) {
	var mu sync.Mutex
	var got []rediacc.Alert
	clock := &fakeClock{now: time.Date(2026, 4, 1, 12, 0, 0, 0, time.UTC)}
	dir := t.TempDir()
	tune := func(cfg *rediacc.Config) {
		cfg.DataDir = dir
		cfg.Clock = clock
		cfg.AlertInterval = 10 * time.Millisecond
		cfg.AlertRules = []rediacc.AlertRule{{MaxPending: 1}}
		cfg.Alerter = rediacc.AlerterFunc(func(_ context.Context, a rediacc.Alert) error {
			mu.Lock()
			got = append(got, a)
			mu.Unlock()
			return nil
		})
	}
	alerts := func() []rediacc.Alert {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
	c1 := newClient(t, tune)
	owner := asOwner()
	if _, err := c1.CreateTeam(owner, "ops", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.AddMachine(owner, rediacc.Machine{Name: "far", Host: "127.0.0.77", Port: 1, User: "u",
		IdentityFile: monKeyFile(t), HostKeyPolicy: rediacc.HostKeyInsecureIgnore}); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.SetMember(owner, "ops", "runner", rediacc.RoleOperator); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		submit(t, c1, rediacc.TaskSpec{Machine: "far", Command: "true"}) // never run: the worker may not
	}
	run := func(c *rediacc.Client, enough func() bool) {
		ctx, cancel := context.WithCancel(as("runner"))
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		waitFor(t, "the rule's checks", enough)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	scrape1 := serveMetrics(t, c1)
	run(c1, func() bool { return len(alerts()) == 1 && scrape1()["rediacc_alerts_suppressed_total"] >= 3 })
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}
	before := alerts()

	c2 := newClient(t, tune)
	scrape2 := serveMetrics(t, c2)
	run(c2, func() bool { return scrape2()["rediacc_alerts_suppressed_total"] >= 3 })
	if n := len(alerts()); n != 1 {
		t.Fatalf("%d alerts after the restart within the window, want still 1: %+v", n, alerts())
	}
	clock.Advance(rediacc.DefaultAlertRateWindow)
	run(c2, func() bool { return len(alerts()) == 2 })
	a := alerts()[1]
	if a.Suppressed < 6 || a.Kind != rediacc.AlertQueueDepth || a.ID == before[0].ID {
		t.Errorf("the alert after the window: %+v, want at least 6 suppressed (3 before the restart, 3 after)", a)
	}
}

// ListAlerts shows an actor the alerts of the teams whose tasks it may
// list; store-wide alerts only to owners.
func TestListAlertsAuthorization(t *testing.T) {
	var n atomic.Int32
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.AlertInterval = 10 * time.Millisecond
		cfg.AlertRules = []rediacc.AlertRule{{Team: "prod", MaxPending: 1}, {Team: "dev", MaxPending: 1}, {MaxPending: 3}}
		cfg.Alerter = rediacc.AlerterFunc(func(context.Context, rediacc.Alert) error { n.Add(1); return nil })
	})
	owner := asOwner()
	for _, team := range []string{"prod", "dev", "ops"} {
		if _, err := c.CreateTeam(owner, team, ""); err != nil {
			t.Fatal(err)
		}
	}
	for i, team := range []string{"prod", "dev"} {
		if _, err := c.AddMachine(owner, rediacc.Machine{Name: team + "-01", Team: team, Host: fmt.Sprintf("127.0.0.%d", 78+i), Port: 1,
			User: "u", IdentityFile: monKeyFile(t), HostKeyPolicy: rediacc.HostKeyInsecureIgnore}); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			submit(t, c, rediacc.TaskSpec{Machine: team + "-01", Command: "true"})
		}
	}
	for user, m := range map[string][2]string{"runner": {"ops", "operator"}, "vera": {"prod", "viewer"}, "otto": {"dev", "operator"}} {
		if _, err := c.SetMember(owner, m[0], user, rediacc.Role(m[1])); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(as("runner"))
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	waitFor(t, "three alerts", func() bool { return n.Load() >= 3 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	list := func(ctx context.Context, f rediacc.AlertFilter) ([]string, error) {
		rs, err := c.ListAlerts(ctx, f)
		var out []string
		for _, r := range rs {
			out = append(out, r.Team)
		}
		slices.Sort(out)
		return out, err
	}
	for _, tc := range []struct {
		ctx  context.Context
		f    rediacc.AlertFilter
		want string
		err  error
	}{
		{owner, rediacc.AlertFilter{}, "[ dev prod]", nil},
		{owner, rediacc.AlertFilter{Team: "prod"}, "[prod]", nil},
		{as("vera"), rediacc.AlertFilter{}, "[prod]", nil},
		{as("otto"), rediacc.AlertFilter{}, "[dev]", nil},
		{as("otto"), rediacc.AlertFilter{Kind: rediacc.AlertQueueAge}, "[]", nil},
		{as("vera"), rediacc.AlertFilter{Team: "dev"}, "", rediacc.ErrPermissionDenied},
		{as("mallory"), rediacc.AlertFilter{}, "", rediacc.ErrPermissionDenied},
		{owner, rediacc.AlertFilter{Limit: -1}, "", rediacc.ErrInvalidArgument},
	} {
		got, err := list(tc.ctx, tc.f)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("ListAlerts(%+v): %v, want %v", tc.f, err, tc.err)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != tc.want && !(tc.want == "[]" && got == nil) {
			t.Errorf("ListAlerts(%+v) teams %v, %v; want %s", tc.f, got, err, tc.want)
		}
	}
	rs, err := c.ListAlerts(owner, rediacc.AlertFilter{Team: "prod"})
	if err != nil || len(rs) != 1 {
		t.Fatal(rs, err)
	}
	b, err := json.Marshal(rs[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"id":"` + rs[0].ID + `"`, `"kind":"queue.depth"`, `"team":"prod"`, `"deliveries":[{"endpoint":"alerter","state":"delivered","attempts":1`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("alert JSON lacks %s: %s", k, b)
		}
	}
	// Alerts belong to the team's id: renamed, the team keeps them (and its
	// members keep seeing them); a new team of the old name has none.
	prodAlert := rs[0].ID
	if err := c.RenameTeam(owner, "prod", "production"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateTeam(owner, "prod", "a new team of the old name"); err != nil {
		t.Fatal(err)
	}
	if rs, err := c.ListAlerts(owner, rediacc.AlertFilter{Team: "production"}); err != nil || len(rs) != 1 || rs[0].ID != prodAlert {
		t.Errorf("alerts of the renamed team: %+v, %v; want %s", rs, err, prodAlert)
	}
	if rs, err := c.ListAlerts(as("vera"), rediacc.AlertFilter{}); err != nil || len(rs) != 1 || rs[0].ID != prodAlert {
		t.Errorf("alerts the renamed team's viewer sees: %+v, %v; want %s", rs, err, prodAlert)
	}
	if rs, err := c.ListAlerts(owner, rediacc.AlertFilter{Team: "prod"}); err != nil || len(rs) != 0 {
		t.Errorf("alerts of the new team named prod: %+v, %v; want none", rs, err)
	}
}

// Two workers of different hosts (two clients, two connection pools) on
// one PostgreSQL store: alerts raised while the receiver is down wait in
// the database; once it recovers, each is delivered once, never by both at
// the same time.
func TestAlertOutboxPostgresWorkers(t *testing.T) {
	f := newFleet(t, 1, 3*time.Second)
	sink := newOutboxSink(t, "pg-secret")
	sink.status.Store(http.StatusServiceUnavailable)
	sink.delay = 30 * time.Millisecond
	clients := make([]*rediacc.Client, 2)
	for i := range clients {
		clients[i] = f.client(func(cfg *rediacc.Config) {
			cfg.WorkerID = fmt.Sprintf("host-%d/%d/alerts", 50+i, 5000+i) // other hosts: leases, not local pids
			cfg.Alerter = outboxWebhook(t, sink)
			cfg.AlertConcurrency = 3
		})
	}
	failingTasks(t, f.c, f.machines[0], 20)
	for _, c := range clients {
		startWorker(t, c)
	}
	waitFailed(t, f.c, 20)
	waitFor(t, "the receiver to refuse a delivery", func() bool { n, _ := sink.count(); return n >= 1 })
	if rs := undelivered(t, f.c); len(rs) != 20 {
		t.Fatalf("%d undelivered alerts in the database while the receiver is down, want 20", len(rs))
	}
	sink.status.Store(http.StatusOK)
	waitFor(t, "all 20 alerts", func() bool { return sink.delivered() == 20 })
	waitSettled(t, f.c)
	sink.check(t, true)
}

// Two workers of different hosts on one PostgreSQL store, one of them a
// separate process killed with SIGKILL while its deliveries hang at the
// receiver: the other worker delivers the alerts nobody held at once, and
// each alert the dead worker held only once that lease has expired (it
// cannot see the process of another host die); every alert is
// acknowledged once, never by both at the same time.
func TestAlertOutboxPostgresWorkerKilled(t *testing.T) {
	const n = 12
	f := newFleet(t, 1, 3*time.Second)
	sink := newOutboxSink(t, "pg-kill-secret")
	sink.status.Store(0) // hang: the first worker's deliveries stay in flight
	var ackMu sync.Mutex
	acked := map[string]time.Time{}
	sink.seen = func(b hookBody, status int) {
		if status == http.StatusOK {
			ackMu.Lock()
			acked[b.ID] = time.Now()
			ackMu.Unlock()
		}
	}
	hook := sink.srv.URL + "/hook?token=abc"
	failingTasks(t, f.c, f.machines[0], n)

	// Another host: its leases end only by expiry, 16 s after its claims
	// (the webhook's timeout, 8 s, and its LeaseDuration, 8 s).
	const deadID = "host-70/7000/alerts"
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), outboxChildDir+"="+t.TempDir(), outboxChildURL+"="+hook, outboxChildSecret+"=pg-kill-secret",
		outboxChildStore+"="+f.url, outboxChildWorkerID+"="+deadID, outboxChildAuditKey+"="+f.auditKey, outboxChildLease+"=8s")
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	waitFailed(t, f.c, n)
	waitFor(t, "deliveries in flight at the receiver", func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return sink.inflight >= 2
	})
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	// The leases the dead worker left, as the store records them.
	rs := undelivered(t, f.c)
	if len(rs) != n {
		t.Fatalf("after SIGKILL: %d undelivered alerts, want %d", len(rs), n)
	}
	held := map[string]time.Time{}
	for _, r := range rs {
		for _, d := range r.Deliveries {
			if d.Worker == deadID && d.LeaseExpiresAt.After(time.Now()) {
				held[r.ID] = d.LeaseExpiresAt
			}
		}
	}
	if len(held) == 0 || len(held) == n {
		t.Fatalf("%d of %d deliveries leased by the killed worker, want some but not all", len(held), n)
	}
	sink.status.Store(http.StatusOK)
	sink.release() // the dead worker's requests end with 503

	survivor := f.client(func(cfg *rediacc.Config) {
		cfg.WorkerID = "host-71/7100/alerts"
		wh, err := rediacc.NewWebhookAlerter(rediacc.WebhookConfig{URL: hook, Secret: sink.secret,
			InitialInterval: 50 * time.Millisecond, MaxInterval: 300 * time.Millisecond, Timeout: 10 * time.Second, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Alerter = wh
	})
	stop := startWorker(t, survivor)
	waitFor(t, fmt.Sprintf("all %d alerts", n), func() bool { return sink.delivered() == n })
	waitSettled(t, survivor)
	stop()
	sink.check(t, true)
	ackMu.Lock()
	defer ackMu.Unlock()
	for id, until := range held {
		if at := acked[id]; at.Before(until) {
			t.Errorf("alert %s, leased by the killed worker until %s, acknowledged at %s: before its lease expired",
				id, until.Format(time.StampMilli), at.Format(time.StampMilli))
		}
	}
	t.Logf("killed the worker holding %d of %d deliveries", len(held), n)
}
