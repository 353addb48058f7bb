package rediacc_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// webhookSink is a real HTTP server on 127.0.0.1 that receives webhooks,
// checks their signature independently of the SDK (crypto/hmac) and keeps
// the decoded bodies.
type webhookSink struct {
	t      *testing.T
	srv    *httptest.Server
	secret []byte

	mu       sync.Mutex
	got      []sinkAlert
	badSigs  int
	status   func(n int) int // HTTP status for the n-th request (1-based); nil: 200
	requests int
}

// sinkAlert is a received webhook body with its headers.
type sinkAlert struct {
	Kind       string    `json:"kind"`
	TaskID     string    `json:"taskId"`
	Team       string    `json:"team"`
	Machine    string    `json:"machine"`
	Priority   int       `json:"priority"`
	Attempts   int       `json:"attempts"`
	ExitCode   *int      `json:"exitCode"`
	Error      string    `json:"error"`
	Message    string    `json:"message"`
	Suppressed int       `json:"suppressed"`
	Time       time.Time `json:"time"`

	raw      string
	event    string
	delivery string
}

// newWebhookSink starts a sink; status, when not nil, gives the HTTP status
// of the n-th request (1-based).
func newWebhookSink(t *testing.T, secret string, status func(n int) int) *webhookSink {
	s := &webhookSink{t: t, secret: []byte(secret), status: status}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve)) // listens on 127.0.0.1
	t.Cleanup(s.srv.Close)
	return s
}

func (s *webhookSink) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	sig := r.Header.Get(rediacc.WebhookSignatureHeader)
	m := hmac.New(sha256.New, s.secret)
	m.Write(body)
	want := "sha256=" + hex.EncodeToString(m.Sum(nil))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	if sig != want || !rediacc.VerifyWebhookSignature(s.secret, body, sig) {
		s.badSigs++
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	if s.status != nil {
		if code := s.status(s.requests); code != http.StatusOK {
			w.WriteHeader(code)
			return
		}
	}
	var a sinkAlert
	if err := json.Unmarshal(body, &a); err != nil {
		s.t.Errorf("webhook body is not JSON: %v: %s", err, body)
	}
	a.raw, a.event, a.delivery = string(body), r.Header.Get(rediacc.WebhookEventHeader), r.Header.Get(rediacc.WebhookDeliveryHeader)
	s.got = append(s.got, a)
}

func (s *webhookSink) badSignatures() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.badSigs
}

// alerts returns the alerts received so far, of kind when not "".
func (s *webhookSink) alerts(kind string) []sinkAlert {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []sinkAlert
	for _, a := range s.got {
		if kind == "" || a.Kind == kind {
			out = append(out, a)
		}
	}
	return out
}

// waitFor waits (up to 30 s, a deadline, not a timing assertion) until
// cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newWebhook(t *testing.T, cfg rediacc.WebhookConfig) *rediacc.WebhookAlerter {
	t.Helper()
	if cfg.InitialInterval == 0 {
		cfg.InitialInterval = 5 * time.Millisecond
	}
	if cfg.MaxInterval == 0 {
		cfg.MaxInterval = 20 * time.Millisecond
	}
	cfg.Logger = testLogger(t)
	wh, err := rediacc.NewWebhookAlerter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = wh.Close(context.Background()) })
	return wh
}

// A task that finally fails on a real sshd, with FailureAlert, produces one
// signed webhook carrying its id, team, machine, priority, attempts, last
// error and exit code, with the task's vault secret masked.
func TestFailedTaskSendsOneSignedWebhook(t *testing.T) {
	sink := newWebhookSink(t, "hook-secret", nil)
	wh := newWebhook(t, rediacc.WebhookConfig{URL: sink.srv.URL + "/hooks/rediacc?token=abc", Secret: []byte("hook-secret")})
	var logged []rediacc.Alert
	var mu sync.Mutex
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.Alerter = rediacc.FanoutAlerter(wh, rediacc.AlerterFunc(func(_ context.Context, a rediacc.Alert) error {
			mu.Lock()
			logged = append(logged, a)
			mu.Unlock()
			return nil
		}))
	})
	realMachine(t, c, "db-01", 30)
	canaryValue := "s3cr3t-" + strings.Repeat("x", 12)
	if _, err := c.SetSecret(asOwner(), rediacc.DefaultTeam, "db/token", []byte(canaryValue), nil); err != nil {
		t.Fatal(err)
	}
	task := submit(t, c, rediacc.TaskSpec{Machine: "db-01", Priority: rediacc.High,
		Command: `echo "token $TOKEN" >&2; exit 3`, Secrets: map[string]string{"TOKEN": "db/token"},
		Retry: rediacc.RetryPolicy{RetryCount: 1, RetryDelay: 10 * time.Millisecond}})
	quiet := submit(t, c, rediacc.TaskSpec{Machine: "db-01", Command: "exit 4", FailureAction: rediacc.FailureNone})
	ok := submit(t, c, rediacc.TaskSpec{Machine: "db-01", Command: "true"})
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil { // drains the webhook queue
		t.Fatal(err)
	}
	got := sink.alerts("")
	if len(got) != 1 {
		t.Fatalf("webhooks received: %d, want 1: %+v", len(got), got)
	}
	a := got[0]
	if a.Kind != rediacc.AlertTaskFailed || a.event != rediacc.AlertTaskFailed || a.TaskID != task.ID || a.Team != rediacc.DefaultTeam ||
		a.Machine != "db-01" || a.Priority != 2 || a.Attempts != 2 || a.ExitCode == nil || *a.ExitCode != 3 ||
		!strings.Contains(a.Error, "status 3") || !strings.Contains(a.Message, task.ID) || a.Time.IsZero() || a.delivery == "" {
		t.Errorf("webhook: %+v", a)
	}
	if strings.Contains(a.raw, canaryValue) {
		t.Errorf("webhook body holds the secret: %s", a.raw)
	}
	for _, k := range []string{`"taskId"`, `"team"`, `"machine"`, `"priority"`, `"attempts"`, `"exitCode"`, `"error"`} {
		if !strings.Contains(a.raw, k) {
			t.Errorf("webhook body lacks %s: %s", k, a.raw)
		}
	}
	if n := sink.badSignatures(); n != 0 {
		t.Errorf("%d webhooks with a bad signature", n)
	}
	if s := wh.Stats(); s.Delivered != 1 || s.Failed != 0 || s.Dropped != 0 {
		t.Errorf("delivery stats: %+v", s)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(logged) != 1 || logged[0].TaskID != task.ID || logged[0].Command == "" || logged[0].Kind != rediacc.AlertTaskFailed {
		t.Errorf("fan-out's second alerter got %+v", logged)
	}
	_, _ = quiet, ok
}

// A webhook receiver that answers 503 is retried with backoff; text is
// redacted; a receiver that refuses (4xx) counts as a failed delivery, and
// a full queue drops alerts: neither is returned as a delivery error nor
// blocks the caller beyond queuing.
func TestWebhookAlerterRetriesRedactsAndCounts(t *testing.T) {
	sink := newWebhookSink(t, "k", func(n int) int {
		if n <= 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	wh := newWebhook(t, rediacc.WebhookConfig{URL: sink.srv.URL, Secret: []byte("k"),
		Redact: func(s string) string { return strings.ReplaceAll(s, "hunter2", "***") }})
	ctx := context.Background()
	if err := wh.Alert(ctx, rediacc.Alert{Kind: rediacc.AlertMachineUnhealthy, Machine: "m1", Error: "login hunter2 refused", Message: "probe: hunter2"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the retried delivery", func() bool { return len(sink.alerts("")) == 1 })
	a := sink.alerts("")[0]
	if a.Error != "login *** refused" || a.Message != "probe: ***" || strings.Contains(a.raw, "hunter2") {
		t.Errorf("redaction: %+v", a)
	}
	if err := wh.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if s := wh.Stats(); s.Delivered != 1 || s.Retries != 2 || s.Failed != 0 {
		t.Errorf("stats after retries: %+v", s)
	}
	if err := wh.Alert(ctx, rediacc.Alert{Kind: rediacc.AlertTaskFailed}); !errors.Is(err, rediacc.ErrClosed) {
		t.Errorf("Alert after Close: %v", err)
	}

	// Refused deliveries are counted, never returned.
	refuse := newWebhookSink(t, "k", func(int) int { return http.StatusForbidden })
	wh2 := newWebhook(t, rediacc.WebhookConfig{URL: refuse.srv.URL, Secret: []byte("k")})
	if err := wh2.Alert(ctx, rediacc.Alert{Kind: rediacc.AlertTaskFailed, TaskID: "t1"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the refused delivery", func() bool { return wh2.Stats().Failed == 1 })

	// A full queue drops alerts (the receiver holds the first one).
	release := make(chan struct{})
	held := make(chan struct{}, 1)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case held <- struct{}{}:
		default:
		}
		<-release
	}))
	wh3 := newWebhook(t, rediacc.WebhookConfig{URL: slow.URL, Secret: []byte("k"), QueueSize: 1})
	if err := wh3.Alert(ctx, rediacc.Alert{Kind: rediacc.AlertTaskFailed, TaskID: "a"}); err != nil {
		t.Fatal(err)
	}
	<-held // being delivered: the queue is empty again
	if err := wh3.Alert(ctx, rediacc.Alert{Kind: rediacc.AlertTaskFailed, TaskID: "b"}); err != nil {
		t.Fatal(err)
	}
	if err := wh3.Alert(ctx, rediacc.Alert{Kind: rediacc.AlertTaskFailed, TaskID: "c"}); !errors.Is(err, rediacc.ErrAlertDropped) {
		t.Errorf("Alert on a full queue: %v, want ErrAlertDropped", err)
	}
	if s := wh3.Stats(); s.Dropped != 1 || s.Queued != 1 {
		t.Errorf("stats with a full queue: %+v", s)
	}
	close(release)
	if err := wh3.Close(ctx); err != nil { // delivers the queued one
		t.Fatal(err)
	}
	slow.Close()
	if s := wh3.Stats(); s.Delivered != 2 || s.Dropped != 1 {
		t.Errorf("stats after the queue drained: %+v", s)
	}
}

func TestWebhookAlerterConfigErrors(t *testing.T) {
	for _, cfg := range []rediacc.WebhookConfig{
		{URL: "http://127.0.0.1:1/x"},                                            // no secret: unsigned webhooks refused
		{URL: "ftp://example.invalid/", Secret: []byte("k")},                     // not http(s)
		{URL: "", Secret: []byte("k")},                                           // no URL
		{URL: "http://127.0.0.1:1/", Secret: []byte("k"), Timeout: -time.Second}, // negative
	} {
		if _, err := rediacc.NewWebhookAlerter(cfg); !errors.Is(err, rediacc.ErrInvalidArgument) {
			t.Errorf("NewWebhookAlerter(%+v): %v, want ErrInvalidArgument", cfg, err)
		}
	}
	if _, err := rediacc.NewWebhookAlerter(rediacc.WebhookConfig{URL: "http://127.0.0.1:1/"}); err == nil || !strings.Contains(err.Error(), "unsigned") {
		t.Errorf("no secret: %v, want it to say unsigned webhooks are refused", err)
	}
	for _, rules := range [][]rediacc.AlertRule{{{Priority: 6, MaxPending: 1}}, {{MaxPending: -1}}, {{MaxPendingAge: -time.Second}}} {
		_, err := rediacc.New(asOwner(), rediacc.Config{Store: rediacc.NewMemoryStore(), AlertRules: rules})
		if !errors.Is(err, rediacc.ErrInvalidArgument) {
			t.Errorf("New with rules %+v: %v, want ErrInvalidArgument", rules, err)
		}
	}
}

// monKeyFile writes a throwaway private key for machines never dialled.
func monKeyFile(t *testing.T) string {
	t.Helper()
	_, pemKey, err := sshtest.GenerateSigner(nil)
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(t.TempDir(), "id")
	if err := os.WriteFile(key, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	return key
}

// Queue thresholds are checked by the worker loop: each crossed rule fires
// one signed webhook, repeats are held back (counted) until the rate
// window has passed on the client's clock, and the next alert then says how
// many were held back.
func TestThresholdAlertsFireOnceThenRateLimited(t *testing.T) {
	sink := newWebhookSink(t, "rules", nil)
	wh := newWebhook(t, rediacc.WebhookConfig{URL: sink.srv.URL, Secret: []byte("rules")})
	clock := &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.Clock = clock
		cfg.Alerter = wh
		cfg.AlertInterval = 10 * time.Millisecond
		cfg.AlertRules = []rediacc.AlertRule{
			{Priority: rediacc.Low, MaxPending: 2},
			{Team: "prod", MaxPendingAge: 10 * time.Minute},
			{Priority: rediacc.Critical, MaxPending: 0, MaxPendingAge: time.Hour * 24}, // not crossed
		}
	})
	owner := asOwner()
	for _, team := range []string{"prod", "dev"} {
		if _, err := c.CreateTeam(owner, team, ""); err != nil {
			t.Fatal(err)
		}
	}
	// prod's machine is never reached: the worker runs as a dev operator,
	// so prod's tasks stay PENDING.
	if _, err := c.AddMachine(owner, rediacc.Machine{Name: "prod-01", Team: "prod", Host: "127.0.0.39", Port: 1, User: "u",
		IdentityFile: monKeyFile(t), HostKeyPolicy: rediacc.HostKeyInsecureIgnore}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetMember(owner, "dev", "runner", rediacc.RoleOperator); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		submit(t, c, rediacc.TaskSpec{Machine: "prod-01", Command: "true", Priority: rediacc.Low})
	}
	clock.Advance(time.Hour) // the oldest pending task is now an hour old

	scrape := serveMetrics(t, c)
	ctx, cancel := context.WithCancel(as("runner"))
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}
	defer stop()

	// Both rules fire once; later checks are suppressed.
	waitFor(t, "both threshold alerts and some suppressed repeats", func() bool {
		return len(sink.alerts(rediacc.AlertQueueDepth)) >= 1 && len(sink.alerts(rediacc.AlertQueueAge)) >= 1 &&
			scrape()["rediacc_alerts_suppressed_total"] >= 4
	})
	if n, m := len(sink.alerts(rediacc.AlertQueueDepth)), len(sink.alerts(rediacc.AlertQueueAge)); n != 1 || m != 1 {
		t.Fatalf("within the rate window: %d depth and %d age alerts, want 1 each", n, m)
	}
	depth, age := sink.alerts(rediacc.AlertQueueDepth)[0], sink.alerts(rediacc.AlertQueueAge)[0]
	if depth.Priority != 4 || depth.Team != "" || !strings.Contains(depth.Message, "3 PENDING tasks of priority 4") || depth.Suppressed != 0 {
		t.Errorf("depth alert: %+v", depth)
	}
	if age.Team != "prod" || age.Priority != 0 || !strings.Contains(age.Message, "1h0m0s ago") {
		t.Errorf("age alert: %+v", age)
	}

	// Past the window, the conditions still hold: one more alert each,
	// telling how many were held back.
	clock.Advance(rediacc.DefaultAlertRateWindow + time.Second)
	waitFor(t, "the alerts after the window", func() bool {
		return len(sink.alerts(rediacc.AlertQueueDepth)) >= 2 && len(sink.alerts(rediacc.AlertQueueAge)) >= 2
	})
	stop()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{rediacc.AlertQueueDepth, rediacc.AlertQueueAge} {
		got := sink.alerts(kind)
		if len(got) != 2 || got[1].Suppressed < 2 {
			t.Errorf("%s alerts: %d (want 2), second suppressed %d (want >= 2)", kind, len(got), got[len(got)-1].Suppressed)
		}
	}
	if n := len(sink.alerts("")); n != 4 {
		t.Errorf("%d alerts in all, want 4 (the critical rule is not crossed)", n)
	}
}

// A webhook receiver checks the signature on the raw body before trusting
// it; the worker's alerts arrive this way when Config.Alerter is a
// WebhookAlerter (or a FanoutAlerter holding one).
func ExampleNewWebhookAlerter() {
	secret := []byte("shared-secret") // in practice: Client.GetSecret(ctx, team, "alerts/webhook")
	done := make(chan struct{})
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		body, _ := io.ReadAll(r.Body)
		if !rediacc.VerifyWebhookSignature(secret, body, r.Header.Get(rediacc.WebhookSignatureHeader)) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var a struct {
			Kind     string `json:"kind"`
			Machine  string `json:"machine"`
			ExitCode *int   `json:"exitCode"`
		}
		_ = json.Unmarshal(body, &a)
		fmt.Println(r.Header.Get(rediacc.WebhookEventHeader), a.Machine, *a.ExitCode, "signature ok")
	}))
	defer receiver.Close()

	wh, err := rediacc.NewWebhookAlerter(rediacc.WebhookConfig{URL: receiver.URL, Secret: secret})
	if err != nil {
		panic(err)
	}
	code := 3
	_ = wh.Alert(context.Background(), rediacc.Alert{Kind: rediacc.AlertTaskFailed, TaskID: "t-1", Machine: "db-01", ExitCode: &code})
	<-done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = wh.Close(ctx) // Client.Close does this when wh is Config.Alerter
	fmt.Printf("%+v\n", wh.Stats())
	// Output:
	// task.failed db-01 3 signature ok
	// {Delivered:1 Failed:0 Dropped:0 Retries:0 Queued:0}
}

// Alerts go to several places: here a function of the program and a
// signed webhook. Queue thresholds (AlertRules) are checked by the worker
// every AlertInterval.
func ExampleFanoutAlerter() {
	secret := []byte("shared-secret") // in practice from a vault
	// The endpoints are delivered to concurrently (the outbox): each
	// reports on its own channel, printed in a fixed order below.
	webhookSaw, pageSaw := make(chan string, 1), make(chan string, 1)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var a struct {
			Machine   string `json:"machine"`
			ErrorKind string `json:"errorKind"`
		}
		_ = json.Unmarshal(body, &a)
		webhookSaw <- fmt.Sprintln("webhook:", r.Header.Get(rediacc.WebhookEventHeader), a.Machine, a.ErrorKind,
			rediacc.VerifyWebhookSignature(secret, body, r.Header.Get(rediacc.WebhookSignatureHeader)))
	}))
	defer receiver.Close()
	wh, err := rediacc.NewWebhookAlerter(rediacc.WebhookConfig{URL: receiver.URL, Secret: secret})
	if err != nil {
		fmt.Println(err) // no secret: unsigned webhooks are refused
		return
	}
	page := rediacc.AlerterFunc(func(_ context.Context, a rediacc.Alert) error {
		var exit *rediacc.ExitError
		if errors.As(a.Err(), &exit) {
			pageSaw <- fmt.Sprintln("page:", a.Kind, a.Machine, "exit", exit.Code)
		}
		return nil
	})
	e := newExampleEnv(func(cfg *rediacc.Config) {
		cfg.Alerter = rediacc.FanoutAlerter(page, wh)
		cfg.AlertRules = []rediacc.AlertRule{{Priority: rediacc.Critical, MaxPending: 10}, {MaxPendingAge: 30 * time.Minute}}
	})
	defer e.close()
	e.machine("db-01", "", nil)
	if _, err := e.c.Submit(e.ctx, rediacc.TaskSpec{Machine: "db-01", Command: "exit 4"}); err != nil {
		panic(err)
	}
	if err := e.c.RunUntilEmpty(e.ctx); err != nil {
		panic(err)
	}
	fmt.Print(<-pageSaw)
	fmt.Print(<-webhookSaw)
	// Output:
	// page: task.failed db-01 exit 4
	// webhook: task.failed db-01 exit true
}
