package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/store"
)

// BenchTasks is the queue size of each BenchmarkClaim iteration.
const BenchTasks = 1000

// Bench runs the engine benchmarks; open returns a new, empty engine.
//
//   - create: CreateTask throughput.
//   - claim/batch=N: BenchTasks tasks over 10 machines are created (not
//     timed), then claimed N at a time and finished (timed).
//
// Each reports tasks/s.
func Bench(b *testing.B, open func(b *testing.B) store.Engine) {
	ctx := context.Background()
	b.Run("create", func(b *testing.B) {
		e := open(b)
		defer e.Close()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, _, err := e.CreateTask(ctx, store.Task{Machine: fmt.Sprint("m", i%10), Priority: 1 + i%5,
				Spec: []byte(`{"command":"true"}`), CreatedAt: T0.Add(time.Duration(i))}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
	})
	for _, batch := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("claim/batch=%d", batch), func(b *testing.B) {
			e := open(b)
			defer e.Close()
			now := T0.Add(time.Hour)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				CreateTasks(b, e, fmt.Sprint("b", i), BenchTasks, 10)
				b.StartTimer()
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
			}
			b.ReportMetric(float64(b.N*BenchTasks)/b.Elapsed().Seconds(), "tasks/s")
		})
	}
}
