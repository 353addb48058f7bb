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
	now := T0.Add(time.Hour)
	rec := func(action, id string) audit.Record {
		return audit.Record{Time: now, Actor: "bench", Action: action, EntityType: audit.EntityTask, EntityID: id,
			Team: store.DefaultTeam, Result: audit.ResultOK, Details: map[string]string{"worker": "bench"}}
	}
	assign := func(ts []store.Task) []audit.Record {
		recs := make([]audit.Record, len(ts))
		for i, t := range ts {
			recs[i] = rec("task.assign", t.ID)
		}
		return recs
	}
	DriveConcurrent(b, Lifecycle[store.Task]{
		Create: func(ctx context.Context, i int) error {
			_, _, err := e.CreateTask(store.WithAudit(ctx, rec("task.create", "")), store.Task{MachineID: fmt.Sprint("m", i%10),
				Priority: 1 + i%5, Spec: []byte(`{"command":"true"}`), CreatedAt: T0.Add(time.Duration(i))})
			return err
		},
		Claim: func(ctx context.Context, max int) ([]store.Task, error) {
			r := store.ClaimRequest{Owner: "bench", Now: now, LeaseUntil: now.Add(time.Hour),
				Max: max, PerMachine: Slots, ReserveCritical: true, Aging: time.Minute}
			if foldAssign {
				r.Audit = assign
			}
			ts, err := e.Claim(ctx, r)
			if err == nil && len(ts) > 0 && !foldAssign {
				_, err = acc.AppendAudit(ctx, assign(ts)...)
			}
			return ts, err
		},
		Run: func(ctx context.Context, t store.Task) error {
			if _, err := e.Start(store.WithAudit(ctx, rec("task.start", t.ID)), t.ID, "bench", store.Attempt{StartedAt: now}); err != nil {
				return fmt.Errorf("start: %w", err)
			}
			if _, err := e.Finish(store.WithAudit(ctx, rec("task.complete", t.ID)), store.Finish{ID: t.ID, Owner: "bench", At: now,
				Next: store.Completed, CountAttempt: true, ExitCode: new(int), Stdout: []byte("ok\n"),
				Attempt: store.Attempt{ExitCode: new(int), Outcome: store.OutcomeSucceeded}}); err != nil {
				return fmt.Errorf("finish: %w", err)
			}
			return nil
		},
	})
}

// Lifecycle is what DriveConcurrent drives: Create makes task i (1 ≤ i ≤
// b.N), Claim takes up to max created tasks (none is not an error), Run
// starts and finishes one claimed task.
type Lifecycle[T any] struct {
	Create func(ctx context.Context, i int) error
	Claim  func(ctx context.Context, max int) ([]T, error)
	Run    func(ctx context.Context, t T) error
}

// DriveConcurrent runs b.N lifecycles the way a worker with Slots slots
// and concurrent submitters drive a store: Submitters goroutines call
// Create one task after the other; a dispatcher calls Claim with its free
// slots whenever it has some and a task was created or finished since,
// and runs each claimed task in a goroutine of its own. The first error
// stops it and fails the benchmark. It reports tasks/s and cpu-µs/task
// (the process's CPU time per task). Its contexts are cancellable, as the
// worker's are. BenchConcurrent drives an engine with it; the bare
// baselines of the engines' packages drive the database alone.
func DriveConcurrent[T any](b *testing.B, l Lifecycle[T]) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
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
	run := func(t T) {
		defer wg.Done()
		if err := l.Run(ctx, t); err != nil {
			fail(err)
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
				if err := l.Create(ctx, i); err != nil {
					fail(fmt.Errorf("create: %w", err))
					return
				}
				notify()
			}
		}()
	}
	for finished, running := 0, 0; finished < b.N && ctx.Err() == nil; {
		if running < Slots {
			ts, err := l.Claim(ctx, Slots-running)
			if err != nil {
				fail(fmt.Errorf("claim: %w", err))
				break
			}
			if len(ts) > 0 {
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
