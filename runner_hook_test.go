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
