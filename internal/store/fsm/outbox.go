package fsm

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/rediacc/rediacc/internal/store"
)

// MaxEndpointName is the longest alert endpoint name, in bytes.
const MaxEndpointName = 256

// CloneAlert deep-copies a with normalized times.
func CloneAlert(a store.Alert) store.Alert {
	a.Payload = Bytes(a.Payload)
	a.CreatedAt = Time(a.CreatedAt)
	if len(a.Deliveries) == 0 {
		a.Deliveries = nil
	} else {
		ds := make([]store.AlertDelivery, len(a.Deliveries))
		for i, d := range a.Deliveries {
			ds[i] = CloneDelivery(d)
		}
		a.Deliveries = ds
	}
	return a
}

// CloneDelivery returns d with normalized times.
func CloneDelivery(d store.AlertDelivery) store.AlertDelivery {
	d.NextAttemptAt, d.LastAttemptAt, d.DoneAt, d.LeaseExpiresAt = Time(d.NextAttemptAt), Time(d.LastAttemptAt), Time(d.DoneAt), Time(d.LeaseExpiresAt)
	return d
}

// CheckEndpoints checks alert endpoint names.
func CheckEndpoints(names []string) error {
	for _, n := range names {
		if n == "" || len(n) > MaxEndpointName || !cleanText(n) {
			return fmt.Errorf("%w: alert endpoint name %q: empty, longer than %d bytes, or not clean UTF-8 text", store.ErrInvalidArgument, n, MaxEndpointName)
		}
	}
	return nil
}

// cleanText reports whether s is valid UTF-8 without NUL bytes: text every
// engine stores as it is (PostgreSQL's text refuses NUL).
func cleanText(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }

// CheckAlertRequests checks alert requests before anything changes.
func CheckAlertRequests(reqs []store.AlertRequest) error {
	for i, r := range reqs {
		switch {
		case r.Alert.Kind == "":
			return fmt.Errorf("%w: alert %d: kind is empty", store.ErrInvalidArgument, i)
		case r.Window < 0:
			return fmt.Errorf("%w: alert %d: negative rate window %s", store.ErrInvalidArgument, i, r.Window)
		}
		for _, f := range []string{r.Alert.ID, r.Alert.Kind, r.Alert.Key, r.Alert.Team, r.Alert.TaskID} {
			if !cleanText(f) {
				return fmt.Errorf("%w: alert %d: %q holds a NUL byte or invalid UTF-8", store.ErrInvalidArgument, i, f)
			}
		}
		if err := checkTimes("alert CreatedAt", r.Alert.CreatedAt); err != nil {
			return fmt.Errorf("alert %d: %w", i, err)
		}
		if err := CheckEndpoints(r.Endpoints); err != nil {
			return fmt.Errorf("alert %d: %w", i, err)
		}
	}
	return nil
}

// CtxAlerts returns the alert requests ctx carries (store.WithAlerts),
// checked.
func CtxAlerts(ctx context.Context) ([]store.AlertRequest, error) {
	reqs := store.AlertsFrom(ctx)
	if err := CheckAlertRequests(reqs); err != nil {
		return nil, err
	}
	return reqs, nil
}

// NewAlert returns the alert of r to insert, defaulted: a new UUID when ID
// is empty, Key = Kind when empty, CreatedAt = now when zero; Seq,
// Suppressed and Deliveries cleared.
func NewAlert(r store.AlertRequest, now time.Time) store.Alert {
	a := CloneAlert(r.Alert)
	if a.ID == "" {
		a.ID = uuid.NewString()
	}
	if a.Key == "" {
		a.Key = a.Kind
	}
	if a.CreatedAt.IsZero() {
		a.CreatedAt = Time(now)
	}
	a.Seq, a.Suppressed, a.Deliveries = 0, 0, nil
	return a
}

// AlertCondition is the rate limit's memory of one condition (alert Key).
type AlertCondition struct {
	Key        string
	LastSentAt time.Time // CreatedAt of the last alert inserted for Key
	LastSeenAt time.Time // latest CreatedAt of an alert for Key, inserted or not
	Suppressed int       // held back since LastSentAt
}

// Admit decides whether a goes out under its condition c (nil: none yet)
// with the rate window w: suppressed when an alert for the same key went out
// less than w before a.CreatedAt. It returns the updated condition; when a
// is admitted, a.Suppressed is set to the count held back before it. The
// result is written to r.
func Admit(c *AlertCondition, a *store.Alert, w time.Duration, r *store.AlertResult) AlertCondition {
	at := a.CreatedAt
	if c != nil && w > 0 && at.Before(c.LastSentAt.Add(w)) {
		n := *c
		n.Suppressed++
		if at.After(n.LastSeenAt) {
			n.LastSeenAt = at
		}
		*r = store.AlertResult{ID: a.ID, Suppressed: true, Count: n.Suppressed}
		return n
	}
	if c != nil {
		a.Suppressed = c.Suppressed
	}
	*r = store.AlertResult{ID: a.ID, Count: a.Suppressed}
	return AlertCondition{Key: a.Key, LastSentAt: at, LastSeenAt: at}
}

// NewDeliveries returns a new alert's pending deliveries, one per endpoint
// (duplicates dropped), ordered by name, due at once (NextAttemptAt = now).
func NewDeliveries(endpoints []string, now time.Time) []store.AlertDelivery {
	names := slices.Clone(endpoints)
	slices.Sort(names)
	names = slices.Compact(names)
	out := make([]store.AlertDelivery, 0, len(names))
	for _, n := range names {
		out = append(out, store.AlertDelivery{Endpoint: n, State: store.DeliveryPending, NextAttemptAt: Time(now)})
	}
	return out
}

// CheckAlertClaim checks an AlertClaim.
func CheckAlertClaim(r store.AlertClaim) error {
	switch {
	case r.Endpoint == "":
		return fmt.Errorf("%w: claim alerts: endpoint is empty", store.ErrInvalidArgument)
	case r.Owner == "":
		return fmt.Errorf("%w: claim alerts: owner is empty", store.ErrInvalidArgument)
	case r.Max < 1:
		return fmt.Errorf("%w: claim alerts: max %d < 1", store.ErrInvalidArgument, r.Max)
	case r.Now.IsZero():
		return fmt.Errorf("%w: claim alerts: Now is zero", store.ErrInvalidArgument)
	case !r.LeaseUntil.After(r.Now):
		return fmt.Errorf("%w: claim alerts: lease until %v is not after now %v", store.ErrInvalidArgument, r.LeaseUntil, r.Now)
	}
	return checkTimes("claim alerts Now", r.Now, "claim alerts LeaseUntil", r.LeaseUntil)
}

// Claimable reports whether d may be claimed at now: pending, due, and not
// held by a live lease (dead lists owners known to be gone).
func Claimable(d *store.AlertDelivery, now time.Time, dead map[string]bool) bool {
	if d.State != store.DeliveryPending || d.NextAttemptAt.After(now) {
		return false
	}
	return d.LeaseOwner == "" || !now.Before(d.LeaseExpiresAt) || dead[d.LeaseOwner]
}

// LiveLease reports whether d is pending under a lease that has not
// expired at now (its owner is asked about with AlertClaim.OwnerDead).
func LiveLease(d *store.AlertDelivery, now time.Time) bool {
	return d.State == store.DeliveryPending && d.LeaseOwner != "" && now.Before(d.LeaseExpiresAt)
}

// ClaimDelivery leases d to r.Owner.
func ClaimDelivery(d *store.AlertDelivery, r store.AlertClaim) {
	d.LeaseOwner, d.LeaseExpiresAt = r.Owner, Time(r.LeaseUntil)
}

// CheckAlertSettle checks an AlertSettle.
func CheckAlertSettle(r store.AlertSettle) error {
	switch {
	case r.AlertID == "" || r.Endpoint == "":
		return fmt.Errorf("%w: settle alert: alert id or endpoint is empty", store.ErrInvalidArgument)
	case r.Owner == "":
		return fmt.Errorf("%w: settle alert %s: owner is empty", store.ErrInvalidArgument, r.AlertID)
	case r.At.IsZero():
		return fmt.Errorf("%w: settle alert %s: At is zero", store.ErrInvalidArgument, r.AlertID)
	}
	switch r.Outcome {
	case store.DeliveryDelivered, store.DeliveryFailed, store.SettleRetry, store.SettleRelease:
	default:
		return fmt.Errorf("%w: settle alert %s: outcome %q", store.ErrInvalidArgument, r.AlertID, r.Outcome)
	}
	return checkTimes("settle alert At", r.At, "settle alert NextAttemptAt", r.NextAttemptAt)
}

// Settle applies r to d, if r.Owner holds it (ErrLeaseLost otherwise, d
// unchanged).
func Settle(d *store.AlertDelivery, r store.AlertSettle) error {
	if err := CheckAlertSettle(r); err != nil {
		return err
	}
	if d.State != store.DeliveryPending || d.LeaseOwner != r.Owner {
		return fmt.Errorf("%w: alert %s at endpoint %s is %s, leased by %q, not %q",
			store.ErrLeaseLost, r.AlertID, r.Endpoint, d.State, d.LeaseOwner, r.Owner)
	}
	at := Time(r.At)
	next := Time(r.NextAttemptAt)
	if next.IsZero() {
		next = at
	}
	switch r.Outcome {
	case store.SettleRelease:
		d.NextAttemptAt = next
	case store.SettleRetry:
		d.Attempts++
		d.LastAttemptAt, d.LastError, d.NextAttemptAt = at, r.Error, next
	case store.DeliveryDelivered, store.DeliveryFailed:
		d.Attempts++
		d.State, d.LastAttemptAt, d.DoneAt = r.Outcome, at, at
		if r.Outcome == store.DeliveryFailed {
			d.LastError = r.Error
		}
	}
	d.LeaseOwner, d.LeaseExpiresAt = "", time.Time{}
	return nil
}

// Expire marks a pending d expired at `at` with why as its error.
func Expire(d *store.AlertDelivery, at time.Time, why string) {
	d.State, d.DoneAt, d.LeaseOwner, d.LeaseExpiresAt = store.DeliveryExpired, Time(at), "", time.Time{}
	if d.LastError == "" {
		d.LastError = why
	} else {
		d.LastError = why + "; last error: " + d.LastError
	}
}

// Expiry reasons (AlertDelivery.LastError of expired deliveries).
const (
	ExpiredAge      = "expired: not delivered within the outbox's maximum age"
	ExpiredEndpoint = "expired: no worker serves this endpoint any more"
)

// CheckAlertExpiry checks an AlertExpiry; At defaults to now.
func CheckAlertExpiry(r store.AlertExpiry, now time.Time) (store.AlertExpiry, error) {
	if err := checkTimes("expiry At", r.At, "expiry CreatedBefore", r.CreatedBefore,
		"expiry EndpointSeenBefore", r.EndpointSeenBefore, "expiry ConditionsSeenBefore", r.ConditionsSeenBefore); err != nil {
		return r, err
	}
	if r.At.IsZero() {
		r.At = now
	}
	r.At = Time(r.At)
	return r, nil
}

// CheckAlertFilter checks an AlertFilter.
func CheckAlertFilter(f store.AlertFilter) error {
	if f.Limit < 0 {
		return fmt.Errorf("%w: list alerts: limit %d", store.ErrInvalidArgument, f.Limit)
	}
	return nil
}

// MatchAlert reports whether a (with all its deliveries) passes f, Limit
// aside.
func MatchAlert(a *store.Alert, f store.AlertFilter) bool {
	if a.Seq <= f.AfterSeq || (f.Kind != "" && a.Kind != f.Kind) || (f.TaskID != "" && a.TaskID != f.TaskID) {
		return false
	}
	if f.Teams != nil && (a.Team == "" || !slices.Contains(f.Teams, a.Team)) {
		return false
	}
	if f.Undelivered {
		for _, d := range a.Deliveries {
			if d.State != store.DeliveryDelivered {
				return true
			}
		}
		return false
	}
	return true
}

// CheckDeleteAlerts checks DeleteAlerts' argument.
func CheckDeleteAlerts(before time.Time) error {
	if before.IsZero() {
		return fmt.Errorf("%w: delete alerts: before is zero", store.ErrInvalidArgument)
	}
	return checkTimes("delete alerts before", before)
}
