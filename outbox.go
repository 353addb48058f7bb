package rediacc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rediacc/rediacc/internal/alert"
	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

// The alert outbox. Every alert is written to the store first: a failed
// task's alert in the transaction that records the task FAILED (so it is
// never lost, nor raised for a change that did not happen), the other
// kinds (queue thresholds, machine health, …) in one of their own. The
// rate limit is decided there too, per condition, so a restart neither
// re-sends a suppressed repeat nor forgets how many were held back.
//
// Each alert is then delivered to every alert endpoint of the store (the
// alerters of Config.Alerter, flattened out of FanoutAlerter and named by
// alertEndpointName, registered by the clients that use them) by an outbox
// dispatcher: one per client, started by Run or by the client's first
// alert, stopped by Close. For each endpoint it claims due deliveries under
// a lease (as tasks are claimed), so that two workers, in one process or
// many, never hold the same delivery at once, and attempts up to
// Config.AlertConcurrency of them concurrently. A delivery is marked
// delivered when the endpoint acknowledges it (Alerter.Alert returns nil; a
// webhook answers 2xx); a failed attempt is retried with exponential backoff
// (github.com/cenkalti/backoff/v4) of its own, and an endpoint that is down
// as a whole (no connection, 429, 502–504) backs off as a whole, probed by
// one attempt at a time, so it neither delays other endpoints nor is
// hammered. Deliveries still waiting when a client stops stay in the store
// and are picked up by the next worker. Delivery is at least once: Alert.ID
// (and the webhook's X-Rediacc-Delivery header) is the same on every attempt
// so that receivers can drop duplicates.

// Delivery states of an alert at one endpoint (AlertDelivery.State).
const (
	// AlertPending: waiting for an attempt, or for another one
	// (AlertDelivery.NextAttemptAt).
	AlertPending = store.DeliveryPending
	// AlertDelivered: the endpoint acknowledged the alert.
	AlertDelivered = store.DeliveryDelivered
	// AlertFailed: given up: the endpoint refused it for good (a webhook's
	// 4xx other than 408 and 429, an Alerter's backoff.Permanent error).
	AlertFailed = store.DeliveryFailed
	// AlertExpired: given up: not delivered within Config.AlertMaxAge, or
	// no worker served the endpoint for that long.
	AlertExpired = store.DeliveryExpired
)

// Defaults of the outbox fields of Config.
const (
	// DefaultAlertMaxAge is Config.AlertMaxAge's default: an alert is
	// retried for a day.
	DefaultAlertMaxAge = 24 * time.Hour
	// DefaultAlertConcurrency is Config.AlertConcurrency's default.
	DefaultAlertConcurrency = 8
	// DefaultAlertTimeout bounds one call of an Alerter's Alert method
	// (its ctx's deadline); a WebhookAlerter's attempts are bounded by its
	// own WebhookConfig.Timeout.
	DefaultAlertTimeout = 30 * time.Second
)

// AlertDelivery is an alert's delivery to one endpoint.
type AlertDelivery struct {
	// Endpoint names the alerter ("log", "webhook:https://host#…",
	// "alerter", or a NameAlerter name).
	Endpoint string `json:"endpoint"`
	// State is AlertPending, AlertDelivered, AlertFailed or AlertExpired.
	State string `json:"state"`
	// Attempts counts the attempts made.
	Attempts int `json:"attempts"`
	// LastError is the last failed attempt's error ("" when none).
	LastError     string    `json:"lastError,omitempty"`
	LastAttemptAt time.Time `json:"lastAttemptAt,omitzero"`
	// NextAttemptAt is when a pending delivery is tried next.
	NextAttemptAt time.Time `json:"nextAttemptAt,omitzero"`
	// DoneAt is when it was delivered or given up (zero while pending).
	DoneAt time.Time `json:"doneAt,omitzero"`
	// Worker is the worker (Config.WorkerID) holding the pending
	// delivery's lease while it attempts it, until LeaseExpiresAt; ""
	// when none. A lease that has expired (its worker died or lost the
	// store) is free: another worker takes the delivery over.
	Worker         string    `json:"worker,omitempty"`
	LeaseExpiresAt time.Time `json:"leaseExpiresAt,omitzero"`
}

// AlertRecord is an alert in the outbox with its deliveries (ListAlerts).
type AlertRecord struct {
	Alert
	// Deliveries are its deliveries, by endpoint name.
	Deliveries []AlertDelivery
}

// Delivered reports whether every endpoint acknowledged the alert.
func (r AlertRecord) Delivered() bool {
	for _, d := range r.Deliveries {
		if d.State != AlertDelivered {
			return false
		}
	}
	return true
}

// MarshalJSON writes the alert's webhook body fields (id, kind, taskId,
// team, machine, priority, attempts, exitCode, error, message, time, …)
// plus command and deliveries.
func (r AlertRecord) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		alert.Alert
		Command    string          `json:"command,omitempty"`
		Deliveries []AlertDelivery `json:"deliveries"`
	}{internalAlert(r.Alert), r.Command, r.Deliveries})
}

// internalAlert is a as a webhook body, with its ID.
func internalAlert(a Alert) alert.Alert {
	ia := toInternalAlert(a)
	ia.ID = a.ID
	return ia
}

// AlertFilter narrows ListAlerts. Zero fields match everything.
type AlertFilter struct {
	// Team keeps the alerts of the live team of that name (by its id: not
	// those of an earlier, deleted team of the same name); "" every team
	// the actor may list the tasks of (and, for owners, the store-wide
	// alerts).
	Team string
	// Kind keeps one kind (AlertTaskFailed, …).
	Kind string
	// TaskID keeps the alerts about one task.
	TaskID string
	// Undelivered keeps the alerts that some endpoint has not
	// acknowledged: pending, failed or expired there.
	Undelivered bool
	// Limit bounds the number returned (the oldest first); 0 = no limit.
	Limit int
}

// ListAlerts returns the alerts of the outbox that match f, oldest first,
// with the state of their delivery to each endpoint. Alerts are authorized
// like the tasks they describe: the actor sees the alerts of the teams
// whose tasks it may list (task.list); alerts about no team (queue
// thresholds without a team) only with a store-wide role that may list
// every team's tasks (owners).
//
// Errors: ErrNoActor, ErrPermissionDenied (f.Team the actor has no role
// in), ErrInvalidArgument (negative Limit).
func (c *Client) ListAlerts(ctx context.Context, f AlertFilter) ([]AlertRecord, error) {
	if f.Limit < 0 {
		return nil, fmt.Errorf("%w: alert filter: negative limit %d", ErrInvalidArgument, f.Limit)
	}
	var sc scope
	if f.Team != "" {
		var err error
		if sc, err = c.resolveTeam(ctx, f.Team); err != nil {
			return nil, err
		}
	}
	teams, o, err := c.scopeTeams(ctx, authz.TaskList, sc, audit.EntityTask)
	if err != nil {
		return nil, err
	}
	rs, err := c.ob.engine.ListAlerts(ctx, store.AlertFilter{Teams: teams, Kind: f.Kind, TaskID: f.TaskID,
		Undelivered: f.Undelivered, Limit: f.Limit})
	if err != nil {
		return nil, mapStoreErr(err)
	}
	out := make([]AlertRecord, 0, len(rs))
	for _, r := range rs {
		a, err := alertFromRecord(r)
		if err != nil {
			return nil, err
		}
		rec := AlertRecord{Alert: a}
		for _, d := range r.Deliveries {
			ad := AlertDelivery{Endpoint: d.Endpoint, State: d.State, Attempts: d.Attempts, LastError: d.LastError,
				LastAttemptAt: d.LastAttemptAt, DoneAt: d.DoneAt}
			if d.State == store.DeliveryPending {
				ad.NextAttemptAt = d.NextAttemptAt
				if d.LeaseOwner != "" {
					ad.Worker, ad.LeaseExpiresAt = d.LeaseOwner, d.LeaseExpiresAt
				}
			}
			rec.Deliveries = append(rec.Deliveries, ad)
		}
		out = append(out, rec)
	}
	o.done(ctx)
	return out, nil
}

// alertPayload is the stored form of an Alert (store.Alert.Payload): its
// exported fields as JSON, the priority as a plain number (Priority's own
// JSON refuses 0, which alerts about no task have).
type alertPayload struct {
	alertFields
	Priority int
}

type alertFields Alert // Alert's fields without its methods

func encodeAlert(a Alert) ([]byte, error) {
	return json.Marshal(alertPayload{alertFields: alertFields(a), Priority: int(a.Priority)})
}

// alertFromRecord decodes a stored alert.
func alertFromRecord(r store.Alert) (Alert, error) {
	var p alertPayload
	if err := json.Unmarshal(r.Payload, &p); err != nil {
		return Alert{}, fmt.Errorf("%w: alert %s: unreadable payload: %v", ErrCorruptStore, r.ID, err)
	}
	a := Alert(p.alertFields)
	a.Priority, a.ID, a.Suppressed = Priority(p.Priority), r.ID, r.Suppressed
	return a, nil
}

// alertRequest turns a into the outbox request that stores it: with a new
// ID, its Time (default now), its Error and Message masked by the
// endpoints' redactors, rate limited per condition by
// Config.AlertRateWindow, registering this client's endpoints.
func (c *Client) alertRequest(a Alert, res *store.AlertResult) (store.AlertRequest, error) {
	if a.Time.IsZero() {
		a.Time = c.clock.Now().UTC()
	}
	a.ID, a.Suppressed = uuid.NewString(), 0
	for _, ep := range c.ob.endpoints {
		if ep.redact != nil {
			a.Error, a.Message = ep.redact(a.Error), ep.redact(a.Message)
		}
	}
	payload, err := encodeAlert(a)
	if err != nil {
		return store.AlertRequest{}, fmt.Errorf("rediacc: encoding an alert: %w", err)
	}
	req := store.AlertRequest{
		Alert: store.Alert{ID: a.ID, Kind: a.Kind, Key: conditionKey(a), Team: a.TeamID, TaskID: a.TaskID,
			Payload: payload, CreatedAt: a.Time},
		Window: c.cfg.AlertRateWindow, Endpoints: c.ob.names, Result: res,
	}
	// Checked here, so that a bad alert never fails the write it rides on
	// (a task's Finish).
	if err := fsm.CheckAlertRequests([]store.AlertRequest{req}); err != nil {
		return store.AlertRequest{}, fmt.Errorf("rediacc: a %s alert: %w", a.Kind, mapStoreErr(err))
	}
	return req, nil
}

// conditionKey names a's condition for the rate limit: the kind, then a
// hash of alert.DefaultKey (its fields joined by NUL bytes, which no
// engine's text needs to hold).
func conditionKey(a Alert) string {
	h := sha256.Sum256([]byte(alert.DefaultKey(toInternalAlert(a))))
	return a.Kind + "/" + hex.EncodeToString(h[:16])
}

// alertStored counts an alert the outbox took (or held back), and wakes
// the dispatcher.
func (c *Client) alertStored(kind string, res store.AlertResult) {
	switch {
	case res.Suppressed:
		c.ob.suppressed.Add(1)
	case !res.Duplicate:
		c.metrics.alertRaised(kind)
	}
	if d := c.dispatcher(); d != nil {
		d.nudge()
	}
}

// ---- endpoints

// alertTarget is one alert endpoint: a flattened alerter with its name
// and delivery settings.
type alertTarget struct {
	name        string
	alerter     Alerter
	webhook     *alert.Webhook // nil unless alerter is a WebhookAlerter
	timeout     time.Duration  // bounds one attempt
	initial     time.Duration  // backoff shape
	maxInterval time.Duration
	redact      func(string) string // applied before the alert is stored
}

// NameAlerter gives a an endpoint name of its own in the outbox, instead
// of the default ("log" for a LogAlerter, "webhook:SCHEME://HOST#HASH" for
// a WebhookAlerter, "alerter" for any other; repeats numbered "#2", …).
// Workers sharing a store deliver each alert once per endpoint name, so two
// alerters that are different receivers need different names, and the same
// receiver configured on several workers the same name. Up to 256 bytes.
func NameAlerter(name string, a Alerter) Alerter { return &namedAlerter{name: name, Alerter: a} }

type namedAlerter struct {
	name string
	Alerter
}

var _ Alerter = (*namedAlerter)(nil)

// alertTargets flattens a (FanoutAlerter) into its endpoints.
func alertTargets(a Alerter) ([]*alertTarget, error) {
	var flat []Alerter
	var walk func(a Alerter)
	walk = func(a Alerter) {
		if f, ok := a.(*fanoutAlerter); ok {
			for _, x := range f.alerters {
				walk(x)
			}
			return
		}
		flat = append(flat, a)
	}
	walk(a)
	seen := map[string]int{}
	var out []*alertTarget
	for _, a := range flat {
		t := &alertTarget{alerter: a, timeout: DefaultAlertTimeout, initial: DefaultWebhookInitialInterval, maxInterval: DefaultWebhookMaxInterval}
		inner := a
		if n, ok := a.(*namedAlerter); ok {
			if n.name == "" || len(n.name) > 256 {
				return nil, fmt.Errorf("%w: alert endpoint name %s: empty or longer than 256 bytes", ErrInvalidArgument, quoteInput(n.name))
			}
			t.name, inner = n.name, n.Alerter
		}
		switch v := inner.(type) {
		case *WebhookAlerter:
			t.webhook, t.redact = v.w, v.w.Redact
			t.initial, t.maxInterval, t.timeout = v.w.Backoff()
			if t.name == "" {
				t.name = "webhook:" + v.w.Endpoint() + "#" + v.urlHash()
			}
		case *LogAlerter:
			if t.name == "" {
				t.name = "log"
			}
		default:
			if t.name == "" {
				t.name = "alerter"
			}
		}
		seen[t.name]++
		if k := seen[t.name]; k > 1 {
			t.name += "#" + strconv.Itoa(k)
		}
		out = append(out, t)
	}
	return out, nil
}

// urlHash is a short hash of the webhook's URL: it tells webhooks on one
// host apart without writing the URL's path or query (a token, maybe).
func (w *WebhookAlerter) urlHash() string {
	h := sha256.Sum256([]byte(w.url))
	return hex.EncodeToString(h[:4])
}

// attempt makes one delivery attempt of a to t. unavailable says the
// endpoint as a whole failed; retryAfter is the receiver's hint.
func (t *alertTarget) attempt(ctx context.Context, a Alert, number int) (err error, permanent, unavailable bool, retryAfter time.Duration) {
	if t.webhook != nil {
		err = t.webhook.Attempt(ctx, internalAlert(a), number)
		var ae *alert.AttemptError
		if errors.As(err, &ae) {
			return ae.Err, ae.Permanent, ae.Unavailable, ae.RetryAfter
		}
		return err, false, false, 0
	}
	defer func() {
		if p := recover(); p != nil { // a bug in the alerter: never retried
			err, permanent = fmt.Errorf("alerter panicked: %v", p), true
		}
	}()
	err = t.alerter.Alert(ctx, a)
	var perm *backoff.PermanentError
	if errors.As(err, &perm) {
		return perm.Err, true, false, 0
	}
	return err, false, false, 0
}

// delay is the backoff before attempt number+1 of one delivery after
// number failed ones: exponential from initial (factor 1.5, ±50 %), capped
// at maxInterval.
func (t *alertTarget) delay(number int) time.Duration {
	b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(t.initial), backoff.WithMaxInterval(t.maxInterval),
		backoff.WithMaxElapsedTime(0))
	d := t.initial
	for range min(max(number, 1), 64) {
		d = b.NextBackOff()
	}
	return d
}

// ---- the dispatcher

// outboxState is a client's part of the outbox (Client.ob).
type outboxState struct {
	engine     store.Outbox
	endpoints  []*alertTarget
	names      []string
	suppressed atomic.Uint64
	attempts   *prometheus.CounterVec // endpoint, result

	mu     sync.Mutex
	d      *dispatcher // nil until started
	closed bool
}

// initOutbox sets up c.ob for New.
func (c *Client) initOutbox(e store.Engine) error {
	ob, ok := e.(store.Outbox)
	if !ok {
		return fmt.Errorf("rediacc: store %T keeps no alert outbox", e)
	}
	eps, err := alertTargets(c.alerter)
	if err != nil {
		return err
	}
	c.ob.engine, c.ob.endpoints = ob, eps
	for _, ep := range eps {
		c.ob.names = append(c.ob.names, ep.name)
	}
	c.ob.attempts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rediacc_alert_attempts_total",
		Help: "Alert delivery attempts by this process, by endpoint and result: delivered (acknowledged), error (retried later), rejected (given up)."},
		[]string{"endpoint", "result"})
	for _, n := range c.ob.names {
		for _, r := range []string{"delivered", "error", "rejected"} {
			c.ob.attempts.WithLabelValues(n, r)
		}
	}
	return nil
}

// dispatcher returns c's dispatcher, starting it when needed; nil once c
// is closed.
func (c *Client) dispatcher() *dispatcher {
	c.ob.mu.Lock()
	defer c.ob.mu.Unlock()
	if c.ob.closed {
		return nil
	}
	if c.ob.d == nil {
		c.ob.d = c.startDispatcher()
	}
	return c.ob.d
}

// dispatcher delivers the outbox's alerts to c's endpoints.
type dispatcher struct {
	c       *Client
	log     *slog.Logger
	runners []*endpointRunner

	drain    chan struct{} // closed by close: finish what is due, then stop
	deadline atomic.Pointer[time.Time]
	hard     context.Context // cancelled at the drain deadline: attempts end
	stopHard context.CancelFunc
	wg       sync.WaitGroup
}

// endpointRunner claims and delivers one endpoint's alerts.
type endpointRunner struct {
	d    *dispatcher
	t    *alertTarget
	wake chan struct{}

	mu        sync.Mutex
	inflight  int
	gateUntil time.Time // the endpoint backs off until then
	probing   bool      // after a failure: one attempt at a time
	gate      *backoff.ExponentialBackOff
}

func (c *Client) startDispatcher() *dispatcher {
	d := &dispatcher{c: c, log: c.log.With(slog.String("component", "alert-outbox")), drain: make(chan struct{})}
	d.hard, d.stopHard = context.WithCancel(context.Background())
	d.register()
	for _, t := range c.ob.endpoints {
		g := backoff.NewExponentialBackOff(backoff.WithInitialInterval(t.initial), backoff.WithMaxInterval(t.maxInterval),
			backoff.WithMaxElapsedTime(0))
		r := &endpointRunner{d: d, t: t, wake: make(chan struct{}, 1), gate: g}
		d.runners = append(d.runners, r)
		d.wg.Add(1)
		go r.run()
	}
	d.wg.Add(1)
	go d.housekeeping()
	return d
}

// register adds c's endpoints to the store's (so that alerts raised by
// any client are delivered to them) and marks them seen.
func (d *dispatcher) register() {
	ctx, cancel := context.WithTimeout(d.hard, 10*time.Second)
	defer cancel()
	if err := d.c.ob.engine.RegisterAlertEndpoints(ctx, d.c.ob.names, time.Now()); err != nil && d.hard.Err() == nil {
		d.log.Warn("registering the alert endpoints failed (retried)", "error", err)
	}
}

// housekeeping renews the endpoints' registration and, on the leader,
// expires what is older than Config.AlertMaxAge, every minute (or tenth of
// the age).
func (d *dispatcher) housekeeping() {
	defer d.wg.Done()
	every := min(time.Minute, d.c.cfg.AlertMaxAge/10)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-d.drain:
			return
		case <-t.C:
		}
		d.register()
		if !d.c.leadingNow() {
			continue // on a shared store, the leader expires for all
		}
		cfg := d.c.cfg
		qnow := d.c.clock.Now().UTC()
		ctx, cancel := context.WithTimeout(d.hard, 30*time.Second)
		n, err := d.c.ob.engine.ExpireAlerts(ctx, store.AlertExpiry{
			CreatedBefore:        qnow.Add(-cfg.AlertMaxAge),
			EndpointSeenBefore:   time.Now().Add(-cfg.AlertMaxAge),
			ConditionsSeenBefore: qnow.Add(-max(cfg.AlertMaxAge, 2*cfg.AlertRateWindow)),
		})
		cancel()
		switch {
		case err != nil && d.hard.Err() == nil:
			d.log.Warn("expiring old alerts failed", "error", err)
		case n > 0:
			d.log.Error("alerts given up: not delivered within the maximum age, or their endpoint is gone",
				"deliveries", n, "max_age", cfg.AlertMaxAge)
		}
	}
}

// leadingNow reports whether this client's worker runs the periodic duties
// (cluster.go): always on a store of one host, else while its worker loop
// holds the store's leadership.
func (c *Client) leadingNow() bool {
	if c.clusterEngine() == nil {
		return true
	}
	c.cstate.mu.Lock()
	defer c.cstate.mu.Unlock()
	return c.cstate.leading
}

// nudge wakes every runner (an alert was stored).
func (d *dispatcher) nudge() {
	for _, r := range d.runners {
		r.nudge()
	}
}

func (r *endpointRunner) nudge() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// close drains: runners deliver what is due until nothing deliverable is
// left or the deadline passes; then attempts in flight are cut short and
// their deliveries handed back (due at once for the next worker). What is
// left stays stored: that is not an error.
func (d *dispatcher) close(deadline time.Time) {
	d.deadline.Store(&deadline)
	close(d.drain)
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		d.stopHard()
		<-done
	}
	d.stopHard()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if bs, err := d.c.ob.engine.AlertBacklog(ctx, time.Now()); err == nil {
		for _, b := range bs {
			if b.Pending > 0 && slices.Contains(d.c.ob.names, b.Endpoint) {
				d.log.Warn("alerts left undelivered in the store for the next worker", "endpoint", b.Endpoint,
					"alerts", b.Pending, "oldest", b.Oldest)
			}
		}
	}
}

// owner is the lease owner of this client's claims.
func (d *dispatcher) owner() string { return d.c.id }

// leaseFor is how long a claimed delivery stays with this client: one
// attempt's timeout and a margin.
func (d *dispatcher) leaseFor(t *alertTarget) time.Duration { return t.timeout + d.c.cfg.LeaseDuration }

func (r *endpointRunner) run() {
	d := r.d
	defer d.wg.Done()
	var attempts sync.WaitGroup
	defer attempts.Wait()
	draining := false
	for d.hard.Err() == nil {
		if !draining {
			select {
			case <-d.drain:
				draining = true
			default:
			}
		}
		now := time.Now()
		wait := d.c.cfg.PollInterval
		r.mu.Lock()
		gate, free := r.gateUntil, d.c.cfg.AlertConcurrency-r.inflight
		if r.probing {
			free = min(free, 1-r.inflight)
		}
		r.mu.Unlock()
		claimed := -1
		if gate.After(now) {
			wait = gate.Sub(now)
		} else if free > 0 {
			as, err := d.c.ob.engine.ClaimAlerts(d.hard, store.AlertClaim{Endpoint: r.t.name, Owner: d.owner(), Now: now,
				LeaseUntil: now.Add(d.leaseFor(r.t)), Max: free, OwnerDead: ownerDead})
			if err != nil && d.hard.Err() == nil {
				d.log.Warn("claiming alerts failed", "endpoint", r.t.name, "error", err)
			}
			claimed = len(as)
			for _, a := range as {
				r.mu.Lock()
				r.inflight++
				r.mu.Unlock()
				attempts.Add(1)
				go func() {
					defer attempts.Done()
					r.deliver(a)
				}()
			}
			if claimed == free {
				continue // more may be due
			}
		}
		if draining {
			stop, until := r.drained(now, gate, claimed)
			if stop {
				return
			}
			wait = min(wait, max(time.Until(until), time.Millisecond))
		}
		t := time.NewTimer(wait)
		select {
		case <-r.wake:
		case <-t.C:
		case <-d.hard.Done():
		case <-d.drain:
			draining = true
		}
		t.Stop()
	}
}

// drained reports, while draining, whether this runner is done: nothing in
// flight and nothing left that it could deliver before the deadline (a
// delivery leased by another worker is that worker's). until is when to
// look again otherwise.
func (r *endpointRunner) drained(now, gate time.Time, claimed int) (bool, time.Time) {
	d := r.d
	deadline := *d.deadline.Load()
	r.mu.Lock()
	inflight := r.inflight
	r.mu.Unlock()
	if inflight > 0 {
		return false, deadline
	}
	if gate.After(now) {
		return true, now // the endpoint is down: its deliveries stay stored, Close does not wait for it
	}
	ctx, cancel := context.WithTimeout(d.hard, 5*time.Second)
	defer cancel()
	bs, err := d.c.ob.engine.AlertBacklog(ctx, now)
	if err != nil {
		return true, now // the store cannot tell: nothing to do
	}
	for _, b := range bs {
		if b.Endpoint != r.t.name {
			continue
		}
		switch {
		case b.Pending == 0:
			return true, now
		case b.Due > 0 && claimed == 0:
			return true, now // due but held by another worker's lease
		case b.Due > 0:
			return false, now
		}
		return !b.NextAttemptAt.Before(deadline), b.NextAttemptAt
	}
	return true, now
}

// deliver makes one attempt of a's claimed delivery and settles it.
func (r *endpointRunner) deliver(sa store.Alert) {
	d := r.d
	defer func() {
		r.mu.Lock()
		r.inflight--
		r.mu.Unlock()
		r.nudge()
		d.c.nudgeWorker()
	}()
	dl := sa.Deliveries[0]
	number := dl.Attempts + 1
	settle := store.AlertSettle{AlertID: sa.ID, Endpoint: r.t.name, Owner: d.owner()}
	log := d.log.With(slog.String("endpoint", r.t.name), slog.String("alert_id", sa.ID), slog.String("kind", sa.Kind),
		slog.String("task_id", sa.TaskID), slog.Int("attempt", number))
	a, err := alertFromRecord(sa)
	var permanent, unavailable bool
	var retryAfter time.Duration
	if err == nil {
		ctx, cancel := context.WithTimeout(d.hard, r.t.timeout)
		err, permanent, unavailable, retryAfter = r.t.attempt(ctx, a, number)
		cancel()
	} else {
		permanent = true
	}
	now := time.Now()
	settle.At = now
	switch {
	case err == nil:
		settle.Outcome = store.DeliveryDelivered
		r.succeeded()
		d.c.ob.attempts.WithLabelValues(r.t.name, "delivered").Inc()
	case d.hard.Err() != nil:
		settle.Outcome, settle.Error, settle.NextAttemptAt = store.SettleRetry, "interrupted: the client closed: "+trimErr(err), now
		d.c.ob.attempts.WithLabelValues(r.t.name, "error").Inc()
	case permanent:
		settle.Outcome, settle.Error = store.DeliveryFailed, trimErr(err)
		d.c.ob.attempts.WithLabelValues(r.t.name, "rejected").Inc()
		log.Error("alert refused by its endpoint: given up", "error", err)
	case unavailable:
		next := r.failed(now, retryAfter)
		settle.Outcome, settle.Error, settle.NextAttemptAt = store.SettleRetry, trimErr(err), next
		d.c.ob.attempts.WithLabelValues(r.t.name, "error").Inc()
		log.Warn("alert endpoint unavailable: backing off", "error", err, "retry_at", next)
	default:
		next := now.Add(max(r.t.delay(number), retryAfter))
		settle.Outcome, settle.Error, settle.NextAttemptAt = store.SettleRetry, trimErr(err), next
		d.c.ob.attempts.WithLabelValues(r.t.name, "error").Inc()
		log.Warn("alert delivery failed: retrying", "error", err, "retry_at", next)
	}
	// Settle even while closing (the attempt's outcome must not be lost),
	// retrying briefly when the store is busy; a settle that never lands
	// leaves the lease to expire: the delivery is tried again (at least
	// once).
	b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(50*time.Millisecond), backoff.WithMaxElapsedTime(10*time.Second))
	err = backoff.Retry(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := d.c.ob.engine.SettleAlert(ctx, settle)
		if errors.Is(err, store.ErrLeaseLost) || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrClosed) {
			return backoff.Permanent(err)
		}
		return err
	}, b)
	if err != nil {
		log.Warn("recording the alert delivery failed; it will be tried again after its lease", "outcome", settle.Outcome, "error", err)
	}
}

// succeeded opens the endpoint's gate.
func (r *endpointRunner) succeeded() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gate.Reset()
	r.gateUntil, r.probing = time.Time{}, false
}

// failed closes the endpoint's gate for its next backoff interval (unless
// an earlier failure already did) and returns when it opens again: when
// the delivery is due again.
func (r *endpointRunner) failed(now time.Time, retryAfter time.Duration) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gateUntil.After(now) {
		return r.gateUntil
	}
	r.gateUntil, r.probing = now.Add(max(r.gate.NextBackOff(), retryAfter)), true
	return r.gateUntil
}

// nudgeWorker wakes the worker loop (RunUntilEmpty watches the outbox).
func (c *Client) nudgeWorker() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// closeOutbox stops the dispatcher, draining it until deadline.
func (c *Client) closeOutbox(deadline time.Time) {
	c.ob.mu.Lock()
	c.ob.closed = true
	d := c.ob.d
	c.ob.mu.Unlock()
	if d != nil {
		d.close(deadline)
	}
}

// alertsDue reports whether this client's endpoints that are not backing
// off have deliveries due now or in flight (RunUntilEmpty waits for them;
// an endpoint that is down keeps its alerts stored, it does not hold the
// run).
func (c *Client) alertsDue(ctx context.Context) (bool, error) {
	c.ob.mu.Lock()
	d := c.ob.d
	c.ob.mu.Unlock()
	if d == nil {
		return false, nil
	}
	now := time.Now()
	bs, err := c.ob.engine.AlertBacklog(ctx, now)
	if err != nil {
		return false, err
	}
	for _, r := range d.runners {
		r.mu.Lock()
		down := r.gateUntil.After(now) && r.inflight == 0
		r.mu.Unlock()
		for _, b := range bs {
			if b.Endpoint == r.t.name && b.Due > 0 && !down {
				return true, nil
			}
		}
	}
	return false, nil
}

// ---- metrics

var (
	descAlertsUndelivered = prometheus.NewDesc("rediacc_alerts_undelivered",
		"Alert deliveries waiting in the outbox (pending: not yet acknowledged, not given up), by endpoint.",
		[]string{"endpoint"}, nil)
	descAlertOldest = prometheus.NewDesc("rediacc_alert_oldest_undelivered_age_seconds",
		"Seconds since the oldest alert still waiting for an endpoint was raised (0 when none), by endpoint.",
		[]string{"endpoint"}, nil)
)

// describeOutbox sends the outbox's metric descriptions.
func (c *Client) describeOutbox(ch chan<- *prometheus.Desc) {
	ch <- descAlertsUndelivered
	ch <- descAlertOldest
	c.ob.attempts.Describe(ch)
}

// collectOutbox reads the outbox's backlog (every endpoint of the store)
// and this process's attempt counters.
func (c *Client) collectOutbox(ctx context.Context, ch chan<- prometheus.Metric) error {
	c.ob.attempts.Collect(ch)
	bs, err := c.ob.engine.AlertBacklog(ctx, time.Now())
	if err != nil {
		return err
	}
	now := c.clock.Now()
	for _, b := range bs {
		ch <- prometheus.MustNewConstMetric(descAlertsUndelivered, prometheus.GaugeValue, float64(b.Pending), b.Endpoint)
		age := 0.0
		if !b.Oldest.IsZero() {
			age = max(now.Sub(b.Oldest).Seconds(), 0)
		}
		ch <- prometheus.MustNewConstMetric(descAlertOldest, prometheus.GaugeValue, age, b.Endpoint)
	}
	return nil
}
