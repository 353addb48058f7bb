package rediacc

import (
	"errors"
	"fmt"

	rssh "github.com/rediacc/rediacc/ssh"
)

// A run of unknown origin. Every attempt runs under a marker named by its
// run id (the task id and the attempt's History position, runIDFor); only
// the worker that starts the attempt, or a worker that holds the task and
// settles it, ever creates that marker. When the machine already holds
// the marker as the attempt starts and this worker still holds the task,
// no worker of this store wrote it: it was planted, or left by a copy of
// unknown origin (a store restored from a backup, another store sharing the
// machine and the task id). The command does not run (the marker keeps
// the run from starting: at most one copy under a run id); the attempt is
// recorded at once with ErrorKindRunTaken, and the task waits until a
// worker settles that marker like any copy of unknown fate (stops what it
// names, or learns it ended), then runs again under a new run id. The
// marker's exit status, if it holds one, is never taken as the task's
// result: the task did not write it.

// ErrRunTaken: the machine already held the marker of an attempt's run id
// when the attempt started, and no worker holding the task wrote it (a
// planted marker, or a copy of unknown origin); the command did not run.
// Errors of kind ErrorKindRunTaken match it, and ErrFateUnknown too (the
// task waits until that marker is settled).
var ErrRunTaken = rssh.ErrRunTaken

// ErrorKindRunTaken: the attempt did not run because its machine already
// held its run id's marker, which no worker holding the task wrote
// (ErrRunTaken); the task waits until that marker is settled, then runs
// again under a new run id.
const ErrorKindRunTaken ErrorKind = "run_taken"

// foreignRunError is the error of attempt n, whose run id runID the
// machine already held a marker for (cause wraps rssh.ErrRunTaken) while
// this worker still held the task.
func foreignRunError(runID string, n int, machine string, cause error) error {
	return fmt.Errorf("%w: machine %s already held a marker for run %s when attempt %d started, and no worker holding the task wrote it "+
		"(planted, or left by a copy of unknown origin such as a store restored from a backup): the command did not run; "+
		"the task waits until that marker is settled, then runs again under a new run id (%v)", ErrRunTaken, machine, runID, n, trimErr(cause))
}

// foreignSettled is the error recorded when a worker settled the marker of
// unknown origin for attempt n (run runID) with fate: the command of
// attempt n never ran under it; the marker's own exit status is not the
// task's. kind says how the task goes on: interrupted (the copy was
// stopped, or never was) or lost (a copy ended there and whether it was
// this task's cannot be learned: the task runs again, at-least-once).
func foreignSettled(runID string, n int, fate rssh.Fate) (error, failureKind) {
	what := fmt.Sprintf("attempt %d did not run: the marker of unknown origin for run %s", n, runID)
	switch fate.State {
	case rssh.FateExited:
		return fmt.Errorf("%w: %s says a copy exited with status %d, which is not taken as this task's result: whether a copy of this task ran under it cannot be learned, so the task runs again under a new run id",
			ErrFateUnknown, what, fate.ExitCode), kindLost
	case rssh.FateStopped:
		return fmt.Errorf("%w: %s named a process group that was still running: it was stopped on the machine (TERM, then KILL; confirmed gone) and may have run partly; the task runs again under a new run id",
			ErrShutdown, what), kindInterrupted
	case rssh.FateGone:
		return fmt.Errorf("%w: %s names no running copy (%s): whether a copy of this task ran under it cannot be learned, so the task runs again under a new run id",
			ErrFateUnknown, what, fate.Detail), kindLost
	}
	return fmt.Errorf("%w: %s (%s); the task runs again under a new run id", ErrShutdown, what, fate.Detail), kindInterrupted
}

// isRunTaken reports whether err says a run's marker existed already.
func isRunTaken(err error) bool { return errors.Is(err, rssh.ErrRunTaken) }
