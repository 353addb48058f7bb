package rediacc

import (
	"context"
	"log/slog"
	"time"
)

// Alert describes a task whose last attempt failed under FailureAlert.
type Alert struct {
	TaskID   string
	Team     string
	Machine  string
	Priority Priority
	Command  string
	Attempts int
	ExitCode *int   // nil when the command never exited
	Error    string // the last attempt's error
	Time     time.Time
}

// Alerter is told when a task finally fails and its FailureAction is
// FailureAlert. Alert is called from the worker after the task is recorded
// as FAILED; it should return quickly (queue slow deliveries itself). An
// error is logged, never retried by the worker.
type Alerter interface {
	Alert(ctx context.Context, a Alert) error
}

// AlerterFunc adapts a function to Alerter.
type AlerterFunc func(ctx context.Context, a Alert) error

// Alert calls f.
func (f AlerterFunc) Alert(ctx context.Context, a Alert) error { return f(ctx, a) }

var _ Alerter = AlerterFunc(nil)
var _ Alerter = (*LogAlerter)(nil)

// LogAlerter logs alerts at ERROR through slog. It is the default Alerter.
type LogAlerter struct{ Logger *slog.Logger }

// Alert logs a at ERROR with the task's context.
func (l *LogAlerter) Alert(ctx context.Context, a Alert) error {
	lg := l.Logger
	if lg == nil {
		lg = slog.Default()
	}
	attrs := []any{
		slog.String("task_id", a.TaskID), slog.String("team", a.Team),
		slog.String("machine", a.Machine), slog.Int("priority", int(a.Priority)),
		slog.Int("attempts", a.Attempts), slog.String("error", a.Error),
	}
	if a.ExitCode != nil {
		attrs = append(attrs, slog.Int("exit_code", *a.ExitCode))
	}
	lg.ErrorContext(ctx, "task failed: alert", attrs...)
	return nil
}
