package memory

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

var _ store.KeyEngine = (*Engine)(nil)

// CreateKey implements store.KeyEngine.
func (e *Engine) CreateKey(ctx context.Context, k store.Key) (store.Key, error) {
	k, err := fsm.NewKey(k, time.Now())
	if err != nil {
		return store.Key{}, err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return store.Key{}, err
	}
	defer e.mu.Unlock()
	if _, ok := e.keys[k.ID]; ok {
		return store.Key{}, fmt.Errorf("%w: key %s", store.ErrExists, k.ID)
	}
	e.keys[k.ID] = k
	e.record(recs)
	return e.keyOut(k), nil
}

// keyOut copies k for a caller, with its team's name; the mutex is held.
func (e *Engine) keyOut(k store.Key) store.Key {
	k.Data = bytes.Clone(k.Data)
	k.Team = e.teamName(k.TeamID)
	return k
}

// GetKey implements store.KeyEngine.
func (e *Engine) GetKey(ctx context.Context, id string) (store.Key, error) {
	if err := e.lock(ctx); err != nil {
		return store.Key{}, err
	}
	defer e.mu.Unlock()
	k, ok := e.keys[id]
	if !ok {
		return store.Key{}, fmt.Errorf("%w: key %s", store.ErrNotFound, id)
	}
	return e.keyOut(k), nil
}

// ListKeys implements store.KeyEngine.
func (e *Engine) ListKeys(ctx context.Context, f store.KeyFilter) ([]store.Key, error) {
	if err := e.lock(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	var out []store.Key
	for _, k := range e.keys {
		if f.TeamIDs == nil || slices.Contains(f.TeamIDs, k.TeamID) {
			out = append(out, e.keyOut(k))
		}
	}
	slices.SortFunc(out, func(a, b store.Key) int { return cmp.Or(cmp.Compare(a.Team, b.Team), cmp.Compare(a.ID, b.ID)) })
	return out, nil
}

// UpdateKey implements store.KeyEngine.
func (e *Engine) UpdateKey(ctx context.Context, u store.Key) (store.Key, error) {
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return store.Key{}, err
	}
	defer e.mu.Unlock()
	cur, ok := e.keys[u.ID]
	if !ok {
		return store.Key{}, fmt.Errorf("%w: key %s", store.ErrNotFound, u.ID)
	}
	next, err := fsm.UpdateKey(cur, u, time.Now())
	if err != nil {
		return store.Key{}, err
	}
	e.keys[u.ID] = next
	e.record(recs)
	return e.keyOut(next), nil
}

// DeleteKey implements store.KeyEngine.
func (e *Engine) DeleteKey(ctx context.Context, id string, revision int64) error {
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return err
	}
	defer e.mu.Unlock()
	cur, ok := e.keys[id]
	if !ok {
		return fmt.Errorf("%w: key %s", store.ErrNotFound, id)
	}
	if revision != 0 && revision != cur.Revision {
		return fmt.Errorf("%w: key %s is at revision %d, not %d", store.ErrRevision, id, cur.Revision, revision)
	}
	delete(e.keys, id)
	e.record(recs)
	return nil
}
