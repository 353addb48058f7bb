package rediacc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/store"
)

// Firing schedules: the worker's periodic duty, TriggerSchedule, alerts
// and metrics.

// Kinds of Alert about schedules.
const (
	// AlertScheduleMissed: a schedule's fire was missed (no worker fired it
	// within its misfire threshold and the missed-run policy is skip) or
	// skipped (the previous run was unfinished under OverlapSkip).
	// Schedule and Team name it; Message says which fires and why.
	AlertScheduleMissed = "schedule.missed"
	// AlertScheduleFailed: a schedule's fire could not submit its task:
	// the owner no longer holds the role, the machine left the team, no
	// machine is eligible. Error says why. (A submitted task that fails
	// raises AlertTaskFailed, with Schedule set.)
	AlertScheduleFailed = "schedule.failed"
)

// scheduleState is a client's view of the schedules (Client.sched).
type scheduleState struct {
	mu      sync.Mutex
	checked time.Time // system clock: the last look at the due schedules
	next    time.Time // queue clock: the earliest next fire seen then

	fires *prometheus.CounterVec // outcome
}

func newScheduleFires() *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rediacc_schedule_fires_total",
		Help: "Schedule fires this process recorded, by outcome (created, skipped, missed, failed)."}, []string{"outcome"})
	for _, o := range []string{FireCreated, FireSkipped, FireMissed, FireFailed} {
		v.WithLabelValues(o)
	}
	return v
}

// scheduleChanged makes the worker look at the schedules again at once.
func (c *Client) scheduleChanged() {
	c.sched.mu.Lock()
	c.sched.checked = time.Time{}
	c.sched.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// fireDue fires the schedules that are due now, and returns the earliest
// next fire (queue clock; zero when none). The worker calls it on every
// turn of its loop; it reads the store at most every PollInterval, or
// when the next fire it knows of is due. On a store shared by hosts
// (PostgreSQL) only the elected leader fires (cluster.go); on SQLite every
// worker may, since the store records each fire once whoever tries.
func (c *Client) fireDue(ctx context.Context, log *slog.Logger) time.Time {
	sch, err := c.schedules()
	if err != nil {
		return time.Time{}
	}
	if c.clusterEngine() != nil {
		c.cstate.mu.Lock()
		leading := c.cstate.leading
		c.cstate.mu.Unlock()
		if !leading {
			return time.Time{}
		}
	}
	now := c.clock.Now().UTC()
	c.sched.mu.Lock()
	next := c.sched.next
	look := c.sched.checked.IsZero() || time.Since(c.sched.checked) >= c.cfg.PollInterval || (!next.IsZero() && !next.After(now))
	c.sched.mu.Unlock()
	if !look {
		return next
	}
	due, err := sch.ListSchedules(ctx, store.ScheduleFilter{DueBy: now})
	if err != nil {
		if ctx.Err() == nil {
			log.ErrorContext(ctx, "reading due schedules failed", "error", err)
		}
		return next
	}
	for _, r := range due {
		c.fireScheduled(ctx, sch, r, now, log)
	}
	n, ok, err := sch.NextScheduleFire(ctx)
	if err != nil || !ok {
		n = time.Time{}
	}
	c.sched.mu.Lock()
	c.sched.checked, c.sched.next = time.Now(), n
	c.sched.mu.Unlock()
	return n
}

// fireScheduled decides and records the fire of schedule r due at now: the
// on-time fire, else a catch-up (MissedRunOnce) or a missed fire. Another
// worker recording it first is not an error.
func (c *Client) fireScheduled(ctx context.Context, sch store.Schedules, r store.Schedule, now time.Time, log *slog.Logger) {
	log = log.With(slog.String("schedule", r.Name), slog.String("team", r.TeamID))
	d, err := decodeSchedule(r)
	req := store.ScheduleFire{ScheduleID: r.ID, Version: r.Version, FiredAt: now}
	var guards []store.Condition
	if err != nil { // an unreadable definition stops the schedule, loudly
		req.ScheduledAt, req.Outcome, req.Reason = r.NextFireAt, store.FireFailed, trimErr(err)
	} else {
		due := d.cron.Due(r.NextFireAt, now, d.s.MisfireThreshold)
		req.NextFireAt, req.Overlap, req.MissedFrom, req.MissedTo = due.Next, string(d.s.Overlap), due.MissedFrom, due.MissedTo
		switch {
		case !due.Fire.IsZero():
			req.ScheduledAt = due.Fire
		case !due.Missed():
			return
		case d.s.MissedRun == MissedRunOnce:
			req.ScheduledAt, req.CatchUp = due.MissedTo, true
		default:
			req.ScheduledAt, req.Outcome = due.MissedTo, store.FireMissed
		}
		if due.Missed() {
			req.Reason = missedReason(d, due.MissedFrom, due.MissedTo)
		}
		if req.Outcome == "" {
			tasks, conds, err := c.fireTasks(ctx, actingAs(ctx, r.Owner), d, r, req.ScheduledAt, now)
			if err != nil {
				req.Outcome, req.Reason = store.FireFailed, trimErr(err)
			} else {
				req.Outcome, req.Tasks, guards = store.FireCreated, tasks, conds
			}
		}
	}
	details := map[string]string{"name": r.Name, "worker": c.id}
	if c.workerActor != "" {
		details["worker_actor"] = c.workerActor
	}
	req.Audit = audit.Record{Action: "schedule.fire", Actor: r.Owner, Time: now, Team: r.TeamID, Details: details}
	res, err := sch.FireSchedule(store.WithGuard(ctx, guards...), req)
	switch {
	case errors.Is(err, store.ErrScheduleChanged), errors.Is(err, store.ErrExists):
		log.DebugContext(ctx, "schedule fired by another worker", "scheduled_at", req.ScheduledAt)
		return
	case err != nil:
		if ctx.Err() == nil {
			log.ErrorContext(ctx, "recording a schedule's fire failed", "scheduled_at", req.ScheduledAt, "error", err)
		}
		return
	}
	c.afterFire(ctx, r, res, log)
}

// missedReason says which fires were missed, in the schedule's zone.
func missedReason(d scheduleDef, from, to time.Time) string {
	loc := d.cron.Location()
	span := "the fire at " + zoned(from, loc)
	if !from.Equal(to) {
		span = "the fires from " + zoned(from, loc) + " to " + zoned(to, loc)
	}
	return fmt.Sprintf("%s missed: no worker fired them within the misfire threshold of %s (missed-run policy %s)",
		span, d.s.MisfireThreshold, d.s.MissedRun)
}

// zoned formats t in loc with the zone's name: "2031-05-07 02:00 CEST
// (Europe/Paris)".
func zoned(t time.Time, loc *time.Location) string {
	return t.In(loc).Format("2006-01-02 15:04 MST") + " (" + loc.String() + ")"
}

// fireTasks builds the task records of one fire of d at now, and the
// guard conditions their write needs (the actor's role, each machine still
// in the team), authorized as the actor of actx (the owner, or
// TriggerSchedule's caller): one task, placed or on the pinned machine
// (by id: a renamed machine is still it), or one per matching machine
// (All).
func (c *Client) fireTasks(ctx, actx context.Context, d scheduleDef, r store.Schedule, scheduledAt, now time.Time) ([]store.Task, []store.Condition, error) {
	if err := c.labelSchedule(ctx, &d); err != nil {
		return nil, nil, err
	}
	auth, err := c.taskAuthHiding(actx, false)
	if err != nil {
		return nil, nil, err
	}
	if d.machineID != "" { // a pinned machine must still be in the team
		rec, err := c.engine.GetMachine(ctx, d.machineID)
		switch {
		case errors.Is(err, store.ErrNotFound), err == nil && !rec.DeletedAt.IsZero():
			return nil, nil, fmt.Errorf("%w: machine %q of the schedule is no longer registered", ErrUnknownMachine, d.s.Task.Machine)
		case err != nil:
			return nil, nil, mapStoreErr(err)
		case rec.TeamID != d.team.id:
			return nil, nil, fmt.Errorf("%w: machine %q left the schedule's team: it is in team %q, not %q", ErrInvalidTask, rec.Name, rec.Team, d.team.label())
		}
	}
	p := c.newPlacer()
	specs := []TaskSpec{d.s.Task}
	if d.s.All {
		cs, err := p.matching(ctx, d.team, d.s.Task.Selector)
		if err != nil {
			return nil, nil, err
		}
		if len(cs) == 0 {
			return nil, nil, fmt.Errorf("%w in team %q with selector %s", ErrNoEligibleMachine, d.team.label(), formatSelector(d.s.Task.Selector))
		}
		specs = specs[:0]
		for _, cd := range cs {
			ts := d.s.Task
			ts.Machine = cd.m.Name
			specs = append(specs, ts)
		}
	}
	out := make([]store.Task, 0, len(specs))
	var guards []store.Condition
	for _, s := range specs {
		pr, err := c.prepareTask(actx, s, p, auth, now)
		if err != nil {
			return nil, nil, err
		}
		if d.machineID != "" && pr.rec.MachineID != d.machineID { // its name now names another machine
			return nil, nil, fmt.Errorf("%w: machine %q of the schedule is no longer registered", ErrUnknownMachine, d.s.Task.Machine)
		}
		pr.rec.Team, pr.rec.Machine = d.team.name, pr.op.detail["machine"] // labels for the audit records (ignored on write)
		if pr.rec.Spec, err = linkSchedule(pr.rec.Spec, r, scheduledAt); err != nil {
			return nil, nil, err
		}
		out = append(out, pr.rec)
		guards = append(guards, pr.guards...)
	}
	return out, guards, nil
}

// actingAs is ctx acting as user itself (no impersonation): a schedule's
// owner when a worker fires it.
func actingAs(ctx context.Context, user string) context.Context {
	return WithImpersonation(ctx, user, "")
}

// linkSchedule adds the schedule's link to a task's stored spec.
func linkSchedule(raw []byte, r store.Schedule, scheduledAt time.Time) ([]byte, error) {
	var sj specJSON
	if err := json.Unmarshal(raw, &sj); err != nil {
		return nil, err
	}
	sj.ScheduleID, sj.ScheduleName, sj.ScheduledAt = r.ID, r.Name, scheduledAt.UTC()
	return json.Marshal(sj)
}

// afterFire logs, counts and alerts a recorded fire, and wakes the worker
// for its tasks.
func (c *Client) afterFire(ctx context.Context, r store.Schedule, res store.FireResult, log *slog.Logger) {
	f := res.Fire
	c.sched.fires.WithLabelValues(f.Outcome).Inc()
	attrs := []any{"scheduled_at", f.ScheduledAt, "outcome", f.Outcome, "lag", f.FiredAt.Sub(f.ScheduledAt)}
	if f.Manual {
		attrs = append(attrs, "manual", true)
	}
	if f.Reason != "" {
		attrs = append(attrs, "reason", f.Reason)
	}
	for _, t := range res.Cancelled {
		c.mu.Lock()
		s := c.running[t.ID]
		c.mu.Unlock()
		if s != nil {
			s.cancel(ErrTaskCancelled)
		}
	}
	a := Alert{Team: r.TeamID, TeamID: r.TeamID, Schedule: r.Name, Time: f.FiredAt, Error: f.Reason}
	if sc, err := c.scopeOfID(ctx, r.TeamID); err == nil {
		a.Team = sc.name
	}
	switch f.Outcome {
	case FireCreated:
		log.InfoContext(ctx, "schedule fired", append(attrs, "tasks", len(f.TaskIDs), "cancelled", len(f.CancelledIDs))...)
		select {
		case c.wake <- struct{}{}:
		default:
		}
		c.notify()
		if f.MissedFrom.IsZero() || f.CatchUp {
			return
		}
		a.Kind, a.Message = AlertScheduleMissed, fmt.Sprintf("schedule %s: %s", r.Name, f.Reason)
	case FireFailed:
		log.ErrorContext(ctx, "schedule fire failed", attrs...)
		a.Kind, a.Message = AlertScheduleFailed, fmt.Sprintf("schedule %s could not submit its task for %s: %s", r.Name,
			f.ScheduledAt.Format(time.RFC3339), clipLine(f.Reason, 200))
	default: // skipped, missed
		log.WarnContext(ctx, "schedule fire "+f.Outcome, attrs...)
		a.Kind, a.Message = AlertScheduleMissed, fmt.Sprintf("schedule %s: fire at %s %s: %s", r.Name,
			f.ScheduledAt.Format(time.RFC3339), f.Outcome, clipLine(f.Reason, 200))
	}
	if f.CatchUp {
		log.WarnContext(ctx, "schedule caught up missed fires once", attrs...)
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := c.raiseAlert(actx, a); err != nil {
		log.ErrorContext(ctx, "alert delivery failed", "kind", a.Kind, "error", err)
	}
}

// TriggerSchedule runs a schedule's task now, as the caller (who needs
// schedule.trigger and task.create, and vault.use for secrets, in its
// team), whether or not the schedule is paused. The fire is recorded as
// manual: the schedule's next fire does not move. The overlap policy
// applies: under OverlapSkip, while an earlier fire's task is unfinished,
// nothing is submitted and ErrScheduleOverlap names it (the skipped fire
// is in the history); under OverlapCancelPrevious the unfinished tasks are
// cancelled. It returns the tasks submitted.
//
// Errors: ErrNoActor, ErrPermissionDenied, ErrNotFound,
// ErrScheduleOverlap, and Submit's errors for the task (the machine left
// the team, no eligible machine…), which submit nothing.
func (c *Client) TriggerSchedule(ctx context.Context, nameOrID string) ([]*Task, error) {
	r, o, err := c.readSchedule(ctx, nameOrID, authz.ScheduleTrigger)
	if err != nil {
		return nil, err
	}
	sch, err := c.schedules()
	if err != nil {
		return nil, err
	}
	d, err := decodeSchedule(r)
	if err != nil {
		return nil, o.fail(ctx, err)
	}
	now := c.clock.Now().UTC()
	tasks, guards, err := c.fireTasks(ctx, ctx, d, r, now, now)
	if err != nil {
		return nil, o.fail(ctx, err)
	}
	res, err := sch.FireSchedule(store.WithGuard(ctx, guards...), store.ScheduleFire{ScheduleID: r.ID, ScheduledAt: now, Manual: true, FiredAt: now,
		Outcome: store.FireCreated, Overlap: string(d.s.Overlap), Tasks: tasks,
		Audit: audit.Record{Action: "schedule.fire", Actor: o.actor, Time: now, Team: r.TeamID, Details: map[string]string{"name": r.Name}}})
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = fmt.Errorf("schedule %s: %w", quoteInput(nameOrID), ErrNotFound)
		}
		return nil, o.fail(ctx, mapStoreErr(err))
	}
	c.afterFire(ctx, r, res, c.log.With(slog.String("schedule", r.Name), slog.String("team", r.TeamID)))
	if res.Fire.Outcome == FireSkipped {
		return nil, o.fail(ctx, fmt.Errorf("schedule %q: %w: %s", r.Name, ErrScheduleOverlap, res.Fire.Reason))
	}
	o.detail["tasks"] = strconv.Itoa(len(res.Tasks))
	o.done(ctx)
	out := make([]*Task, 0, len(res.Tasks))
	for _, rec := range res.Tasks {
		t, err := taskFromRecord(rec)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// Schedule metrics, read at scrape time.
var (
	descSchedules = prometheus.NewDesc("rediacc_schedules",
		"Schedules by state (active, paused).", []string{"state"}, nil)
	descScheduleLag = prometheus.NewDesc("rediacc_schedule_last_fire_lag_seconds",
		"Seconds between a schedule's last fire time and when a worker recorded it (missed fires: the whole delay).",
		[]string{"schedule", "team"}, nil)
)

func (c *Client) describeSchedules(ch chan<- *prometheus.Desc) {
	ch <- descSchedules
	ch <- descScheduleLag
	c.sched.fires.Describe(ch)
}

// collectSchedules reads the schedules for a scrape; false when the store
// failed.
func (c *Client) collectSchedules(ctx context.Context, ch chan<- prometheus.Metric) bool {
	c.sched.fires.Collect(ch)
	sch, err := c.schedules()
	if err != nil {
		return true
	}
	rs, err := sch.ListSchedules(ctx, store.ScheduleFilter{})
	if err != nil {
		c.log.Warn("metrics: reading schedules failed", "error", err)
		return false
	}
	counts := map[string]int{"active": 0, "paused": 0}
	for _, r := range rs {
		if r.Paused {
			counts["paused"]++
		} else {
			counts["active"]++
		}
		if r.Last != nil {
			ch <- prometheus.MustNewConstMetric(descScheduleLag, prometheus.GaugeValue,
				max(r.Last.FiredAt.Sub(r.Last.ScheduledAt), 0).Seconds(), r.Name, r.TeamID)
		}
	}
	for state, n := range counts {
		ch <- prometheus.MustNewConstMetric(descSchedules, prometheus.GaugeValue, float64(n), state)
	}
	return true
}
