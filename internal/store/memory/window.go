package memory

import (
	"context"
	"fmt"
	"time"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

var _ store.Gates = (*Engine)(nil)

// gateState holds the gates and windows (Engine.gates); maps made on
// first use.
type gateState struct {
	gates   map[store.GateKind]map[string]store.Gate
	windows map[string]store.Window
}

func (g *gateState) init() {
	if g.gates == nil {
		g.gates = map[store.GateKind]map[string]store.Gate{store.GateDrain: {}, store.GatePause: {}}
		g.windows = map[string]store.Window{}
	}
}

// PutGate sets a gate (see store.Gates).
func (e *Engine) PutGate(ctx context.Context, g store.Gate) (bool, error) {
	g, err := fsm.NewGate(g, time.Now())
	if err != nil {
		return false, err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return false, err
	}
	defer e.mu.Unlock()
	e.gates.init()
	_, had := e.gates.gates[g.Kind][g.Target]
	if !had {
		e.gates.gates[g.Kind][g.Target] = g
	}
	e.record(recs)
	return !had, nil
}

// DeleteGate lifts a gate. ErrNotFound.
func (e *Engine) DeleteGate(ctx context.Context, kind store.GateKind, target string) error {
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return err
	}
	defer e.mu.Unlock()
	e.gates.init()
	if _, ok := e.gates.gates[kind][target]; !ok {
		return fsm.GateNotFound(kind, target)
	}
	delete(e.gates.gates[kind], target)
	e.record(recs)
	return nil
}

// ListGates returns the gates in force.
func (e *Engine) ListGates(ctx context.Context) ([]store.Gate, error) {
	if err := e.lock(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	return e.listGates(), nil
}

// listGates returns the gates; the mutex is held.
func (e *Engine) listGates() []store.Gate {
	e.gates.init()
	var out []store.Gate
	for _, byTarget := range e.gates.gates {
		for _, g := range byTarget {
			out = append(out, g)
		}
	}
	fsm.SortGates(out)
	return out
}

// CreateWindow inserts a window. ErrExists; ErrInvalidArgument.
func (e *Engine) CreateWindow(ctx context.Context, w store.Window) (store.Window, error) {
	w, err := fsm.NewWindow(w, time.Now())
	if err != nil {
		return store.Window{}, err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return store.Window{}, err
	}
	defer e.mu.Unlock()
	e.gates.init()
	if _, ok := e.gates.windows[w.ID]; ok {
		return store.Window{}, fmt.Errorf("%w: window %s", store.ErrExists, w.ID)
	}
	e.gates.windows[w.ID] = w
	e.record(recs)
	return w, nil
}

// DeleteWindow deletes a window. ErrNotFound.
func (e *Engine) DeleteWindow(ctx context.Context, id string) error {
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return err
	}
	defer e.mu.Unlock()
	e.gates.init()
	if _, ok := e.gates.windows[id]; !ok {
		return fmt.Errorf("%w: window %s", store.ErrNotFound, id)
	}
	delete(e.gates.windows, id)
	e.record(recs)
	return nil
}

// GetWindow returns one window. ErrNotFound.
func (e *Engine) GetWindow(ctx context.Context, id string) (store.Window, error) {
	if err := e.lock(ctx); err != nil {
		return store.Window{}, err
	}
	defer e.mu.Unlock()
	e.gates.init()
	w, ok := e.gates.windows[id]
	if !ok {
		return store.Window{}, fmt.Errorf("%w: window %s", store.ErrNotFound, id)
	}
	return w, nil
}

// ListWindows returns the windows matching f.
func (e *Engine) ListWindows(ctx context.Context, f store.WindowFilter) ([]store.Window, error) {
	if err := e.lock(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	return e.listWindows(f), nil
}

// listWindows returns the windows matching f; the mutex is held.
func (e *Engine) listWindows(f store.WindowFilter) []store.Window {
	e.gates.init()
	var out []store.Window
	for _, w := range e.gates.windows {
		if fsm.MatchWindow(&w, f) {
			out = append(out, w)
		}
	}
	fsm.SortWindows(out)
	return out
}
