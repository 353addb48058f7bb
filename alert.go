package rediacc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/rediacc/rediacc/internal/alert"
	"github.com/rediacc/rediacc/internal/store"
)

// Kinds of Alert (Alert.Kind, and the webhook's X-Rediacc-Event header).
const (
	// AlertTaskFailed: a task's last attempt failed and its FailureAction
	// is FailureAlert. TaskID, Team, Machine, Priority, Command, Attempts,
	// ExitCode and Error describe it.
	AlertTaskFailed = alert.KindTaskFailed
	// AlertQueueDepth: more tasks are PENDING (of a priority and team, when
	// the AlertRule names them) than an AlertRule's MaxPending.
	AlertQueueDepth = alert.KindQueueDepth
	// AlertQueueAge: the oldest PENDING task (of a priority and team, when
	// the AlertRule names them) was submitted longer ago than an AlertRule's
	// MaxPendingAge.
	AlertQueueAge = alert.KindQueueAge
	// AlertMachineUnhealthy: Machine failed its health probe
	// (SeverityError).
	AlertMachineUnhealthy = alert.KindMachineUnhealthy
	// AlertMachineBusy: Machine's load averages rose above
	// HealthConfig.Thresholds (SeverityWarning): it takes no new work of
	// effective priority 3–5 until they fall below the thresholds minus
	// the hysteresis band.
	AlertMachineBusy = alert.KindMachineBusy
	// AlertKeyOverdue: SSH keys are older than Config.KeyRotation.MaxAge;
	// Team is set when they are all of one team, Message lists them
	// (fingerprints, ages, machines). A running worker raises at most one
	// per check (Config.KeyRotation.CheckInterval), rate limited like every
	// alert.
	AlertKeyOverdue = alert.KindKeyOverdue
)

// Severities of Alert (Alert.Severity).
const (
	// SeverityWarning: worth knowing; the queue copes (a busy machine).
	// LogAlerter logs it at WARN.
	SeverityWarning = alert.SeverityWarning
	// SeverityError: something failed (a task, a health probe) or a queue
	// threshold was crossed. LogAlerter logs it at ERROR. An Alert with
	// no Severity counts as SeverityError.
	SeverityError = alert.SeverityError
)

// Defaults of the alerting fields of Config.
const (
	// DefaultAlertInterval is how often a worker checks Config.AlertRules.
	DefaultAlertInterval = time.Minute
	// DefaultAlertRateWindow is Config.AlertRateWindow's default: one alert
	// per condition per 5 minutes.
	DefaultAlertRateWindow = alert.DefaultWindow
	// DefaultAlertDrainTimeout bounds how long Close goes on delivering
	// the alert outbox.
	DefaultAlertDrainTimeout = 10 * time.Second
)

// ErrAlertDropped: a WebhookAlerter's delivery queue was full and the alert
// was dropped (logged and counted in AlertDeliveryStats.Dropped).
var ErrAlertDropped = errors.New("alert dropped: the webhook delivery queue is full")

// Alert describes a condition worth telling someone about: a task whose
// last attempt failed under FailureAlert (Kind AlertTaskFailed), a queue
// threshold crossed (AlertQueueDepth, AlertQueueAge) or an unhealthy machine
// (AlertMachineUnhealthy). Secrets of the task's vault are already masked
// in Error and Message.
type Alert struct {
	// ID identifies the alert in the outbox (a UUID): the same on every
	// delivery attempt, by any worker, so that a receiver can drop the
	// duplicates at-least-once delivery may bring (webhooks also send it
	// as WebhookDeliveryHeader). "" for an alert that was never stored.
	ID string
	// Kind is one of the Alert* kind constants.
	Kind string
	// Severity is SeverityWarning or SeverityError ("" counts as error).
	Severity string
	TaskID   string // the failed task (AlertTaskFailed); "" otherwise
	Team     string // the team concerned (its name); "" for a store-wide condition
	Machine  string // the machine concerned (its name), if any
	// TeamID and MachineID are the ids of Team and Machine ("" when
	// none): rate limiting tells teams and machines apart by them.
	TeamID    string
	MachineID string
	Priority  Priority
	Command   string
	Attempts  int
	ExitCode  *int   // nil when the command never exited
	Signal    string // the signal that killed the command ("TERM"), "" otherwise
	Error     string // the last attempt's error
	// ErrorKind is the stable kind of Error; Err turns both into an error
	// for errors.Is and errors.As (as Task.Err does).
	ErrorKind ErrorKind
	// Message is a one-line human-readable summary.
	Message string
	// Suppressed is how many alerts for the same condition were held back
	// by the rate limit (Config.AlertRateWindow) since the previous one.
	Suppressed int
	Time       time.Time

	// Schedule names the schedule concerned (AlertScheduleMissed,
	// AlertScheduleFailed, and AlertTaskFailed for a task it submitted);
	// "" otherwise.
	Schedule string
}

// Alerter is told about alerts: when a task finally fails and its
// FailureAction is FailureAlert, when an AlertRule's threshold is crossed,
// when a machine fails its health probe. Every alert goes through the
// client's alert outbox (outbox.go): it is stored first, then the outbox
// dispatcher of a client that uses this Alerter (a worker's, or the
// raising client's) calls Alert: concurrently (up to
// Config.AlertConcurrency calls at once), with a ctx whose deadline is
// DefaultAlertTimeout, possibly in another process than the one that
// raised it, and at least once. A nil error acknowledges the alert; an
// error is retried with exponential backoff until Config.AlertMaxAge, or
// never when it wraps a *backoff.PermanentError
// (github.com/cenkalti/backoff/v4's backoff.Permanent). Alert.ID is the
// same on every call for one alert: drop duplicates by it.
//
// Each alerter is one endpoint of the outbox, named as NameAlerter says;
// a FanoutAlerter is split into its alerters, each its own endpoint, so a
// failing one neither blocks nor repeats the others. An Alerter that also
// has a method Close(ctx context.Context) error is closed by Client.Close
// once the outbox is drained.
type Alerter interface {
	Alert(ctx context.Context, a Alert) error
}

// AlerterFunc adapts a function to Alerter.
type AlerterFunc func(ctx context.Context, a Alert) error

// Alert calls f.
func (f AlerterFunc) Alert(ctx context.Context, a Alert) error { return f(ctx, a) }

var (
	_ Alerter = AlerterFunc(nil)
	_ Alerter = (*LogAlerter)(nil)
	_ Alerter = (*WebhookAlerter)(nil)
	_ Alerter = (*fanoutAlerter)(nil)
)

// LogAlerter logs alerts through slog, at WARN or ERROR by their Severity.
// It is the default Alerter.
type LogAlerter struct{ Logger *slog.Logger }

// severity is a.Severity, SeverityError when empty.
func (a Alert) severity() string {
	if a.Severity == "" {
		return SeverityError
	}
	return a.Severity
}

// Alert logs a at WARN (SeverityWarning) or ERROR (otherwise) with its
// context (kind, severity, task, team, machine, priority, attempts, error,
// exit code, message).
func (l *LogAlerter) Alert(ctx context.Context, a Alert) error {
	lg := l.Logger
	if lg == nil {
		lg = slog.Default()
	}
	attrs := []any{
		slog.String("kind", a.Kind), slog.String("severity", a.severity()), slog.String("task_id", a.TaskID), slog.String("team", a.Team),
		slog.String("machine", a.Machine), slog.Int("priority", int(a.Priority)),
		slog.Int("attempts", a.Attempts), slog.String("error", a.Error),
	}
	if a.ExitCode != nil {
		attrs = append(attrs, slog.Int("exit_code", *a.ExitCode))
	}
	if a.Message != "" {
		attrs = append(attrs, slog.String("message", a.Message))
	}
	if a.Suppressed > 0 {
		attrs = append(attrs, slog.Int("suppressed", a.Suppressed))
	}
	msg := "alert: " + a.Kind
	if a.Kind == AlertTaskFailed || a.Kind == "" {
		msg = "task failed: alert"
	}
	level := slog.LevelError
	if a.severity() == SeverityWarning {
		level = slog.LevelWarn
	}
	lg.Log(ctx, level, msg, attrs...)
	return nil
}

// Webhook request headers.
const (
	// WebhookSignatureHeader carries "sha256=" and the lowercase hex
	// HMAC-SHA256 of the request body under the shared secret; check it
	// with VerifyWebhookSignature on the raw body before decoding it.
	WebhookSignatureHeader = alert.HeaderSignature
	// WebhookTimestampHeader carries the Unix time (seconds) the attempt
	// was sent; it is not signed (the signed body has the alert's time).
	WebhookTimestampHeader = alert.HeaderTimestamp
	// WebhookDeliveryHeader carries an id shared by every attempt to
	// deliver one alert, so a receiver can drop duplicates after a retry.
	WebhookDeliveryHeader = alert.HeaderDelivery
	// WebhookEventHeader carries the alert's Kind.
	WebhookEventHeader = alert.HeaderEvent
)

// Defaults of WebhookConfig's zero fields.
const (
	DefaultWebhookTimeout         = alert.DefaultTimeout         // 10 s per attempt
	DefaultWebhookMaxElapsed      = alert.DefaultMaxElapsed      // 1 min of retrying per alert
	DefaultWebhookInitialInterval = alert.DefaultInitialInterval // 0.5 s before the first retry
	DefaultWebhookMaxInterval     = alert.DefaultMaxInterval     // 15 s at most between retries
	DefaultWebhookQueueSize       = alert.DefaultQueueSize       // 1000 alerts waiting
)

// WebhookConfig configures a WebhookAlerter. URL and Secret are required;
// the other zero fields mean their documented defaults.
type WebhookConfig struct {
	// URL receives the POSTs: http:// or https://. Only its scheme and
	// host are ever logged (its path or query may hold a token).
	URL string
	// Secret is the HMAC-SHA256 key shared with the receiver; keep it in a
	// team vault (Client.GetSecret). Required: unsigned webhooks are
	// refused, since anyone who can reach the receiver could forge them.
	Secret []byte
	// Timeout bounds each HTTP attempt, from dialing to reading the
	// response. Default DefaultWebhookTimeout (10 s).
	Timeout time.Duration
	// MaxElapsed bounds the time spent retrying one alert given to Alert
	// directly, from its first attempt; then the delivery counts as failed
	// and is logged. Default DefaultWebhookMaxElapsed (1 min). A Client's
	// outbox retries until Config.AlertMaxAge instead.
	MaxElapsed time.Duration
	// InitialInterval and MaxInterval shape the exponential backoff
	// between attempts (github.com/cenkalti/backoff: factor 1.5, ±50 %
	// jitter). Defaults DefaultWebhookInitialInterval (0.5 s) and
	// DefaultWebhookMaxInterval (15 s). A Retry-After from a 429 or 503 is
	// honoured up to MaxInterval. Network errors, timeouts, 408, 429 and
	// 5xx are retried; other 4xx, 3xx and TLS verification errors are not.
	InitialInterval, MaxInterval time.Duration
	// QueueSize is how many alerts given to Alert directly may wait in
	// memory for delivery; when full, Alert drops new ones
	// (ErrAlertDropped). Default DefaultWebhookQueueSize. A Client's alerts
	// wait in its store's outbox, which has no such limit.
	QueueSize int
	// Redact masks secrets in Error and Message when an alert is queued,
	// and, for a Client's alerts, before they are stored in the outbox
	// (the worker has already masked the task's vault secrets; use this for
	// alerts of your own). Default: none.
	Redact func(string) string
	// Logger receives dropped and failed deliveries. Default slog.Default().
	Logger *slog.Logger
	// HTTPClient sends the requests. Default: a client of its own that
	// does not follow redirects and whose idle connections Close closes.
	HTTPClient *http.Client
}

// AlertDeliveryStats are a WebhookAlerter's delivery counters since it was
// made (summed over the webhooks of a FanoutAlerter).
type AlertDeliveryStats struct {
	Delivered uint64 // accepted by the receiver (2xx)
	Failed    uint64 // given up after at least one attempt
	Dropped   uint64 // never attempted: queue full, or still queued at Close's deadline
	Retries   uint64 // attempts after the first, over all alerts
	Queued    int    // waiting now
}

func (s *AlertDeliveryStats) add(o AlertDeliveryStats) {
	s.Delivered += o.Delivered
	s.Failed += o.Failed
	s.Dropped += o.Dropped
	s.Retries += o.Retries
	s.Queued += o.Queued
}

// deliveryStatser is implemented by alerters that count deliveries; the
// Prometheus collector reads it.
type deliveryStatser interface {
	deliveryStats() (AlertDeliveryStats, bool)
}

// WebhookAlerter POSTs each alert as JSON to a URL, signed with
// HMAC-SHA256 of a shared secret.
//
// As (or in) Config.Alerter, it is an endpoint of the client's alert
// outbox: the outbox dispatcher makes each attempt (Timeout each, up to
// Config.AlertConcurrency at once), retries failed ones with the backoff
// of InitialInterval and MaxInterval until Config.AlertMaxAge (MaxElapsed
// and QueueSize do not apply), backs off the whole endpoint while it is
// down (no connection, 429, 502, 503, 504, honouring Retry-After), and
// gives an alert up at once on a 3xx, a 4xx other than 408 and 429, or a
// TLS verification error. Undelivered alerts wait in the store, not in
// memory: nothing is dropped.
//
// Called directly, Alert only queues the alert in memory: one goroutine
// delivers the queue in order, retrying with exponential backoff for up to
// MaxElapsed; a delivery that finally fails is logged and counted (Stats),
// and a full queue drops alerts (ErrAlertDropped).
//
// The body is a JSON object: id (Alert.ID), kind, taskId, team, machine,
// priority, attempts, exitCode (null when the command never exited),
// error, message, time (RFC 3339), and suppressed when the rate limit held
// some back. Headers: WebhookSignatureHeader, WebhookTimestampHeader,
// WebhookDeliveryHeader (the alert's ID), WebhookEventHeader. Make one
// with NewWebhookAlerter; Close it (Client.Close does when it is, or is
// in, Config.Alerter).
type WebhookAlerter struct {
	w   *alert.Webhook
	url string
}

// NewWebhookAlerter validates cfg and starts the delivery goroutine.
// Errors wrap ErrInvalidArgument: a missing or non-http(s) URL, an empty
// Secret (unsigned webhooks are refused), a negative duration or queue
// size.
func NewWebhookAlerter(cfg WebhookConfig) (*WebhookAlerter, error) {
	w, err := alert.NewWebhook(alert.WebhookConfig{
		URL: cfg.URL, Secret: cfg.Secret, Timeout: cfg.Timeout, MaxElapsed: cfg.MaxElapsed,
		InitialInterval: cfg.InitialInterval, MaxInterval: cfg.MaxInterval, QueueSize: cfg.QueueSize,
		Redact: cfg.Redact, Logger: cfg.Logger, Client: cfg.HTTPClient,
	})
	if err != nil {
		if errors.Is(err, alert.ErrConfig) && len(cfg.Secret) == 0 {
			return nil, fmt.Errorf("%w: webhook alerter: no signing secret (unsigned webhooks are refused)", ErrInvalidArgument)
		}
		return nil, fmt.Errorf("%w: webhook alerter: %v", ErrInvalidArgument, err)
	}
	return &WebhookAlerter{w: w, url: cfg.URL}, nil
}

// Alert queues a for delivery and returns at once; ctx is not used
// (delivery outlives the caller). Errors: ErrAlertDropped when the queue is
// full, ErrClosed after Close. A Client's outbox does not call it: it makes
// its attempts itself (see WebhookAlerter).
func (w *WebhookAlerter) Alert(ctx context.Context, a Alert) error {
	err := w.w.Send(ctx, toInternalAlert(a))
	switch {
	case errors.Is(err, alert.ErrQueueFull):
		return fmt.Errorf("%w (task %q, kind %s)", ErrAlertDropped, a.TaskID, a.Kind)
	case errors.Is(err, alert.ErrClosed):
		return fmt.Errorf("%w: webhook alerter", ErrClosed)
	}
	return err
}

// Close stops accepting alerts and delivers the queued ones until ctx is
// done; then the delivery in progress is abandoned (counted as failed), the
// rest are dropped (counted), and Close returns ctx's error once its
// goroutine has exited. Calling Close again returns nil.
func (w *WebhookAlerter) Close(ctx context.Context) error { return w.w.Close(ctx) }

// Stats returns the delivery counters; safe to call at any time.
func (w *WebhookAlerter) Stats() AlertDeliveryStats {
	s := w.w.Stats()
	return AlertDeliveryStats{Delivered: s.Delivered, Failed: s.Failed, Dropped: s.Dropped, Retries: s.Retries, Queued: s.Queued}
}

func (w *WebhookAlerter) deliveryStats() (AlertDeliveryStats, bool) { return w.Stats(), true }

// VerifyWebhookSignature reports whether signature (a WebhookSignatureHeader
// value) is the HMAC-SHA256 of body under secret, in constant time.
// Receivers call it on the raw request body before decoding it.
func VerifyWebhookSignature(secret, body []byte, signature string) bool {
	return alert.Verify(secret, body, signature)
}

func toInternalAlert(a Alert) alert.Alert {
	ia := alert.Alert{
		Kind: a.Kind, Severity: a.severity(), TaskID: a.TaskID, Team: a.Team, Machine: a.Machine, TeamID: a.TeamID, MachineID: a.MachineID, Priority: int(a.Priority),
		Attempts: a.Attempts, ExitCode: a.ExitCode, Signal: a.Signal, Error: a.Error, ErrorKind: string(a.ErrorKind),
		Message: a.Message, Suppressed: a.Suppressed, Time: a.Time, Schedule: a.Schedule,
	}
	if a.Schedule != "" && a.TaskID == "" { // each schedule is its own condition
		ia.Key = alert.DefaultKey(ia) + "\x00" + a.Schedule
	}
	return ia
}

// Err returns the failed task's error (AlertTaskFailed) as Task.Err does:
// errors.Is matches the sentinel of ErrorKind, errors.As finds an
// *ExitError for ErrorKindExit. Nil for alerts without an error.
func (a Alert) Err() error {
	return storedErr(a.Error, a.ErrorKind, a.ExitCode, a.Signal, "", a.Machine)
}

// FanoutAlerter returns an Alerter that passes every alert to each of
// alerters in order (nil ones are skipped), even when some fail, and
// returns their errors joined. The result also has
// Close(ctx context.Context) error, which closes those of alerters that
// have one, concurrently, under the same ctx; so Client.Close drains them
// all when the fan-out is Config.Alerter.
func FanoutAlerter(alerters ...Alerter) Alerter {
	f := &fanoutAlerter{}
	for _, a := range alerters {
		if a != nil {
			f.alerters = append(f.alerters, a)
		}
	}
	return f
}

type fanoutAlerter struct{ alerters []Alerter }

func (f *fanoutAlerter) Alert(ctx context.Context, a Alert) error {
	var errs []error
	for _, al := range f.alerters {
		if err := al.Alert(ctx, a); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (f *fanoutAlerter) Close(ctx context.Context) error {
	errs := make([]error, len(f.alerters))
	var wg sync.WaitGroup
	for i, al := range f.alerters {
		if c, ok := al.(alerterCloser); ok {
			wg.Go(func() { errs[i] = c.Close(ctx) })
		}
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (f *fanoutAlerter) deliveryStats() (AlertDeliveryStats, bool) {
	var sum AlertDeliveryStats
	any := false
	for _, al := range f.alerters {
		if s, ok := al.(deliveryStatser); ok {
			if st, ok := s.deliveryStats(); ok {
				sum.add(st)
				any = true
			}
		}
	}
	return sum, any
}

type alerterCloser interface {
	Close(ctx context.Context) error
}

// AlertRule is a threshold on the queue that a running worker (Run)
// checks every Config.AlertInterval. A rule with both thresholds zero does
// nothing. Repeats of the same condition (kind, team, priority) are rate
// limited to one per Config.AlertRateWindow; the alert that goes through
// says how many were held back (Alert.Suppressed).
type AlertRule struct {
	// Priority narrows the rule to one level; 0 means every level.
	Priority Priority
	// Team narrows the rule to one team; "" means every team.
	Team string
	// MaxPending raises AlertQueueDepth when more than MaxPending tasks
	// are PENDING (ready, or waiting out a retry delay). 0: not checked.
	MaxPending int
	// MaxPendingAge raises AlertQueueAge when the oldest PENDING task was
	// submitted longer ago than MaxPendingAge (measured from its creation,
	// so retries do not reset it). 0: not checked.
	MaxPendingAge time.Duration
}

func (r AlertRule) validate() error {
	switch {
	case r.Priority != 0 && r.Priority.Validate() != nil:
		return fmt.Errorf("%w: alert rule: priority %d (use 0 for every level, or 1..5)", ErrInvalidArgument, int(r.Priority))
	case r.MaxPending < 0 || r.MaxPendingAge < 0:
		return fmt.Errorf("%w: alert rule: negative MaxPending or MaxPendingAge", ErrInvalidArgument)
	}
	return nil
}

// alertingDefaults validates the alerting fields of cfg and fills their
// defaults.
func alertingDefaults(cfg *Config) error {
	if cfg.AlertInterval < 0 || cfg.AlertRateWindow < 0 || cfg.AlertDrainTimeout < 0 || cfg.AlertMaxAge < 0 || cfg.AlertConcurrency < 0 {
		return fmt.Errorf("%w: negative AlertInterval, AlertRateWindow, AlertDrainTimeout, AlertMaxAge or AlertConcurrency", ErrInvalidArgument)
	}
	for _, r := range cfg.AlertRules {
		if err := r.validate(); err != nil {
			return err
		}
	}
	if cfg.AlertInterval == 0 {
		cfg.AlertInterval = DefaultAlertInterval
	}
	if cfg.AlertRateWindow == 0 {
		cfg.AlertRateWindow = DefaultAlertRateWindow
	}
	if cfg.AlertDrainTimeout == 0 {
		cfg.AlertDrainTimeout = DefaultAlertDrainTimeout
	}
	if cfg.AlertMaxAge == 0 {
		cfg.AlertMaxAge = DefaultAlertMaxAge
	}
	if cfg.AlertConcurrency == 0 {
		cfg.AlertConcurrency = DefaultAlertConcurrency
	}
	return nil
}

// raiseAlert stores a in the alert outbox (outbox.go), in a transaction of
// its own, unless an alert for the same condition was stored less than
// Config.AlertRateWindow ago (then it is counted as suppressed, durably,
// and nil is returned); the outbox dispatcher delivers it. The condition
// is a's Kind, Team, Machine, Priority and TaskID (alert.DefaultKey):
// every failed task is its own condition. a.Time defaults to now. It
// returns the store's error; it does not log it. For the threshold rules,
// the health prober and other periodic checks (a failed task's alert is
// stored with its Finish, worker.go); not a public operation: no actor.
func (c *Client) raiseAlert(ctx context.Context, a Alert) error {
	var res store.AlertResult
	req, err := c.alertRequest(a, &res)
	if err != nil {
		return err
	}
	if _, err := c.ob.engine.EnqueueAlerts(store.WithoutAlerts(ctx), req); err != nil {
		return fmt.Errorf("rediacc: storing a %s alert: %w", a.Kind, mapStoreErr(err))
	}
	c.alertStored(a.Kind, res)
	return nil
}

// closeAlerter drains the alert outbox within Config.AlertDrainTimeout
// (what is left stays stored for the next worker), then closes
// Config.Alerter when it can be closed.
func (c *Client) closeAlerter() error {
	deadline := time.Now().Add(c.cfg.AlertDrainTimeout)
	c.closeOutbox(deadline)
	cl, ok := c.alerter.(alerterCloser)
	if !ok {
		return nil
	}
	if soon := time.Now().Add(time.Second); deadline.Before(soon) {
		deadline = soon // the outbox used the drain time: a moment for the alerter's own goroutines
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if err := cl.Close(ctx); err != nil {
		return fmt.Errorf("rediacc: closing the alerter: %w", err)
	}
	return nil
}

// alertRuleTicker returns the channel on which the worker checks
// Config.AlertRules (nil, never ready, when there are none) and its stop.
func (c *Client) alertRuleTicker() (<-chan time.Time, func()) {
	if len(c.cfg.AlertRules) == 0 {
		return nil, func() {}
	}
	t := time.NewTicker(c.cfg.AlertInterval)
	return t.C, t.Stop
}

// checkAlertRules evaluates Config.AlertRules over the whole store (an
// internal check of the worker, not an actor's operation) and raises the
// alerts whose threshold is crossed.
func (c *Client) checkAlertRules(ctx context.Context, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, max(c.cfg.AlertInterval, 5*time.Second))
	defer cancel()
	var rows []store.DepthRow
	now := c.clock.Now().UTC()
	for _, r := range c.cfg.AlertRules {
		scope := describeScope(r.Priority, r.Team)
		teamID := ""
		if r.Team != "" { // the live team of that name, by id
			t, err := c.access.TeamByName(ctx, r.Team)
			if err != nil {
				if !errors.Is(err, store.ErrNotFound) {
					log.ErrorContext(ctx, "alert rules: team", "team", r.Team, "error", err)
				}
				continue
			}
			teamID = t.ID
		}
		if r.MaxPending > 0 {
			if rows == nil {
				var err error
				if rows, err = c.engine.Depth(ctx); err != nil {
					log.ErrorContext(ctx, "alert rules: queue depth", "error", err)
					return
				}
				if rows == nil {
					rows = []store.DepthRow{}
				}
			}
			n := 0
			for _, d := range rows {
				if d.Status == store.Pending && (r.Priority == 0 || d.Priority == int(r.Priority)) && (teamID == "" || d.TeamID == teamID) {
					n += d.Count
				}
			}
			if n > r.MaxPending {
				c.raiseRule(ctx, log, Alert{Kind: AlertQueueDepth, Severity: SeverityError, Team: r.Team, TeamID: teamID, Priority: r.Priority, Time: now,
					Message: fmt.Sprintf("%d PENDING tasks%s, above the threshold of %d", n, scope, r.MaxPending)})
			}
		}
		if r.MaxPendingAge > 0 {
			ts, err := c.engine.ListTasks(ctx, store.TaskFilter{Statuses: []store.Status{store.Pending},
				TeamID: teamID, Priority: int(r.Priority), Limit: 1})
			if err != nil {
				log.ErrorContext(ctx, "alert rules: oldest pending task", "error", err)
				return
			}
			if len(ts) == 1 {
				if age := now.Sub(ts[0].CreatedAt); age > r.MaxPendingAge {
					c.raiseRule(ctx, log, Alert{Kind: AlertQueueAge, Severity: SeverityError, Team: r.Team, TeamID: teamID, Priority: r.Priority, Time: now,
						Message: fmt.Sprintf("the oldest PENDING task%s (%s, on %s) was submitted %s ago, above the threshold of %s",
							scope, ts[0].ID, ts[0].Machine, age.Round(time.Second), r.MaxPendingAge)})
				}
			}
		}
	}
}

func (c *Client) raiseRule(ctx context.Context, log *slog.Logger, a Alert) {
	if err := c.raiseAlert(ctx, a); err != nil {
		log.ErrorContext(ctx, "alert delivery failed", "kind", a.Kind, "error", err)
	}
}

func describeScope(p Priority, team string) string {
	s := ""
	if p != 0 {
		s = fmt.Sprintf(" of priority %d (%s)", int(p), p)
	}
	if team != "" {
		s += fmt.Sprintf(" in team %q", team)
	}
	return s
}

// clipLine keeps the first line of s, at most n bytes (cut at a rune
// boundary), for one-line messages.
func clipLine(s string, n int) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " …"
	}
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
