package rediacc

import (
	"context"
	"time"

	"github.com/rediacc/rediacc/internal/authz"
)

// checkReadable checks, once, that the actor may read every task of ids
// (each check audited like Get) and returns the actor's grants. Duplicate
// ids are checked once.
func (c *Client) checkReadable(ctx context.Context, ids []string) (authz.Grants, []string, error) {
	seen := make(map[string]bool, len(ids))
	uniq := make([]string, 0, len(ids))
	var g authz.Grants
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		uniq = append(uniq, id)
		_, _, gg, err := c.readTask(ctx, id, true)
		if err != nil {
			return g, nil, err
		}
		g = gg
	}
	return g, uniq, nil
}

// waitChange blocks until a local change (submit, finish, cancel in this
// process), Config.PollInterval (changes made by other processes), or the
// end of ctx.
func (c *Client) waitChange(ctx context.Context, ch <-chan struct{}) error {
	timer := time.NewTimer(c.cfg.PollInterval)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-ch:
	case <-timer.C:
	}
	return nil
}

// WaitAll blocks until every task of ids is COMPLETED, FAILED or CANCELLED
// and returns them in the order of ids (viewers get them without output),
// or returns ctx.Err() when ctx ends first. Like Wait, it sees changes made
// in this process at once and those of other processes within
// Config.PollInterval. An empty ids returns an empty slice.
//
// Errors: ErrNoActor, ErrPermissionDenied, ErrNotFound (checked for every
// id before waiting).
func (c *Client) WaitAll(ctx context.Context, ids []string) ([]*Task, error) {
	if _, _, err := c.actor(ctx); err != nil {
		return nil, err
	}
	g, uniq, err := c.checkReadable(ctx, ids)
	if err != nil {
		return nil, err
	}
	done := make(map[string]*Task, len(uniq))
	for len(done) < len(uniq) {
		ch := c.changes()
		for _, id := range uniq {
			if done[id] != nil {
				continue
			}
			t, err := c.getTask(ctx, id)
			if err != nil {
				return nil, err
			}
			if t.Status.Terminal() {
				redactOutput(t, g)
				done[id] = t
			}
		}
		if len(done) == len(uniq) {
			break
		}
		if err := c.waitChange(ctx, ch); err != nil {
			return nil, err
		}
	}
	out := make([]*Task, len(ids))
	for i, id := range ids {
		out[i] = done[id]
	}
	return out, nil
}

// TaskEvent is one status change of a watched task.
type TaskEvent struct {
	// TaskID is the task's id.
	TaskID string
	// Status is the task's new status; Previous is the one before ("" in
	// the first event of each task, which reports its status when the
	// watch started).
	Status   Status
	Previous Status
	// Task is the task as read at the change (without output for
	// viewers); nil when Err is set.
	Task *Task
	// Err, when set, ends the watch of this task: it could no longer be
	// read (ErrNotFound once pruned, a store error). No more events of the
	// task follow.
	Err error
	// Time is when the change was seen (the Client's clock).
	Time time.Time
}

// Watch streams the status changes of the tasks of ids: first one event per
// task with its status when Watch is called (read before it returns), then one per change (PENDING → ASSIGNED →
// PROCESSING → COMPLETED, a retry back to PENDING …), in the order seen.
// The caller does not poll: Watch follows this process's changes at once
// and other processes' within Config.PollInterval. A very short state (a
// task assigned and started between two looks) may be seen as one change.
// The channel is closed once every task is COMPLETED, FAILED or CANCELLED
// (or failed to be read, see TaskEvent.Err), or when ctx ends; the
// goroutine behind it then exits. Read the channel until it is closed, or
// end ctx: a reader that stops reading blocks the watch until ctx ends.
//
// Errors (at once, before any event): ErrNoActor, ErrPermissionDenied,
// ErrNotFound, checked for every id.
func (c *Client) Watch(ctx context.Context, ids []string) (<-chan TaskEvent, error) {
	if _, _, err := c.actor(ctx); err != nil {
		return nil, err
	}
	g, uniq, err := c.checkReadable(ctx, ids)
	if err != nil {
		return nil, err
	}
	// The first event of each task is its status when Watch is called:
	// read here, before Watch returns, so that a change made after the
	// call (a worker claiming the task) is always a change.
	type read struct {
		t   *Task
		err error
	}
	initial := make(map[string]read, len(uniq))
	ch0 := c.changes()
	for _, id := range uniq {
		t, err := c.getTask(ctx, id)
		initial[id] = read{t, err}
	}
	out := make(chan TaskEvent, min(len(uniq), 1024))
	go func() {
		defer close(out)
		last := make(map[string]Status, len(uniq))
		open := uniq
		for len(open) > 0 {
			ch := c.changes()
			if initial != nil {
				ch = ch0 // a change since the initial reads is seen
			}
			next := open[:0:0]
			for _, id := range open {
				ev := TaskEvent{TaskID: id, Previous: last[id]}
				var t *Task
				var err error
				if r, ok := initial[id]; ok {
					t, err = r.t, r.err
				} else {
					t, err = c.getTask(ctx, id)
				}
				if ctx.Err() != nil {
					return
				}
				switch {
				case err != nil:
					ev.Err = err
				case t.Status == last[id]:
					next = append(next, id)
					continue
				default:
					redactOutput(t, g)
					ev.Status, ev.Task = t.Status, t
					last[id] = t.Status
					if !t.Status.Terminal() {
						next = append(next, id)
					}
				}
				ev.Time = c.clock.Now().UTC()
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
			initial = nil
			open = next
			if len(open) == 0 || c.waitChange(ctx, ch) != nil {
				return
			}
		}
	}()
	return out, nil
}
