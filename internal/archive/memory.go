package archive

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"
)

// Log is what an archive offers: [*Archive] keeps it in segment files,
// [*Memory] in the process (for a client whose store lives in memory too,
// so that it writes nothing to disk).
type Log interface {
	Append(ctx context.Context, kind, key string, at time.Time, v any) error
	Lookup(ctx context.Context, kind, key string) ([]json.RawMessage, error)
	Scan(ctx context.Context, kind string, fn func(key string, at time.Time, raw json.RawMessage) error) error
	Prune(ctx context.Context, now time.Time) ([]string, error)
	Close() error
}

var (
	_ Log = (*Archive)(nil)
	_ Log = (*Memory)(nil)
)

// Memory is an archive held in memory, with the semantics of [Archive]:
// records by kind, a "segment" per UTC day of [Options].Clock at Append,
// Lookup newest first, Scan oldest first, Prune by [Options].Retention,
// Append refused after Close (reads still work). SegmentMaxBytes bounds a
// record ([ErrTooLarge]). It is safe for concurrent use; its records go
// with the process.
type Memory struct {
	opts Options

	mu     sync.Mutex
	kinds  map[string][]memRecord // by kind, in append order
	closed bool
}

type memRecord struct {
	key string
	at  time.Time
	day string
	raw json.RawMessage
}

// NewMemory returns an empty in-memory archive.
func NewMemory(opts Options) *Memory {
	if opts.SegmentMaxBytes <= 0 {
		opts.SegmentMaxBytes = DefaultSegmentMaxBytes
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	return &Memory{opts: opts, kinds: map[string][]memRecord{}}
}

// Append archives v under kind and key, as [Archive.Append] does.
func (m *Memory) Append(ctx context.Context, kind, key string, at time.Time, v any) error {
	return m.AppendMany(ctx, kind, []Record{{Key: key, At: at, V: v}})
}

// AppendMany archives recs under kind, in order, as [Archive.AppendMany]
// does: all or, when one cannot be archived, none.
func (m *Memory) AppendMany(ctx context.Context, kind string, recs []Record) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	add := make([]memRecord, len(recs))
	day := m.opts.Clock().UTC().Format(dayLayout)
	for i, r := range recs {
		if r.Key == "" {
			return ErrEmptyKey
		}
		raw, err := json.Marshal(r.V)
		if err != nil {
			return fmt.Errorf("archive: append %s %q: %w", kind, r.Key, err)
		}
		if int64(len(raw)) > m.opts.SegmentMaxBytes {
			return fmt.Errorf("%w: %s %q is %d bytes, limit %d", ErrTooLarge, kind, r.Key, len(raw), m.opts.SegmentMaxBytes)
		}
		add[i] = memRecord{key: r.Key, at: r.At.UTC(), day: day, raw: raw}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.kinds[kind] = append(m.kinds[kind], add...)
	return nil
}

// records returns a snapshot of kind's records.
func (m *Memory) records(kind string) []memRecord {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.kinds[kind])
}

// Lookup returns every record archived under kind and key, newest first.
func (m *Memory) Lookup(ctx context.Context, kind, key string) ([]json.RawMessage, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	if key == "" {
		return nil, ErrEmptyKey
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []json.RawMessage
	recs := m.records(kind)
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].key == key {
			out = append(out, recs[i].raw)
		}
	}
	return out, nil
}

// Scan calls fn for every record of kind, oldest first; it stops at fn's
// error or ctx's, returned unchanged.
func (m *Memory) Scan(ctx context.Context, kind string, fn func(key string, at time.Time, raw json.RawMessage) error) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	for _, r := range m.records(kind) {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(r.key, r.at, r.raw); err != nil {
			return err
		}
	}
	return nil
}

// Prune removes the records of every day older than now − Retention, as
// [Archive.Prune] removes segments, and returns the days removed as
// "memory:KIND/DAY". With Retention 0 it removes nothing.
func (m *Memory) Prune(ctx context.Context, now time.Time) ([]string, error) {
	if m.opts.Retention <= 0 {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cutoff := now.Add(-m.opts.Retention)
	m.mu.Lock()
	defer m.mu.Unlock()
	var removed []string
	for _, kind := range slices.Sorted(maps.Keys(m.kinds)) {
		seen := map[string]bool{}
		kept := m.kinds[kind][:0]
		for _, r := range m.kinds[kind] {
			day, _ := time.Parse(dayLayout, r.day)
			if day.Add(24 * time.Hour).After(cutoff) {
				kept = append(kept, r)
				continue
			}
			if !seen[r.day] {
				seen[r.day] = true
				removed = append(removed, "memory:"+kind+"/"+r.day)
			}
		}
		clear(m.kinds[kind][len(kept):])
		m.kinds[kind] = kept
	}
	return removed, nil
}

// Close makes further Appends fail with [ErrClosed]; reads still work.
func (m *Memory) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	return nil
}
