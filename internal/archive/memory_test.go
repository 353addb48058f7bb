package archive

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"
)

// TestLogsAgree runs one scenario on a file archive and an in-memory one:
// both give the same answers.
func TestLogsAgree(t *testing.T) {
	day := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	now := day
	clock := func() time.Time { return now }
	opts := Options{Retention: 48 * time.Hour, Clock: clock}
	fa, err := Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	for name, l := range map[string]Log{"file": fa, "memory": NewMemory(opts)} {
		t.Run(name, func(t *testing.T) {
			now = day
			ctx := context.Background()
			for i, k := range []string{"a", "b", "a"} {
				if err := l.Append(ctx, "task", k, day, map[string]int{"n": i}); err != nil {
					t.Fatal(err)
				}
			}
			now = day.Add(72 * time.Hour)
			if err := l.Append(ctx, "task", "c", now, map[string]int{"n": 3}); err != nil {
				t.Fatal(err)
			}
			got, err := l.Lookup(ctx, "task", "a")
			if err != nil || len(got) != 2 || string(got[0]) != `{"n":2}` || string(got[1]) != `{"n":0}` {
				t.Fatalf("Lookup: %s %v", got, err)
			}
			var keys []string
			if err := l.Scan(ctx, "task", func(k string, _ time.Time, _ json.RawMessage) error { keys = append(keys, k); return nil }); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(keys, []string{"a", "b", "a", "c"}) {
				t.Fatalf("Scan: %v", keys)
			}
			removed, err := l.Prune(ctx, now)
			if err != nil || len(removed) != 1 {
				t.Fatalf("Prune: %v %v", removed, err)
			}
			keys = nil
			_ = l.Scan(ctx, "task", func(k string, _ time.Time, _ json.RawMessage) error { keys = append(keys, k); return nil })
			if !slices.Equal(keys, []string{"c"}) {
				t.Fatalf("Scan after Prune: %v", keys)
			}
			if err := l.Append(ctx, "Bad Kind", "k", now, 1); !errors.Is(err, ErrInvalidKind) {
				t.Fatalf("bad kind: %v", err)
			}
			if err := l.Append(ctx, "task", "", now, 1); !errors.Is(err, ErrEmptyKey) {
				t.Fatalf("empty key: %v", err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if err := l.Append(ctx, "task", "d", now, 1); !errors.Is(err, ErrClosed) {
				t.Fatalf("Append after Close: %v", err)
			}
			if got, err := l.Lookup(ctx, "task", "c"); err != nil || len(got) != 1 {
				t.Fatalf("Lookup after Close: %s %v", got, err)
			}
		})
	}
}
