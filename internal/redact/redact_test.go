package redact

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestBytes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		secrets []string
		in      string
		want    string
	}{
		{"no secrets", nil, "hello", "hello"},
		{"only empty secret", []string{""}, "hello", "hello"},
		{"empty input", []string{"pw"}, "", ""},
		{"single", []string{"hunter2"}, "password=hunter2\n", "password=***\n"},
		{"whole input", []string{"hunter2"}, "hunter2", "***"},
		{"several occurrences", []string{"tok"}, "tok a tok b tok", "*** a *** b ***"},
		{"two secrets", []string{"alpha", "beta"}, "x alpha y beta z", "x *** y *** z"},
		{"adjacent occurrences merge", []string{"pw"}, "pwpw!", "***!"},
		{"adjacent different secrets merge", []string{"ab", "cd"}, "-abcd-", "-***-"},
		{"overlap union", []string{"abc", "cde"}, "xabcdey", "x***y"},
		{"self overlap", []string{"aa"}, "baaab", "b***b"},
		{"nested secret", []string{"secret", "cre"}, "a secret and a cre", "a *** and a ***"},
		{"duplicate secrets", []string{"k", "k"}, "kxk", "***x***"},
		{"one-byte secret masks every occurrence", []string{"e"}, "beef", "b***f"},
		{"binary", []string{"\x00\xff"}, "a\x00\xffb\x00", "a***b\x00"},
		{"newline in secret", []string{"line1\nline2"}, "> line1\nline2 <", "> *** <"},
		{"prefix only is kept", []string{"hunter2"}, "hunter", "hunter"},
		{"utf8", []string{"pässwörd"}, "pw: pässwörd.", "pw: ***."},
		{"mask-like text untouched", []string{"pw"}, "***", "***"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New(toBytes(tc.secrets)...)
			if got := string(r.Bytes([]byte(tc.in))); got != tc.want {
				t.Errorf("Bytes(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if got := r.String(tc.in); got != tc.want {
				t.Errorf("String(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if got := reference(toBytes(tc.secrets), []byte(tc.in)); string(got) != tc.want {
				t.Errorf("reference(%q) = %q, want %q (test table is wrong)", tc.in, got, tc.want)
			}
			// Streamed one byte at a time, and in one write.
			for _, size := range []int{1, 2, 3, len(tc.in) + 1} {
				if got := stream(r, []byte(tc.in), fixed(size)); string(got) != tc.want {
					t.Errorf("stream(%q, chunks of %d) = %q, want %q", tc.in, size, got, tc.want)
				}
			}
		})
	}
}

func TestSplitAcrossWrites(t *testing.T) {
	r := New([]byte("SECRET-TOKEN-123"), []byte("pw"))
	var out bytes.Buffer
	w := r.NewWriter(&out)
	for _, chunk := range []string{"token is SEC", "RET-TO", "KEN", "-1", "23 and p", "w", " end"} {
		if n, err := w.Write([]byte(chunk)); err != nil || n != len(chunk) {
			t.Fatalf("Write(%q) = %d, %v", chunk, n, err)
		}
		if strings.Contains(out.String(), "SECRET") {
			t.Fatalf("partial output leaks: %q", out.String())
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "token is *** and *** end"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestWriterHoldsBackOnlyAPrefixLength(t *testing.T) {
	r := New([]byte("12345"))
	var out bytes.Buffer
	w := r.NewWriter(&out)
	w.Write([]byte("abcdefgh"))
	// At most len("12345")-1 = 4 bytes are held back.
	if got := out.String(); got != "abcd" {
		t.Fatalf("released %q, want %q", got, "abcd")
	}
	w.Close()
	if got := out.String(); got != "abcdefgh" {
		t.Fatalf("after Close %q", got)
	}
}

func TestWriterCloseAndErrors(t *testing.T) {
	r := New([]byte("secret"))
	var out bytes.Buffer
	w := r.NewWriter(&out)
	w.Write([]byte("the secr"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if out.String() != "the secr" {
		t.Fatalf("got %q", out.String())
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Fatal("Write after Close succeeded")
	}

	boom := errors.New("boom")
	fw := r.NewWriter(failWriter{boom})
	if _, err := fw.Write(bytes.Repeat([]byte("x"), 100)); !errors.Is(err, boom) {
		t.Fatalf("Write to a failing writer: %v", err)
	}
	if _, err := fw.Write([]byte("y")); !errors.Is(err, boom) {
		t.Fatalf("error is not sticky: %v", err)
	}
	if err := fw.Close(); !errors.Is(err, boom) {
		t.Fatalf("Close: %v", err)
	}

	// No secrets: a pass-through.
	out.Reset()
	pw := New().NewWriter(&out)
	pw.Write([]byte("abc"))
	if out.String() != "abc" {
		t.Fatalf("pass-through held bytes back: %q", out.String())
	}
	pw.Close()
	var nilR *Redactor
	if got := nilR.String("x"); got != "x" {
		t.Fatalf("nil Redactor: %q", got)
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

func TestShortSecrets(t *testing.T) {
	r := New([]byte("a"), []byte("abcd"), []byte(""), []byte("xyz"), []byte("a"))
	if r.Len() != 3 || r.ShortSecrets() != 2 {
		t.Fatalf("Len %d ShortSecrets %d", r.Len(), r.ShortSecrets())
	}
}

func TestSecretsAreCopied(t *testing.T) {
	s := []byte("secret")
	r := New(s)
	copy(s, "XXXXXX")
	if got := r.String("a secret"); got != "a ***" {
		t.Fatalf("got %q", got)
	}
}

// TestRandomChunkings is a quick deterministic version of the fuzz test that
// runs in every `go test`.
func TestRandomChunkings(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("ab*\x00c")
	for i := 0; i < 3000; i++ {
		data := randBytes(rng, alphabet, rng.IntN(60))
		var secrets [][]byte
		for n := rng.IntN(4); n >= 0; n-- {
			secrets = append(secrets, randBytes(rng, alphabet, rng.IntN(6)))
		}
		check(t, data, secrets, randomChunks(rng))
	}
}

func FuzzWriter(f *testing.F) {
	f.Add([]byte("password=hunter2 and hunter2"), []byte{9, 7}, []byte{3, 1, 4, 1, 5})
	f.Add([]byte("abcdeabcde"), []byte{0, 3, 2, 3}, []byte{1})
	f.Add([]byte("aaaaaaaaaa"), []byte{0, 2, 1, 3}, []byte{2, 3})
	f.Add([]byte("x\x00y\x00z"), []byte{1, 1}, []byte{})
	f.Add([]byte(""), []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, data, spec, chunking []byte) {
		// Secrets are picked out of data (offset, length pairs) so that they
		// occur; a pair whose offset is past the end yields a secret made of
		// the spec bytes themselves.
		var secrets [][]byte
		for i := 0; i+1 < len(spec) && len(secrets) < 8; i += 2 {
			off, n := int(spec[i]), int(spec[i+1])%24
			if off < len(data) {
				secrets = append(secrets, data[off:min(off+n, len(data))])
			} else {
				secrets = append(secrets, spec[i:min(i+1+n%4, len(spec))])
			}
		}
		i := 0
		next := func() int {
			if len(chunking) == 0 {
				return 1 + len(data)
			}
			c := int(chunking[i%len(chunking)])
			i++
			return c % 17 // 0-byte writes included
		}
		check(t, data, secrets, next)
	})
}

// check verifies, for data written in chunks sized by next, that the streamed
// output equals Bytes of the whole, that Bytes equals the reference
// implementation, and that no secret survives.
func check(t *testing.T, data []byte, secrets [][]byte, next func() int) {
	t.Helper()
	r := New(secrets...)
	whole := r.Bytes(data)
	if ref := reference(secrets, data); !bytes.Equal(whole, ref) {
		t.Fatalf("Bytes(%q) with secrets %q = %q, reference %q", data, secrets, whole, ref)
	}
	streamed := stream(r, data, next)
	if !bytes.Equal(streamed, whole) {
		t.Fatalf("stream(%q) with secrets %q = %q, Bytes = %q", data, secrets, streamed, whole)
	}
	for _, s := range secrets {
		// A secret containing '*' can be completed by the Mask itself (see
		// the package doc), so the check applies to the others.
		if len(s) > 0 && !bytes.ContainsRune(s, '*') && bytes.Contains(whole, s) {
			t.Fatalf("secret %q survives in %q (input %q)", s, whole, data)
		}
	}
}

// reference is a deliberately simple implementation: mark covered bytes, then
// replace each maximal covered run with Mask.
func reference(secrets [][]byte, data []byte) []byte {
	covered := make([]bool, len(data))
	for _, s := range secrets {
		if len(s) == 0 {
			continue
		}
		for i := 0; i+len(s) <= len(data); i++ {
			if bytes.Equal(data[i:i+len(s)], s) {
				for j := i; j < i+len(s); j++ {
					covered[j] = true
				}
			}
		}
	}
	out := []byte{}
	for i := 0; i < len(data); i++ {
		if !covered[i] {
			out = append(out, data[i])
			continue
		}
		if i == 0 || !covered[i-1] {
			out = append(out, Mask...)
		}
	}
	return out
}

func stream(r *Redactor, data []byte, next func() int) []byte {
	var out bytes.Buffer
	w := r.NewWriter(&out)
	for len(data) > 0 {
		n := min(next(), len(data))
		if n == 0 { // an empty write, then at least one byte so the loop ends
			if _, err := w.Write(nil); err != nil {
				panic(err)
			}
			n = 1
		}
		if _, err := w.Write(data[:n]); err != nil {
			panic(err)
		}
		data = data[n:]
	}
	if err := w.Close(); err != nil {
		panic(err)
	}
	return out.Bytes()
}

func fixed(n int) func() int { return func() int { return n } }

func randomChunks(rng *rand.Rand) func() int {
	return func() int { return rng.IntN(8) }
}

func randBytes(rng *rand.Rand, alphabet []byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return b
}

func toBytes(ss []string) [][]byte {
	var out [][]byte
	for _, s := range ss {
		out = append(out, []byte(s))
	}
	return out
}

var _ io.WriteCloser = New().NewWriter(io.Discard)

func TestMaskPartialSuffix(t *testing.T) {
	r := New([]byte("hunter22"), []byte("xyz"))
	for in, want := range map[string]string{
		"log: hunt":    "log: ***",
		"log: hunter2": "log: ***",
		"log: ok":      "log: ok",
		"x":            "***",
		"":             "",
	} {
		if got := string(r.MaskPartialSuffix([]byte(in))); got != want {
			t.Errorf("MaskPartialSuffix(%q) = %q, want %q", in, got, want)
		}
	}
	var nilR *Redactor
	if got := string(nilR.MaskPartialSuffix([]byte("abc"))); got != "abc" {
		t.Errorf("nil redactor changed %q", got)
	}
}
