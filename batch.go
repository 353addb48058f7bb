package rediacc

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/store"
)

// MaxBatchSize bounds the tasks of one SubmitBatch (or FanOut): they are
// inserted in one transaction.
const MaxBatchSize = 10000

// BatchError reports the task of a batch (SubmitBatch, FanOut) that kept the
// whole batch from being queued: nothing was written. Index is the task's
// 0-based position in the batch, or -1 when the failure concerns no one
// task (the store failed). Err is the task's error: errors.Is on the
// BatchError sees through it (ErrInvalidTask, ErrUnknownMachine,
// ErrPermissionDenied, …).
type BatchError struct {
	Index int
	Err   error
}

// Error implements error.
func (e *BatchError) Error() string {
	if e.Index < 0 {
		return fmt.Sprintf("batch not queued: %v", e.Err)
	}
	return fmt.Sprintf("batch not queued: task %d: %v", e.Index, e.Err)
}

// Unwrap returns e.Err.
func (e *BatchError) Unwrap() error { return e.Err }

// authFunc authorizes one action of a submission on a team and returns the
// operation to audit. With hidden set, a denied actor who may not even see
// the team's machines gets hidden instead (the named machine's unknown-
// machine error; see checkSeen).
type authFunc func(ctx context.Context, action authz.Action, team scope, eid string, detail map[string]string, hidden ...error) (*op, error)

// taskAuth loads the actor's roles once and returns an authFunc that checks
// them (denials are audited as usual), for one or many submissions.
func (c *Client) taskAuth(ctx context.Context) (authFunc, error) {
	return c.taskAuthHiding(ctx, true)
}

// taskAuthHiding is taskAuth; with hide false a denial is never turned
// into not found (a schedule's fire, whose reasons its team reads, not the
// owner it acts as).
func (c *Client) taskAuthHiding(ctx context.Context, hide bool) (authFunc, error) {
	base, err := c.newOp(ctx, authz.TaskCreate, scope{}, audit.EntityTask, "", nil)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, action authz.Action, team scope, eid string, detail map[string]string, hidden ...error) (*op, error) {
		if detail == nil {
			detail = map[string]string{}
		}
		o := &op{c: c, actor: base.actor, via: base.via, action: action, etype: audit.EntityTask, eid: eid, team: team, detail: detail, grants: base.grants}
		check := o.check
		if len(hidden) > 0 && hide {
			check = func(ctx context.Context) error { return o.checkSeen(ctx, authz.MachineRead, hidden[0]) }
		}
		if err := check(ctx); err != nil {
			return nil, err
		}
		return o, nil
	}, nil
}

// prepared is one submission ready to be written: the record, its audited
// operation and the guard conditions the write must hold under (the
// actor's roles, the machine still in the task's team).
type prepared struct {
	rec    store.Task
	op     *op
	guards []store.Condition
}

// prepareTask validates, authorizes and places one submission. A spec
// naming a Machine keeps Submit's original checks and order; one naming
// only a Team is placed by p.
func (c *Client) prepareTask(ctx context.Context, spec TaskSpec, p *placer, auth authFunc, now time.Time) (prepared, error) {
	id := newTaskID()
	var m store.Machine
	var o *op
	var err error
	if spec.Machine != "" || spec.Team == "" {
		m, err = p.machineByName(ctx, spec.Machine) // placement.go
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				if spec.Machine == "" {
					return prepared{}, fmt.Errorf("%w: a machine or a team is required", ErrInvalidTask)
				}
				return prepared{}, unknownMachine(spec.Machine)
			}
			return prepared{}, mapStoreErr(err)
		}
		o, err = auth(ctx, authz.TaskCreate, teamScope(m.TeamID, m.Team), id,
			map[string]string{"machine": m.Name, "machine_id": m.ID, "priority": strconv.Itoa(int(spec.Priority))}, unknownMachine(spec.Machine))
		if err != nil {
			return prepared{}, err
		}
		if spec, err = spec.normalize(); err != nil {
			return prepared{}, o.fail(ctx, err)
		}
		if spec.Team != "" && spec.Team != m.Team {
			return prepared{}, o.fail(ctx, fmt.Errorf("%w: machine %q is in team %q, not %q", ErrInvalidTask, m.Name, m.Team, spec.Team))
		}
		if len(spec.Selector) > 0 {
			mm, err := machineFromRecord(m)
			if err != nil {
				return prepared{}, err
			}
			if !matches(mm.Labels, spec.Selector) {
				return prepared{}, o.fail(ctx, fmt.Errorf("%w: machine %q does not match the selector %s", ErrInvalidTask, m.Name, formatSelector(spec.Selector)))
			}
		}
	} else {
		sc, err := c.resolveTeam(ctx, spec.Team)
		if err != nil {
			return prepared{}, err
		}
		o, err = auth(ctx, authz.TaskCreate, sc, id, map[string]string{"placement": "team", "selector": formatSelector(spec.Selector),
			"priority": strconv.Itoa(int(spec.Priority))})
		if err != nil {
			return prepared{}, err
		}
		if sc.missing { // like an unknown machine: invalid input
			return prepared{}, o.fail(ctx, fmt.Errorf("%w in team %q (no team has that name)", ErrNoEligibleMachine, sc.name))
		}
		if spec, err = spec.normalize(); err != nil {
			return prepared{}, o.fail(ctx, err)
		}
		if m, err = p.place(ctx, sc, spec.Selector, spec.Priority); err != nil {
			return prepared{}, o.fail(ctx, err)
		}
		o.detail["machine"], o.detail["machine_id"] = m.Name, m.ID
	}
	spec.Team = m.Team
	// The write happens only if, at that moment, the actor may still create
	// tasks in the team and the machine is still the team's.
	guards := []store.Condition{store.MachineInTeam(m.ID, m.TeamID)}
	if len(spec.Secrets) > 0 {
		keys := make([]string, 0, len(spec.Secrets))
		for _, k := range spec.Secrets {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		uo, err := auth(ctx, authz.VaultUse, o.team, id, map[string]string{"keys": strings.Join(keys, ",")})
		if err != nil {
			return prepared{}, err
		}
		guards = append(guards, uo.guard())
		o.detail["secrets"] = strings.Join(keys, ",")
		if err := p.checkSecretsExist(ctx, o.team, spec.Secrets); err != nil { // limits.go
			return prepared{}, o.fail(ctx, err)
		}
	}
	raw, err := encodeSpec(spec)
	if err != nil {
		return prepared{}, o.fail(ctx, err)
	}
	o.detail["priority"] = strconv.Itoa(int(spec.Priority))
	if spec.IdempotencyKey != "" {
		o.detail["idempotency_key"] = spec.IdempotencyKey
	}
	return prepared{
		rec: store.Task{
			ID: id, IdempotencyKey: spec.IdempotencyKey, TeamID: m.TeamID,
			MachineID: m.ID, Priority: int(spec.Priority), Spec: raw,
			CreatedAt: now, EnqueuedAt: now, ReadyAt: now,
		},
		op:     o,
		guards: guards,
	}, nil
}

// batchIndexRE finds the index a store error names ("task 3: …").
var batchIndexRE = regexp.MustCompile(`task (\d+):`)

// SubmitBatch queues many tasks in one transaction: all of them, or none.
// Each spec is validated, authorized (operator or admin of its team, and
// vault.use for secrets) and, when it names a Team instead of a Machine,
// placed like Submit does, counting the batch's own earlier placements so
// that a batch spreads over the eligible machines. As for Submit, the
// actor's roles and each machine's team are checked again inside the
// batch's transaction (ErrConflict when a machine moved meanwhile). The
// tasks are returned in the order of specs, PENDING; tasks of equal
// priority run in that order. A spec whose IdempotencyKey names an existing
// task of its team (or an earlier one of the batch) returns that task,
// through Get's access check and redaction, and queues nothing; it is
// audited as a task.create of that task with idempotent=existing. An empty
// batch returns an empty slice. At most MaxBatchSize specs.
//
// Errors: ErrNoActor; a *BatchError naming the first bad task's index and
// wrapping its error (ErrPermissionDenied, ErrInvalidPriority,
// ErrInvalidTask, ErrUnknownMachine, ErrNoEligibleMachine, ErrConflict);
// ErrInvalidArgument for a batch larger than MaxBatchSize.
func (c *Client) SubmitBatch(ctx context.Context, specs []TaskSpec) ([]*Task, error) {
	auth, err := c.taskAuth(ctx)
	if err != nil {
		return nil, err
	}
	if len(specs) == 0 {
		return []*Task{}, nil
	}
	if len(specs) > MaxBatchSize {
		return nil, fmt.Errorf("%w: a batch holds at most %d tasks, not %d", ErrInvalidArgument, MaxBatchSize, len(specs))
	}
	p := c.newPlacer()
	now := c.clock.Now().UTC()
	recs := make([]store.Task, len(specs))
	ops := make([]*op, len(specs))
	recsAudit := make([]audit.Record, len(specs))
	var guards []store.Condition
	seen := map[string]bool{}
	size := strconv.Itoa(len(specs))
	for i, s := range specs {
		pt, err := c.prepareTask(ctx, s, p, auth, now)
		if err != nil {
			return nil, &BatchError{Index: i, Err: err}
		}
		pt.op.detail["batch"] = size
		recs[i], ops[i] = pt.rec, pt.op
		recsAudit[i] = pt.op.record(audit.ResultOK, nil)
		for _, g := range append([]store.Condition{pt.op.guard()}, pt.guards...) {
			if k := guardKey(g); !seen[k] {
				seen[k] = true
				guards = append(guards, g)
			}
		}
	}
	out, err := c.engine.CreateTasks(store.WithGuard(store.WithAudit(ctx, recsAudit...), guards...), recs)
	if err != nil {
		err = mapStoreErr(err)
		idx := -1
		if m := batchIndexRE.FindStringSubmatch(err.Error()); m != nil {
			if n, e := strconv.Atoi(m[1]); e == nil && n >= 0 && n < len(ops) {
				idx = n
			}
		}
		if idx >= 0 {
			_ = ops[idx].fail(ctx, err)
		} else {
			_ = ops[0].fail(ctx, err)
		}
		return nil, &BatchError{Index: idx, Err: err}
	}
	tasks := make([]*Task, len(out))
	created := 0
	for i, r := range out {
		if r.ID != recs[i].ID { // an idempotency key named an existing task
			t, err := c.idempotentHit(ctx, ops[i], r)
			if err != nil {
				return nil, &BatchError{Index: i, Err: err}
			}
			tasks[i] = t
			continue
		}
		t, err := taskFromRecord(r)
		if err != nil {
			return nil, err
		}
		tasks[i] = t
		created++
	}
	if created > 0 {
		c.log.InfoContext(ctx, "batch queued", "tasks", created, "of", len(specs), "actor", ops[0].actor)
		select {
		case c.wake <- struct{}{}:
		default:
		}
		c.notify()
	}
	return tasks, nil
}

// guardKey identifies a guard condition among a batch's (SubmitBatch keeps
// one of each): all its fields, NUL-separated (a profile of 10,000-task
// batches showed formatting them with fmt as 2 % of the submission).
func guardKey(g store.Condition) string {
	return strings.Join([]string{string(g.Kind), g.User, g.TeamID, g.MachineID,
		strings.Join(g.TeamRoles, ","), strings.Join(g.StoreRoles, ",")}, "\x00")
}

// FanOutSpec is one command to run on every machine of a team, or of the
// machines of the team whose labels hold Selector.
type FanOutSpec struct {
	// Team is the team whose machines get the task. Required.
	Team string
	// Selector narrows the machines to those whose labels hold every
	// key=value ({"role": "web"}). Nil: every machine of the team.
	Selector map[string]string
	// TaskSpec is the task to run on each machine; its Machine, Team and
	// Selector must be empty. An IdempotencyKey K becomes "K@MACHINE_ID"
	// for each machine's task (the machine's id, so that a machine removed
	// and added again under its name gets a task of its own).
	TaskSpec
}

// FanOut queues, in one transaction (all or none, as SubmitBatch), one copy
// of s.TaskSpec for every machine of s.Team whose labels hold s.Selector,
// and returns them by machine name. Every matching machine gets its task,
// whatever its health (a busy machine runs priority 3–5 work once it
// recovers). Needs operator (or admin) of the team.
//
// Errors: ErrNoActor, ErrPermissionDenied, ErrInvalidArgument (no team, a
// machine named, more than MaxBatchSize machines), ErrNoEligibleMachine
// (no machine matches), and SubmitBatch's errors.
func (c *Client) FanOut(ctx context.Context, s FanOutSpec) ([]*Task, error) {
	auth, err := c.taskAuth(ctx)
	if err != nil {
		return nil, err
	}
	if s.Team == "" {
		return nil, fmt.Errorf("%w: fan-out needs a team", ErrInvalidArgument)
	}
	if s.TaskSpec.Machine != "" || (s.TaskSpec.Team != "" && s.TaskSpec.Team != s.Team) || len(s.TaskSpec.Selector) > 0 {
		return nil, fmt.Errorf("%w: a fan-out's TaskSpec names no machine, team or selector (set FanOutSpec.Team and Selector)", ErrInvalidArgument)
	}
	sc, err := c.resolveTeam(ctx, s.Team)
	if err != nil {
		return nil, err
	}
	o, err := auth(ctx, authz.TaskCreate, sc, "", map[string]string{"fanout": formatSelector(s.Selector)})
	if err != nil {
		return nil, err
	}
	if sc.missing {
		return nil, o.fail(ctx, sc.notFound())
	}
	cs, err := c.newPlacer().matching(ctx, sc, s.Selector)
	if err != nil {
		return nil, err
	}
	if len(cs) == 0 {
		return nil, o.fail(ctx, fmt.Errorf("%w in team %q with selector %s", ErrNoEligibleMachine, sc.label(), formatSelector(s.Selector)))
	}
	specs := make([]TaskSpec, len(cs))
	for i, cd := range cs {
		ts := s.TaskSpec
		ts.Machine, ts.Team, ts.Selector = cd.m.Name, s.Team, s.Selector
		if ts.IdempotencyKey != "" { // per machine, by id: a new machine of the name is another machine
			ts.IdempotencyKey += "@" + cd.m.ID
		}
		specs[i] = ts
	}
	return c.SubmitBatch(ctx, specs)
}
