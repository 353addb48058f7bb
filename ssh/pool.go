package ssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	xssh "golang.org/x/crypto/ssh"
)

// Pool runs commands on Targets over pooled SSH connections. It is safe for
// concurrent use. Create it with NewPool and release it with Close.
//
// Connections are keyed by the Target's identity (Name, address, User) and
// reused. At most Config.MaxSessionsPerConn sessions are in flight on one
// connection; when all connections to a Target are full another is opened,
// up to Config.MaxConnsPerHost, after which Run waits for a free session.
// A server refusing a session channel because its per-connection limit is
// reached (OpenSSH's MaxSessions, which also counts sessions still closing;
// the refusal reads "administratively prohibited" or, with OpenSSH 9.2,
// "connect failed: open failed") only lowers that connection's capacity
// for a moment: the command uses or opens another connection, or waits.
// Broken connections (EOF, keepalive failure, session open timeout) are
// dropped; a command whose session could not be opened or started on a
// pooled connection is retried once on a fresh connection.
//
// New connections to one address are limited to Config.MaxStartupsPerHost
// concurrent handshakes, below OpenSSH's MaxStartups throttling.
type Pool struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	closed   bool
	closing  chan struct{}
	hosts    map[string]*hostPool     // by Target.key()
	conns    map[*conn]struct{}       // every open connection, forgotten ones too
	startups map[string]chan struct{} // per address: MaxStartupsPerHost semaphore
	inflight int
	nextID   uint64
	wg       sync.WaitGroup // Runs in progress and connection goroutines

	dials, dialErrors, refusals, retries atomic.Uint64

	homes map[string]*markerHome // by user@address: run markers to remove (release.go); guarded by mu
}

// PoolStats is a snapshot of a Pool's state and counters.
type PoolStats struct {
	// Targets is the number of Target identities with at least one open
	// connection.
	Targets int
	// OpenConns is the number of open connections.
	OpenConns int
	// SessionsInFlight is the number of sessions currently held (commands
	// running or being started, including kill helpers).
	SessionsInFlight int
	// Dials counts connection attempts since NewPool; DialErrors counts
	// the failed ones (network, handshake, auth, host key, key loading).
	Dials, DialErrors uint64
	// SessionRefusals counts sessions the server refused as
	// "administratively prohibited" or for resource shortage; each was
	// retried.
	SessionRefusals uint64
	// Retries counts commands retried on a fresh connection after their
	// session failed to open or start.
	Retries uint64
}

type hostPool struct {
	key, name, addr string
	conns           []*conn
	dialing         int
	changed         chan struct{} // closed and replaced on every change
	dialErr         error         // last dial failure (not a caller's cancellation)
	dialErrAt       time.Time
	forgotten       bool // removed from Pool.hosts by Forget
}

// broadcast wakes waiters; p.mu must be held.
func (hp *hostPool) broadcast() {
	close(hp.changed)
	hp.changed = make(chan struct{})
}

type conn struct {
	p      *Pool
	hp     *hostPool
	id     uint64
	client *xssh.Client

	// guarded by p.mu
	inflight  int
	capacity  int
	lowUntil  time.Time
	lastUsed  time.Time
	dead      bool
	retiring  bool
	closeOnce sync.Once
	done      chan struct{} // closed once the connection is closed
	reason    error         // why it was closed; set before done is closed
}

// NewPool returns a Pool using cfg (zero fields take their defaults). It
// starts no goroutines until the first Run.
func NewPool(cfg Config) *Pool {
	cfg = cfg.withDefaults()
	return &Pool{
		cfg:      cfg,
		log:      cfg.Logger,
		closing:  make(chan struct{}),
		hosts:    map[string]*hostPool{},
		conns:    map[*conn]struct{}{},
		startups: map[string]chan struct{}{},
	}
}

// Stats returns a snapshot of the pool's state and counters.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	s := PoolStats{SessionsInFlight: p.inflight, OpenConns: len(p.conns)}
	targets := map[string]bool{}
	for c := range p.conns {
		targets[c.hp.key] = true
	}
	s.Targets = len(targets)
	p.mu.Unlock()
	s.Dials = p.dials.Load()
	s.DialErrors = p.dialErrors.Load()
	s.SessionRefusals = p.refusals.Load()
	s.Retries = p.retries.Load()
	return s
}

// Forget drops the connections of every Target named name: idle ones are
// closed now, busy ones once their last session ends (commands in flight
// are not interrupted). The next Run for that name dials afresh, e.g. after
// a key rotation or an address change.
func (p *Pool) Forget(name string) {
	var toClose []*conn
	p.mu.Lock()
	for k, hp := range p.hosts {
		if hp.name != name {
			continue
		}
		delete(p.hosts, k)
		hp.forgotten = true
		for _, c := range hp.conns {
			c.retiring = true
			if c.inflight == 0 {
				toClose = append(toClose, c)
			}
		}
		hp.broadcast()
	}
	p.mu.Unlock()
	for _, c := range toClose {
		c.drop(errors.New("forgotten"))
	}
}

// Close closes all connections (commands still running fail), wakes waiting
// Runs (they return ErrPoolClosed) and waits until every Run in progress
// has returned and every goroutine of the pool has ended. Before that, it
// removes the run markers released with ReleaseRun and not removed yet,
// on connections still open, within 2 s. Later calls to
// Run return ErrPoolClosed. Close always returns nil; calling it again is a
// no-op.
func (p *Pool) Close() error {
	p.flushMarkers() // release.go: best effort, bounded
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return nil
	}
	p.closed = true
	close(p.closing)
	var conns []*conn
	for c := range p.conns {
		conns = append(conns, c)
	}
	for _, hp := range p.hosts {
		hp.broadcast()
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.drop(ErrPoolClosed)
	}
	p.wg.Wait()
	return nil
}

// enter registers a Run; false when the pool is closed.
func (p *Pool) enter() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.wg.Add(1)
	return true
}

func (p *Pool) hostPool(t *Target) *hostPool {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := t.key()
	hp := p.hosts[k]
	if hp == nil {
		hp = &hostPool{key: k, name: t.Name, addr: t.addr(), changed: make(chan struct{})}
		p.hosts[k] = hp
	}
	return hp
}

type acquireMode int

const (
	acquireNormal     acquireMode = iota
	acquireUrgent                 // kill helpers: ignore the session and connection limits
	acquireUrgentDial             // kill helpers after a refusal: always dial
)

// acquire returns a connection with one session slot reserved for the
// caller, dialing one if allowed, else waiting for a free slot.
func (p *Pool) acquire(ctx context.Context, t *Target, hp *hostPool, mode acquireMode) (*conn, error) {
	var waitingSince time.Time
	for {
		if err := ctx.Err(); err != nil {
			return nil, ctxErr(t, ctx, "waiting for a connection")
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, targetErr(t, ErrPoolClosed, nil, "pool closed")
		}
		now := time.Now()
		var best *conn
		for _, c := range hp.conns {
			if c.dead || c.retiring || mode == acquireUrgentDial {
				continue
			}
			if c.capacity < p.cfg.MaxSessionsPerConn && now.After(c.lowUntil) {
				c.capacity++ // recover slowly after a refusal
				c.lowUntil = now.Add(200 * time.Millisecond)
			}
			if (c.inflight < c.capacity || mode == acquireUrgent) && (best == nil || c.inflight < best.inflight) {
				best = c
			}
		}
		if best != nil {
			best.inflight++
			p.inflight++
			p.mu.Unlock()
			return best, nil
		}
		if !waitingSince.IsZero() && len(hp.conns) == 0 && hp.dialErr != nil && hp.dialErrAt.After(waitingSince) {
			// No connection at all and a dial failed while we waited: share
			// its error rather than have every waiter time out on its own
			// dial in turn (an unreachable host would take
			// waiters/MaxConnsPerHost dial timeouts).
			err := hp.dialErr
			p.mu.Unlock()
			return nil, err
		}
		if mode != acquireNormal || len(hp.conns)+hp.dialing < p.cfg.MaxConnsPerHost {
			hp.dialing++
			p.mu.Unlock()
			c, err := p.dial(ctx, t, hp)
			p.mu.Lock()
			hp.dialing--
			if err != nil && ctx.Err() == nil && !errors.Is(err, ErrPoolClosed) {
				hp.dialErr, hp.dialErrAt = err, time.Now()
			} else if err == nil {
				hp.dialErr = nil
			}
			if err == nil && p.closed {
				err = targetErr(t, ErrPoolClosed, nil, "pool closed")
				c.client.Close()
			} else if err == nil {
				c.inflight = 1
				p.inflight++
				c.lastUsed = time.Now()
				c.retiring = hp.forgotten // dialed for a Run that raced Forget
				hp.conns = append(hp.conns, c)
				p.conns[c] = struct{}{}
				p.wg.Add(2)
				go c.monitor()
				go c.waitClosed()
			}
			hp.broadcast()
			p.mu.Unlock()
			if err != nil {
				return nil, err
			}
			return c, nil
		}
		if waitingSince.IsZero() {
			waitingSince = now
		}
		ch := hp.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
	}
}

// release returns a session slot.
func (p *Pool) release(c *conn) {
	p.mu.Lock()
	c.inflight--
	p.inflight--
	c.lastUsed = time.Now()
	retire := c.retiring && c.inflight == 0 && !c.dead
	c.hp.broadcast()
	p.mu.Unlock()
	if retire {
		c.drop(errors.New("forgotten"))
	}
}

// refused records a session refusal on c: its capacity drops below the
// number of sessions in flight on it. It reports whether the caller was
// alone on the connection. The caller still holds its slot.
func (p *Pool) refused(c *conn, why error) (alone bool) {
	p.refusals.Add(1)
	p.mu.Lock()
	defer p.mu.Unlock()
	alone = c.inflight <= 1
	c.capacity = max(1, c.inflight-1)
	c.lowUntil = time.Now().Add(2 * time.Second)
	p.log.Debug("ssh: session refused, lowering connection capacity",
		"machine", c.hp.name, "addr", c.hp.addr, "conn", c.id, "capacity", c.capacity, "refusal", why)
	return alone
}

func (p *Pool) startupSem(addr string) chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.startups[addr]
	if s == nil {
		s = make(chan struct{}, p.cfg.MaxStartupsPerHost)
		p.startups[addr] = s
	}
	return s
}

// ctxErr wraps the context's error (or its cause) for t.
func ctxErr(t *Target, ctx context.Context, what string) error {
	err := ctx.Err()
	if cause := context.Cause(ctx); cause != nil && cause != err {
		return targetErr(t, nil, &wrapError{msg: cause.Error(), errs: []error{cause, err}}, "%s", what)
	}
	return targetErr(t, nil, err, "%s", what)
}

// dial opens and authenticates a new connection to t. It is abandoned
// when ctx is done or the pool closes. A connection the server closes or
// resets during the handshake (OpenSSH's MaxStartups early drop, a server
// restarting) is retried twice after a short random pause.
func (p *Pool) dial(ctx context.Context, t *Target, hp *hostPool) (*conn, error) {
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopOnClose := context.AfterFunc(closingCtx{p.closing}, cancel)
	defer stopOnClose()
	// abandoned explains why dctx is done.
	abandoned := func(step string) error {
		select {
		case <-p.closing:
			return targetErr(t, ErrPoolClosed, nil, "pool closed")
		default:
			return ctxErr(t, ctx, step)
		}
	}
	const attempts = 3
	for attempt := 1; ; attempt++ {
		p.dials.Add(1)
		client, earlyDrop, err := p.dialOnce(dctx, t, hp, abandoned)
		if err == nil {
			p.mu.Lock()
			p.nextID++
			id := p.nextID
			p.mu.Unlock()
			p.log.Debug("ssh: connected", "machine", t.Name, "addr", hp.addr, "user", t.User, "conn", id)
			return &conn{
				p:        p,
				hp:       hp,
				id:       id,
				client:   client,
				capacity: p.cfg.MaxSessionsPerConn,
				done:     make(chan struct{}),
			}, nil
		}
		p.dialErrors.Add(1)
		p.log.Debug("ssh: dial failed", "machine", t.Name, "addr", hp.addr, "attempt", attempt, "err", err)
		if !earlyDrop || attempt == attempts {
			return nil, err
		}
		select {
		case <-time.After(time.Duration(attempt) * (50*time.Millisecond + time.Duration(rand.Int64N(int64(50*time.Millisecond))))):
		case <-dctx.Done():
			return nil, abandoned("dial")
		}
	}
}

// dialOnce makes one connection attempt. earlyDrop reports a connection
// the server closed or reset during the handshake (typically before the
// version exchange).
func (p *Pool) dialOnce(dctx context.Context, t *Target, hp *hostPool, abandoned func(string) error) (_ *xssh.Client, earlyDrop bool, _ error) {
	addr := hp.addr
	// Credentials and host key files first: they fail fast, without I/O.
	methods, releaseAuth, certs, err := loadAuth(dctx, t)
	if err != nil {
		return nil, false, err
	}
	defer releaseAuth()
	hc, err := t.HostKey.prepare(dctx, t)
	if err != nil {
		return nil, false, err
	}

	sem := p.startupSem(addr)
	select {
	case sem <- struct{}{}:
	case <-dctx.Done():
		return nil, false, abandoned("waiting to dial")
	}
	defer func() { <-sem }()

	d := net.Dialer{Timeout: p.cfg.DialTimeout, KeepAlive: 30 * time.Second}
	nc, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		if dctx.Err() != nil {
			return nil, false, abandoned("dial")
		}
		return nil, false, targetErr(t, ErrConnect, err, "dial %s (timeout %s): check that the host is up and sshd listens there", addr, p.cfg.DialTimeout)
	}
	_ = nc.SetDeadline(time.Now().Add(p.cfg.HandshakeTimeout))
	stopDeadline := context.AfterFunc(dctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	algos := t.Algorithms.withDefaults() // algorithms.go
	cc, chans, reqs, err := xssh.NewClientConn(nc, addr, &xssh.ClientConfig{
		Config: xssh.Config{KeyExchanges: algos.KeyExchanges, Ciphers: algos.Ciphers, MACs: algos.MACs},
		User:   t.User, Auth: methods, HostKeyCallback: hc.callback,
		HostKeyAlgorithms: hostKeyAlgorithms(hc.algos, algos.HostKeys),
	})
	inTime := stopDeadline()
	if err != nil {
		nc.Close()
		if hkErr := hc.lastErr(); hkErr != nil {
			return nil, false, hkErr
		}
		if dctx.Err() != nil {
			return nil, false, abandoned("handshake")
		}
		if nerr := negotiationErr(t, err); nerr != nil {
			return nil, false, nerr
		}
		if isAuthError(err) && len(certs) > 0 {
			return nil, false, p.certRejected(dctx, t, certs[0]) // cert.go: why, with both clocks
		}
		if isAuthError(err) {
			return nil, false, targetErr(t, ErrAuthFailed, err,
				"the server refused all offered credentials (%s) for user %q: check that the public key is in the user's authorized_keys and the user name is right",
				describeAuth(t), t.User)
		}
		early := errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
		return nil, early, targetErr(t, ErrConnect, err,
			"SSH handshake with %s (timeout %s): the host may be overloaded, throttling new connections (sshd MaxStartups) or not an SSH server",
			addr, p.cfg.HandshakeTimeout)
	}
	if !inTime {
		cc.Close()
		return nil, false, abandoned("handshake")
	}
	_ = nc.SetDeadline(time.Time{})
	return xssh.NewClient(cc, chans, reqs), false, nil
}

// closingCtx adapts the pool's closing channel to a context for AfterFunc.
type closingCtx struct{ ch chan struct{} }

func (closingCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c closingCtx) Done() <-chan struct{}     { return c.ch }
func (c closingCtx) Err() error {
	select {
	case <-c.ch:
		return context.Canceled
	default:
		return nil
	}
}
func (closingCtx) Value(any) any { return nil }

func isAuthError(err error) bool {
	s := err.Error()
	return strings.Contains(s, "unable to authenticate") ||
		strings.Contains(s, "no supported methods remain") ||
		strings.Contains(s, "Too many authentication failures")
}

func describeAuth(t *Target) string {
	var parts []string
	for _, a := range t.Auth {
		parts = append(parts, a.String())
	}
	return strings.Join(parts, ", ")
}

// drop closes the connection and removes it from its pool; reason is
// reported to commands that were running on it.
func (c *conn) drop(reason error) {
	c.closeOnce.Do(func() {
		p := c.p
		p.mu.Lock()
		c.dead = true
		c.reason = reason
		delete(p.conns, c)
		for i, x := range c.hp.conns {
			if x == c {
				c.hp.conns = append(c.hp.conns[:i], c.hp.conns[i+1:]...)
				break
			}
		}
		c.hp.broadcast()
		p.mu.Unlock()
		close(c.done)
		c.client.Close()
		lvl := slog.LevelDebug
		if !errors.Is(reason, ErrPoolClosed) && reason.Error() != "idle" && reason.Error() != "forgotten" {
			lvl = slog.LevelWarn
		}
		p.log.Log(context.Background(), lvl, "ssh: connection closed", "machine", c.hp.name, "addr", c.hp.addr, "conn", c.id, "reason", reason)
	})
}

// closeReason returns why c was closed, or nil while it is open.
func (c *conn) closeReason() error {
	select {
	case <-c.done:
		return c.reason
	default:
		return nil
	}
}

// waitClosed drops c when the server closes it.
func (c *conn) waitClosed() {
	defer c.p.wg.Done()
	err := c.client.Wait()
	if err == nil {
		err = errors.New("closed by the server")
	}
	c.drop(fmt.Errorf("connection lost: %w", err))
}

// monitor sends keepalives and closes c when idle for too long.
func (c *conn) monitor() {
	defer c.p.wg.Done()
	cfg := c.p.cfg
	period := cfg.KeepaliveInterval
	if period <= 0 {
		if cfg.IdleTimeout <= 0 {
			<-c.done
			return
		}
		period = max(cfg.IdleTimeout/2, 10*time.Millisecond)
	}
	ticker := time.NewTicker(period)
	defer ticker.Stop()
	var reply chan error // non-nil while a keepalive is outstanding
	missed := 0
	for {
		select {
		case <-c.done:
			if reply != nil {
				<-reply // SendRequest returns once the connection is closed
			}
			return
		case err := <-reply:
			reply = nil
			missed = 0
			if err != nil {
				c.drop(fmt.Errorf("keepalive failed: %w", err))
			}
		case <-ticker.C:
			if cfg.KeepaliveInterval > 0 {
				if reply != nil {
					missed++
					if missed >= cfg.KeepaliveMax {
						c.drop(fmt.Errorf("keepalive: no reply for %s (%d intervals of %s)",
							time.Duration(missed)*cfg.KeepaliveInterval, missed, cfg.KeepaliveInterval))
					}
				} else {
					reply = make(chan error, 1)
					go func(ch chan error) {
						_, _, err := c.client.SendRequest("keepalive@openssh.com", true, nil)
						ch <- err
					}(reply)
				}
			}
			if cfg.IdleTimeout > 0 {
				c.p.mu.Lock()
				idle := !c.dead && c.inflight == 0 && time.Since(c.lastUsed) >= cfg.IdleTimeout
				if idle {
					c.dead = true // no acquire may take it from now on
				}
				c.p.mu.Unlock()
				if idle {
					c.drop(errors.New("idle"))
				}
			}
		}
	}
}
