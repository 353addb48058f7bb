// Package archivetest is the conformance test of archive.Log
// implementations: the file archive, the in-memory one and the PostgreSQL
// store's table give the same answers.
package archivetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/archive"
)

// Run runs the scenarios on logs made by open (a new, empty archive each
// time, with the options given).
func Run(t *testing.T, open func(t *testing.T, opts archive.Options) archive.Log) {
	t.Run("AppendLookupScanPrune", func(t *testing.T) { roundTrip(t, open) })
	t.Run("KindsApart", func(t *testing.T) { kindsApart(t, open) })
	t.Run("Errors", func(t *testing.T) { errorsOf(t, open) })
}

func keys(t *testing.T, l archive.Log, kind string) []string {
	t.Helper()
	var ks []string
	if err := l.Scan(context.Background(), kind, func(k string, _ time.Time, _ json.RawMessage) error {
		ks = append(ks, k)
		return nil
	}); err != nil {
		t.Fatalf("Scan %s: %v", kind, err)
	}
	return ks
}

func roundTrip(t *testing.T, open func(*testing.T, archive.Options) archive.Log) {
	ctx := context.Background()
	day := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	now := day
	l := open(t, archive.Options{Retention: 48 * time.Hour, Clock: func() time.Time { return now }})
	for i, k := range []string{"a", "b", "a"} {
		if err := l.Append(ctx, archive.KindTask, k, day.Add(time.Duration(i)*time.Nanosecond), map[string]int{"n": i}); err != nil {
			t.Fatal(err)
		}
	}
	now = day.Add(72 * time.Hour)
	if err := l.Append(ctx, archive.KindTask, "c", now, map[string]int{"n": 3}); err != nil {
		t.Fatal(err)
	}
	got, err := l.Lookup(ctx, archive.KindTask, "a")
	if err != nil || len(got) != 2 || string(got[0]) != `{"n":2}` || string(got[1]) != `{"n":0}` {
		t.Fatalf("Lookup a (newest first): %s %v", got, err)
	}
	if got, err := l.Lookup(ctx, archive.KindTask, "zz"); err != nil || len(got) != 0 {
		t.Fatalf("Lookup of a missing key: %s %v", got, err)
	}
	var ats []time.Time
	if err := l.Scan(ctx, archive.KindTask, func(_ string, at time.Time, _ json.RawMessage) error {
		ats = append(ats, at)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(ats) != 4 || !ats[2].Equal(day.Add(2*time.Nanosecond)) || ats[2].Location() != time.UTC {
		t.Fatalf("Scan times: %v (want the appended instants, UTC, exact)", ats)
	}
	if ks := keys(t, l, archive.KindTask); !slices.Equal(ks, []string{"a", "b", "a", "c"}) {
		t.Fatalf("Scan (oldest first): %v", ks)
	}
	if ix, ok := l.(archive.Indexed); ok {
		has, err := ix.Contains(ctx, archive.KindTask, []string{"a", "c", "zz"})
		if err != nil || !has["a"] || !has["c"] || has["zz"] || len(has) != 2 {
			t.Fatalf("Contains: %v %v", has, err)
		}
	}
	// Retention 48 h at day+72h: the first day is gone, the last kept.
	removed, err := l.Prune(ctx, now)
	if err != nil || len(removed) != 1 {
		t.Fatalf("Prune: %v %v", removed, err)
	}
	if ks := keys(t, l, archive.KindTask); !slices.Equal(ks, []string{"c"}) {
		t.Fatalf("Scan after Prune: %v", ks)
	}
	if removed, err := l.Prune(ctx, now); err != nil || len(removed) != 0 {
		t.Fatalf("second Prune: %v %v", removed, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(ctx, archive.KindTask, "d", now, 1); !errors.Is(err, archive.ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	if got, err := l.Lookup(ctx, archive.KindTask, "c"); err != nil || len(got) != 1 {
		t.Fatalf("Lookup after Close: %s %v", got, err)
	}
}

// kindsApart: kinds do not see each other's records, a scan of many
// records keeps append order, and a log without retention prunes nothing.
func kindsApart(t *testing.T, open func(*testing.T, archive.Options) archive.Log) {
	ctx := context.Background()
	l := open(t, archive.Options{})
	defer l.Close()
	const n = 2500 // more than one page of a paged reader
	for i := range n {
		kind := archive.KindAudit
		if i%5 == 0 {
			kind = archive.KindTask
		}
		if err := l.Append(ctx, kind, fmt.Sprint(i), time.Unix(int64(i), 0), i); err != nil {
			t.Fatal(err)
		}
	}
	ks := keys(t, l, archive.KindAudit)
	if len(ks) != n-n/5 {
		t.Fatalf("%d audit records, want %d", len(ks), n-n/5)
	}
	for i, k := range ks {
		want := i + i/4 + 1 // the audit keys skip every multiple of 5
		if k != fmt.Sprint(want) {
			t.Fatalf("audit record %d has key %s, want %d", i, k, want)
		}
	}
	if got, err := l.Lookup(ctx, archive.KindAudit, "5"); err != nil || len(got) != 0 {
		t.Fatalf("key 5 is a task, found as audit: %s %v", got, err)
	}
	if removed, err := l.Prune(ctx, time.Now().Add(1000*24*time.Hour)); err != nil || len(removed) != 0 {
		t.Fatalf("Prune without retention: %v %v", removed, err)
	}
}

func errorsOf(t *testing.T, open func(*testing.T, archive.Options) archive.Log) {
	ctx := context.Background()
	l := open(t, archive.Options{SegmentMaxBytes: 1024})
	defer l.Close()
	if err := l.Append(ctx, "Bad Kind", "k", time.Now(), 1); !errors.Is(err, archive.ErrInvalidKind) {
		t.Fatalf("bad kind: %v", err)
	}
	if err := l.Append(ctx, archive.KindTask, "", time.Now(), 1); !errors.Is(err, archive.ErrEmptyKey) {
		t.Fatalf("empty key: %v", err)
	}
	if _, err := l.Lookup(ctx, archive.KindTask, ""); !errors.Is(err, archive.ErrEmptyKey) {
		t.Fatalf("Lookup of an empty key: %v", err)
	}
	if err := l.Append(ctx, archive.KindTask, "big", time.Now(), string(make([]byte, 2000))); !errors.Is(err, archive.ErrTooLarge) {
		t.Fatalf("record over SegmentMaxBytes: %v", err)
	}
	if err := l.Append(ctx, archive.KindTask, "x", time.Now(), func() {}); err == nil {
		t.Fatal("a value JSON cannot encode was archived")
	}
	if ks := keys(t, l, archive.KindTask); len(ks) != 0 {
		t.Fatalf("failed appends left records: %v", ks)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := l.Append(cctx, archive.KindTask, "k", time.Now(), 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with a cancelled context: %v", err)
	}
}
