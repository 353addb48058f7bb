package rediacc_test

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/lmittmann/tint"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/internal/benchutil"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

const (
	fanOutMachines = 10
	fanOutTasks    = 1000
	fanOutPerHost  = 8 // the SDK's default PerMachineLimit
)

// BenchmarkFanOut runs 1,000 `true` tasks over 10 real sshd machines through
// the durable queue (SQLite) and the worker, beside bare x/crypto/ssh
// sessions on the same machines in the same run (two connections per
// machine, 8 sessions in flight per machine, like the SDK's default
// PerMachineLimit). Reported: tasks/s of each and the SDK's share of the
// bare throughput.
//
//	go test -run '^$' -bench FanOut -benchtime 3x .
func BenchmarkFanOut(b *testing.B) {
	servers := make([]*sshtest.OpenSSH, fanOutMachines)
	for i := range servers {
		servers[i] = sshtest.StartOpenSSH(b, sshtest.OpenSSHOptions{Loopback: 20 + i})
	}
	var bareTotal, sdkTotal, bareSelf, sdkSelf time.Duration
	var bareCPU, sdkCPU int64
	for i := 0; i < b.N; i++ {
		j, js := busyJiffies(), selfCPU()
		bareTotal += bareFanOut(b, servers)
		k, ks := busyJiffies(), selfCPU()
		elapsed, self := sdkFanOut(b, servers)
		sdkTotal += elapsed
		sdkSelf += self
		bareCPU += k - j
		bareSelf += ks - js
		sdkCPU += busyJiffies() - k
	}
	// CPU time of the whole machine (client, sshd and the commands) per task.
	b.ReportMetric(float64(bareCPU)*10/float64(fanOutTasks*b.N), "bare-cpu-ms/task")
	b.ReportMetric(float64(sdkCPU)*10/float64(fanOutTasks*b.N), "sdk-cpu-ms/task")
	// CPU time of the client alone (this process: user + system; the sshd
	// processes are its children, which RUSAGE_SELF leaves out) per task.
	perTask := func(d time.Duration) float64 { return float64(d) / 1e6 / float64(fanOutTasks*b.N) }
	b.ReportMetric(perTask(bareSelf), "bare-client-cpu-ms/task")
	b.ReportMetric(perTask(sdkSelf), "sdk-client-cpu-ms/task")
	b.ReportMetric(float64(sdkSelf)/float64(bareSelf), "sdk/bare-client-cpu")
	bare := float64(fanOutTasks*b.N) / bareTotal.Seconds()
	sdk := float64(fanOutTasks*b.N) / sdkTotal.Seconds()
	b.ReportMetric(bare, "bare-tasks/s")
	b.ReportMetric(sdk, "sdk-tasks/s")
	b.ReportMetric(100*sdk/bare, "sdk-%-of-bare")
	b.ReportMetric(0, "ns/op")
}

func bareFanOut(b *testing.B, servers []*sshtest.OpenSSH) time.Duration {
	elapsed, err := benchutil.BareFanOut(servers, fanOutTasks, fanOutPerHost)
	if err != nil {
		b.Fatal(err)
	}
	return elapsed
}

// sdkFanOut runs the SDK's side and returns its elapsed time and the
// process CPU time it took: from the first submit to the end of Close
// (which seals the archive segment), the worker and the submitter
// together; with REDIACC_BENCH_SUBMIT=before, the tasks are submitted in
// batches before the clock starts, so both measure the worker alone (as
// `rediacc create batch` then `rediacc worker --until-empty` do).
func sdkFanOut(b *testing.B, servers []*sshtest.OpenSSH) (time.Duration, time.Duration) {
	ctx := asOwner()
	dir, err := os.MkdirTemp("", "rediacc-bench-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cfg := rediacc.Config{DataDir: dir, Logger: benchLogger(),
		Concurrency: fanOutMachines * fanOutPerHost, PerMachineLimit: fanOutPerHost, NoCriticalReserve: true,
		Health: rediacc.HealthConfig{Interval: -1}} // no health probes: the benchmark times the queue and SSH path alone
	if os.Getenv("REDIACC_BENCH_STORE") == "memory" {
		cfg.Store = rediacc.NewMemoryStore()
	}
	c, err := rediacc.New(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			c.Close()
		}
	}()
	for i, s := range servers {
		if _, err := c.AddMachine(ctx, rediacc.Machine{Name: fmt.Sprintf("m%02d", i), Host: s.Host, Port: s.Port, User: s.User,
			IdentityFile: s.ClientKeyPath, KnownHostsFile: s.KnownHostsPath}); err != nil {
			b.Fatal(err)
		}
	}
	spec := func(n int) rediacc.TaskSpec {
		return rediacc.TaskSpec{Machine: fmt.Sprintf("m%02d", n%len(servers)), Command: "true"}
	}
	before := os.Getenv("REDIACC_BENCH_SUBMIT") == "before"
	if before {
		specs := make([]rediacc.TaskSpec, fanOutTasks)
		for n := range specs {
			specs[n] = spec(n)
		}
		if _, err := c.SubmitBatch(ctx, specs); err != nil {
			b.Fatal(err)
		}
	}
	// The worker runs while the tasks are submitted, as in a service. The
	// clock stops when the worker finds the queue empty after the last
	// submit (RunUntilEmpty's check is internal, not an audited read).
	start, cpu := time.Now(), selfCPU()
	submitted := make(chan error, 1)
	go func() {
		for n := 0; n < fanOutTasks && !before; n++ {
			if _, err := c.Submit(ctx, spec(n)); err != nil {
				submitted <- err
				return
			}
		}
		submitted <- nil
	}()
	var subErr error
	done := false
	for !done {
		if err := c.RunUntilEmpty(ctx); err != nil {
			b.Fatal(err)
		}
		select {
		case subErr = <-submitted:
			done = true
		default: // the worker caught up with the submitter: run again
		}
	}
	if subErr != nil {
		b.Fatal(subErr)
	}
	if err := c.RunUntilEmpty(ctx); err != nil { // tasks submitted after the last check
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	checkFrom := selfCPU() // the check below is not the worker's
	completed, err := c.List(ctx, rediacc.ListFilter{Statuses: []rediacc.Status{rediacc.StatusCompleted}})
	if err != nil || len(completed) != fanOutTasks {
		b.Fatalf("%d of %d tasks completed (%v)", len(completed), fanOutTasks, err)
	}
	cpu += selfCPU() - checkFrom
	closed = true
	if err := c.Close(); err != nil {
		b.Fatal(err)
	}
	return elapsed, selfCPU() - cpu
}

// benchLogger is the SDK's logger in BenchmarkFanOut: none, or with
// REDIACC_BENCH_LOG=json or text the CLI's handlers at INFO (JSON, or
// tint without colour) writing to io.Discard, to measure what logging
// costs per task.
func benchLogger() *slog.Logger {
	switch os.Getenv("REDIACC_BENCH_LOG") {
	case "json":
		return slog.New(slog.NewJSONHandler(io.Discard, nil))
	case "text":
		return slog.New(tint.NewHandler(io.Discard, &tint.Options{TimeFormat: time.TimeOnly, NoColor: true}))
	}
	return slog.New(slog.DiscardHandler)
}

// selfCPU returns this process's CPU time so far (user + system, all
// threads; children such as the sshd processes are not included).
func selfCPU() time.Duration { return benchutil.SelfCPU() }

// busyJiffies returns the machine's non-idle CPU time from /proc/stat
// (clock ticks), to report CPU cost per task beside throughput.
func busyJiffies() int64 { return benchutil.BusyJiffies() }
