package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/store"
)

// BatchBenchTasks is how many tasks each BenchBatch iteration submits.
const BatchBenchTasks = 10000

// BenchBatch compares submitting BatchBenchTasks small tasks one by one
// (CreateTask each, one transaction each) with CreateTasks batches of 100
// and of all of them at once. Every iteration submits BatchBenchTasks new
// tasks into the same engine; each reports tasks/s and ms per 10k tasks.
// open returns a new, empty engine.
func BenchBatch(b *testing.B, open func(b *testing.B) store.Engine) {
	ctx := context.Background()
	mk := func(iter, i int) store.Task {
		return store.Task{ID: fmt.Sprintf("i%d-%05d", iter, i), TeamID: "team", MachineID: fmt.Sprint("m", i%10), Priority: 1 + i%5,
			Spec: []byte(`{"command":"true"}`), CreatedAt: T0.Add(time.Duration(iter*BatchBenchTasks + i))}
	}
	report := func(b *testing.B) {
		n := float64(b.N * BatchBenchTasks)
		b.ReportMetric(n/b.Elapsed().Seconds(), "tasks/s")
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/10k")
	}
	b.Run("one-by-one", func(b *testing.B) {
		e := open(b)
		defer e.Close()
		b.ResetTimer()
		for iter := 0; iter < b.N; iter++ {
			for i := range BatchBenchTasks {
				if _, _, err := e.CreateTask(ctx, mk(iter, i)); err != nil {
					b.Fatal(err)
				}
			}
		}
		report(b)
	})
	for _, size := range []int{100, BatchBenchTasks} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			e := open(b)
			defer e.Close()
			ts := make([]store.Task, BatchBenchTasks)
			b.ResetTimer()
			for iter := 0; iter < b.N; iter++ {
				b.StopTimer()
				for i := range ts {
					ts[i] = mk(iter, i)
				}
				b.StartTimer()
				for lo := 0; lo < len(ts); lo += size {
					out, err := e.CreateTasks(ctx, ts[lo:min(lo+size, len(ts))])
					if err != nil {
						b.Fatal(err)
					}
					if len(out) != min(size, len(ts)-lo) {
						b.Fatalf("CreateTasks returned %d tasks", len(out))
					}
				}
			}
			report(b)
		})
	}
}
