package rediacc

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/store"
)

// Where the work starts, what the claim relied on is checked again, in the
// transaction that starts the attempt (store Start with guards, checked by
// the store before its change):
//
//   - the machine is still a registered machine of the task's team, and
//     its record is the one the worker connects with (store.MachineUnchanged);
//   - this worker's actor still holds a role that lets it run the team's
//     tasks.
//
// The worker keeps the machines' records it read (startMachines), so that a
// task on a machine it already knows starts without reading anything: when
// the guard finds the record changed, the worker reads it again and starts
// with the new one; when it finds the machine moved or removed, the task
// fails without running (*MachineChangedError); when the role is gone, the
// task goes back to the queue for a worker that may run it.

// maxStartMachines bounds the records startMachines keeps (it is emptied
// when full: a fleet larger than that reads a record per task, as before).
const maxStartMachines = 4096

// startMachines is a worker's cache of machine records by machine id, with
// each record as read (the guard's copy) and parsed.
type startMachines struct {
	mu sync.Mutex
	m  map[string]startMachine
}

type startMachine struct {
	rec store.Machine // as read, without health
	m   Machine
}

func (s *startMachines) get(id string) (startMachine, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[id]
	return e, ok
}

func (s *startMachines) put(e startMachine) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil || len(s.m) >= maxStartMachines {
		s.m = make(map[string]startMachine)
	}
	s.m[e.rec.ID] = e
}

func (s *startMachines) drop(id string, rec store.Machine) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[id]; ok && store.SameMachine(e.rec, rec) {
		delete(s.m, id)
	}
}

// errStartRefused: the store refused to start the attempt for another
// reason than a guard (the lease was lost, the task changed): nothing to
// record, the attempt is not made.
type errStartRefused struct{ err error }

func (e *errStartRefused) Error() string { return e.err.Error() }
func (e *errStartRefused) Unwrap() error { return e.err }

// startAttempt checks and starts the attempt of rec (see above) and
// returns its machine. Errors: a *MachineChangedError (the task must fail
// without running); an *errStartRefused (Start refused: nothing to record);
// another error (the check could not be made, or the worker's actor may no
// longer run the team's tasks: the task goes back to the queue).
func (c *Client) startAttempt(ctx context.Context, rec store.Task, attempt store.Attempt, ev audit.Record) (Machine, error) {
	role := roleGuard(c.workerActor, authz.TaskRun, teamScope(rec.TeamID, rec.Team))
	e, cached := c.startMachines.get(rec.MachineID)
	for tries := 0; ; tries++ {
		if !cached {
			var err error
			if e, err = c.readStartMachine(ctx, rec); err != nil {
				return Machine{}, err
			}
		}
		sctx := store.WithGuard(store.WithAudit(ctx, ev), store.MachineUnchanged(e.rec), role)
		_, err := c.engine.Start(sctx, rec.ID, c.id, attempt)
		var ge *store.GuardError
		switch {
		case err == nil:
			if !cached {
				c.startMachines.put(e)
			}
			m := e.m
			m.Team = rec.Team // the team's name now (a rename does not change the machine's record)
			return m, nil
		case !errors.As(err, &ge):
			return Machine{}, &errStartRefused{err}
		case ge.Condition.Kind == store.CondRole:
			return Machine{}, fmt.Errorf("%w: the worker's actor %s may no longer run the tasks of team %q (%s)",
				ErrShutdown, c.workerActor, rec.Team, ge.Found)
		case ge.Condition.Kind != store.CondMachineUnchanged || tries >= 2:
			return Machine{}, fmt.Errorf("%w: the task's machine changed while it was being started; the task goes back to the queue: %v",
				ErrShutdown, err)
		}
		// The machine's record changed since it was read: read it again
		// (a move or a removal fails the task there).
		c.startMachines.drop(rec.MachineID, e.rec)
		cached = false
	}
}

// readStartMachine reads the machine of a claimed task and checks that it
// is still a registered machine of the task's team (else a
// *MachineChangedError: the task must fail without running).
func (c *Client) readStartMachine(ctx context.Context, rec store.Task) (startMachine, error) {
	r, err := c.engine.GetMachine(ctx, rec.MachineID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return startMachine{}, &MachineChangedError{TaskID: rec.ID, TeamID: rec.TeamID, MachineID: rec.MachineID, Machine: rec.Machine, Removed: true}
	case err != nil:
		return startMachine{}, mapStoreErr(err)
	case !r.DeletedAt.IsZero():
		return startMachine{}, &MachineChangedError{TaskID: rec.ID, TeamID: rec.TeamID, MachineID: r.ID, Machine: r.Name, Removed: true}
	case r.TeamID != rec.TeamID:
		return startMachine{}, &MachineChangedError{TaskID: rec.ID, TeamID: rec.TeamID, MachineID: r.ID, Machine: r.Name, MachineTeamID: r.TeamID}
	}
	m, err := machineFromRecord(r)
	if err != nil {
		return startMachine{}, err
	}
	r.Health = nil // the guard compares what connections are made from
	return startMachine{rec: r, m: m}, nil
}
