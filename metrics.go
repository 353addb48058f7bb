package rediacc

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rediacc/rediacc/internal/store"
)

// DefaultScrapeTimeout bounds the store queries of one scrape of the
// Collector, unless Config.ScrapeTimeout says otherwise.
const DefaultScrapeTimeout = 5 * time.Second

// AttemptDurationBuckets are the upper bounds, in seconds, of the buckets
// of the rediacc_task_attempt_duration_seconds histogram: 0.1 s to 1 h.
var AttemptDurationBuckets = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}

// Label values the counters start with, so a dashboard sees 0 before the
// first event.
var (
	finishOutcomes   = []string{"completed", "failed", "cancelled"}
	attemptOutcomes  = []string{"succeeded", "failed", "timeout", "interrupted", "cancelled", "unknown", "lost"}
	deliveryOutcomes = []string{"delivered", "failed", "dropped"}
	alertKinds       = []string{AlertTaskFailed, AlertQueueDepth, AlertQueueAge, AlertMachineUnhealthy, AlertMachineBusy, AlertKeyOverdue, AlertScheduleMissed, AlertScheduleFailed}
)

// metrics holds the counters the worker increments. Its methods do nothing
// on a nil *metrics.
type metrics struct {
	finished *prometheus.CounterVec // outcome
	attempts *prometheus.CounterVec // outcome
	retries  prometheus.Counter
	duration prometheus.Histogram
	alerts   *prometheus.CounterVec // kind
}

func newMetrics() *metrics {
	m := &metrics{
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rediacc_tasks_finished_total",
			Help: "Tasks this process's worker finished, by outcome (completed, failed, cancelled)."}, []string{"outcome"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rediacc_task_attempts_total",
			Help: "Attempts this process's worker recorded, by outcome (succeeded, failed, timeout, interrupted, cancelled)."}, []string{"outcome"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Name: "rediacc_task_retries_total",
			Help: "Failed attempts this process's worker scheduled a retry for."}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "rediacc_task_attempt_duration_seconds",
			Help: "Duration of the attempts this process's worker recorded, in seconds.", Buckets: AttemptDurationBuckets}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rediacc_alerts_total",
			Help: "Alerts passed to the Alerter (after the rate limit), by kind."}, []string{"kind"}),
	}
	for _, o := range finishOutcomes {
		m.finished.WithLabelValues(o)
	}
	for _, o := range attemptOutcomes {
		m.attempts.WithLabelValues(o)
	}
	for _, k := range alertKinds {
		m.alerts.WithLabelValues(k)
	}
	return m
}

// attemptRecorded counts an attempt the store has recorded: its outcome
// and duration, a retry when one was scheduled, and the task's outcome
// when status is terminal.
func (m *metrics) attemptRecorded(status store.Status, a store.Attempt, retried bool) {
	if m == nil {
		return
	}
	if a.Outcome != "" {
		m.attempts.WithLabelValues(a.Outcome).Inc()
	}
	if !a.StartedAt.IsZero() && !a.EndedAt.IsZero() {
		m.duration.Observe(max(a.EndedAt.Sub(a.StartedAt), 0).Seconds())
	}
	if retried {
		m.retries.Inc()
	}
	switch status {
	case store.Completed:
		m.finished.WithLabelValues("completed").Inc()
	case store.Failed:
		m.finished.WithLabelValues("failed").Inc()
	case store.Cancelled:
		m.finished.WithLabelValues("cancelled").Inc()
	}
}

func (m *metrics) alertRaised(kind string) {
	if m == nil {
		return
	}
	m.alerts.WithLabelValues(kind).Inc()
}

// Descriptions of the metrics computed at scrape time.
var (
	descDepth = prometheus.NewDesc("rediacc_queue_depth",
		"Tasks in the queue (PENDING, including those waiting out a retry delay; ASSIGNED; PROCESSING) by status, priority, team and machine (names, with their ids: a renamed team keeps its team_id, and two teams that had the same name never share a series); a missing series is 0.",
		[]string{"status", "priority", "team", "machine", "team_id", "machine_id"}, nil)
	descOldest = prometheus.NewDesc("rediacc_queue_oldest_pending_age_seconds",
		"Seconds since the oldest PENDING task was submitted (0 when none is pending).", nil, nil)
	descStoreUp = prometheus.NewDesc("rediacc_store_up",
		"1 when the store answered this scrape's queries, 0 otherwise.", nil, nil)
	descWorker = prometheus.NewDesc("rediacc_worker_running",
		"1 while this process's worker loop (Run) runs.", nil, nil)
	descSSHOpen = prometheus.NewDesc("rediacc_ssh_connections_open",
		"Open SSH connections in the pool.", nil, nil)
	descSSHSessions = prometheus.NewDesc("rediacc_ssh_sessions_in_flight",
		"SSH sessions currently held (commands running or starting).", nil, nil)
	descSSHDials = prometheus.NewDesc("rediacc_ssh_dials_total",
		"SSH connection attempts.", nil, nil)
	descSSHDialErrors = prometheus.NewDesc("rediacc_ssh_dial_errors_total",
		"Failed SSH connection attempts (network, handshake, authentication, host key, key loading).", nil, nil)
	descDeliveries = prometheus.NewDesc("rediacc_alert_deliveries_total",
		"Webhook alert deliveries by result: delivered (2xx), failed (given up after retrying), dropped (queue full or closed).",
		[]string{"result"}, nil)
	descDeliveryRetries = prometheus.NewDesc("rediacc_alert_delivery_retries_total",
		"Webhook delivery attempts after the first.", nil, nil)
	descSuppressed = prometheus.NewDesc("rediacc_alerts_suppressed_total",
		"Alerts held back because the same condition was alerted less than the rate window ago.", nil, nil)
)

// collector is the Prometheus collector of a Client.
type collector struct{ c *Client }

var _ prometheus.Collector = collector{}

// Collector returns a Prometheus collector of c's metrics, for a service to
// register (prometheus.MustRegister(c.Collector())); MetricsHandler serves
// it ready-made. Register one collector per Client per registry.
//
// At scrape time it reads the store: rediacc_queue_depth (gauge, by
// status PENDING/ASSIGNED/PROCESSING, priority, team, machine, team_id,
// machine_id),
// rediacc_queue_oldest_pending_age_seconds and rediacc_store_up; these
// queries run with the collector's own context, bounded by
// Config.ScrapeTimeout (default 5 s), and with no actor: they are an
// internal view of the whole store, not an actor's operation, are neither
// authorized nor audited, and cover every team. Expose the metrics only
// where the whole store's queue may be seen.
//
// The counters count what this process did since New: the worker's
// rediacc_tasks_finished_total{outcome}, rediacc_task_attempts_total{outcome},
// rediacc_task_retries_total and the rediacc_task_attempt_duration_seconds
// histogram; rediacc_alerts_total{kind} and rediacc_alerts_suppressed_total;
// the SSH pool's rediacc_ssh_connections_open, rediacc_ssh_sessions_in_flight,
// rediacc_ssh_dials_total and rediacc_ssh_dial_errors_total; and the
// webhook deliveries of Config.Alerter (a WebhookAlerter, or FanoutAlerter
// holding some; zero otherwise), rediacc_alert_deliveries_total{result} and
// rediacc_alert_delivery_retries_total; plus rediacc_worker_running.
func (c *Client) Collector() prometheus.Collector { return collector{c} }

// Describe sends the descriptions of every metric.
func (k collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDepth, descOldest, descStoreUp, descWorker, descSSHOpen,
		descSSHSessions, descSSHDials, descSSHDialErrors, descDeliveries, descDeliveryRetries, descSuppressed,
		descKeyAge, descKeyOverdue} {
		ch <- d
	}
	k.c.describeSchedules(ch) // schedule_fire.go
	k.c.describeOutbox(ch)    // outbox.go
	m := k.c.metrics
	m.finished.Describe(ch)
	m.attempts.Describe(ch)
	m.retries.Describe(ch)
	m.duration.Describe(ch)
	m.alerts.Describe(ch)
}

// Collect reads the store and the counters.
func (k collector) Collect(ch chan<- prometheus.Metric) {
	c := k.c
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.ScrapeTimeout)
	defer cancel()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}

	up := 1.0
	rows, err := c.engine.Depth(ctx)
	if err == nil {
		for _, r := range rows {
			if r.Status == store.Pending || r.Status.Active() {
				gauge(descDepth, float64(r.Count), string(r.Status), strconv.Itoa(r.Priority), r.Team, r.Machine, r.TeamID, r.MachineID)
			}
		}
		var age time.Duration
		age, _, err = c.oldestPending(ctx, nil, "")
		if err == nil {
			gauge(descOldest, age.Seconds())
		}
	}
	if err == nil {
		err = c.collectKeys(ctx, ch) // SSH key ages (maintenance.go)
	}
	if err == nil {
		err = c.collectOutbox(ctx, ch) // outbox.go: backlog and oldest undelivered alert by endpoint
	}
	if err != nil {
		up = 0
		c.log.Warn("metrics: store query failed", "error", err)
	}
	if !c.collectSchedules(ctx, ch) { // schedule_fire.go
		up = 0
	}
	gauge(descStoreUp, up)
	c.mu.Lock()
	running := c.runCount > 0
	c.mu.Unlock()
	gauge(descWorker, b2f(running))

	ps := c.pool.Stats()
	gauge(descSSHOpen, float64(ps.OpenConns))
	gauge(descSSHSessions, float64(ps.SessionsInFlight))
	counter(descSSHDials, float64(ps.Dials))
	counter(descSSHDialErrors, float64(ps.DialErrors))

	var ds AlertDeliveryStats
	if s, ok := c.alerter.(deliveryStatser); ok {
		ds, _ = s.deliveryStats()
	}
	for _, r := range deliveryOutcomes {
		v := map[string]uint64{"delivered": ds.Delivered, "failed": ds.Failed, "dropped": ds.Dropped}[r]
		counter(descDeliveries, float64(v), r)
	}
	counter(descDeliveryRetries, float64(ds.Retries))
	counter(descSuppressed, float64(c.ob.suppressed.Load()))

	m := c.metrics
	m.finished.Collect(ch)
	m.attempts.Collect(ch)
	m.retries.Collect(ch)
	m.duration.Collect(ch)
	m.alerts.Collect(ch)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// oldestPending returns how long ago the oldest PENDING task of teams (ids;
// nil: every team) and machine (an id; "" any) was submitted, and its id;
// zero and "" when none is pending. One indexed query (tasks by creation,
// LIMIT 1).
func (c *Client) oldestPending(ctx context.Context, teams []string, machine string) (time.Duration, string, error) {
	if teams != nil && len(teams) == 0 {
		return 0, "", nil
	}
	ts, err := c.engine.ListTasks(ctx, store.TaskFilter{Statuses: []store.Status{store.Pending}, TeamIDs: teams, MachineID: machine, Limit: 1})
	if err != nil || len(ts) == 0 {
		return 0, "", err
	}
	return max(c.clock.Now().Sub(ts[0].CreatedAt), 0), ts[0].ID, nil
}

// errWorkerNotRunning is the /healthz answer when no worker loop runs.
var errWorkerNotRunning = errors.New("worker loop not running")

// health reports nil while c's worker loop runs and the store answers.
func (c *Client) health(ctx context.Context) error {
	c.mu.Lock()
	closed, running := c.closed, c.runCount > 0
	c.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case !running:
		return errWorkerNotRunning
	}
	if _, _, err := c.engine.NextReady(ctx); err != nil {
		return mapStoreErr(err)
	}
	return nil
}

// MetricsHandler returns an http.Handler serving GET /metrics (c's
// Collector, plus the Go runtime and process collectors, in the Prometheus
// text format, through promhttp) and GET /healthz (200 "ok" while c's
// worker loop runs and the store answers; 503 with the reason otherwise).
// Neither path asks for an actor (see Collector): serve them on a loopback
// or otherwise protected address, as `rediacc worker --metrics-addr` does.
func (c *Client) MetricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c.Collector(), collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Timeout: c.cfg.ScrapeTimeout + 5*time.Second}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), c.cfg.ScrapeTimeout)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := c.health(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("unhealthy: " + err.Error() + "\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}
