package store

import (
	"context"
	"time"
)

// The alert outbox: alerts are written to the store in the transaction of
// the change that caused them (WithAlerts) or in one of their own
// (Outbox.EnqueueAlerts), then delivered to each alert endpoint by the
// workers' dispatchers, which claim deliveries under a lease (as tasks are
// claimed), so that no two workers, in one process or many, deliver the same
// alert to the same endpoint at the same time, and an alert still waiting
// when a worker stops or dies is delivered after the next start. Delivery is
// at least once: the alert's ID is the idempotency key receivers dedupe by.

// Delivery states of an alert at one endpoint (AlertDelivery.State).
const (
	// DeliveryPending: waiting for an attempt, or for another one after a
	// failed attempt (NextAttemptAt).
	DeliveryPending = "pending"
	// DeliveryDelivered: the endpoint acknowledged the alert.
	DeliveryDelivered = "delivered"
	// DeliveryFailed: given up: the endpoint refused the alert for good
	// (a permanent error).
	DeliveryFailed = "failed"
	// DeliveryExpired: given up: not delivered before the outbox's maximum
	// age, or the endpoint was no longer served by any worker.
	DeliveryExpired = "expired"
)

// Ways to settle a claimed delivery (AlertSettle.Outcome): DeliveryDelivered,
// DeliveryFailed, or one of these.
const (
	// SettleRetry: the attempt failed and may be retried at NextAttemptAt.
	SettleRetry = "retry"
	// SettleRelease: no attempt was made; the lease is given back.
	SettleRelease = "release"
)

// Alert is one alert in the outbox.
type Alert struct {
	// Seq orders alerts by enqueue (assigned by the engine, increasing).
	Seq int64
	// ID is the alert's UUID: the idempotency key of its deliveries.
	ID string
	// Kind is the alert's kind ("task.failed", "queue.depth", …).
	Kind string
	// Key names the alert's condition for the rate limit (AlertRequest.Window).
	Key string
	// Team identifies the team the alert is about, as tasks identify
	// theirs; "" for a store-wide condition. Listings filter on it.
	Team string
	// TaskID is the task the alert is about, "" when none.
	TaskID string
	// Payload is the alert itself: opaque JSON owned by the root package.
	Payload []byte
	// CreatedAt is when the condition was observed (the queue's clock).
	CreatedAt time.Time
	// Suppressed is how many alerts for Key the rate limit held back since
	// the previous one that went out (set by the engine at enqueue).
	Suppressed int
	// Deliveries are the alert's deliveries, ordered by endpoint name
	// (ListAlerts), or the one delivery claimed (ClaimAlerts).
	Deliveries []AlertDelivery
}

// AlertDelivery is the delivery of one alert to one endpoint.
type AlertDelivery struct {
	Endpoint string
	State    string // one of the Delivery* states
	// Attempts counts the attempts made (a released claim makes none).
	Attempts int
	// NextAttemptAt: a pending delivery is not claimed before it.
	NextAttemptAt time.Time
	LastAttemptAt time.Time // zero before the first attempt
	LastError     string    // the last failed attempt's error
	// DoneAt is when the delivery left the pending state (zero while pending).
	DoneAt time.Time
	// LeaseOwner holds a claimed delivery until LeaseExpiresAt ("" when
	// not claimed).
	LeaseOwner     string
	LeaseExpiresAt time.Time
}

// AlertRequest asks for an alert to be enqueued.
type AlertRequest struct {
	// Alert is the alert to insert: ID (a new UUID when empty; an ID
	// already in the outbox makes the request a no-op), Kind (required),
	// Key (default Kind), Team, TaskID, Payload, CreatedAt (default now).
	// Seq, Suppressed and Deliveries are set by the engine.
	Alert Alert
	// Window is the rate limit: when an alert with the same Key was
	// inserted less than Window before Alert.CreatedAt, this one is not
	// inserted but counted as suppressed on its condition, and the next one
	// inserted carries the count (Alert.Suppressed). 0: no limit.
	Window time.Duration
	// Endpoints are the requester's own endpoints: they are added to the
	// store's endpoints (RegisterAlertEndpoints) in the same transaction.
	// The alert gets one pending delivery, due at once, for every endpoint
	// of the store.
	Endpoints []string
	// Result, when not nil, receives the outcome. It is written inside the
	// transaction: it is meaningful only when the call returned no error.
	Result *AlertResult
}

// AlertResult is the outcome of an AlertRequest.
type AlertResult struct {
	ID string // the alert's id (also when suppressed or a duplicate)
	// Suppressed: the rate limit held the alert back (not inserted);
	// Count is then the condition's suppressed count including it.
	Suppressed bool
	// Duplicate: an alert with that ID was already in the outbox.
	Duplicate bool
	// Count is the inserted alert's Suppressed, or the condition's count.
	Count int
}

type alertsKey struct{}

// WithAlerts returns a context carrying alert requests. Every mutating
// Engine and Access method that appends the audit records its context
// carries (WithAudit) enqueues these alerts too, in the same transaction
// and under the same condition: only when its change is made. A change is
// never committed without its alerts, nor an alert without its change.
// Requests are checked before the change (ErrInvalidArgument, nothing
// changes).
func WithAlerts(ctx context.Context, reqs ...AlertRequest) context.Context {
	if len(reqs) == 0 {
		return ctx
	}
	prev := AlertsFrom(ctx)
	all := make([]AlertRequest, 0, len(prev)+len(reqs))
	all = append(append(all, prev...), reqs...)
	return context.WithValue(ctx, alertsKey{}, all)
}

// WithoutAlerts returns ctx without alert requests (for a write that must
// not enqueue those of its caller's context).
func WithoutAlerts(ctx context.Context) context.Context {
	if len(AlertsFrom(ctx)) == 0 {
		return ctx
	}
	return context.WithValue(ctx, alertsKey{}, []AlertRequest(nil))
}

// AlertsFrom returns the alert requests ctx carries (nil when none).
func AlertsFrom(ctx context.Context) []AlertRequest {
	reqs, _ := ctx.Value(alertsKey{}).([]AlertRequest)
	return reqs
}

// AlertClaim asks for up to Max deliveries to Endpoint.
type AlertClaim struct {
	Endpoint string
	Owner    string    // the claiming worker; becomes LeaseOwner
	Now      time.Time // due means NextAttemptAt <= Now
	// LeaseUntil is the claimed deliveries' LeaseExpiresAt; it must be after Now.
	LeaseUntil time.Time
	Max        int // >= 1
	// OwnerDead, when not nil, is asked (outside any lock or transaction)
	// about the owners of leases on Endpoint that have not expired; true
	// makes their deliveries claimable now.
	OwnerDead func(owner string) bool
}

// AlertSettle ends a claimed delivery's attempt.
type AlertSettle struct {
	AlertID  string
	Endpoint string
	Owner    string    // must hold the delivery's lease
	At       time.Time // when the attempt ended
	// Outcome is DeliveryDelivered, DeliveryFailed, SettleRetry or
	// SettleRelease.
	Outcome string
	// Error is the failed attempt's error (DeliveryFailed, SettleRetry).
	Error string
	// NextAttemptAt (SettleRetry, SettleRelease) is when the delivery is
	// due again; zero means At.
	NextAttemptAt time.Time
}

// AlertFilter narrows ListAlerts. Zero fields match everything.
type AlertFilter struct {
	// Teams keeps the alerts of these teams (store-wide alerts, Team "",
	// excluded); nil = every alert.
	Teams  []string
	Kind   string
	TaskID string
	// Undelivered keeps the alerts with a delivery that is not (yet)
	// DeliveryDelivered: pending, failed or expired.
	Undelivered bool
	// AfterSeq keeps alerts with a larger Seq (paging).
	AfterSeq int64
	Limit    int // 0 = no limit
}

// AlertBacklog is one endpoint's pending deliveries (Outbox.AlertBacklog).
type AlertBacklog struct {
	Endpoint string
	// Pending counts the endpoint's pending deliveries; Due those of them
	// whose NextAttemptAt is at or before the given instant (claimed ones
	// included).
	Pending, Due int
	// Oldest is the CreatedAt of the oldest alert with a pending delivery
	// (zero when none); NextAttemptAt the earliest NextAttemptAt among
	// them (zero when none).
	Oldest, NextAttemptAt time.Time
}

// AlertExpiry gives up on what is too old (Outbox.ExpireAlerts).
type AlertExpiry struct {
	// At is the expiry's time (DoneAt of the expired deliveries).
	At time.Time
	// CreatedBefore: pending deliveries of alerts created before it
	// become DeliveryExpired (zero: none).
	CreatedBefore time.Time
	// EndpointSeenBefore: endpoints last seen (RegisterAlertEndpoints)
	// before it are removed, their pending deliveries expired (zero: none).
	EndpointSeenBefore time.Time
	// ConditionsSeenBefore: rate-limit conditions last seen before it are
	// forgotten with their suppressed counts (zero: none).
	ConditionsSeenBefore time.Time
}

// Outbox is the part of an engine that keeps the alert outbox. Engines
// implement Engine, Access and Outbox. Methods that change the outbox
// append the audit records their context carries, like every mutating
// method (none of the root package's outbox writes carries any).
type Outbox interface {
	// EnqueueAlerts enqueues reqs in one transaction, all or none (see
	// AlertRequest; the alert requests ctx carries are enqueued too), and
	// returns their outcomes in order. ErrInvalidArgument (no Kind, a time
	// out of range, an empty endpoint name, a negative Window).
	EnqueueAlerts(ctx context.Context, reqs ...AlertRequest) ([]AlertResult, error)
	// RegisterAlertEndpoints adds the named endpoints to the store's (the
	// endpoints every alert enqueued from now on is delivered to) and sets
	// their last-seen time to at (zero: now). ErrInvalidArgument (an empty
	// name).
	RegisterAlertEndpoints(ctx context.Context, names []string, at time.Time) error
	// ClaimAlerts leases up to r.Max due pending deliveries to r.Endpoint
	// that no live lease holds, earliest NextAttemptAt first (then by
	// Seq), and returns their alerts in that order, each with the one
	// claimed delivery. ErrInvalidArgument (no
	// Endpoint or Owner, Max < 1, zero Now, LeaseUntil not after Now).
	ClaimAlerts(ctx context.Context, r AlertClaim) ([]Alert, error)
	// SettleAlert ends the attempt on a delivery r.Owner holds: delivered
	// or failed (DoneAt = At), retried later (Attempts+1, NextAttemptAt),
	// or released (Attempts unchanged); the lease is cleared in every case.
	// ErrNotFound (no such delivery); ErrLeaseLost when it is not pending
	// or r.Owner does not hold it (nothing changes); ErrInvalidArgument.
	SettleAlert(ctx context.Context, r AlertSettle) error
	// ListAlerts returns the alerts matching f with all their deliveries,
	// in Seq order. ErrInvalidArgument (negative Limit).
	ListAlerts(ctx context.Context, f AlertFilter) ([]Alert, error)
	// AlertBacklog returns, for every endpoint of the store and every
	// endpoint with pending deliveries, ordered by name, its backlog as of
	// now.
	AlertBacklog(ctx context.Context, now time.Time) ([]AlertBacklog, error)
	// ExpireAlerts gives up on old alerts, gone endpoints and old
	// conditions (see AlertExpiry) in one transaction and returns how many
	// deliveries it expired.
	ExpireAlerts(ctx context.Context, r AlertExpiry) (int, error)
	// DeleteAlerts deletes, with their deliveries, the alerts created
	// before `before` that have no pending delivery, and returns how many.
	// ErrInvalidArgument (zero before).
	DeleteAlerts(ctx context.Context, before time.Time) (int, error)
}
