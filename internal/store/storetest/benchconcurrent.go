package storetest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
)

// Slots is the number of tasks BenchConcurrent's worker runs at once: a
// worker with 80 slots.
const Slots = 80

// Submitters is the number of goroutines creating tasks in BenchConcurrent.
const Submitters = 8

// BenchConcurrent runs b.N full task lifecycles on the engine open returns
// the way a worker with Slots slots and concurrent submitters drive the
// store: Submitters goroutines create the tasks one by one (CreateTask,
// audit record task.create in its context, ten machines); a dispatcher
// claims as many as it has free slots (Claim with Max = free slots,
// PerMachine Slots, and the task.assign records: appended by AppendAudit
// after the claim, as the worker did, or, with foldAssign, given by
// ClaimRequest.Audit and committed with the claim, as it does now) and runs each claimed task in a goroutine of its own
// that starts it (task.start) and finishes it (task.complete), with no
// command in between (a stub runner). Contexts are cancellable, as the
// worker's are. It reports tasks/s and cpu-µs/task (the process's CPU time
// per task, see Bench).
func BenchConcurrent(b *testing.B, open func(b *testing.B) store.Engine, foldAssign bool) {
	e := open(b)
	defer e.Close()
	acc, _ := e.(store.Access)
	if acc == nil {
		b.Skip("engine keeps no audit trail")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	now := T0.Add(time.Hour)
	rec := func(action, id string) audit.Record {
		return audit.Record{Time: now, Actor: "bench", Action: action, EntityType: audit.EntityTask, EntityID: id,
			Team: store.DefaultTeam, Result: audit.ResultOK, Details: map[string]string{"worker": "bench"}}
	}
	var (
		created atomic.Int64 // tasks begun by the submitters
		wg      sync.WaitGroup
		errMu   sync.Mutex
		first   error
		cpu     cpuMeter
		wake    = make(chan struct{}, 1) // a task was created or finished
		done    = make(chan struct{}, Slots)
	)
	fail := func(err error) {
		errMu.Lock()
		if first == nil {
			first = err
		}
		errMu.Unlock()
		cancel()
	}
	notify := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	run := func(t store.Task) {
		defer wg.Done()
		if _, err := e.Start(store.WithAudit(ctx, rec("task.start", t.ID)), t.ID, "bench", store.Attempt{StartedAt: now}); err != nil {
			fail(fmt.Errorf("start: %w", err))
			return
		}
		if _, err := e.Finish(store.WithAudit(ctx, rec("task.complete", t.ID)), store.Finish{ID: t.ID, Owner: "bench", At: now,
			Next: store.Completed, CountAttempt: true, ExitCode: new(int), Stdout: []byte("ok\n"),
			Attempt: store.Attempt{ExitCode: new(int), Outcome: store.OutcomeSucceeded}}); err != nil {
			fail(fmt.Errorf("finish: %w", err))
			return
		}
		done <- struct{}{}
		notify()
	}
	b.ResetTimer()
	cpu.start()
	for range Submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(created.Add(1))
				if i > b.N {
					return
				}
				if _, _, err := e.CreateTask(store.WithAudit(ctx, rec("task.create", "")), store.Task{MachineID: fmt.Sprint("m", i%10),
					Priority: 1 + i%5, Spec: []byte(`{"command":"true"}`), CreatedAt: T0.Add(time.Duration(i))}); err != nil {
					fail(fmt.Errorf("create: %w", err))
					return
				}
				notify()
			}
		}()
	}
	for finished, running := 0, 0; finished < b.N && ctx.Err() == nil; {
		if running < Slots {
			assign := func(ts []store.Task) []audit.Record {
				recs := make([]audit.Record, len(ts))
				for i, t := range ts {
					recs[i] = rec("task.assign", t.ID)
				}
				return recs
			}
			r := store.ClaimRequest{Owner: "bench", Now: now, LeaseUntil: now.Add(time.Hour),
				Max: Slots - running, PerMachine: Slots, ReserveCritical: true, Aging: time.Minute}
			if foldAssign {
				r.Audit = assign
			}
			ts, err := e.Claim(ctx, r)
			if err != nil {
				fail(fmt.Errorf("claim: %w", err))
				break
			}
			if len(ts) > 0 {
				if !foldAssign {
					if _, err := acc.AppendAudit(ctx, assign(ts)...); err != nil {
						fail(fmt.Errorf("audit: %w", err))
						break
					}
				}
				running += len(ts)
				for _, t := range ts {
					wg.Add(1)
					go run(t)
				}
				continue
			}
		}
		select {
		case <-done:
			running--
			finished++
		case <-wake:
		case <-ctx.Done():
		}
		for drained := false; !drained; { // count every finished task before claiming again
			select {
			case <-done:
				running--
				finished++
			default:
				drained = true
			}
		}
	}
	cancel()
	wg.Wait()
	cpu.stop()
	b.StopTimer()
	if first != nil {
		b.Fatal(first)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
	cpu.report(b, b.N)
}
