package alert

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/cenkalti/backoff/v4"
)

// Webhook request headers.
const (
	// HeaderSignature carries "sha256=" and the lowercase hex HMAC-SHA256
	// of the request body under the shared secret (see [Sign], [Verify]).
	HeaderSignature = "X-Rediacc-Signature"
	// HeaderTimestamp carries the Unix time in seconds when the attempt
	// was sent (not signed: the signed body has the alert's time).
	HeaderTimestamp = "X-Rediacc-Timestamp"
	// HeaderDelivery carries an id that is the same for every attempt to
	// deliver one alert, so a receiver can drop duplicates after a retry:
	// the alert's ID when it has one (an alert from an outbox: the same on
	// every worker), else one made for the delivery.
	HeaderDelivery = "X-Rediacc-Delivery"
	// HeaderEvent carries the alert's Kind.
	HeaderEvent = "X-Rediacc-Event"
)

// Defaults for [WebhookConfig].
const (
	DefaultTimeout         = 10 * time.Second
	DefaultMaxElapsed      = time.Minute
	DefaultInitialInterval = 500 * time.Millisecond
	DefaultMaxInterval     = 15 * time.Second
	DefaultQueueSize       = 1000
	// MaxTextBytes is the most bytes of Alert.Error and Alert.Message a
	// webhook sends; longer text is cut (after redaction, at a UTF-8
	// boundary) and ends with "…[truncated]".
	MaxTextBytes = 16 << 10
)

// Sentinel errors.
var (
	// ErrQueueFull is returned by [Webhook.Send] when its queue is full:
	// the alert was dropped (and logged and counted).
	ErrQueueFull = errors.New("alert: webhook queue full, alert dropped")
	// ErrClosed is returned by [Webhook.Send] after [Webhook.Close].
	ErrClosed = errors.New("alert: webhook closed")
	// ErrConfig is returned by [NewWebhook] for an invalid configuration.
	ErrConfig = errors.New("alert: invalid webhook config")
)

// WebhookConfig configures a [Webhook]. URL and Secret are required; zero
// values of the other fields mean their defaults.
type WebhookConfig struct {
	// URL receives the POSTs; http or https. Only its scheme and host are
	// ever logged (a path or query may hold a token).
	URL string
	// Secret is the HMAC-SHA256 key shared with the receiver (keep it in
	// the team vault). Required, non-empty.
	Secret []byte
	// Timeout bounds each HTTP attempt, from dialing to reading the
	// response. Default [DefaultTimeout] (10 s).
	Timeout time.Duration
	// MaxElapsed bounds the time spent retrying one alert, from its first
	// attempt; then it counts as failed. Default [DefaultMaxElapsed] (1 min).
	MaxElapsed time.Duration
	// InitialInterval and MaxInterval shape the exponential backoff
	// between attempts (factor 1.5, ±50 % jitter). Defaults
	// [DefaultInitialInterval] (0.5 s) and [DefaultMaxInterval] (15 s).
	// A Retry-After from a 429 or 503 is honoured up to MaxInterval.
	InitialInterval, MaxInterval time.Duration
	// QueueSize is how many alerts wait for delivery before Send drops new
	// ones. Default [DefaultQueueSize] (1000).
	QueueSize int
	// Redact masks secrets; it is applied to Error and Message when the
	// alert is enqueued. Default: none.
	Redact func(string) string
	// Logger receives dropped and failed deliveries (at WARN/ERROR).
	// Default slog.Default().
	Logger *slog.Logger
	// Client sends the requests. Default: a client of its own that does
	// not follow redirects (a 3xx is a permanent failure) and whose idle
	// connections are closed by Close.
	Client *http.Client
}

// WebhookStats are a [Webhook]'s delivery counters since it was made.
type WebhookStats struct {
	// Delivered: alerts the receiver accepted (2xx).
	Delivered uint64
	// Failed: alerts given up on after at least one attempt: a permanent
	// error (4xx other than 408 and 429, 3xx, a TLS verification error),
	// MaxElapsed exhausted, or interrupted by Close's deadline.
	Failed uint64
	// Dropped: alerts never attempted: the queue was full, or they were
	// still queued when Close's deadline passed.
	Dropped uint64
	// Retries: attempts after the first, over all alerts.
	Retries uint64
	// Queued: alerts waiting now (not counting the one being delivered).
	Queued int
}

// Webhook is an asynchronous webhook [Sender]: Send enqueues the alert, and
// one goroutine delivers the queue in order, each alert as a JSON POST (see
// [Alert] for the body) with the headers [HeaderSignature],
// [HeaderTimestamp], [HeaderDelivery] and [HeaderEvent], retried with
// exponential backoff (github.com/cenkalti/backoff/v4) on network errors,
// timeouts, 408, 429 and 5xx. Because delivery is serial, a receiver that is
// down holds each alert for up to MaxElapsed and the queue fills: new
// alerts are then dropped and counted rather than block the caller.
// Make one with [NewWebhook]; call [Webhook.Close] when done.
type Webhook struct {
	cfg      WebhookConfig
	client   *http.Client
	ownTr    *http.Transport // closed by Close; nil for a caller's Client
	endpoint string          // scheme://host, for logs

	mu     sync.RWMutex // guards closed against Send on a closed queue
	closed bool
	queue  chan Alert
	ctx    context.Context // cancelled when Close's deadline passes
	cancel context.CancelFunc
	done   chan struct{}

	delivered, failed, dropped, retries atomic.Uint64
}

// NewWebhook validates cfg, applies the defaults and starts the delivery
// goroutine. Errors wrap [ErrConfig]: a missing or non-http(s) URL, an
// empty Secret, a negative duration or queue size.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: URL must be http(s)://host/...", ErrConfig)
	}
	if len(cfg.Secret) == 0 {
		return nil, fmt.Errorf("%w: empty signing secret", ErrConfig)
	}
	if cfg.Timeout < 0 || cfg.MaxElapsed < 0 || cfg.InitialInterval < 0 || cfg.MaxInterval < 0 || cfg.QueueSize < 0 {
		return nil, fmt.Errorf("%w: negative duration or queue size", ErrConfig)
	}
	setDefault(&cfg.Timeout, DefaultTimeout)
	setDefault(&cfg.MaxElapsed, DefaultMaxElapsed)
	setDefault(&cfg.InitialInterval, DefaultInitialInterval)
	setDefault(&cfg.MaxInterval, DefaultMaxInterval)
	setDefault(&cfg.QueueSize, DefaultQueueSize)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Secret = bytes.Clone(cfg.Secret)
	w := &Webhook{
		cfg:      cfg,
		client:   cfg.Client,
		endpoint: u.Scheme + "://" + u.Host,
		queue:    make(chan Alert, cfg.QueueSize),
		done:     make(chan struct{}),
	}
	if w.client == nil {
		w.ownTr = http.DefaultTransport.(*http.Transport).Clone()
		w.client = &http.Client{
			Transport:     w.ownTr,
			Timeout:       cfg.Timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	go w.run()
	return w, nil
}

func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// Send redacts a's Error and Message, and enqueues a for delivery; it never
// blocks and ignores ctx (delivery outlives the caller's request). It
// returns [ErrQueueFull] when the queue is full (the alert is dropped,
// logged and counted) and [ErrClosed] after Close.
func (w *Webhook) Send(_ context.Context, a Alert) error {
	if w.cfg.Redact != nil {
		a.Error = w.cfg.Redact(a.Error)
		a.Message = w.cfg.Redact(a.Message)
	}
	a.Error, a.Message = truncate(a.Error), truncate(a.Message)
	if a.ExitCode != nil { // the caller may reuse its variable
		c := *a.ExitCode
		a.ExitCode = &c
	}
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return ErrClosed
	}
	select {
	case w.queue <- a:
		return nil
	default:
		w.dropped.Add(1)
		w.cfg.Logger.Warn("alert: webhook queue full, alert dropped", w.attrs(a)...)
		return ErrQueueFull
	}
}

func truncate(s string) string {
	if len(s) <= MaxTextBytes {
		return s
	}
	const mark = "…[truncated]"
	cut := MaxTextBytes - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// Close stops accepting alerts and delivers those already queued, waiting
// until ctx is done. If ctx ends first, the delivery in progress is
// abandoned (counted as failed) and those still queued are dropped
// (counted); Close then returns ctx's error once the goroutine has exited.
// Calling Close again returns nil.
func (w *Webhook) Close(ctx context.Context) error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		<-w.done
		return nil
	}
	w.closed = true
	close(w.queue)
	w.mu.Unlock()

	var err error
	select {
	case <-w.done:
	case <-ctx.Done():
		err = ctx.Err()
		w.cancel()
		<-w.done
	}
	w.cancel()
	if w.ownTr != nil {
		w.ownTr.CloseIdleConnections()
	}
	return err
}

// Stats returns the delivery counters (safe to call at any time, for
// metrics).
func (w *Webhook) Stats() WebhookStats {
	return WebhookStats{
		Delivered: w.delivered.Load(),
		Failed:    w.failed.Load(),
		Dropped:   w.dropped.Load(),
		Retries:   w.retries.Load(),
		Queued:    len(w.queue),
	}
}

func (w *Webhook) attrs(a Alert, extra ...any) []any {
	return append([]any{
		slog.String("endpoint", w.endpoint), slog.String("kind", a.Kind),
		slog.String("task_id", a.TaskID), slog.String("team", a.Team), slog.String("machine", a.Machine),
	}, extra...)
}

func (w *Webhook) run() {
	defer close(w.done)
	for a := range w.queue {
		if w.ctx.Err() != nil {
			w.dropped.Add(1)
			w.cfg.Logger.Warn("alert: webhook closed before delivery, alert dropped", w.attrs(a)...)
			continue
		}
		w.deliver(a)
	}
}

// deliver POSTs a until it is accepted, fails permanently, runs out of
// retry time or the webhook is cancelled.
func (w *Webhook) deliver(a Alert) {
	body, err := json.Marshal(a)
	if err != nil { // cannot happen for Alert; count it anyway
		w.failed.Add(1)
		w.cfg.Logger.Error("alert: encoding alert", w.attrs(a, slog.Any("err", err))...)
		return
	}
	sig := Sign(w.cfg.Secret, body)
	id := a.ID
	if id == "" {
		id = rand.Text()
	}
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(w.cfg.InitialInterval),
		backoff.WithMaxInterval(w.cfg.MaxInterval),
		backoff.WithMaxElapsedTime(w.cfg.MaxElapsed),
	)
	b.Reset()
	for attempt := 1; ; attempt++ {
		_, retryAfter, err := w.post(w.ctx, body, sig, id, a.Kind)
		if err == nil {
			w.delivered.Add(1)
			return
		}
		fail := func(why string) {
			w.failed.Add(1)
			w.cfg.Logger.Error("alert: webhook delivery failed: "+why,
				w.attrs(a, slog.Int("attempts", attempt), slog.Any("err", err))...)
		}
		if w.ctx.Err() != nil {
			fail("webhook closed")
			return
		}
		var perm *backoff.PermanentError
		if errors.As(err, &perm) {
			fail("permanent error")
			return
		}
		next := b.NextBackOff()
		if next == backoff.Stop {
			fail("retries exhausted")
			return
		}
		next = max(next, min(retryAfter, w.cfg.MaxInterval))
		t := time.NewTimer(next)
		select {
		case <-t.C:
		case <-w.ctx.Done():
			t.Stop()
			fail("webhook closed")
			return
		}
		w.retries.Add(1)
	}
}

// post makes one attempt under ctx and Timeout. A permanent failure is a
// *backoff.PermanentError; code is the HTTP status (0 when there was no
// response); retryAfter is the server's Retry-After (0 if none).
func (w *Webhook) post(ctx context.Context, body []byte, sig, id, kind string) (code int, retryAfter time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return 0, 0, backoff.Permanent(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "rediacc-alert/1")
	req.Header.Set(HeaderSignature, sig)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(time.Now().Unix(), 10))
	req.Header.Set(HeaderDelivery, id)
	req.Header.Set(HeaderEvent, kind)
	resp, err := w.client.Do(req)
	if err != nil {
		var cv *tls.CertificateVerificationError
		if errors.As(err, &cv) {
			return 0, 0, backoff.Permanent(err)
		}
		return 0, 0, err
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // reuse the connection
	code = resp.StatusCode
	if code >= 200 && code < 300 {
		return code, 0, nil
	}
	err = fmt.Errorf("HTTP %d: %s", code, strings.TrimSpace(strings.ToValidUTF8(string(snippet), "?")))
	switch {
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		return code, parseRetryAfter(resp.Header.Get("Retry-After")), err
	case code == http.StatusRequestTimeout || code >= 500:
		return code, 0, err
	default:
		return code, 0, backoff.Permanent(err)
	}
}

// AttemptError is a failed [Webhook.Attempt]: its error and how to retry.
type AttemptError struct {
	Err error
	// Permanent: the receiver refused the alert for good (3xx, 4xx other
	// than 408 and 429, a TLS verification error): do not retry it.
	Permanent bool
	// Unavailable: the receiver as a whole is failing (no connection, a
	// timeout, 429, 502, 503, 504): back off every delivery to it, not
	// only this one.
	Unavailable bool
	// RetryAfter is the receiver's Retry-After (429, 503), 0 when none.
	RetryAfter time.Duration
}

func (e *AttemptError) Error() string { return e.Err.Error() }
func (e *AttemptError) Unwrap() error { return e.Err }

// Attempt makes one delivery attempt of a, now, under ctx and Timeout: the
// same redaction, truncation, body and headers as the queued deliveries,
// with a.ID as the [HeaderDelivery] id when set (a new one otherwise). It
// returns nil when the receiver accepted it (2xx), else an
// [*AttemptError]; it does not retry (the caller, such as an outbox,
// does) and does not use the queue, so it works after [Webhook.Close] too.
// Counted in [Webhook.Stats]: Delivered, Failed (a permanent error), and
// Retries for attempts whose number (1-based) is above 1.
func (w *Webhook) Attempt(ctx context.Context, a Alert, number int) error {
	if w.cfg.Redact != nil {
		a.Error = w.cfg.Redact(a.Error)
		a.Message = w.cfg.Redact(a.Message)
	}
	a.Error, a.Message = truncate(a.Error), truncate(a.Message)
	if number > 1 {
		w.retries.Add(1)
	}
	body, err := json.Marshal(a)
	if err != nil {
		w.failed.Add(1)
		return &AttemptError{Err: err, Permanent: true}
	}
	id := a.ID
	if id == "" {
		id = rand.Text()
	}
	code, retryAfter, err := w.post(ctx, body, Sign(w.cfg.Secret, body), id, a.Kind)
	if err == nil {
		w.delivered.Add(1)
		return nil
	}
	var perm *backoff.PermanentError
	if errors.As(err, &perm) {
		w.failed.Add(1)
		return &AttemptError{Err: perm.Err, Permanent: true}
	}
	unavailable := code == 0 || code == http.StatusTooManyRequests || code == http.StatusBadGateway ||
		code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
	return &AttemptError{Err: err, Unavailable: unavailable, RetryAfter: min(retryAfter, w.cfg.MaxInterval)}
}

// Endpoint returns the scheme and host of the webhook's URL (what logs
// show of it).
func (w *Webhook) Endpoint() string { return w.endpoint }

// Backoff returns the webhook's initial and maximum intervals between
// attempts and its attempt timeout (the configured values or defaults).
func (w *Webhook) Backoff() (initial, maxInterval, timeout time.Duration) {
	return w.cfg.InitialInterval, w.cfg.MaxInterval, w.cfg.Timeout
}

// Redact applies the webhook's redactor to s (s itself when it has none).
func (w *Webhook) Redact(s string) string {
	if w.cfg.Redact == nil {
		return s
	}
	return w.cfg.Redact(s)
}

func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, time.Until(t))
	}
	return 0
}

// Sign returns the [HeaderSignature] value for body: "sha256=" followed by
// the lowercase hex HMAC-SHA256 of body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify reports whether signature (a [HeaderSignature] value) is body's
// signature under secret, in constant time. Receivers call it on the raw
// request body before decoding it.
func Verify(secret, body []byte, signature string) bool {
	hexSig, ok := strings.CutPrefix(signature, "sha256=")
	if !ok {
		return false
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return hmac.Equal(got, m.Sum(nil))
}
