package archive

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// memberOffsets returns the compressed offset of the gzip member holding
// each record of the segment at path, in order.
func memberOffsets(t *testing.T, a *Archive, path string) []int64 {
	t.Helper()
	var offs []int64
	corrupt, err := a.readSegment(context.Background(), path, func(_ []byte, off int64) error {
		offs = append(offs, off)
		return nil
	})
	if err != nil || len(corrupt) > 0 {
		t.Fatalf("read %s: %v %v", path, err, corrupt)
	}
	return offs
}

// waitFor polls cond (a state of another goroutine, not a time rule).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

// Appends that arrive while a batch is being written are written together:
// one gzip member (one write, one fsync) for all of them, each Append
// returning once it is on disk, and the records read back in order.
func TestAppendsQueuedDuringABatchShareOneMember(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, Options{Clock: (&clock{t: day0}).Now, DisableCompaction: true})
	mustAppend(t, a, KindTask, "k0", day0, rec{N: 0}) // opens the segment
	w, err := a.writer(KindTask)
	if err != nil {
		t.Fatal(err)
	}
	w.mu.Lock() // the batch under way: its writer holds the segment
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	appendN := func(n int) {
		defer wg.Done()
		errs <- a.Append(context.Background(), KindTask, fmt.Sprint("k", n), day0, rec{N: n})
	}
	wg.Add(1)
	go appendN(1) // leads a batch of one, blocked on the segment
	waitFor(t, "the first Append to lead", func() bool {
		w.qmu.Lock()
		defer w.qmu.Unlock()
		return w.leading && len(w.queue) == 0
	})
	for n := 2; n <= 9; n++ {
		wg.Add(1)
		go appendN(n)
	}
	waitFor(t, "8 Appends to queue", func() bool {
		w.qmu.Lock()
		defer w.qmu.Unlock()
		return len(w.queue) == 8
	})
	select {
	case err := <-errs:
		t.Fatalf("an Append returned (%v) before its batch was written", err)
	default:
	}
	w.mu.Unlock()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, KindTask, "2026-11-29.0001.jsonl.gz")
	offs := memberOffsets(t, a, path)
	if len(offs) != 10 {
		t.Fatalf("%d records in the segment, want 10", len(offs))
	}
	// k0 alone, k1 alone, then k2..k9 in one member.
	if offs[0] == offs[1] || offs[1] == offs[2] || slices.Compact(slices.Clone(offs[2:]))[0] != offs[2] || len(slices.Compact(slices.Clone(offs[2:]))) != 1 {
		t.Fatalf("member offsets %v: want k0, k1 alone and k2..k9 in one member", offs)
	}
	got, err := scanAll(t, a, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, r := range got {
		seen[r.V.N] = true
	}
	if len(got) != 10 || len(seen) != 10 {
		t.Fatalf("scanned %+v", got)
	}
	// The leader of the second batch was one of the queued Appends; the
	// queue is empty and nobody leads once all returned.
	if w.leading || len(w.queue) != 0 {
		t.Fatalf("leading %v, queue %d after all returned", w.leading, len(w.queue))
	}
}

// A batch spanning a rollover by size is split: the lines that fit go to
// the open segment (fsynced before it is sealed), the rest to the next.
func TestBatchAcrossRollover(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, Options{SegmentMaxBytes: 600, Clock: (&clock{t: day0}).Now, DisableCompaction: true})
	mustAppend(t, a, KindTask, "k0", day0, rec{N: 0})
	w, _ := a.writer(KindTask)
	w.mu.Lock()
	var wg sync.WaitGroup
	for n := 1; n <= 12; n++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Append(context.Background(), KindTask, fmt.Sprint("k", n), day0, rec{N: n, Out: "0123456789012345678901234567890123456789"}); err != nil {
				t.Error(err)
			}
		}()
	}
	waitFor(t, "12 Appends to queue", func() bool {
		w.qmu.Lock()
		defer w.qmu.Unlock()
		return len(w.queue) >= 11
	})
	w.mu.Unlock()
	wg.Wait()
	got, err := scanAll(t, a, KindTask)
	if err != nil || len(got) != 13 {
		t.Fatalf("scanned %d records (%v), want 13", len(got), err)
	}
	if n := len(segNames(t, dir, KindTask)); n < 3 {
		t.Fatalf("%d segments, want the batch split over several", n)
	}
	for _, name := range segNames(t, dir, KindTask) {
		if st, err := os.Stat(filepath.Join(dir, KindTask, name)); err != nil || st.Size() == 0 {
			t.Fatalf("segment %s: %v", name, err)
		}
	}
}

// appendChildEnv, when set to a directory, makes the test binary append
// records to the archive there from 80 goroutines until it is killed,
// printing the key of each record whose Append returned.
const appendChildEnv = "REDIACC_ARCHIVE_APPEND_CHILD"

func appendChild(dir string) {
	a, err := Open(dir, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	acks := make(chan string, 1024)
	for g := range 80 {
		go func() {
			for i := 0; ; i++ {
				key := fmt.Sprintf("g%02d-%06d", g, i)
				if err := a.Append(context.Background(), KindTask, key, time.Now(), json.RawMessage(benchTask)); err != nil {
					fmt.Fprintln(os.Stderr, "child:", err)
					os.Exit(2)
				}
				acks <- key
			}
		}()
	}
	out := bufio.NewWriter(os.Stdout)
	for key := range acks {
		fmt.Fprintln(out, key)
		if len(acks) == 0 {
			out.Flush()
		}
	}
}

// A process killed with SIGKILL while 80 goroutines append: every record
// whose Append had returned is in the archive and readable; what the kill
// cut short is at most a torn member at the end of the open segment,
// reported as a *CorruptSegmentError, and a new process appends after it
// in a new segment. Run several times: the kill lands at a different
// point of a batch each time.
func TestAcknowledgedRecordsSurviveSIGKILL(t *testing.T) {
	for round := range 3 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			dir := t.TempDir()
			child := exec.Command(os.Args[0], "-test.run=^$")
			child.Env = append(os.Environ(), appendChildEnv+"="+dir)
			child.Stderr = os.Stderr
			stdout, err := child.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := child.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
			acked := map[string]bool{}
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				acked[sc.Text()] = true
				if len(acked) == 1500+500*round {
					if err := child.Process.Signal(syscall.SIGKILL); err != nil {
						t.Fatal(err)
					}
				}
			}
			_ = child.Wait()
			if len(acked) < 1500 {
				t.Fatalf("the child acknowledged only %d records", len(acked))
			}
			a := open(t, dir, Options{})
			found := map[string]bool{}
			err = a.Scan(context.Background(), KindTask, func(key string, _ time.Time, raw json.RawMessage) error {
				if found[key] {
					return fmt.Errorf("record %s twice", key)
				}
				found[key] = true
				return nil
			})
			var cse *CorruptSegmentError
			if err != nil && !errors.As(err, &cse) {
				t.Fatal(err)
			}
			if err != nil {
				t.Logf("after the kill: %v", err)
			}
			for key := range acked {
				if !found[key] {
					t.Fatalf("record %s was acknowledged but is not in the archive (%d acknowledged, %d found)", key, len(acked), len(found))
				}
			}
			t.Logf("%d acknowledged, %d in the archive", len(acked), len(found))
			mustAppend(t, a, KindTask, "after", day0, rec{N: 1})
			if raws, _ := a.Lookup(context.Background(), KindTask, "after"); len(raws) != 1 {
				t.Fatalf("append after the crash: %d records", len(raws))
			}
		})
	}
}

// checkKind agrees with the documented pattern [a-z][a-z0-9_-]{0,31}.
func TestCheckKindMatchesPattern(t *testing.T) {
	cases := []string{"", "a", "task", "audit", "a-b_c9", "9a", "-a", "_a", "A", "aB", "a.b", "a/b", "a b", "é", "aé",
		"a" + string(make([]byte, 3)), "abcdefghijklmnopqrstuvwxyz012345", "abcdefghijklmnopqrstuvwxyz0123456", "z"}
	for _, k := range cases {
		if got, want := checkKind(k) == nil, kindRE.MatchString(k); got != want {
			t.Errorf("checkKind(%q) ok = %v, pattern says %v", k, got, want)
		}
	}
}

// AppendMany writes all its records in one member, in order, or none of
// them when one is invalid; the file and the memory archives agree.
func TestAppendMany(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, Options{Clock: (&clock{t: day0}).Now, DisableCompaction: true})
	m := NewMemory(Options{Clock: (&clock{t: day0}).Now})
	ctx := context.Background()
	for _, l := range []BatchAppender{a, m} {
		bad := []Record{{Key: "a", At: day0, V: rec{N: 1}}, {Key: "", At: day0, V: rec{N: 2}}}
		if err := l.AppendMany(ctx, KindTask, bad); !errors.Is(err, ErrEmptyKey) {
			t.Fatalf("%T: AppendMany with an empty key = %v", l, err)
		}
		recs := make([]Record, 5)
		for i := range recs {
			recs[i] = Record{Key: fmt.Sprint("k", i), At: day0.Add(time.Duration(i) * time.Second), V: rec{N: i}}
		}
		if err := l.AppendMany(ctx, KindTask, recs); err != nil {
			t.Fatal(err)
		}
		var keys []string
		if err := l.(Log).Scan(ctx, KindTask, func(key string, at time.Time, raw json.RawMessage) error {
			keys = append(keys, key)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(keys) != "[k0 k1 k2 k3 k4]" {
			t.Fatalf("%T: scanned %v (the invalid batch must write nothing)", l, keys)
		}
	}
	offs := memberOffsets(t, a, filepath.Join(dir, KindTask, "2026-11-29.0001.jsonl.gz"))
	if len(slices.Compact(offs)) != 1 {
		t.Fatalf("member offsets %v: want one member", offs)
	}
}
