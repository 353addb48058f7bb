// Package memory is the in-memory queue store engine: maps under one mutex,
// for tests and short-lived programs. Nothing survives the process. Records
// are deep-copied in and out, so callers never share memory with the engine.
package memory

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/sched"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

// Engine is the in-memory store.Engine. Its zero value is not usable: call New.
type Engine struct {
	fsm.AuditSeal // seals audit records (SetAuditKeyring)

	mu       sync.Mutex
	closed   bool
	seq      int64
	machines map[string]store.Machine // by id, removed ones included
	tasks    map[string]*entry
	idem     map[idemKey]string // (team id, idempotency key) -> task id
	pending  map[string]*entry  // PENDING tasks
	queue    queueIndex         // PENDING tasks as claim candidates (queue.go)
	running  map[string]int     // machine id -> its ASSIGNED and PROCESSING tasks
	active   map[string]*entry  // ASSIGNED and PROCESSING tasks

	teams   map[string]store.Team                 // by id, deleted ones included
	members map[string]map[string]store.Member    // team id -> user -> member
	roles   map[string]map[string]store.StoreRole // user -> role -> grant
	fair    sched.Tags                            // the claim rule's fairness tags
	trail   []audit.Record                        // trail[i].Seq == base.Seq+i+1
	head    audit.Head
	base    audit.Head // last trimmed record (TrimAudit); zero when none

	keys  map[string]store.Key     // SSH key inventory (keys.go)
	blobs map[[2]string]store.Blob // (kind, key) → blob (blob.go); nil until the first put
	sch   scheduleState            // schedules and their fires (schedule.go)
	gates gateState                // gates and maintenance windows (window.go)
	ob    outbox                   // the alert outbox (outbox.go)
}

type entry struct {
	seq  int64
	task store.Task
}

// idemKey is an idempotency key within its team.
type idemKey struct{ team, key string }

var (
	_ store.Engine = (*Engine)(nil)
	_ store.Access = (*Engine)(nil)
)

// New returns an empty engine with the team store.DefaultTeam.
func New() *Engine {
	return &Engine{
		machines: make(map[string]store.Machine),
		tasks:    make(map[string]*entry),
		idem:     make(map[idemKey]string),
		pending:  make(map[string]*entry),
		active:   make(map[string]*entry),
		teams:    map[string]store.Team{store.DefaultTeam: {ID: store.DefaultTeam, Name: store.DefaultTeam, CreatedAt: fsm.Time(time.Now())}},
		members:  make(map[string]map[string]store.Member),
		roles:    make(map[string]map[string]store.StoreRole),
		keys:     make(map[string]store.Key),
	}
}

// set stores t in en and keeps the status indexes current.
func (e *Engine) set(en *entry, t store.Task) {
	switch old := en.task; {
	case old.Status == store.Pending:
		e.queue.remove(fsm.Candidate(&old, en.seq))
	case old.Status.Active():
		if e.running[old.MachineID]--; e.running[old.MachineID] <= 0 {
			delete(e.running, old.MachineID)
		}
	}
	en.task = t
	delete(e.pending, t.ID)
	delete(e.active, t.ID)
	switch {
	case t.Status == store.Pending:
		e.pending[t.ID] = en
		e.queue.add(fsm.Candidate(&t, en.seq))
	case t.Status.Active():
		e.active[t.ID] = en
		if e.running == nil {
			e.running = map[string]int{}
		}
		e.running[t.MachineID]++
	}
}

// lockAudit checks the audit records, alert requests and guard conditions
// ctx carries, locks like lock and evaluates the conditions
// (store.WithGuard); on error the mutex is not held. The caller appends
// the records, and so enqueues the alerts (e.record), once its change is
// made.
func (e *Engine) lockAudit(ctx context.Context) ([]audit.Record, error) {
	recs, err := fsm.CtxAudit(ctx)
	if err != nil {
		return nil, err
	}
	alerts, err := fsm.CtxAlerts(ctx)
	if err != nil {
		return nil, err
	}
	conds, err := fsm.CtxGuard(ctx)
	if err != nil {
		return nil, err
	}
	if err := e.lock(ctx); err != nil {
		return nil, err
	}
	if err := e.guard(conds); err != nil {
		e.mu.Unlock()
		return nil, err
	}
	e.ob.pending = alerts // enqueued by record (outbox.go)
	return recs, nil
}

// guard evaluates conds; the mutex is held.
func (e *Engine) guard(conds []store.Condition) error {
	for _, c := range conds {
		switch c.Kind {
		case store.CondRole:
			var held []string
			for r := range e.roles[c.User] {
				held = append(held, r)
			}
			role := ""
			if t, ok := e.teams[c.TeamID]; ok && t.DeletedAt.IsZero() {
				role = e.members[c.TeamID][c.User].Role
			}
			if !fsm.Granted(c, held, role) {
				return fsm.GuardFailed(c, "%s", fsm.DescribeRoles(c.User, held, role, c.TeamID))
			}
		case store.CondMachineInTeam:
			m, ok := e.machines[c.MachineID]
			switch {
			case !ok:
				return fsm.GuardFailed(c, "no such machine")
			case !m.DeletedAt.IsZero():
				return fsm.GuardFailed(c, "the machine was removed")
			case m.TeamID != c.TeamID:
				return fsm.GuardFailed(c, "the machine is in team %q", m.TeamID)
			}
		case store.CondMachineUnchanged:
			m, ok := e.machines[c.MachineID]
			if err := fsm.MachineUnchanged(c, m, ok); err != nil {
				return err
			}
		case store.CondTeamLive:
			t, ok := e.teams[c.TeamID]
			switch {
			case !ok:
				return fsm.GuardFailed(c, "no such team")
			case !t.DeletedAt.IsZero():
				return fsm.GuardFailed(c, "the team was deleted")
			}
		}
	}
	return nil
}

// teamName is the name of team id, or id itself when there is none; the
// mutex is held.
func (e *Engine) teamName(id string) string {
	if t, ok := e.teams[id]; ok {
		return t.Name
	}
	return id
}

// machineName is the name of machine id, or id itself; the mutex is held.
func (e *Engine) machineName(id string) string {
	if m, ok := e.machines[id]; ok {
		return m.Name
	}
	return id
}

// out returns a copy of t with its names filled; the mutex is held.
func (e *Engine) out(t store.Task) store.Task {
	t = fsm.CloneTask(t)
	t.Team, t.Machine = e.teamName(t.TeamID), e.machineName(t.MachineID)
	return t
}

// outMachine returns a copy of m with its team's name; the mutex is held.
func (e *Engine) outMachine(m store.Machine) store.Machine {
	m = fsm.CloneMachine(m)
	m.Team = e.teamName(m.TeamID)
	return m
}

// liveMachine returns the live machine named name; the mutex is held.
func (e *Engine) liveMachine(name string) (store.Machine, bool) {
	for _, m := range e.machines {
		if m.Name == name && m.DeletedAt.IsZero() {
			return m, true
		}
	}
	return store.Machine{}, false
}

// liveTeam reports whether team id exists and is not deleted; the mutex is
// held.
func (e *Engine) liveTeam(id string) bool {
	t, ok := e.teams[id]
	return ok && t.DeletedAt.IsZero()
}

// record appends recs to the trail; the mutex is held. Chaining copies
// each record's Details, so the trail shares no memory with the caller.
func (e *Engine) record(recs []audit.Record) {
	for _, r := range recs {
		r = e.ChainAudit(e.head, r)
		if len(r.Details) == 0 {
			r.Details = nil
		}
		e.trail = append(e.trail, r)
		e.head = audit.HeadOf(r)
	}
	e.flushAlerts() // the alerts of the change (outbox.go)
}

// unfinished returns a task of machine (id) that is not terminal, or nil.
func (e *Engine) unfinished(machine string) *store.Task {
	for _, en := range e.tasks {
		if en.task.MachineID == machine && !en.task.Status.Terminal() { // all tasks: unknown statuses count as unfinished
			return &en.task
		}
	}
	return nil
}

// lock takes the mutex and checks the context and that the engine is open;
// on error the mutex is not held.
func (e *Engine) lock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return store.ErrClosed
	}
	e.ob.pending = nil // a previous write's alerts never outlive it
	return nil
}

// CreateMachine inserts m. ErrExists; ErrNotFound; ErrInvalidArgument.
func (e *Engine) CreateMachine(ctx context.Context, m store.Machine) (store.Machine, error) {
	m, err := fsm.NewMachine(m, time.Now())
	if err != nil {
		return store.Machine{}, err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return store.Machine{}, err
	}
	defer e.mu.Unlock()
	if _, ok := e.liveMachine(m.Name); ok {
		return store.Machine{}, fmt.Errorf("%w: machine %s", store.ErrExists, m.Name)
	}
	if _, ok := e.machines[m.ID]; ok {
		return store.Machine{}, fmt.Errorf("%w: machine id %s", store.ErrExists, m.ID)
	}
	if !e.liveTeam(m.TeamID) {
		return store.Machine{}, fmt.Errorf("%w: team %s (of machine %s)", store.ErrNotFound, m.TeamID, m.Name)
	}
	e.machines[m.ID] = m
	e.record(recs)
	return e.outMachine(m), nil
}

// UpdateMachine replaces the live machine m.ID, keeping its CreatedAt.
// ErrNotFound; ErrExists; ErrMachineHasTasks; ErrInvalidArgument.
func (e *Engine) UpdateMachine(ctx context.Context, m store.Machine) error {
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return err
	}
	defer e.mu.Unlock()
	old, ok := e.machines[m.ID]
	if !ok || !old.DeletedAt.IsZero() {
		return fmt.Errorf("%w: machine %s", store.ErrNotFound, m.ID)
	}
	m, err = fsm.UpdateMachine(old, m, time.Now())
	if err != nil {
		return err
	}
	if other, ok := e.liveMachine(m.Name); ok && other.ID != m.ID {
		return fmt.Errorf("%w: machine %s", store.ErrExists, m.Name)
	}
	if m.TeamID != old.TeamID {
		if !e.liveTeam(m.TeamID) {
			return fmt.Errorf("%w: team %s (of machine %s)", store.ErrNotFound, m.TeamID, m.Name)
		}
		if t := e.unfinished(m.ID); t != nil {
			return fsm.MachineHasTasks(m.Name, t.ID, t.Status)
		}
	}
	e.machines[m.ID] = m
	e.record(recs)
	return nil
}

// GetMachine returns one machine by id, live or removed. ErrNotFound.
func (e *Engine) GetMachine(ctx context.Context, id string) (store.Machine, error) {
	if err := e.lock(ctx); err != nil {
		return store.Machine{}, err
	}
	defer e.mu.Unlock()
	m, ok := e.machines[id]
	if !ok {
		return store.Machine{}, fmt.Errorf("%w: machine id %s", store.ErrNotFound, id)
	}
	return e.outMachine(m), nil
}

// MachineByName returns the live machine named name. ErrNotFound.
func (e *Engine) MachineByName(ctx context.Context, name string) (store.Machine, error) {
	if err := e.lock(ctx); err != nil {
		return store.Machine{}, err
	}
	defer e.mu.Unlock()
	m, ok := e.liveMachine(name)
	if !ok {
		return store.Machine{}, fmt.Errorf("%w: machine %s", store.ErrNotFound, name)
	}
	return e.outMachine(m), nil
}

// ListMachines returns the live machines matching f, ordered by name.
func (e *Engine) ListMachines(ctx context.Context, f store.MachineFilter) ([]store.Machine, error) {
	if err := e.lock(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	var out []store.Machine
	for _, m := range e.machines {
		if fsm.MatchMachine(&m, f) {
			out = append(out, e.outMachine(m))
		}
	}
	slices.SortFunc(out, func(a, b store.Machine) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// DeleteMachine removes the live machine id. ErrNotFound;
// ErrMachineHasTasks.
func (e *Engine) DeleteMachine(ctx context.Context, id string, at time.Time) error {
	at, err := fsm.DeleteTime("machine", id, at, time.Now())
	if err != nil {
		return err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return err
	}
	defer e.mu.Unlock()
	m, ok := e.machines[id]
	if !ok || !m.DeletedAt.IsZero() {
		return fmt.Errorf("%w: machine %s", store.ErrNotFound, id)
	}
	if t := e.unfinished(id); t != nil {
		return fsm.MachineHasTasks(m.Name, t.ID, t.Status)
	}
	m.DeletedAt = at
	e.machines[id] = m
	e.record(recs)
	return nil
}

// CreateTask inserts t as PENDING, or returns the task holding
// t.IdempotencyKey. ErrExists when the id is taken; ErrInvalidArgument.
func (e *Engine) CreateTask(ctx context.Context, t store.Task) (store.Task, bool, error) {
	t, err := fsm.NewTask(t, time.Now())
	if err != nil {
		return store.Task{}, false, err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return store.Task{}, false, err
	}
	defer e.mu.Unlock()
	if t.IdempotencyKey != "" {
		if id, ok := e.idem[idemKey{t.TeamID, t.IdempotencyKey}]; ok {
			e.record(fsm.KeepAudit(recs, map[string]bool{t.ID: true}))
			return e.out(e.tasks[id].task), false, nil
		}
	}
	if _, ok := e.tasks[t.ID]; ok {
		return store.Task{}, false, fmt.Errorf("%w: task %s", store.ErrExists, t.ID)
	}
	e.seq++
	en := &entry{seq: e.seq}
	e.set(en, t)
	e.tasks[t.ID] = en
	if t.IdempotencyKey != "" {
		e.idem[idemKey{t.TeamID, t.IdempotencyKey}] = t.ID
	}
	e.record(recs)
	return e.out(t), true, nil
}

// GetTask returns one task with its History. ErrNotFound.
func (e *Engine) GetTask(ctx context.Context, id string) (store.Task, error) {
	if err := e.lock(ctx); err != nil {
		return store.Task{}, err
	}
	defer e.mu.Unlock()
	en, ok := e.tasks[id]
	if !ok {
		return store.Task{}, fmt.Errorf("%w: task %s", store.ErrNotFound, id)
	}
	return e.out(en.task), nil
}

// ListTasks returns the tasks matching f ordered by CreatedAt then ID.
func (e *Engine) ListTasks(ctx context.Context, f store.TaskFilter) ([]store.Task, error) {
	if err := fsm.CheckFilter(f); err != nil {
		return nil, err
	}
	if err := e.lock(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	var match []*store.Task
	for _, en := range e.tasks {
		if fsm.Match(&en.task, f) {
			match = append(match, &en.task)
		}
	}
	slices.SortFunc(match, fsm.CompareTasks)
	if f.Limit > 0 && len(match) > f.Limit {
		match = match[:f.Limit]
	}
	out := make([]store.Task, len(match))
	for i, t := range match {
		out[i] = e.out(*t)
	}
	return out, nil
}

// Claim moves up to r.Max ready PENDING tasks to ASSIGNED under r.Owner, in
// scheduling order, honouring per-machine limits (internal/sched).
func (e *Engine) Claim(ctx context.Context, r store.ClaimRequest) ([]store.Task, error) {
	if err := fsm.CheckClaim(r); err != nil {
		return nil, err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	p := fsm.GatedPolicy(r, e.listGates(), e.listWindows(store.WindowFilter{})) // window.go
	res, err := sched.Claim(p, e.running, e.queue.source(r.Now, e.fair))        // queue.go
	if err != nil {
		return nil, err
	}
	out := make([]store.Task, 0, len(res.Picked))
	claimed := make([]store.Task, 0, len(res.Picked))
	for _, c := range res.Picked {
		t := e.tasks[c.ID].task
		fsm.Claim(&t, r)
		claimed, out = append(claimed, t), append(out, e.out(t))
	}
	own, err := fsm.ClaimAudit(r, out) // the claim's own records (task.assign)
	if err != nil {
		return nil, err
	}
	e.fair.Apply(res)
	for _, t := range claimed {
		e.set(e.tasks[t.ID], t)
	}
	e.record(own)
	e.record(recs)
	return out, nil
}

// update applies fn to the task id under the lock and returns a copy of the
// result; fn leaves the task unchanged when it fails.
func (e *Engine) update(ctx context.Context, id string, fn func(t *store.Task) error) (store.Task, error) {
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return store.Task{}, err
	}
	defer e.mu.Unlock()
	en, ok := e.tasks[id]
	if !ok {
		return store.Task{}, fmt.Errorf("%w: task %s", store.ErrNotFound, id)
	}
	t := fsm.CloneTask(en.task)
	if err := fn(&t); err != nil {
		return store.Task{}, err
	}
	e.set(en, t)
	e.record(recs)
	return e.out(t), nil
}

// Start moves an ASSIGNED task leased by owner to PROCESSING and appends the
// open attempt a. ErrNotFound; ErrLeaseLost; ErrDuplicateAttempt;
// ErrInvalidArgument.
func (e *Engine) Start(ctx context.Context, id, owner string, a store.Attempt) (store.Task, error) {
	return e.update(ctx, id, func(t *store.Task) error { return fsm.Start(t, owner, a) })
}

// Heartbeat extends owner's leases on ids to until and reports the ids lost
// (not found, not active, or leased by another) and those whose
// cancellation was asked.
func (e *Engine) Heartbeat(ctx context.Context, owner string, ids []string, until time.Time) (store.Heartbeat, error) {
	if err := fsm.CheckHeartbeat(owner, until); err != nil {
		return store.Heartbeat{}, err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return store.Heartbeat{}, err
	}
	defer e.mu.Unlock()
	var hb store.Heartbeat
	for _, id := range ids {
		en, ok := e.tasks[id]
		if !ok || !fsm.Renew(&en.task, owner, until) {
			hb.Lost = append(hb.Lost, id)
			continue
		}
		if en.task.CancelRequested {
			hb.CancelRequested = append(hb.CancelRequested, id)
		}
	}
	e.record(recs)
	return hb, nil
}

// Finish closes the current attempt and moves the task to f.Next if f.Owner
// still holds it. ErrNotFound; ErrLeaseLost; ErrInvalidArgument.
func (e *Engine) Finish(ctx context.Context, f store.Finish) (store.Task, error) {
	if err := fsm.CheckFinish(f); err != nil {
		return store.Task{}, err
	}
	return e.update(ctx, f.ID, func(t *store.Task) error { return fsm.Finish(t, f) })
}

// Cancel cancels a task (see store.Engine). ErrNotFound; ErrNotCancellable.
func (e *Engine) Cancel(ctx context.Context, id string, at time.Time) (store.Task, error) {
	return e.update(ctx, id, func(t *store.Task) error {
		_, err := fsm.Cancel(t, at)
		return err
	})
}

// Rescue takes back the tasks whose lease expired or whose owner is dead.
// r.OwnerDead is called without the engine's lock held.
func (e *Engine) Rescue(ctx context.Context, r store.RescueRequest) ([]store.Task, error) {
	if err := fsm.CheckRescue(r); err != nil {
		return nil, err
	}
	if _, err := fsm.CtxAudit(ctx); err != nil {
		return nil, err
	}
	var dead map[string]bool
	if r.OwnerDead != nil {
		if err := e.lock(ctx); err != nil {
			return nil, err
		}
		owners := make(map[string]bool)
		for _, en := range e.active {
			if !fsm.Expired(&en.task, r.Now) {
				owners[en.task.LeaseOwner] = true
			}
		}
		e.mu.Unlock()
		dead = make(map[string]bool)
		for o := range owners {
			if r.OwnerDead(o) {
				dead[o] = true
			}
		}
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	var out []store.Task
	for _, en := range e.active {
		t := fsm.CloneTask(en.task)
		if !(fsm.Expired(&t, r.Now) || dead[t.LeaseOwner]) || fsm.Held(&t, r.Held) {
			continue
		}
		fsm.Rescue(&t, r.Now, fsm.RescueReason(&t, r.Now))
		o := e.out(t)
		t.RescuedFrom = "" // returned, never stored
		e.set(en, t)
		out = append(out, o)
	}
	fsm.SortTasks(out)
	e.record(recs)
	return out, nil
}

// SetAttemptRemote records where the open attempts of owner's tasks run;
// it returns the ids it did not update.
func (e *Engine) SetAttemptRemote(ctx context.Context, owner string, rs []store.AttemptRemote) ([]string, error) {
	if err := fsm.CheckSetRemote(owner); err != nil {
		return nil, err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	var lost []string
	for _, r := range rs {
		en, ok := e.tasks[r.TaskID]
		if !ok {
			lost = append(lost, r.TaskID)
			continue
		}
		t := fsm.CloneTask(en.task)
		if !fsm.SetRemote(&t, owner, r) {
			lost = append(lost, r.TaskID)
			continue
		}
		e.set(en, t)
	}
	e.record(recs)
	return lost, nil
}

// NextReady returns the earliest ReadyAt among PENDING tasks; false when
// none is PENDING.
func (e *Engine) NextReady(ctx context.Context) (time.Time, bool, error) {
	if err := e.lock(ctx); err != nil {
		return time.Time{}, false, err
	}
	defer e.mu.Unlock()
	var next time.Time
	found := false
	for _, en := range e.pending {
		if !found || en.task.ReadyAt.Before(next) {
			next, found = en.task.ReadyAt, true
		}
	}
	return next, found, nil
}

// Depth counts tasks grouped by status, priority, team and machine, in the
// order of fsm.SortDepth.
func (e *Engine) Depth(ctx context.Context) ([]store.DepthRow, error) {
	if err := e.lock(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	type key struct {
		s             store.Status
		p             int
		team, machine string
	}
	counts := make(map[key]int)
	for _, en := range e.tasks {
		counts[key{en.task.Status, en.task.Priority, en.task.TeamID, en.task.MachineID}]++
	}
	out := make([]store.DepthRow, 0, len(counts))
	for k, n := range counts {
		out = append(out, store.DepthRow{Status: k.s, Priority: k.p, TeamID: k.team, MachineID: k.machine,
			Team: e.teamName(k.team), Machine: e.machineName(k.machine), Count: n})
	}
	fsm.SortDepth(out)
	return out, nil
}

// Close releases the engine; later calls, Close included, return ErrClosed.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return store.ErrClosed
	}
	e.closed = true
	e.machines, e.tasks, e.idem, e.pending, e.active = nil, nil, nil, nil, nil
	e.teams, e.members, e.roles, e.trail = nil, nil, nil, nil
	return nil
}
