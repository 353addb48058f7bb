package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
)

// outboxTests are the alert outbox's conformance tests (store.Outbox and
// store.WithAlerts).
var outboxTests = []struct {
	name string
	fn   func(*testing.T, *fixture)
}{
	{"Outbox/Enqueue", testOutboxEnqueue},
	{"Outbox/Duplicate", testOutboxDuplicate},
	{"Outbox/RateLimit", testOutboxRateLimit},
	{"Outbox/WithTheChange", testOutboxWithChange},
	{"Outbox/InvalidRequest", testOutboxInvalid},
	{"Outbox/ClaimAndLease", testOutboxClaim},
	{"Outbox/Settle", testOutboxSettle},
	{"Outbox/Backlog", testOutboxBacklog},
	{"Outbox/Expire", testOutboxExpire},
	{"Outbox/Delete", testOutboxDelete},
	{"Outbox/ListFilters", testOutboxList},
	{"Outbox/ConcurrentClaimers", testOutboxConcurrent},
}

// outbox returns the engine as a store.Outbox.
func (f *fixture) outbox() store.Outbox {
	f.t.Helper()
	o, ok := f.e.(store.Outbox)
	if !ok {
		f.t.Fatalf("%T does not implement store.Outbox", f.e)
	}
	return o
}

// alertReq is a request for an alert of kind created at `created`.
func alertReq(id, kind, team string, created time.Time, endpoints ...string) store.AlertRequest {
	return store.AlertRequest{Alert: store.Alert{ID: id, Kind: kind, Team: team, CreatedAt: created,
		Payload: fmt.Appendf(nil, `{"id":%q}`, id)}, Endpoints: endpoints}
}

func (f *fixture) enqueue(reqs ...store.AlertRequest) []store.AlertResult {
	f.t.Helper()
	res, err := f.outbox().EnqueueAlerts(f.ctx, reqs...)
	if err != nil {
		f.t.Fatalf("EnqueueAlerts: %v", err)
	}
	if len(res) != len(reqs) {
		f.t.Fatalf("EnqueueAlerts: %d results for %d requests", len(res), len(reqs))
	}
	return res
}

func (f *fixture) alerts(flt store.AlertFilter) []store.Alert {
	f.t.Helper()
	as, err := f.outbox().ListAlerts(f.ctx, flt)
	if err != nil {
		f.t.Fatalf("ListAlerts(%+v): %v", flt, err)
	}
	return as
}

func alertIDs(as []store.Alert) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.ID
	}
	return out
}

func wantAlerts(t *testing.T, what string, got []store.Alert, want ...string) {
	t.Helper()
	if g, w := fmt.Sprint(alertIDs(got)), fmt.Sprint(want); g != w {
		t.Fatalf("%s: got %s, want %s", what, g, w)
	}
}

// claimAlerts claims for owner on endpoint at now (lease 1 min).
func (f *fixture) claimAlerts(endpoint, owner string, now time.Time, max int) []store.Alert {
	f.t.Helper()
	as, err := f.outbox().ClaimAlerts(f.ctx, store.AlertClaim{Endpoint: endpoint, Owner: owner, Now: now,
		LeaseUntil: now.Add(time.Minute), Max: max})
	if err != nil {
		f.t.Fatalf("ClaimAlerts(%s, %s): %v", endpoint, owner, err)
	}
	for _, a := range as {
		if len(a.Deliveries) != 1 || a.Deliveries[0].Endpoint != endpoint || a.Deliveries[0].LeaseOwner != owner ||
			!a.Deliveries[0].LeaseExpiresAt.Equal(now.Add(time.Minute)) {
			f.t.Fatalf("claimed alert %s: deliveries %+v, want the one to %s leased by %s", a.ID, a.Deliveries, endpoint, owner)
		}
	}
	return as
}

func (f *fixture) settle(r store.AlertSettle) {
	f.t.Helper()
	if err := f.outbox().SettleAlert(f.ctx, r); err != nil {
		f.t.Fatalf("SettleAlert(%+v): %v", r, err)
	}
}

// Enqueued alerts keep their fields and get one pending delivery, due at
// once, for every endpoint of the store: those registered before and the
// requester's own, which join the store's endpoints.
func testOutboxEnqueue(t *testing.T, f *fixture) {
	o := f.outbox()
	if err := o.RegisterAlertEndpoints(f.ctx, []string{"hook", "log"}, at(0)); err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Second)
	res := f.enqueue(store.AlertRequest{Alert: store.Alert{Kind: "task.failed", Key: "k1", Team: "team-a", TaskID: "t-1",
		Payload: []byte(`{"secret":"masked"}`), CreatedAt: at(time.Minute)}, Endpoints: []string{"log"}})
	if res[0].ID == "" || res[0].Suppressed || res[0].Duplicate || res[0].Count != 0 {
		t.Fatalf("result: %+v", res[0])
	}
	as := f.alerts(store.AlertFilter{})
	if len(as) != 1 {
		t.Fatalf("alerts: %+v", as)
	}
	a := as[0]
	if a.ID != res[0].ID || a.Seq < 1 || a.Kind != "task.failed" || a.Key != "k1" || a.Team != "team-a" || a.TaskID != "t-1" ||
		string(a.Payload) != `{"secret":"masked"}` || !a.CreatedAt.Equal(at(time.Minute)) || a.Suppressed != 0 ||
		a.CreatedAt.Location() != time.UTC {
		t.Fatalf("alert: %+v", a)
	}
	if len(a.Deliveries) != 2 || a.Deliveries[0].Endpoint != "hook" || a.Deliveries[1].Endpoint != "log" {
		t.Fatalf("deliveries: %+v", a.Deliveries)
	}
	for _, d := range a.Deliveries {
		if d.State != store.DeliveryPending || d.Attempts != 0 || d.LeaseOwner != "" || !d.DoneAt.IsZero() ||
			d.NextAttemptAt.Before(before) || d.NextAttemptAt.After(time.Now().Add(time.Second)) {
			t.Fatalf("new delivery: %+v", d)
		}
	}
	// Defaults: a new id, Key = Kind, CreatedAt now; a new endpoint joins.
	now := time.Now()
	res = f.enqueue(store.AlertRequest{Alert: store.Alert{Kind: "queue.depth"}, Endpoints: []string{"pager"}})
	as = f.alerts(store.AlertFilter{AfterSeq: a.Seq})
	if len(as) != 1 || as[0].ID != res[0].ID || as[0].Key != "queue.depth" || as[0].Seq <= a.Seq ||
		as[0].CreatedAt.Before(now.Add(-time.Minute)) || len(as[0].Deliveries) != 3 || as[0].Deliveries[2].Endpoint != "pager" {
		t.Fatalf("defaulted alert: %+v", as)
	}
	if res[0].ID == a.ID {
		t.Fatal("two alerts with one id")
	}
	// Records come back as copies.
	as[0].Payload = append(as[0].Payload, 'x')
	as[0].Deliveries[0].State = "mangled"
	if got := f.alerts(store.AlertFilter{AfterSeq: a.Seq}); got[0].Deliveries[0].State != store.DeliveryPending {
		t.Fatal("ListAlerts shares memory with the engine")
	}
}

// An id already in the outbox makes the request a no-op.
func testOutboxDuplicate(t *testing.T, f *fixture) {
	first := f.enqueue(alertReq("a-1", "task.failed", "team-a", at(0), "log"))
	again := f.enqueue(alertReq("a-1", "task.failed", "team-a", at(time.Hour), "log"))
	if first[0].Duplicate || !again[0].Duplicate || again[0].ID != "a-1" {
		t.Fatalf("results: %+v then %+v", first, again)
	}
	if as := f.alerts(store.AlertFilter{}); len(as) != 1 || !as[0].CreatedAt.Equal(at(0)) {
		t.Fatalf("alerts: %+v", as)
	}
}

// Within the rate window a repeat of a condition is held back and counted;
// the next alert that goes out carries the count; other conditions are not
// affected; a zero window never holds anything back.
func testOutboxRateLimit(t *testing.T, f *fixture) {
	w := 5 * time.Minute
	req := func(id string, d time.Duration, key string) store.AlertRequest {
		r := alertReq(id, "queue.depth", "", at(d), "log")
		r.Alert.Key, r.Window = key, w
		return r
	}
	res := f.enqueue(req("a1", 0, "k"), req("a2", time.Minute, "k"), req("b1", time.Minute, "other"))
	if res[0].Suppressed || !res[1].Suppressed || res[1].Count != 1 || res[2].Suppressed {
		t.Fatalf("results: %+v", res)
	}
	var own store.AlertResult
	r3 := req("a3", 2*time.Minute, "k")
	r3.Result = &own
	res = f.enqueue(r3)
	if !res[0].Suppressed || res[0].Count != 2 || own != res[0] {
		t.Fatalf("second repeat: %+v (the request's own result: %+v)", res, own)
	}
	res = f.enqueue(req("a4", w, "k")) // exactly one window after a1: goes out
	if res[0].Suppressed || res[0].Count != 2 {
		t.Fatalf("after the window: %+v", res)
	}
	wantAlerts(t, "alerts", f.alerts(store.AlertFilter{}), "a1", "b1", "a4")
	if as := f.alerts(store.AlertFilter{}); as[2].Suppressed != 2 || as[0].Suppressed != 0 {
		t.Fatalf("suppressed counts: %+v", as)
	}
	res = f.enqueue(req("a5", w+time.Minute, "k")) // counted afresh from a4
	if !res[0].Suppressed || res[0].Count != 1 {
		t.Fatalf("after a4: %+v", res)
	}
	z := req("z1", w+time.Minute, "k")
	z.Window = 0
	res = f.enqueue(z, func() store.AlertRequest { r := req("z2", w+time.Minute, "z"); r.Window = 0; return r }())
	if res[0].Suppressed || res[0].Count != 1 || res[1].Suppressed {
		t.Fatalf("zero window: %+v", res)
	}
}

// Alerts in a write's context are enqueued in that write's transaction:
// with the change, or not at all.
func testOutboxWithChange(t *testing.T, f *fixture) {
	f.running("x", "w1")
	fin := store.Finish{ID: "x", Owner: "w2", At: at(2 * time.Hour), Next: store.Failed, CountAttempt: true,
		Attempt: store.Attempt{Outcome: "failed", Error: "exit status 3"}, Error: "exit status 3"}
	var res store.AlertResult
	req := alertReq("fail-x", "task.failed", "team-a", at(2*time.Hour), "log")
	req.Result = &res
	rec := audit.Record{Time: at(2 * time.Hour), Actor: "worker", Action: "task.fail", EntityType: audit.EntityTask, EntityID: "x",
		Team: "team-a", Result: audit.ResultOK}
	ctx := store.WithAlerts(store.WithAudit(f.ctx, rec), req)
	_, err := f.e.Finish(ctx, fin)
	wantErr(t, "Finish by another worker", err, store.ErrLeaseLost)
	if as := f.alerts(store.AlertFilter{}); len(as) != 0 {
		t.Fatalf("a failed Finish enqueued %+v", as)
	}
	fin.Owner = "w1"
	if _, err := f.e.Finish(ctx, fin); err != nil {
		t.Fatal(err)
	}
	as := f.alerts(store.AlertFilter{})
	if len(as) != 1 || as[0].ID != "fail-x" || res.ID != "fail-x" || len(as[0].Deliveries) != 1 {
		t.Fatalf("alerts after Finish: %+v (result %+v)", as, res)
	}
	// A later write with a plain context enqueues nothing more.
	f.task("m2", 3, at(0), named("y"))
	if as := f.alerts(store.AlertFilter{}); len(as) != 1 {
		t.Fatalf("alerts after an unrelated write: %d", len(as))
	}
	// Nor does a failed write between.
	_, err = f.e.Finish(store.WithAlerts(f.ctx, alertReq("never", "task.failed", "team-a", at(0), "log")),
		store.Finish{ID: "nope", Owner: "w1", At: at(3 * time.Hour), Next: store.Failed})
	wantErr(t, "Finish of an unknown task", err, store.ErrNotFound)
	if _, err := f.e.Cancel(f.ctx, "y", at(3*time.Hour)); err != nil {
		t.Fatal(err)
	}
	wantAlerts(t, "alerts after a failed write", f.alerts(store.AlertFilter{}), "fail-x")
	// Standalone enqueues carry the context's alerts too (one transaction).
	f.enqueue(alertReq("own", "queue.depth", "", at(0), "log"))
	wantAlerts(t, "alerts", f.alerts(store.AlertFilter{}), "fail-x", "own")
}

// Bad requests are refused before anything changes.
func testOutboxInvalid(t *testing.T, f *fixture) {
	f.running("x", "w1")
	before := f.get("x")
	bad := []store.AlertRequest{
		{Alert: store.Alert{Kind: ""}},
		{Alert: store.Alert{Kind: "k"}, Window: -time.Second},
		{Alert: store.Alert{Kind: "k"}, Endpoints: []string{""}},
		{Alert: store.Alert{Kind: "k", CreatedAt: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)}},
		{Alert: store.Alert{Kind: "k", Key: "a\x00b"}},
		{Alert: store.Alert{Kind: "k", Team: "\xff"}},
		{Alert: store.Alert{Kind: "k"}, Endpoints: []string{"x\x00"}},
	}
	for _, r := range bad {
		_, err := f.e.Finish(store.WithAlerts(f.ctx, r), store.Finish{ID: "x", Owner: "w1", At: at(2 * time.Hour), Next: store.Failed})
		wantErr(t, fmt.Sprintf("Finish with alert %+v", r), err, store.ErrInvalidArgument)
		f.unchanged("a Finish with a bad alert", before)
		_, err = f.outbox().EnqueueAlerts(f.ctx, alertReq("ok", "k", "", at(0), "log"), r)
		wantErr(t, fmt.Sprintf("EnqueueAlerts %+v", r), err, store.ErrInvalidArgument)
	}
	if as := f.alerts(store.AlertFilter{}); len(as) != 0 {
		t.Fatalf("bad requests enqueued %+v", as)
	}
	o := f.outbox()
	now := at(0)
	for _, c := range []store.AlertClaim{
		{Owner: "w", Now: now, LeaseUntil: now.Add(time.Minute), Max: 1},
		{Endpoint: "e", Now: now, LeaseUntil: now.Add(time.Minute), Max: 1},
		{Endpoint: "e", Owner: "w", Now: now, LeaseUntil: now.Add(time.Minute)},
		{Endpoint: "e", Owner: "w", LeaseUntil: now.Add(time.Minute), Max: 1},
		{Endpoint: "e", Owner: "w", Now: now, LeaseUntil: now, Max: 1},
	} {
		_, err := o.ClaimAlerts(f.ctx, c)
		wantErr(t, fmt.Sprintf("ClaimAlerts(%+v)", c), err, store.ErrInvalidArgument)
	}
	for _, s := range []store.AlertSettle{
		{Endpoint: "e", Owner: "w", At: now, Outcome: store.DeliveryDelivered},
		{AlertID: "a", Endpoint: "e", At: now, Outcome: store.DeliveryDelivered},
		{AlertID: "a", Endpoint: "e", Owner: "w", Outcome: store.DeliveryDelivered},
		{AlertID: "a", Endpoint: "e", Owner: "w", At: now, Outcome: "lost"},
	} {
		wantErr(t, fmt.Sprintf("SettleAlert(%+v)", s), o.SettleAlert(f.ctx, s), store.ErrInvalidArgument)
	}
	wantErr(t, "RegisterAlertEndpoints empty name", o.RegisterAlertEndpoints(f.ctx, []string{"ok", ""}, now), store.ErrInvalidArgument)
	_, err := o.ListAlerts(f.ctx, store.AlertFilter{Limit: -1})
	wantErr(t, "ListAlerts negative limit", err, store.ErrInvalidArgument)
	_, err = o.DeleteAlerts(f.ctx, time.Time{})
	wantErr(t, "DeleteAlerts zero time", err, store.ErrInvalidArgument)
	wantErr(t, "SettleAlert unknown", o.SettleAlert(f.ctx, store.AlertSettle{AlertID: "nope", Endpoint: "e", Owner: "w", At: now,
		Outcome: store.DeliveryDelivered}), store.ErrNotFound)
}

// Claims lease due deliveries of one endpoint, earliest due first, never
// one that a live lease holds; an expired lease, or one whose owner is
// dead, may be claimed again. Other endpoints' deliveries are separate.
func testOutboxClaim(t *testing.T, f *fixture) {
	for i := range 4 {
		f.enqueue(alertReq(fmt.Sprintf("a%d", i), "task.failed", "team-a", at(0), "hook", "log"))
	}
	now := time.Now().Add(time.Second)
	wantAlerts(t, "w1's claim", f.claimAlerts("hook", "w1", now, 2), "a0", "a1")
	wantAlerts(t, "w2's claim", f.claimAlerts("hook", "w2", now, 5), "a2", "a3")
	wantAlerts(t, "w3's claim while all are leased", f.claimAlerts("hook", "w3", now, 5))
	wantAlerts(t, "the other endpoint", f.claimAlerts("log", "w3", now, 5), "a0", "a1", "a2", "a3")
	// w1's lease expires; w2's owner is dead.
	o := f.outbox()
	asked := map[string]bool{}
	as, err := o.ClaimAlerts(f.ctx, store.AlertClaim{Endpoint: "hook", Owner: "w4", Now: now.Add(30 * time.Second),
		LeaseUntil: now.Add(2 * time.Minute), Max: 10, OwnerDead: func(owner string) bool { asked[owner] = true; return owner == "w2" }})
	if err != nil {
		t.Fatal(err)
	}
	wantAlerts(t, "claim of a dead owner's deliveries", as, "a2", "a3")
	if !asked["w1"] || !asked["w2"] || asked["w3"] {
		t.Errorf("OwnerDead asked about %v, want w1 and w2 (the live leases on hook)", asked)
	}
	wantAlerts(t, "claim after w1's lease expired", f.claimAlerts("hook", "w5", now.Add(time.Minute), 10), "a0", "a1")
	// A retry later than another's goes after it; one not due is left.
	f.settle(store.AlertSettle{AlertID: "a0", Endpoint: "hook", Owner: "w5", At: now, Outcome: store.SettleRetry, Error: "503",
		NextAttemptAt: now.Add(time.Hour)})
	f.settle(store.AlertSettle{AlertID: "a1", Endpoint: "hook", Owner: "w5", At: now, Outcome: store.SettleRetry, Error: "503",
		NextAttemptAt: now.Add(10 * time.Minute)})
	f.settle(store.AlertSettle{AlertID: "a2", Endpoint: "hook", Owner: "w4", At: now, Outcome: store.SettleRelease})
	wantAlerts(t, "claim before the retries are due", f.claimAlerts("hook", "w6", now.Add(time.Minute), 10), "a2")
	// Later, every lease has expired: earliest due first.
	wantAlerts(t, "claim when all are due", f.claimAlerts("hook", "w6", now.Add(2*time.Hour), 10), "a3", "a2", "a1", "a0")
}

// Settling a delivery needs its lease; each outcome moves it as documented.
func testOutboxSettle(t *testing.T, f *fixture) {
	for _, id := range []string{"ok", "retry", "bad", "rel"} {
		f.enqueue(alertReq(id, "task.failed", "team-a", at(0), "hook"))
	}
	now := time.Now().Add(time.Second)
	f.claimAlerts("hook", "w1", now, 10)
	o := f.outbox()
	wantErr(t, "settle by another owner", o.SettleAlert(f.ctx, store.AlertSettle{AlertID: "ok", Endpoint: "hook", Owner: "w2",
		At: now, Outcome: store.DeliveryDelivered}), store.ErrLeaseLost)
	wantErr(t, "settle at an unknown endpoint", o.SettleAlert(f.ctx, store.AlertSettle{AlertID: "ok", Endpoint: "nope", Owner: "w1",
		At: now, Outcome: store.DeliveryDelivered}), store.ErrNotFound)
	done := now.Add(time.Second)
	f.settle(store.AlertSettle{AlertID: "ok", Endpoint: "hook", Owner: "w1", At: done, Outcome: store.DeliveryDelivered})
	f.settle(store.AlertSettle{AlertID: "retry", Endpoint: "hook", Owner: "w1", At: done, Outcome: store.SettleRetry,
		Error: "HTTP 503", NextAttemptAt: done.Add(time.Minute)})
	f.settle(store.AlertSettle{AlertID: "bad", Endpoint: "hook", Owner: "w1", At: done, Outcome: store.DeliveryFailed, Error: "HTTP 400"})
	f.settle(store.AlertSettle{AlertID: "rel", Endpoint: "hook", Owner: "w1", At: done, Outcome: store.SettleRelease})
	wantErr(t, "settle twice", o.SettleAlert(f.ctx, store.AlertSettle{AlertID: "ok", Endpoint: "hook", Owner: "w1",
		At: done, Outcome: store.DeliveryDelivered}), store.ErrLeaseLost)
	wantErr(t, "settle after release", o.SettleAlert(f.ctx, store.AlertSettle{AlertID: "rel", Endpoint: "hook", Owner: "w1",
		At: done, Outcome: store.DeliveryDelivered}), store.ErrLeaseLost)
	got := map[string]store.AlertDelivery{}
	for _, a := range f.alerts(store.AlertFilter{}) {
		got[a.ID] = a.Deliveries[0]
	}
	want := map[string]store.AlertDelivery{
		"ok":    {Endpoint: "hook", State: store.DeliveryDelivered, Attempts: 1, NextAttemptAt: got["ok"].NextAttemptAt, LastAttemptAt: done, DoneAt: done},
		"retry": {Endpoint: "hook", State: store.DeliveryPending, Attempts: 1, NextAttemptAt: done.Add(time.Minute), LastAttemptAt: done, LastError: "HTTP 503"},
		"bad":   {Endpoint: "hook", State: store.DeliveryFailed, Attempts: 1, NextAttemptAt: got["bad"].NextAttemptAt, LastAttemptAt: done, DoneAt: done, LastError: "HTTP 400"},
		"rel":   {Endpoint: "hook", State: store.DeliveryPending, NextAttemptAt: done},
	}
	norm := func(m map[string]store.AlertDelivery) {
		for k, d := range m {
			d.NextAttemptAt, d.LastAttemptAt, d.DoneAt = d.NextAttemptAt.Round(0).UTC(), d.LastAttemptAt.Round(0).UTC(), d.DoneAt.Round(0).UTC()
			m[k] = d
		}
	}
	norm(got)
	norm(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("settled deliveries (-want +got):\n%s", diff)
	}
}

// The backlog counts each endpoint's pending deliveries, those due, the
// oldest alert and the next attempt; registered endpoints show with zero.
func testOutboxBacklog(t *testing.T, f *fixture) {
	o := f.outbox()
	f.enqueue(alertReq("a1", "k", "", at(time.Minute), "hook"), alertReq("a2", "k", "", at(0), "hook"),
		alertReq("a3", "k", "", at(2*time.Minute), "hook"))
	// An endpoint registered later has none of the earlier alerts.
	if err := o.RegisterAlertEndpoints(f.ctx, []string{"idle"}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().Add(time.Second)
	f.claimAlerts("hook", "w1", now, 2)
	f.settle(store.AlertSettle{AlertID: "a1", Endpoint: "hook", Owner: "w1", At: now, Outcome: store.DeliveryDelivered})
	f.settle(store.AlertSettle{AlertID: "a2", Endpoint: "hook", Owner: "w1", At: now, Outcome: store.SettleRetry, NextAttemptAt: now.Add(time.Hour)})
	bs, err := o.AlertBacklog(f.ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 2 || bs[0].Endpoint != "hook" || bs[1] != (store.AlertBacklog{Endpoint: "idle"}) {
		t.Fatalf("backlog: %+v", bs)
	}
	h := bs[0]
	if h.Pending != 2 || h.Due != 1 || !h.Oldest.Equal(at(0)) || h.NextAttemptAt.After(now) {
		t.Fatalf("hook backlog: %+v", h)
	}
	if bs, _ := o.AlertBacklog(f.ctx, now.Add(2*time.Hour)); bs[0].Due != 2 {
		t.Fatalf("backlog later: %+v", bs)
	}
}

// Expiry gives up on old alerts and on endpoints no worker serves, and
// forgets old conditions.
func testOutboxExpire(t *testing.T, f *fixture) {
	o := f.outbox()
	if err := o.RegisterAlertEndpoints(f.ctx, []string{"gone"}, at(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := o.RegisterAlertEndpoints(f.ctx, []string{"live"}, at(time.Hour)); err != nil {
		t.Fatal(err)
	}
	old := alertReq("old", "k", "", at(0))
	old.Window = time.Minute
	f.enqueue(old, alertReq("new", "k2", "", at(2*time.Hour)))
	now := time.Now().Add(time.Second)
	f.claimAlerts("live", "w1", now, 10)
	f.settle(store.AlertSettle{AlertID: "new", Endpoint: "live", Owner: "w1", At: now, Outcome: store.DeliveryDelivered})
	n, err := o.ExpireAlerts(f.ctx, store.AlertExpiry{At: at(3 * time.Hour), CreatedBefore: at(time.Hour),
		EndpointSeenBefore: at(0), ConditionsSeenBefore: at(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	// old: gone (endpoint) + live (age); new: gone (endpoint).
	if n != 3 {
		t.Fatalf("expired %d deliveries, want 3", n)
	}
	states := map[string]string{}
	for _, a := range f.alerts(store.AlertFilter{}) {
		for _, d := range a.Deliveries {
			states[a.ID+"@"+d.Endpoint] = d.State
			if d.State == store.DeliveryExpired && (!d.DoneAt.Equal(at(3*time.Hour)) || d.LastError == "" || d.LeaseOwner != "") {
				t.Errorf("expired delivery %s@%s: %+v", a.ID, d.Endpoint, d)
			}
		}
	}
	want := map[string]string{"old@gone": store.DeliveryExpired, "old@live": store.DeliveryExpired,
		"new@gone": store.DeliveryExpired, "new@live": store.DeliveryDelivered}
	if diff := cmp.Diff(want, states); diff != "" {
		t.Fatalf("states (-want +got):\n%s", diff)
	}
	// The gone endpoint no longer gets deliveries; the forgotten condition
	// no longer holds a repeat back.
	again := alertReq("again", "k", "", at(30*time.Second))
	again.Window = time.Minute
	if res := f.enqueue(again); res[0].Suppressed {
		t.Fatalf("a forgotten condition held a repeat back: %+v", res)
	}
	as := f.alerts(store.AlertFilter{AfterSeq: 2})
	if len(as) != 1 || len(as[0].Deliveries) != 1 || as[0].Deliveries[0].Endpoint != "live" {
		t.Fatalf("alert after expiry: %+v", as)
	}
	if bs, _ := o.AlertBacklog(f.ctx, now); len(bs) != 1 || bs[0].Endpoint != "live" {
		t.Fatalf("backlog after the endpoint expired: %+v", bs)
	}
}

// DeleteAlerts removes old alerts whose deliveries are all done.
func testOutboxDelete(t *testing.T, f *fixture) {
	f.enqueue(alertReq("done", "k", "", at(0), "hook"), alertReq("waiting", "k", "", at(0), "hook"),
		alertReq("recent", "k", "", at(2*time.Hour), "hook"))
	now := time.Now().Add(time.Second)
	for _, a := range f.claimAlerts("hook", "w1", now, 10) {
		if a.ID != "waiting" {
			f.settle(store.AlertSettle{AlertID: a.ID, Endpoint: "hook", Owner: "w1", At: now, Outcome: store.DeliveryDelivered})
		}
	}
	n, err := f.outbox().DeleteAlerts(f.ctx, at(time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("DeleteAlerts: %d, %v; want 1", n, err)
	}
	wantAlerts(t, "alerts left", f.alerts(store.AlertFilter{}), "waiting", "recent")
}

// ListAlerts filters by team (store-wide alerts only for nil), kind, task,
// undelivered, sequence and limit.
func testOutboxList(t *testing.T, f *fixture) {
	t1 := alertReq("t1", "task.failed", "team-a", at(0), "hook")
	t1.Alert.TaskID = "task-1"
	f.enqueue(t1, alertReq("t2", "task.failed", "team-b", at(0), "hook"), alertReq("q1", "queue.depth", "", at(0), "hook"),
		alertReq("m1", "machine.unhealthy", "team-a", at(0), "hook"))
	now := time.Now().Add(time.Second)
	f.claimAlerts("hook", "w1", now, 1)
	f.settle(store.AlertSettle{AlertID: "t1", Endpoint: "hook", Owner: "w1", At: now, Outcome: store.DeliveryDelivered})
	for _, c := range []struct {
		f    store.AlertFilter
		want []string
	}{
		{store.AlertFilter{}, []string{"t1", "t2", "q1", "m1"}},
		{store.AlertFilter{Teams: []string{"team-a"}}, []string{"t1", "m1"}},
		{store.AlertFilter{Teams: []string{}}, []string{}},
		{store.AlertFilter{Teams: []string{"team-a", "team-b"}}, []string{"t1", "t2", "m1"}},
		{store.AlertFilter{Kind: "task.failed"}, []string{"t1", "t2"}},
		{store.AlertFilter{TaskID: "task-1"}, []string{"t1"}},
		{store.AlertFilter{Undelivered: true}, []string{"t2", "q1", "m1"}},
		{store.AlertFilter{Undelivered: true, Teams: []string{"team-a"}}, []string{"m1"}},
		{store.AlertFilter{Limit: 2}, []string{"t1", "t2"}},
		{store.AlertFilter{Undelivered: true, Limit: 2}, []string{"t2", "q1"}},
	} {
		got := alertIDs(f.alerts(c.f))
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("ListAlerts(%+v) = %v, want %v", c.f, got, c.want)
		}
	}
	all := f.alerts(store.AlertFilter{})
	wantAlerts(t, "after the second", f.alerts(store.AlertFilter{AfterSeq: all[1].Seq}), "q1", "m1")
}

// Concurrent claimers of one endpoint never hold the same delivery.
func testOutboxConcurrent(t *testing.T, f *fixture) {
	const n = 60
	var reqs []store.AlertRequest
	for i := range n {
		reqs = append(reqs, alertReq(fmt.Sprintf("a%02d", i), "task.failed", "team-a", at(0), "hook"))
	}
	f.enqueue(reqs...)
	o := f.outbox()
	var mu sync.Mutex
	holder := map[string]string{}
	var wg sync.WaitGroup
	now := time.Now().Add(time.Second)
	for w := range 6 {
		wg.Go(func() {
			owner := fmt.Sprintf("w%d", w)
			for {
				as, err := o.ClaimAlerts(context.Background(), store.AlertClaim{Endpoint: "hook", Owner: owner, Now: now,
					LeaseUntil: now.Add(time.Hour), Max: 1 + w%3})
				if err != nil {
					t.Errorf("%s: ClaimAlerts: %v", owner, err)
					return
				}
				if len(as) == 0 {
					return
				}
				mu.Lock()
				for _, a := range as {
					if prev, ok := holder[a.ID]; ok {
						t.Errorf("%s claimed %s, already held by %s", owner, a.ID, prev)
					}
					holder[a.ID] = owner
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(holder) != n {
		t.Fatalf("%d of %d deliveries claimed", len(holder), n)
	}
}
