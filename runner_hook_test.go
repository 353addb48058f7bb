package rediacc

import (
	"context"

	rssh "github.com/rediacc/rediacc/ssh"
)

// SetNoopRunnerForTest makes c's worker complete every attempt at once
// (exit 0, no output) without connecting anywhere: queue benchmarks
// measure the store and the worker, not SSH.
func SetNoopRunnerForTest(c *Client) {
	c.runCmd = func(context.Context, rssh.Target, rssh.Command) (*rssh.Result, error) {
		return &rssh.Result{}, nil
	}
}

// SetRunnerForTest makes c's worker run every attempt with f instead of
// the SSH pool.
func SetRunnerForTest(c *Client, f func(ctx context.Context, t rssh.Target, cmd rssh.Command) (*rssh.Result, error)) {
	c.runCmd = f
}

// SetAttemptHookForTest makes the goroutine of every claimed task call f
// with step "executed" once its attempt ended and "released" once it gave
// up its entry among the running tasks. Set before Run.
func SetAttemptHookForTest(c *Client, f func(taskID, step string)) {
	c.attemptHook = f
}
