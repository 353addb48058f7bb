package ssh_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/rediacc/rediacc/ssh"
)

func TestIsRetryable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"connect", fmt.Errorf("x: %w", ssh.ErrConnect), true},
		{"connect wrapping net timeout", fmt.Errorf("%w: %w", ssh.ErrConnect, &net.OpError{Op: "dial", Err: context.DeadlineExceeded}), true},
		{"auth", ssh.ErrAuthFailed, false},
		{"mismatch", ssh.ErrHostKeyMismatch, false},
		{"unknown host", ssh.ErrUnknownHostKey, false},
		{"key file", ssh.ErrKeyFile, false},
		{"passphrase", ssh.ErrWrongPassphrase, false},
		{"timeout", ssh.ErrTimeout, false},
		{"pool closed", ssh.ErrPoolClosed, false},
		{"invalid", ssh.ErrInvalidCommand, false},
		{"canceled", context.Canceled, false},
		{"deadline", context.DeadlineExceeded, false},
		{"exit", &ssh.ExitError{Code: 1}, false},
		{"auth beats connect", fmt.Errorf("%w %w", ssh.ErrConnect, ssh.ErrAuthFailed), false},
		{"other", errors.New("boom"), false},
	} {
		if got := ssh.IsRetryable(tc.err); got != tc.want {
			t.Errorf("%s: IsRetryable(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}
