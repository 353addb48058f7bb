// Package alert delivers alerts: a task's last attempt failed, a queue is too
// deep or too old, a machine fails its health probe.
//
// An [Alert] goes to a [Sender]. This package has three:
//
//   - [Webhook] POSTs the alert as JSON, signed with HMAC-SHA256 of a shared
//     secret ([Sign], [Verify]), retried with exponential backoff. Delivery
//     is asynchronous: Send only enqueues, so a worker never waits on a slow
//     receiver; a full queue drops the alert (logged and counted).
//   - [Fanout] sends to several senders.
//   - [RateLimiter] suppresses repeats of the same condition within a window
//     (counted, and reported on the next alert that goes through).
//
// A typical chain: NewRateLimiter(Fanout(logSender, webhook), RateLimitConfig{}).
// Close the outermost sender with a deadline at shutdown; it closes the rest.
package alert

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Kinds of alert, for [Alert].Kind.
const (
	// KindTaskFailed: a task's last attempt failed and its failure action
	// is "alert". TaskID, Team, Machine, Priority, Attempts, ExitCode and
	// Error describe it.
	KindTaskFailed = "task.failed"
	// KindQueueDepth: the number of pending tasks (of Priority, or of all
	// priorities when 0; of Team, when set) is above its threshold.
	KindQueueDepth = "queue.depth"
	// KindQueueAge: the oldest pending task (of Priority/Team, when set) has
	// waited longer than its threshold.
	KindQueueAge = "queue.age"
	// KindMachineUnhealthy: Machine failed its health probe.
	KindMachineUnhealthy = "machine.unhealthy"
	// KindMachineBusy: Machine's load averages rose above its thresholds:
	// it takes no new low-priority work for a while.
	KindMachineBusy = "machine.busy"
	// KindKeyOverdue: SSH keys older than the rotation policy's maximum age.
	KindKeyOverdue = "key.overdue"
)

// Severities, for [Alert].Severity: how urgent the condition is.
const (
	SeverityWarning = "warning" // worth knowing; the system copes (a busy machine)
	SeverityError   = "error"   // something failed (a task, a probe, a threshold crossed)
)

// Alert is one alert. Its JSON form (the webhook body) uses the field names
// in the tags; fields without omitempty are always present.
type Alert struct {
	// ID identifies the alert: the same for every delivery attempt, by
	// any worker (receivers drop duplicates by it; also sent as
	// [HeaderDelivery]). Empty for an alert that was never stored.
	ID string `json:"id,omitempty"`
	// Kind is one of the Kind* constants.
	Kind string `json:"kind"`
	// Severity is SeverityWarning or SeverityError.
	Severity string `json:"severity"`
	// TaskID is the failed task's id (task.failed); empty otherwise.
	TaskID string `json:"taskId"`
	// Schedule is the schedule's name (schedule.missed, schedule.failed,
	// and task.failed for a task a schedule submitted).
	Schedule string `json:"schedule,omitempty"`
	// Team and Machine the alert is about, when it is about one (names),
	// and their ids (a team or machine keeps its id across renames; a
	// later one of the same name has another).
	Team      string `json:"team"`
	Machine   string `json:"machine"`
	TeamID    string `json:"teamId,omitempty"`
	MachineID string `json:"machineId,omitempty"`
	// Priority of the task or queue level, 1 (critical) … 5; 0 if none.
	Priority int `json:"priority"`
	// Attempts the task made (task.failed).
	Attempts int `json:"attempts"`
	// ExitCode of the last attempt's command; nil (JSON null) when it never
	// exited (connection error, timeout) or the alert is not about a task.
	ExitCode *int `json:"exitCode"`
	// Signal that killed the command ("TERM"); omitted when none.
	Signal string `json:"signal,omitempty"`
	// Error is the last attempt's error. Senders with a redactor mask
	// secrets in it.
	Error string `json:"error"`
	// ErrorKind is the stable kind of Error ("exit", "timeout",
	// "auth_failed"…, see rediacc.ErrorKind); omitted when none.
	ErrorKind string `json:"errorKind,omitempty"`
	// Message is a human-readable summary (redacted like Error).
	Message string `json:"message"`
	// Key, when set, names the condition for [RateLimiter] instead of the
	// default (see [DefaultKey]).
	Key string `json:"key,omitempty"`
	// Suppressed is set by [RateLimiter]: how many alerts with the same key
	// it suppressed since the previous one it let through.
	Suppressed int `json:"suppressed,omitempty"`
	// Time is when the condition was observed.
	Time time.Time `json:"time"`
}

// Sender delivers alerts. Send should return quickly; senders that talk to
// the network queue the work (see [Webhook]).
type Sender interface {
	Send(ctx context.Context, a Alert) error
}

// Closer is implemented by senders that hold resources (a queue, a
// goroutine). Close flushes what it can before ctx is done.
type Closer interface {
	Close(ctx context.Context) error
}

// SenderFunc adapts a function to [Sender].
type SenderFunc func(ctx context.Context, a Alert) error

// Send calls f.
func (f SenderFunc) Send(ctx context.Context, a Alert) error { return f(ctx, a) }

var (
	_ Sender = SenderFunc(nil)
	_ Sender = (*FanoutSender)(nil)
	_ Closer = (*FanoutSender)(nil)
	_ Sender = (*Webhook)(nil)
	_ Closer = (*Webhook)(nil)
	_ Sender = (*RateLimiter)(nil)
	_ Closer = (*RateLimiter)(nil)
)

// FanoutSender sends each alert to several senders. Make one with [Fanout].
type FanoutSender struct {
	senders []Sender
}

// Fanout returns a sender that sends every alert to each of senders, in
// order (nil senders are skipped).
func Fanout(senders ...Sender) *FanoutSender {
	f := &FanoutSender{}
	for _, s := range senders {
		if s != nil {
			f.senders = append(f.senders, s)
		}
	}
	return f
}

// Send sends a to every sender, even when some fail, and returns their
// errors joined (nil if all succeeded).
func (f *FanoutSender) Send(ctx context.Context, a Alert) error {
	var errs []error
	for _, s := range f.senders {
		if err := s.Send(ctx, a); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close closes every sender that is a [Closer], concurrently and with the
// same ctx (so one slow receiver does not eat the others' deadline), and
// returns their errors joined.
func (f *FanoutSender) Close(ctx context.Context) error {
	errs := make([]error, len(f.senders))
	var wg sync.WaitGroup
	for i, s := range f.senders {
		if c, ok := s.(Closer); ok {
			wg.Go(func() { errs[i] = c.Close(ctx) })
		}
	}
	wg.Wait()
	return errors.Join(errs...)
}
