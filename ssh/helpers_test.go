package ssh_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rediacc/rediacc/ssh"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// inprocTarget returns a Target for an in-process server, with a
// known_hosts file holding its key.
func inprocTarget(t testing.TB, name string, srv *sshtest.Server) ssh.Target {
	t.Helper()
	kh := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(kh, []byte(srv.KnownHostsLine()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return ssh.Target{
		Name:    name,
		Host:    srv.Host(),
		Port:    srv.Port(),
		User:    "tester",
		Auth:    []ssh.Auth{ssh.Signers(srv.ClientSigner())},
		HostKey: ssh.KnownHosts(kh),
	}
}

// opensshTarget returns a Target for a real sshd, authenticated with the
// unencrypted client key file.
func opensshTarget(name string, o *sshtest.OpenSSH) ssh.Target {
	return ssh.Target{
		Name:    name,
		Host:    o.Host,
		Port:    o.Port,
		User:    o.User,
		Auth:    []ssh.Auth{ssh.KeyFile(o.ClientKeyPath, nil)},
		HostKey: ssh.KnownHosts(o.KnownHostsPath),
	}
}

// newPool returns a pool closed at the end of the test.
func newPool(t testing.TB, cfg ssh.Config) *ssh.Pool {
	t.Helper()
	p := ssh.NewPool(cfg)
	t.Cleanup(func() { p.Close() })
	return p
}

// marker returns a number unique enough to find a test's processes with
// pgrep -f.
func marker() string { return fmt.Sprintf("%d", 100000000+rand.IntN(800000000)) }

// treeCmd starts two background sleeps and waits: a process tree whose
// command lines all contain m.
func treeCmd(m string) string {
	return fmt.Sprintf("echo started; sh -c 'sleep %s1 & sleep %s2; wait'", m, m)
}

// pgrep lists processes whose command line contains pattern.
func pgrep(pattern string) string {
	out, _ := exec.Command("pgrep", "-a", "-f", pattern).Output()
	return strings.TrimSpace(string(out))
}

// waitGone polls until no process matches pattern (up to 10s).
func waitGone(t testing.TB, pattern string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := pgrep(pattern)
		if left == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("remote processes survived:\n%s", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitRunning polls until a process matches pattern (up to 10s).
func waitRunning(t testing.TB, pattern string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for pgrep(pattern) == "" {
		if time.Now().After(deadline) {
			t.Fatalf("no process matches %q", pattern)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// signalWriter closes ch on its first write.
type signalWriter struct {
	once sync.Once
	ch   chan struct{}
}

func newSignalWriter() *signalWriter { return &signalWriter{ch: make(chan struct{})} }

func (w *signalWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.ch) })
	return len(p), nil
}

// eventually polls cond up to 10s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freePort returns a loopback port nobody listens on.
func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// freezeProxy forwards TCP to a target until frozen; then it holds every
// byte (and new connections) without forwarding: a host that went dark.
// Thaw lets new connections through again (held ones stay dark);
// HoldReplies holds the server's bytes on the connections open now while
// the client's still reach the server (a request that arrives but whose
// answer never does).
type freezeProxy struct {
	ln     net.Listener
	target string
	frozen atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
	links  []*proxyLink
	wg     sync.WaitGroup
	done   chan struct{}
}

// proxyLink is one proxied connection: up carries the client's bytes,
// down the server's.
type proxyLink struct{ up, down atomic.Bool }

func newFreezeProxy(t testing.TB, target string) *freezeProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{ln: ln, target: target, done: make(chan struct{})}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

func (p *freezeProxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// Freeze holds every byte of every connection, and new connections.
func (p *freezeProxy) Freeze() {
	p.frozen.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.links {
		l.up.Store(true)
		l.down.Store(true)
	}
}

// Thaw lets new connections through; those held stay held.
func (p *freezeProxy) Thaw() { p.frozen.Store(false) }

// HoldReplies holds the server's bytes on the connections open now.
func (p *freezeProxy) HoldReplies() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.links {
		l.down.Store(true)
	}
}

func (p *freezeProxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

func (p *freezeProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.track(c)
		if p.frozen.Load() {
			continue // accepted, never answered
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.track(up)
		l := &proxyLink{}
		p.mu.Lock()
		p.links = append(p.links, l)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, up, &l.down)
		go p.pipe(up, c, &l.up)
	}
}

func (p *freezeProxy) pipe(dst, src net.Conn, held *atomic.Bool) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !held.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err == io.EOF && !held.Load() {
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
			}
			return
		}
	}
}

func (p *freezeProxy) Close() {
	select {
	case <-p.done:
		return
	default:
	}
	close(p.done)
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// runOK runs cmd and fails the test unless it exits 0.
func runOK(t testing.TB, p *ssh.Pool, tg ssh.Target, cmd string) *ssh.Result {
	t.Helper()
	res, err := p.Run(context.Background(), tg, ssh.Command{Cmd: cmd})
	if err != nil {
		t.Fatalf("Run(%q): %v", cmd, err)
	}
	return res
}
