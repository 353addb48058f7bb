package rediacc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The product guide's task JSON form round-trips.
func TestTaskJSONGuideForm(t *testing.T) {
	in := `{"taskId": "550e8400-e29b-41d4-a716-446655440000", "retryCount": 3, "retryDelay": 30, "failureAction": "alert"}`
	var task Task
	if err := json.Unmarshal([]byte(in), &task); err != nil {
		t.Fatal(err)
	}
	if task.ID != "550e8400-e29b-41d4-a716-446655440000" || task.Retry.RetryCount != 3 ||
		task.Retry.RetryDelay != 30*time.Second || task.FailureAction != FailureAlert {
		t.Fatalf("decoded %+v", task)
	}
	out, err := json.Marshal(task)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"taskId": "550e8400-e29b-41d4-a716-446655440000", "retryCount": 3.0, "retryDelay": 30.0, "failureAction": "alert"}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("field %s = %v, want %v (json %s)", k, m[k], v, out)
		}
	}
	var back Task
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(task, back); diff != "" {
		t.Errorf("round trip (-first +second):\n%s", diff)
	}
}

func TestTaskJSONFullRoundTrip(t *testing.T) {
	code := 3
	at := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	task := Task{
		ID: "4d0b3c1e-9c56-4a43-b1f7-2f0f8a3c9b11",
		TaskSpec: TaskSpec{Machine: "prod-01", Command: "systemctl restart webserver", Priority: Critical,
			Retry:         RetryPolicy{RetryCount: 2, RetryDelay: 1500 * time.Millisecond, Backoff: BackoffConstant, RetryOn: RetryOnConnection},
			FailureAction: FailureNone, Timeout: 90 * time.Second, Env: map[string]string{"A": "b"}, IdempotencyKey: "k1"},
		Team: "prod", Status: StatusFailed, Attempts: 3, ExitCode: &code, Stdout: "out", Stderr: "err", Error: "exit 3",
		History:   []Attempt{{Number: 1, Worker: "w", StartedAt: at, EndedAt: at.Add(time.Second), ExitCode: &code, Error: "exit 3", Outcome: "failed"}},
		CreatedAt: at, StartedAt: at, CompletedAt: at.Add(time.Minute),
	}
	b, err := json.Marshal(task)
	if err != nil {
		t.Fatal(err)
	}
	var back Task
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(task, back); diff != "" {
		t.Errorf("round trip (-want +got):\n%s\njson: %s", diff, b)
	}
}

func TestTaskJSONRejectsBadDurations(t *testing.T) {
	for _, in := range []string{`{"retryDelay": -1}`, `{"timeout": -5}`, `{"retryDelay": "x"}`, `{"priority": 9}`} {
		var task Task
		if err := json.Unmarshal([]byte(in), &task); err == nil {
			t.Errorf("%s: want error", in)
		}
	}
}

func TestRetryDelay(t *testing.T) {
	exp := RetryPolicy{RetryCount: 5, RetryDelay: 30 * time.Second}
	for n, want := range []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 4 * time.Minute} {
		if got := exp.Delay(n + 1); got != want {
			t.Errorf("exponential retry %d = %s, want %s", n+1, got, want)
		}
	}
	capped := RetryPolicy{RetryCount: 9, RetryDelay: time.Second, MaxDelay: 5 * time.Second}
	if got := capped.Delay(8); got != 5*time.Second {
		t.Errorf("capped delay = %s", got)
	}
	constant := RetryPolicy{RetryCount: 3, RetryDelay: 30 * time.Second, Backoff: BackoffConstant}
	for n := 1; n <= 3; n++ {
		if got := constant.Delay(n); got != 30*time.Second {
			t.Errorf("constant retry %d = %s", n, got)
		}
	}
	if got := (RetryPolicy{RetryCount: 1}).Delay(1); got != DefaultRetryDelay {
		t.Errorf("default first delay = %s", got)
	}
	jit := RetryPolicy{RetryCount: 1, RetryDelay: 10 * time.Second, Jitter: 0.5}
	for i := 0; i < 100; i++ {
		if d := jit.Delay(1); d < 5*time.Second || d > 15*time.Second {
			t.Fatalf("jittered delay %s outside 5s..15s", d)
		}
	}
}

func TestRetryPolicyValidate(t *testing.T) {
	bad := []RetryPolicy{
		{RetryCount: -1}, {RetryCount: 101}, {RetryDelay: -time.Second}, {Backoff: "linear"},
		{Multiplier: 0.5}, {Jitter: 2}, {RetryOn: "always"}, {MaxDelay: -1},
	}
	for _, p := range bad {
		if err := p.Validate(); !errors.Is(err, ErrInvalidTask) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalidTask", p, err)
		}
	}
	if err := (RetryPolicy{RetryCount: 3, RetryDelay: time.Second, Backoff: BackoffConstant, Jitter: 0.2, RetryOn: RetryOnConnection}).Validate(); err != nil {
		t.Error(err)
	}
}

func TestClassifyAndRetryable(t *testing.T) {
	exit := &ExitError{Code: 2}
	tests := []struct {
		name       string
		err        error
		kind       failureKind
		anyRetry   bool // RetryOnFailure
		connection bool // RetryOnConnection
	}{
		{"success", nil, kindSuccess, false, false},
		{"connect", fmt.Errorf("dial: %w", ErrConnect), kindConnection, true, true},
		{"timeout", fmt.Errorf("x: %w", ErrTimeout), kindTimeout, true, false},
		{"exit", fmt.Errorf("run: %w", exit), kindExit, true, false},
		{"auth", fmt.Errorf("x: %w", ErrAuthFailed), kindPermanent, false, false},
		{"host key mismatch", fmt.Errorf("x: %w", ErrHostKeyMismatch), kindPermanent, false, false},
		{"unknown host", fmt.Errorf("x: %w", ErrUnknownHostKey), kindPermanent, false, false},
		{"key file", fmt.Errorf("x: %w", ErrKeyFile), kindPermanent, false, false},
		{"passphrase", fmt.Errorf("x: %w", ErrWrongPassphrase), kindPermanent, false, false},
		{"invalid", fmt.Errorf("x: %w", ErrInvalidTask), kindPermanent, false, false},
		{"cancelled", fmt.Errorf("%w (%v)", ErrTaskCancelled, context.Canceled), kindCancelled, false, false},
		{"shutdown", fmt.Errorf("%w (%v)", ErrShutdown, context.Canceled), kindInterrupted, false, false},
		{"unknown", errors.New("mystery"), kindPermanent, false, false},
	}
	for _, tt := range tests {
		k := classify(tt.err)
		if k != tt.kind {
			t.Errorf("%s: classify = %d, want %d", tt.name, k, tt.kind)
		}
		if got := (RetryPolicy{RetryCount: 1}).retryable(k); got != tt.anyRetry {
			t.Errorf("%s: retryable under failure policy = %v", tt.name, got)
		}
		if got := (RetryPolicy{RetryCount: 1, RetryOn: RetryOnConnection}).retryable(k); got != tt.connection {
			t.Errorf("%s: retryable under connection policy = %v", tt.name, got)
		}
	}
}

func TestTaskSpecValidation(t *testing.T) {
	ok := TaskSpec{Machine: "m", Command: "true"}
	got, err := ok.normalize()
	if err != nil || got.Priority != Normal || got.FailureAction != FailureAlert {
		t.Fatalf("defaults: %+v %v", got, err)
	}
	bad := []TaskSpec{
		{Machine: "m", Command: ""}, {Machine: "m", Command: "   "}, {Machine: "", Command: "true"},
		{Machine: "m", Command: "true", Priority: 6}, {Machine: "m", Command: "true", Priority: -1},
		{Machine: "m", Command: "true", Timeout: -time.Second},
		{Machine: "m", Command: "true", Env: map[string]string{"1BAD": "x"}},
		{Machine: "m", Command: "true", Env: map[string]string{"A B": "x"}},
		{Machine: "m", Command: "a\x00b"}, {Machine: "m", Command: "true", FailureAction: "page"},
		{Machine: "m", Command: "true", Retry: RetryPolicy{RetryCount: -2}},
	}
	for _, s := range bad {
		if _, err := s.normalize(); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("normalize(%+v) = %v, want ErrInvalidArgument", s, err)
		}
	}
}
