package rediacc_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
	rssh "github.com/rediacc/rediacc/ssh"
)

// A task whose attempt ended and made it PENDING at once (a retry due now,
// or a settled earlier copy) is claimed again while the goroutine of the
// ended attempt still cleans up. That goroutine must not remove the next
// attempt's entry among the running tasks: a cancel (and the heartbeats
// renewing its lease) must still reach the next attempt, or the cancelled
// task waits for its command forever (TestNoSecondCopyAfterWorkerKilled
// hung so once in a hundred runs). The hook holds the first goroutine
// between its attempt's end and its clean-up until the second attempt
// runs, which the scheduler otherwise does only now and then.
func TestCancelReachesAttemptClaimedWhileTheLastOneEnds(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 12, 1, 4, 0, 0, 0, time.UTC)}
	c := newClient(t, func(cfg *rediacc.Config) { cfg.Clock = clock; cfg.Concurrency = 4 })
	inProcessMachine(t, c, "m1")

	end := make(chan struct{}) // the test is over: a second attempt still running returns
	second := make(chan context.Context, 1)
	var calls atomic.Int32
	rediacc.SetRunnerForTest(c, func(ctx context.Context, _ rssh.Target, _ rssh.Command) (*rssh.Result, error) {
		if calls.Add(1) == 1 {
			return &rssh.Result{ExitCode: 1}, &rssh.ExitError{Code: 1, Machine: "m1"}
		}
		second <- ctx
		select {
		case <-ctx.Done():
			return &rssh.Result{ExitCode: -1}, ctx.Err()
		case <-end:
			return &rssh.Result{ExitCode: -1}, errors.New("test over: the cancel never reached this attempt")
		}
	})
	var (
		mu        sync.Mutex
		firstDone = make(chan struct{})
		runCtx    context.Context
		hooked    int
	)
	rediacc.SetAttemptHookForTest(c, func(_, step string) {
		mu.Lock()
		hooked++
		n := hooked
		mu.Unlock()
		switch {
		case n == 1 && step == "executed":
			// The first attempt failed; its retry is due an hour later.
			clock.Advance(time.Hour)
			select {
			case ctx := <-second:
				mu.Lock()
				runCtx = ctx
				mu.Unlock()
			case <-time.After(30 * time.Second):
				t.Error("the retry was not claimed within 30 s")
			}
		case n == 2 && step == "released":
			close(firstDone)
		}
	})
	task := submit(t, c, rediacc.TaskSpec{Machine: "m1", Command: "sleep 600.31",
		Retry: rediacc.RetryPolicy{RetryCount: 1, RetryDelay: time.Minute}})
	runWorker(t, c)
	t.Cleanup(func() { close(end) }) // before the worker stops (cleanups run last first)

	select {
	case <-firstDone:
	case <-time.After(60 * time.Second):
		t.Fatal("the first attempt's goroutine never ended")
	}
	mu.Lock()
	ctx := runCtx
	mu.Unlock()
	if ctx == nil {
		t.Fatal("no second attempt ran")
	}
	if _, err := c.Cancel(asOwner(), task.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the cancel never reached the running second attempt (its entry among the running tasks was removed by the first attempt's goroutine)")
	}
	done, err := c.Wait(ctxTimeout(t, 30*time.Second), task.ID)
	if err != nil || done.Status != rediacc.StatusCancelled || len(done.History) != 2 {
		t.Fatalf("cancelled task: %+v, %v", done, err)
	}
}
