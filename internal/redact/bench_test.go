package redact

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"io"
	"testing"

	"golang.org/x/crypto/ssh"
)

// benchSecrets returns a 38-byte token and a PEM private key (a multi-line
// secret: each of its lines becomes a variant).
func benchSecrets(b *testing.B) [][]byte {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		b.Fatal(err)
	}
	return [][]byte{[]byte("canary0123456789abcdef0123456789abcdef"), pem.EncodeToMemory(blk)}
}

// benchOutput is 1 MiB of log-like text.
func benchOutput() []byte {
	line := []byte("2026-11-29T12:00:00Z INFO request served path=/api/v1/items status=200 bytes=5120\n")
	return bytes.Repeat(line, (1<<20)/len(line))
}

// BenchmarkMask masks 1 MiB of output: exact values only (New) against the
// values and their printed forms (NewSecrets), whole and streamed in 32 KiB
// writes.
func BenchmarkMask(b *testing.B) {
	secrets, out := benchSecrets(b), benchOutput()
	for _, tc := range []struct {
		name string
		r    *Redactor
	}{{"exact", New(secrets...)}, {"variants", NewSecrets(secrets...)}} {
		b.Run(tc.name+"/bytes", func(b *testing.B) {
			b.SetBytes(int64(len(out)))
			for b.Loop() {
				tc.r.Bytes(out)
			}
			b.ReportMetric(float64(tc.r.Len()), "patterns")
		})
		b.Run(tc.name+"/writer", func(b *testing.B) {
			b.SetBytes(int64(len(out)))
			for b.Loop() {
				w := tc.r.NewWriter(io.Discard)
				for p := out; len(p) > 0; p = p[min(len(p), 32<<10):] {
					w.Write(p[:min(len(p), 32<<10)])
				}
				w.Close()
			}
		})
	}
}
