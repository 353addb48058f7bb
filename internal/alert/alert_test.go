package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var secret = []byte("s3cr3t-webhook-key")

// receiver is a webhook endpoint on 127.0.0.1 that checks every request's
// signature and records the alerts; respond picks each response.
type receiver struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	requests []*http.Request
	bodies   [][]byte
	respond  func(n int, w http.ResponseWriter, r *http.Request) // n counts from 1
}

func newReceiver(t *testing.T, respond func(n int, w http.ResponseWriter, r *http.Request)) *receiver {
	rc := &receiver{t: t, respond: respond}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("reading body: %v", err)
			return
		}
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("got %s with Content-Type %q", r.Method, r.Header.Get("Content-Type"))
		}
		if !Verify(secret, body, r.Header.Get(HeaderSignature)) {
			t.Errorf("bad signature %q for %s", r.Header.Get(HeaderSignature), body)
		}
		ts, err := strconv.ParseInt(r.Header.Get(HeaderTimestamp), 10, 64)
		if err != nil || time.Since(time.Unix(ts, 0)).Abs() > time.Minute {
			t.Errorf("bad timestamp %q", r.Header.Get(HeaderTimestamp))
		}
		rc.mu.Lock()
		rc.requests = append(rc.requests, r)
		rc.bodies = append(rc.bodies, body)
		n := len(rc.bodies)
		rc.mu.Unlock()
		if rc.respond != nil {
			rc.respond(n, w, r)
		}
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.bodies)
}

func (rc *receiver) alerts() []Alert {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []Alert
	for _, b := range rc.bodies {
		var a Alert
		if err := json.Unmarshal(b, &a); err != nil {
			rc.t.Fatalf("body %s: %v", b, err)
		}
		out = append(out, a)
	}
	return out
}

// logBuffer collects log output for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newWebhook(t *testing.T, cfg WebhookConfig) (*Webhook, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	if cfg.Secret == nil {
		cfg.Secret = secret
	}
	setDefault(&cfg.InitialInterval, time.Millisecond)
	setDefault(&cfg.MaxInterval, 10*time.Millisecond)
	setDefault(&cfg.MaxElapsed, 5*time.Second)
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	w, err := NewWebhook(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close(context.Background()) })
	return w, logs
}

func closeWithin(t *testing.T, w *Webhook, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func intp(i int) *int { return &i }

func TestWebhookDeliversSignedAlert(t *testing.T) {
	rc := newReceiver(t, nil)
	w, _ := newWebhook(t, WebhookConfig{
		URL:    rc.srv.URL + "/hooks/rediacc?token=abc",
		Redact: strings.NewReplacer("hunter2", "***").Replace,
	})
	code := 3
	a := Alert{
		Kind: KindTaskFailed, TaskID: "0b6f-uuid", Team: "prod", Machine: "web-1",
		Priority: 2, Attempts: 4, ExitCode: &code,
		Error:   "exit status 3: mysql -phunter2 failed",
		Message: "backup failed (password hunter2)",
		Time:    time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC),
	}
	if err := w.Send(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	code = 99 // the queued alert keeps its own copy
	closeWithin(t, w, 5*time.Second)

	want := a
	want.ExitCode = intp(3)
	want.Error = "exit status 3: mysql -p*** failed"
	want.Message = "backup failed (password ***)"
	if d := cmp.Diff([]Alert{want}, rc.alerts()); d != "" {
		t.Fatalf("received (-want +got):\n%s", d)
	}
	r := rc.requests[0]
	if r.Header.Get(HeaderEvent) != KindTaskFailed || r.Header.Get(HeaderDelivery) == "" || r.URL.RawQuery != "token=abc" {
		t.Fatalf("headers %v, URL %v", r.Header, r.URL)
	}
	// The JSON field names are a wire format.
	var fields map[string]any
	json.Unmarshal(rc.bodies[0], &fields)
	for _, k := range []string{"kind", "taskId", "team", "machine", "priority", "attempts", "exitCode", "error", "message", "time"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("body lacks %q: %s", k, rc.bodies[0])
		}
	}
	if s := w.Stats(); s != (WebhookStats{Delivered: 1}) {
		t.Fatalf("stats %+v", s)
	}
}

func TestWebhookRetriesServerErrors(t *testing.T) {
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		switch n {
		case 1, 2:
			http.Error(w, "boom", http.StatusInternalServerError)
		case 3:
			w.Header().Set("Retry-After", "1") // capped at MaxInterval
			http.Error(w, "slow down", http.StatusTooManyRequests)
		}
	})
	w, _ := newWebhook(t, WebhookConfig{URL: rc.srv.URL})
	start := time.Now()
	w.Send(context.Background(), Alert{Kind: KindQueueDepth, Priority: 5, Message: "depth 1200 > 1000"})
	closeWithin(t, w, 5*time.Second)
	if took := time.Since(start); took > 900*time.Millisecond {
		t.Errorf("took %v: Retry-After should be capped at MaxInterval (10ms)", took)
	}
	if rc.count() != 4 {
		t.Fatalf("%d attempts, want 4", rc.count())
	}
	ids := map[string]bool{}
	for i, r := range rc.requests {
		ids[r.Header.Get(HeaderDelivery)] = true
		if !bytes.Equal(rc.bodies[i], rc.bodies[0]) {
			t.Fatalf("attempt %d sent a different body", i+1)
		}
	}
	if len(ids) != 1 {
		t.Fatalf("delivery ids %v: want one id for all attempts", ids)
	}
	if s := w.Stats(); s != (WebhookStats{Delivered: 1, Retries: 3}) {
		t.Fatalf("stats %+v", s)
	}
}

func TestWebhookPermanentClientError(t *testing.T) {
	for _, code := range []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusNotFound, http.StatusFound} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
				if code == http.StatusFound {
					w.Header().Set("Location", "/elsewhere")
				}
				w.WriteHeader(code)
				io.WriteString(w, "nope")
			})
			w, logs := newWebhook(t, WebhookConfig{URL: rc.srv.URL + "/secret-path-token"})
			w.Send(context.Background(), Alert{Kind: KindTaskFailed, TaskID: "t1"})
			closeWithin(t, w, 5*time.Second)
			if rc.count() != 1 {
				t.Fatalf("%d attempts, want 1 (no retry, no redirect)", rc.count())
			}
			if s := w.Stats(); s != (WebhookStats{Failed: 1}) {
				t.Fatalf("stats %+v", s)
			}
			out := logs.String()
			if !strings.Contains(out, "permanent error") || !strings.Contains(out, "HTTP "+strconv.Itoa(code)) || !strings.Contains(out, "task_id=t1") {
				t.Fatalf("log:\n%s", out)
			}
			if strings.Contains(out, "secret-path-token") {
				t.Fatalf("the URL path was logged:\n%s", out)
			}
		})
	}
}

func TestWebhookTimeout(t *testing.T) {
	release := make(chan struct{})
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		select { // hang until the client gives up
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	w, logs := newWebhook(t, WebhookConfig{URL: rc.srv.URL, Timeout: 50 * time.Millisecond, MaxElapsed: 200 * time.Millisecond})
	start := time.Now()
	w.Send(context.Background(), Alert{Kind: KindMachineUnhealthy, Machine: "db-1"})
	closeWithin(t, w, 5*time.Second)
	took := time.Since(start)
	if n := rc.count(); n < 2 {
		t.Fatalf("%d attempts: timeouts should be retried", n)
	}
	if took > 2*time.Second {
		t.Fatalf("took %v; MaxElapsed is 200ms and each attempt 50ms", took)
	}
	if s := w.Stats(); s.Failed != 1 || s.Delivered != 0 {
		t.Fatalf("stats %+v", s)
	}
	if out := logs.String(); !strings.Contains(out, "retries exhausted") || !strings.Contains(out, "deadline exceeded") {
		t.Fatalf("log:\n%s", out)
	}
}

func TestWebhookNetworkErrorRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close() // connection refused from now on
	w, logs := newWebhook(t, WebhookConfig{URL: url, MaxElapsed: 100 * time.Millisecond})
	w.Send(context.Background(), Alert{Kind: KindQueueAge})
	closeWithin(t, w, 5*time.Second)
	if s := w.Stats(); s.Failed != 1 || s.Retries == 0 {
		t.Fatalf("stats %+v: want retries, then failed", s)
	}
	if out := logs.String(); !strings.Contains(out, "connection refused") {
		t.Fatalf("log:\n%s", out)
	}
}

// blockingReceiver accepts alerts only when told to.
func blockingReceiver(t *testing.T) (*receiver, chan struct{}, chan struct{}) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 100)
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	return rc, release, arrived
}

func TestWebhookQueueFullDrops(t *testing.T) {
	rc, release, arrived := blockingReceiver(t)
	w, logs := newWebhook(t, WebhookConfig{URL: rc.srv.URL, QueueSize: 2})
	ctx := context.Background()
	if err := w.Send(ctx, Alert{Kind: KindTaskFailed, TaskID: "in-flight"}); err != nil {
		t.Fatal(err)
	}
	<-arrived // the goroutine holds the first; the queue is empty again
	for _, id := range []string{"q1", "q2"} {
		if err := w.Send(ctx, Alert{Kind: KindTaskFailed, TaskID: id}); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	for _, id := range []string{"d1", "d2", "d3"} {
		if err := w.Send(ctx, Alert{Kind: KindTaskFailed, TaskID: id}); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("Send(%s) = %v, want ErrQueueFull", id, err)
		}
	}
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Fatalf("Send blocked for %v on a full queue", took)
	}
	if s := w.Stats(); s.Dropped != 3 || s.Queued != 2 {
		t.Fatalf("stats %+v", s)
	}
	if out := logs.String(); strings.Count(out, "queue full") != 3 || !strings.Contains(out, "task_id=d2") {
		t.Fatalf("log:\n%s", out)
	}
	close(release)
	closeWithin(t, w, 5*time.Second)
	var got []string
	for _, a := range rc.alerts() {
		got = append(got, a.TaskID)
	}
	if d := cmp.Diff([]string{"in-flight", "q1", "q2"}, got); d != "" {
		t.Fatalf("delivered (-want +got):\n%s", d)
	}
	if s := w.Stats(); s != (WebhookStats{Delivered: 3, Dropped: 3}) {
		t.Fatalf("stats %+v", s)
	}
}

func TestWebhookCloseDrainsQueue(t *testing.T) {
	rc := newReceiver(t, func(int, http.ResponseWriter, *http.Request) { time.Sleep(2 * time.Millisecond) })
	w, _ := newWebhook(t, WebhookConfig{URL: rc.srv.URL})
	for i := range 25 {
		if err := w.Send(context.Background(), Alert{Kind: KindTaskFailed, TaskID: strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	closeWithin(t, w, 10*time.Second)
	if err := w.Send(context.Background(), Alert{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close = %v", err)
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	got := rc.alerts()
	if len(got) != 25 {
		t.Fatalf("delivered %d of 25", len(got))
	}
	for i, a := range got {
		if a.TaskID != strconv.Itoa(i) {
			t.Fatalf("alert %d is %s: order not kept", i, a.TaskID)
		}
	}
	if s := w.Stats(); s != (WebhookStats{Delivered: 25}) {
		t.Fatalf("stats %+v", s)
	}
}

func TestWebhookCloseDeadline(t *testing.T) {
	rc, release, arrived := blockingReceiver(t)
	defer close(release)
	w, logs := newWebhook(t, WebhookConfig{URL: rc.srv.URL})
	for i := range 4 {
		w.Send(context.Background(), Alert{Kind: KindTaskFailed, TaskID: strconv.Itoa(i)})
	}
	<-arrived
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := w.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want DeadlineExceeded", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Close took %v past its 100ms deadline", took)
	}
	if s := w.Stats(); s != (WebhookStats{Failed: 1, Dropped: 3}) {
		t.Fatalf("stats %+v: the in-flight alert failed, the queued ones dropped", s)
	}
	if out := logs.String(); !strings.Contains(out, "webhook closed") {
		t.Fatalf("log:\n%s", out)
	}
}

func TestNewWebhookConfigErrors(t *testing.T) {
	for _, cfg := range []WebhookConfig{
		{URL: "", Secret: secret},
		{URL: "ftp://example.com/x", Secret: secret},
		{URL: "http:///path", Secret: secret},
		{URL: "::bad", Secret: secret},
		{URL: "https://example.com/hook"},
		{URL: "https://example.com/hook", Secret: secret, Timeout: -1},
		{URL: "https://example.com/hook", Secret: secret, QueueSize: -1},
	} {
		if w, err := NewWebhook(cfg); !errors.Is(err, ErrConfig) {
			if w != nil {
				w.Close(context.Background())
			}
			t.Errorf("NewWebhook(%+v) = %v, want ErrConfig", cfg, err)
		}
	}
}

func TestSignVerify(t *testing.T) {
	body := []byte(`{"kind":"task.failed"}`)
	// echo -n '{"kind":"task.failed"}' | openssl dgst -sha256 -hmac s3cr3t-webhook-key
	sig := Sign(secret, body)
	if want := "sha256=cc70e6f89e7143b805abf9645474543e6e1a94178e818e85709fe67dea2f36e6"; sig != want {
		t.Fatalf("Sign = %q, want %q", sig, want)
	}
	if !Verify(secret, body, sig) {
		t.Fatal("Verify rejects Sign's signature")
	}
	for _, bad := range []string{"", sig[7:], "sha1=" + sig[7:], "sha256=zz", sig[:len(sig)-2] + "00"} {
		if Verify(secret, body, bad) {
			t.Errorf("Verify accepts %q", bad)
		}
	}
	if Verify([]byte("other"), body, sig) || Verify(secret, append(body, ' '), sig) {
		t.Error("Verify accepts another secret or body")
	}
}

func TestTruncate(t *testing.T) {
	long := strings.Repeat("é", MaxTextBytes) // 2 bytes each
	got := truncate(long)
	if len(got) > MaxTextBytes || !strings.HasSuffix(got, "…[truncated]") || !utf8Valid(got) {
		t.Fatalf("truncate: %d bytes, suffix %q", len(got), got[len(got)-20:])
	}
	if truncate("short") != "short" {
		t.Fatal("short text changed")
	}
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

// recorder is a Sender that records alerts and may fail.
type recorder struct {
	mu     sync.Mutex
	got    []Alert
	err    error
	closed atomic.Int32
}

func (r *recorder) Send(_ context.Context, a Alert) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, a)
	return r.err
}

func (r *recorder) Close(context.Context) error { r.closed.Add(1); return nil }

func TestFanout(t *testing.T) {
	boom := errors.New("boom")
	a, b, c := &recorder{}, &recorder{err: boom}, &recorder{}
	f := Fanout(a, nil, b, SenderFunc(c.Send))
	err := f.Send(context.Background(), Alert{Kind: KindQueueAge})
	if !errors.Is(err, boom) {
		t.Fatalf("Send = %v, want boom", err)
	}
	for i, r := range []*recorder{a, b, c} {
		if len(r.got) != 1 {
			t.Fatalf("sender %d got %d alerts", i, len(r.got))
		}
	}
	if err := f.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a.closed.Load() != 1 || b.closed.Load() != 1 || c.closed.Load() != 0 {
		t.Fatal("Close must close the Closers (and only them)")
	}
	if err := Fanout().Send(context.Background(), Alert{}); err != nil {
		t.Fatal(err)
	}
}

func TestFanoutWithWebhooks(t *testing.T) {
	rc1, rc2 := newReceiver(t, nil), newReceiver(t, nil)
	w1, _ := newWebhook(t, WebhookConfig{URL: rc1.srv.URL})
	w2, _ := newWebhook(t, WebhookConfig{URL: rc2.srv.URL})
	f := Fanout(w1, w2)
	f.Send(context.Background(), Alert{Kind: KindMachineUnhealthy, Machine: "m"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if rc1.count() != 1 || rc2.count() != 1 {
		t.Fatalf("received %d and %d", rc1.count(), rc2.count())
	}
}

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func TestRateLimiter(t *testing.T) {
	clk := &testClock{t: time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)}
	rec := &recorder{}
	rl := NewRateLimiter(rec, RateLimitConfig{Clock: clk.Now})
	ctx := context.Background()
	unhealthy := Alert{Kind: KindMachineUnhealthy, Team: "prod", Machine: "db-1"}
	send := func(a Alert) {
		t.Helper()
		if err := rl.Send(ctx, a); err != nil {
			t.Fatal(err)
		}
	}

	send(unhealthy) // passes
	for range 3 {
		clk.Add(time.Minute)
		send(unhealthy) // 1, 2, 3 minutes later: suppressed
	}
	other := unhealthy
	other.Machine = "db-2"
	send(other) // another machine: its own condition
	depth1 := Alert{Kind: KindQueueDepth, Team: "prod", Priority: 1}
	depth5 := Alert{Kind: KindQueueDepth, Team: "prod", Priority: 5}
	send(depth1)
	send(depth5) // another priority level: its own condition
	send(Alert{Kind: KindTaskFailed, TaskID: "a", Team: "prod", Machine: "db-1"})
	send(Alert{Kind: KindTaskFailed, TaskID: "b", Team: "prod", Machine: "db-1"}) // another task
	send(Alert{Kind: KindTaskFailed, TaskID: "b", Team: "prod", Machine: "db-1"}) // same task again: suppressed
	send(Alert{Kind: KindQueueAge, Key: "age:prod"})
	send(Alert{Kind: KindQueueAge, Key: "age:prod", Team: "different fields, same key"}) // suppressed
	if rl.Suppressed() != 5 {
		t.Fatalf("Suppressed = %d, want 5", rl.Suppressed())
	}

	clk.Add(2 * time.Minute) // 5 minutes after the first
	send(unhealthy)          // passes, reporting the 3 it suppressed
	clk.Add(time.Minute)
	send(unhealthy) // suppressed again

	var got []string
	for _, a := range rec.got {
		got = append(got, a.Kind+"/"+a.Machine+"/"+a.TaskID+"/"+strconv.Itoa(a.Priority)+"/"+strconv.Itoa(a.Suppressed))
	}
	want := []string{
		"machine.unhealthy/db-1//0/0",
		"machine.unhealthy/db-2//0/0",
		"queue.depth///1/0",
		"queue.depth///5/0",
		"task.failed/db-1/a/0/0",
		"task.failed/db-1/b/0/0",
		"queue.age///0/0",
		"machine.unhealthy/db-1//0/3",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("passed (-want +got):\n%s", d)
	}
	if rl.Suppressed() != 6 {
		t.Fatalf("Suppressed = %d, want 6", rl.Suppressed())
	}

	// Conditions idle for a window are forgotten.
	clk.Add(time.Hour)
	send(Alert{Kind: KindQueueDepth, Priority: 3})
	rl.mu.Lock()
	n := len(rl.conds)
	rl.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d conditions remembered after an idle hour, want 1", n)
	}
}

func TestRateLimiterCustomKeyAndWindow(t *testing.T) {
	clk := &testClock{t: time.Unix(0, 0)}
	rec := &recorder{}
	rl := NewRateLimiter(rec, RateLimitConfig{
		Window: time.Second,
		Key:    func(a Alert) string { return a.Team }, // one condition per team
		Clock:  clk.Now,
	})
	ctx := context.Background()
	rl.Send(ctx, Alert{Kind: KindQueueAge, Team: "prod"})
	rl.Send(ctx, Alert{Kind: KindQueueDepth, Team: "prod"}) // same team: suppressed
	clk.Add(time.Second)
	rl.Send(ctx, Alert{Kind: KindQueueDepth, Team: "prod"})
	if len(rec.got) != 2 || rec.got[1].Suppressed != 1 {
		t.Fatalf("got %+v", rec.got)
	}
	if err := rl.Close(ctx); err != nil || rec.closed.Load() != 1 {
		t.Fatalf("Close = %v; next closed %d times", err, rec.closed.Load())
	}
}

func TestRateLimiterConcurrent(t *testing.T) {
	var n atomic.Int64
	rl := NewRateLimiter(SenderFunc(func(context.Context, Alert) error { n.Add(1); return nil }), RateLimitConfig{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				rl.Send(context.Background(), Alert{Kind: KindMachineUnhealthy, Machine: strconv.Itoa((g + i) % 4)})
			}
		})
	}
	wg.Wait()
	if n.Load() != 4 || rl.Suppressed() != 796 {
		t.Fatalf("passed %d, suppressed %d; want 4 and 796", n.Load(), rl.Suppressed())
	}
}
