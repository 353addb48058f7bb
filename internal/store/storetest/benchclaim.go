package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/store"
)

// ClaimBacklog is the PENDING backlog BenchClaims claims from, on top of
// the b.N tasks it takes.
const ClaimBacklog = 10000

// BenchClaims measures claims alone, in sub-benchmarks max=1 (a claim
// takes one task) and max=80 (up to 80, a worker's free slots): each
// creates b.N+ClaimBacklog tasks over ten machines in batches (not timed),
// then claims b.N of them, with no per-machine limit, the claim rule's
// aging and fair shares on (timed). It reports claims/s (tasks claimed per
// second) and cpu-µs/claim (the process's CPU time per task claimed).
func BenchClaims(b *testing.B, open func(b *testing.B) store.Engine) {
	for _, max := range []int{1, Slots} {
		b.Run(fmt.Sprintf("max=%d", max), func(b *testing.B) { benchClaims(b, open, max) })
	}
}

func benchClaims(b *testing.B, open func(b *testing.B) store.Engine, max int) {
	ctx := context.Background()
	e := open(b)
	defer e.Close()
	n := b.N + ClaimBacklog
	batch := make([]store.Task, 0, 1000)
	for i := range n {
		batch = append(batch, store.Task{ID: fmt.Sprintf("c-%07d", i), TeamID: store.DefaultTeam, MachineID: fmt.Sprint("m", i%10),
			Priority: 1 + i%5, Spec: []byte(`{}`), CreatedAt: T0.Add(time.Duration(i))})
		if len(batch) == cap(batch) || i == n-1 {
			if _, err := e.CreateTasks(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	now := T0.Add(time.Hour)
	var cpu cpuMeter
	b.ResetTimer()
	cpu.start()
	for done := 0; done < b.N; {
		want := min(max, b.N-done)
		ts, err := e.Claim(ctx, store.ClaimRequest{Owner: "bench", Now: now, LeaseUntil: now.Add(time.Hour), Max: want, Aging: time.Minute})
		if err != nil || len(ts) != want {
			b.Fatalf("claim: %d tasks, want %d, %v", len(ts), want, err)
		}
		done += len(ts)
	}
	cpu.stop()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "claims/s")
	if cpu.total > 0 {
		b.ReportMetric(float64(cpu.total.Nanoseconds())/1e3/float64(b.N), "cpu-µs/claim")
	}
}
