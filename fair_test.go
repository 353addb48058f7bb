package rediacc_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
)

// The case on real sshd, through the public API: team A floods its
// three machines with 1,000 `sleep 0.2` tasks; then team B submits one
// task to its idle machine, and team A one to its fourth, idle machine.
// Both start at the next free worker slot: at most one claim's worth of A's
// tasks (Concurrency) starts between their submission and their start,
// and nearly all of A's backlog starts after them. (Before fair claims, B's
// task started after all of A's.) The latency is logged, not asserted.
func TestFairShareRealSSHD(t *testing.T) {
	const flood = 1000
	c := newClient(t, nil) // defaults: Concurrency 16, PerMachineLimit 8
	for i := 1; i <= 4; i++ {
		teamMachine(t, c, fmt.Sprint("a", i), "team-a", nil, 60+i)
	}
	teamMachine(t, c, "b1", "team-b", nil, 65)
	specs := make([]rediacc.TaskSpec, flood)
	for i := range specs {
		specs[i] = rediacc.TaskSpec{Machine: fmt.Sprint("a", i%3+1), Command: "sleep 0.2"}
	}
	backlog, err := c.SubmitBatch(asOwner(), specs)
	if err != nil {
		t.Fatal(err)
	}
	stop := runWorker(t, c)
	// Let the flood settle: A's tasks fill every worker slot.
	deadline := time.Now().Add(time.Minute)
	for {
		done, err := c.List(asOwner(), rediacc.ListFilter{Statuses: []rediacc.Status{rediacc.StatusCompleted}, Limit: 32})
		if err != nil {
			t.Fatal(err)
		}
		if len(done) >= 32 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the flood does not run")
		}
		time.Sleep(20 * time.Millisecond)
	}
	b := submit(t, c, rediacc.TaskSpec{Machine: "b1", Command: "true"})
	a4 := submit(t, c, rediacc.TaskSpec{Machine: "a4", Command: "true"})
	doneB := waitStatus(t, c, b.ID, rediacc.StatusCompleted)
	doneA4 := waitStatus(t, c, a4.ID, rediacc.StatusCompleted)
	stop()
	all, err := c.List(asOwner(), rediacc.ListFilter{Team: "team-a"})
	if err != nil {
		t.Fatal(err)
	}
	started := map[string]time.Time{}
	for _, tk := range all {
		started[tk.ID] = tk.StartedAt
	}
	for _, late := range []*rediacc.Task{doneB, doneA4} {
		between, after := 0, 0
		for _, tk := range backlog {
			got := rediacc.Task{StartedAt: started[tk.ID]}
			switch {
			case got.StartedAt.IsZero() || got.StartedAt.After(late.StartedAt):
				after++
			case got.StartedAt.After(late.CreatedAt):
				between++
			}
		}
		t.Logf("%s's task started %v after its submission; %d of A's tasks started in between, %d after it",
			late.Machine, late.StartedAt.Sub(late.CreatedAt).Round(time.Millisecond), between, after)
		if between > rediacc.DefaultConcurrency {
			t.Errorf("%s's task: %d of A's backlog started between its submission and its start, want at most one claim (%d)",
				late.Machine, between, rediacc.DefaultConcurrency)
		}
		if after < flood*8/10 {
			t.Errorf("%s's task started after %d of A's %d tasks; want it ahead of most of the backlog", late.Machine, flood-after, flood)
		}
	}
}
