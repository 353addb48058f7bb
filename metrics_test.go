package rediacc_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rediacc/rediacc"
)

// metricsEndpoint is c.MetricsHandler served over real HTTP on 127.0.0.1.
type metricsEndpoint struct {
	t   *testing.T
	url string
}

// serveMetrics serves c's MetricsHandler on 127.0.0.1:0 until the test ends
// and returns a scrape function (see metricsEndpoint.scrape).
func serveMetrics(t *testing.T, c *rediacc.Client) func() map[string]float64 {
	return newMetricsEndpoint(t, c).scrape
}

func newMetricsEndpoint(t *testing.T, c *rediacc.Client) *metricsEndpoint {
	srv := httptest.NewServer(c.MetricsHandler())
	t.Cleanup(srv.Close)
	return &metricsEndpoint{t: t, url: srv.URL}
}

// scrape GETs /metrics and returns each sample by its series as written
// ("name" or `name{label="v",...}`). Failures are reported with t.Errorf
// (scrape may run in a polling loop).
func (e *metricsEndpoint) scrape() map[string]float64 {
	resp, err := http.Get(e.url + "/metrics")
	if err != nil {
		e.t.Errorf("scrape: %v", err)
		return nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		e.t.Errorf("scrape: HTTP %d: %s", resp.StatusCode, body)
		return nil
	}
	return parseMetrics(e.t, string(body))
}

// parseMetrics reads the Prometheus text format's samples.
func parseMetrics(t testing.TB, text string) map[string]float64 {
	out := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Errorf("metrics line %q: %v", line, err)
			continue
		}
		out[line[:i]] = v
	}
	return out
}

// sumSeries adds the samples of metric name whose labels contain every one
// of labels (each `key="value"`).
func sumSeries(m map[string]float64, name string, labels ...string) float64 {
	var sum float64
	for k, v := range m {
		if k != name && !strings.HasPrefix(k, name+"{") {
			continue
		}
		all := true
		for _, l := range labels {
			all = all && strings.Contains(k, l)
		}
		if all {
			sum += v
		}
	}
	return sum
}

func (e *metricsEndpoint) healthz() (int, string) {
	resp, err := http.Get(e.url + "/healthz")
	if err != nil {
		e.t.Errorf("healthz: %v", err)
		return 0, ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// Metrics scraped over HTTP move as tasks run on a real sshd: queue depth
// by status, priority, team and machine; tasks finished by outcome;
// attempts, retries and the duration histogram; SSH dials; /healthz
// follows the worker loop.
func TestMetricsScrapedOverHTTP(t *testing.T) {
	c := newClient(t, nil)
	realMachine(t, c, "web-01", 31)
	ep := newMetricsEndpoint(t, c)

	m := ep.scrape()
	for _, series := range []string{`rediacc_tasks_finished_total{outcome="completed"}`, `rediacc_tasks_finished_total{outcome="failed"}`,
		`rediacc_task_retries_total`, `rediacc_queue_oldest_pending_age_seconds`, `rediacc_ssh_dials_total`,
		`rediacc_alert_deliveries_total{result="delivered"}`, `rediacc_worker_running`} {
		if v, ok := m[series]; !ok || v != 0 {
			t.Errorf("before any task: %s = %v (present %v), want 0", series, v, ok)
		}
	}
	if m["rediacc_store_up"] != 1 {
		t.Errorf("rediacc_store_up = %v", m["rediacc_store_up"])
	}
	if code, body := ep.healthz(); code != http.StatusServiceUnavailable || !strings.Contains(body, "not running") {
		t.Errorf("healthz without a worker: %d %q", code, body)
	}

	for range 3 {
		submit(t, c, rediacc.TaskSpec{Machine: "web-01", Command: "true", Priority: rediacc.High})
	}
	submit(t, c, rediacc.TaskSpec{Machine: "web-01", Command: "exit 2", FailureAction: rediacc.FailureNone,
		Retry: rediacc.RetryPolicy{RetryCount: 1, RetryDelay: 10 * time.Millisecond}})
	m = ep.scrape()
	if got := sumSeries(m, "rediacc_queue_depth", `status="PENDING"`, `priority="2"`, `team="default"`, `machine="web-01"`); got != 3 {
		t.Errorf("pending priority-2 depth = %v, want 3", got)
	}
	if got := sumSeries(m, "rediacc_queue_depth", `status="PENDING"`); got != 4 {
		t.Errorf("pending depth = %v, want 4", got)
	}

	stop := runWorker(t, c)
	waitFor(t, "healthz 200 while the worker runs", func() bool { code, _ := ep.healthz(); return code == http.StatusOK })
	waitFor(t, "the tasks to finish", func() bool {
		m = ep.scrape()
		// The depth is read before the counters within a scrape: wait for both.
		return m[`rediacc_tasks_finished_total{outcome="completed"}`] == 3 && m[`rediacc_tasks_finished_total{outcome="failed"}`] == 1 &&
			sumSeries(m, "rediacc_queue_depth") == 0
	})
	want := map[string]float64{
		`rediacc_task_attempts_total{outcome="succeeded"}`: 3,
		`rediacc_task_attempts_total{outcome="failed"}`:    2,
		`rediacc_task_retries_total`:                       1,
		`rediacc_task_attempt_duration_seconds_count`:      5,
		`rediacc_queue_oldest_pending_age_seconds`:         0,
		`rediacc_worker_running`:                           1,
		`rediacc_ssh_dial_errors_total`:                    0,
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	if _, ok := m["rediacc_ssh_connections_open"]; !ok || m["rediacc_ssh_dials_total"] < 1 {
		t.Errorf("ssh: dials %v, open %v (present %v)", m["rediacc_ssh_dials_total"], m["rediacc_ssh_connections_open"], ok)
	}
	stop()
	if code, _ := ep.healthz(); code != http.StatusServiceUnavailable {
		t.Errorf("healthz after the worker stopped: %d", code)
	}
}

// The collector registers in a service's own registry alongside others,
// and its store queries need no actor.
func TestCollectorRegisters(t *testing.T) {
	c := newClient(t, nil)
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c.Collector()); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"rediacc_tasks_finished_total", "rediacc_task_attempt_duration_seconds", "rediacc_store_up",
		"rediacc_ssh_connections_open", "rediacc_alert_deliveries_total", "rediacc_alerts_suppressed_total", "rediacc_alerts_total"} {
		if !names[n] {
			t.Errorf("gathered metrics lack %s", n)
		}
	}
}

// A service registers the collector in its registry, or serves
// MetricsHandler (/metrics and /healthz) on a protected address.
func ExampleClient_Collector() {
	e := newExampleEnv(nil)
	defer e.close()
	e.machine("web-01", "", nil)
	reg := prometheus.NewRegistry() // or prometheus.DefaultRegisterer
	reg.MustRegister(e.c.Collector())
	if _, err := e.c.Submit(e.ctx, rediacc.TaskSpec{Machine: "web-01", Command: "true"}); err != nil {
		panic(err)
	}
	if err := e.c.RunUntilEmpty(e.ctx); err != nil {
		panic(err)
	}
	families, err := reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, f := range families {
		if f.GetName() == "rediacc_tasks_finished_total" {
			for _, m := range f.GetMetric() {
				fmt.Println(f.GetName(), m.GetLabel()[0].GetValue(), m.GetCounter().GetValue())
			}
		}
	}
	srv := httptest.NewServer(e.c.MetricsHandler()) // in production: 127.0.0.1:9464 behind a proxy
	defer srv.Close()
	res, err := http.Get(srv.URL + "/healthz") // 200 "ok" while Run works and the store answers
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	fmt.Println("/healthz", res.StatusCode, strings.TrimSpace(string(body)))
	// Output:
	// rediacc_tasks_finished_total cancelled 0
	// rediacc_tasks_finished_total completed 1
	// rediacc_tasks_finished_total failed 0
	// /healthz 503 unhealthy: worker loop not running
}
