package main

import (
	"math"
	"time"

	"github.com/spf13/pflag"

	"github.com/rediacc/rediacc"
)

// taskFlags are the flags that describe a task (create task, schedule
// create and update).
type taskFlags struct {
	spec          rediacc.TaskSpec
	priority      string
	retryDelay    float64
	failureAction string
	env           []string
	secrets       []string
	selector      []string // placement and fan-out
	all           bool
	fs            *pflag.FlagSet
}

// register defines the flags on f.
func (tf *taskFlags) register(f *pflag.FlagSet) {
	tf.fs = f
	f.StringVar(&tf.spec.Machine, "machine", "", "machine name (or --team)")
	f.StringVar(&tf.spec.Team, "team", "", "place the task on the least loaded healthy machine of this team")
	f.StringArrayVar(&tf.selector, "selector", nil, "with --team: only machines with label KEY=VALUE (repeatable)")
	f.BoolVar(&tf.all, "all", false, "with --team: one task on every machine of the team and selector")
	f.StringVar(&tf.priority, "priority", "3", "1 (critical) .. 5 (minimal), or a level name")
	f.StringVar(&tf.spec.Command, "command", "", "shell command to run (required)")
	f.IntVar(&tf.spec.Retry.RetryCount, "retry-count", 0, "retries after a failed attempt (0..100)")
	f.Float64Var(&tf.retryDelay, "retry-delay", 30, "seconds before the first retry")
	f.StringVar(&tf.spec.Retry.Backoff, "retry-backoff", "exponential", "retry delay shape: exponential or constant")
	f.StringVar(&tf.spec.Retry.RetryOn, "retry-on", "failure", "what is retried: failure (connection errors, timeouts, non-zero exits) or connection")
	f.StringVar(&tf.failureAction, "failure-action", "alert", "after the last failed attempt: alert or none")
	durationFlag(f, &tf.spec.Timeout, "timeout", 0, "", true, "time limit of one attempt, e.g. 90s or 10m (default 1h)")
	f.StringArrayVar(&tf.env, "env", nil, "environment variable KEY=VALUE for the command (repeatable; not for secrets)")
	f.StringArrayVar(&tf.secrets, "secret", nil, "ENV=KEY: hand the team vault's KEY to the command as $ENV (repeatable; never on a command line, masked in output)")
}

// build parses the flags into a TaskSpec (Selector set from --selector).
func (tf *taskFlags) build() (rediacc.TaskSpec, error) {
	spec := tf.spec
	var err error
	if spec.Priority, err = rediacc.ParsePriority(tf.priority); err != nil {
		return spec, err
	}
	if tf.retryDelay < 0 || tf.retryDelay > 1e9 || math.IsNaN(tf.retryDelay) {
		return spec, usagef("--retry-delay %g: use a number of seconds >= 0", tf.retryDelay)
	}
	spec.Retry.RetryDelay = time.Duration(tf.retryDelay * float64(time.Second))
	if spec.FailureAction, err = rediacc.ParseFailureAction(tf.failureAction); err != nil {
		return spec, err
	}
	if spec.Env, err = parseKV("--env", tf.env); err != nil {
		return spec, err
	}
	if spec.Secrets, err = parseKV("--secret", tf.secrets); err != nil {
		return spec, err
	}
	if spec.Selector, err = parseKV("--selector", tf.selector); err != nil {
		return spec, err
	}
	return spec, nil
}

// changed reports whether any of the named flags was given.
func (tf *taskFlags) changed(names ...string) bool {
	for _, n := range names {
		if tf.fs.Changed(n) {
			return true
		}
	}
	return false
}
