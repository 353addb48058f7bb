package archive

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(appendChildEnv); dir != "" {
		appendChild(dir) // batch_test.go: appends until killed
	}
	goleak.VerifyTestMain(m)
}

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

var day0 = time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)

type rec struct {
	ID  string `json:"id"`
	N   int    `json:"n"`
	Out string `json:"out,omitempty"`
}

func open(t *testing.T, dir string, opts Options) *Archive {
	t.Helper()
	a, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func mustAppend(t *testing.T, a *Archive, kind, key string, at time.Time, v any) {
	t.Helper()
	if err := a.Append(context.Background(), kind, key, at, v); err != nil {
		t.Fatal(err)
	}
}

type scanned struct {
	Key string
	At  time.Time
	V   rec
}

func scanAll(t *testing.T, a *Archive, kind string) ([]scanned, error) {
	t.Helper()
	var out []scanned
	err := a.Scan(context.Background(), kind, func(key string, at time.Time, raw json.RawMessage) error {
		var r rec
		if err := json.Unmarshal(raw, &r); err != nil {
			t.Fatalf("record %s: %v", raw, err)
		}
		out = append(out, scanned{key, at, r})
		return nil
	})
	return out, err
}

func segNames(t *testing.T, dir, kind string) []string {
	t.Helper()
	segs, err := listSegments(filepath.Join(dir, kind))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range segs {
		names = append(names, filepath.Base(s.path))
	}
	return names
}

func lookupNs(t *testing.T, a *Archive, kind, key string) ([]int, error) {
	t.Helper()
	raws, err := a.Lookup(context.Background(), kind, key)
	var ns []int
	for _, raw := range raws {
		var r rec
		if err := json.Unmarshal(raw, &r); err != nil {
			t.Fatal(err)
		}
		ns = append(ns, r.N)
	}
	return ns, err
}

func TestAppendLookupScanRoundTrip(t *testing.T) {
	for _, compact := range []bool{true, false} {
		t.Run(fmt.Sprintf("compaction=%v", compact), func(t *testing.T) {
			dir := t.TempDir()
			c := &clock{t: day0}
			a := open(t, dir, Options{Clock: c.Now, DisableCompaction: !compact})
			paris := time.FixedZone("CET", 3600)
			var want []scanned
			for i := range 6 {
				key := fmt.Sprintf("task-%d", i%3)
				at := day0.Add(time.Duration(i) * time.Second).In(paris)
				mustAppend(t, a, KindTask, key, at, rec{ID: key, N: i})
				want = append(want, scanned{key, at.UTC(), rec{ID: key, N: i}})
			}
			mustAppend(t, a, KindAudit, "1", day0, json.RawMessage(`{"id":"a","n":100}`))

			// Readable while the segment is open.
			got, err := scanAll(t, a, KindTask)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Fatalf("scan of the open segment (-want +got):\n%s", d)
			}
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			if err := a.Append(context.Background(), KindTask, "x", day0, rec{}); !errors.Is(err, ErrClosed) {
				t.Fatalf("Append after Close = %v, want ErrClosed", err)
			}

			// Reopen: a new segment of the same day; reads span both.
			a = open(t, dir, Options{Clock: c.Now, DisableCompaction: !compact})
			mustAppend(t, a, KindTask, "task-1", day0, rec{ID: "task-1", N: 6})
			want = append(want, scanned{"task-1", day0, rec{ID: "task-1", N: 6}})
			if d := cmp.Diff([]string{"2026-11-29.0001.jsonl.gz", "2026-11-29.0002.jsonl.gz"}, segNames(t, dir, KindTask)); d != "" {
				t.Fatalf("segments (-want +got):\n%s", d)
			}
			got, err = scanAll(t, a, KindTask)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Fatalf("scan (-want +got):\n%s", d)
			}
			ns, err := lookupNs(t, a, KindTask, "task-1")
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff([]int{6, 4, 1}, ns); d != "" {
				t.Fatalf("lookup newest first (-want +got):\n%s", d)
			}
			if ns, err := lookupNs(t, a, KindTask, "nope"); err != nil || ns != nil {
				t.Fatalf("lookup of a missing key = %v, %v", ns, err)
			}
			if ns, err := lookupNs(t, a, KindAudit, "1"); err != nil || !cmp.Equal(ns, []int{100}) {
				t.Fatalf("audit lookup = %v, %v", ns, err)
			}
			if ns, err := lookupNs(t, a, "other", "1"); err != nil || ns != nil {
				t.Fatalf("lookup in a kind never written = %v, %v", ns, err)
			}
		})
	}
}

func TestOpenSegmentReadableByGzip(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, Options{Clock: (&clock{t: day0}).Now})
	for i := range 3 {
		mustAppend(t, a, KindTask, "k", day0, rec{N: i})
	}
	// A plain multistream gzip reader (what zcat does) reads the segment
	// while it is still open for appending.
	f, err := os.Open(filepath.Join(dir, "task", "2026-11-29.0001.jsonl.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], `{"key":"k","at":"2026-11-29T10:00:00Z","v":{"id":"","n":0}}`) {
		t.Fatalf("segment content:\n%s", b)
	}
}

func TestRolloverBySize(t *testing.T) {
	for _, compact := range []bool{true, false} {
		t.Run(fmt.Sprintf("compaction=%v", compact), func(t *testing.T) {
			dir := t.TempDir()
			const max = 400
			a := open(t, dir, Options{SegmentMaxBytes: max, Clock: (&clock{t: day0}).Now, DisableCompaction: !compact})
			var want []scanned
			for i := range 20 {
				r := rec{ID: "t", N: i, Out: strings.Repeat("x", 50)}
				mustAppend(t, a, KindTask, "t", day0, r)
				want = append(want, scanned{"t", day0, r})
			}
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			names := segNames(t, dir, KindTask)
			if len(names) < 5 {
				t.Fatalf("%d segments for 20 records of ~100 bytes with a 400-byte limit: %v", len(names), names)
			}
			for i, n := range names {
				if want := fmt.Sprintf("2026-11-29.%04d.jsonl.gz", i+1); n != want {
					t.Fatalf("segment %d is %s, want %s", i, n, want)
				}
				if size := uncompressedSize(t, filepath.Join(dir, KindTask, n)); size > max || size == 0 {
					t.Fatalf("segment %s holds %d bytes, limit %d", n, size, max)
				}
			}
			got, err := scanAll(t, a, KindTask)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Fatalf("scan across segments (-want +got):\n%s", d)
			}
		})
	}
}

func uncompressedSize(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return len(b)
}

func TestRolloverByDay(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: day0}
	a := open(t, dir, Options{Clock: c.Now})
	mustAppend(t, a, KindTask, "a", day0, rec{N: 1})
	c.Set(day0.Add(13*time.Hour + 59*time.Minute)) // 23:59 UTC, same day
	mustAppend(t, a, KindTask, "a", day0, rec{N: 2})
	// 00:30 the next day in UTC, though still the 29th in New York: days are UTC.
	c.Set(time.Date(2026, 11, 29, 19, 30, 0, 0, time.FixedZone("EST", -5*3600)))
	mustAppend(t, a, KindTask, "a", day0, rec{N: 3})
	c.Set(day0.Add(72 * time.Hour))
	mustAppend(t, a, KindTask, "a", day0, rec{N: 4})
	mustAppend(t, a, KindAudit, "s", day0, rec{N: 5})
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	want := []string{"2026-11-29.0001.jsonl.gz", "2026-11-30.0001.jsonl.gz", "2026-12-02.0001.jsonl.gz"}
	if d := cmp.Diff(want, segNames(t, dir, KindTask)); d != "" {
		t.Fatalf("task segments (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"2026-12-02.0001.jsonl.gz"}, segNames(t, dir, KindAudit)); d != "" {
		t.Fatalf("audit segments (-want +got):\n%s", d)
	}
	ns, err := lookupNs(t, a, KindTask, "a")
	if err != nil || !cmp.Equal(ns, []int{4, 3, 2, 1}) {
		t.Fatalf("lookup = %v, %v", ns, err)
	}
}

func TestSegmentOrderIsNumeric(t *testing.T) {
	dir := t.TempDir()
	kdir := filepath.Join(dir, KindTask)
	os.MkdirAll(kdir, 0o700)
	// Sequence 10000 sorts after 9999 although it is longer.
	for _, seq := range []int{10000, 9999, 2} {
		writeSegment(t, filepath.Join(kdir, segmentName("2026-11-29", seq)), fmt.Sprintf(`{"key":"k","at":"2026-11-29T00:00:00Z","v":{"n":%d}}`, seq))
	}
	writeSegment(t, filepath.Join(kdir, segmentName("2026-11-28", 5)), `{"key":"k","at":"2026-11-28T00:00:00Z","v":{"n":1}}`)
	os.WriteFile(filepath.Join(kdir, "README"), []byte("not a segment"), 0o600)
	a := open(t, dir, Options{})
	got, err := scanAll(t, a, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	var ns []int
	for _, s := range got {
		ns = append(ns, s.V.N)
	}
	if d := cmp.Diff([]int{1, 2, 9999, 10000}, ns); d != "" {
		t.Fatalf("scan order (-want +got):\n%s", d)
	}
	// The next segment of that day continues after the highest number.
	a2 := open(t, dir, Options{Clock: (&clock{t: day0}).Now})
	mustAppend(t, a2, KindTask, "k", day0, rec{})
	if _, err := os.Stat(filepath.Join(kdir, "2026-11-29.10001.jsonl.gz")); err != nil {
		t.Fatal(err)
	}
}

// writeSegment writes lines as one gzip member per line.
func writeSegment(t *testing.T, path string, lines ...string) []int64 {
	t.Helper()
	var buf bytes.Buffer
	var offsets []int64
	for _, l := range lines {
		offsets = append(offsets, int64(buf.Len()))
		if err := gzipMember(&buf, []byte(l+"\n")); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return offsets
}

func TestRetention(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: day0}
	a := open(t, dir, Options{Clock: c.Now, Retention: 48 * time.Hour})
	for d := range 5 { // days 29, 30, 1, 2, 3
		c.Set(day0.Add(time.Duration(d) * 24 * time.Hour))
		mustAppend(t, a, KindTask, "k", c.Now(), rec{N: d})
		mustAppend(t, a, KindAudit, "k", c.Now(), rec{N: d})
	}
	// now = Dec 3 10:00; cutoff Dec 1 10:00: segments of Nov 29 and Nov 30
	// are wholly older; Dec 1 (ends Dec 2 00:00) is not.
	removed, err := a.Prune(context.Background(), c.Now())
	if err != nil {
		t.Fatal(err)
	}
	var rel []string
	for _, p := range removed {
		r, _ := filepath.Rel(dir, p)
		rel = append(rel, r)
	}
	want := []string{
		"audit/2026-11-29.0001.jsonl.gz", "audit/2026-11-30.0001.jsonl.gz",
		"task/2026-11-29.0001.jsonl.gz", "task/2026-11-30.0001.jsonl.gz",
	}
	if d := cmp.Diff(want, rel); d != "" {
		t.Fatalf("removed (-want +got):\n%s", d)
	}
	ns, err := lookupNs(t, a, KindTask, "k")
	if err != nil || !cmp.Equal(ns, []int{4, 3, 2}) {
		t.Fatalf("after prune lookup = %v, %v", ns, err)
	}
	// The segment still open for appending is never removed, whatever its day.
	removed, err = a.Prune(context.Background(), c.Now().Add(365*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 4 {
		t.Fatalf("removed %v, want the 4 closed segments", removed)
	}
	if d := cmp.Diff([]string{"2026-12-03.0001.jsonl.gz"}, segNames(t, dir, KindTask)); d != "" {
		t.Fatalf("left (-want +got):\n%s", d)
	}

	// Retention 0 keeps everything.
	a0 := open(t, dir, Options{})
	if removed, err := a0.Prune(context.Background(), c.Now().Add(10*365*24*time.Hour)); err != nil || removed != nil {
		t.Fatalf("Prune with no retention = %v, %v", removed, err)
	}
}

func TestFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "archive")
	a := open(t, dir, Options{SegmentMaxBytes: 200, Clock: (&clock{t: day0}).Now})
	for i := range 5 {
		mustAppend(t, a, KindTask, "k", day0, rec{N: i, Out: strings.Repeat("y", 60)})
		mustAppend(t, a, KindAudit, "k", day0, rec{N: i})
	}
	if err := a.Close(); err != nil { // also waits for compaction (rename of a temp file)
		t.Fatal(err)
	}
	n := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		} else {
			n++
		}
		if info.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", path, info.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 3 {
		t.Fatalf("only %d files", n)
	}
}

func TestTruncatedLastMember(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: day0}
	a := open(t, dir, Options{Clock: c.Now, DisableCompaction: true})
	path := filepath.Join(dir, KindTask, "2026-11-29.0001.jsonl.gz")
	mustAppend(t, a, KindTask, "k", day0, rec{N: 0})
	mustAppend(t, a, KindTask, "k", day0, rec{N: 1})
	st, _ := os.Stat(path)
	third := st.Size()
	mustAppend(t, a, KindTask, "k", day0, rec{N: 2})
	a.Close()
	st, _ = os.Stat(path)
	// A crash mid-write: the third member is cut short.
	if err := os.Truncate(path, st.Size()-5); err != nil {
		t.Fatal(err)
	}

	a = open(t, dir, Options{Clock: c.Now})
	got, err := scanAll(t, a, KindTask)
	var ce *CorruptSegmentError
	if !errors.As(err, &ce) || ce.Path != path || ce.Offset != third || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("scan error = %v, want a CorruptSegmentError at %s:%d wrapping io.ErrUnexpectedEOF", err, path, third)
	}
	if len(got) != 2 || got[1].V.N != 1 {
		t.Fatalf("scan got %+v, want the first two records", got)
	}
	// Appending goes to a new segment, never after the torn member.
	mustAppend(t, a, KindTask, "k", day0, rec{N: 3})
	ns, err := lookupNs(t, a, KindTask, "k")
	if !errors.As(err, &ce) || !cmp.Equal(ns, []int{3, 1, 0}) {
		t.Fatalf("lookup = %v, %v", ns, err)
	}
}

func TestGarbageSegmentInTheMiddle(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: day0}
	a := open(t, dir, Options{Clock: c.Now})
	for d := range 3 {
		c.Set(day0.Add(time.Duration(d) * 24 * time.Hour))
		mustAppend(t, a, KindTask, "k", c.Now(), rec{N: d})
	}
	a.Close()
	bad := filepath.Join(dir, KindTask, "2026-11-30.0001.jsonl.gz")
	if err := os.WriteFile(bad, []byte("this is not gzip at all\x00\x01\x02"), 0o600); err != nil {
		t.Fatal(err)
	}

	a = open(t, dir, Options{})
	got, err := scanAll(t, a, KindTask)
	var ce *CorruptSegmentError
	if !errors.As(err, &ce) || ce.Path != bad || ce.Offset != 0 || !errors.Is(err, gzip.ErrHeader) {
		t.Fatalf("scan error = %v, want a CorruptSegmentError for %s", err, bad)
	}
	if len(got) != 2 || got[0].V.N != 0 || got[1].V.N != 2 {
		t.Fatalf("scan got %+v, want the records of the other two days", got)
	}
	ns, err := lookupNs(t, a, KindTask, "k")
	if !errors.As(err, &ce) || !cmp.Equal(ns, []int{2, 0}) {
		t.Fatalf("lookup = %v, %v", ns, err)
	}
}

func TestDamageInsideASegment(t *testing.T) {
	dir := t.TempDir()
	kdir := filepath.Join(dir, KindTask)
	os.MkdirAll(kdir, 0o700)
	path := filepath.Join(kdir, "2026-11-29.0001.jsonl.gz")
	var lines []string
	for i := range 6 {
		lines = append(lines, fmt.Sprintf(`{"key":"k","at":"2026-11-29T00:00:00Z","v":{"n":%d,"out":"some output %d"}}`, i, i))
	}
	lines[4] = `{"key":"k","at":"2026-11-29T00:00:00Z","v":` // not JSON
	offsets := writeSegment(t, path, lines...)
	b, _ := os.ReadFile(path)
	// Flip bytes in the deflate data of member 1 and member 2 (adjacent
	// damage: one report).
	b[offsets[1]+15] ^= 0xff
	b[offsets[2]+15] ^= 0xff
	os.WriteFile(path, b, 0o600)

	a := open(t, dir, Options{})
	got, err := scanAll(t, a, KindTask)
	var ns []int
	for _, s := range got {
		ns = append(ns, s.V.N)
	}
	if !cmp.Equal(ns, []int{0, 3, 5}) {
		t.Fatalf("scan got %v, want 0, 3, 5 (1 and 2 damaged, 4 invalid)", ns)
	}
	var offs []int64
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var ce *CorruptSegmentError
		if !errors.As(e, &ce) {
			t.Fatalf("error %v is not a CorruptSegmentError", e)
		}
		offs = append(offs, ce.Offset)
	}
	if d := cmp.Diff([]int64{offsets[1], offsets[4]}, offs); d != "" {
		t.Fatalf("damage offsets (-want +got):\n%s\nerr: %v", d, err)
	}
}

func TestScanStopsOnCallbackError(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, Options{Clock: (&clock{t: day0}).Now})
	for i := range 3 {
		mustAppend(t, a, KindAudit, "k", day0, rec{N: i})
	}
	stop := errors.New("stop")
	n := 0
	err := a.Scan(context.Background(), KindAudit, func(string, time.Time, json.RawMessage) error {
		n++
		return stop
	})
	if err != stop || n != 1 {
		t.Fatalf("Scan = %v after %d calls, want stop after 1", err, n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := a.Scan(ctx, KindAudit, func(string, time.Time, json.RawMessage) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("Scan with a cancelled context = %v", err)
	}
	if _, err := a.Lookup(ctx, KindAudit, "k"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Lookup with a cancelled context = %v", err)
	}
}

func TestAppendErrors(t *testing.T) {
	a := open(t, t.TempDir(), Options{SegmentMaxBytes: 100})
	ctx := context.Background()
	for _, tc := range []struct {
		kind, key string
		v         any
		want      error
	}{
		{"../etc", "k", rec{}, ErrInvalidKind},
		{"", "k", rec{}, ErrInvalidKind},
		{"Task", "k", rec{}, ErrInvalidKind},
		{KindTask, "", rec{}, ErrEmptyKey},
		{KindTask, "k", rec{Out: strings.Repeat("z", 100)}, ErrTooLarge},
	} {
		if err := a.Append(ctx, tc.kind, tc.key, day0, tc.v); !errors.Is(err, tc.want) {
			t.Errorf("Append(%q, %q) = %v, want %v", tc.kind, tc.key, err, tc.want)
		}
	}
	if err := a.Append(ctx, KindTask, "k", day0, func() {}); err == nil {
		t.Error("Append of an unmarshalable value succeeded")
	}
	if _, err := a.Lookup(ctx, "bad/kind", "k"); !errors.Is(err, ErrInvalidKind) {
		t.Errorf("Lookup of a bad kind = %v", err)
	}
	if _, err := a.Lookup(ctx, KindTask, ""); !errors.Is(err, ErrEmptyKey) {
		t.Errorf("Lookup of an empty key = %v", err)
	}
}

func TestConcurrentAppenders(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, Options{SegmentMaxBytes: 2048, Clock: (&clock{t: day0}).Now})
	const writers, each = 8, 40
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, writers*each+100)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				key := fmt.Sprintf("w%d", w)
				if err := a.Append(ctx, KindTask, key, day0, rec{ID: key, N: i, Out: "output"}); err != nil {
					errs <- err
				}
			}
		}()
	}
	// Readers running alongside must never see a torn record.
	done := make(chan struct{})
	var rwg sync.WaitGroup
	rwg.Add(1)
	go func() {
		defer rwg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := a.Scan(ctx, KindTask, func(string, time.Time, json.RawMessage) error { return nil }); err != nil {
				errs <- fmt.Errorf("concurrent scan: %w", err)
			}
			if _, err := a.Lookup(ctx, KindTask, "w3"); err != nil {
				errs <- fmt.Errorf("concurrent lookup: %w", err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	wg.Wait()
	close(done)
	rwg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := scanAll(t, a, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	next := map[string]int{}
	for _, s := range got {
		if s.V.N != next[s.Key] {
			t.Fatalf("%s: record %d after %d: lost or reordered", s.Key, s.V.N, next[s.Key]-1)
		}
		next[s.Key]++
	}
	if len(got) != writers*each {
		t.Fatalf("scanned %d records, want %d", len(got), writers*each)
	}
	if n := len(segNames(t, dir, KindTask)); n < 2 {
		t.Fatalf("only %d segments", n)
	}
}

func TestCompactionShrinksAndPreserves(t *testing.T) {
	var sizes [2]int64
	var contents [2][]scanned
	for i, compact := range []bool{false, true} {
		dir := t.TempDir()
		a := open(t, dir, Options{Clock: (&clock{t: day0}).Now, DisableCompaction: !compact})
		for n := range 500 {
			mustAppend(t, a, KindAudit, fmt.Sprint(n), day0, rec{ID: "audit", N: n, Out: "actor=alice action=task.submit team=prod"})
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(filepath.Join(dir, KindAudit, "2026-11-29.0001.jsonl.gz"))
		if err != nil {
			t.Fatal(err)
		}
		sizes[i] = st.Size()
		if contents[i], err = scanAll(t, a, KindAudit); err != nil {
			t.Fatal(err)
		}
		if left, _ := filepath.Glob(filepath.Join(dir, KindAudit, "*.tmp")); len(left) > 0 {
			t.Fatalf("temporary files left: %v", left)
		}
	}
	if d := cmp.Diff(contents[0], contents[1]); d != "" {
		t.Fatalf("compaction changed the records (-before +after):\n%s", d)
	}
	if sizes[1]*4 > sizes[0] {
		t.Fatalf("compacted segment is %d bytes, one member per record %d: want at least 4x smaller", sizes[1], sizes[0])
	}
	t.Logf("500 audit-like records: %d bytes as one member each, %d compacted", sizes[0], sizes[1])
}

func TestOpenRemovesCompactionLeftovers(t *testing.T) {
	dir := t.TempDir()
	kdir := filepath.Join(dir, KindTask)
	os.MkdirAll(kdir, 0o700)
	tmp := filepath.Join(kdir, "2026-11-29.0001.jsonl.gz.tmp")
	os.WriteFile(tmp, []byte("half a compaction"), 0o600)
	open(t, dir, Options{})
	if _, err := os.Stat(tmp); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("leftover temp file: %v", err)
	}
}
