package rediacc_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// Loopback addresses 127.0.0.40..59 are used by the health, placement,
// batch and archive tests.

// teamMachine starts a real sshd on 127.0.0.n and registers it in team
// (created when missing) with labels.
func teamMachine(t testing.TB, c *rediacc.Client, name, team string, labels map[string]string, n int) *sshtest.OpenSSH {
	t.Helper()
	if team != "" && team != rediacc.DefaultTeam {
		if _, err := c.CreateTeam(asOwner(), team, ""); err != nil && !errors.Is(err, rediacc.ErrExists) {
			t.Fatal(err)
		}
	}
	srv := realSSHD(t, n)
	if _, err := c.AddMachine(asOwner(), rediacc.Machine{
		Name: name, Team: team, Host: srv.Host, Port: srv.Port, User: srv.User, Labels: labels,
		IdentityFile: srv.ClientKeyPath, KnownHostsFile: srv.KnownHostsPath,
	}); err != nil {
		t.Fatal(err)
	}
	return srv
}

// alertSink collects alerts.
type alertSink struct {
	mu     sync.Mutex
	alerts []rediacc.Alert
}

func (s *alertSink) Alert(_ context.Context, a rediacc.Alert) error {
	s.mu.Lock()
	s.alerts = append(s.alerts, a)
	s.mu.Unlock()
	return nil
}

func (s *alertSink) kinds() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, a := range s.alerts {
		out = append(out, a.Kind+":"+a.Machine)
	}
	return out
}

func statusOf(t *testing.T, c *rediacc.Client, ctx context.Context, name string) rediacc.MachineStatus {
	t.Helper()
	sts, err := c.MachineStatus(ctx, rediacc.MachineFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sts {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("machine %s not in MachineStatus: %+v", name, sts)
	return rediacc.MachineStatus{}
}

// ProbeMachine on a real sshd: a sane sample is returned and stored;
// MachineStatus shows it with the machine's queue; a viewer may read the
// status, an outsider may not; a probe of a stopped sshd fails, marks the
// machine unhealthy (last good sample kept) and raises an alert.
func TestProbeMachineOnRealSSHD(t *testing.T) {
	sink := &alertSink{}
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.Alerter = sink
		cfg.Health.Interval = -1 // the probes here are the test's own (ProbeMachine)
	})
	srv := teamMachine(t, c, "h1", "", nil, 40)
	ctx := ctxTimeout(t, time.Minute)
	s, err := c.ProbeMachine(ctx, "h1")
	if err != nil {
		t.Fatal(err)
	}
	if s.CPUs < 1 || s.MemTotalBytes == 0 || s.DiskTotalBytes == 0 || s.At.IsZero() ||
		s.CPUPercent < 0 || s.CPUPercent > 100 || s.MemUsedPercent <= 0 || s.MemUsedPercent > 100 || s.LoadPerCPU < 0 {
		t.Fatalf("implausible sample: %+v", s)
	}
	submit(t, c, rediacc.TaskSpec{Machine: "h1", Command: "true"})
	st := statusOf(t, c, ctx, "h1")
	if st.Sample == nil || st.LastSeen.IsZero() || !st.LastSeen.Equal(st.LastProbe) || st.Queued != 1 || st.Running != 0 ||
		!st.Healthy || st.Busy {
		t.Errorf("status after probe: %+v", st)
	}
	if _, err := c.SetMember(asOwner(), rediacc.DefaultTeam, "vera", rediacc.RoleViewer); err != nil {
		t.Fatal(err)
	}
	if sts, err := c.MachineStatus(as("vera"), rediacc.MachineFilter{}); err != nil || len(sts) != 1 {
		t.Errorf("viewer status: %v %v", sts, err)
	}
	if _, err := c.MachineStatus(as("mallory"), rediacc.MachineFilter{}); !errors.Is(err, rediacc.ErrPermissionDenied) {
		t.Errorf("outsider status: %v", err)
	}
	if _, err := c.ProbeMachine(as("mallory"), "h1"); !errors.Is(err, rediacc.ErrNotFound) { // hidden: as an unknown machine
		t.Errorf("outsider probe: %v", err)
	}
	if _, err := c.ProbeMachine(ctx, "ghost"); !errors.Is(err, rediacc.ErrNotFound) {
		t.Errorf("probe of an unknown machine: %v", err)
	}

	srv.Stop()
	if _, err := c.ProbeMachine(ctx, "h1"); !errors.Is(err, rediacc.ErrConnect) {
		t.Fatalf("probe of a stopped sshd: %v, want ErrConnect", err)
	}
	st = statusOf(t, c, ctx, "h1")
	if st.Healthy || st.ProbeError == "" || st.Sample == nil || st.LastSeen.IsZero() || !st.LastProbe.After(st.LastSeen) {
		t.Errorf("status after a failed probe: %+v", st)
	}
	// The alert is stored, then delivered by the client's outbox dispatcher.
	waitFor(t, "the unhealthy machine's alert", func() bool { return len(sink.kinds()) > 0 })
	if k := sink.kinds(); len(k) != 1 || k[0] != rediacc.AlertMachineUnhealthy+":h1" {
		t.Errorf("alerts: %v, want one %s for h1", k, rediacc.AlertMachineUnhealthy)
	}
	// Placement skips the failing machine.
	if _, err := c.Submit(ctx, rediacc.TaskSpec{Team: rediacc.DefaultTeam, Command: "true"}); !errors.Is(err, rediacc.ErrNoEligibleMachine) ||
		!strings.Contains(err.Error(), "failing") {
		t.Errorf("placement on a failing machine: %v", err)
	}
	audit, err := c.AuditLog(ctx, rediacc.AuditFilter{Action: "machine.status"})
	if err != nil || len(audit) < 4 {
		t.Errorf("machine.status audit records: %d %v", len(audit), err)
	}
}

// A running worker probes its machines every HealthInterval.
func TestWorkerProbesMachines(t *testing.T) {
	c := newClient(t, func(cfg *rediacc.Config) { cfg.Health.Interval = 200 * time.Millisecond })
	teamMachine(t, c, "p1", "", nil, 41)
	teamMachine(t, c, "p2", "", nil, 42)
	runWorker(t, c)
	ctx := ctxTimeout(t, time.Minute)
	first := map[string]time.Time{}
	deadline := time.Now().Add(30 * time.Second)
	for {
		sts, err := c.MachineStatus(ctx, rediacc.MachineFilter{})
		if err != nil {
			t.Fatal(err)
		}
		seen := 0
		for _, s := range sts {
			if s.LastSeen.IsZero() {
				continue
			}
			if first[s.Name].IsZero() {
				first[s.Name] = s.LastSeen
			} else if s.LastSeen.After(first[s.Name]) {
				seen++ // probed at least twice
			}
		}
		if seen == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker did not probe both machines twice: %+v", sts)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A machine whose sample is above the thresholds takes no new priority 3–5
// work from the worker until it recovers; priority 1 tasks still run on it.
func TestBusyMachineClaimsOnlyHighPriority(t *testing.T) {
	c := newClient(t, func(cfg *rediacc.Config) { cfg.Health.Interval = -1 })
	teamMachine(t, c, "b1", "", nil, 43)
	now := time.Now().UTC()
	hot := &rediacc.HealthSample{At: now, CPUPercent: 99, CPUs: 2, MemUsedPercent: 40, MemTotalBytes: 1 << 30}
	if err := rediacc.SetMachineHealthForTest(c, "b1", hot, "", now); err != nil {
		t.Fatal(err)
	}
	if st := statusOf(t, c, asOwner(), "b1"); !st.Busy || !st.Healthy {
		t.Fatalf("injected busy sample: %+v", st)
	}
	low := submit(t, c, rediacc.TaskSpec{Machine: "b1", Command: "true", Priority: rediacc.Normal})
	crit := submit(t, c, rediacc.TaskSpec{Machine: "b1", Command: "true", Priority: rediacc.Critical})
	runWorker(t, c)
	waitStatus(t, c, crit.ID, rediacc.StatusCompleted)
	time.Sleep(300 * time.Millisecond)
	if got := get(t, c, low.ID); got.Status != rediacc.StatusPending {
		t.Fatalf("priority-3 task on a busy machine: %s, want PENDING", got.Status)
	}
	calm := *hot
	calm.CPUPercent = 5
	if err := rediacc.SetMachineHealthForTest(c, "b1", &calm, "", time.Now().UTC()); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, low.ID, rediacc.StatusCompleted)
}

// Config.HealthThresholds decide what busy means.
func TestHealthThresholds(t *testing.T) {
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.Health.Interval = -1
		cfg.Health.Thresholds = rediacc.HealthThresholds{CPUPercent: 50, MemPercent: 101}
	})
	teamMachine(t, c, "t1", "", nil, 44)
	now := time.Now().UTC()
	for _, tc := range []struct {
		cpu, mem float64
		busy     bool
	}{{49, 99, false}, {51, 10, true}, {10, 100, false}} {
		if err := rediacc.SetMachineHealthForTest(c, "t1", &rediacc.HealthSample{At: now, CPUPercent: tc.cpu, MemUsedPercent: tc.mem, CPUs: 1}, "", now); err != nil {
			t.Fatal(err)
		}
		if st := statusOf(t, c, asOwner(), "t1"); st.Busy != tc.busy {
			t.Errorf("cpu %g mem %g: busy %v, want %v", tc.cpu, tc.mem, st.Busy, tc.busy)
		}
	}
	// An old sample no longer counts.
	old := now.Add(-time.Hour)
	if err := rediacc.SetMachineHealthForTest(c, "t1", &rediacc.HealthSample{At: old, CPUPercent: 99}, "", old); err != nil {
		t.Fatal(err)
	}
	if st := statusOf(t, c, asOwner(), "t1"); st.Busy {
		t.Errorf("a stale busy sample still counts: %+v", st)
	}
	if !(rediacc.HealthSample{CPUPercent: 91}).Busy(rediacc.HealthThresholds{}) || (rediacc.HealthSample{CPUPercent: 90}).Busy(rediacc.HealthThresholds{}) {
		t.Error("default thresholds are not 90 % (strictly above)")
	}
}
