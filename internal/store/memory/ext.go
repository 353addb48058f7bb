package memory

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

// CreateTasks inserts ts as PENDING tasks, all or none, applying
// CreateTask's rules to each in order. Errors name the task's index.
func (e *Engine) CreateTasks(ctx context.Context, ts []store.Task) ([]store.Task, error) {
	if len(ts) == 0 {
		if err := e.lock(ctx); err != nil {
			return nil, err
		}
		e.mu.Unlock()
		return nil, nil
	}
	in, err := fsm.NewTasks(ts, time.Now())
	if err != nil {
		return nil, err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	out := make([]store.Task, len(in))
	created := make([]bool, len(in))
	keys := make(map[idemKey]int) // key -> index of the batch task holding it
	ids := make(map[string]bool, len(in))
	hits := map[string]bool{} // given ids of the tasks not created
	for i, t := range in {
		if k := (idemKey{t.TeamID, t.IdempotencyKey}); k.key != "" {
			if id, ok := e.idem[k]; ok {
				out[i] = e.out(e.tasks[id].task)
				hits[t.ID] = true
				continue
			}
			if j, ok := keys[k]; ok {
				out[i] = fsm.CloneTask(out[j])
				hits[t.ID] = true
				continue
			}
		}
		if _, ok := e.tasks[t.ID]; ok || ids[t.ID] {
			return nil, fsm.BatchErr(i, fmt.Errorf("%w: task %s", store.ErrExists, t.ID))
		}
		ids[t.ID] = true
		if t.IdempotencyKey != "" {
			keys[idemKey{t.TeamID, t.IdempotencyKey}] = i
		}
		out[i], created[i] = t, true
	}
	for i, t := range out {
		if !created[i] {
			continue
		}
		e.seq++
		en := &entry{seq: e.seq}
		e.set(en, fsm.CloneTask(t))
		e.tasks[t.ID] = en
		if t.IdempotencyKey != "" {
			e.idem[idemKey{t.TeamID, t.IdempotencyKey}] = t.ID
		}
		out[i] = e.out(t)
	}
	for i := range out {
		if !created[i] { // a hit on an earlier task of the batch: names now resolvable
			out[i].Team, out[i].Machine = e.teamName(out[i].TeamID), e.machineName(out[i].MachineID)
		}
	}
	e.record(fsm.KeepAudit(recs, hits))
	return out, nil
}

// SetMachineHealth stores a live machine's last health sample. ErrNotFound;
// ErrInvalidArgument.
func (e *Engine) SetMachineHealth(ctx context.Context, id string, sample []byte, at time.Time) error {
	at, err := fsm.HealthTime(id, at, time.Now())
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
	m.Health, m.HealthAt = fsm.Bytes(sample), at
	e.machines[id] = m
	e.record(recs)
	return nil
}

// QueuedByMachine counts the PENDING, ASSIGNED and PROCESSING tasks of each
// machine (of machines, when not nil).
func (e *Engine) QueuedByMachine(ctx context.Context, machines []string) (map[string]int, error) {
	if err := e.lock(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	out := fsm.QueuedCounts(machines)
	count := func(idx map[string]*entry) {
		for _, en := range idx {
			m := en.task.MachineID
			if machines == nil {
				out[m]++
			} else if _, ok := out[m]; ok {
				out[m]++
			}
		}
	}
	count(e.pending)
	count(e.active)
	return out, nil
}

// ListPrunable returns up to limit finished tasks completed before before,
// oldest first. ErrInvalidArgument.
func (e *Engine) ListPrunable(ctx context.Context, before time.Time, limit int) ([]store.Task, error) {
	if err := fsm.CheckPrune(before, limit); err != nil {
		return nil, err
	}
	if err := e.lock(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	var match []*entry
	for _, en := range e.tasks {
		if fsm.Prunable(&en.task, before) {
			match = append(match, en)
		}
	}
	slices.SortFunc(match, func(a, b *entry) int { return fsm.ComparePrunable(&a.task, &b.task, a.seq, b.seq) })
	if len(match) > limit {
		match = match[:limit]
	}
	out := make([]store.Task, len(match))
	for i, en := range match {
		out[i] = e.out(en.task)
	}
	return out, nil
}

// DeleteTasks deletes the finished tasks among ids and returns how many.
func (e *Engine) DeleteTasks(ctx context.Context, ids []string) (int, error) {
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return 0, err
	}
	defer e.mu.Unlock()
	n := 0
	for _, id := range ids {
		en, ok := e.tasks[id]
		if !ok || !en.task.Status.Terminal() {
			continue
		}
		if k := (idemKey{en.task.TeamID, en.task.IdempotencyKey}); k.key != "" && e.idem[k] == id {
			delete(e.idem, k)
		}
		delete(e.tasks, id)
		delete(e.pending, id)
		delete(e.active, id)
		n++
	}
	e.record(recs)
	return n, nil
}

// TrimAudit deletes the audit records with Seq <= uptoSeq and moves the
// base. ErrInvalidArgument; ErrCorrupt.
func (e *Engine) TrimAudit(ctx context.Context, uptoSeq int64) error {
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return err
	}
	defer e.mu.Unlock()
	trim, err := fsm.CheckTrim(uptoSeq, e.base, e.head)
	if err != nil {
		return err
	}
	if trim {
		k := int(uptoSeq - e.base.Seq)
		if k > len(e.trail) || e.trail[k-1].Seq != uptoSeq {
			return fsm.MissingAudit(uptoSeq, e.base, e.head)
		}
		e.base = audit.HeadOf(e.trail[k-1])
		e.trail = slices.Clone(e.trail[k:])
	}
	e.record(recs)
	return nil
}

// AuditBase returns the last trimmed record's Seq and Hash (zero when
// nothing was trimmed).
func (e *Engine) AuditBase(ctx context.Context) (audit.Head, error) {
	if err := e.lock(ctx); err != nil {
		return audit.Head{}, err
	}
	defer e.mu.Unlock()
	return e.base, nil
}
