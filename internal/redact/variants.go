package redact

import (
	"bytes"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// NewSecrets returns a Redactor for secret values: each value and the forms
// in which a shell or a common tool prints it without being asked to encode
// it (see [Variants]). Use it for values handed to commands; [New] masks
// only the exact bytes.
func NewSecrets(values ...[]byte) *Redactor {
	var all [][]byte
	for _, v := range values {
		all = append(all, Variants(v)...)
	}
	return New(all...)
}

// Variants returns v and the forms in which v reaches output when a shell
// or a common tool prints it "as is", in the order below, without
// duplicates and without fragments shorter than [ShortSecretLen] (v itself
// is returned whatever its length, unless empty):
//
//   - v with its trailing newline (and CR) removed, and with surrounding
//     white space removed: command substitution strips trailing newlines
//     (x=$(cat file)), and a value read from a file often carries one;
//   - each line of a multi-line v (CR before the LF removed), and each line
//     with surrounding white space removed: printf '%s\n' "$V" | tail -1,
//     grep, head, sed, a loop over lines, CRLF (unix2dos) output;
//   - v with each run of spaces, tabs and newlines (the shell's IFS)
//     collapsed to one space: echo $V (an unquoted expansion);
//   - for v, its trimmed forms and each line: the text between the quotes of
//     the shell-quoted forms — single-quoted with ' written '\” (bash's
//     set, ${V@Q} and set -x, rediacc's own quoting) or '"'"' (dash's set
//     and export -p), double-quoted with \ " $ ` escaped (bash's declare
//     -p), bash's printf %q backslash form, bash's $'…' form (declare -p,
//     set and printf %q when v holds control characters; non-ASCII bytes
//     kept, or as octal escapes in the C locale); the JSON string forms
//     (jq and encoding/json: control characters as \n, \t, \uXXXX;
//     Python's json.dumps: non-ASCII as \uXXXX too; Go's HTML-safe < > &
//     as \u003c…); and the output of dash's echo, which interprets
//     backslash escapes (\n, \t, \\, \0NNN…).
//
// Deliberate transformations are not covered: base64, hex, od or xxd
// dumps, URL encoding, rev, tr, case changes, cut or head -c substrings,
// fold, tab expansion, splitting v into words, compression or encryption. A
// command that may use a secret can always print it in such a form.
func Variants(v []byte) [][]byte {
	if len(v) == 0 {
		return nil
	}
	var out [][]byte
	seen := map[string]bool{}
	add := func(b []byte, derived bool) bool {
		if len(b) == 0 || derived && len(b) < ShortSecretLen || seen[string(b)] {
			return false
		}
		seen[string(b)] = true
		out = append(out, b)
		return true
	}
	add(v, false)
	bases := [][]byte{v}
	for _, b := range [][]byte{bytes.TrimRight(v, "\r\n"), bytes.TrimSpace(v)} {
		if add(b, true) {
			bases = append(bases, b)
		}
	}
	if bytes.ContainsAny(v, "\r\n") {
		for _, line := range bytes.Split(v, []byte("\n")) {
			line = bytes.TrimSuffix(line, []byte("\r"))
			for _, b := range [][]byte{line, bytes.TrimSpace(line)} {
				if add(b, true) {
					bases = append(bases, b)
				}
			}
		}
	}
	add(bytes.Join(bytes.FieldsFunc(v, isIFS), []byte(" ")), true)
	for _, b := range bases {
		for _, enc := range encoders {
			add(enc(b), true)
		}
	}
	return out
}

// isIFS reports whether c is in the shell's default IFS (space, tab,
// newline), on which an unquoted expansion is split.
func isIFS(c rune) bool { return c == ' ' || c == '\t' || c == '\n' }

// encoders produce the quoted forms of Variants (the text between the
// quotes).
var encoders = []func([]byte) []byte{
	func(b []byte) []byte { return bytes.ReplaceAll(b, []byte("'"), []byte(`'\''`)) },
	func(b []byte) []byte { return bytes.ReplaceAll(b, []byte("'"), []byte(`'"'"'`)) },
	doubleQuoted,
	bashBackslashQuoted,
	func(b []byte) []byte { return ansiC(b, false) },
	func(b []byte) []byte { return ansiC(b, true) },
	func(b []byte) []byte { return jsonEscaped(b, jsonJQ) },
	func(b []byte) []byte { return jsonEscaped(b, jsonPython) },
	func(b []byte) []byte { return jsonEscaped(b, jsonGo) },
	dashEcho,
}

// doubleQuoted escapes \ " $ ` with a backslash (bash's declare -p).
func doubleQuoted(b []byte) []byte {
	var out []byte
	for _, c := range b {
		switch c {
		case '\\', '"', '$', '`':
			out = append(out, '\\')
		}
		out = append(out, c)
	}
	return out
}

// hasControl reports whether b holds an ASCII control character or DEL, for
// which bash switches from the backslash form to $'…'.
func hasControl(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}

// bashBackslashQuoted is bash's printf %q for a value without control
// characters (sh_backslash_quote): a backslash before each shell
// metacharacter, and before # or ~ at the start.
func bashBackslashQuoted(b []byte) []byte {
	if hasControl(b) {
		return nil
	}
	var out []byte
	for i, c := range b {
		switch c {
		case ' ', '\'', '"', '\\', '|', '&', ';', '(', ')', '<', '>', '!', '{', '}', '*', '[', ']', '?', '^', '$', '`', ',':
			out = append(out, '\\')
		case '#', '~':
			if i == 0 {
				out = append(out, '\\')
			}
		}
		out = append(out, c)
	}
	return out
}

// ansiC is bash's $'…' form (ansic_quote) of a value holding control
// characters; cLocale writes non-ASCII bytes as octal escapes, as bash does
// in the C locale.
func ansiC(b []byte, cLocale bool) []byte {
	if !hasControl(b) && !(cLocale && !isASCII(b)) {
		return nil
	}
	var out []byte
	for i := 0; i < len(b); {
		c := b[i]
		switch c {
		case '\a':
			out = append(out, `\a`...)
		case '\b':
			out = append(out, `\b`...)
		case 0x1b:
			out = append(out, `\E`...)
		case '\f':
			out = append(out, `\f`...)
		case '\n':
			out = append(out, `\n`...)
		case '\r':
			out = append(out, `\r`...)
		case '\t':
			out = append(out, `\t`...)
		case '\v':
			out = append(out, `\v`...)
		case '\\', '\'':
			out = append(out, '\\', c)
		default:
			if c < 0x20 || c == 0x7f || c >= 0x80 && cLocale {
				out = append(out, fmt.Sprintf(`\%03o`, c)...)
			} else if c >= 0x80 {
				r, n := utf8.DecodeRune(b[i:])
				if r == utf8.RuneError && n <= 1 {
					out = append(out, fmt.Sprintf(`\%03o`, c)...)
				} else {
					out = append(out, b[i:i+n]...)
				}
				i += n
				continue
			} else {
				out = append(out, c)
			}
		}
		i++
	}
	return out
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

// JSON writers whose string escaping jsonEscaped follows.
const (
	jsonJQ     = iota // jq: control characters and DEL escaped, the rest as is
	jsonPython        // Python's json.dumps: non-ASCII as \uXXXX (surrogate pairs beyond the BMP)
	jsonGo            // Go's encoding/json: HTML-safe (< > & as \u003c…) and U+2028/2029 escaped
)

// jsonEscaped is the inside of a JSON string holding b as the writer mode
// writes it.
func jsonEscaped(b []byte, mode int) []byte {
	asciiOnly, htmlSafe := mode == jsonPython, mode == jsonGo
	var out []byte
	for i := 0; i < len(b); {
		c := b[i]
		if c < 0x80 {
			switch {
			case c == '"' || c == '\\':
				out = append(out, '\\', c)
			case c == '\n':
				out = append(out, `\n`...)
			case c == '\r':
				out = append(out, `\r`...)
			case c == '\t':
				out = append(out, `\t`...)
			case c == '\b':
				out = append(out, `\b`...)
			case c == '\f':
				out = append(out, `\f`...)
			case c < 0x20 || c == 0x7f && mode == jsonJQ:
				out = append(out, fmt.Sprintf(`\u%04x`, c)...)
			case htmlSafe && (c == '<' || c == '>' || c == '&'):
				out = append(out, fmt.Sprintf(`\u%04x`, c)...)
			default:
				out = append(out, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			out = append(out, `\ufffd`...)
		case asciiOnly && r > 0xffff:
			r -= 0x10000
			out = append(out, fmt.Sprintf(`\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))...)
		case asciiOnly || htmlSafe && (r == 0x2028 || r == 0x2029):
			out = append(out, fmt.Sprintf(`\u%04x`, r)...)
		default:
			out = append(out, b[i:i+n]...)
		}
		i += n
	}
	return out
}

// dashEcho is what dash's echo (and POSIX XSI echo) prints for b: \a \b \f
// \n \r \t \v \\ and \0NNN (up to three octal digits) are interpreted; \c
// ends the output.
func dashEcho(b []byte) []byte {
	if !bytes.ContainsRune(b, '\\') {
		return nil
	}
	var out []byte
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c != '\\' || i+1 == len(b) {
			out = append(out, c)
			continue
		}
		i++
		switch b[i] {
		case 'a':
			out = append(out, '\a')
		case 'b':
			out = append(out, '\b')
		case 'c':
			return out
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'v':
			out = append(out, '\v')
		case '\\':
			out = append(out, '\\')
		case '0':
			j := i + 1
			for j < len(b) && j < i+4 && b[j] >= '0' && b[j] <= '7' {
				j++
			}
			n, _ := strconv.ParseUint(string(b[i+1:j]), 8, 16)
			out = append(out, byte(n))
			i = j - 1
		default:
			out = append(out, '\\', b[i])
		}
	}
	return out
}
