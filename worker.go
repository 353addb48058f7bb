package rediacc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/redact"
	"github.com/rediacc/rediacc/internal/store"
	rssh "github.com/rediacc/rediacc/ssh"
)

// errLeaseLost ends an attempt whose task another worker took back.
var errLeaseLost = errors.New("lease lost: the task was taken back by another worker")

// ErrWorkerRunning is returned by Run when this Client already runs a worker.
var ErrWorkerRunning = errors.New("rediacc: this client already runs a worker")

// Run works as a worker until ctx ends: it rescues the tasks of dead
// workers, claims ready tasks in scheduling order (see EffectivePriority)
// within Config.Concurrency and Config.PerMachineLimit, runs them over SSH,
// retries or fails them per their RetryPolicy and calls the Alerter.
//
// When ctx ends, running tasks get Config.ShutdownGrace to finish; the rest
// are interrupted (their remote commands ended) and requeued without using
// up an attempt. Run then returns nil. Errors: ErrWorkerRunning, ErrClosed.
func (c *Client) Run(ctx context.Context) error { return c.run(ctx, false) }

// RunUntilEmpty works like Run but returns nil as soon as no task is
// PENDING (including tasks waiting out a retry delay), ASSIGNED or
// PROCESSING, or ctx.Err() when ctx ends first. When nothing runs (here or
// elsewhere) and every task left is held with no end by time alone for
// this worker (another team's, or a gate with no end), it stops with a
// *HeldError (errors.Is ErrTasksHeld) naming them and why, instead of
// waiting forever. While a held task frees by time alone (a retry delay,
// the end of a busy machine's gate), it waits, and logs why at INFO.
// Before it returns, the alerts due at this client's alert endpoints are
// delivered (an endpoint that is down keeps them stored: it does not hold
// the return).
func (c *Client) RunUntilEmpty(ctx context.Context) error { return c.run(ctx, true) }

func (c *Client) run(ctx context.Context, untilEmpty bool) error {
	o, _, err := c.authorizeAny(ctx, authz.TaskRun, scope{}, audit.EntityTask)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	if c.runCount > 0 {
		c.mu.Unlock()
		return ErrWorkerRunning
	}
	c.runCount++
	// Close stops a running worker (as a cancelled ctx would) and waits.
	ctx, stopRun := context.WithCancel(ctx)
	runDone := make(chan struct{})
	c.runStop, c.runDone = stopRun, runDone
	c.mu.Unlock()
	defer func() {
		stopRun()
		c.mu.Lock()
		c.runCount--
		c.runStop, c.runDone = nil, nil
		c.mu.Unlock()
		close(runDone)
	}()

	// Task contexts outlive ctx by ShutdownGrace: they are cancelled by
	// their own cause functions.
	base := context.WithoutCancel(ctx)
	c.workerActor = o.actor
	var wg sync.WaitGroup
	done := make(chan struct{}, 1) // a finished task wakes the loop
	log := c.log.With(slog.String("worker", c.id))
	log.InfoContext(ctx, "worker started", "concurrency", c.cfg.Concurrency, "per_machine_limit", c.cfg.PerMachineLimit)

	liveWorkers.Store(c.id, struct{}{})
	defer liveWorkers.Delete(c.id)
	c.beatWorker(ctx, log) // the workers registry of a shared store (cluster.go)
	defer c.unregisterWorker(ctx)
	c.adoptSpooled(ctx, log) // results a gone worker kept, before any rescue (execution.go)
	if c.leads(ctx, log) {
		c.rescue(ctx, log)
	}
	c.dispatcher()                                  // delivers the alert outbox until Close (outbox.go)
	stopProber := c.startProber(ctx, o.actor, log)  // health probes (health.go)
	stopKeys := c.startKeyPolicy(ctx, o.actor, log) // key ages (maintenance.go)
	// Heartbeats renew leases and pick up cancellations asked from other
	// processes: at least every second, so a cancel takes effect quickly.
	heartbeat := time.NewTicker(c.heartbeatInterval())
	defer heartbeat.Stop()
	rescueEvery := c.cfg.LeaseDuration / 2
	if c.clusterEngine() != nil {
		// One leader rescues for all: within a lease and one heartbeat.
		rescueEvery = min(rescueEvery, c.heartbeatInterval())
	}
	rescue := time.NewTicker(rescueEvery)
	defer rescue.Stop()
	wakeups := c.wakeups()                  // other processes' submits (LISTEN/NOTIFY; nil: none)
	rules, stopRules := c.alertRuleTicker() // threshold alerts (alert.go)
	defer stopRules()
	checkpoints, stopCheckpoints := c.checkpointTicker() // audit checkpoints (auditkey.go)
	defer stopCheckpoints()
	var result error

loop:
	for ctx.Err() == nil {
		nextFire := c.fireDue(ctx, log) // schedules (schedule_fire.go)
		c.mu.Lock()
		free := c.cfg.Concurrency - len(c.running)
		c.mu.Unlock()
		claimedAny := false
		if free > 0 {
			tasks, err := c.claim(ctx, o.actor, free)
			if err != nil && ctx.Err() == nil {
				log.ErrorContext(ctx, "claim failed", "error", err)
			}
			for _, t := range tasks {
				claimedAny = true
				tctx, cancel := context.WithCancelCause(base)
				slot := &runSlot{cancel: cancel}
				c.mu.Lock()
				c.running[t.ID] = slot
				c.mu.Unlock()
				wg.Add(1)
				go func(t store.Task) {
					defer wg.Done()
					defer func() {
						select {
						case done <- struct{}{}:
						default: // a wake-up is already pending
						}
					}()
					c.execute(tctx, t)
					cancel(nil)
					c.hookAttempt(t.ID, "executed")
					c.mu.Lock()
					if c.running[t.ID] == slot {
						// Not when the task was claimed again meanwhile (its
						// outcome, recorded, made it PENDING at once): the
						// entry is then the next attempt's, which a cancel
						// and the heartbeats must still reach.
						delete(c.running, t.ID)
					}
					c.mu.Unlock()
					c.hookAttempt(t.ID, "released")
					c.notify()
				}(t)
			}
		}
		if claimedAny {
			continue
		}
		var heldUntil time.Time // RunUntilEmpty: when a held task frees by time alone
		if untilEmpty {
			stop, err := c.idleUntilEmpty(ctx, o.actor, log, &heldUntil) // wait.go
			if stop {
				result = err
				break loop
			}
		}
		wait := c.cfg.PollInterval
		if d := heldUntil.Sub(c.clock.Now()); !heldUntil.IsZero() && d < wait {
			wait = max(d, time.Millisecond)
		}
		// With every slot taken, no task can be claimed before one ends
		// (which wakes the loop: done), so the next ready time is not read.
		if free > 0 {
			if next, ok, err := c.engine.NextReady(ctx); err == nil && ok {
				// A task ready now that the claim left (its machine is full,
				// or another team's) must not make the loop spin: only a
				// future ReadyAt shortens the wait.
				if d := next.Sub(c.clock.Now()); d > 0 && d < wait {
					wait = max(d, time.Millisecond)
				}
			}
		}
		if d := nextFire.Sub(c.clock.Now()); !nextFire.IsZero() && d > 0 && d < wait {
			wait = max(d, time.Millisecond)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-c.wake:
		case <-wakeups:
		case <-done:
		case <-timer.C:
		case <-heartbeat.C:
			c.heartbeat(base, log)
			c.beatWorker(ctx, log)
		case <-rescue.C:
			c.adoptSpooled(ctx, log)
			if c.leads(ctx, log) {
				c.rescue(ctx, log)
			}
		case <-rules:
			if c.leads(ctx, log) {
				c.checkAlertRules(ctx, log)
			}
		case <-checkpoints:
			c.checkpointQuietly(ctx, "periodic")
		}
		timer.Stop()
	}
	if untilEmpty && ctx.Err() != nil && result == nil {
		result = ctx.Err()
	}
	c.shutdown(base, &wg, log)
	c.flushArchive() // the finished tasks' archive copies (archive.go)
	c.checkpointQuietly(base, "worker.stop")
	stopProber()
	stopKeys()
	log.InfoContext(base, "worker stopped")
	return result
}

// runSlot is a claimed task's entry in Client.running: the cancel of its
// attempt's context. Each claim has its own slot, so the goroutine ending
// one attempt removes only its own entry, never that of the task's next
// attempt, claimed again as soon as the first recorded its outcome.
type runSlot struct {
	cancel context.CancelCauseFunc
}

// hookAttempt calls the test hook attemptHook, when set.
func (c *Client) hookAttempt(taskID, step string) {
	if c.attemptHook != nil {
		c.attemptHook(taskID, step)
	}
}

// heartbeatInterval is how often a worker renews its leases: a third of
// the lease, and at least every second, so that a cancel asked from another
// process takes effect quickly.
func (c *Client) heartbeatInterval() time.Duration {
	return min(c.cfg.LeaseDuration/3, max(2*c.cfg.PollInterval, time.Second))
}

// shutdown lets running tasks finish for ShutdownGrace, then interrupts them.
func (c *Client) shutdown(ctx context.Context, wg *sync.WaitGroup, log *slog.Logger) {
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	if c.cfg.ShutdownGrace > 0 {
		hb := time.NewTicker(c.cfg.LeaseDuration / 3)
		grace := time.NewTimer(c.cfg.ShutdownGrace)
	wait:
		for {
			select {
			case <-finished:
				hb.Stop()
				grace.Stop()
				return
			case <-hb.C:
				c.heartbeat(ctx, log)
			case <-grace.C:
				break wait
			}
		}
		hb.Stop()
	}
	c.mu.Lock()
	n := len(c.running)
	for _, s := range c.running {
		s.cancel(ErrShutdown)
	}
	c.mu.Unlock()
	if n > 0 {
		log.InfoContext(ctx, "interrupting running tasks for shutdown", "tasks", n)
	}
	<-finished
}

// claim takes up to n ready tasks of the machines (ids) whose team lets
// actor run tasks (re-read each time: roles and machines change).
func (c *Client) claim(ctx context.Context, actor string, n int) ([]store.Task, error) {
	g, err := c.grants(ctx, actor)
	if err != nil {
		return nil, err
	}
	var machines []string
	if teams, all := visibleTeams(g, authz.TaskRun); !all {
		ms, err := c.engine.ListMachines(ctx, store.MachineFilter{TeamIDs: teams})
		if err != nil {
			return nil, err
		}
		machines = []string{}
		for _, m := range ms {
			machines = append(machines, m.ID)
		}
		if len(machines) == 0 {
			return nil, nil
		}
	}
	now := c.clock.Now().UTC()
	aging := c.cfg.AgingInterval
	if aging < 0 {
		aging = 0
	}
	tasks, err := c.engine.Claim(ctx, store.ClaimRequest{
		Owner: c.id, Now: now, LeaseUntil: now.Add(c.cfg.LeaseDuration), Max: n,
		PerMachine: c.cfg.PerMachineLimit, ReserveCritical: !c.cfg.NoCriticalReserve,
		Aging: aging, Machines: machines,
		BusyMachines: c.busyMachines(ctx), MaxHold: c.maxHold(), // judged busy; the gate's end (health.go)
		Weights: c.claimWeights(ctx), // fair shares between teams, by team id (fair.go)
		// task.assign records, committed with the claim.
		Audit: func(claimed []store.Task) []audit.Record {
			recs := make([]audit.Record, 0, len(claimed))
			for _, t := range claimed {
				recs = append(recs, c.taskEvent(t, "task.assign", nil))
			}
			return recs
		},
	})
	return tasks, err
}

// taskEvent is an audit record of a task lifecycle event done by this
// worker.
func (c *Client) taskEvent(t store.Task, action string, details map[string]string) audit.Record {
	d := map[string]string{"worker": c.id, "machine": t.Machine, "machine_id": t.MachineID}
	if t.Team != t.TeamID {
		d["team_name"] = t.Team
	}
	for k, v := range details {
		d[k] = v
	}
	return audit.Record{Time: c.clock.Now().UTC(), Actor: c.workerActor, Action: action,
		EntityType: audit.EntityTask, EntityID: t.ID, Team: t.TeamID, Result: audit.ResultOK, Details: d}
}

// heartbeat renews the leases of running tasks and ends those that were
// cancelled or taken back elsewhere.
func (c *Client) heartbeat(ctx context.Context, log *slog.Logger) {
	c.mu.Lock()
	ids := make([]string, 0, len(c.running))
	for id := range c.running {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	c.flushRemotes(ctx, log) // execution.go
	hb, err := c.engine.Heartbeat(ctx, c.id, ids, c.clock.Now().UTC().Add(c.cfg.LeaseDuration))
	if err != nil {
		log.ErrorContext(ctx, "lease renewal failed", "error", err, "tasks", len(ids))
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range hb.CancelRequested {
		if s := c.running[id]; s != nil {
			s.cancel(ErrTaskCancelled)
		}
	}
	for _, id := range hb.Lost {
		if s := c.running[id]; s != nil {
			s.cancel(errLeaseLost)
		}
	}
}

// rescue takes back tasks whose worker is gone, never those this worker
// holds (execution.go).
func (c *Client) rescue(ctx context.Context, log *slog.Logger) {
	rescued, err := c.engine.Rescue(ctx, store.RescueRequest{Now: c.clock.Now().UTC(), OwnerDead: ownerDead, Held: c.held()})
	if err != nil {
		if ctx.Err() == nil {
			log.ErrorContext(ctx, "rescue failed", "error", err)
		}
		return
	}
	recs := make([]audit.Record, 0, len(rescued))
	for _, r := range rescued {
		recs = append(recs, c.taskEvent(r, "task.rescue", map[string]string{"status": string(r.Status), "dead_worker": r.RescuedFrom}))
		log.WarnContext(ctx, "task rescued from a dead worker", "task_id", r.ID, "dead_worker", r.RescuedFrom, "machine", r.Machine,
			"priority", r.Priority, "attempt", r.Attempts, "status", string(r.Status))
	}
	if len(rescued) > 0 {
		c.appendAudit(ctx, recs...)
		c.notify()
	}
}

// ownerDead reports whether a worker id ("host/pid/random") names a process
// on this host that no longer exists.
func ownerDead(owner string) bool {
	parts := strings.Split(owner, "/")
	if len(parts) != 3 {
		return false
	}
	host, _ := os.Hostname()
	pid, err := strconv.Atoi(parts[1])
	if parts[0] != host || err != nil || pid <= 0 || pid == os.Getpid() {
		return false
	}
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// execute runs one attempt of a claimed task and records its outcome. A
// task with an attempt of unknown fate is settled instead (execution.go).
func (c *Client) execute(ctx context.Context, rec store.Task) {
	bg := context.WithoutCancel(ctx)
	t, err := taskFromRecord(rec)
	attemptNo := rec.Attempts + 1
	if err != nil {
		c.log.ErrorContext(bg, "unreadable task", "task_id", rec.ID, "error", err)
		c.finish(bg, rec, nil, attemptNo, store.Attempt{}, err, kindPermanent)
		return
	}
	if n := unsettled(rec); n > 0 {
		c.settle(bg, rec, t, n)
		return
	}
	log := c.taskLog(t, attemptNo)
	started := c.clock.Now().UTC()
	attempt := store.Attempt{Number: attemptNo, Worker: c.id, StartedAt: started, RunID: runIDFor(rec)}
	ms := maintenanceOf(rec) // parsed once: it reads the whole spec
	if ms != nil {
		attempt.RunID = "" // it runs in this worker: no copy on the machine to mark
	}
	// What the claim relied on is checked again where the work starts, in
	// the start's transaction (taskstart.go): the machine is still the
	// task's team's, and this worker's actor may still run the team's tasks.
	m, err := c.startAttempt(bg, rec, attempt, c.taskEvent(rec, "task.start", map[string]string{"attempt": strconv.Itoa(attemptNo)}))
	if err != nil {
		var (
			mc      *MachineChangedError
			refused *errStartRefused
		)
		switch {
		case errors.As(err, &refused):
			log.WarnContext(bg, "task not started", "error", refused.err)
		case errors.As(err, &mc):
			log.ErrorContext(bg, "task failed without running: its machine left its team", "error", err)
			c.finish(bg, rec, t, attemptNo, store.Attempt{}, err, kindPermanent)
		default:
			log.WarnContext(bg, "task given back without running", "error", err)
			c.finish(bg, rec, t, attemptNo, store.Attempt{}, err, kindInterrupted)
		}
		return
	}
	if rec.CancelRequested {
		c.finish(bg, rec, t, attemptNo, attempt, ErrTaskCancelled, kindCancelled)
		return
	}
	log.InfoContext(bg, "attempt started")

	var (
		res    *rssh.Result
		red    *redact.Redactor
		runErr error
	)
	if ms != nil {
		res, runErr = c.runMaintenance(ctx, t, ms) // maintenance.go
	} else {
		res, red, runErr = c.runRemote(ctx, rec, t, m, attemptNo, attempt.RunID)
	}
	if runErr != nil && ctx.Err() != nil {
		runErr = fmt.Errorf("%w (%v)", context.Cause(ctx), runErr)
	}
	attempt.EndedAt = c.clock.Now().UTC()
	if res != nil {
		var exit *ExitError
		switch {
		case runErr == nil:
			attempt.ExitCode = new(int)
		case errors.As(runErr, &exit) && exit.Signal == "":
			code := exit.Code
			attempt.ExitCode = &code
		case errors.As(runErr, &exit):
			attempt.Signal = exit.Signal
		}
		attempt.PGID, attempt.RemoteID, attempt.Recovered = res.Remote.PGID, remoteID(res.Remote), res.Recovered
	}
	if errors.Is(runErr, errLeaseLost) {
		log.WarnContext(bg, "attempt abandoned: lease lost", "error", runErr)
		return
	}
	if isRunTaken(runErr) { // runtaken.go: recorded now; a lost lease makes the store refuse it
		runErr = foreignRunError(attempt.RunID, attemptNo, rec.Machine, runErr)
		log.WarnContext(bg, "attempt did not run: its run id's marker was already on the machine", "error", runErr)
	}
	kind := classify(runErr)
	c.finishWith(bg, rec, t, attemptNo, attempt, res, runErr, kind, red, 0)
}

// runRemote runs one attempt on m, the task's machine (see startAttempt).
// The task's secrets come from its own team's vault (rec.TeamID: the team
// it was queued in, which owns m). The redactor masks the task's secret
// values (nil when it has none); the result's output is already masked.
func (c *Client) runRemote(ctx context.Context, rec store.Task, t *Task, m Machine, attemptNo int, runID string) (*rssh.Result, *redact.Redactor, error) {
	secrets, err := c.resolveSecrets(ctx, teamScope(rec.TeamID, rec.Team), t.Secrets)
	if err != nil {
		return nil, nil, err
	}
	var red *redact.Redactor
	if len(secrets) > 0 {
		values := make([][]byte, 0, len(secrets))
		for _, v := range secrets {
			values = append(values, v)
		}
		red = redact.NewSecrets(values...) // each value and the forms a shell prints it in
	}
	res, err := c.runOn(ctx, m, t, attemptNo, runID, secrets, red)
	if red != nil && res != nil {
		res.Stdout = maskCapped(red, res.Stdout, res.StdoutTruncated)
		res.Stderr = maskCapped(red, res.Stderr, res.StderrTruncated)
	}
	return res, red, err
}

// maskCapped masks secrets in captured output; when the capture was cut at
// its cap, a secret's beginning left at the very end is masked too.
func maskCapped(red *redact.Redactor, b []byte, truncated bool) []byte {
	b = red.Bytes(b)
	if truncated {
		b = red.MaskPartialSuffix(b)
	}
	return b
}

func (c *Client) runOn(ctx context.Context, m Machine, t *Task, attemptNo int, runID string, secrets map[string][]byte, red *redact.Redactor) (*rssh.Result, error) {
	target, err := c.machineTargetFor(ctx, m, "task="+t.ID) // health.go; an ssh-ca machine's certificate names the task
	if err != nil {
		return nil, err
	}
	timeout := t.Timeout
	if timeout == 0 {
		timeout = c.cfg.DefaultTimeout
	}
	cmd := rssh.Command{Cmd: t.Command, Env: t.Env, Secrets: secrets, Timeout: timeout, OutputLimit: c.cfg.OutputLimit,
		RunID: runID, OnStart: func(r rssh.Remote) { c.noteRemote(t.ID, runID, r) }}
	if c.cfg.Output != nil {
		var out, errw io.Writer = liveWriter{f: c.cfg.Output, id: t.ID, attempt: attemptNo, stream: "stdout"},
			liveWriter{f: c.cfg.Output, id: t.ID, attempt: attemptNo, stream: "stderr"}
		if red != nil {
			o, e := red.NewWriter(out), red.NewWriter(errw)
			defer o.Close()
			defer e.Close()
			out, errw = o, e
		}
		cmd.Stdout, cmd.Stderr = out, errw
	}
	if c.runCmd != nil {
		return c.runCmd(ctx, target, cmd)
	}
	return c.pool.Run(ctx, target, cmd)
}

func (c *Client) finish(ctx context.Context, rec store.Task, t *Task, attemptNo int, attempt store.Attempt, err error, kind failureKind) {
	if attempt.EndedAt.IsZero() && !attempt.StartedAt.IsZero() {
		attempt.EndedAt = c.clock.Now().UTC()
	}
	c.finishWith(ctx, rec, t, attemptNo, attempt, nil, err, kind, nil, 0)
}

// finishWith decides the task's next state from the attempt's outcome and
// records it (keeping the result when the store fails, execution.go).
// settles > 0 records the settling of the unknown attempt at that History
// position instead of closing an open one.
func (c *Client) finishWith(ctx context.Context, rec store.Task, t *Task, attemptNo int, attempt store.Attempt, res *rssh.Result, runErr error, kind failureKind, red *redact.Redactor, settles int) {
	now := c.clock.Now().UTC()
	f := store.Finish{ID: rec.ID, Owner: c.id, At: now, CountAttempt: true, Error: trimErr(runErr),
		ErrorKind: string(errorKindOf(runErr)), Settles: settles}
	if red != nil {
		f.Error = red.String(f.Error) // errors may quote output
	}
	if res != nil {
		f.Stdout, f.Stderr = res.Stdout, res.Stderr
		f.StdoutTruncated, f.StderrTruncated = res.StdoutTruncated, res.StderrTruncated
	}
	f.ExitCode = attempt.ExitCode
	attempt.Error, attempt.ErrorKind = f.Error, f.ErrorKind
	var policy RetryPolicy
	if t != nil {
		policy = t.Retry
	}
	alert := false
	switch kind {
	case kindSuccess:
		f.Next, attempt.Outcome = store.Completed, store.OutcomeSucceeded
	case kindInterrupted:
		f.Next, attempt.Outcome, f.CountAttempt, f.ReadyAt = store.Pending, store.OutcomeInterrupted, false, now
	case kindLost:
		f.Next, attempt.Outcome, f.CountAttempt, f.ReadyAt = store.Pending, store.OutcomeLost, false, now
	case kindFateUnknown:
		// The copy may still run: settled by the next claim, once the
		// machine answers.
		f.Next, attempt.Outcome, f.CountAttempt = store.Pending, store.OutcomeUnknown, false
		f.ReadyAt = settleRecheck(now, now)
	case kindCancelled:
		f.Next, attempt.Outcome = store.Cancelled, store.OutcomeCancelled
	default:
		attempt.Outcome = store.OutcomeFailed
		if kind == kindTimeout {
			attempt.Outcome = store.OutcomeTimeout
		}
		if policy.retryable(kind) && attemptNo < 1+policy.RetryCount {
			f.Next = store.Pending
			f.ReadyAt = now.Add(policy.Delay(attemptNo))
			f.EnqueuedAt = f.ReadyAt
		} else {
			f.Next = store.Failed
			alert = t != nil && t.FailureAction == FailureAlert
		}
	}
	f.Attempt = attempt
	log := c.log.With(slog.String("task_id", rec.ID), slog.String("machine", rec.Machine),
		slog.Int("priority", rec.Priority), slog.Int("attempt", attemptNo))
	details := map[string]string{"attempt": strconv.Itoa(attemptNo), "outcome": attempt.Outcome}
	if f.ExitCode != nil {
		details["exit_code"] = strconv.Itoa(*f.ExitCode)
	}
	if f.Error != "" {
		details["error"] = f.Error
	}
	events := []audit.Record{}
	switch {
	case f.Next == store.Completed:
		events = append(events, c.taskEvent(rec, "task.complete", details))
	case f.Next == store.Cancelled:
		events = append(events, c.taskEvent(rec, "task.cancelled", details))
	case kind == kindInterrupted, kind == kindLost, kind == kindFateUnknown:
		events = append(events, c.taskEvent(rec, "task.interrupt", details))
	case f.Next == store.Pending:
		events = append(events, c.taskEvent(rec, "task.attempt.failed", details),
			c.taskEvent(rec, "task.retry", map[string]string{"retry_at": f.ReadyAt.Format(time.RFC3339Nano)}))
	default:
		events = append(events, c.taskEvent(rec, "task.attempt.failed", details), c.taskEvent(rec, "task.fail", nil))
	}
	var al *Alert
	if alert {
		al = &Alert{Kind: AlertTaskFailed, // alert.go: rate limited, counted; stored with the FAILED state, in its transaction (outbox.go)
			TaskID: rec.ID, Team: rec.Team, Machine: rec.Machine, TeamID: rec.TeamID, MachineID: rec.MachineID, Priority: Priority(rec.Priority), Schedule: t.Schedule,
			Command: t.Command, Attempts: rec.Attempts + 1, ExitCode: f.ExitCode, Signal: attempt.Signal,
			Error: f.Error, ErrorKind: ErrorKind(f.ErrorKind), Time: now,
			Message: fmt.Sprintf("task %s on %s failed after %d attempt(s): %s", rec.ID, rec.Machine, rec.Attempts+1, clipLine(f.Error, 200)),
		}
	}
	var alertRes store.AlertResult
	done, err := c.record(ctx, f, events, al, &alertRes, log) // execution.go: kept and retried when the store fails
	if err != nil {
		switch {
		case errors.Is(err, store.ErrLeaseLost):
			log.WarnContext(ctx, "result discarded: the task was taken back by another worker", "outcome", attempt.Outcome)
		case errors.Is(err, errResultKept):
		default:
			log.ErrorContext(ctx, "recording the attempt failed", "error", err)
		}
		return
	}
	// The attempt's result is in the store: its marker on the machine is
	// no longer needed (removed in a batch with a later command there).
	c.pool.ReleaseRun(res)
	if done.Status.Terminal() {
		c.archiveFinished(ctx, done) // the log archive (archive.go)
	}
	c.metrics.attemptRecorded(done.Status, attempt, done.Status == store.Pending && kind != kindInterrupted) // metrics.go
	switch {
	case f.Next == store.Completed:
		log.InfoContext(ctx, "task completed", "duration", attempt.EndedAt.Sub(attempt.StartedAt))
	case f.Next == store.Pending && kind == kindFateUnknown:
		log.WarnContext(ctx, "attempt's fate unknown: the task waits until its machine can tell", "error", f.Error)
	case f.Next == store.Pending && (kind == kindInterrupted || kind == kindLost):
		log.InfoContext(ctx, "attempt interrupted; task requeued without using an attempt", "outcome", attempt.Outcome)
	case f.Next == store.Pending:
		log.WarnContext(ctx, "attempt failed; retrying", "error", f.Error, "retry_at", f.ReadyAt, "retries_left", policy.RetryCount+1-attemptNo)
	case f.Next == store.Cancelled:
		log.InfoContext(ctx, "task cancelled")
	default:
		log.ErrorContext(ctx, "task failed", "error", f.Error, "attempts", done.Attempts)
	}
	if al != nil && done.Status == store.Failed && alertRes.ID != "" {
		c.alertStored(AlertTaskFailed, alertRes) // counted; the dispatcher delivers it
	}
}
