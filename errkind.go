package rediacc

import (
	"context"
	"errors"
	"strings"

	"github.com/rediacc/rediacc/internal/vault"
	rssh "github.com/rediacc/rediacc/ssh"
)

// ErrorKind is the stable kind of a task's error, stored next to its text
// (Task.ErrorKind, Attempt.ErrorKind, Alert.ErrorKind; "errorKind" in the
// JSON forms), so that a program can tell failures apart without reading
// the message. Task.Err and Alert.Err turn it back into an error that
// errors.Is and errors.As understand. "" means no error. New kinds may be
// added; treat an unknown one like ErrorKindInternal.
type ErrorKind string

// Kinds of error. Each names the sentinel (or type) Task.Err matches.
const (
	// ErrorKindExit: the command exited non-zero or was killed by a signal
	// (*ExitError, with Code and Signal).
	ErrorKindExit ErrorKind = "exit"
	// ErrorKindTimeout: the command ran past the task's timeout and was
	// stopped (ErrTimeout).
	ErrorKindTimeout ErrorKind = "timeout"
	// ErrorKindCancelled: the task was cancelled (ErrTaskCancelled, also
	// known as ErrCancelled).
	ErrorKindCancelled ErrorKind = "cancelled"
	// ErrorKindConnect: dialing, the SSH handshake, a keepalive or a session
	// failed, or the connection was lost under the command (ErrConnect).
	ErrorKindConnect ErrorKind = "connect"
	// ErrorKindAuthFailed: the machine refused the identity (ErrAuthFailed).
	ErrorKindAuthFailed ErrorKind = "auth_failed"
	// ErrorKindHostKeyMismatch: the machine's host key differs from the one
	// recorded for it (ErrHostKeyMismatch).
	ErrorKindHostKeyMismatch ErrorKind = "host_key_mismatch"
	// ErrorKindUnknownHostKey: the machine's host key is not known
	// (ErrUnknownHostKey).
	ErrorKindUnknownHostKey ErrorKind = "unknown_host_key"
	// ErrorKindAlgorithmNegotiation: the machine's sshd and this client
	// share no algorithm of one kind (ErrAlgorithmNegotiation).
	ErrorKindAlgorithmNegotiation ErrorKind = "algorithm_negotiation"
	// ErrorKindKeyFile: the machine's identity file is missing, unreadable
	// or not a key (ErrKeyFile).
	ErrorKindKeyFile ErrorKind = "key_file"
	// ErrorKindWrongPassphrase: the identity's passphrase, or the vault's,
	// is wrong or missing (ErrWrongPassphrase).
	ErrorKindWrongPassphrase ErrorKind = "wrong_passphrase"
	// ErrorKindSecretNotFound: a secret the task names is not in its team's
	// vault (ErrSecretNotFound).
	ErrorKindSecretNotFound ErrorKind = "secret_not_found"
	// ErrorKindVault: the team's vault could not be read: unavailable,
	// corrupt, not configured (ErrVault).
	ErrorKindVault ErrorKind = "vault"
	// ErrorKindPermissionDenied: the worker's actor may no longer run the
	// task or read its secrets (ErrPermissionDenied).
	ErrorKindPermissionDenied ErrorKind = "permission_denied"
	// ErrorKindInvalidTask: the task cannot run as stored: its machine is no
	// longer registered, its spec is unreadable (ErrInvalidTask).
	ErrorKindInvalidTask ErrorKind = "invalid_task"
	// ErrorKindFateUnknown: an earlier copy of the task may still be running
	// and its machine cannot tell (ErrFateUnknown): the task waits until it
	// can.
	ErrorKindFateUnknown ErrorKind = "fate_unknown"
	// ErrorKindInterrupted: the attempt was interrupted by its worker's
	// shutdown or loss and will run again (ErrShutdown).
	ErrorKindInterrupted ErrorKind = "interrupted"
	// ErrorKindInternal: anything else (no sentinel).
	ErrorKindInternal ErrorKind = "internal"
)

// ErrCancelled is ErrTaskCancelled.
var ErrCancelled = ErrTaskCancelled

// ErrVault: a team's vault could not be used for a task (unavailable,
// corrupt, not configured). Errors of kind ErrorKindVault match it.
var ErrVault = errors.New("vault error")

// ErrFateUnknown: an earlier copy of a task may still be running on its
// machine, which cannot be reached to stop it or learn how it ended; the
// task waits rather than start a second copy.
var ErrFateUnknown = rssh.ErrFateUnknown

// sentinel is the error Task.Err matches for kind k (nil for exit and
// internal).
func (k ErrorKind) sentinel() error {
	switch k {
	case ErrorKindTimeout:
		return ErrTimeout
	case ErrorKindCancelled:
		return ErrTaskCancelled
	case ErrorKindConnect:
		return ErrConnect
	case ErrorKindAuthFailed:
		return ErrAuthFailed
	case ErrorKindHostKeyMismatch:
		return ErrHostKeyMismatch
	case ErrorKindUnknownHostKey:
		return ErrUnknownHostKey
	case ErrorKindAlgorithmNegotiation:
		return ErrAlgorithmNegotiation
	case ErrorKindKeyFile:
		return ErrKeyFile
	case ErrorKindWrongPassphrase:
		return ErrWrongPassphrase
	case ErrorKindSecretNotFound:
		return ErrSecretNotFound
	case ErrorKindVault:
		return ErrVault
	case ErrorKindPermissionDenied:
		return ErrPermissionDenied
	case ErrorKindInvalidTask:
		return ErrInvalidTask
	case ErrorKindFateUnknown:
		return ErrFateUnknown
	case ErrorKindRunTaken:
		return ErrRunTaken
	case ErrorKindInterrupted:
		return ErrShutdown
	}
	return nil
}

// errorKindOf classifies an attempt's error. The order matters: an error
// may wrap several sentinels (a cancellation of a command whose connection
// failed), the first match wins.
func errorKindOf(err error) ErrorKind {
	var exit *ExitError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrShutdown), errors.Is(err, errLeaseLost):
		return ErrorKindInterrupted
	case errors.Is(err, ErrTaskCancelled), errors.Is(err, context.Canceled):
		return ErrorKindCancelled
	case errors.Is(err, ErrRunTaken): // runtaken.go
		return ErrorKindRunTaken
	case errors.Is(err, ErrFateUnknown):
		return ErrorKindFateUnknown
	case errors.Is(err, ErrHostKeyMismatch):
		return ErrorKindHostKeyMismatch
	case errors.Is(err, ErrUnknownHostKey):
		return ErrorKindUnknownHostKey
	case errors.Is(err, ErrAuthFailed):
		return ErrorKindAuthFailed
	case errors.Is(err, ErrAlgorithmNegotiation):
		return ErrorKindAlgorithmNegotiation
	case errors.Is(err, ErrSecretNotFound):
		return ErrorKindSecretNotFound
	case errors.Is(err, ErrWrongPassphrase):
		return ErrorKindWrongPassphrase
	case errors.Is(err, ErrKeyFile):
		return ErrorKindKeyFile
	case errors.Is(err, ErrPermissionDenied):
		return ErrorKindPermissionDenied
	case errors.Is(err, ErrVault), errors.Is(err, ErrNoVault), isVaultErr(err):
		return ErrorKindVault
	case errors.As(err, &exit):
		return ErrorKindExit
	case errors.Is(err, ErrTimeout):
		return ErrorKindTimeout
	case errors.Is(err, ErrConnect):
		return ErrorKindConnect
	case errors.Is(err, ErrInvalidArgument), errors.Is(err, rssh.ErrInvalidCommand):
		return ErrorKindInvalidTask
	}
	return ErrorKindInternal
}

func isVaultErr(err error) bool {
	for _, s := range []error{vault.ErrCorrupt, vault.ErrUnavailable, vault.ErrClosed, vault.ErrPermissionDenied, vault.ErrUnauthenticated} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// kindError is the error Task.Err and Alert.Err return: the stored message,
// matching its kind's sentinel, or holding an *ExitError.
type kindError struct {
	msg  string
	kind ErrorKind
	exit *ExitError
}

func (e *kindError) Error() string { return e.msg }

func (e *kindError) Unwrap() []error {
	if e.exit != nil {
		return []error{e.exit}
	}
	if e.kind == ErrorKindRunTaken {
		return []error{ErrRunTaken, ErrFateUnknown} // the task waits for that marker to be settled
	}
	if s := e.kind.sentinel(); s != nil {
		return []error{s}
	}
	return nil
}

// storedErr rebuilds an error from its stored parts. A record written
// before kinds were stored has none: it is inferred from the exit code and
// the outcome.
func storedErr(msg string, kind ErrorKind, exitCode *int, signal string, outcome Outcome, machine string) error {
	if msg == "" && kind == "" {
		return nil
	}
	if kind == "" {
		switch {
		case outcome == OutcomeTimeout:
			kind = ErrorKindTimeout
		case outcome == OutcomeCancelled:
			kind = ErrorKindCancelled
		case outcome == OutcomeUnknown, outcome == OutcomeLost:
			kind = ErrorKindFateUnknown
		case outcome == OutcomeInterrupted:
			kind = ErrorKindInterrupted
		case exitCode != nil && *exitCode != 0, signal != "":
			kind = ErrorKindExit
		default:
			kind = ErrorKindInternal
		}
	}
	if msg == "" {
		msg = "task error: " + string(kind)
	}
	e := &kindError{msg: msg, kind: kind}
	if kind == ErrorKindExit {
		e.exit = &ExitError{Signal: signal, Machine: machine, Msg: strings.TrimSpace(msg)}
		switch {
		case exitCode != nil:
			e.exit.Code = *exitCode
		case signal != "":
			e.exit.Code = 128 + signalNumber(signal)
		}
	}
	return e
}

// signalNumber is the Linux number of a signal name ("TERM"), 0 when
// unknown, as x/crypto/ssh counts them for ExitError.Code.
func signalNumber(name string) int {
	return map[string]int{"HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "ABRT": 6, "FPE": 8, "KILL": 9,
		"USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15}[name]
}

// Err returns the task's error (that of its last recorded attempt) as a
// value a program can act on, or nil when it has none (it succeeded, or
// has not run yet). Its message is Task.Error. errors.Is matches the
// sentinel of Task.ErrorKind — ErrTimeout, ErrTaskCancelled (ErrCancelled),
// ErrConnect, ErrAuthFailed, ErrHostKeyMismatch, ErrUnknownHostKey,
// ErrAlgorithmNegotiation, ErrKeyFile, ErrWrongPassphrase, ErrSecretNotFound, ErrVault,
// ErrPermissionDenied, ErrInvalidTask, ErrFateUnknown, ErrRunTaken, ErrShutdown — and,
// for ErrorKindExit, errors.As finds an *ExitError with the exit code and,
// when the command was killed, the signal (Code is then 128 plus the
// signal's number).
func (t *Task) Err() error {
	signal := ""
	var outcome Outcome
	// The last recorded result is that of the latest attempt carrying the
	// same error text (later ones were interrupted or are running).
	for i := len(t.History) - 1; i >= 0; i-- {
		if a := t.History[i]; a.Error == t.Error && a.ErrorKind == t.ErrorKind && !a.EndedAt.IsZero() {
			signal, outcome = a.Signal, a.Outcome
			break
		}
	}
	return storedErr(t.Error, t.ErrorKind, t.ExitCode, signal, outcome, t.Machine)
}

// Err returns the attempt's error as Task.Err does, or nil.
func (a Attempt) Err() error {
	return storedErr(a.Error, a.ErrorKind, a.ExitCode, a.Signal, a.Outcome, "")
}
