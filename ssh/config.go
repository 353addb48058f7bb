package ssh

import (
	"log/slog"
	"net"
	"strconv"
	"time"
)

// Target is a machine to run commands on.
type Target struct {
	// Name identifies the machine in errors, logs and Pool.Forget
	// (e.g. "web-1"). Optional but recommended.
	Name string
	// Host is the host name or IP address to dial. Required.
	Host string
	// Port is the TCP port; 0 means 22. Range 1..65535.
	Port int
	// User is the login user. Required.
	User string
	// Auth lists the credential sources, tried in order (all keys in one
	// "publickey" attempt, then passwords). At least one is required.
	Auth []Auth
	// HostKey verifies the server's host key. The zero value is strict
	// checking against ~/.ssh/known_hosts (see KnownHosts).
	HostKey HostKeyPolicy
	// Algorithms are the key exchanges, ciphers, MACs, host key and
	// signature algorithms the connection may use. The zero value is
	// DefaultAlgorithms (OpenSSH 9's defaults without SHA-1); use
	// LegacyAlgorithms for an old server that offers only SHA-1 or CBC
	// algorithms. A server with nothing in common fails the dial with
	// ErrAlgorithmNegotiation.
	Algorithms Algorithms
}

// addr returns "host:port" with the default port 22 applied.
func (t *Target) addr() string {
	port := t.Port
	if port == 0 {
		port = 22
	}
	return net.JoinHostPort(t.Host, strconv.Itoa(port))
}

// Addr returns the "host:port" the target dials (Port 0 means 22).
func (t Target) Addr() string { return t.addr() }

// key is the pool identity of the target: name, address and user.
func (t *Target) key() string { return t.Name + "\x00" + t.addr() + "\x00" + t.User }

// Config tunes a Pool. The zero value is usable: every zero field takes the
// default documented on it.
type Config struct {
	// DialTimeout bounds the TCP connect. Default 10s.
	DialTimeout time.Duration
	// HandshakeTimeout bounds the SSH handshake including authentication
	// (a deadline is set on the connection during it). Default 10s.
	HandshakeTimeout time.Duration
	// SessionOpenTimeout bounds opening a session channel and starting the
	// command on it; on expiry the connection is closed as dead. Default 10s.
	SessionOpenTimeout time.Duration
	// KeepaliveInterval is the period of keepalive@openssh.com requests on
	// each pooled connection. Default 15s; negative disables keepalives.
	KeepaliveInterval time.Duration
	// KeepaliveMax is how many consecutive intervals may pass without a
	// reply to the outstanding keepalive before the connection is closed
	// (in-flight commands on it then fail with ErrConnect). Default 3.
	KeepaliveMax int
	// MaxSessionsPerConn caps concurrent sessions on one connection.
	// Default 6: OpenSSH allows MaxSessions=10 but, as it still counts
	// closing sessions, refuses new ones ("administratively prohibited",
	// or "open failed" with OpenSSH 9.2) from about 8 in flight. A refusal
	// lowers that connection's capacity for about 2s; it never fails the
	// command. Values above 100 are capped at 100.
	MaxSessionsPerConn int
	// MaxConnsPerHost caps connections per Target (name, address, user).
	// When all are full, Run waits for a free session (respecting ctx).
	// Default 4.
	MaxConnsPerHost int
	// MaxStartupsPerHost caps concurrent unauthenticated connections
	// (dial plus handshake) per address, to stay below OpenSSH's
	// MaxStartups (10:30:100 drops from 10). A connection the server still
	// drops during the handshake is retried twice after a short random
	// pause. Default 3.
	MaxStartupsPerHost int
	// IdleTimeout closes a pooled connection that has had no session for
	// this long: it is closed between IdleTimeout and 1.5×IdleTimeout after
	// its last session ended (checked every IdleTimeout/2, independently of
	// KeepaliveInterval), so a fleet's connections do not outlive a burst
	// of work by much. Default 60s (DefaultIdleTimeout); negative keeps
	// connections until Close or Forget.
	IdleTimeout time.Duration
	// OutputLimit caps the bytes kept per stream (stdout, stderr) in
	// Result; the rest is read and discarded. Default 1 MiB; negative
	// means unlimited. Command.OutputLimit overrides it.
	OutputLimit int
	// KillGrace is the time between TERM and KILL when a command is
	// stopped by timeout or cancellation. Default 2s.
	KillGrace time.Duration
	// Logger receives debug and warning records about connections.
	// Default: discard.
	Logger *slog.Logger
}

// Defaults of Config fields.
const (
	DefaultDialTimeout        = 10 * time.Second
	DefaultHandshakeTimeout   = 10 * time.Second
	DefaultSessionOpenTimeout = 10 * time.Second
	DefaultKeepaliveInterval  = 15 * time.Second
	DefaultKeepaliveMax       = 3
	DefaultMaxSessionsPerConn = 6
	DefaultMaxConnsPerHost    = 4
	DefaultMaxStartupsPerHost = 3
	DefaultIdleTimeout        = 60 * time.Second
	DefaultOutputLimit        = 1 << 20
	DefaultKillGrace          = 2 * time.Second
)

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	setDur := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	setDur(&c.DialTimeout, DefaultDialTimeout)
	setDur(&c.HandshakeTimeout, DefaultHandshakeTimeout)
	setDur(&c.SessionOpenTimeout, DefaultSessionOpenTimeout)
	setDur(&c.KillGrace, DefaultKillGrace)
	if c.KeepaliveInterval == 0 {
		c.KeepaliveInterval = DefaultKeepaliveInterval
	}
	if c.KeepaliveMax <= 0 {
		c.KeepaliveMax = DefaultKeepaliveMax
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.MaxSessionsPerConn <= 0 {
		c.MaxSessionsPerConn = DefaultMaxSessionsPerConn
	}
	c.MaxSessionsPerConn = min(c.MaxSessionsPerConn, 100)
	if c.MaxConnsPerHost <= 0 {
		c.MaxConnsPerHost = DefaultMaxConnsPerHost
	}
	if c.MaxStartupsPerHost <= 0 {
		c.MaxStartupsPerHost = DefaultMaxStartupsPerHost
	}
	if c.OutputLimit == 0 {
		c.OutputLimit = DefaultOutputLimit
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
