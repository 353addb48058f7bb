package main

// Monitoring for the CLI: `list queue --stats`, and the worker's
// --metrics-addr (Prometheus /metrics and /healthz) and --alert-webhook
// flags.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/rediacc/rediacc"
)

// envWebhookSecret holds the webhook signing secret when
// --alert-webhook-secret does not name a vault key.
const envWebhookSecret = "REDIACC_ALERT_WEBHOOK_SECRET"

// monitorFlags are the worker's monitoring flags.
type monitorFlags struct {
	metricsAddr   string
	webhookURL    string
	webhookSecret string // a vault key
	webhookTeam   string
}

func (m *monitorFlags) register(f *pflag.FlagSet) {
	f.StringVar(&m.metricsAddr, "metrics-addr", "", "serve Prometheus /metrics and /healthz on this address, e.g. 127.0.0.1:9464 (no authentication: keep it on loopback or a protected network)")
	f.StringVar(&m.webhookURL, "alert-webhook", "", "POST alerts (failed tasks) as JSON to this URL, signed with HMAC-SHA256 (header "+rediacc.WebhookSignatureHeader+")")
	f.StringVar(&m.webhookSecret, "alert-webhook-secret", "", "vault KEY holding the webhook signing secret (else env "+envWebhookSecret+"); unsigned webhooks are refused")
	f.StringVar(&m.webhookTeam, "alert-webhook-team", rediacc.DefaultTeam, "team whose vault holds --alert-webhook-secret")
}

// client opens the worker's client: with --alert-webhook, its Alerter logs
// each alert and POSTs it to the webhook (drained by the client's Close).
func (m *monitorFlags) client(ctx context.Context, g *globals, tune func(*rediacc.Config)) (*rediacc.Client, error) {
	if m.webhookURL == "" {
		if m.webhookSecret != "" {
			return nil, usagef("--alert-webhook-secret needs --alert-webhook")
		}
		return g.client(ctx, tune)
	}
	secret, err := m.secret(ctx, g)
	if err != nil {
		return nil, err
	}
	log, err := g.logger()
	if err != nil {
		return nil, err
	}
	wh, err := rediacc.NewWebhookAlerter(rediacc.WebhookConfig{URL: m.webhookURL, Secret: secret, Logger: log})
	if err != nil {
		return nil, usageError{err}
	}
	cl, err := g.client(ctx, func(cfg *rediacc.Config) {
		if tune != nil {
			tune(cfg)
		}
		cfg.Alerter = rediacc.FanoutAlerter(&rediacc.LogAlerter{Logger: cfg.Logger}, wh)
	})
	if err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = wh.Close(cctx)
		return nil, err
	}
	return cl, nil
}

// secret reads the webhook signing secret: from the team vault when
// --alert-webhook-secret names a key, else from $REDIACC_ALERT_WEBHOOK_SECRET.
func (m *monitorFlags) secret(ctx context.Context, g *globals) ([]byte, error) {
	if m.webhookSecret == "" {
		if s := os.Getenv(envWebhookSecret); s != "" {
			return []byte(s), nil
		}
		return nil, usagef("--alert-webhook needs a signing secret: --alert-webhook-secret VAULT_KEY (read from team %q's vault) or env %s; unsigned webhooks are refused", m.webhookTeam, envWebhookSecret)
	}
	cl, err := g.client(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	s, err := cl.GetSecret(ctx, m.webhookTeam, m.webhookSecret)
	if err != nil {
		return nil, fmt.Errorf("--alert-webhook-secret: %w", err)
	}
	if len(s.Value) == 0 {
		return nil, usagef("--alert-webhook-secret %s: the secret is empty; unsigned webhooks are refused", quoted(m.webhookSecret))
	}
	return s.Value, nil
}

// serve starts the metrics server when --metrics-addr is set. stop shuts it
// down and waits for it (call it once the worker has stopped).
func (m *monitorFlags) serve(ctx context.Context, g *globals, cl *rediacc.Client) (stop func(), err error) {
	if m.metricsAddr == "" {
		return func() {}, nil
	}
	log, err := g.logger()
	if err != nil {
		return nil, err
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", m.metricsAddr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	srv := &http.Server{Handler: cl.MetricsHandler(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "error", err)
		}
	}()
	log.Info("metrics server listening", "addr", ln.Addr().String(), "paths", "/metrics /healthz")
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			_ = srv.Close()
		}
		<-served
	}, nil
}

// printQueueStats prints `list queue --stats`.
func printQueueStats(ctx context.Context, g *globals, team, machine, output string) error {
	cl, err := g.client(ctx, nil)
	if err != nil {
		return err
	}
	defer cl.Close()
	s, err := cl.QueueStats(ctx, rediacc.StatsFilter{Team: team, Machine: machine})
	if err != nil {
		return err
	}
	if output == "json" {
		return writeJSON(g, s)
	}
	statuses := []rediacc.Status{rediacc.StatusPending, rediacc.StatusAssigned, rediacc.StatusProcessing,
		rediacc.StatusCompleted, rediacc.StatusFailed, rediacc.StatusCancelled}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "STATUS\t")
	for p := rediacc.Critical; p <= rediacc.Minimal; p++ {
		fmt.Fprintf(tw, "%d %s\t", int(p), p)
	}
	fmt.Fprintln(tw, "TOTAL\t")
	for _, st := range statuses {
		fmt.Fprintf(tw, "%s\t", st)
		total := 0
		for p := rediacc.Critical; p <= rediacc.Minimal; p++ {
			n := s.ByStatus[st][p]
			total += n
			fmt.Fprintf(tw, "%d\t", n)
		}
		fmt.Fprintf(tw, "%d\t\n", total)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, by := range []struct {
		title string
		m     map[string]map[rediacc.Status]int
	}{{"TEAM", s.ByTeam}, {"MACHINE", s.ByMachine}} {
		fmt.Fprintln(g.stdout)
		tw = tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "%s\t", by.title)
		for _, st := range statuses {
			fmt.Fprintf(tw, "%s\t", st)
		}
		fmt.Fprintln(tw)
		for _, name := range sortedNames(by.m) {
			fmt.Fprintf(tw, "%s\t", name)
			for _, st := range statuses {
				fmt.Fprintf(tw, "%d\t", by.m[name][st])
			}
			fmt.Fprintln(tw)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	fmt.Fprintln(g.stdout)
	tw = tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	oldest := "-"
	if s.OldestPendingID != "" {
		oldest = fmt.Sprintf("%s (task %s)", s.OldestPendingAge.Round(time.Second), s.OldestPendingID)
	}
	fmt.Fprintf(tw, "Pending:\t%d\n", s.Pending)
	fmt.Fprintf(tw, "Oldest pending:\t%s\n", oldest)
	fmt.Fprintf(tw, "Running:\t%d\n", s.Running)
	fmt.Fprintf(tw, "Finished in the last %s:\t%d completed, %d failed, %d cancelled\n", s.Window, s.Finished.Completed, s.Finished.Failed, s.Finished.Cancelled)
	fmt.Fprintf(tw, "Finished per minute:\t%.2f\n", s.FinishedPerMinute)
	return tw.Flush()
}

func sortedNames(m map[string]map[rediacc.Status]int) []string {
	return slices.Sorted(maps.Keys(m))
}
