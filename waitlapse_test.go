package rediacc_test

import (
	"strings"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
)

// F2 of the attacker pass: a worker whose own probes are off honours the
// busy judgement another process stored, until that judgement lapses by
// its prober's own rule (three of the prober's intervals), never by the
// reader's default; the waiting task says until when, and RunUntilEmpty
// waits for the lapse instead of calling the gate endless. The old code
// lapsed the judgement after three default intervals (3 min) whatever the
// prober's interval, said only since when the machine was busy, and
// RunUntilEmpty stopped with a HeldError.
func TestBusyJudgementLapseProbesOff(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval time.Duration // the prober's
		lapse    time.Duration // after the sample
	}{
		{"short prober interval", 20 * time.Second, time.Minute},
		{"long prober interval", 10 * time.Minute, 30 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{now: tWait}
			dir := t.TempDir()
			// The prober's process (its probes would run every tc.interval)
			// stored the judgement; the worker's own probes are off, aging
			// and the maximum hold too: only the lapse ends the gate.
			prober := newClient(t, func(cfg *rediacc.Config) {
				cfg.DataDir, cfg.Clock, cfg.Health.Interval = dir, clock, tc.interval
			})
			inProcessMachine(t, prober, "hot")
			busyNow(t, prober, clock, "hot")
			w := newClient(t, func(cfg *rediacc.Config) {
				cfg.DataDir, cfg.Clock, cfg.Health.Interval, cfg.AgingInterval, cfg.Health.MaxHold = dir, clock, -1, -1, -1
			})
			task := submit(t, w, rediacc.TaskSpec{Machine: "hot", Priority: rediacc.Low, Command: "true"})
			lapse := tWait.Add(tc.lapse)
			check := func() {
				t.Helper()
				ws := get(t, w, task.ID).Waiting
				want := "priority 4 work waits until " + lapse.Format("15:04:05 UTC") + ", when the busy judgement of the probe at 14:00:00 UTC lapses unless a new probe renews it"
				if len(ws) != 1 || ws[0].Code != rediacc.WaitMachineBusy || !ws[0].Until.Equal(lapse) || !strings.Contains(ws[0].Message, want) {
					t.Fatalf("waiting: %+v\nwant until %s and %q", ws, lapse, want)
				}
				sts, err := w.MachineStatus(asOwner(), rediacc.MachineFilter{})
				if err != nil || len(sts) != 1 || !sts[0].Busy || !sts[0].BusyUntil.Equal(lapse) {
					t.Fatalf("machine status: %+v, %v", sts, err)
				}
			}
			check()
			if tc.lapse > 3*time.Minute { // past the reader's default: the prober's rule still holds
				clock.Advance(3*time.Minute + time.Second)
				check()
			}
			done := make(chan error, 1)
			go func() { done <- w.RunUntilEmpty(ctxTimeout(t, time.Minute)) }()
			time.Sleep(100 * time.Millisecond) // several poll intervals: the gate holds, RunUntilEmpty waits
			select {
			case err := <-done:
				t.Fatalf("RunUntilEmpty returned before the lapse: %v", err)
			default:
			}
			if got := get(t, w, task.ID); got.Status != rediacc.StatusPending {
				t.Fatalf("ran before the judgement lapsed: %s", got.Status)
			}
			clock.Advance(lapse.Sub(clock.Now()))
			if err := <-done; err != nil {
				t.Fatalf("RunUntilEmpty after the lapse: %v", err)
			}
			if got := get(t, w, task.ID); got.Status != rediacc.StatusCompleted {
				t.Fatalf("after the lapse: %s", got.Status)
			}
		})
	}
}

// The busy gate's end is the earlier of the judgement's lapse and the
// gate's own end (aging, MaxHold), and the message says which.
func TestBusyWaitSaysWhichEndComesFirst(t *testing.T) {
	clock := &fakeClock{now: tWait}
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.Clock, cfg.Health.Interval, cfg.AgingInterval, cfg.Health.MaxHold = clock, -1, -1, 10*time.Minute
	})
	inProcessMachine(t, c, "hot")
	busyNow(t, c, clock, "hot") // lapses at 14:03 (three default intervals: c's probes are off)
	task := submit(t, c, rediacc.TaskSpec{Machine: "hot", Priority: rediacc.Minimal, Command: "true"})
	ws := get(t, c, task.ID).Waiting
	if len(ws) != 1 || !ws[0].Until.Equal(tWait.Add(3*time.Minute)) ||
		!strings.HasSuffix(ws[0].Message, "; renewed, it holds at most until 14:10:00 UTC (the maximum hold of 10m0s)") {
		t.Fatalf("lapse first: %+v", ws)
	}
	clock.Advance(2 * time.Minute)
	busyNow(t, c, clock, "hot") // renewed at 14:02: lapses at 14:05
	clock.Advance(7 * time.Minute)
	busyNow(t, c, clock, "hot") // renewed at 14:09: lapses at 14:12, after the maximum hold
	ws = get(t, c, task.ID).Waiting
	if len(ws) != 1 || !ws[0].Until.Equal(tWait.Add(10*time.Minute)) ||
		!strings.HasSuffix(ws[0].Message, "waits until 14:10:00 UTC (the maximum hold of 10m0s) or until the machine is free") {
		t.Fatalf("maximum hold first: %+v", ws)
	}
}
