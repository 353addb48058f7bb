package rediacc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rediacc/rediacc"
)

// QueueStats counts by status × priority, team and machine, finds the
// oldest pending task, and counts the tasks finished within the window;
// each actor sees the teams it may list.
func TestQueueStats(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	c := newClient(t, func(cfg *rediacc.Config) { cfg.Clock = clock })
	owner := asOwner()
	srv := realSSHD(t, 32)
	for _, team := range []string{"prod", "dev"} {
		if _, err := c.CreateTeam(owner, team, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := c.AddMachine(owner, rediacc.Machine{Name: team + "-01", Team: team, Host: srv.Host, Port: srv.Port, User: srv.User,
			IdentityFile: srv.ClientKeyPath, KnownHostsFile: srv.KnownHostsPath}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.SetMember(owner, "dev", "vic", rediacc.RoleViewer); err != nil {
		t.Fatal(err)
	}
	var first string
	for i, spec := range []rediacc.TaskSpec{
		{Machine: "prod-01", Command: "true", Priority: rediacc.Critical},
		{Machine: "prod-01", Command: "true", Priority: rediacc.Critical},
		{Machine: "prod-01", Command: "exit 1", Priority: rediacc.Low, FailureAction: rediacc.FailureNone},
		{Machine: "dev-01", Command: "true"},
	} {
		task := submit(t, c, spec)
		if i == 0 {
			first = task.ID
		}
		clock.Advance(time.Second)
	}
	clock.Advance(time.Minute)

	stats := func(ctx context.Context, f rediacc.StatsFilter) rediacc.QueueStats {
		t.Helper()
		s, err := c.QueueStats(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := stats(owner, rediacc.StatsFilter{})
	wantBy := map[rediacc.Status]map[rediacc.Priority]int{rediacc.StatusPending: {1: 2, 3: 1, 4: 1}}
	if d := cmp.Diff(wantBy, s.ByStatus); d != "" {
		t.Errorf("ByStatus (-want +got):\n%s", d)
	}
	if d := cmp.Diff(map[string]map[rediacc.Status]int{"prod": {"PENDING": 3}, "dev": {"PENDING": 1}}, s.ByTeam); d != "" {
		t.Errorf("ByTeam (-want +got):\n%s", d)
	}
	if d := cmp.Diff(map[string]map[rediacc.Status]int{"prod-01": {"PENDING": 3}, "dev-01": {"PENDING": 1}}, s.ByMachine); d != "" {
		t.Errorf("ByMachine (-want +got):\n%s", d)
	}
	if s.Pending != 4 || s.Running != 0 || s.OldestPendingID != first || s.OldestPendingAge != 64*time.Second ||
		s.Finished.Total() != 0 || s.Window != rediacc.DefaultStatsWindow || !s.At.Equal(clock.Now()) {
		t.Errorf("stats before the run: %+v", s)
	}
	if s := stats(owner, rediacc.StatsFilter{Machine: "prod-01"}); s.Pending != 3 || len(s.ByTeam) != 1 {
		t.Errorf("machine filter: %+v", s)
	}

	// A dev viewer sees dev only; other teams are denied.
	if s := stats(as("vic"), rediacc.StatsFilter{}); s.Pending != 1 || s.ByTeam["prod"] != nil || s.OldestPendingAge != 61*time.Second {
		t.Errorf("dev viewer's stats: %+v", s)
	}
	for _, tc := range []struct {
		ctx  context.Context
		f    rediacc.StatsFilter
		want error
	}{
		{as("vic"), rediacc.StatsFilter{Team: "prod"}, rediacc.ErrPermissionDenied},
		{as("nobody"), rediacc.StatsFilter{}, rediacc.ErrPermissionDenied},
		{context.Background(), rediacc.StatsFilter{}, rediacc.ErrNoActor},
		{owner, rediacc.StatsFilter{Window: -time.Second}, rediacc.ErrInvalidArgument},
		{owner, rediacc.StatsFilter{Window: 25 * time.Hour}, rediacc.ErrInvalidArgument},
	} {
		if _, err := c.QueueStats(tc.ctx, tc.f); !errors.Is(err, tc.want) {
			t.Errorf("QueueStats(%+v): %v, want %v", tc.f, err, tc.want)
		}
	}

	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	s = stats(owner, rediacc.StatsFilter{})
	wantBy = map[rediacc.Status]map[rediacc.Priority]int{rediacc.StatusCompleted: {1: 2, 3: 1}, rediacc.StatusFailed: {4: 1}}
	if d := cmp.Diff(wantBy, s.ByStatus); d != "" {
		t.Errorf("ByStatus after the run (-want +got):\n%s", d)
	}
	if s.Pending != 0 || s.Running != 0 || s.OldestPendingID != "" || s.OldestPendingAge != 0 ||
		s.Finished != (rediacc.FinishedCounts{Completed: 3, Failed: 1}) || s.FinishedPerMinute != 4.0/5 {
		t.Errorf("stats after the run: %+v", s)
	}
	if s := stats(as("vic"), rediacc.StatsFilter{}); s.Finished != (rediacc.FinishedCounts{Completed: 1}) {
		t.Errorf("dev viewer's finished: %+v", s.Finished)
	}
	if s := stats(owner, rediacc.StatsFilter{Machine: "prod-01"}); s.Finished != (rediacc.FinishedCounts{Completed: 2, Failed: 1}) {
		t.Errorf("prod-01's finished: %+v", s.Finished)
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var js map[string]any
	if err := json.Unmarshal(b, &js); err != nil {
		t.Fatal(err)
	}
	if js["finishedPerMinute"] != 0.8 || js["windowSeconds"] != 300.0 || js["oldestPendingAgeSeconds"] != 0.0 ||
		js["byStatus"].(map[string]any)["COMPLETED"].(map[string]any)["1"] != 2.0 {
		t.Errorf("JSON: %s", b)
	}

	// The window slides: ten minutes later nothing finished recently.
	clock.Advance(10 * time.Minute)
	if s := stats(owner, rediacc.StatsFilter{}); s.Finished.Total() != 0 || s.FinishedPerMinute != 0 {
		t.Errorf("finished after the window: %+v", s.Finished)
	}
	if s := stats(owner, rediacc.StatsFilter{Window: time.Hour}); s.Finished.Total() != 4 {
		t.Errorf("finished in the last hour: %+v", s.Finished)
	}
	recs, err := c.AuditLog(owner, rediacc.AuditFilter{Action: "task.list", Actor: "vic"})
	if err != nil || len(recs) < 2 {
		t.Errorf("QueueStats calls are audited: %d records, %v", len(recs), err)
	}
}

// Queue depth by status and priority, and throughput, for the teams the
// actor may list.
func ExampleClient_QueueStats() {
	e := newExampleEnv(nil)
	defer e.close()
	e.machine("db-01", "", nil)
	for _, p := range []rediacc.Priority{rediacc.Critical, rediacc.Critical, rediacc.Normal} {
		if _, err := e.c.Submit(e.ctx, rediacc.TaskSpec{Machine: "db-01", Command: "true", Priority: p}); err != nil {
			panic(err)
		}
	}
	s, err := e.c.QueueStats(e.ctx, rediacc.StatsFilter{})
	if err != nil {
		panic(err)
	}
	fmt.Printf("pending: %d (critical %d), running: %d, oldest pending known: %v\n",
		s.Pending, s.ByStatus[rediacc.StatusPending][rediacc.Critical], s.Running, s.OldestPendingID != "")
	if err := e.c.RunUntilEmpty(e.ctx); err != nil {
		panic(err)
	}
	if s, err = e.c.QueueStats(e.ctx, rediacc.StatsFilter{}); err != nil {
		panic(err)
	}
	fmt.Printf("pending: %d, finished in the last %s: %d completed\n", s.Pending, s.Window, s.Finished.Completed)
	// Output:
	// pending: 3 (critical 2), running: 0, oldest pending known: true
	// pending: 0, finished in the last 5m0s: 3 completed
}
