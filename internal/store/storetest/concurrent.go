package storetest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/store"
)

// ClaimLoad is a concurrent claim workload: Workers goroutines claim from
// the same engines until every task is finished, checking that no task is
// claimed twice and that no machine ever runs more than PerMachine tasks.
type ClaimLoad struct {
	Workers    int
	PerMachine int
	Timeout    time.Duration // whole run; 0 = 2 minutes
}

// CreateTasks creates n PENDING tasks spread over machines m0..m{machines-1}
// with priorities 1..5, enqueued at T0+i ns, and returns their ids.
func CreateTasks(tb testing.TB, e store.Engine, prefix string, n, machines int) []string {
	tb.Helper()
	ids := make([]string, n)
	for i := range n {
		t, _, err := e.CreateTask(context.Background(), store.Task{
			ID:        fmt.Sprintf("%s-%05d", prefix, i),
			TeamID:    "team",
			MachineID: fmt.Sprintf("m%d", i%machines),
			Priority:  1 + i%5,
			Spec:      []byte(`{}`),
			CreatedAt: T0.Add(time.Duration(i)),
		})
		if err != nil {
			tb.Fatalf("CreateTask: %v", err)
		}
		ids[i] = t.ID
	}
	return ids
}

// Run claims and finishes every task of the engines' shared queue:
// worker i uses engines[i%len(engines)], claims up to 1+i%4 tasks at a time
// and finishes them as COMPLETED. It returns how many tasks each owner
// claimed. Failures are reported through tb.
func (l ClaimLoad) Run(tb testing.TB, engines []store.Engine, total int) map[string]int {
	tb.Helper()
	timeout := l.Timeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var (
		mu       sync.Mutex
		claimer  = make(map[string]string) // task -> owner
		perOwner = make(map[string]int)
		active   sync.Map // machine -> *atomic.Int64: tasks claimed and not yet being finished
		finished atomic.Int64
		failed   atomic.Bool
		wg       sync.WaitGroup
	)
	now := T0.Add(time.Hour)
	for w := range l.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := engines[w%len(engines)]
			owner := fmt.Sprintf("worker-%d", w)
			for finished.Load() < int64(total) && !failed.Load() {
				if ctx.Err() != nil {
					tb.Errorf("%s: timed out with %d of %d tasks finished", owner, finished.Load(), total)
					failed.Store(true)
					return
				}
				ts, err := e.Claim(ctx, store.ClaimRequest{Owner: owner, Now: now, LeaseUntil: now.Add(time.Hour),
					Max: 1 + w%4, PerMachine: l.PerMachine, ReserveCritical: true})
				if err != nil {
					tb.Errorf("%s: Claim: %v", owner, err)
					failed.Store(true)
					return
				}
				if len(ts) == 0 {
					time.Sleep(time.Millisecond) // everything left is held by other workers
					continue
				}
				for _, t := range ts {
					mu.Lock()
					if prev, dup := claimer[t.ID]; dup {
						tb.Errorf("task %s claimed by %s and by %s", t.ID, prev, owner)
						failed.Store(true)
					}
					claimer[t.ID] = owner
					perOwner[owner]++
					mu.Unlock()
					c, _ := active.LoadOrStore(t.Machine, new(atomic.Int64))
					if n := c.(*atomic.Int64).Add(1); l.PerMachine > 0 && n > int64(l.PerMachine) {
						tb.Errorf("machine %s runs %d tasks, limit %d", t.Machine, n, l.PerMachine)
						failed.Store(true)
					}
				}
				for _, t := range ts {
					c, _ := active.Load(t.Machine)
					c.(*atomic.Int64).Add(-1) // before Finish frees the slot in the engine
					if _, err := e.Finish(ctx, store.Finish{ID: t.ID, Owner: owner, At: now, Next: store.Completed,
						CountAttempt: true, Attempt: store.Attempt{StartedAt: now, Outcome: "succeeded"}}); err != nil {
						tb.Errorf("%s: Finish(%s): %v", owner, t.ID, err)
						failed.Store(true)
						return
					}
					finished.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if len(claimer) != total && !failed.Load() {
		tb.Errorf("%d tasks claimed, want %d", len(claimer), total)
	}
	return perOwner
}

func testConcurrentClaimers(t *testing.T, f *fixture) {
	const total = 500
	ids := CreateTasks(t, f.e, "c", total, 10)
	per := ClaimLoad{Workers: 8, PerMachine: 3}.Run(t, []store.Engine{f.e}, total)
	if t.Failed() {
		return
	}
	t.Logf("tasks per worker: %v", per)
	all, err := f.e.ListTasks(f.ctx, store.TaskFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(ids) {
		t.Fatalf("%d tasks stored, want %d", len(all), len(ids))
	}
	for _, tk := range all {
		if tk.Status != store.Completed || tk.Attempts != 1 || len(tk.History) != 1 {
			t.Fatalf("task %s: status %s, attempts %d, history %d", tk.ID, tk.Status, tk.Attempts, len(tk.History))
		}
	}
}
