package ssh

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error returned by this package that falls into one
// of these classes wraps the sentinel (test with errors.Is) and names the
// machine (Target.Name), its address and, where useful, what to do about it.
var (
	// ErrHostKeyMismatch: the host presented a key that differs from the one
	// recorded for it in a known_hosts file. Possible man-in-the-middle attack
	// or a reinstalled host. Not retryable.
	ErrHostKeyMismatch = errors.New("ssh: host key mismatch")

	// ErrUnknownHostKey: the host is not in any known_hosts file and the
	// policy is strict (KnownHosts). Not retryable.
	ErrUnknownHostKey = errors.New("ssh: unknown host key")

	// ErrAuthFailed: the server refused every authentication method offered
	// (wrong key, key not in authorized_keys, wrong user). Not retryable.
	ErrAuthFailed = errors.New("ssh: authentication failed")

	// ErrWrongPassphrase: a private key is encrypted and the passphrase is
	// missing or wrong. Not retryable.
	ErrWrongPassphrase = errors.New("ssh: wrong or missing key passphrase")

	// ErrKeyFile: a private key file is missing, unreadable or cannot be
	// parsed. The error names the path. Not retryable.
	ErrKeyFile = errors.New("ssh: bad private key file")

	// ErrConnect: a connection-level failure that is worth retrying: dial
	// error or timeout, handshake failure or timeout (other than auth and
	// host key problems), keepalive failure, session open failure or
	// timeout, or the connection dropping while a command ran. Retryable.
	ErrConnect = errors.New("ssh: connection failed")

	// ErrTimeout: the command ran longer than Command.Timeout and was killed.
	// Not retryable by IsRetryable (the retry policy of the caller decides).
	ErrTimeout = errors.New("ssh: command timed out")

	// ErrPoolClosed: the Pool was closed. Not retryable.
	ErrPoolClosed = errors.New("ssh: pool closed")

	// ErrInvalidCommand: the Command or Target cannot be run as given (bad
	// environment variable or secret name, a name in both Env and Secrets,
	// NUL byte in the command, an env value or a secret value — the error
	// names the key, never a secret's value — a command line over
	// MaxCommandLineBytes, a secret over MaxSecretEntryBytes or secrets over
	// MaxSecretsBytes together, missing host or user, no auth method).
	// Nothing is sent to the server. Not retryable.
	ErrInvalidCommand = errors.New("ssh: invalid command")

	// ErrFateUnknown: whether a run (Command.RunID) still runs, or how it
	// ended, cannot be learned for now — its machine cannot be reached
	// after the connection was lost, or its process group survived KILL.
	// It may still be running: do not start it again before Pool.Settle
	// succeeds. Not retryable.
	ErrFateUnknown = errors.New("ssh: the run's fate is unknown")

	// ErrRunTaken: the marker of the run (Command.RunID) existed already on
	// the machine: a Pool.Settle claimed it, or the run was started
	// before. The command was not run. Not retryable.
	ErrRunTaken = errors.New("ssh: the run was taken on the machine")
)

// ExitError reports a remote command that ended with a non-zero exit status
// or was killed by a signal. Run returns it together with the (complete)
// Result.
type ExitError struct {
	// Code is the exit status (1..255). For death by signal it is 128 plus
	// the signal number when the signal is known (e.g. 143 for TERM), else 128.
	Code int
	// Signal is the signal name without the "SIG" prefix ("TERM", "KILL")
	// when the command died by a signal, else "".
	Signal string
	// Msg is the error message the server sent with exit-signal, if any.
	Msg string
	// Machine is the Target's Name and Address its "user@host:port".
	Machine, Address string
}

// Error describes the exit, naming the machine and its address.
func (e *ExitError) Error() string {
	where := fmt.Sprintf("machine %q", e.Machine)
	if e.Address != "" {
		where += " (" + e.Address + ")"
	}
	if e.Signal != "" {
		s := fmt.Sprintf("ssh: %s: command killed by signal %s", where, e.Signal)
		if e.Msg != "" {
			s += ": " + e.Msg
		}
		return s
	}
	return fmt.Sprintf("ssh: %s: command exited with status %d", where, e.Code)
}

// IsRetryable reports whether err is a transient connection problem that a
// caller may retry: true for errors wrapping ErrConnect, false for nil,
// authentication failures, host key problems, key file and passphrase
// problems, invalid commands, a closed pool, command timeouts, runs whose
// fate is unknown or that were taken (ErrFateUnknown, ErrRunTaken),
// non-zero exits (*ExitError) and context cancellation.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	for _, permanent := range []error{
		ErrHostKeyMismatch, ErrUnknownHostKey, ErrAuthFailed, ErrWrongPassphrase,
		ErrKeyFile, ErrPoolClosed, ErrInvalidCommand, ErrTimeout, ErrFateUnknown, ErrRunTaken,
	} {
		if errors.Is(err, permanent) {
			return false
		}
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return false
	}
	return errors.Is(err, ErrConnect)
}

// targetErr formats an error about target t that wraps sentinel (may be nil)
// and cause (may be nil). The message reads
// `ssh: machine "NAME" (USER@ADDR): MSG: CAUSE`; the sentinel is matched by
// errors.Is but its text is not repeated.
func targetErr(t *Target, sentinel error, cause error, format string, args ...any) error {
	msg := fmt.Sprintf("ssh: machine %q (%s@%s): ", t.Name, t.User, t.addr()) + fmt.Sprintf(format, args...)
	if cause != nil {
		msg += ": " + cause.Error()
	}
	e := &wrapError{msg: msg}
	if sentinel != nil {
		e.errs = append(e.errs, sentinel)
	}
	if cause != nil {
		e.errs = append(e.errs, cause)
	}
	return e
}

// wrapError is an error with a fixed message that wraps several errors.
type wrapError struct {
	msg  string
	errs []error
}

func (e *wrapError) Error() string   { return e.msg }
func (e *wrapError) Unwrap() []error { return e.errs }
