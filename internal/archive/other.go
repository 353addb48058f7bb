package archive

import (
	"context"
	"time"
)

// Archives kept elsewhere than in segment files (a database table, see
// internal/store/postgres) implement [Log] with the same semantics and use
// these helpers, so that every Log agrees (archivetest checks it).

// CheckKind returns [ErrInvalidKind] unless kind is a valid kind name
// ([a-z][a-z0-9_-]{0,31}).
func CheckKind(kind string) error { return checkKind(kind) }

// Day returns the archive day ("2006-01-02", UTC) of an instant of
// [Options].Clock: records are grouped by the day they were appended, and
// [Options].Retention removes whole days.
func Day(t time.Time) string { return t.UTC().Format(dayLayout) }

// LastExpiredDay returns the newest day that [Options].Retention removes at
// now: a day is removed once the whole of it is older than now −
// retention. ok is false when retention keeps everything (≤ 0). Days
// compare as strings.
func LastExpiredDay(now time.Time, retention time.Duration) (day string, ok bool) {
	if retention <= 0 {
		return "", false
	}
	return Day(now.Add(-retention).Add(-24 * time.Hour)), true
}

// Indexed is implemented by archives that find records by key without
// reading the archive (a database index): Prune asks them which tasks are
// archived already instead of scanning.
type Indexed interface {
	// Contains returns the keys among keys that have at least one record
	// of kind.
	Contains(ctx context.Context, kind string, keys []string) (map[string]bool, error)
}

// BatchAppender is implemented by archives that write several records in
// one batch ([Archive.AppendMany], [Memory.AppendMany]); for others, call
// Append for each.
type BatchAppender interface {
	AppendMany(ctx context.Context, kind string, recs []Record) error
}

var (
	_ BatchAppender = (*Archive)(nil)
	_ BatchAppender = (*Memory)(nil)
)
