package audit

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Limits on the number of records one query returns, as in the anchor
// product.
const (
	// DefaultLimit is the Limit of a Filter that sets none.
	DefaultLimit = 1000
	// MaxLimit is the largest Limit accepted.
	MaxLimit = 10000
)

// ErrInvalidFilter is returned, wrapped with the field at fault, by
// [Filter.Normalize].
var ErrInvalidFilter = errors.New("invalid audit filter")

// Filter selects audit records. Empty fields match everything; the set
// fields must all match. Records are returned in Seq order.
type Filter struct {
	// Start is the earliest time included; zero means no lower bound.
	Start time.Time
	// End is the first time excluded (the range is [Start, End)); zero means
	// no upper bound.
	End time.Time
	// Actor matches the record's actor exactly.
	Actor string
	// Action matches the record's action exactly, or by prefix when it ends
	// with "." or ".*": "task." and "task.*" both match "task.create" and
	// "task.attempt.failed". "*" matches every action.
	Action string
	// EntityType matches the record's entity type exactly.
	EntityType string
	// EntityID matches the record's entity id or name exactly.
	EntityID string
	// Team matches the record's team exactly (a team admin's queries are
	// restricted to their team this way). The record's team is the team's
	// id (records written before teams had ids carry its name, which is
	// the id those teams were given). rediacc.AuditLog takes a team name
	// here and resolves it to the live team's id before the query.
	Team string
	// TeamID, when set, must also match the record's team exactly. It is
	// how rediacc.AuditLog's callers name a team by id (a deleted team's
	// included); stores receive the resolved id in Team.
	TeamID string
	// Result matches the record's result: "", ResultOK, ResultDenied or ResultError.
	Result string
	// AfterSeq, when positive, keeps only records with a larger Seq: the
	// cursor for the next page is the last Seq of the previous one.
	AfterSeq int64
	// Limit is the most records returned: 0 means DefaultLimit; 1..MaxLimit.
	Limit int
}

// Normalize checks f and returns it with defaults filled in: Limit 0 becomes
// [DefaultLimit], times are converted to UTC, and an Action ending in ".*"
// is rewritten to end in "." ("*" alone becomes ""), so that after Normalize
// an Action ending in "." is a prefix and any other is exact. Errors wrap
// [ErrInvalidFilter]: a Limit outside 0..MaxLimit, a negative AfterSeq, an
// End before Start, an unknown Result.
func (f Filter) Normalize() (Filter, error) {
	switch {
	case f.Limit < 0 || f.Limit > MaxLimit:
		return f, fmt.Errorf("%w: limit %d is out of range 1..%d (0 means %d)", ErrInvalidFilter, f.Limit, MaxLimit, DefaultLimit)
	case f.AfterSeq < 0:
		return f, fmt.Errorf("%w: negative after-seq %d", ErrInvalidFilter, f.AfterSeq)
	case !f.Start.IsZero() && !f.End.IsZero() && f.End.Before(f.Start):
		return f, fmt.Errorf("%w: end %s is before start %s", ErrInvalidFilter,
			f.End.UTC().Format(time.RFC3339Nano), f.Start.UTC().Format(time.RFC3339Nano))
	}
	switch f.Result {
	case "", ResultOK, ResultDenied, ResultError:
	default:
		return f, fmt.Errorf("%w: result %q is not %q, %q or %q", ErrInvalidFilter, f.Result, ResultOK, ResultDenied, ResultError)
	}
	if f.Limit == 0 {
		f.Limit = DefaultLimit
	}
	if !f.Start.IsZero() {
		f.Start = f.Start.UTC()
	}
	if !f.End.IsZero() {
		f.End = f.End.UTC()
	}
	f.Action = normalizeAction(f.Action)
	return f, nil
}

func normalizeAction(a string) string {
	if a == "*" {
		return ""
	}
	if strings.HasSuffix(a, ".*") {
		return strings.TrimSuffix(a, "*")
	}
	return a
}

// ActionPrefix returns the action to match and whether it is a prefix (see
// [Filter.Action]), for store engines translating the filter to a query.
func (f Filter) ActionPrefix() (action string, prefix bool) {
	a := normalizeAction(f.Action)
	return a, strings.HasSuffix(a, ".")
}

// Match reports whether r passes every condition of f except Limit. It does
// not need f to be normalized.
func (f Filter) Match(r Record) bool {
	if !f.Start.IsZero() && r.Time.Before(f.Start) {
		return false
	}
	if !f.End.IsZero() && !r.Time.Before(f.End) {
		return false
	}
	if f.AfterSeq > 0 && r.Seq <= f.AfterSeq {
		return false
	}
	if a, prefix := f.ActionPrefix(); a != "" {
		if prefix && !strings.HasPrefix(r.Action, a) || !prefix && r.Action != a {
			return false
		}
	}
	return (f.Actor == "" || r.Actor == f.Actor) &&
		(f.EntityType == "" || r.EntityType == f.EntityType) &&
		(f.EntityID == "" || r.EntityID == f.EntityID) &&
		(f.Team == "" || r.Team == f.Team) &&
		(f.TeamID == "" || r.Team == f.TeamID) &&
		(f.Result == "" || r.Result == f.Result)
}
