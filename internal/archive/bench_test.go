package archive

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// benchTask is about the size of a finished `true` task's archived record
// (Task.MarshalJSON: spec, one attempt, empty output): ~900 bytes of JSON.
var benchTask = json.RawMessage(`{"id":"5f0c8c7e-2b7c-4d39-9d7e-0a3c1e8f9b21","team":"default","teamId":"default",` +
	`"machine":"m03","machineId":"9a1f6f0e-8b8c-4e7a-b1e2-33d4c5b6a7f8","command":"true","priority":3,"status":"COMPLETED",` +
	`"createdBy":"owner@example.com","createdAt":"2026-11-30T10:00:00.123456789Z","enqueuedAt":"2026-11-30T10:00:00.123456789Z",` +
	`"startedAt":"2026-11-30T10:00:00.223456789Z","completedAt":"2026-11-30T10:00:00.323456789Z","attempts":1,"exitCode":0,` +
	`"retry":{"retryCount":0,"delay":0,"backoff":"fixed"},"failureAction":"none","timeout":0,` +
	`"history":[{"number":1,"worker":"host/1234/abcdef","startedAt":"2026-11-30T10:00:00.223456789Z",` +
	`"endedAt":"2026-11-30T10:00:00.323456789Z","exitCode":0,"outcome":"SUCCEEDED","runId":"5f0c8c7e-2b7c-4d39-9d7e-0a3c1e8f9b21.1",` +
	`"pgid":41234,"remoteId":"d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6/123456789"}],"output":"` + strings.Repeat("x", 200) + `"}`)

// BenchmarkAppendParallel appends task records from 80 goroutines at once,
// as a worker running 80 tasks archives them when they finish: ns/op is
// the archive's cost per record (each Append returns once its record is
// fsynced) in elapsed time, and cpu-ns/op in this process's CPU time.
//
//	go test -run '^$' -bench AppendParallel -count 6 ./internal/archive
func BenchmarkAppendParallel(b *testing.B) {
	a, err := Open(b.TempDir(), Options{DisableCompaction: true})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	var n atomic.Int64
	at := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	b.SetParallelism(benchParallelism) // × GOMAXPROCS goroutines
	b.ReportAllocs()
	b.ResetTimer()
	cpu := processCPU()
	defer func() { b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op") }()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if err := a.Append(ctx, KindTask, fmt.Sprint(n.Add(1)), at, benchTask); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// processCPU returns this process's CPU time (user + system) in ns.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

var benchParallelism = 40
