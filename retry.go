package rediacc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v4"

	rssh "github.com/rediacc/rediacc/ssh"
)

// Backoff shapes of a RetryPolicy.
const (
	// BackoffExponential multiplies the delay by RetryPolicy.Multiplier after
	// each failed attempt, up to MaxDelay. The default.
	BackoffExponential = "exponential"
	// BackoffConstant waits RetryDelay before every retry.
	BackoffConstant = "constant"
)

// What a RetryPolicy retries.
const (
	// RetryOnFailure retries connection and handshake errors, commands that
	// ran past the task's timeout, and non-zero exits. The default.
	RetryOnFailure = "failure"
	// RetryOnConnection retries connection and handshake errors (network
	// timeouts included) only, as Ansible does: a command that ran and exited
	// non-zero, or ran past its timeout, fails at once.
	RetryOnConnection = "connection"
)

// Defaults of a RetryPolicy's zero fields.
const (
	DefaultRetryDelay = 30 * time.Second // the product guide's example
	DefaultMultiplier = 2.0
	DefaultMaxDelay   = time.Hour
	MaxRetryCount     = 100
)

// RetryPolicy says whether and when a failed attempt is tried again. Delays
// come from github.com/cenkalti/backoff/v4. The zero value retries nothing.
//
// Never retried, whatever the policy: authentication failures, host-key
// mismatches and unknown host keys, bad identity files, invalid tasks and
// cancellations. A worker shutdown or crash does not use up an attempt.
type RetryPolicy struct {
	// RetryCount is how many times a failed attempt is retried: a task runs
	// at most 1+RetryCount attempts. Range 0..100; default 0.
	RetryCount int `json:"retryCount"`
	// RetryDelay is the wait before the first retry; default 30s
	// (DefaultRetryDelay) when RetryCount > 0; at most MaxTaskDuration. In
	// the task JSON form it is a number of seconds ("retryDelay": 30).
	RetryDelay time.Duration `json:"-"`
	// Backoff is BackoffExponential (default) or BackoffConstant.
	Backoff string `json:"retryBackoff,omitempty"`
	// Multiplier grows an exponential delay after each retry; default 2,
	// range 1..10.
	Multiplier float64 `json:"retryMultiplier,omitempty"`
	// MaxDelay caps any one delay; default 1h; at most MaxTaskDuration.
	MaxDelay time.Duration `json:"-"`
	// Jitter spreads delays by ±Jitter×delay at random (backoff's
	// RandomizationFactor); range 0..1, default 0.
	Jitter float64 `json:"retryJitter,omitempty"`
	// RetryOn is RetryOnFailure (default) or RetryOnConnection.
	RetryOn string `json:"retryOn,omitempty"`
}

// withDefaults returns p with zero fields set to their defaults.
func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.RetryDelay == 0 && p.RetryCount > 0 {
		p.RetryDelay = DefaultRetryDelay
	}
	if p.Backoff == "" {
		p.Backoff = BackoffExponential
	}
	if p.Multiplier == 0 {
		p.Multiplier = DefaultMultiplier
	}
	if p.MaxDelay == 0 {
		p.MaxDelay = DefaultMaxDelay
	}
	if p.RetryOn == "" {
		p.RetryOn = RetryOnFailure
	}
	return p
}

// Validate returns ErrInvalidTask naming the first bad field.
func (p RetryPolicy) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: retry policy: %s", ErrInvalidTask, fmt.Sprintf(format, a...))
	}
	switch {
	case p.RetryCount < 0 || p.RetryCount > MaxRetryCount:
		return bad("retryCount %d is outside 0..%d", p.RetryCount, MaxRetryCount)
	case p.RetryDelay < 0 || p.RetryDelay > MaxTaskDuration:
		return bad("retryDelay %s is outside 0..%s (MaxTaskDuration)", p.RetryDelay, MaxTaskDuration)
	case p.MaxDelay < 0 || p.MaxDelay > MaxTaskDuration:
		return bad("maxDelay %s is outside 0..%s (MaxTaskDuration)", p.MaxDelay, MaxTaskDuration)
	case p.Backoff != "" && p.Backoff != BackoffExponential && p.Backoff != BackoffConstant:
		return bad("backoff %s is not %s or %s", quoteInput(p.Backoff), quoteInput(BackoffExponential), quoteInput(BackoffConstant))
	case p.Multiplier != 0 && (p.Multiplier < 1 || p.Multiplier > 10):
		return bad("multiplier %g is outside 1..10", p.Multiplier)
	case p.Jitter < 0 || p.Jitter > 1:
		return bad("jitter %g is outside 0..1", p.Jitter)
	case p.RetryOn != "" && p.RetryOn != RetryOnFailure && p.RetryOn != RetryOnConnection:
		return bad("retryOn %s is not %s or %s", quoteInput(p.RetryOn), quoteInput(RetryOnFailure), quoteInput(RetryOnConnection))
	}
	return nil
}

// Delay returns the wait before retry number n (1 = the first retry) by
// stepping a fresh cenkalti/backoff BackOff n times.
func (p RetryPolicy) Delay(n int) time.Duration {
	p = p.withDefaults()
	var b backoff.BackOff
	if p.Backoff == BackoffConstant {
		b = backoff.NewConstantBackOff(p.RetryDelay)
	} else {
		e := backoff.NewExponentialBackOff()
		e.InitialInterval = p.RetryDelay
		e.Multiplier = p.Multiplier
		e.MaxInterval = p.MaxDelay
		e.RandomizationFactor = 0
		e.MaxElapsedTime = 0
		e.Reset()
		b = e
	}
	var d time.Duration
	for i := 0; i < n; i++ {
		d = b.NextBackOff()
	}
	if d > p.MaxDelay {
		d = p.MaxDelay
	}
	if p.Jitter > 0 && d > 0 {
		// Same spread as backoff's RandomizationFactor, applied to either shape.
		delta := p.Jitter * float64(d)
		d = time.Duration(float64(d) - delta + rand.Float64()*(2*delta))
	}
	return d
}

// FailureAction says what happens when a task's last attempt fails.
type FailureAction string

// Failure actions.
const (
	// FailureAlert calls the Client's Alerter. The default.
	FailureAlert FailureAction = "alert"
	// FailureNone only records the failure.
	FailureNone FailureAction = "none"
)

// ParseFailureAction reads "alert" or "none". Anything else returns
// ErrInvalidTask naming the input.
func ParseFailureAction(s string) (FailureAction, error) {
	switch a := FailureAction(s); a {
	case FailureAlert, FailureNone:
		return a, nil
	}
	return "", fmt.Errorf("%w: failure action %s (use alert or none)", ErrInvalidTask, quoteInput(s))
}

// failureKind is how the retry engine sees an attempt's error.
type failureKind int

const (
	kindSuccess     failureKind = iota
	kindConnection              // dial, handshake, keepalive, session open, network timeout
	kindTimeout                 // the command ran past the task's timeout
	kindExit                    // the command ran and exited non-zero / by signal
	kindPermanent               // auth, host key, key file, invalid task: never retried
	kindCancelled               // the task was cancelled
	kindInterrupted             // the worker shut down, or its lost copy was stopped: requeue, no attempt used
	kindLost                    // a lost copy's fate cannot be learned: requeue (at-least-once), no attempt used
	kindFateUnknown             // the copy may still run and its machine cannot tell: wait, no attempt used
)

// classify maps an attempt's error onto the retry engine's kinds.
func classify(err error) failureKind {
	var exit *ExitError
	switch {
	case err == nil:
		return kindSuccess
	case errors.Is(err, ErrShutdown):
		return kindInterrupted
	case errors.Is(err, errRetryLater):
		return kindConnection
	case errors.Is(err, ErrTaskCancelled), errors.Is(err, context.Canceled):
		return kindCancelled
	case errors.Is(err, ErrFateUnknown), errors.Is(err, ErrRunTaken):
		return kindFateUnknown
	case errors.Is(err, ErrHostKeyMismatch), errors.Is(err, ErrUnknownHostKey),
		errors.Is(err, ErrAuthFailed), errors.Is(err, ErrWrongPassphrase),
		errors.Is(err, ErrKeyFile), errors.Is(err, ErrInvalidArgument):
		return kindPermanent
	case errors.As(err, &exit):
		return kindExit
	case errors.Is(err, ErrTimeout):
		return kindTimeout
	case rssh.IsRetryable(err):
		return kindConnection
	}
	return kindPermanent
}

// retryable reports whether an error of kind k may be retried under p.
func (p RetryPolicy) retryable(k failureKind) bool {
	switch k {
	case kindConnection:
		return true
	case kindExit, kindTimeout:
		return p.withDefaults().RetryOn == RetryOnFailure
	}
	return false
}
