package ssh_test

import (
	"context"
	"testing"

	"github.com/rediacc/rediacc/ssh"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// BenchmarkRunPooled runs `true` on a real sshd over a pooled connection:
// the per-command cost (session open, exec, exit status, pid wrapper).
func BenchmarkRunPooled(b *testing.B) {
	o := sshtest.StartOpenSSH(b, sshtest.OpenSSHOptions{Loopback: 2})
	p := newPool(b, ssh.Config{})
	tg := opensshTarget("bench", o)
	runOK(b, p, tg, "true") // warm the connection
	b.ResetTimer()
	for b.Loop() {
		if _, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRunFreshConnection runs `true` on a real sshd with a new
// connection each time (dial, handshake, auth, key loading, session).
func BenchmarkRunFreshConnection(b *testing.B) {
	o := sshtest.StartOpenSSH(b, sshtest.OpenSSHOptions{Loopback: 2})
	p := newPool(b, ssh.Config{})
	tg := opensshTarget("bench", o)
	b.ResetTimer()
	for b.Loop() {
		if _, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"}); err != nil {
			b.Fatal(err)
		}
		p.Forget(tg.Name)
	}
}

// BenchmarkRunPooledParallel runs `true` from several goroutines on one
// real sshd (the pool spreads them over connections).
func BenchmarkRunPooledParallel(b *testing.B) {
	o := sshtest.StartOpenSSH(b, sshtest.OpenSSHOptions{Loopback: 2})
	p := newPool(b, ssh.Config{})
	tg := opensshTarget("bench", o)
	runOK(b, p, tg, "true")
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkRunInProcess runs `true` on the in-process server (no sshd).
func BenchmarkRunInProcess(b *testing.B) {
	srv := sshtest.NewServer(b, sshtest.Options{})
	p := newPool(b, ssh.Config{})
	tg := inprocTarget(b, "bench", srv)
	runOK(b, p, tg, "true")
	b.ResetTimer()
	for b.Loop() {
		if _, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"}); err != nil {
			b.Fatal(err)
		}
	}
}
