package rediacc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
	rssh "github.com/rediacc/rediacc/ssh"
)

// The execution guarantee (DESIGN.md "Guarantees", README "How it
// behaves"): at most one copy of a task runs at a time; a result the worker
// holds is never dropped and never causes a re-run; at-least-once only when
// a previous copy's fate cannot be learned — and then the task says so.
//
//   - Every attempt runs with a marker on its machine (ssh Command.RunID:
//     the task id and the attempt's History position), which records its
//     process group and, when it ends, its exit status. The store knows the
//     run id from Start and the process group from the next heartbeat
//     (SetAttemptRemote) or the Finish.
//   - A task taken back from a lost worker (Rescue), or whose connection
//     was lost with the machine out of reach, has its attempt recorded as
//     OutcomeUnknown, and the store refuses to start it again (ErrUnsettled)
//     until a worker settles that attempt: settle asks the machine
//     (Pool.Settle) and records what it learns — the exit status (the result
//     counts, no re-run), or that the copy was stopped (TERM, KILL, seen
//     gone) or never started (then it runs again, interrupted), or that it
//     ended without saying how (OutcomeLost: it runs again, at-least-once).
//     While the machine cannot be reached the task stays PENDING with a
//     wait reason (WaitEarlierCopy) and is checked again later; a cancel
//     waits for the same.
//   - A result that cannot be recorded (the store fails) stays with the
//     worker, in memory and in the spool (spool.go), and is retried with
//     backoff while the lease is renewed; the worker never rescues a task
//     it holds, and a worker starting on the same data dir records the
//     spooled results of a gone worker before rescuing anything.

// Delays between checks of a machine that could not tell what became of a
// task's earlier copy: a quarter of the time since the copy was lost,
// between these bounds.
const (
	settleRecheckMin = 2 * time.Second
	settleRecheckMax = time.Minute
)

// longestRunID is as long as any run id runIDFor makes (a UUID, a dot and
// six digits), for the submit-time size check of the command line.
const longestRunID = "00000000-0000-0000-0000-000000000000.999999"

// runIDFor names the marker of the attempt Start will append to rec.
func runIDFor(rec store.Task) string { return rec.ID + "." + strconv.Itoa(len(rec.History)+1) }

// unsettled returns the 1-based History position of rec's last attempt of
// unknown outcome, or 0.
func unsettled(rec store.Task) int {
	for i := len(rec.History) - 1; i >= 0; i-- {
		if rec.History[i].Outcome == store.OutcomeUnknown {
			return i + 1
		}
	}
	return 0
}

// earlierCopyWait explains a PENDING task with an attempt of unknown fate
// (wait.go's WaitEarlierCopy); ok is false for other tasks.
func earlierCopyWait(r store.Task, clock func(time.Time) string) (w WaitReason, ok bool) {
	n := unsettled(r)
	if r.Status != store.Pending || n == 0 {
		return WaitReason{}, false
	}
	a := r.History[n-1]
	what := "waiting"
	if r.CancelRequested {
		what = "cancel requested; waiting"
	}
	msg := fmt.Sprintf("%s for machine %s to confirm that attempt %d's copy has stopped (its fate is unknown: %s): it waits until a worker reaches the machine and learns how that copy ended",
		what, r.Machine, a.Number, clipLine(a.Error, 200))
	if ErrorKind(a.ErrorKind) == ErrorKindRunTaken { // runtaken.go
		msg = fmt.Sprintf("%s for a worker to settle the marker of unknown origin that machine %s held for attempt %d's run id %s (the attempt did not run): it waits until a worker reaches the machine, stops what the marker names or learns it ended, then runs under a new run id",
			what, r.Machine, a.Number, a.RunID)
	}
	if r.ReadyAt.After(a.EndedAt) {
		msg += "; next check at " + clock(r.ReadyAt)
	} else {
		msg += "; next check when a worker is free"
	}
	return WaitReason{Code: WaitEarlierCopy, Message: msg, Until: r.ReadyAt}, true
}

// settleRecheck is when to ask the machine again about a copy lost at
// `lost`.
func settleRecheck(now, lost time.Time) time.Time {
	return now.Add(min(max(now.Sub(lost)/4, settleRecheckMin), settleRecheckMax))
}

// settle learns, on the machine, the fate of rec's attempt at History
// position n (OutcomeUnknown) and records it; the task then runs again,
// or finishes with the copy's own result, or waits when the machine cannot
// tell. The task is ASSIGNED to this worker; every path ends its lease.
func (c *Client) settle(ctx context.Context, rec store.Task, t *Task, n int) {
	prev := rec.History[n-1]
	log := c.taskLog(t, prev.Number).With(slog.String("run_id", prev.RunID))
	var (
		fate rssh.Fate
		err  error
	)
	maintenance := maintenanceOf(rec) != nil
	switch {
	case maintenance:
		// A maintenance job (key rotation) runs inside its worker, in
		// steps that each leave the machine in a known state: nothing of
		// it outlives the worker, and the next attempt resumes it. A
		// worker only presumed lost still holds the key's rotation lock
		// (rotation.go), so the two never overlap.
		fate = rssh.Fate{State: rssh.FateStopped, Detail: "a maintenance job runs inside its worker"}
	case prev.RunID == "":
		fate = rssh.Fate{State: rssh.FateGone, Detail: "the attempt kept no marker on the machine (started by an older worker)"}
	default:
		var m Machine
		if m, err = c.copyMachine(ctx, rec); err == nil {
			var target rssh.Target
			if target, err = c.machineTarget(ctx, m); err == nil {
				fate, err = c.pool.Settle(ctx, target, prev.RunID, remoteOf(prev))
			}
		}
	}
	now := c.clock.Now().UTC()
	if err != nil {
		c.settleLater(ctx, rec, t, n, err, now, log)
		return
	}
	// Entries the worker wrote after losing its connection count like the
	// connection failure they were (the retry policy decides); entries of a
	// lost worker (Rescue) do not.
	connLoss := ErrorKind(prev.ErrorKind) == ErrorKindFateUnknown
	foreign := ErrorKind(prev.ErrorKind) == ErrorKindRunTaken // runtaken.go: a marker no worker of ours wrote
	a := prev
	a.Error, a.ErrorKind, a.Outcome = "", "", ""
	if fate.Remote.PGID > 0 {
		a.PGID, a.RemoteID = fate.Remote.PGID, remoteID(fate.Remote)
	}
	details := map[string]string{"attempt": strconv.Itoa(prev.Number), "fate": string(fate.State), "run_id": prev.RunID}
	if a.PGID > 0 {
		details["pgid"] = strconv.Itoa(a.PGID)
	}
	if foreign {
		details["origin"] = "unknown: the marker was on the machine before the attempt started"
	}
	c.appendAudit(ctx, c.taskEvent(rec, "task.settle", details))
	lostBy := fmt.Sprintf("its worker %s was lost", prev.Worker)
	if connLoss {
		lostBy = "its connection was lost"
	}
	switch {
	case foreign:
		runErr, kind := foreignSettled(prev.RunID, prev.Number, fate)
		a.PGID, a.RemoteID = prev.PGID, prev.RemoteID // the marker's process was not this attempt's
		log.InfoContext(ctx, "marker of unknown origin settled", "fate", string(fate.State), "detail", fate.Detail)
		c.finishWith(ctx, rec, t, prev.Number, a, nil, runErr, kind, nil, n)
	case fate.State == rssh.FateExited:
		log.InfoContext(ctx, "earlier copy had finished: recording its result", "exit_code", fate.ExitCode)
		code := fate.ExitCode
		a.ExitCode, a.Recovered = &code, true
		var runErr error
		kind := kindSuccess
		switch {
		case code == 141:
			// SIGPIPE: it died writing output nobody read any more.
			a.ExitCode, a.Recovered = nil, false
			runErr = fmt.Errorf("%w: attempt %d died writing output after %s (exit 141, SIGPIPE); it ran partly", ErrShutdown, prev.Number, lostBy)
			kind = kindInterrupted
			if connLoss {
				runErr = fmt.Errorf("%w: attempt %d died writing output after %s (exit 141, SIGPIPE)", ErrConnect, prev.Number, lostBy)
				kind = kindConnection
			}
		case code != 0:
			runErr = fmt.Errorf("attempt %d exited with status %d (read from the machine after %s; output not kept): %w",
				prev.Number, code, lostBy, &ExitError{Code: code, Machine: t.Machine})
			kind = kindExit
		}
		c.finishWith(ctx, rec, t, prev.Number, a, nil, runErr, kind, nil, n)
	case fate.State == rssh.FateStopped, fate.State == rssh.FateNotStarted, fate.State == rssh.FateGone:
		var runErr error
		kind := kindInterrupted
		switch fate.State {
		case rssh.FateStopped:
			runErr = fmt.Errorf("%w: attempt %d was still running after %s: stopped on the machine (TERM, then KILL; confirmed gone); it may have run partly", ErrShutdown, prev.Number, lostBy)
			if maintenance {
				runErr = fmt.Errorf("%w: attempt %d (%s, run inside its worker) stopped when %s; the next attempt resumes it", ErrShutdown, prev.Number, t.Kind, lostBy)
			}
		case rssh.FateNotStarted:
			runErr = fmt.Errorf("%w: attempt %d never started on the machine (%s before it did)", ErrShutdown, prev.Number, lostBy)
		default:
			runErr = fmt.Errorf("%w: attempt %d ended on the machine without recording how (%s) after %s: whether it completed cannot be learned, so the task runs again", ErrFateUnknown, prev.Number, fate.Detail, lostBy)
			kind = kindLost
		}
		if connLoss {
			runErr = fmt.Errorf("%w: %w", ErrConnect, runErr)
			if kind == kindInterrupted {
				kind = kindConnection
			}
		}
		log.InfoContext(ctx, "earlier copy settled", "fate", string(fate.State), "detail", fate.Detail)
		c.finishWith(ctx, rec, t, prev.Number, a, nil, runErr, kind, nil, n)
	default:
		c.settleLater(ctx, rec, t, n, fmt.Errorf("unexpected fate %q", fate.State), now, log)
	}
	c.notify()
}

// copyMachine returns the machine rec's earlier copies ran on, by id: the
// same host even if the machine was renamed or moved to another team since.
// (A machine with unfinished tasks cannot be removed.)
func (c *Client) copyMachine(ctx context.Context, rec store.Task) (Machine, error) {
	r, err := c.engine.GetMachine(ctx, rec.MachineID)
	if err != nil {
		return Machine{}, fmt.Errorf("machine %s (id %s): %w", rec.Machine, rec.MachineID, mapStoreErr(err))
	}
	return machineFromRecord(r)
}

// settleLater puts a task whose earlier copy could not be settled back to
// PENDING, its attempt still unknown with why, to be checked again later.
func (c *Client) settleLater(ctx context.Context, rec store.Task, t *Task, n int, cause error, now time.Time, log *slog.Logger) {
	prev := rec.History[n-1]
	a := prev
	a.Error = trimErr(fmt.Errorf("%s; the machine cannot tell yet: %v", firstClause(prev.Error), cause))
	f := store.Finish{ID: rec.ID, Owner: c.id, At: now, Settles: n, Attempt: a,
		Next: store.Pending, ReadyAt: settleRecheck(now, prev.EndedAt)}
	keepResult(&f, rec)
	log.WarnContext(ctx, "earlier copy's fate unknown: the task waits", "error", cause, "next_check", f.ReadyAt)
	ev := c.taskEvent(rec, "task.wait", map[string]string{"attempt": strconv.Itoa(prev.Number),
		"reason": "earlier copy's fate unknown", "next_check": f.ReadyAt.Format(time.RFC3339Nano)})
	if _, err := c.engine.Finish(store.WithAudit(ctx, ev), f); err != nil {
		log.ErrorContext(ctx, "recording the wait failed", "error", err)
	}
}

// firstClause keeps the first part of an unknown attempt's error (the
// rescue reason), dropping what a previous settleLater appended.
func firstClause(s string) string {
	for i := 0; i+1 < len(s); i++ {
		if s[i] == ';' && s[i+1] == ' ' {
			return s[:i]
		}
	}
	return s
}

// keepResult makes f leave the task's last result as it is.
func keepResult(f *store.Finish, rec store.Task) {
	f.ExitCode, f.Stdout, f.Stderr = rec.ExitCode, rec.Stdout, rec.Stderr
	f.StdoutTruncated, f.StderrTruncated = rec.StdoutTruncated, rec.StderrTruncated
	f.Error, f.ErrorKind = rec.Error, rec.ErrorKind
}

// retryableStoreErr reports whether recording may succeed later (the store
// is down or full), as opposed to a refusal that will not change.
func retryableStoreErr(err error) bool {
	for _, permanent := range []error{store.ErrLeaseLost, store.ErrNotFound, store.ErrInvalidArgument,
		store.ErrUnsettled, store.ErrDuplicateAttempt, store.ErrClosed} {
		if errors.Is(err, permanent) {
			return false
		}
	}
	return true
}

// finishCtx is the context of a Finish: its audit records and, when the
// attempt fails the task with an alert, the alert, stored in the Finish's
// transaction (the outbox, outbox.go) so that it exists exactly when the
// FAILED state does. res receives the stored alert's id (or that the rate
// limit held it back).
func (c *Client) finishCtx(base context.Context, events []audit.Record, alert *Alert, res *store.AlertResult, log *slog.Logger) context.Context {
	ctx := store.WithAudit(base, events...)
	if alert == nil {
		return ctx
	}
	req, err := c.alertRequest(*alert, res)
	if err != nil {
		log.ErrorContext(base, "alert not stored", "error", err)
		return ctx
	}
	return store.WithAlerts(ctx, req)
}

// errResultKept: the result could not be recorded before the worker shut
// down; it stays in the spool (or, without one, is lost from memory: the
// machine's marker still has the exit status).
var errResultKept = errors.New("result kept for a later worker")

// record records f; when the store fails, the result is kept (memory and
// spool) and recording is retried with backoff until it succeeds, the
// store refuses it for good, or the worker shuts down. The task stays in
// the running set meanwhile, so its lease is renewed and never rescued by
// this worker.
func (c *Client) record(ctx context.Context, f store.Finish, events []audit.Record, alert *Alert, res *store.AlertResult, log *slog.Logger) (store.Task, error) {
	bg := context.WithoutCancel(ctx)
	done, err := c.engine.Finish(c.finishCtx(bg, events, alert, res, log), f)
	if err == nil || !retryableStoreErr(err) {
		return done, err
	}
	e := &spooled{Owner: f.Owner, TaskID: f.ID, RunID: f.Attempt.RunID, Finish: f, Events: events, Alert: alert,
		SpooledAt: c.clock.Now().UTC()}
	if serr := c.spool.put(e); serr != nil {
		log.ErrorContext(bg, "recording the attempt failed; result kept in memory only (the spool cannot be written either), retrying",
			"error", err, "spool_error", serr)
	} else {
		log.ErrorContext(bg, "recording the attempt failed; result kept in the spool, retrying", "error", err, "spooled", e.onDisk)
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = 200*time.Millisecond, 5*time.Second, 0
	b.Reset()
	stop := ctx.Done()
	tries := 1
	for {
		timer := time.NewTimer(b.NextBackOff())
		select {
		case <-timer.C:
		case <-stop:
			timer.Stop()
			if !errors.Is(context.Cause(ctx), ErrShutdown) {
				stop = nil // cancelled or lease lost: the store will say so
				continue
			}
			if !e.onDisk {
				_ = c.spool.put(e)
			}
			log.ErrorContext(bg, "worker stopping with an unrecorded result", "spooled", e.onDisk, "spool", c.spool.dir)
			return store.Task{}, errResultKept
		}
		if !e.onDisk {
			_ = c.spool.put(e)
		}
		tries++
		done, err = c.engine.Finish(c.finishCtx(bg, events, alert, res, log), f)
		switch {
		case err == nil:
			c.spool.remove(e)
			log.InfoContext(bg, "kept result recorded", "tries", tries)
			return done, nil
		case errors.Is(err, store.ErrClosed):
			return store.Task{}, errResultKept
		case !retryableStoreErr(err):
			c.spool.remove(e)
			return done, err
		}
	}
}

// adoptSpooled records the results a gone worker left in the spool, before
// any rescue could run their tasks again. Those the store still refuses are
// kept and tried again on the next round.
func (c *Client) adoptSpooled(ctx context.Context, log *slog.Logger) {
	es, errs := c.spool.orphans()
	for _, err := range errs {
		log.ErrorContext(ctx, "spooled result unreadable", "error", err)
	}
	c.spool.mu.Lock()
	for _, e := range c.spool.held {
		if e.Owner != c.id && !containsSpooled(es, e) {
			es = append(es, e) // adopted earlier, not recorded yet
		}
	}
	c.spool.mu.Unlock()
	for _, e := range es {
		lg := log.With(slog.String("task_id", e.TaskID), slog.String("run_id", e.RunID), slog.String("dead_worker", e.Owner))
		var alertRes store.AlertResult
		done, err := c.engine.Finish(c.finishCtx(ctx, e.Events, e.Alert, &alertRes, lg), e.Finish)
		switch {
		case err == nil:
			c.spool.remove(e)
			lg.InfoContext(ctx, "spooled result of a gone worker recorded", "status", string(done.Status))
			if done.Status.Terminal() {
				c.archiveFinished(ctx, done)
			}
			if e.Alert != nil && done.Status == store.Failed && alertRes.ID != "" {
				c.alertStored(e.Alert.Kind, alertRes) // stored with the FAILED state (outbox.go)
			}
			c.notify()
		case retryableStoreErr(err):
			lg.WarnContext(ctx, "spooled result not recorded yet", "error", err)
		default:
			c.spool.remove(e)
			lg.WarnContext(ctx, "spooled result dropped: the store refuses it (the task was taken back or is gone)", "error", err)
		}
	}
}

func containsSpooled(es []*spooled, e *spooled) bool {
	for _, x := range es {
		if x == e {
			return true
		}
	}
	return false
}

// held lists what this worker holds, for RescueRequest.Held: its running
// tasks (results being recorded included) and adopted spooled results.
func (c *Client) held() []store.Hold {
	hs := c.spool.holds()
	c.mu.Lock()
	for id := range c.running {
		hs = append(hs, store.Hold{ID: id, Owner: c.id})
	}
	c.mu.Unlock()
	return hs
}

// noteRemote remembers where a running attempt's process is, for the next
// heartbeat to record (SetAttemptRemote).
func (c *Client) noteRemote(taskID, runID string, r rssh.Remote) {
	c.mu.Lock()
	c.remotes[taskID] = store.AttemptRemote{TaskID: taskID, RunID: runID, PGID: r.PGID, RemoteID: remoteID(r)}
	c.mu.Unlock()
}

// flushRemotes records the remote processes noted since the last
// heartbeat, in one write.
func (c *Client) flushRemotes(ctx context.Context, log *slog.Logger) {
	c.mu.Lock()
	rs := make([]store.AttemptRemote, 0, len(c.remotes))
	for id, r := range c.remotes {
		if _, running := c.running[id]; running {
			rs = append(rs, r)
		}
		delete(c.remotes, id)
	}
	c.mu.Unlock()
	if len(rs) == 0 {
		return
	}
	if _, err := c.engine.SetAttemptRemote(ctx, c.id, rs); err != nil {
		log.WarnContext(ctx, "recording remote process ids failed (the machines' markers still have them)", "error", err)
	}
}
