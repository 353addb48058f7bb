package rediacc_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
)

// watchGoroutines counts the goroutines of Watch still alive.
func watchGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "rediacc.(*Client).Watch.func")
}

// SubmitBatch queues all tasks in one go or none: a bad task anywhere
// names its index and leaves the queue untouched; a batch naming a team is
// spread over its machines; idempotency keys work within and across
// batches; every task is audited.
func TestSubmitBatch(t *testing.T) {
	c := newClient(t, func(cfg *rediacc.Config) { cfg.Health.Interval = -1 })
	teamMachine(t, c, "w1", "prod", map[string]string{"role": "web"}, 54)
	teamMachine(t, c, "w2", "prod", map[string]string{"role": "web"}, 55)
	ctx := asOwner()
	good := rediacc.TaskSpec{Team: "prod", Command: "true"}
	for i, bad := range []rediacc.TaskSpec{
		{Team: "prod", Command: ""},
		{Machine: "ghost", Command: "true"},
		{Team: "prod", Command: "true", Priority: 9},
		{Team: "prod", Selector: map[string]string{"role": "db"}, Command: "true"},
	} {
		specs := []rediacc.TaskSpec{good, good, bad, good}
		_, err := c.SubmitBatch(ctx, specs)
		var be *rediacc.BatchError
		if !errors.As(err, &be) || be.Index != 2 || !errors.Is(err, rediacc.ErrInvalidArgument) || !strings.Contains(err.Error(), "task 2") {
			t.Errorf("case %d: SubmitBatch = %v, want a BatchError for index 2", i, err)
		}
	}
	if ts, err := c.List(ctx, rediacc.ListFilter{}); err != nil || len(ts) != 0 {
		t.Fatalf("a failed batch queued %d tasks (%v)", len(ts), err)
	}
	specs := make([]rediacc.TaskSpec, 10)
	for i := range specs {
		specs[i] = rediacc.TaskSpec{Team: "prod", Selector: map[string]string{"role": "web"}, Command: fmt.Sprintf("echo %d", i)}
	}
	specs[9] = rediacc.TaskSpec{Machine: "w1", Command: "echo keyed", IdempotencyKey: "k1"}
	ts, err := c.SubmitBatch(ctx, specs)
	if err != nil {
		t.Fatal(err)
	}
	if got := countByMachine(ts[:9]); got["w1"]+got["w2"] != 9 || got["w1"] < 4 || got["w2"] < 4 {
		t.Errorf("batch placement: %v, want the 9 team tasks spread 4/5", got)
	}
	for i, task := range ts {
		if task.Status != rediacc.StatusPending || task.Command != specs[i].Command {
			t.Errorf("task %d: %s %q", i, task.Status, task.Command)
		}
	}
	again, err := c.SubmitBatch(ctx, []rediacc.TaskSpec{
		{Machine: "w2", Command: "echo other", IdempotencyKey: "k1"},
		{Machine: "w2", Command: "echo new", IdempotencyKey: "k2"},
		{Machine: "w2", Command: "echo dup", IdempotencyKey: "k2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if again[0].ID != ts[9].ID || again[2].ID != again[1].ID || again[1].Command != "echo new" {
		t.Errorf("idempotency in a batch: %s %s %s (first %s)", again[0].ID, again[1].ID, again[2].ID, ts[9].ID)
	}
	all, _ := c.List(ctx, rediacc.ListFilter{})
	if len(all) != 11 {
		t.Errorf("%d tasks queued, want 11", len(all))
	}
	recs, err := c.AuditLog(ctx, rediacc.AuditFilter{Action: "task.create", Result: "ok"})
	if err != nil || len(recs) != 13 {
		t.Errorf("task.create audit records: %d (%v), want 13", len(recs), err)
	}
	// A viewer may not submit; the denial names the index.
	if _, err := c.SetMember(ctx, "prod", "vic", rediacc.RoleViewer); err != nil {
		t.Fatal(err)
	}
	var be *rediacc.BatchError
	if _, err := c.SubmitBatch(as("vic"), []rediacc.TaskSpec{good}); !errors.As(err, &be) || be.Index != 0 || !errors.Is(err, rediacc.ErrPermissionDenied) {
		t.Errorf("viewer batch: %v", err)
	}
	if out, err := c.SubmitBatch(ctx, nil); err != nil || len(out) != 0 {
		t.Errorf("empty batch: %v %v", out, err)
	}
}

// FanOut queues one task per machine of a team and selector; WaitAll waits
// for them; Watch streams their changes and closes when they are done.
func TestFanOutWaitAllWatch(t *testing.T) {
	c := newClient(t, func(cfg *rediacc.Config) { cfg.Health.Interval = -1 })
	web := map[string]string{"role": "web"}
	teamMachine(t, c, "f1", "prod", web, 56)
	teamMachine(t, c, "f2", "prod", web, 57)
	teamMachine(t, c, "f3", "prod", map[string]string{"role": "db"}, 58)
	ctx := ctxTimeout(t, time.Minute)
	ts, err := c.FanOut(ctx, rediacc.FanOutSpec{Team: "prod", Selector: web,
		TaskSpec: rediacc.TaskSpec{Command: "sleep 0.3; hostname -I 2>/dev/null; echo $SSH_CONNECTION", IdempotencyKey: "deploy-7"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 2 || ts[0].Machine != "f1" || ts[1].Machine != "f2" || ts[0].IdempotencyKey != "deploy-7@"+ts[0].MachineID {
		t.Fatalf("fan-out: %+v", ts)
	}
	if _, err := c.FanOut(ctx, rediacc.FanOutSpec{Team: "prod", Selector: map[string]string{"role": "none"}, TaskSpec: rediacc.TaskSpec{Command: "true"}}); !errors.Is(err, rediacc.ErrNoEligibleMachine) {
		t.Errorf("fan-out to nothing: %v", err)
	}
	if _, err := c.FanOut(ctx, rediacc.FanOutSpec{Team: "prod", TaskSpec: rediacc.TaskSpec{Machine: "f1", Command: "true"}}); !errors.Is(err, rediacc.ErrInvalidArgument) {
		t.Errorf("fan-out naming a machine: %v", err)
	}
	ids := []string{ts[0].ID, ts[1].ID}
	before := watchGoroutines()
	events, err := c.Watch(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string][]rediacc.Status{}
	first := 0
	for ev := range events {
		if first++; first == 2 {
			runWorker(t, c) // after the first events: both tasks are seen PENDING
		}
		if ev.Err != nil {
			t.Fatalf("watch event error: %v", ev.Err)
		}
		if prev := seen[ev.TaskID]; len(prev) > 0 && prev[len(prev)-1] != ev.Previous || len(prev) == 0 && ev.Previous != "" {
			t.Errorf("event %s: previous %q after %v", ev.TaskID, ev.Previous, prev)
		}
		seen[ev.TaskID] = append(seen[ev.TaskID], ev.Status)
	}
	for _, id := range ids {
		st := seen[id]
		if len(st) < 2 || st[0] != rediacc.StatusPending || st[len(st)-1] != rediacc.StatusCompleted {
			t.Errorf("watched %s: %v, want PENDING … COMPLETED", id, st)
		}
	}
	done, err := c.WaitAll(ctx, append(ids, ids[0]))
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != 3 || done[2] != done[0] || !strings.Contains(done[0].Stdout, "127.0.0.56") || !strings.Contains(done[1].Stdout, "127.0.0.57") {
		t.Errorf("WaitAll: %+v", done)
	}
	if _, err := c.WaitAll(ctx, []string{"00000000-0000-0000-0000-000000000000"}); !errors.Is(err, rediacc.ErrNotFound) {
		t.Errorf("WaitAll of an unknown id: %v", err)
	}
	// The watch goroutine is gone once the channel is closed; a watch
	// whose context ends closes too.
	deadline := time.Now().Add(5 * time.Second)
	for watchGoroutines() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	pending := submit(t, c, rediacc.TaskSpec{Machine: "f3", Command: "sleep 30"})
	wctx, cancel := context.WithCancel(asOwner())
	events, err = c.Watch(wctx, []string{pending.ID})
	if err != nil {
		t.Fatal(err)
	}
	<-events // the first event: its status now
	cancel()
	for range events {
	}
	for watchGoroutines() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := watchGoroutines(); n > before {
		t.Errorf("%d Watch goroutines left", n-before)
	}
	if _, err := c.Cancel(asOwner(), pending.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Watch(as("mallory"), ids); !errors.Is(err, rediacc.ErrNotFound) { // hidden: as unknown ids
		t.Errorf("outsider watch: %v", err)
	}
}
