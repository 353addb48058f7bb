// Package sshtest starts SSH servers for tests and local use: an in-process
// server built on golang.org/x/crypto/ssh (Start, NewServer) that runs
// commands with the local shell, and real OpenSSH sshd processes on
// loopback addresses (StartOpenSSH).
package sshtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Options configures an in-process server. The zero value is usable.
type Options struct {
	// Addr is the TCP address to listen on. Default "127.0.0.1:0" (a free
	// port on loopback).
	Addr string
	// HostKey is the server's host key. Default: a new ed25519 key.
	HostKey ssh.Signer
	// AuthorizedKeys are the public keys allowed to log in (any user name).
	// When empty and NoClientAuth is false, Start generates an ed25519
	// client key, authorizes it and exposes it as Server.ClientSigner.
	AuthorizedKeys []ssh.PublicKey
	// NoClientAuth accepts every client without authentication. Only for
	// tests on loopback.
	NoClientAuth bool
	// Shell runs commands as `Shell -c CMD`. Default "/bin/sh".
	Shell string
	// MaxSessions caps concurrently open sessions per connection; further
	// session channels are rejected as "administratively prohibited", like
	// OpenSSH's MaxSessions. 0 means unlimited.
	MaxSessions int
	// Logger receives debug records. Default: discard.
	Logger *slog.Logger
	// UserCAs, when set, makes the server accept user certificates signed
	// by one of them, for any user listed as a principal and valid now
	// (as sshd's TrustedUserCAKeys does; see cert.go).
	UserCAs []ssh.PublicKey
	// PublicKeyAuthAlgorithms are the signature algorithms the server
	// accepts and announces in server-sig-algs (x/crypto's
	// ServerConfig.PublicKeyAuthAlgorithms), e.g. only "ssh-rsa" to act as
	// a server that accepts SHA-1 signatures alone. Default: x/crypto's.
	PublicKeyAuthAlgorithms []string
	// Home is the login user's home directory, as sshd would set it:
	// commands run with HOME=Home (runs with a RunID keep their markers
	// there, under ssh.RunDirBase). When set by the caller, commands also
	// run in that directory, and the keys in Home/.ssh/authorized_keys
	// (OpenSSH's default AuthorizedKeysFile), read again at every
	// authentication, log in too, so that editing the file (adding or
	// revoking a key) takes effect as with sshd. Key options (from=,
	// command=, …) are not enforced. With Home set and AuthorizedKeys
	// empty, no client key is generated. Default: a new temporary
	// directory, removed by Close (HOME only: its keys are not read).
	Home string
	// ServerVersion is the identification string the server sends
	// (default x/crypto's "SSH-2.0-Go"), e.g. "SSH-2.0-OpenSSH_6.2" to
	// pose as an old sshd.
	ServerVersion string
	// RefuseKeyTypes lists public key algorithms (ssh.KeyAlgoED25519, …)
	// the server refuses to authenticate, like an sshd too old for them.
	RefuseKeyTypes []string
}

// Server is an in-process SSH server that runs "exec" requests with the
// local shell, as the current OS user, in a new session (process group) per
// command. It supports the "env", "exec", "shell" and "signal" requests,
// reports exit-status and exit-signal, and answers keepalive@openssh.com
// global requests. Like OpenSSH, closing a session does not kill its
// command; Close does.
type Server struct {
	opts     Options
	ln       net.Listener
	config   *ssh.ServerConfig
	hostKey  ssh.Signer
	client   ssh.Signer
	log      *slog.Logger
	wg       sync.WaitGroup
	mu       sync.Mutex
	closed   bool
	conns    map[net.Conn]struct{}
	procs    map[*os.Process]struct{}
	closeErr error
	once     sync.Once
	ownHome  bool // Options.Home was made by Start: Close removes it
}

// GenerateSigner returns a new ed25519 signer and its private key in
// OpenSSH PEM form, encrypted with passphrase when it is non-empty.
func GenerateSigner(passphrase []byte) (ssh.Signer, []byte, error) {
	signer, plain, enc, err := generateKey(passphrase)
	if err != nil {
		return nil, nil, err
	}
	if len(passphrase) > 0 {
		return signer, enc, nil
	}
	return signer, plain, nil
}

// Start listens on opts.Addr and serves until Close. It returns an error
// when the address cannot be listened on or a key cannot be generated.
func Start(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.Shell == "" {
		opts.Shell = "/bin/sh"
	}
	s := &Server{
		opts:  opts,
		log:   opts.Logger,
		conns: map[net.Conn]struct{}{},
		procs: map[*os.Process]struct{}{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.opts.Home == "" {
		home, err := os.MkdirTemp("", "sshtest-home-")
		if err != nil {
			return nil, err
		}
		s.opts.Home, s.ownHome = home, true
	}
	fail := func(err error) (*Server, error) {
		if s.ownHome {
			_ = os.RemoveAll(s.opts.Home)
		}
		return nil, err
	}
	s.hostKey = opts.HostKey
	if s.hostKey == nil {
		k, _, err := GenerateSigner(nil)
		if err != nil {
			return fail(err)
		}
		s.hostKey = k
	}
	authorized := append([]ssh.PublicKey(nil), opts.AuthorizedKeys...)
	if len(authorized) == 0 && !opts.NoClientAuth && opts.Home == "" {
		k, _, err := GenerateSigner(nil)
		if err != nil {
			return fail(err)
		}
		s.client = k
		authorized = append(authorized, k.PublicKey())
	}
	s.config = &ssh.ServerConfig{
		NoClientAuth:            opts.NoClientAuth,
		PublicKeyAuthAlgorithms: opts.PublicKeyAuthAlgorithms,
		ServerVersion:           opts.ServerVersion,
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if cert, ok := key.(*ssh.Certificate); ok && len(opts.UserCAs) > 0 {
				return checkUserCert(opts.UserCAs, meta, cert) // cert.go
			}
			for _, t := range opts.RefuseKeyTypes {
				if key.Type() == t {
					return nil, fmt.Errorf("sshtest: key type %s is not accepted", t)
				}
			}
			keys := authorized
			if opts.Home != "" {
				keys = append(slices.Clip(keys), s.homeKeys()...)
			}
			for _, k := range keys {
				if k.Type() == key.Type() && string(k.Marshal()) == string(key.Marshal()) {
					return &ssh.Permissions{}, nil
				}
			}
			return nil, fmt.Errorf("sshtest: key %s not authorized for %q", ssh.FingerprintSHA256(key), meta.User())
		},
	}
	s.config.AddHostKey(s.hostKey)
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return fail(err)
	}
	s.ln = ln
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// homeKeys reads the keys of Home/.ssh/authorized_keys (none when the file
// is missing or unreadable).
func (s *Server) homeKeys() []ssh.PublicKey {
	b, err := os.ReadFile(filepath.Join(s.opts.Home, ".ssh", "authorized_keys"))
	if err != nil {
		return nil
	}
	var keys []ssh.PublicKey
	for len(b) > 0 {
		k, _, _, rest, err := ssh.ParseAuthorizedKey(b)
		if err != nil {
			break
		}
		keys = append(keys, k)
		b = rest
	}
	return keys
}

// NewServer starts a server for a test and closes it in tb.Cleanup. It
// calls tb.Fatal when the server cannot start.
func NewServer(tb testing.TB, opts Options) *Server {
	tb.Helper()
	s, err := Start(opts)
	if err != nil {
		tb.Fatalf("sshtest: start server: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// Addr returns the listening address ("127.0.0.1:PORT").
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Host returns the listening IP address.
func (s *Server) Host() string { return s.ln.Addr().(*net.TCPAddr).IP.String() }

// Port returns the listening TCP port.
func (s *Server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// HostKey returns the server's public host key.
func (s *Server) HostKey() ssh.PublicKey { return s.hostKey.PublicKey() }

// ClientSigner returns the generated client key authorized on this server,
// or nil when Options.AuthorizedKeys or NoClientAuth was set.
func (s *Server) ClientSigner() ssh.Signer { return s.client }

// KnownHostsLine returns the known_hosts line for this server
// ("[127.0.0.1]:PORT ssh-ed25519 AAAA..."), without a trailing newline.
func (s *Server) KnownHostsLine() string {
	return knownhosts.Line([]string{s.Addr()}, s.HostKey())
}

// Close stops listening, kills the process groups of running commands,
// closes all connections and waits for the server's goroutines. It returns
// the listener's close error, if any; calling it again returns the same.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.closeErr = s.ln.Close()
		for p := range s.procs {
			_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
		}
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
		if s.ownHome {
			_ = os.RemoveAll(s.opts.Home)
		}
	})
	return s.closeErr
}

// Home returns the HOME of the server's commands (Options.Home).
func (s *Server) Home() string { return s.opts.Home }

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.conns[nc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.handleConn(nc)
	}
}

func (s *Server) handleConn(nc net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, nc)
		s.mu.Unlock()
		nc.Close()
	}()
	sc, chans, reqs, err := ssh.NewServerConn(nc, s.config)
	if err != nil {
		s.log.Debug("sshtest: handshake failed", "remote", nc.RemoteAddr(), "err", err)
		return
	}
	defer sc.Close()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for r := range reqs {
			if r.WantReply {
				_ = r.Reply(r.Type == "keepalive@openssh.com", nil)
			}
		}
	}()
	var sessions sync.WaitGroup
	var mu sync.Mutex
	open := 0
	for nch := range chans {
		if nch.ChannelType() != "session" {
			_ = nch.Reject(ssh.UnknownChannelType, "only session channels are supported")
			continue
		}
		mu.Lock()
		if s.opts.MaxSessions > 0 && open >= s.opts.MaxSessions {
			mu.Unlock()
			_ = nch.Reject(ssh.Prohibited, "open failed")
			continue
		}
		open++
		mu.Unlock()
		ch, chReqs, err := nch.Accept()
		if err != nil {
			mu.Lock()
			open--
			mu.Unlock()
			continue
		}
		sessions.Add(1)
		go func() {
			defer sessions.Done()
			s.handleSession(sc.User(), ch, chReqs)
			mu.Lock()
			open--
			mu.Unlock()
		}()
	}
	sessions.Wait()
}

type session struct {
	s    *Server
	ch   ssh.Channel
	env  []string
	user string

	mu      sync.Mutex
	proc    *os.Process
	pending []syscall.Signal // signals received before the process started
}

func (s *Server) handleSession(user string, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	ss := &session{s: s, ch: ch, user: user}
	started := false
	for req := range reqs {
		switch req.Type {
		case "env":
			var kv struct{ Name, Value string }
			if err := ssh.Unmarshal(req.Payload, &kv); err != nil {
				_ = req.Reply(false, nil)
				continue
			}
			ss.env = append(ss.env, kv.Name+"="+kv.Value)
			_ = req.Reply(true, nil)
		case "exec", "shell":
			if started {
				_ = req.Reply(false, nil)
				continue
			}
			var args []string
			if req.Type == "exec" {
				var cmd struct{ Command string }
				if err := ssh.Unmarshal(req.Payload, &cmd); err != nil {
					_ = req.Reply(false, nil)
					continue
				}
				args = []string{"-c", cmd.Command}
			}
			// start replies to req itself: the reply must precede the
			// exit status of a command that ends at once.
			if err := ss.start(args, req); err != nil {
				s.log.Debug("sshtest: start failed", "err", err)
				_ = req.Reply(false, nil)
				continue
			}
			started = true
		case "signal":
			var sig struct{ Signal string }
			if err := ssh.Unmarshal(req.Payload, &sig); err == nil {
				ss.signal(sig.Signal)
			}
			if req.WantReply {
				_ = req.Reply(true, nil)
			}
		default:
			if req.WantReply {
				_ = req.Reply(false, nil)
			}
		}
	}
}

func (ss *session) baseEnv() []string {
	env := []string{"SHELL=" + ss.s.opts.Shell, "HOME=" + ss.s.opts.Home}
	for _, k := range []string{"PATH", "USER", "LOGNAME", "LANG", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	if !strings.Contains(strings.Join(env, "\n"), "PATH=") {
		env = append(env, "PATH=/usr/local/bin:/usr/bin:/bin")
	}
	return append(env, ss.env...)
}

// start runs the shell and answers req with success; the command's exit is
// then reported on the channel, which is closed. On error req is not
// answered.
func (ss *session) start(args []string, req *ssh.Request) error {
	s := ss.s
	cmd := exec.Command(s.opts.Shell, args...)
	cmd.Env = ss.baseEnv()
	if !s.ownHome {
		cmd.Dir = s.opts.Home
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Stdout = ss.ch
	cmd.Stderr = ss.ch.Stderr()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("server closed")
	}
	if err := cmd.Start(); err != nil {
		s.mu.Unlock()
		return err
	}
	s.procs[cmd.Process] = struct{}{}
	s.wg.Add(2)
	s.mu.Unlock()

	_ = req.Reply(true, nil)
	ss.mu.Lock()
	ss.proc = cmd.Process
	for _, sig := range ss.pending {
		_ = cmd.Process.Signal(sig)
	}
	ss.mu.Unlock()

	// stdin ends when the channel delivers EOF or closes.
	go func() {
		defer s.wg.Done()
		_, _ = io.Copy(stdin, ss.ch)
		stdin.Close()
	}()
	go func() {
		defer s.wg.Done()
		err := cmd.Wait()
		s.mu.Lock()
		delete(s.procs, cmd.Process)
		s.mu.Unlock()
		ss.sendExit(cmd.ProcessState, err)
		_ = ss.ch.CloseWrite()
		ss.ch.Close()
	}()
	return nil
}

var signalsByName = map[string]syscall.Signal{
	"ABRT": syscall.SIGABRT, "ALRM": syscall.SIGALRM, "FPE": syscall.SIGFPE, "HUP": syscall.SIGHUP,
	"ILL": syscall.SIGILL, "INT": syscall.SIGINT, "KILL": syscall.SIGKILL, "PIPE": syscall.SIGPIPE,
	"QUIT": syscall.SIGQUIT, "SEGV": syscall.SIGSEGV, "TERM": syscall.SIGTERM, "USR1": syscall.SIGUSR1,
	"USR2": syscall.SIGUSR2,
}

func signalName(sig syscall.Signal) string {
	for name, s := range signalsByName {
		if s == sig {
			return name
		}
	}
	return fmt.Sprintf("SIG%d@sshtest", int(sig))
}

func (ss *session) signal(name string) {
	sig, ok := signalsByName[name]
	if !ok {
		return
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.proc == nil {
		ss.pending = append(ss.pending, sig)
		return
	}
	_ = ss.proc.Signal(sig)
}

func (ss *session) sendExit(ps *os.ProcessState, waitErr error) {
	if ps == nil {
		msg := "process failed"
		if waitErr != nil {
			msg = waitErr.Error()
		}
		ss.sendStatus(255, msg)
		return
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		var payload []byte
		payload = appendString(payload, signalName(ws.Signal()))
		payload = append(payload, boolByte(ws.CoreDump()))
		payload = appendString(payload, "")
		payload = appendString(payload, "")
		_, _ = ss.ch.SendRequest("exit-signal", false, payload)
		return
	}
	ss.sendStatus(ps.ExitCode(), "")
}

func (ss *session) sendStatus(code int, _ string) {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(code))
	_, _ = ss.ch.SendRequest("exit-status", false, b[:])
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}
