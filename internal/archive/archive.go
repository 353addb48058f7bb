// Package archive is an append-only archive of compressed JSON Lines
// segments: finished tasks' full records and old audit records, kept for
// compliance after the queue has pruned them.
//
// # Layout
//
// An archive is a directory with one subdirectory per kind of record
// ([KindTask], [KindAudit]; any name matching [a-z][a-z0-9_-]{0,31} works).
// Each kind holds segments named after the UTC day of the archive's clock
// when they were opened and a sequence number within that day:
//
//	DIR/task/2026-11-29.0001.jsonl.gz
//	DIR/task/2026-11-29.0002.jsonl.gz   (rolled over by size)
//	DIR/audit/2026-11-30.0001.jsonl.gz
//
// Directories are created 0700 and files 0600 (less whatever the umask
// removes). A segment is a gzip stream of JSON Lines; each line is an
// envelope
//
//	{"key":"<key>","at":"<RFC 3339 UTC time>","v":<the record>}
//
// The day comes from [Options].Clock at [Archive.Append] time, not from the
// record's own time, so an old audit record archived today lands in today's
// segment; readers use the envelope's "at".
//
// # Durability
//
// While a segment is open for appending, records are written in batches
// (group commit): the records of every [Archive.Append] of a kind that
// arrived while the previous batch was being written are written together as
// one gzip member (concatenated gzip members are one valid gzip stream,
// readable by zcat; a member holds at most 1 MiB of lines, or one larger
// record) with a single write, followed by one fsync. Append returns only
// once its own record is fsynced, so a record whose Append returned nil
// survives a crash (kill -9, and a power cut as far as fsync holds). There
// is no timer: a batch is what queued up during one write and fsync, so no
// record waits longer than the batch before it plus its own. A crash loses
// at most the batch being written, none of whose Appends had returned; its
// torn member is reported as a [*CorruptSegmentError] by readers and
// everything before it stays readable. Readers in the same process never see
// a half-written record of a segment that is still open: they read only up
// to the last fsynced member.
//
// A segment is rolled over (closed, and a new one started) when the next
// record would take it past [Options].SegmentMaxBytes of uncompressed JSON
// Lines, when the UTC day changes, and when the archive is closed; a process
// never appends to a segment it did not create, so a segment torn by a crash
// is never extended. Once closed, a segment is compacted in the background
// (unless [Options].DisableCompaction): rewritten as gzip members of about
// 1 MiB of whole lines each, which compresses small records far better than
// one member per record. Compaction writes a temporary file, verifies that
// it decompresses to exactly the same bytes (SHA-256), fsyncs it and renames
// it over the segment; a segment with any damage is left as it is.
//
// # Reading
//
// [Archive.Scan] reads one kind's records oldest first (segments ordered by
// day then sequence number, records in append order): this is how an audit
// hash chain is verified across segments. [Archive.Lookup] returns every
// record with a key, newest first. Neither has an index: both decompress
// every segment of the kind, so they cost O(archived bytes of that kind) in
// time, and in memory the records returned plus one gzip member (1 MiB, or
// one record if larger): a member is decompressed whole and its CRC checked
// before any of its records is delivered, so a damaged member yields
// nothing rather than garbage. That is fine for occasional
// `rediacc logs TASK_ID` reads and audits; a sidecar key index is the
// planned remedy if it is not.
//
// Damage never hides the rest of the archive: a segment (or a region of
// one) that cannot be decoded is reported as a [*CorruptSegmentError] with
// the file and the compressed byte offset where the damage starts; reading
// resumes at the next intact gzip member of that segment, and the other
// segments are read as usual. The reports are returned together, through
// [errors.Join], after all good records have been delivered.
package archive

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rediacc/rediacc/internal/safefs"
)

// Kinds of records the SDK archives. Other names matching
// [a-z][a-z0-9_-]{0,31} are accepted too.
const (
	// KindTask: a finished task's full record (spec, attempts, output, exit
	// code); the key is the task id.
	KindTask = "task"
	// KindAudit: an audit record; the key is its sequence number or entity.
	KindAudit = "audit"
)

// DefaultSegmentMaxBytes is the default [Options].SegmentMaxBytes: 64 MiB of
// uncompressed JSON Lines per segment.
const DefaultSegmentMaxBytes = 64 << 20

// Sentinel errors.
var (
	// ErrClosed is returned by [Archive.Append] after [Archive.Close].
	ErrClosed = errors.New("archive: closed")
	// ErrInvalidKind is returned for a kind that is not a valid directory
	// name ([a-z][a-z0-9_-]{0,31}).
	ErrInvalidKind = errors.New("archive: invalid kind")
	// ErrEmptyKey is returned by [Archive.Append] for an empty key.
	ErrEmptyKey = errors.New("archive: empty key")
	// ErrTooLarge is returned by [Archive.Append] for a record whose JSON
	// Lines envelope is larger than [Options].SegmentMaxBytes.
	ErrTooLarge = errors.New("archive: record larger than the segment size")
)

// Options configures an [Archive]. The zero value is usable.
type Options struct {
	// SegmentMaxBytes is the most uncompressed JSON Lines bytes (envelopes
	// and newlines) a segment holds before it is rolled over. A record that
	// is larger on its own is rejected with [ErrTooLarge]. Default
	// [DefaultSegmentMaxBytes] (64 MiB) when ≤ 0.
	SegmentMaxBytes int64

	// Retention is how long [Archive.Prune] keeps a segment: it removes a
	// segment once the whole of its UTC day is older than now − Retention.
	// 0 keeps everything forever.
	Retention time.Duration

	// Clock returns the current time; it picks the day of the segment a
	// record goes to. Default time.Now.
	Clock func() time.Time

	// Logger receives background failures (compaction). Default
	// slog.Default().
	Logger *slog.Logger

	// DisableCompaction keeps closed segments as written: one gzip member
	// per record. By default a closed segment is recompressed in the
	// background into ~1 MiB members (see the package doc).
	DisableCompaction bool
}

// Archive is an append-only archive rooted at a directory. It is safe for
// concurrent use by multiple goroutines. Several processes may append to the
// same directory (each opens its own segments, created with O_EXCL), but
// only the process that wrote a segment knows where its last complete record
// ends; others may briefly report a record being written as a torn member.
type Archive struct {
	dir     string
	opts    Options
	maxLine int64 // longest line a reader accepts

	mu      sync.Mutex // guards writers and closed
	writers map[string]*writer
	closed  bool

	// filesMu orders renames and removals of segment files (compaction,
	// Prune: write lock) against readers opening a file and reading the
	// active map (read lock).
	filesMu sync.RWMutex
	active  map[string]*writer // path of an open segment → its writer

	wg sync.WaitGroup // background compactions
}

// writer appends to the open segment of one kind.
type writer struct {
	kind string
	kdir string

	// qmu guards the records waiting for the next batch (queue) and
	// whether an Append is leading a batch (leading).
	qmu     sync.Mutex
	queue   []*pending
	leading bool

	mu     sync.Mutex // serializes batches and rollover
	closed bool
	f      *os.File // nil when no segment is open
	path   string
	day    string
	seq    int
	size   int64 // uncompressed bytes in the open segment
	broken bool  // the open segment's tail is unknown: roll over

	committed atomic.Int64 // compressed bytes fsynced in the open segment

	block, member bytes.Buffer // a batch's lines and their gzip member (reused; w.mu)
}

var kindRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)

// checkKind matches kind against kindRE without the regexp engine (it
// runs for every Append).
func checkKind(kind string) error {
	ok := len(kind) >= 1 && len(kind) <= 32 && 'a' <= kind[0] && kind[0] <= 'z'
	for i := 1; ok && i < len(kind); i++ {
		c := kind[i]
		ok = 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-'
	}
	if !ok {
		return fmt.Errorf("%w: %q", ErrInvalidKind, kind)
	}
	return nil
}

// Open opens (creating it 0700 if needed) the archive rooted at dir. It
// removes temporary files left by a compaction interrupted by a crash. It
// never appends to existing segments: the first [Archive.Append] of each
// kind starts a new one.
func Open(dir string, opts Options) (*Archive, error) {
	if opts.SegmentMaxBytes <= 0 {
		opts.SegmentMaxBytes = DefaultSegmentMaxBytes
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := safefs.MkdirPrivate(dir); err != nil {
		return nil, fmt.Errorf("archive: open: %w", err)
	}
	a := &Archive{
		dir:     dir,
		opts:    opts,
		maxLine: max(opts.SegmentMaxBytes, DefaultSegmentMaxBytes) + 64<<10,
		writers: map[string]*writer{},
		active:  map[string]*writer{},
	}
	kinds, err := a.kinds()
	if err != nil {
		return nil, fmt.Errorf("archive: open: %w", err)
	}
	for _, k := range kinds {
		ents, err := os.ReadDir(filepath.Join(dir, k))
		if err != nil {
			return nil, fmt.Errorf("archive: open: %w", err)
		}
		for _, e := range ents {
			if isTempName(e.Name()) {
				_ = os.Remove(filepath.Join(dir, k, e.Name()))
			}
		}
	}
	return a, nil
}

// Dir returns the archive's root directory.
func (a *Archive) Dir() string { return a.dir }

// envelope is one JSON Lines record. Field order is part of the format:
// Lookup's fast path matches the `{"key":` prefix.
type envelope struct {
	Key string          `json:"key"`
	At  time.Time       `json:"at"`
	V   json.RawMessage `json:"v"`
}

// Append archives v (anything encoding/json can marshal; normally a JSON
// object or a json.RawMessage) under kind and key, with time at (stored in
// UTC). It returns once the record is fsynced; concurrent Appends of a kind
// share one write and one fsync (see "Durability" in the package doc).
// Errors: [ErrInvalidKind], [ErrEmptyKey], [ErrTooLarge], [ErrClosed], the
// marshalling error, ctx's error if it is done before the record is queued
// for writing, or an I/O error — after an fsync error the record may or may
// not be in the archive (a retry can store it twice; readers then see both).
func (a *Archive) Append(ctx context.Context, kind, key string, at time.Time, v any) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	line, err := a.line(kind, key, at, v)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	w, err := a.writer(kind)
	if err != nil {
		return err
	}
	if err := a.commit(w, &pending{lines: [][]byte{line}, done: make(chan bool, 1)}); err != nil {
		return fmt.Errorf("archive: append %s %q: %w", kind, key, err)
	}
	return nil
}

// Record is one record of [Archive.AppendMany]: v under key, with time at.
type Record struct {
	Key string
	At  time.Time
	V   any
}

// AppendMany archives recs under kind, in order, as [Archive.Append] would
// one by one, but in one batch (one write and one fsync with whatever else
// is queued). It returns once all are fsynced. A record that cannot be
// archived ([ErrEmptyKey], [ErrTooLarge], a marshalling error) fails the
// call before anything is written. Errors: those of Append.
func (a *Archive) AppendMany(ctx context.Context, kind string, recs []Record) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	if len(recs) == 0 {
		return nil
	}
	lines := make([][]byte, len(recs))
	for i, r := range recs {
		line, err := a.line(kind, r.Key, r.At, r.V)
		if err != nil {
			return err
		}
		lines[i] = line
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	w, err := a.writer(kind)
	if err != nil {
		return err
	}
	if err := a.commit(w, &pending{lines: lines, done: make(chan bool, 1)}); err != nil {
		return fmt.Errorf("archive: append %d records of %s: %w", len(recs), kind, err)
	}
	return nil
}

// line is the JSON Lines envelope of one record, newline included.
func (a *Archive) line(kind, key string, at time.Time, v any) ([]byte, error) {
	if key == "" {
		return nil, ErrEmptyKey
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("archive: append %s %q: %w", kind, key, err)
	}
	if y := at.UTC().Year(); y < 0 || y > 9999 { // as encoding/json refuses it
		return nil, fmt.Errorf("archive: append %s %q: time %v: year outside of range [0,9999]", kind, key, at)
	}
	line := appendEnvelope(make([]byte, 0, len(raw)+len(key)+64), key, at, raw)
	if int64(len(line)) > a.opts.SegmentMaxBytes {
		return nil, fmt.Errorf("%w: %s %q is %d bytes, limit %d", ErrTooLarge, kind, key, len(line), a.opts.SegmentMaxBytes)
	}
	return line, nil
}

// appendEnvelope appends the JSON Lines envelope of a record, newline
// included, to b: exactly what encoding/json makes of envelope{key, at,
// raw} (raw is json.Marshal's output: compact, HTML-escaped), without
// scanning raw again.
func appendEnvelope(b []byte, key string, at time.Time, raw []byte) []byte {
	qkey, _ := json.Marshal(key) // a string always marshals
	b = append(b, `{"key":`...)
	b = append(b, qkey...)
	b = append(b, `,"at":"`...)
	b = at.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","v":`...)
	b = append(b, raw...)
	return append(b, "}\n"...)
}

// pending is the records of one call waiting for their batch.
type pending struct {
	lines [][]byte
	err   error     // the batch's outcome, set before done receives false
	done  chan bool // true: lead the next batch; false: written (or failed)
}

// commit queues p for the next batch of w and waits until it is fsynced:
// the first caller with no batch under way leads one (it writes every
// record queued so far), the others wait; a leader that finishes hands
// the lead to the oldest record queued meanwhile, so each caller returns
// as soon as its own batch is done.
func (a *Archive) commit(w *writer, p *pending) error {
	w.qmu.Lock()
	w.queue = append(w.queue, p)
	lead := !w.leading
	w.leading = true
	w.qmu.Unlock()
	if !lead && !<-p.done {
		return p.err
	}
	w.qmu.Lock()
	batch := w.queue
	w.queue = nil
	w.qmu.Unlock()
	err := a.writeBatch(w, batch)
	for _, q := range batch {
		if q != p {
			q.err = err
			q.done <- false
		}
	}
	w.qmu.Lock()
	if len(w.queue) > 0 {
		w.queue[0].done <- true
	} else {
		w.leading = false
	}
	w.qmu.Unlock()
	return err
}

// writeBatch writes the lines of batch to w's open segment (rolling over
// as needed) and fsyncs them. Lines go into gzip members of at most
// compactBlockBytes (or one line when larger), one per segment at most in
// the usual case; a member is written and fsynced before the segment rolls
// over.
func (a *Archive) writeBatch(w *writer, batch []*pending) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	day := a.opts.Clock().UTC().Format(dayLayout)
	block := &w.block
	block.Reset()
	defer func() {
		if block.Cap() > 2*compactBlockBytes { // do not keep a huge record's buffers
			w.block, w.member = bytes.Buffer{}, bytes.Buffer{}
		}
	}()
	flush := func() error {
		if block.Len() == 0 {
			return nil
		}
		w.member.Reset()
		if err := gzipMember(&w.member, block.Bytes()); err != nil {
			return err
		}
		if err := w.write(w.member.Bytes()); err != nil {
			return fmt.Errorf("%s: %w", w.path, err)
		}
		w.size += int64(block.Len())
		block.Reset()
		return nil
	}
	for _, p := range batch {
		for _, line := range p.lines {
			n := int64(len(line))
			if block.Len() > 0 && (w.size+int64(block.Len())+n > a.opts.SegmentMaxBytes || block.Len()+len(line) > compactBlockBytes) {
				if err := flush(); err != nil {
					return err
				}
			}
			if w.f == nil || w.broken || w.day != day || block.Len() == 0 && w.size+n > a.opts.SegmentMaxBytes {
				if err := a.rollover(w, day); err != nil {
					return err
				}
			}
			block.Write(line)
		}
	}
	return flush()
}

// write appends one member and fsyncs it. On failure it cuts the file back
// to the last committed member, or marks the segment broken.
func (w *writer) write(member []byte) error {
	committed := w.committed.Load()
	if _, err := w.f.Write(member); err != nil {
		if terr := w.f.Truncate(committed); terr != nil {
			w.broken = true
		}
		return err
	}
	if err := w.f.Sync(); err != nil {
		w.broken = true
		return err
	}
	w.committed.Store(committed + int64(len(member)))
	return nil
}

func (a *Archive) writer(kind string) (*writer, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil, ErrClosed
	}
	w := a.writers[kind]
	if w == nil {
		kdir := filepath.Join(a.dir, kind)
		if err := os.Mkdir(kdir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("archive: %w", err)
		}
		if err := safefs.CheckDir(kdir); err != nil {
			return nil, fmt.Errorf("archive: %w", err)
		}
		w = &writer{kind: kind, kdir: kdir}
		a.writers[kind] = w
	}
	return w, nil
}

// rollover closes w's open segment (if any) and creates the next one for
// day. Called with w.mu held.
func (a *Archive) rollover(w *writer, day string) error {
	if err := a.seal(w); err != nil {
		a.opts.Logger.Warn("archive: closing segment", "path", w.path, "err", err)
	}
	segs, err := listSegments(w.kdir)
	if err != nil {
		return err
	}
	seq := 0
	if w.day == day {
		seq = w.seq
	}
	for _, s := range segs {
		if s.day == day && s.seq > seq {
			seq = s.seq
		}
	}
	for range 1000 {
		seq++
		path := filepath.Join(w.kdir, segmentName(day, seq))
		f, err := safefs.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := syncDir(w.kdir); err != nil {
			f.Close()
			os.Remove(path)
			return err
		}
		w.f, w.path, w.day, w.seq, w.size, w.broken = f, path, day, seq, 0, false
		w.committed.Store(0)
		a.filesMu.Lock()
		a.active[path] = w
		a.filesMu.Unlock()
		return nil
	}
	return fmt.Errorf("no free segment name for %s in %s", day, w.kdir)
}

// seal closes w's open segment and starts its compaction. Called with w.mu
// held.
func (a *Archive) seal(w *writer) error {
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	path, empty := w.path, w.committed.Load() == 0
	w.f = nil
	a.filesMu.Lock()
	delete(a.active, path)
	a.filesMu.Unlock()
	if err == nil && empty && !w.broken {
		// Nothing was ever committed (the first write failed): drop the
		// empty file rather than leave a hole in the sequence of days.
		_ = os.Remove(path)
		return nil
	}
	if err == nil && !empty && !w.broken && !a.opts.DisableCompaction {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			if err := a.compact(path); err != nil {
				a.opts.Logger.Warn("archive: segment left uncompacted", "path", path, "err", err)
			}
		}()
	}
	return err
}

// Close closes the open segments, waits for their compaction and makes
// further Appends fail with [ErrClosed]. Reading (Lookup, Scan) and Prune
// still work after Close. It returns the errors of closing the files.
func (a *Archive) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	ws := make([]*writer, 0, len(a.writers))
	for _, w := range a.writers {
		ws = append(ws, w)
	}
	a.mu.Unlock()
	var errs []error
	for _, w := range ws {
		w.mu.Lock()
		if err := a.seal(w); err != nil {
			errs = append(errs, fmt.Errorf("archive: close %s: %w", w.path, err))
		}
		w.closed = true
		w.mu.Unlock()
	}
	a.wg.Wait()
	return errors.Join(errs...)
}

// gzipPool holds the writers of appended members. They compress at
// gzip.BestSpeed: a batch is compressed while its callers wait, and
// compaction recompresses a closed segment at the default level anyway.
var gzipPool = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed) // a valid level: no error
	return zw
}}

// gzipMember compresses b as one complete gzip member into buf.
func gzipMember(buf *bytes.Buffer, b []byte) error {
	buf.Grow(len(b)/2 + 64)
	zw := gzipPool.Get().(*gzip.Writer)
	defer gzipPool.Put(zw)
	zw.Reset(buf)
	if _, err := zw.Write(b); err != nil {
		return err
	}
	return zw.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
