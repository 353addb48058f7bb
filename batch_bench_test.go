package rediacc_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

const (
	batchBenchTasks    = 10000
	batchBenchSize     = 500
	batchBenchMachines = 3
)

// benchClient opens a client on a fresh SQLite store with the machines of
// servers registered as m00, m01, … in team "bench" (labels role=bench).
func benchClient(b *testing.B, servers []*sshtest.OpenSSH) *rediacc.Client {
	b.Helper()
	cfg := rediacc.Config{DataDir: b.TempDir(), Logger: slog.New(slog.DiscardHandler), Health: rediacc.HealthConfig{Interval: -1},
		Concurrency: len(servers) * 8, PerMachineLimit: 8, NoCriticalReserve: true, PollInterval: 20 * time.Millisecond}
	c, err := rediacc.New(asOwner(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	if _, err := c.CreateTeam(asOwner(), "bench", ""); err != nil {
		b.Fatal(err)
	}
	for i, s := range servers {
		if _, err := c.AddMachine(asOwner(), rediacc.Machine{Name: fmt.Sprintf("m%02d", i), Team: "bench", Host: s.Host, Port: s.Port, User: s.User,
			Labels: map[string]string{"role": "bench"}, IdentityFile: s.ClientKeyPath, KnownHostsFile: s.KnownHostsPath}); err != nil {
			b.Fatal(err)
		}
	}
	return c
}

// BenchmarkBatching submits 10,000 small tasks to the SQLite store one by
// one (Submit) and in batches of 500 (SubmitBatch), naming the machine or
// letting placement pick it from the team, then runs 10,000 `true` tasks
// on 3 real sshd machines over pooled connections. Each reports tasks/s.
//
//	go test -run '^$' -bench Batching -benchtime 1x .
func BenchmarkBatching(b *testing.B) {
	servers := make([]*sshtest.OpenSSH, batchBenchMachines)
	for i := range servers {
		servers[i] = sshtest.StartOpenSSH(b, sshtest.OpenSSHOptions{Loopback: 40 + i})
	}
	spec := func(n int, team bool) rediacc.TaskSpec {
		if team {
			return rediacc.TaskSpec{Team: "bench", Selector: map[string]string{"role": "bench"}, Command: "true"}
		}
		return rediacc.TaskSpec{Machine: fmt.Sprintf("m%02d", n%batchBenchMachines), Command: "true"}
	}
	submitOneByOne := func(b *testing.B, c *rediacc.Client, team bool) {
		for n := range batchBenchTasks {
			if _, err := c.Submit(asOwner(), spec(n, team)); err != nil {
				b.Fatal(err)
			}
		}
	}
	submitBatches := func(b *testing.B, c *rediacc.Client, team bool) {
		for n := 0; n < batchBenchTasks; n += batchBenchSize {
			specs := make([]rediacc.TaskSpec, batchBenchSize)
			for i := range specs {
				specs[i] = spec(n+i, team)
			}
			if _, err := c.SubmitBatch(asOwner(), specs); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, bc := range []struct {
		name   string
		submit func(*testing.B, *rediacc.Client, bool)
		team   bool
	}{
		{"submit-one-by-one", submitOneByOne, false},
		{"submit-batch-500", submitBatches, false},
		{"submit-one-by-one-placed", submitOneByOne, true},
		{"submit-batch-500-placed", submitBatches, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var total time.Duration
			for range b.N {
				b.StopTimer()
				c := benchClient(b, servers)
				b.StartTimer()
				start := time.Now()
				bc.submit(b, c, bc.team)
				total += time.Since(start)
			}
			b.ReportMetric(float64(batchBenchTasks*b.N)/total.Seconds(), "tasks/s")
			b.ReportMetric(0, "ns/op")
		})
	}
	b.Run("run-pooled", func(b *testing.B) {
		var total time.Duration
		for range b.N {
			b.StopTimer()
			c := benchClient(b, servers)
			submitBatches(b, c, true)
			b.StartTimer()
			start := time.Now()
			ctx, cancel := context.WithTimeout(asOwner(), 10*time.Minute)
			err := c.RunUntilEmpty(ctx)
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			total += time.Since(start)
			done, err := c.List(asOwner(), rediacc.ListFilter{Statuses: []rediacc.Status{rediacc.StatusCompleted}})
			if err != nil || len(done) != batchBenchTasks {
				b.Fatalf("%d of %d tasks completed (%v)", len(done), batchBenchTasks, err)
			}
		}
		b.ReportMetric(float64(batchBenchTasks*b.N)/total.Seconds(), "tasks/s")
		b.ReportMetric(0, "ns/op")
	})
}
