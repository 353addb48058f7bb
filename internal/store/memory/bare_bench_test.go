package memory_test

import (
	"container/heap"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/storetest"
)

// bareQueue is a plain priority queue of tasks (priority, then FIFO): a
// binary heap (container/heap).
type bareQueue []store.Task

func (q bareQueue) Len() int { return len(q) }
func (q bareQueue) Less(i, j int) bool {
	if q[i].Priority != q[j].Priority {
		return q[i].Priority < q[j].Priority
	}
	return q[i].CreatedAt.Before(q[j].CreatedAt)
}
func (q bareQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *bareQueue) Push(x any)   { *q = append(*q, x.(store.Task)) }
func (q *bareQueue) Pop() any {
	old := *q
	t := old[len(old)-1]
	*q = old[:len(old)-1]
	return t
}

// BenchmarkClaimsBare is the baseline of BenchmarkClaims, in its shape
// (b.N + storetest.ClaimBacklog PENDING tasks over 10 machines and 5
// priorities; claims of 1 and of storetest.Slots tasks): a mutex and a
// binary heap, each claimed task marked with its owner and lease and
// copied out — no fairness between teams and machines, no aging, no
// per-machine limit, no gates, windows or audit records. Its claims/s is
// the ceiling of an in-memory claim in Go on this host.
//
//	go test -run '^$' -bench 'BenchmarkClaims(Bare)?$' -benchtime 5000x -count 6 ./internal/store/memory
func BenchmarkClaimsBare(b *testing.B) {
	for _, max := range []int{1, storetest.Slots} {
		b.Run(fmt.Sprintf("max=%d", max), func(b *testing.B) {
			var mu sync.Mutex
			q := make(bareQueue, 0, b.N+storetest.ClaimBacklog)
			for i := range b.N + storetest.ClaimBacklog {
				q = append(q, store.Task{ID: fmt.Sprintf("c-%07d", i), TeamID: store.DefaultTeam, MachineID: fmt.Sprint("m", i%10),
					Priority: 1 + i%5, Status: store.Pending, Spec: []byte(`{}`), CreatedAt: storetest.T0.Add(time.Duration(i))})
			}
			heap.Init(&q)
			owned := make(map[string]*store.Task, b.N)
			now := storetest.T0.Add(time.Hour)
			var ru0, ru1 syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			b.ResetTimer()
			for done := 0; done < b.N; {
				want := min(max, b.N-done)
				mu.Lock()
				out := make([]store.Task, 0, want)
				for len(out) < want && q.Len() > 0 {
					t := heap.Pop(&q).(store.Task)
					t.Status, t.LeaseOwner, t.LeaseExpiresAt = store.Assigned, "bench", now.Add(time.Hour)
					owned[t.ID] = &t
					out = append(out, t)
				}
				mu.Unlock()
				if len(out) != want {
					b.Fatalf("claim: %d tasks, want %d", len(out), want)
				}
				done += len(out)
			}
			b.StopTimer()
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "claims/s")
			b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu-µs/claim")
		})
	}
}
