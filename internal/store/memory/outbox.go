package memory

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

var _ store.Outbox = (*Engine)(nil)

// outbox is the alert outbox's state, under the engine's mutex.
type outbox struct {
	seq       int64
	alerts    []*store.Alert // Seq order, deliveries inside
	byID      map[string]*store.Alert
	endpoints map[string]time.Time // name -> last seen
	conds     map[string]fsm.AlertCondition

	// pending are the alert requests of the write in progress: set by
	// lockAudit from its context, enqueued by record when the write makes
	// its change, dropped by the next lock otherwise.
	pending []store.AlertRequest
}

func (o *outbox) init() {
	if o.byID == nil {
		o.byID = map[string]*store.Alert{}
		o.endpoints = map[string]time.Time{}
		o.conds = map[string]fsm.AlertCondition{}
	}
}

// flushAlerts enqueues the pending alert requests; the mutex is held.
func (e *Engine) flushAlerts() {
	o := &e.ob
	reqs := o.pending
	o.pending = nil
	if len(reqs) == 0 {
		return
	}
	o.init()
	now := fsm.Time(time.Now())
	for _, r := range reqs {
		for _, n := range r.Endpoints {
			if o.endpoints[n].Before(now) {
				o.endpoints[n] = now
			}
		}
	}
	for _, r := range reqs {
		var res store.AlertResult
		a := fsm.NewAlert(r, now)
		if _, ok := o.byID[a.ID]; ok {
			res = store.AlertResult{ID: a.ID, Duplicate: true}
		} else {
			var c *fsm.AlertCondition
			if old, ok := o.conds[a.Key]; ok {
				c = &old
			}
			o.conds[a.Key] = fsm.Admit(c, &a, r.Window, &res)
			if !res.Suppressed {
				o.seq++
				a.Seq = o.seq
				names := make([]string, 0, len(o.endpoints))
				for n := range o.endpoints {
					names = append(names, n)
				}
				a.Deliveries = fsm.NewDeliveries(names, now)
				o.alerts = append(o.alerts, &a)
				o.byID[a.ID] = &a
			}
		}
		if r.Result != nil {
			*r.Result = res
		}
	}
}

// EnqueueAlerts enqueues the alerts ctx carries and reqs, all or none.
func (e *Engine) EnqueueAlerts(ctx context.Context, reqs ...store.AlertRequest) ([]store.AlertResult, error) {
	if err := fsm.CheckAlertRequests(reqs); err != nil {
		return nil, err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	out := make([]store.AlertResult, len(reqs))
	for i := range reqs {
		r := reqs[i]
		r.Result = &out[i]
		e.ob.pending = append(e.ob.pending, r)
	}
	e.record(recs)
	for i, r := range reqs {
		if r.Result != nil {
			*r.Result = out[i]
		}
	}
	return out, nil
}

// RegisterAlertEndpoints adds endpoints and sets their last-seen time.
func (e *Engine) RegisterAlertEndpoints(ctx context.Context, names []string, at time.Time) error {
	if err := fsm.CheckEndpoints(names); err != nil {
		return err
	}
	if at.IsZero() {
		at = time.Now()
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return err
	}
	defer e.mu.Unlock()
	e.ob.init()
	for _, n := range names {
		e.ob.endpoints[n] = fsm.Time(at)
	}
	e.record(recs)
	return nil
}

// ClaimAlerts leases up to r.Max due deliveries to r.Endpoint.
func (e *Engine) ClaimAlerts(ctx context.Context, r store.AlertClaim) ([]store.Alert, error) {
	if err := fsm.CheckAlertClaim(r); err != nil {
		return nil, err
	}
	var dead map[string]bool
	if r.OwnerDead != nil {
		if err := e.lock(ctx); err != nil {
			return nil, err
		}
		owners := map[string]bool{}
		for _, a := range e.ob.alerts {
			if d := delivery(a, r.Endpoint); d != nil && fsm.LiveLease(d, r.Now) {
				owners[d.LeaseOwner] = true
			}
		}
		e.mu.Unlock()
		dead = map[string]bool{}
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
	type cand struct {
		a *store.Alert
		d *store.AlertDelivery
	}
	var cands []cand
	for _, a := range e.ob.alerts {
		if d := delivery(a, r.Endpoint); d != nil && fsm.Claimable(d, r.Now, dead) {
			cands = append(cands, cand{a, d})
		}
	}
	slices.SortStableFunc(cands, func(x, y cand) int { return x.d.NextAttemptAt.Compare(y.d.NextAttemptAt) })
	var out []store.Alert
	for _, c := range cands[:min(len(cands), r.Max)] {
		fsm.ClaimDelivery(c.d, r)
		a := fsm.CloneAlert(*c.a)
		a.Deliveries = []store.AlertDelivery{fsm.CloneDelivery(*c.d)}
		out = append(out, a)
	}
	if len(out) > 0 {
		e.record(recs)
	}
	return out, nil
}

// delivery returns a's delivery to endpoint, nil when it has none.
func delivery(a *store.Alert, endpoint string) *store.AlertDelivery {
	for i := range a.Deliveries {
		if a.Deliveries[i].Endpoint == endpoint {
			return &a.Deliveries[i]
		}
	}
	return nil
}

// SettleAlert ends the attempt on a delivery r.Owner holds.
func (e *Engine) SettleAlert(ctx context.Context, r store.AlertSettle) error {
	if err := fsm.CheckAlertSettle(r); err != nil {
		return err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return err
	}
	defer e.mu.Unlock()
	a := e.ob.byID[r.AlertID]
	var d *store.AlertDelivery
	if a != nil {
		d = delivery(a, r.Endpoint)
	}
	if d == nil {
		return fmt.Errorf("%w: alert %s has no delivery to endpoint %s", store.ErrNotFound, r.AlertID, r.Endpoint)
	}
	n := *d
	if err := fsm.Settle(&n, r); err != nil {
		return err
	}
	*d = n
	e.record(recs)
	return nil
}

// ListAlerts returns the alerts matching f in Seq order.
func (e *Engine) ListAlerts(ctx context.Context, f store.AlertFilter) ([]store.Alert, error) {
	if err := fsm.CheckAlertFilter(f); err != nil {
		return nil, err
	}
	if err := e.lock(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	start := sort.Search(len(e.ob.alerts), func(i int) bool { return e.ob.alerts[i].Seq > f.AfterSeq })
	var out []store.Alert
	for _, a := range e.ob.alerts[start:] {
		if f.Limit > 0 && len(out) == f.Limit {
			break
		}
		if fsm.MatchAlert(a, f) {
			out = append(out, fsm.CloneAlert(*a))
		}
	}
	return out, nil
}

// AlertBacklog returns each endpoint's pending deliveries as of now.
func (e *Engine) AlertBacklog(ctx context.Context, now time.Time) ([]store.AlertBacklog, error) {
	if err := e.lock(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	by := map[string]*store.AlertBacklog{}
	get := func(n string) *store.AlertBacklog {
		if by[n] == nil {
			by[n] = &store.AlertBacklog{Endpoint: n}
		}
		return by[n]
	}
	for n := range e.ob.endpoints {
		get(n)
	}
	for _, a := range e.ob.alerts {
		for _, d := range a.Deliveries {
			if d.State != store.DeliveryPending {
				continue
			}
			b := get(d.Endpoint)
			b.Pending++
			if !d.NextAttemptAt.After(now) {
				b.Due++
			}
			if b.Oldest.IsZero() || a.CreatedAt.Before(b.Oldest) {
				b.Oldest = a.CreatedAt
			}
			if b.NextAttemptAt.IsZero() || d.NextAttemptAt.Before(b.NextAttemptAt) {
				b.NextAttemptAt = d.NextAttemptAt
			}
		}
	}
	out := make([]store.AlertBacklog, 0, len(by))
	for _, b := range by {
		out = append(out, *b)
	}
	slices.SortFunc(out, func(a, b store.AlertBacklog) int { return strings.Compare(a.Endpoint, b.Endpoint) })
	return out, nil
}

// ExpireAlerts gives up on old alerts, gone endpoints and old conditions.
func (e *Engine) ExpireAlerts(ctx context.Context, r store.AlertExpiry) (int, error) {
	r, err := fsm.CheckAlertExpiry(r, time.Now())
	if err != nil {
		return 0, err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return 0, err
	}
	defer e.mu.Unlock()
	gone := map[string]bool{}
	if !r.EndpointSeenBefore.IsZero() {
		for n, seen := range e.ob.endpoints {
			if seen.Before(r.EndpointSeenBefore) {
				gone[n] = true
				delete(e.ob.endpoints, n)
			}
		}
	}
	n := 0
	for _, a := range e.ob.alerts {
		old := !r.CreatedBefore.IsZero() && a.CreatedAt.Before(r.CreatedBefore)
		for i := range a.Deliveries {
			d := &a.Deliveries[i]
			if d.State != store.DeliveryPending {
				continue
			}
			switch {
			case gone[d.Endpoint]:
				fsm.Expire(d, r.At, fsm.ExpiredEndpoint)
				n++
			case old:
				fsm.Expire(d, r.At, fsm.ExpiredAge)
				n++
			}
		}
	}
	if !r.ConditionsSeenBefore.IsZero() {
		for k, c := range e.ob.conds {
			if c.LastSeenAt.Before(r.ConditionsSeenBefore) {
				delete(e.ob.conds, k)
			}
		}
	}
	e.record(recs)
	return n, nil
}

// DeleteAlerts deletes the alerts created before `before` with no pending
// delivery.
func (e *Engine) DeleteAlerts(ctx context.Context, before time.Time) (int, error) {
	if err := fsm.CheckDeleteAlerts(before); err != nil {
		return 0, err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return 0, err
	}
	defer e.mu.Unlock()
	n := 0
	kept := e.ob.alerts[:0]
	for _, a := range e.ob.alerts {
		if a.CreatedAt.Before(before) && !slices.ContainsFunc(a.Deliveries, func(d store.AlertDelivery) bool { return d.State == store.DeliveryPending }) {
			delete(e.ob.byID, a.ID)
			n++
			continue
		}
		kept = append(kept, a)
	}
	clear(e.ob.alerts[len(kept):])
	e.ob.alerts = kept
	e.record(recs)
	return n, nil
}
