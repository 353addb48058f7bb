package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Text the CLI prints for people — a task's output and command, names,
// descriptions, reasons, audit details, alert text, error messages, log
// records — may come from anyone who can run a task or name a thing. Sent
// to a terminal as it is, its control characters would act: an escape
// sequence (ESC ] … BEL sets the window title or the clipboard, ESC [ 2 J
// clears the screen, ESC [ 1 A moves up over earlier lines), a carriage
// return overwriting what a line said, a Unicode bidirectional override
// (U+202E) showing text in another order than it runs. So every byte the
// CLI writes for people goes through termWriter (run wraps stdout and
// stderr), which shows such characters escaped (\x1b, \r, \u202e) and
// lets tab and newline through; table cells and one-line fields go through
// cell, which escapes tab and newline too. Output for programs keeps its
// data exact: logs --raw and vault get into a pipe or file write the bytes
// (globals.rawStdout); JSON (-o json, -o jsonl, --log-format json) goes
// through a jsonWriter, which writes the characters JSON encoders leave
// raw (DEL, C1, BiDi controls) as \u escapes: the same JSON value.

// escapeRune reports whether r must not reach a terminal as it is: C0
// controls (tab and newline are the caller's choice), DEL, C1 controls, the
// Unicode bidirectional controls (Trojan Source, CVE-2021-42574) and the
// line and paragraph separators.
func escapeRune(r rune, keepTabNewline bool) bool {
	switch {
	case r == '\t' || r == '\n':
		return !keepTabNewline
	case r < 0x20, r == 0x7f, r >= 0x80 && r < 0xa0:
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069,
		r == 0x2028, r == 0x2029:
		return true
	}
	return false
}

// appendEscaped appends the visible form of r.
func appendEscaped(b []byte, r rune) []byte {
	switch {
	case r == '\t':
		return append(b, `\t`...)
	case r == '\n':
		return append(b, `\n`...)
	case r == '\r':
		return append(b, `\r`...)
	case r < 0x80:
		return fmt.Appendf(b, `\x%02x`, r)
	}
	return fmt.Appendf(b, `\u%04x`, r)
}

// sanitize appends s to b with the characters escapeRune names escaped, and
// every byte that is not UTF-8 as \xNN. With keepTabNewline, a carriage
// return right before a newline stays too (it cannot hide anything).
func sanitize(b []byte, s string, keepTabNewline bool) []byte {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b = fmt.Appendf(b, `\x%02x`, s[i])
		case r == '\r' && keepTabNewline && i+1 < len(s) && s[i+1] == '\n':
			b = append(b, '\r')
		case escapeRune(r, keepTabNewline):
			b = appendEscaped(b, r)
		default:
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return b
}

// cell returns s fit for one table cell or one line of text: control
// characters, tabs and newlines escaped.
func cell(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return string(sanitize(nil, s, false))
		}
	}
	return s
}

// termWriter writes what the CLI prints for people, escaping what
// escapeRune names (tabs and newlines pass). A character split across two
// Writes is held until the next one (or Flush); so is a final carriage
// return, to see whether a newline follows it.
type termWriter struct {
	w       io.Writer
	pending []byte
	json    bool // jsonWriter
}

func newTermWriter(w io.Writer) *termWriter { return &termWriter{w: w} }

// newJSONWriter returns a writer for JSON text (encoding/json's, slog's):
// the characters escapeRune names at or above DEL, which JSON encoders
// leave raw inside strings, are written as \uXXXX — the same JSON value,
// nothing a terminal acts on. JSON encoders escape C0 controls already.
func newJSONWriter(w io.Writer) *termWriter { return &termWriter{w: w, json: true} }

// jsonEscape appends s with the characters escapeRune names at or above
// DEL written as JSON \u escapes; anything else as it is.
func jsonEscape(b []byte, s string) []byte {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r >= 0x7f && escapeRune(r, true) && n > 0 && r != utf8.RuneError {
			b = fmt.Appendf(b, `\u%04x`, r)
		} else {
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return b
}

func (t *termWriter) escape(s string) []byte {
	if t.json {
		return jsonEscape(nil, s)
	}
	return sanitize(nil, s, true)
}

// Write implements io.Writer: it consumes all of p.
func (t *termWriter) Write(p []byte) (int, error) {
	buf := append(t.pending, p...)
	end := len(buf)
	// Hold back an incomplete UTF-8 sequence at the end…
	for k := end - 1; k >= 0 && k >= end-utf8.UTFMax; k-- {
		if utf8.RuneStart(buf[k]) {
			if !utf8.FullRune(buf[k:end]) {
				end = k
			}
			break
		}
	}
	// …and a final carriage return.
	if end > 0 && end == len(buf) && buf[end-1] == '\r' {
		end--
	}
	out := t.escape(string(buf[:end]))
	t.pending = append(t.pending[:0:0], buf[end:]...)
	if _, err := t.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes what Write held back.
func (t *termWriter) Flush() error {
	if len(t.pending) == 0 {
		return nil
	}
	out := t.escape(string(t.pending))
	t.pending = nil
	_, err := t.w.Write(out)
	return err
}

// rawWriter returns the writer under w when w is a termWriter.
func rawWriter(w io.Writer) io.Writer {
	if t, ok := w.(*termWriter); ok {
		_ = t.Flush()
		return t.w
	}
	return w
}

// jsonOut returns a jsonWriter on w for one JSON output and its flush.
func jsonOut(w io.Writer) (*termWriter, func() error) {
	j := newJSONWriter(rawWriter(w))
	return j, j.Flush
}

// safeHandler escapes the message and every key, string, error and other
// non-scalar value of a record before the text handler (tint) writes it:
// tint keeps the escape sequences of values when it colours its output —
// it quotes a value, then turns every \x1b of the quoted text back into
// ESC, a literal "\x1b" in a value included, so that text is written
// \u001b here.
type safeHandler struct{ h slog.Handler }

// logText is cell for safeHandler.
func logText(s string) string { return strings.ReplaceAll(cell(s), `\x1b`, `\u001b`) }

func (s safeHandler) Enabled(ctx context.Context, l slog.Level) bool { return s.h.Enabled(ctx, l) }

func (s safeHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, logText(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(safeAttr(a))
		return true
	})
	return s.h.Handle(ctx, out)
}

func (s safeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	safe := make([]slog.Attr, len(as))
	for i, a := range as {
		safe[i] = safeAttr(a)
	}
	return safeHandler{s.h.WithAttrs(safe)}
}

func (s safeHandler) WithGroup(name string) slog.Handler {
	return safeHandler{s.h.WithGroup(logText(name))}
}

func safeAttr(a slog.Attr) slog.Attr {
	a.Key = logText(a.Key)
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		a.Value = slog.StringValue(logText(v.String()))
	case slog.KindGroup:
		g := v.Group()
		safe := make([]slog.Attr, len(g))
		for i, x := range g {
			safe[i] = safeAttr(x)
		}
		a.Value = slog.GroupValue(safe...)
	case slog.KindAny:
		a.Value = slog.StringValue(logText(fmt.Sprint(v.Any())))
	default:
		a.Value = v
	}
	return a
}

// quoted quotes user input for a message (Go syntax: control characters
// escaped), cut to its first 64 characters with a note of its length when
// it is longer: a flag value of a megabyte is not echoed whole.
func quoted[S ~string](v S) string {
	s := string(v)
	if utf8.RuneCountInString(s) <= 64 {
		return strconv.Quote(s)
	}
	return strconv.Quote(string([]rune(s)[:64])) + fmt.Sprintf("…(%d bytes in all)", len(s))
}
