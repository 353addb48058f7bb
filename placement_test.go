package rediacc_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
)

func countByMachine(ts []*rediacc.Task) map[string]int {
	n := map[string]int{}
	for _, t := range ts {
		n[t.Machine]++
	}
	return n
}

// Tasks naming a team and selector instead of a machine spread evenly over
// the matching machines (three real sshd), never land on a machine outside
// the selector, and run there.
func TestPlacementSpreadsABurst(t *testing.T) {
	c := newClient(t, func(cfg *rediacc.Config) { cfg.Health.Interval = -1 })
	web := map[string]string{"role": "web"}
	teamMachine(t, c, "web-1", "prod", web, 45)
	teamMachine(t, c, "web-2", "prod", web, 46)
	teamMachine(t, c, "web-3", "prod", web, 47)
	teamMachine(t, c, "db-1", "prod", map[string]string{"role": "db"}, 48)
	var ts []*rediacc.Task
	for range 12 {
		ts = append(ts, submit(t, c, rediacc.TaskSpec{Team: "prod", Selector: web, Command: "echo $SSH_CONNECTION"}))
	}
	got := countByMachine(ts)
	if len(got) != 3 || got["web-1"] != 4 || got["web-2"] != 4 || got["web-3"] != 4 {
		t.Fatalf("burst of 12 placed as %v, want 4 on each web machine", got)
	}
	if ts[0].Team != "prod" || ts[0].Selector["role"] != "web" {
		t.Errorf("placed task: team %q selector %v", ts[0].Team, ts[0].Selector)
	}
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	hosts := map[string]string{"web-1": "127.0.0.45", "web-2": "127.0.0.46", "web-3": "127.0.0.47"}
	for _, task := range ts {
		done := get(t, c, task.ID)
		if done.Status != rediacc.StatusCompleted || !strings.Contains(done.Stdout, hosts[done.Machine]+" ") {
			t.Errorf("task on %s: %s %q", done.Machine, done.Status, done.Stdout)
		}
	}
	// Without a selector, the idle db machine gets the next ones first.
	next := submit(t, c, rediacc.TaskSpec{Team: "prod", Command: "true"})
	if next.Machine != "db-1" {
		t.Errorf("placement without selector picked %s, want the idle db-1", next.Machine)
	}
	// No eligible machine.
	for _, spec := range []rediacc.TaskSpec{
		{Team: "prod", Selector: map[string]string{"role": "cache"}, Command: "true"},
		{Team: "nosuch", Command: "true"},
	} {
		_, err := c.Submit(asOwner(), spec)
		if !errors.Is(err, rediacc.ErrNoEligibleMachine) || !errors.Is(err, rediacc.ErrInvalidArgument) || !strings.Contains(err.Error(), spec.Team) {
			t.Errorf("Submit(%+v) = %v, want ErrNoEligibleMachine naming the team", spec, err)
		}
	}
	if _, err := c.Submit(asOwner(), rediacc.TaskSpec{Team: "prod", Selector: map[string]string{"role": "cache"}, Command: "true"}); err == nil ||
		!strings.Contains(err.Error(), "role=cache") {
		t.Errorf("error does not name the selector: %v", err)
	}
	// A machine named with a team or selector must match them.
	if _, err := c.Submit(asOwner(), rediacc.TaskSpec{Machine: "db-1", Selector: web, Command: "true"}); !errors.Is(err, rediacc.ErrInvalidTask) {
		t.Errorf("machine outside the selector: %v", err)
	}
	if _, err := c.Submit(asOwner(), rediacc.TaskSpec{Machine: "db-1", Team: rediacc.DefaultTeam, Command: "true"}); !errors.Is(err, rediacc.ErrInvalidTask) {
		t.Errorf("machine outside the team: %v", err)
	}
	if _, err := c.Submit(asOwner(), rediacc.TaskSpec{Command: "true"}); !errors.Is(err, rediacc.ErrInvalidTask) {
		t.Errorf("neither machine nor team: %v", err)
	}
}

// A busy machine (sample above the thresholds) is avoided for priority 3–5
// while another is eligible, and still used for priority 1; a machine
// failing its probe is never picked; the lowest load per CPU, then the most
// free memory, break ties.
func TestPlacementAvoidsBusyMachines(t *testing.T) {
	c := newClient(t, func(cfg *rediacc.Config) { cfg.Health.Interval = -1 })
	teamMachine(t, c, "n1", "ops", nil, 49)
	teamMachine(t, c, "n2", "ops", nil, 50)
	teamMachine(t, c, "n3", "ops", nil, 51)
	now := time.Now().UTC()
	sample := func(cpu, loadPerCPU float64, free uint64) *rediacc.HealthSample {
		return &rediacc.HealthSample{At: now, CPUPercent: cpu, CPUs: 2, LoadPerCPU: loadPerCPU, MemTotalBytes: 8 << 30,
			MemAvailableBytes: free, MemUsedPercent: 100 * float64(8<<30-free) / float64(8<<30)}
	}
	set := func(name string, s *rediacc.HealthSample, probeErr string) {
		t.Helper()
		if err := rediacc.SetMachineHealthForTest(c, name, s, probeErr, now); err != nil {
			t.Fatal(err)
		}
	}
	set("n1", sample(99, 0.1, 6<<30), "") // busy, otherwise the best
	set("n2", sample(20, 0.5, 4<<30), "")
	set("n3", sample(20, 0.5, 5<<30), "") // same load as n2, more free memory
	var normal []*rediacc.Task
	for range 4 {
		normal = append(normal, submit(t, c, rediacc.TaskSpec{Team: "ops", Command: "true", Priority: rediacc.Low}))
	}
	if got := countByMachine(normal); got["n1"] != 0 || got["n2"] != 2 || got["n3"] != 2 || normal[0].Machine != "n3" {
		t.Fatalf("priority-4 tasks placed as %v (first on %s), want none on busy n1, n3 first", got, normal[0].Machine)
	}
	crit := submit(t, c, rediacc.TaskSpec{Team: "ops", Command: "true", Priority: rediacc.Critical})
	if crit.Machine != "n1" {
		t.Errorf("priority-1 task placed on %s, want the busy but idle n1", crit.Machine)
	}
	// Only busy machines left: they are used.
	set("n2", nil, "connection refused")
	set("n3", nil, "connection refused")
	if got := submit(t, c, rediacc.TaskSpec{Team: "ops", Command: "true"}); got.Machine != "n1" {
		t.Errorf("with only a busy machine healthy, placed on %s", got.Machine)
	}
	set("n1", nil, "timeout")
	if _, err := c.Submit(asOwner(), rediacc.TaskSpec{Team: "ops", Command: "true"}); !errors.Is(err, rediacc.ErrNoEligibleMachine) {
		t.Errorf("every machine failing: %v", err)
	}
	// A machine never probed is eligible (unknown health).
	teamMachine(t, c, "n4", "ops", nil, 52)
	if got := submit(t, c, rediacc.TaskSpec{Team: "ops", Command: "true"}); got.Machine != "n4" {
		t.Errorf("never-probed machine not used: %s", got.Machine)
	}
}

// Placement is authorized on the named team: an operator of another team
// may not place tasks in it, and the denial is audited.
func TestPlacementNeedsTheTeamRole(t *testing.T) {
	c := newClient(t, func(cfg *rediacc.Config) { cfg.Health.Interval = -1 })
	teamMachine(t, c, "s1", "staging", nil, 53)
	if _, err := c.CreateTeam(asOwner(), "dev", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetMember(asOwner(), "dev", "olga", rediacc.RoleOperator); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Submit(as("olga"), rediacc.TaskSpec{Team: "staging", Command: "true"}); !errors.Is(err, rediacc.ErrPermissionDenied) {
		t.Errorf("operator of dev placing in staging: %v", err)
	}
	recs, err := c.AuditLog(asOwner(), rediacc.AuditFilter{Actor: "olga", Result: "denied"})
	if err != nil || len(recs) != 1 || recs[0].Action != "task.create" || recs[0].Details["team_name"] != "staging" {
		t.Errorf("denial audit: %+v %v", recs, err)
	}
}
