package rediacc_test

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
)

var tWait = time.Date(2026, 11, 29, 14, 0, 0, 0, time.UTC)

// busyNow marks machine busy (CPU 98 %, judged over steady samples) at the
// clock's time.
func busyNow(t *testing.T, c *rediacc.Client, clock *fakeClock, machine string) {
	t.Helper()
	now := clock.Now()
	s := &rediacc.HealthSample{At: now, CPUPercent: 98, MemUsedPercent: 20, CPUs: 2, MemTotalBytes: 1 << 30}
	if err := rediacc.SetMachineHealthForTest(c, machine, s, "", now); err != nil {
		t.Fatal(err)
	}
}

func waitingCodes(tk *rediacc.Task) []rediacc.WaitCode {
	var out []rediacc.WaitCode
	for _, w := range tk.Waiting {
		out = append(out, w.Code)
	}
	return out
}

// The case: a priority-3 task pinned to a busy machine says why it
// waits and until when (in Get, in the task JSON); the gate ends when aging
// lifts it to priority 2 (injected clock, no sleeping for the aging), and
// RunUntilEmpty returns instead of waiting forever.
func TestWaitReasonBusyMachineGateEnds(t *testing.T) {
	clock := &fakeClock{now: tWait}
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.Clock, cfg.AgingInterval, cfg.Health.Interval = clock, time.Minute, -1
	})
	inProcessMachine(t, c, "m1")
	busyNow(t, c, clock, "m1")
	task := submit(t, c, rediacc.TaskSpec{Machine: "m1", Priority: rediacc.Normal, Command: "echo ran"})
	got := get(t, c, task.ID)
	if len(got.Waiting) != 1 || got.Waiting[0].Code != rediacc.WaitMachineBusy || !got.Waiting[0].Until.Equal(tWait.Add(time.Minute)) {
		t.Fatalf("waiting: %+v", got.Waiting)
	}
	want := "machine m1 busy: CPU 98 % > 90 % since 14:00:00 UTC; priority 3 work waits until 14:01:00 UTC (aging lifts it to priority 2)"
	if !strings.HasPrefix(got.Waiting[0].Message, want) {
		t.Fatalf("message %q, want it to start with %q", got.Waiting[0].Message, want)
	}
	raw, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	var j map[string]any
	if err := json.Unmarshal(raw, &j); err != nil {
		t.Fatal(err)
	}
	if s, _ := j["waitReason"].(string); !strings.HasPrefix(s, want) {
		t.Fatalf("task JSON waitReason %q", j["waitReason"])
	}
	if ws, _ := j["waitReasons"].([]any); len(ws) != 1 || ws[0].(map[string]any)["code"] != "machine-busy" || ws[0].(map[string]any)["until"] != "2026-11-29T14:01:00Z" {
		t.Fatalf("task JSON waitReasons %v", j["waitReasons"])
	}
	var back rediacc.Task
	if err := json.Unmarshal(raw, &back); err != nil || len(back.Waiting) != 1 || back.Waiting[0] != got.Waiting[0] {
		t.Fatalf("JSON round trip: %+v, %v", back.Waiting, err)
	}
	// List explains too.
	if ts, err := c.List(asOwner(), rediacc.ListFilter{}); err != nil || len(ts) != 1 || len(ts[0].Waiting) != 1 {
		t.Fatalf("List: %v %v", ts, err)
	}

	done := make(chan error, 1)
	go func() { done <- c.RunUntilEmpty(ctxTimeout(t, time.Minute)) }()
	clock.Advance(59 * time.Second)
	time.Sleep(100 * time.Millisecond) // several poll intervals: the gate holds
	if got := get(t, c, task.ID); got.Status != rediacc.StatusPending {
		t.Fatalf("ran before the gate's end: %s", got.Status)
	}
	clock.Advance(time.Second)
	if err := <-done; err != nil {
		t.Fatalf("RunUntilEmpty: %v", err)
	}
	if got := get(t, c, task.ID); got.Status != rediacc.StatusCompleted || got.Waiting != nil {
		t.Fatalf("after the gate's end: %s %+v", got.Status, got.Waiting)
	}
}

// The other reasons: a retry delay, a full machine, the reserved slot
// (with when the task may take it), and a ready task with no worker.
func TestWaitReasons(t *testing.T) {
	clock := &fakeClock{now: tWait}
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.Clock, cfg.Health.Interval, cfg.PerMachineLimit = clock, -1, 2
	})
	inProcessMachine(t, c, "m1")
	inProcessMachine(t, c, "m2")
	ready := submit(t, c, rediacc.TaskSpec{Machine: "m2", Command: "true"})
	if w := get(t, c, ready.ID).Waiting; len(w) != 1 || w[0].Code != rediacc.WaitQueued || !w[0].Until.IsZero() {
		t.Fatalf("ready task: %+v", w)
	}
	// Retry delay.
	flaky := submit(t, c, rediacc.TaskSpec{Machine: "m2", Command: "exit 3", FailureAction: rediacc.FailureNone,
		Retry: rediacc.RetryPolicy{RetryCount: 1, RetryDelay: time.Hour}})
	if _, err := c.Cancel(asOwner(), ready.ID); err != nil {
		t.Fatal(err)
	}
	stop := runWorker(t, c)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if got := get(t, c, flaky.ID); got.Attempts == 1 && got.Status == rediacc.StatusPending {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first attempt never failed")
		}
	}
	w := get(t, c, flaky.ID).Waiting
	if len(w) != 1 || w[0].Code != rediacc.WaitRetryDelay || !w[0].Until.Equal(tWait.Add(time.Hour)) ||
		!strings.HasPrefix(w[0].Message, "retry at 15:00:00 UTC (attempt 1 failed: ") || !strings.Contains(w[0].Message, "status 3") {
		t.Fatalf("retry delay: %+v", w)
	}
	// A full machine (2 slots, one held for priority 1): a long task runs.
	long := submit(t, c, rediacc.TaskSpec{Machine: "m1", Command: "sleep 30"})
	waitStatus(t, c, long.ID, rediacc.StatusProcessing)
	second := submit(t, c, rediacc.TaskSpec{Machine: "m1", Priority: rediacc.Low, Command: "true"})
	time.Sleep(100 * time.Millisecond)
	w = get(t, c, second.ID).Waiting
	if len(w) != 1 || w[0].Code != rediacc.WaitReservedSlot || !w[0].Until.Equal(tWait.Add(4*rediacc.DefaultAgingInterval)) ||
		w[0].Message != "machine m1 full: 1 of 1 slots running (1 more held for priority 1); this task may take it from 14:20:00 UTC (fully aged), or sooner when one of them ends" {
		t.Fatalf("reserved slot: %+v", w)
	}
	crit := submit(t, c, rediacc.TaskSpec{Machine: "m1", Priority: rediacc.Critical, Command: "sleep 30"})
	waitStatus(t, c, crit.ID, rediacc.StatusProcessing)
	w = get(t, c, second.ID).Waiting
	if len(w) != 1 || w[0].Code != rediacc.WaitMachineFull || w[0].Message != "machine m1 full: 2 of 2 slots running; waits until one of them ends" {
		t.Fatalf("full machine: %+v", w)
	}
	stop()
}

// RunUntilEmpty stops, naming the tasks left and why, when its worker can
// never run them: another team's tasks, or a busy machine's gate with no
// end (aging and MaxHold off). The tasks it may run are run first.
func TestRunUntilEmptyHeld(t *testing.T) {
	clock := &fakeClock{now: tWait}
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.Clock, cfg.Health.Interval = clock, -1
	})
	for _, team := range []string{"ops", "web"} {
		if _, err := c.CreateTeam(asOwner(), team, ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.SetMember(asOwner(), "ops", "olga", rediacc.RoleOperator); err != nil {
		t.Fatal(err)
	}
	inProcessTeamMachine(t, c, "ops-1", "ops")
	inProcessTeamMachine(t, c, "web-1", "web")
	mine := submit(t, c, rediacc.TaskSpec{Machine: "ops-1", Command: "true"})
	theirs := submit(t, c, rediacc.TaskSpec{Machine: "web-1", Command: "true"})
	// olga is not in team web: its task is counted, never named (no id,
	// team or machine name of a team she may not see).
	err := c.RunUntilEmpty(rediacc.WithActor(ctxTimeout(t, time.Minute), "olga"))
	var held *rediacc.HeldError
	if !errors.Is(err, rediacc.ErrTasksHeld) || !errors.As(err, &held) || len(held.Tasks) != 0 || held.Hidden != 1 {
		t.Fatalf("RunUntilEmpty: %v", err)
	}
	if msg := err.Error(); strings.Contains(msg, theirs.ID) || strings.Contains(msg, "web") ||
		!strings.Contains(msg, "1 task(s) of teams whose queue this worker's user may not see") {
		t.Fatalf("error text names what olga may not see: %v", err)
	}
	if got := get(t, c, mine.ID); got.Status != rediacc.StatusCompleted {
		t.Fatalf("the worker's own task: %s", got.Status)
	}
	// As a viewer of web she may see its queue but not run it: named.
	if _, err := c.SetMember(asOwner(), "web", "olga", rediacc.RoleViewer); err != nil {
		t.Fatal(err)
	}
	err = c.RunUntilEmpty(rediacc.WithActor(ctxTimeout(t, time.Minute), "olga"))
	if !errors.Is(err, rediacc.ErrTasksHeld) || !errors.As(err, &held) || len(held.Tasks) != 1 || held.Tasks[0].ID != theirs.ID ||
		held.Hidden != 0 || held.Tasks[0].Waiting[0].Code != rediacc.WaitNotRunnable {
		t.Fatalf("RunUntilEmpty as a viewer: %v", err)
	}
	if !strings.Contains(err.Error(), theirs.ID+" (team web, machine web-1, priority 3): this worker (acting as olga) may not run team web's tasks") {
		t.Fatalf("error text: %v", err)
	}
	if _, err := c.Cancel(asOwner(), theirs.ID); err != nil {
		t.Fatal(err)
	}

	// A gate with no end by time alone: aging and MaxHold off, and the
	// busy judgement renewed by this worker's own probes (its lapse is no
	// end: a probe renews it while the machine stays busy).
	c2 := newClient(t, func(cfg *rediacc.Config) {
		cfg.Clock, cfg.Health.Interval, cfg.AgingInterval, cfg.Health.MaxHold = clock, time.Hour, -1, -1
	})
	inProcessMachine(t, c2, "hot")
	busyNow(t, c2, clock, "hot")
	stuck := submit(t, c2, rediacc.TaskSpec{Machine: "hot", Priority: rediacc.Minimal, Command: "true"})
	err = c2.RunUntilEmpty(ctxTimeout(t, time.Minute))
	if !errors.As(err, &held) || len(held.Tasks) != 1 || held.Tasks[0].ID != stuck.ID || held.Tasks[0].Waiting[0].Code != rediacc.WaitMachineBusy ||
		!strings.Contains(err.Error(), "renewed, it holds until the machine is free (no aging, no maximum hold)") {
		t.Fatalf("RunUntilEmpty on a gate with no end: %v", err)
	}
}

// MaxHold ends a busy machine's gate when aging is off.
func TestMaxHoldEndsBusyGate(t *testing.T) {
	clock := &fakeClock{now: tWait}
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.Clock, cfg.Health.Interval, cfg.AgingInterval, cfg.Health.MaxHold = clock, -1, -1, 2*time.Minute
	})
	inProcessMachine(t, c, "hot")
	busyNow(t, c, clock, "hot")
	task := submit(t, c, rediacc.TaskSpec{Machine: "hot", Priority: rediacc.Minimal, Command: "true"})
	w := get(t, c, task.ID).Waiting
	if len(w) != 1 || !w[0].Until.Equal(tWait.Add(2*time.Minute)) || !strings.Contains(w[0].Message, "(the maximum hold of 2m0s)") {
		t.Fatalf("waiting: %+v", w)
	}
	clock.Advance(2 * time.Minute)
	busyNow(t, c, clock, "hot") // still busy
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := get(t, c, task.ID); got.Status != rediacc.StatusCompleted {
		t.Fatalf("after MaxHold: %s", got.Status)
	}
}

// A machine becomes busy on its load averages, not on one sample; busy is
// a warning-level alert of its own kind, a failed probe an error-level
// "unhealthy" one.
func TestBusyAndUnhealthyAlerts(t *testing.T) {
	sink := &alertSink{}
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.Alerter = sink
		cfg.Health.Interval = -1
		cfg.Health.Thresholds = rediacc.HealthThresholds{CPUPercent: 0.0001, MemPercent: 101} // any load is "busy"
		// Samples must span Smoothing/2 before they can make a machine
		// busy: a short time constant lets two probes in a row do it.
		cfg.Health.Smoothing = 100 * time.Millisecond
	})
	srv := teamMachine(t, c, "h2", "", nil, 45)
	ctx := ctxTimeout(t, time.Minute)
	// The machine is this host: keep one core busy while it is probed, so
	// that its CPU samples are above the tiny threshold even when the host
	// is otherwise idle.
	stopBurn := make(chan struct{})
	var burning sync.WaitGroup
	burning.Add(1)
	go func() {
		defer burning.Done()
		for {
			select {
			case <-stopBurn:
				return
			default:
			}
		}
	}()
	defer func() { close(stopBurn); burning.Wait() }()
	if _, err := c.ProbeMachine(ctx, "h2"); err != nil {
		t.Fatal(err)
	}
	if st := statusOf(t, c, ctx, "h2"); st.Busy || len(storedAlerts(t, c, "")) != 0 {
		t.Fatalf("busy on one sample: %+v, alerts %v", st, storedAlerts(t, c, ""))
	}
	// Loaded for real (the burner above): the probe's CPU sample is above the tiny threshold.
	if _, err := c.ProbeMachine(ctx, "h2"); err != nil {
		t.Fatal(err)
	}
	st := statusOf(t, c, ctx, "h2")
	if !st.Busy || st.BusySince.IsZero() || !strings.HasPrefix(st.BusyReason, "CPU ") || st.AvgCPUPercent <= 0 {
		t.Fatalf("two probes of a loaded host (this test runs on it) did not make it busy: %+v", st)
	}
	// Stored with the busy state, in its transaction, then delivered.
	if got := storedAlerts(t, c, ""); len(got) != 1 || got[0] != rediacc.AlertMachineBusy {
		t.Fatalf("stored alerts once busy: %v", got)
	}
	waitFor(t, "the busy alert", func() bool { return len(sink.kinds()) >= 1 })
	sink.mu.Lock()
	alerts := append([]rediacc.Alert(nil), sink.alerts...)
	sink.mu.Unlock()
	if len(alerts) != 1 || alerts[0].Kind != rediacc.AlertMachineBusy || alerts[0].Severity != rediacc.SeverityWarning ||
		!strings.Contains(alerts[0].Message, "machine h2 is busy: CPU") {
		t.Fatalf("alerts after becoming busy: %+v", alerts)
	}
	// Still busy: no second busy alert.
	if _, err := c.ProbeMachine(ctx, "h2"); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if _, err := c.ProbeMachine(ctx, "h2"); err == nil {
		t.Fatal("probe of a stopped sshd succeeded")
	}
	if got := storedAlerts(t, c, ""); len(got) != 2 || got[1] != rediacc.AlertMachineUnhealthy {
		t.Fatalf("stored alerts after a failed probe: %v", got)
	}
	waitFor(t, "the unhealthy alert", func() bool { return len(sink.kinds()) >= 2 })
	sink.mu.Lock()
	alerts = append([]rediacc.Alert(nil), sink.alerts...)
	sink.mu.Unlock()
	if len(alerts) != 2 || alerts[1].Kind != rediacc.AlertMachineUnhealthy || alerts[1].Severity != rediacc.SeverityError {
		t.Fatalf("alerts after a failed probe: %+v", alerts)
	}
}

// The LogAlerter logs warnings at WARN and the rest at ERROR.
func TestLogAlerterLevels(t *testing.T) {
	var b strings.Builder
	l := &rediacc.LogAlerter{Logger: newTextLogger(&b)}
	ctx := asOwner()
	_ = l.Alert(ctx, rediacc.Alert{Kind: rediacc.AlertMachineBusy, Severity: rediacc.SeverityWarning, Machine: "m"})
	_ = l.Alert(ctx, rediacc.Alert{Kind: rediacc.AlertMachineUnhealthy, Machine: "m"})
	out := b.String()
	if !strings.Contains(out, "level=WARN msg=\"alert: machine.busy\"") || !strings.Contains(out, "level=ERROR msg=\"alert: machine.unhealthy\"") ||
		!strings.Contains(out, "severity=error") {
		t.Fatalf("log:\n%s", out)
	}
}

func TestTeamWeightsValidated(t *testing.T) {
	for _, w := range []map[string]int{{"a": 0}, {"a": rediacc.MaxTeamWeight + 1}, {"": 2}} {
		_, err := rediacc.New(asOwner(), rediacc.Config{DataDir: t.TempDir(), TeamWeights: w})
		if !errors.Is(err, rediacc.ErrInvalidArgument) {
			t.Errorf("weights %v: %v, want ErrInvalidArgument", w, err)
		}
	}
}

func newTextLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
}

// The deprecated HealthInterval and HealthThresholds still configure
// Health when it is left zero.
func TestDeprecatedHealthFields(t *testing.T) {
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.HealthInterval = -1
		cfg.HealthThresholds = rediacc.HealthThresholds{CPUPercent: 50}
	})
	inProcessMachine(t, c, "m1")
	now := time.Now().UTC()
	if err := rediacc.SetMachineHealthForTest(c, "m1", &rediacc.HealthSample{At: now, CPUPercent: 60, CPUs: 1}, "", now); err != nil {
		t.Fatal(err)
	}
	if st := statusOf(t, c, asOwner(), "m1"); !st.Busy || st.BusyReason != "CPU 60 % > 50 %" {
		t.Fatalf("HealthThresholds{CPUPercent: 50} ignored: %+v", st)
	}
}

// storedAlerts lists the kinds of the alerts in c's outbox (of one kind
// when kind is not ""), oldest first, as the owner.
func storedAlerts(t *testing.T, c *rediacc.Client, kind string) []string {
	t.Helper()
	rs, err := c.ListAlerts(asOwner(), rediacc.AlertFilter{Kind: kind})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		out = append(out, r.Kind)
	}
	return out
}
