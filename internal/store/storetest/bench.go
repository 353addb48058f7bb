package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
)

// BenchTasks is the queue size of each BenchmarkClaim iteration.
const BenchTasks = 1000

// cpuMeter adds up the process's CPU time between start and stop.
type cpuMeter struct {
	total, from time.Duration
}

func (m *cpuMeter) start() { m.from = processCPU() }
func (m *cpuMeter) stop()  { m.total += processCPU() - m.from }

// report adds the cpu-µs/task metric for tasks tasks.
func (m *cpuMeter) report(b *testing.B, tasks int) {
	if m.total > 0 && tasks > 0 {
		b.ReportMetric(float64(m.total.Microseconds())/float64(tasks), "cpu-µs/task")
	}
}

// Bench runs the engine benchmarks; open returns a new, empty engine.
//
//   - create: CreateTask throughput.
//   - claim/batch=N: BenchTasks tasks over 10 machines are created (not
//     timed), then claimed N at a time and finished (timed).
//   - lifecycle: one task at a time through CreateTask, Claim, Start,
//     Heartbeat and Finish (the worker's write path).
//   - lifecycle/audit: the same with one audit record in each call's
//     context (store.WithAudit), as the root package sends them.
//
// Each reports tasks/s and, where the platform tells, cpu-µs/task: the
// process's CPU time (user and system, all threads) per task in the timed
// part, which is steadier than wall time on a shared machine.
func Bench(b *testing.B, open func(b *testing.B) store.Engine) {
	ctx := context.Background()
	for _, withAudit := range []bool{false, true} {
		name := "lifecycle"
		if withAudit {
			name += "/audit"
		}
		b.Run(name, func(b *testing.B) {
			e := open(b)
			defer e.Close()
			if _, ok := e.(store.Access); !ok && withAudit {
				b.Skip("engine keeps no audit trail")
			}
			now := T0.Add(time.Hour)
			actx := func(action string) context.Context {
				if !withAudit {
					return ctx
				}
				return store.WithAudit(ctx, audit.Record{Time: now, Actor: "bench", Action: action,
					EntityType: audit.EntityTask, Team: "default", Result: audit.ResultOK, Details: map[string]string{"machine": "m0"}})
			}
			var cpu cpuMeter
			b.ResetTimer()
			cpu.start()
			for i := 0; i < b.N; i++ {
				if _, _, err := e.CreateTask(actx("task.create"), store.Task{MachineID: fmt.Sprint("m", i%10), Priority: 1 + i%5,
					Spec: []byte(`{"command":"true"}`), CreatedAt: T0.Add(time.Duration(i))}); err != nil {
					b.Fatal(err)
				}
				ts, err := e.Claim(actx("task.assign"), store.ClaimRequest{Owner: "bench", Now: now, LeaseUntil: now.Add(time.Hour),
					Max: 1, PerMachine: 20, ReserveCritical: true, Aging: time.Minute})
				if err != nil || len(ts) != 1 {
					b.Fatalf("claim: %d tasks, %v", len(ts), err)
				}
				id := ts[0].ID
				if _, err := e.Start(actx("task.start"), id, "bench", store.Attempt{StartedAt: now}); err != nil {
					b.Fatal(err)
				}
				if _, err := e.Heartbeat(actx("task.heartbeat"), "bench", []string{id}, now.Add(2*time.Hour)); err != nil {
					b.Fatal(err)
				}
				if _, err := e.Finish(actx("task.complete"), store.Finish{ID: id, Owner: "bench", At: now, Next: store.Completed,
					CountAttempt: true, ExitCode: new(int), Stdout: []byte("ok\n")}); err != nil {
					b.Fatal(err)
				}
			}
			cpu.stop()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
			cpu.report(b, b.N)
		})
	}
	b.Run("create", func(b *testing.B) {
		e := open(b)
		defer e.Close()
		var cpu cpuMeter
		b.ResetTimer()
		cpu.start()
		for i := 0; i < b.N; i++ {
			if _, _, err := e.CreateTask(ctx, store.Task{MachineID: fmt.Sprint("m", i%10), Priority: 1 + i%5,
				Spec: []byte(`{"command":"true"}`), CreatedAt: T0.Add(time.Duration(i))}); err != nil {
				b.Fatal(err)
			}
		}
		cpu.stop()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
		cpu.report(b, b.N)
	})
	for _, batch := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("claim/batch=%d", batch), func(b *testing.B) {
			e := open(b)
			defer e.Close()
			now := T0.Add(time.Hour)
			var cpu cpuMeter
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				CreateTasks(b, e, fmt.Sprint("b", i), BenchTasks, 10)
				b.StartTimer()
				cpu.start()
				for done := 0; done < BenchTasks; {
					ts, err := e.Claim(ctx, store.ClaimRequest{Owner: "bench", Now: now, LeaseUntil: now.Add(time.Hour),
						Max: batch, PerMachine: 20, ReserveCritical: true, Aging: time.Minute})
					if err != nil {
						b.Fatal(err)
					}
					if len(ts) == 0 {
						b.Fatalf("claim returned nothing with %d of %d tasks done", done, BenchTasks)
					}
					for _, t := range ts {
						if _, err := e.Finish(ctx, store.Finish{ID: t.ID, Owner: "bench", At: now, Next: store.Completed,
							CountAttempt: true}); err != nil {
							b.Fatal(err)
						}
					}
					done += len(ts)
				}
				cpu.stop()
			}
			b.ReportMetric(float64(b.N*BenchTasks)/b.Elapsed().Seconds(), "tasks/s")
			cpu.report(b, b.N*BenchTasks)
		})
	}
}
