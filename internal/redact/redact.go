// Package redact masks secret values in output: task stdout and stderr, log
// lines, error messages.
//
// A [Redactor] replaces every occurrence of any of its secrets with [Mask].
// Where occurrences overlap or touch (secrets "abc" and "cde" in "abcde", or
// "pw" twice in "pwpw"), the union of the covered bytes is replaced by a single
// Mask, so the output does not reveal where one secret ends and the next
// starts.
//
// [Redactor.NewWriter] does the same on a stream and catches secrets split
// across Write calls: it holds back the last (longest secret − 1) bytes of
// each write until it knows whether they start a secret, and flushes them on
// Close. Its output is always byte-for-byte what [Redactor.Bytes] returns for
// the concatenation of everything written.
//
// # Short secrets
//
// Empty secrets are ignored. Every non-empty secret is masked, however short:
// a 1-byte secret masks every occurrence of that byte, and a 2- or 3-byte
// secret will mask unrelated text that happens to contain it. This is
// deliberate — leaking a short secret is worse than mangled output — but
// callers should not register trivial values (an empty-ish "0" or "true") as
// secrets, and should warn the user about secrets shorter than
// [ShortSecretLen] bytes ([Redactor.ShortSecrets] counts them).
//
// # Limits
//
// [New] masks only the exact bytes of each secret. [NewSecrets] also masks
// the forms in which a shell or a common tool prints a value without being
// asked to encode it ([Variants]: single lines of a multi-line value, the
// value without its trailing newline, shell-quoted, JSON-escaped, echo's
// escapes). Deliberate transformations (base64, hex, URL encoding, rev, tr,
// substrings…) are not masked by either. A secret that contains '*' may
// appear to survive next to a Mask (secret "x*" in the output "x***" of
// input "x<secret>"): the masked output never contains a secret that
// occurred in the input, but the Mask itself can complete such a secret.
package redact

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"sync"
)

// Mask is what every masked run of secret bytes is replaced with.
const Mask = "***"

// ShortSecretLen is the length, in bytes, below which a secret is considered
// short: still masked, but likely to mask unrelated text too.
const ShortSecretLen = 4

// Redactor masks a fixed set of secrets. It is immutable and safe for
// concurrent use. The zero value and a nil *Redactor mask nothing.
type Redactor struct {
	secrets [][]byte // non-empty, deduplicated, longest first
	maxLen  int
}

// New returns a Redactor for secrets. The secrets are copied; empty ones and
// duplicates are dropped.
func New(secrets ...[]byte) *Redactor {
	r := &Redactor{}
	for _, s := range secrets {
		if len(s) == 0 {
			continue
		}
		if slices.ContainsFunc(r.secrets, func(x []byte) bool { return bytes.Equal(x, s) }) {
			continue
		}
		r.secrets = append(r.secrets, bytes.Clone(s))
		r.maxLen = max(r.maxLen, len(s))
	}
	slices.SortStableFunc(r.secrets, func(a, b []byte) int { return len(b) - len(a) })
	return r
}

// Len returns the number of distinct non-empty secrets.
func (r *Redactor) Len() int {
	if r == nil {
		return 0
	}
	return len(r.secrets)
}

// ShortSecrets returns how many secrets are shorter than [ShortSecretLen]
// bytes, for callers that want to warn about over-eager masking.
func (r *Redactor) ShortSecrets() int {
	n := 0
	if r != nil {
		for _, s := range r.secrets {
			if len(s) < ShortSecretLen {
				n++
			}
		}
	}
	return n
}

// Bytes returns a copy of b in which every run of bytes covered by
// occurrences of the secrets is replaced by [Mask]. b is not modified.
func (r *Redactor) Bytes(b []byte) []byte {
	if r.Len() == 0 {
		return bytes.Clone(b)
	}
	out, _ := emit(make([]byte, 0, len(b)), b, r.cover(b, 0), len(b), false)
	return out
}

// String is [Redactor.Bytes] for strings.
func (r *Redactor) String(s string) string {
	if r.Len() == 0 {
		return s
	}
	return string(r.Bytes([]byte(s)))
}

// span is a half-open byte range [start, end).
type span struct{ start, end int }

// cover returns the sorted, merged ranges of buf covered by occurrences of
// the secrets, plus [0, carry) when carry > 0. Touching ranges are merged.
func (r *Redactor) cover(buf []byte, carry int) []span {
	var spans []span
	if carry > 0 {
		spans = append(spans, span{0, min(carry, len(buf))})
	}
	for _, s := range r.secrets {
		for i := 0; i+len(s) <= len(buf); {
			j := bytes.Index(buf[i:], s)
			if j < 0 {
				break
			}
			spans = append(spans, span{i + j, i + j + len(s)})
			i += j + 1
		}
	}
	if len(spans) < 2 {
		return spans
	}
	slices.SortFunc(spans, func(a, b span) int { return a.start - b.start })
	merged := spans[:1]
	for _, sp := range spans[1:] {
		last := &merged[len(merged)-1]
		if sp.start <= last.end {
			last.end = max(last.end, sp.end)
		} else {
			merged = append(merged, sp)
		}
	}
	return merged
}

// emit appends to dst the masked form of buf[:limit], given the merged spans
// of buf. prev reports whether the byte just before buf[0] was covered (and so
// already emitted as part of a Mask): a span starting at 0 then continues
// that Mask instead of starting a new one. It returns dst and whether
// buf[limit-1] is covered (prev unchanged when limit is 0).
func emit(dst, buf []byte, spans []span, limit int, prev bool) ([]byte, bool) {
	if limit == 0 {
		return dst, prev
	}
	pos, last := 0, false
	for _, sp := range spans {
		if sp.start >= limit {
			break
		}
		dst = append(dst, buf[pos:sp.start]...)
		if sp.start > 0 || !prev {
			dst = append(dst, Mask...)
		}
		pos = min(sp.end, limit)
		if sp.end >= limit {
			last = true
			break
		}
	}
	dst = append(dst, buf[pos:limit]...)
	return dst, last
}

// errClosed is returned by Write after Close.
var errClosed = errors.New("redact: write to closed writer")

// NewWriter returns a writer that masks the secrets in everything written to
// it and writes the result to w.
//
// To catch a secret split across Write calls, up to (longest secret − 1)
// bytes of each write are held back until the next Write or Close; Close
// writes them out. Close does not close w. The writer is safe for concurrent
// use (writes are serialized). Write returns len(p) when the masked bytes it
// could release were written to w; after an error from w, every later Write
// and Close returns that error. With no secrets, writes pass straight to w.
func (r *Redactor) NewWriter(w io.Writer) io.WriteCloser {
	return &writer{r: r, w: w}
}

type writer struct {
	r *Redactor
	w io.Writer

	mu      sync.Mutex
	pending []byte // bytes not yet emitted
	carry   int    // pending[:carry] is covered by a secret that started earlier
	prev    bool   // the last emitted byte was covered (output ended in Mask)
	out     []byte // reused output buffer
	err     error  // sticky error
	closed  bool
}

// Write implements io.Writer.
func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	if w.closed {
		return 0, errClosed
	}
	if w.r.Len() == 0 {
		n, err := w.w.Write(p)
		if err != nil {
			w.err = err
		}
		return n, err
	}
	buf := append(w.pending, p...)
	cut := len(buf) - (w.r.maxLen - 1)
	if cut <= 0 {
		w.pending = buf
		return len(p), nil
	}
	spans := w.r.cover(buf, w.carry)
	var last bool
	w.out, last = emit(w.out[:0], buf, spans, cut, w.prev)
	// Coverage that runs past the cut comes from a secret whose start is
	// being emitted now: carry it, since the next scan cannot see its start.
	carry := 0
	for _, sp := range spans {
		if sp.start < cut && sp.end > cut {
			carry = sp.end - cut
		}
	}
	w.prev, w.carry = last, carry
	w.pending = append(w.pending[:0], buf[cut:]...)
	if cap(w.pending) > 64<<10 {
		w.pending = slices.Clone(w.pending)
	}
	if err := w.flushOut(); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *writer) flushOut() error {
	if len(w.out) == 0 {
		return nil
	}
	_, err := w.w.Write(w.out)
	clear(w.out) // it may hold secret-adjacent bytes; cheap hygiene
	if cap(w.out) > 64<<10 {
		w.out = nil
	}
	if err != nil {
		w.err = err
	}
	return err
}

// Close masks and writes the held-back bytes. It does not close the
// underlying writer. Calling Close again returns nil (or the sticky error).
func (w *writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return nil
	}
	w.closed = true
	if len(w.pending) == 0 {
		return nil
	}
	w.out, _ = emit(w.out[:0], w.pending, w.r.cover(w.pending, w.carry), len(w.pending), w.prev)
	clear(w.pending)
	w.pending = nil
	return w.flushOut()
}

// MaskPartialSuffix masks the end of b when it is the beginning of a
// secret: for output cut at a size cap, where a secret may have been cut in
// two and its first bytes would otherwise stay readable. Call it after
// Bytes. A nil *Redactor returns b unchanged.
func (r *Redactor) MaskPartialSuffix(b []byte) []byte {
	if r == nil {
		return b
	}
	cut := 0
	for _, s := range r.secrets {
		for k := min(len(s)-1, len(b)); k > cut; k-- {
			if bytes.HasSuffix(b, s[:k]) {
				cut = k
				break
			}
		}
	}
	if cut == 0 {
		return b
	}
	return append(b[:len(b)-cut:len(b)-cut], Mask...)
}
