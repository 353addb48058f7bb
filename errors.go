package rediacc

import (
	"errors"
	"fmt"

	"github.com/rediacc/rediacc/internal/vault"
	rssh "github.com/rediacc/rediacc/ssh"
)

// Sentinel errors. Methods return them wrapped with the names involved (task
// id, machine, value); test for them with errors.Is. Each method's doc lists
// the ones it returns.
var (
	// ErrInvalidArgument is the class of every validation error: bad
	// priority, empty command, unknown machine on submit, bad duration, bad
	// name. Nothing is written when it is returned. The CLI exits 5.
	ErrInvalidArgument = errors.New("invalid argument")

	// ErrInvalidPriority: a priority outside 1..5 or an unknown name.
	ErrInvalidPriority = fmt.Errorf("%w: priority must be 1 (critical) to 5 (minimal)", ErrInvalidArgument)
	// ErrInvalidTask: a task spec that cannot run (empty command, bad env key,
	// negative timeout, bad retry policy…).
	ErrInvalidTask = fmt.Errorf("%w: invalid task", ErrInvalidArgument)
	// ErrInvalidMachine: a machine definition that cannot be used.
	ErrInvalidMachine = fmt.Errorf("%w: invalid machine", ErrInvalidArgument)
	// ErrUnknownMachine: a task names a machine that is not registered.
	ErrUnknownMachine = fmt.Errorf("%w: unknown machine", ErrInvalidArgument)

	// ErrNotFound: no task or machine with that id or name. The CLI exits 4.
	ErrNotFound = errors.New("not found")
	// ErrExists: a machine with that name is already registered.
	ErrExists = errors.New("already exists")
	// ErrNotCancellable: the task is COMPLETED or FAILED.
	ErrNotCancellable = errors.New("task is finished and cannot be cancelled")
	// ErrMachineBusy: the machine still has unfinished tasks.
	ErrMachineBusy = errors.New("machine has unfinished tasks")
	// ErrPermissionDenied: the actor's role does not allow the operation,
	// or a service refused it to the client's own credentials (HashiCorp
	// Vault: HTTP 403 from a policy that does not allow the path or
	// capability, the token itself valid; a local vault file the process
	// may not read). The CLI exits 3. (It is the same value as the vault
	// backends' denial, so every path that reaches a vault returns it.)
	ErrPermissionDenied = vault.ErrPermissionDenied
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("rediacc: client is closed")
	// ErrCorruptStore: the store file is not a rediacc store or is damaged.
	ErrCorruptStore = errors.New("store file is corrupt or not a rediacc store")
	// ErrShutdown: a task's attempt was interrupted because its worker shut
	// down; the task is requeued without using up an attempt.
	ErrShutdown = errors.New("worker shutting down")
	// ErrTaskCancelled: a task's attempt was ended because the task was
	// cancelled.
	ErrTaskCancelled = errors.New("task cancelled")
	// ErrConflict: a fact the operation was authorized on changed before
	// its write (a machine moved to another team or was removed, a team was
	// deleted) and the store refused the write: nothing changed. The error
	// names what changed; look again and retry. A role the actor lost
	// meanwhile gives ErrPermissionDenied instead. The CLI exits 1.
	ErrConflict = errors.New("conflict: the store changed while the operation was prepared; nothing was written")
	// ErrMachineChanged: a task's machine was removed, or moved to another
	// team, after the task was queued. A worker fails such a task without
	// running it (its Error says why; see MachineChangedError), so that a
	// task never runs on a machine its team does not own.
	ErrMachineChanged = errors.New("the task's machine no longer belongs to the task's team")

	// SSH errors, re-exported from package ssh so callers need one import.

	// ErrHostKeyMismatch: known_hosts holds a different key for the host.
	// Never retried.
	ErrHostKeyMismatch = rssh.ErrHostKeyMismatch
	// ErrUnknownHostKey: the host is not in known_hosts under the strict
	// policy. Never retried.
	ErrUnknownHostKey = rssh.ErrUnknownHostKey
	// ErrAuthFailed: the machine refused the identity. Never retried.
	ErrAuthFailed = rssh.ErrAuthFailed
	// ErrWrongPassphrase: the identity file's passphrase is wrong or missing.
	ErrWrongPassphrase = rssh.ErrWrongPassphrase
	// ErrKeyFile: the identity file is missing, unreadable or not a key.
	ErrKeyFile = rssh.ErrKeyFile
	// ErrConnect: dialing, the handshake, a keepalive or opening a session
	// failed. Retried.
	ErrConnect = rssh.ErrConnect
	// ErrTimeout: the command ran past the task's timeout. Retried.
	ErrTimeout = rssh.ErrTimeout

	// Key rotation (rotation.go).

	// ErrHomeMissing: the machine's login user has no home directory, so
	// ~/.ssh/authorized_keys cannot be there. The error names the machine.
	ErrHomeMissing = rssh.ErrHomeMissing
	// ErrAuthorizedKeysNotWritable: the machine's authorized_keys (or its
	// directory) cannot be replaced by the login user; nothing changed.
	ErrAuthorizedKeysNotWritable = rssh.ErrAuthorizedKeysNotWritable
	// ErrRemoteWrite: writing the new authorized_keys on the machine failed
	// (full disk); the old file is untouched.
	ErrRemoteWrite = rssh.ErrRemoteWrite
	// ErrKeyTypeUnsupported: the machine's sshd does not take the new
	// key's type (too old for Ed25519, or configured to refuse it); the
	// error names the machine and the server's version.
	ErrKeyTypeUnsupported = errors.New("sshd does not accept the key type")
	// ErrKeyRotationBusy: another rotation holds the key (one at a time,
	// across workers). Retried by rotation tasks.
	ErrKeyRotationBusy = errors.New("key rotation already in progress")
	// ErrKeyRotationIncomplete: a rotation did not finish on every machine
	// (*KeyRotationError lists them with the cause); each keeps a key that
	// logs in. Finish with Resume or undo with Rollback.
	ErrKeyRotationIncomplete = errors.New("key rotation incomplete")
	// ErrRollbackImpossible: the previous key no longer logs in on a
	// machine (or there is none): nothing changed.
	ErrRollbackImpossible = errors.New("key rollback impossible")
)

// ExitError reports a remote command that exited non-zero or died by a
// signal. Retried unless the policy restricts retries to connection errors.
type ExitError = rssh.ExitError

// ErrNotSupported: the store does not offer the operation (ListWorkers on a
// store that serves one host).
var ErrNotSupported = errors.New("not supported by this store")

// MachineChangedError is the reason a worker failed a task without running
// it: the task's machine (MachineID, named Machine) is no longer a machine
// of the task's team (TeamID). errors.Is(err, ErrMachineChanged) holds.
type MachineChangedError struct {
	TaskID    string
	TeamID    string // the task's team
	MachineID string
	Machine   string
	// MachineTeamID is the machine's team now; "" when Removed.
	MachineTeamID string
	Removed       bool
}

// Error implements error.
func (e *MachineChangedError) Error() string {
	if e.Removed {
		return fmt.Sprintf("%v: machine %s (id %s) was removed after task %s was queued; the task did not run (submit it again on a registered machine)",
			ErrMachineChanged, e.Machine, e.MachineID, e.TaskID)
	}
	return fmt.Sprintf("%v: machine %s (id %s) moved from the task's team %s to team %s after task %s was queued; the task did not run",
		ErrMachineChanged, e.Machine, e.MachineID, e.TeamID, e.MachineTeamID, e.TaskID)
}

// Is makes errors.Is(err, ErrMachineChanged) hold.
func (e *MachineChangedError) Is(target error) bool { return target == ErrMachineChanged }

// ErrCredentialsRefused: a service refused the client's own credentials —
// HashiCorp Vault when the client connected (token invalid or expired,
// AppRole login refused) or later (the token was revoked or expired
// mid-run and, with AppRole, a new login failed), or PostgreSQL (wrong or
// missing password, unknown role, no pg_hba.conf entry). Like
// ErrWrongPassphrase and ErrAuthFailed it is an authentication failure: the
// CLI exits 2. (It is the same value as the vault backends'
// ErrUnauthenticated.)
var ErrCredentialsRefused = vault.ErrUnauthenticated
