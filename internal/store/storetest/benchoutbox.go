package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
)

// BenchOutbox runs the alert outbox's benchmarks; open returns a new,
// empty engine (a store.Outbox).
//
//   - fail: a task through CreateTask, Claim and a Finish to FAILED, with
//     audit records as the root package sends them: the baseline.
//   - fail/alert: the same with the task's alert in the Finish's context
//     (store.WithAlerts, two endpoints): what the outbox adds to a failing
//     task's write path.
//   - deliver: one due delivery claimed and settled as delivered (the
//     dispatcher's write path per alert and endpoint).
//
// Each reports ops/s and, where the platform tells, cpu-µs/op.
func BenchOutbox(b *testing.B, open func(b *testing.B) store.Engine) {
	ctx := context.Background()
	now := T0.Add(time.Hour)
	rec := func(action string) audit.Record {
		return audit.Record{Time: now, Actor: "bench", Action: action, EntityType: audit.EntityTask, Team: "default", Result: audit.ResultOK}
	}
	outbox := func(b *testing.B, e store.Engine) store.Outbox {
		o, ok := e.(store.Outbox)
		if !ok {
			b.Skip("engine keeps no alert outbox")
		}
		if err := o.RegisterAlertEndpoints(ctx, []string{"log", "webhook"}, time.Time{}); err != nil {
			b.Fatal(err)
		}
		return o
	}
	for _, withAlert := range []bool{false, true} {
		name := "fail"
		if withAlert {
			name += "/alert"
		}
		b.Run(name, func(b *testing.B) {
			e := open(b)
			defer e.Close()
			outbox(b, e)
			var cpu cpuMeter
			b.ResetTimer()
			cpu.start()
			for i := 0; i < b.N; i++ {
				if _, _, err := e.CreateTask(store.WithAudit(ctx, rec("task.create")), store.Task{Machine: fmt.Sprint("m", i%10),
					Priority: 3, Spec: []byte(`{"command":"exit 3"}`), CreatedAt: T0.Add(time.Duration(i))}); err != nil {
					b.Fatal(err)
				}
				ts, err := e.Claim(ctx, store.ClaimRequest{Owner: "bench", Now: now, LeaseUntil: now.Add(time.Hour), Max: 1, PerMachine: 20})
				if err != nil || len(ts) != 1 {
					b.Fatalf("claim: %d tasks, %v", len(ts), err)
				}
				fctx := store.WithAudit(ctx, rec("task.attempt.failed"), rec("task.fail"))
				if withAlert {
					fctx = store.WithAlerts(fctx, store.AlertRequest{Alert: store.Alert{Kind: "task.failed", Key: "task.failed/" + ts[0].ID,
						Team: "default", TaskID: ts[0].ID, CreatedAt: now,
						Payload: []byte(`{"Kind":"task.failed","Error":"Process exited with status 3","Message":"task failed"}`)},
						Window: 5 * time.Minute, Endpoints: []string{"log", "webhook"}})
				}
				if _, err := e.Finish(fctx, store.Finish{ID: ts[0].ID, Owner: "bench", At: now, Next: store.Failed, CountAttempt: true,
					ExitCode: new(int), Error: "Process exited with status 3"}); err != nil {
					b.Fatal(err)
				}
			}
			cpu.stop()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
			cpu.report(b, b.N)
		})
	}
	b.Run("deliver", func(b *testing.B) {
		e := open(b)
		defer e.Close()
		o := outbox(b, e)
		reqs := make([]store.AlertRequest, b.N)
		for i := range reqs {
			reqs[i] = store.AlertRequest{Alert: store.Alert{Kind: "task.failed", CreatedAt: now, Payload: []byte(`{}`)}}
		}
		if _, err := o.EnqueueAlerts(ctx, reqs...); err != nil {
			b.Fatal(err)
		}
		claimAt := time.Now().Add(time.Minute)
		var cpu cpuMeter
		b.ResetTimer()
		cpu.start()
		for i := 0; i < b.N; i++ {
			as, err := o.ClaimAlerts(ctx, store.AlertClaim{Endpoint: "webhook", Owner: "bench", Now: claimAt, LeaseUntil: claimAt.Add(time.Minute), Max: 1})
			if err != nil || len(as) != 1 {
				b.Fatalf("claim: %d alerts, %v", len(as), err)
			}
			if err := o.SettleAlert(ctx, store.AlertSettle{AlertID: as[0].ID, Endpoint: "webhook", Owner: "bench", At: claimAt,
				Outcome: store.DeliveryDelivered}); err != nil {
				b.Fatal(err)
			}
		}
		cpu.stop()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "alerts/s")
		cpu.report(b, b.N)
	})
}
