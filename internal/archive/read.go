package archive

import (
	"bufio"
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
	"slices"
	"time"

	"github.com/rediacc/rediacc/internal/safefs"
)

// CorruptSegmentError reports a segment, or a region of one, that could not
// be read: a torn or damaged gzip member, a line that is not a valid record,
// or a file that could not be opened. Readers return it (joined with the
// others through [errors.Join]) after delivering every readable record; use
// errors.As to get at it.
type CorruptSegmentError struct {
	// Path is the segment file.
	Path string
	// Offset is the byte offset, in the compressed file, of the gzip member
	// where the damage was found (0 when the file could not be opened).
	// Reading went on at the next intact member after it, if any.
	Offset int64
	// Err is the underlying error (gzip.ErrChecksum, gzip.ErrHeader,
	// io.ErrUnexpectedEOF for a torn member, a JSON error, an I/O error…).
	Err error
}

// Error implements error.
func (e *CorruptSegmentError) Error() string {
	return fmt.Sprintf("archive: corrupt segment %s at byte %d: %v", e.Path, e.Offset, e.Err)
}

// Unwrap returns e.Err.
func (e *CorruptSegmentError) Unwrap() error { return e.Err }

// badRecordError marks a line that decompressed fine but is not a record.
type badRecordError struct{ err error }

func (e *badRecordError) Error() string { return e.err.Error() }

var keyPrefix = []byte(`{"key":`)

func decodeEnvelope(line []byte) (envelope, error) {
	var env envelope
	if err := json.Unmarshal(line, &env); err != nil {
		return env, &badRecordError{fmt.Errorf("invalid record: %w", err)}
	}
	if env.Key == "" || env.V == nil {
		return env, &badRecordError{errors.New("invalid record: missing key or v")}
	}
	return env, nil
}

// Lookup returns every record archived under kind and key, newest first
// (segments newest first, and within a segment the reverse of append
// order). It reads the kind's segments one after another, decompressing
// them all: O(archived bytes of the kind) time; memory is the records found
// plus one line. Damaged segments are skipped past and reported as
// [*CorruptSegmentError]s joined into the returned error, alongside the
// records that could be read. Errors: [ErrInvalidKind], [ErrEmptyKey], ctx's
// error (returned alone, with no records), a directory listing error.
func (a *Archive) Lookup(ctx context.Context, kind, key string) ([]json.RawMessage, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	if key == "" {
		return nil, ErrEmptyKey
	}
	segs, err := listSegments(filepath.Join(a.dir, kind))
	if err != nil {
		return nil, fmt.Errorf("archive: lookup: %w", err)
	}
	qkey, _ := json.Marshal(key)
	prefix := append(append(slices.Clone(keyPrefix), qkey...), ',')
	var out []json.RawMessage
	var corrupt []error
	for i := len(segs) - 1; i >= 0; i-- {
		var found []json.RawMessage
		c, err := a.readSegment(ctx, segs[i].path, func(line []byte, _ int64) error {
			if bytes.HasPrefix(line, keyPrefix) && !bytes.HasPrefix(line, prefix) {
				return nil // another key (fast path: no JSON decoding)
			}
			env, err := decodeEnvelope(line)
			if err != nil {
				return err
			}
			if env.Key == key {
				found = append(found, env.V)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		corrupt = append(corrupt, c...)
		slices.Reverse(found)
		out = append(out, found...)
	}
	return out, errors.Join(corrupt...)
}

// Scan calls fn for every record of kind, oldest first: segments by day and
// sequence number, records in append order. at is in UTC; raw is the
// record's JSON and fn may keep it. If fn returns an error, Scan stops and
// returns that error unchanged; likewise ctx's error. Otherwise it returns
// the [*CorruptSegmentError]s met on the way, joined (nil if none): damaged
// regions are skipped, so a gap in an audit chain next to such a report is
// explained by the damage. Errors also: [ErrInvalidKind], a directory
// listing error.
func (a *Archive) Scan(ctx context.Context, kind string, fn func(key string, at time.Time, raw json.RawMessage) error) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	segs, err := listSegments(filepath.Join(a.dir, kind))
	if err != nil {
		return fmt.Errorf("archive: scan: %w", err)
	}
	var corrupt []error
	for _, s := range segs {
		c, err := a.readSegment(ctx, s.path, func(line []byte, _ int64) error {
			env, err := decodeEnvelope(line)
			if err != nil {
				return err
			}
			return fn(env.Key, env.At.UTC(), env.V)
		})
		if err != nil {
			return err
		}
		corrupt = append(corrupt, c...)
	}
	return errors.Join(corrupt...)
}

// countingReader counts the compressed bytes consumed. It implements
// io.ByteReader, so compress/flate reads through it without buffering ahead
// and n is exactly where the current gzip member ends.
type countingReader struct {
	r *bufio.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}

// readSegment calls fn for each complete line (without its newline) of the
// segment at path, with the offset of the member holding it. line is only
// valid during the call. A *badRecordError from fn is reported as damage and
// reading goes on; any other error from fn, or ctx's error, stops and is
// returned as err. Damage is returned in corrupt. A segment this process is
// appending to is read up to its last fsynced member; a missing file (pruned
// meanwhile) is empty.
func (a *Archive) readSegment(ctx context.Context, path string, fn func(line []byte, off int64) error) (corrupt []error, err error) {
	f, size, err := a.openSegment(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return []error{&CorruptSegmentError{Path: path, Err: err}}, nil
	}
	defer f.Close()

	sr := io.NewSectionReader(f, 0, size)
	lastBad := false // the previous member was damaged: merge reports
	report := func(off int64, err error) {
		if !lastBad {
			corrupt = append(corrupt, &CorruptSegmentError{Path: path, Offset: off, Err: err})
		}
		lastBad = true
	}
	var zr *gzip.Reader
	var buf bytes.Buffer
	pos := int64(0)
	for pos < size {
		if _, err := sr.Seek(pos, io.SeekStart); err != nil {
			report(pos, err)
			break
		}
		cr := &countingReader{r: bufio.NewReaderSize(sr, 64<<10), n: pos}
		for {
			if err := ctx.Err(); err != nil {
				return corrupt, err
			}
			if _, err := cr.r.Peek(1); err != nil {
				if err != io.EOF {
					report(cr.n, err)
				}
				pos = size
				break
			}
			start := cr.n
			bad, stop := a.readMember(&zr, cr, &buf, start, fn, func(err error) {
				corrupt = append(corrupt, &CorruptSegmentError{Path: path, Offset: start, Err: err})
			})
			if stop != nil {
				return corrupt, stop
			}
			if bad == nil {
				lastBad = false
				continue
			}
			report(start, bad)
			next, ok, err := findMagic(sr, start+1, size)
			if err != nil {
				report(start, err)
			}
			if !ok {
				pos = size
			} else {
				pos = next
			}
			break
		}
	}
	return corrupt, nil
}

// openSegment opens the segment at path and returns how many bytes of it
// are complete: the committed size of a segment this process is appending
// to, else the file's size. Both are taken under filesMu, so a segment
// being created (registered as active before its first write) or sealed
// (unregistered after its last) is never read past a complete member.
func (a *Archive) openSegment(path string) (*os.File, int64, error) {
	a.filesMu.RLock()
	defer a.filesMu.RUnlock()
	f, err := safefs.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, 0, err
	}
	if w := a.active[path]; w != nil {
		return f, w.committed.Load(), nil
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

// readMember reads one gzip member from cr into buf and, once its CRC
// checks out, calls fn per line: no unverified byte reaches fn. bad is the
// member's damage (reading must resync); stop is fn's error. Lines that fn
// rejects as bad records, and a member not ending in a newline, are passed
// to reportRecord (one report per member).
func (a *Archive) readMember(zr **gzip.Reader, cr *countingReader, buf *bytes.Buffer,
	start int64, fn func([]byte, int64) error, reportRecord func(error)) (bad, stop error) {
	if *zr == nil {
		z, err := gzip.NewReader(cr)
		if err != nil {
			return err, nil
		}
		*zr = z
	} else if err := (*zr).Reset(cr); err != nil {
		return err, nil
	}
	(*zr).Multistream(false)
	buf.Reset()
	limit := a.maxLine + compactBlockBytes
	n, err := buf.ReadFrom(io.LimitReader(*zr, limit+1))
	if err != nil {
		return err, nil
	}
	if n > limit {
		return fmt.Errorf("member larger than %d bytes", limit), nil
	}
	data := buf.Bytes()
	reported := false
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			if !reported {
				reportRecord(errors.New("member ends inside a line"))
			}
			break
		}
		line := data[:i]
		data = data[i+1:]
		if err := fn(line, start); err != nil {
			var br *badRecordError
			if !errors.As(err, &br) {
				return nil, err
			}
			if !reported {
				reportRecord(br.err)
				reported = true
			}
		}
	}
	return nil, nil
}

var gzipMagic = []byte{0x1f, 0x8b, 0x08}

// findMagic returns the offset of the next gzip member header (1f 8b 08) at
// or after from.
func findMagic(r io.ReaderAt, from, size int64) (int64, bool, error) {
	buf := make([]byte, 64<<10)
	for off := from; off < size; {
		n, err := r.ReadAt(buf, off)
		if i := bytes.Index(buf[:n], gzipMagic); i >= 0 {
			return off + int64(i), true, nil
		}
		if err != nil && err != io.EOF {
			return 0, false, err
		}
		if n < len(gzipMagic) || off+int64(n) >= size {
			return 0, false, nil
		}
		off += int64(n) - int64(len(gzipMagic)-1)
	}
	return 0, false, nil
}
