package rediacc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/sched"
	"github.com/rediacc/rediacc/internal/store"
)

// WaitCode is the stable, machine-readable kind of a WaitReason.
//
// Adding a wait: a gate of the claim rule is a sched.Hold (see "Adding a
// gate" in internal/sched), explained here by a WaitCode constant and a
// case in waitView.reasons that says what holds the task and until when.
type WaitCode string

// Why a PENDING task waits (WaitReason.Code). Later features add codes; a
// program should treat an unknown code as "held, see Message".
const (
	// WaitRetryDelay: an attempt failed and the retry waits out its delay.
	// Until is the retry time.
	WaitRetryDelay WaitCode = "retry-delay"
	// WaitMachineBusy: the task's machine is busy (HealthConfig) and takes
	// no work of effective priority 3–5. Until is when the gate ends for
	// this task by time alone: aging lifts it to priority 2, or
	// HealthConfig.MaxHold, or the busy judgement lapses unless a new
	// probe renews it (HealthConfig.Interval), whichever comes first; the
	// message says which.
	WaitMachineBusy WaitCode = "machine-busy"
	// WaitMachineFull: every slot of the machine (Config.PerMachineLimit,
	// counted across all workers) is taken. It runs when one frees (no
	// Until: the message says "until one of them ends").
	WaitMachineFull WaitCode = "machine-full"
	// WaitReservedSlot: the machine's only free slot is held for priority
	// 1. Until is when this task may take it anyway (fully aged: waited
	// priority × Config.AgingInterval); it may also run as soon as another
	// slot frees.
	WaitReservedSlot WaitCode = "reserved-slot"
	// WaitNotRunnable: no worker at hand may run the task: the worker's
	// actor has no operator (or admin) role in its team. Only
	// RunUntilEmpty's HeldError, which speaks for its worker, reports it.
	WaitNotRunnable WaitCode = "not-runnable"
	// WaitEarlierCopy: an earlier attempt's copy may still run on the
	// machine (its worker or its connection was lost, see OutcomeUnknown)
	// and the machine could not tell yet: the task runs, or finishes with
	// that copy's result, once a worker has reached the machine and
	// stopped the copy or read how it ended. A cancel waits for it too.
	// Until is the next check.
	WaitEarlierCopy WaitCode = "earlier-copy"
	// WaitQueued: nothing holds the task back; it waits its turn (higher
	// priorities first, then teams take turns by weight, then the team's
	// machines, then FIFO) for a worker with a free slot.
	WaitQueued WaitCode = "queued"
)

// WaitReason says why a PENDING task is not running, and until when. The
// reasons are derived from the store (the task, its machine's judged health
// and running tasks) with the reader's Config (limits, aging, MaxHold), so
// any process reading the store sees them; they describe the moment they
// were computed.
type WaitReason struct {
	// Code is the kind of wait.
	Code WaitCode `json:"code"`
	// Message is one line for people, for example "machine m1 busy: CPU
	// 98 % > 90 % since 14:02:00 UTC; priority 3 work waits until
	// 14:07:00 UTC (aging)".
	Message string `json:"message"`
	// Until is when the wait ends by time alone; zero when it ends only
	// when something else changes (a slot frees, the machine recovers).
	Until time.Time `json:"until,omitzero"`
}

// ErrTasksHeld: RunUntilEmpty stopped with tasks left that its worker can
// never run (see HeldError).
var ErrTasksHeld = errors.New("tasks held: nothing this worker may run is left")

// HeldError is RunUntilEmpty's error when the tasks left are ones its
// worker cannot run, ever or until something else changes (their team is
// not the worker's, a gate with no end): nothing runs here or anywhere, and
// no task left becomes claimable by time alone. errors.Is(err,
// ErrTasksHeld) holds.
type HeldError struct {
	// Tasks are the held tasks (the first 100), oldest first.
	Tasks []HeldTask
	// More counts the held tasks beyond Tasks.
	More int
	// Hidden counts the held tasks of teams whose queue the worker's user
	// may not list (authz task.list): they are counted, never named, so
	// the error tells nothing about another team's tasks, machines or name.
	Hidden int
}

// HeldTask is one task of a HeldError.
type HeldTask struct {
	ID       string
	Team     string
	Machine  string
	Priority Priority
	Waiting  []WaitReason
}

// Error lists the held tasks and why they wait, one per line after the
// first.
func (e *HeldError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d task(s) left that this worker cannot run:", len(e.Tasks)+e.More+e.Hidden)
	for _, t := range e.Tasks {
		fmt.Fprintf(&b, "\n  %s (team %s, machine %s, priority %d): %s", t.ID, t.Team, t.Machine, t.Priority, joinWaiting(t.Waiting))
	}
	if e.More > 0 {
		fmt.Fprintf(&b, "\n  … and %d more", e.More)
	}
	if e.Hidden > 0 {
		fmt.Fprintf(&b, "\n  %d task(s) of teams whose queue this worker's user may not see: a worker acting as a member of their team (operator or admin) runs them", e.Hidden)
	}
	return b.String()
}

// Unwrap returns ErrTasksHeld.
func (e *HeldError) Unwrap() error { return ErrTasksHeld }

func joinWaiting(ws []WaitReason) string {
	ms := make([]string, len(ws))
	for i, w := range ws {
		ms[i] = w.Message
	}
	return strings.Join(ms, "; ")
}

// waitView explains waits: it caches, per call, what it read about
// machines.
type waitView struct {
	c        *Client
	ctx      context.Context
	now      time.Time
	machines map[string]*waitMachine
	gates    *gateView // drains, pauses, windows (gate.go)
}

type waitMachine struct {
	rec     store.Machine
	known   bool
	h       healthView
	running int
}

func (c *Client) newWaitView(ctx context.Context) *waitView {
	return &waitView{c: c, ctx: ctx, now: c.clock.Now().UTC(), machines: map[string]*waitMachine{}}
}

// machine loads what the view knows of machine id (known: registered).
func (w *waitView) machine(id string) *waitMachine {
	if m, ok := w.machines[id]; ok {
		return m
	}
	m := &waitMachine{}
	if rec, err := w.c.engine.GetMachine(w.ctx, id); err == nil && rec.DeletedAt.IsZero() {
		m.rec, m.known = rec, true
		m.h = w.c.viewHealth(rec, w.now)
	}
	if ts, err := w.c.engine.ListTasks(w.ctx, store.TaskFilter{MachineID: id, Statuses: []store.Status{store.Assigned, store.Processing}}); err == nil {
		m.running = len(ts)
	}
	w.machines[id] = m
	return m
}

// policy is the claim rule as this client's workers apply it to machine m
// (of id).
func (w *waitView) policy(m *waitMachine, id string) sched.Policy {
	cfg := w.c.cfg
	p := sched.Policy{Now: w.now, PerMachine: cfg.PerMachineLimit, ReserveCritical: !cfg.NoCriticalReserve,
		Aging: max(cfg.AgingInterval, 0), MaxHold: w.c.maxHold()}
	if m.h.busy {
		p.BusyMachines = []string{id}
	}
	p.Gates = w.gateState() // gate.go
	return p
}

// reasons explains why the PENDING task r waits; nil for other states.
func (w *waitView) reasons(r store.Task) []WaitReason {
	if r.Status != store.Pending {
		return nil
	}
	if er, ok := earlierCopyWait(r, w.clock); ok { // execution.go
		return []WaitReason{er}
	}
	m := w.machine(r.MachineID)
	p := w.policy(m, r.MachineID)
	c := sched.Candidate{ID: r.ID, Team: r.TeamID, Machine: r.MachineID, Priority: r.Priority, EnqueuedAt: r.EnqueuedAt, ReadyAt: r.ReadyAt}
	h, until := p.Check(c, m.running)
	var out []WaitReason
	add := func(code WaitCode, until time.Time, format string, args ...any) {
		out = append(out, WaitReason{Code: code, Message: fmt.Sprintf(format, args...), Until: until})
	}
	switch h {
	case sched.HoldNotReady:
		if r.Attempts > 0 {
			add(WaitRetryDelay, until, "retry at %s (attempt %d failed%s)", w.clock(until), r.Attempts, clipSuffix(r.Error))
		} else {
			add(WaitRetryDelay, until, "not to run before %s", w.clock(until))
		}
	case sched.HoldBusy:
		end := busyUntil(m.h, until) // waitbusy.go
		add(WaitMachineBusy, end, "%s", w.busyMessage(r, m.h, p, until, end))
	case sched.HoldFull:
		add(WaitMachineFull, until, "machine %s full: %d of %d slots running; waits until one of them ends", r.Machine, m.running, p.PerMachine)
	case sched.HoldReserved:
		msg := fmt.Sprintf("machine %s full: %d of %d slots running (1 more held for priority 1)", r.Machine, m.running, p.PerMachine-1)
		if !until.IsZero() {
			msg += fmt.Sprintf("; this task may take it from %s (fully aged), or sooner when one of them ends", w.clock(until))
		} else {
			msg += "; waits until one of them ends (aging is off)"
		}
		add(WaitReservedSlot, until, "%s", msg)
	case sched.HoldDraining, sched.HoldPaused, sched.HoldWindow:
		out = append(out, w.gateReason(h, until, r)) // gate.go
	case sched.HoldNone:
		msg := "ready: waiting for a worker with a free slot"
		if !m.known {
			msg += fmt.Sprintf(" (machine %s is not registered: the task will fail when claimed)", r.Machine)
		} else if m.h.failed {
			msg += fmt.Sprintf(" (machine %s failed its last health probe at %s: %s)", r.Machine, w.clock(m.h.at), clipLine(m.h.rec.Error, 120))
		}
		add(WaitQueued, time.Time{}, "%s", msg)
	default:
		add(WaitCode(h.String()), until, "held by the scheduler (%s)", h)
	}
	return out
}

// clock formats an instant for a message: the time of day in UTC, with
// the date when it is not today's.
func (w *waitView) clock(t time.Time) string {
	t = t.UTC()
	if y, m, d := t.Date(); y == w.now.Year() && m == w.now.Month() && d == w.now.Day() {
		return t.Format("15:04:05 UTC")
	}
	return t.Format("2006-01-02 15:04:05 UTC")
}

func clipSuffix(s string) string {
	if s == "" {
		return ""
	}
	return ": " + clipLine(s, 120)
}

// explain fills the Waiting of the PENDING tasks among ts from their
// records (recs[i] is ts[i]'s).
func (c *Client) explain(ctx context.Context, ts []*Task, recs []store.Task) {
	var w *waitView
	for i, t := range ts {
		if recs[i].Status != store.Pending {
			continue
		}
		if w == nil {
			w = c.newWaitView(ctx)
		}
		t.Waiting = w.reasons(recs[i])
	}
}

// heldScan bounds the PENDING tasks RunUntilEmpty examines each time it is
// idle, and heldReport those its HeldError lists.
const (
	heldScan   = 1000
	heldReport = 100
)

// untilEmpty is RunUntilEmpty's check when its worker is idle (nothing
// claimed, nothing running here). done: the queue is empty (err nil), or
// every task left is held with no end in sight for this worker (err a
// *HeldError). Otherwise it goes on and wait says why (for the log) and
// next is the earliest instant a held task frees by time alone (zero: none).
func (c *Client) untilEmpty(ctx context.Context, actor string) (done bool, wait string, next time.Time, err error) {
	g, err := c.grants(ctx, actor)
	if err != nil {
		return false, "", time.Time{}, err
	}
	active, err := c.engine.ListTasks(ctx, store.TaskFilter{Statuses: []store.Status{store.Assigned, store.Processing}, Limit: 1})
	if err != nil {
		return false, "", time.Time{}, err
	}
	if len(active) > 0 {
		if !authz.Allowed(g, authz.TaskList, active[0].TeamID) {
			return false, "a task of a team this worker's user may not see is running", time.Time{}, nil
		}
		return false, fmt.Sprintf("task %s is %s on %s", active[0].ID, active[0].Status, active[0].Machine), time.Time{}, nil
	}
	pending, err := c.engine.ListTasks(ctx, store.TaskFilter{Statuses: []store.Status{store.Pending}, Limit: heldScan + 1})
	if err != nil {
		return false, "", time.Time{}, err
	}
	if len(pending) == 0 {
		return true, "", time.Time{}, nil
	}
	w := c.newWaitView(ctx)
	held := &HeldError{}
	for i, r := range pending {
		if i == heldScan {
			held.More++ // at least one more: the scan stops here
			break
		}
		var ws []WaitReason
		if !authz.Allowed(g, authz.TaskList, r.TeamID) {
			held.Hidden++ // counted, never named: another team's ids and names stay its own
			continue
		}
		if !authz.Allowed(g, authz.TaskRun, r.TeamID) {
			ws = []WaitReason{{Code: WaitNotRunnable, Message: fmt.Sprintf(
				"this worker (acting as %s) may not run team %s's tasks: it needs the operator or admin role in that team", actor, r.Team)}}
		} else {
			ws = w.reasons(r)
			known := w.machine(r.MachineID).known // a task of an unregistered machine is claimed only by owners
			if i := slices.IndexFunc(ws, func(x WaitReason) bool {
				return (!x.Until.IsZero() && !c.renewsLapse(w, r, x)) || (x.Code == WaitQueued && known)
			}); i >= 0 {
				// Claimable now (a claim raced it) or later by time alone: wait.
				if next.IsZero() || (!ws[i].Until.IsZero() && ws[i].Until.Before(next)) {
					next = ws[i].Until
				}
				return false, fmt.Sprintf("task %s: %s", r.ID, ws[i].Message), next, nil
			}
		}
		if len(held.Tasks) < heldReport {
			held.Tasks = append(held.Tasks, HeldTask{ID: r.ID, Team: r.Team, Machine: r.Machine, Priority: Priority(r.Priority), Waiting: ws})
		} else {
			held.More++
		}
	}
	return true, "", time.Time{}, held
}

// idleUntilEmpty runs RunUntilEmpty's check when the loop claimed nothing:
// stop reports whether the worker stops, and err is then its result (nil,
// or a *HeldError). Otherwise *next is set to when a held task frees by
// time alone, and why the worker waits is logged when it changes.
func (c *Client) idleUntilEmpty(ctx context.Context, actor string, log interface {
	InfoContext(context.Context, string, ...any)
	ErrorContext(context.Context, string, ...any)
}, next *time.Time) (stop bool, err error) {
	c.mu.Lock()
	n := len(c.running)
	c.mu.Unlock()
	if n > 0 {
		return false, nil
	}
	done, why, at, err := c.untilEmpty(ctx, actor)
	if done {
		if due, aerr := c.alertsDue(ctx); aerr == nil && due { // outbox.go: the run's alerts go out first
			return false, nil
		}
	}
	switch {
	case done:
		return true, err
	case err != nil:
		if ctx.Err() == nil {
			log.ErrorContext(ctx, "queue check failed", "error", err)
		}
		return false, nil
	}
	*next = at
	c.mu.Lock()
	changed := why != c.idleWhy
	c.idleWhy = why
	c.mu.Unlock()
	if changed {
		log.InfoContext(ctx, "worker idle: waiting", "why", why)
	}
	return false, nil
}
