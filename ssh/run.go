package ssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	xssh "golang.org/x/crypto/ssh"
)

var (
	errCmdTimeout  = errors.New("command timeout")
	errExecRefused = errors.New("exec request refused")
)

// Run runs cmd on t and returns its Result. It takes a pooled connection to
// t (dialing one when needed), opens a session, runs cmd.Cmd in the login shell
// and waits for it to end, for ctx to be done or for cmd.Timeout to pass.
//
// Outcomes:
//   - exit status 0: (*Result, nil);
//   - non-zero exit or death by signal: (*Result, *ExitError);
//   - cmd.Timeout passed: the remote process group is stopped (TERM, then
//     KILL after Config.KillGrace) and Run returns the partial Result and an
//     error wrapping ErrTimeout;
//   - ctx done after the command started: the remote process group is
//     stopped likewise and Run returns the partial Result and an error
//     wrapping ctx.Err() (context.Canceled or context.DeadlineExceeded);
//   - ctx done before it started: (nil, error wrapping ctx.Err());
//   - connection problems: an error wrapping ErrConnect (retryable, see
//     IsRetryable); when the connection dropped after the command started,
//     the partial Result is returned too and the command may have partly run;
//   - ErrHostKeyMismatch, ErrUnknownHostKey, ErrAuthFailed, ErrKeyFile,
//     ErrWrongPassphrase: the connection was refused for security or
//     credential reasons (not retryable);
//   - ErrInvalidCommand: t or cmd is malformed (nothing was sent);
//   - ErrPoolClosed: the pool is closed or closed meanwhile.
//
// Every error names the machine (t.Name), user and address.
func (p *Pool) Run(ctx context.Context, t Target, cmd Command) (*Result, error) {
	if err := validateTarget(&t); err != nil {
		return nil, err
	}
	remote, block, err := buildExec(&cmd)
	if err != nil {
		return nil, targetErr(&t, ErrInvalidCommand, nil, "%v", err)
	}
	if !p.enter() {
		clear(block)
		return nil, targetErr(&t, ErrPoolClosed, nil, "pool closed")
	}
	defer p.wg.Done()
	hp := p.hostPool(&t)
	extra, ids, sweep := p.housekeeping(&t, hp, MaxCommandLineBytes-len(remote)) // release.go
	st, c, err := p.startSession(ctx, &t, hp, extra+remote, cmd.Stdin != nil || block != nil, false)
	if err != nil {
		p.giveBack(&t, ids, sweep)
		clear(block)
		return nil, err
	}
	defer p.release(c)
	return p.runStarted(ctx, &t, hp, c, st, &cmd, block)
}

func validateTarget(t *Target) error {
	switch {
	case t.Host == "":
		return targetErr(t, ErrInvalidCommand, nil, "Target.Host is empty")
	case t.User == "":
		return targetErr(t, ErrInvalidCommand, nil, "Target.User is empty")
	case t.Port < 0 || t.Port > 65535:
		return targetErr(t, ErrInvalidCommand, nil, "Target.Port %d is out of range 0..65535", t.Port)
	case len(t.Auth) == 0:
		return targetErr(t, ErrInvalidCommand, nil, "Target.Auth is empty: add KeyFile, PrivateKey, Signers, Agent or Password")
	}
	if err := t.Algorithms.Validate(); err != nil {
		return targetErr(t, ErrInvalidCommand, nil, "Target.Algorithms: %v", err)
	}
	return nil
}

// copyBufs are the buffers copyOutput reads a session's output with:
// io.Copy would allocate 32 KiB per stream and run (two per task), most of
// the SSH path's garbage in a fan-out of short commands.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// copyOutput copies src (a session's stdout or stderr) to dst as io.Copy
// does, with a pooled buffer.
func copyOutput(dst io.Writer, src io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	return io.CopyBuffer(dst, src, *bp)
}

// execHook, when set (by tests), receives every exec string just before it
// is sent to a server.
var execHook atomic.Pointer[func(remote string)]

// started is a session whose command has started.
type started struct {
	sess   *xssh.Session
	stdout io.Reader
	stderr io.Reader
	stdin  io.WriteCloser
	// retried: an earlier exec of the same command failed on a broken
	// connection and may have started on the server all the same.
	retried bool
}

// start opens a session on c and starts remote on it, within timeout; on
// timeout the connection is dropped as dead.
func (c *conn) start(remote string, wantStdin bool, timeout time.Duration) (*started, error) {
	type result struct {
		st  *started
		err error
	}
	ch := make(chan result, 1)
	go func() {
		sess, err := c.client.NewSession()
		if err != nil {
			ch <- result{nil, err}
			return
		}
		st := &started{sess: sess}
		st.stdout, _ = sess.StdoutPipe()
		st.stderr, _ = sess.StderrPipe()
		if wantStdin {
			st.stdin, _ = sess.StdinPipe()
		}
		if h := execHook.Load(); h != nil {
			(*h)(remote)
		}
		if err := sess.Start(remote); err != nil {
			sess.Close()
			if strings.HasPrefix(err.Error(), "ssh: command ") {
				// x/crypto's wording when the server answers the exec
				// request with failure: the connection itself is fine.
				err = fmt.Errorf("%w: %v", errExecRefused, err)
			}
			ch <- result{nil, err}
			return
		}
		ch <- result{st, nil}
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case r := <-ch:
		return r.st, r.err
	case <-timer.C:
		err := fmt.Errorf("opening a session timed out after %s", timeout)
		c.drop(err)
		if r := <-ch; r.st != nil {
			r.st.sess.Close()
		}
		return nil, err
	}
}

// startSession acquires a connection and starts remote on it. Refusals
// ("administratively prohibited") are absorbed; other failures drop the
// connection and are retried once on a fresh one. urgent is for kill
// helpers: they may exceed the session and connection limits.
func (p *Pool) startSession(ctx context.Context, t *Target, hp *hostPool, remote string, wantStdin, urgent bool) (*started, *conn, error) {
	retried := false
	aloneRefusals := 0
	mode := acquireNormal
	if urgent {
		mode = acquireUrgent
	}
	for {
		c, err := p.acquire(ctx, t, hp, mode)
		if err != nil {
			return nil, nil, err
		}
		st, err := c.start(remote, wantStdin, p.cfg.SessionOpenTimeout)
		if err == nil {
			st.retried = retried
			return st, c, nil
		}
		var oce *xssh.OpenChannelError
		if errors.As(err, &oce) {
			if oce.Reason == xssh.UnknownChannelType {
				p.release(c)
				return nil, nil, targetErr(t, nil, err, "the server does not accept session channels")
			}
			// Prohibited (OpenSSH's MaxSessions as measured with some
			// versions), ConnectionFailed (OpenSSH 9.2: "open failed" when
			// no session slot is free) or ResourceShortage: the connection
			// is full for now. Use or open another one, or wait.
			alone := p.refused(c, err)
			p.release(c)
			if urgent {
				mode = acquireUrgentDial
			}
			if alone {
				aloneRefusals++
				if aloneRefusals > 5 {
					return nil, nil, targetErr(t, nil, err,
						"the server refuses every session, even on an otherwise idle connection: check sshd's MaxSessions")
				}
				select {
				case <-time.After(time.Duration(aloneRefusals) * 50 * time.Millisecond):
				case <-ctx.Done():
				}
			}
			continue
		}
		if errors.Is(err, errExecRefused) {
			p.release(c)
			return nil, nil, targetErr(t, nil, err, "the server refused to run the command (exec request denied)")
		}
		// The connection is broken (EOF, session open timeout): drop it and
		// retry once on a fresh connection.
		if reason := c.closeReason(); reason != nil {
			err = fmt.Errorf("%w (%v)", err, reason)
		}
		c.drop(fmt.Errorf("session failed: %w", err))
		p.release(c)
		if ctx.Err() != nil {
			return nil, nil, ctxErr(t, ctx, "opening a session")
		}
		if !retried {
			retried = true
			p.retries.Add(1)
			p.log.Debug("ssh: session failed, retrying on a fresh connection", "machine", t.Name, "addr", hp.addr, "err", err)
			continue
		}
		return nil, nil, targetErr(t, ErrConnect, err, "opening a session failed on a fresh connection too: the host or network is unhealthy; retry later")
	}
}

// runStarted waits for a started command and builds its Result. block,
// when not nil, is written to stdin before cmd.Stdin, then zeroed.
func (p *Pool) runStarted(ctx context.Context, t *Target, hp *hostPool, c *conn, st *started, cmd *Command, block []byte) (*Result, error) {
	res := &Result{ExitCode: -1, Started: time.Now()}
	limit := cmd.OutputLimit
	if limit == 0 {
		limit = p.cfg.OutputLimit
	}
	outCap := &capture{limit: limit, live: cmd.Stdout}
	errCap := &capture{limit: limit, live: cmd.Stderr}
	filter := newPidFilter(errCap)
	filter.runID, filter.onStart = cmd.RunID, cmd.OnStart
	var readers sync.WaitGroup
	readers.Add(2)
	go func() {
		defer readers.Done()
		_, _ = copyOutput(outCap, st.stdout)
	}()
	go func() {
		defer readers.Done()
		_, _ = copyOutput(filter, st.stderr)
		filter.finish()
	}()
	if st.stdin != nil {
		go func() {
			defer st.stdin.Close()
			if block != nil {
				// The channel copies the bytes into its packets before
				// Write returns.
				_, err := st.stdin.Write(block)
				clear(block)
				if err != nil {
					return
				}
			}
			if cmd.Stdin != nil {
				_, _ = io.Copy(st.stdin, cmd.Stdin)
			}
		}()
	}
	waitCh := make(chan error, 1)
	go func() { waitCh <- st.sess.Wait() }()

	runCtx := ctx
	if cmd.Timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeoutCause(ctx, cmd.Timeout, errCmdTimeout)
		defer cancel()
	}

	var waitErr error
	stopped := false
	select {
	case waitErr = <-waitCh:
	case <-runCtx.Done():
		stopped = true
		waitErr = p.stop(t, hp, c, st, filter, waitCh)
	}
	readers.Wait()
	st.sess.Close()
	res.Ended = time.Now()
	res.Stdout, res.StdoutTruncated = outCap.buf.Bytes(), outCap.truncated
	res.Stderr, res.StderrTruncated = errCap.buf.Bytes(), errCap.truncated

	var xe *xssh.ExitError
	switch {
	case waitErr == nil:
		res.ExitCode = 0
	case errors.As(waitErr, &xe):
		res.ExitCode = xe.ExitStatus()
		res.Signal = xe.Signal()
	}
	info := filter.info()
	res.Remote = info.remote
	if info.remote.RunDir != "" {
		p.noteSwept(t, info.swept) // release.go
		if !st.retried && (waitErr == nil || xe != nil) {
			// Its shell ended (an exit status or a signal came): no exec
			// of this run is left that its marker must stop.
			res.marker = markerRef{home: homeKey(t), runID: cmd.RunID}
		}
	}
	if info.taken {
		res.ExitCode = -1
		if st.retried {
			// The exec was retried after a broken connection: the first
			// one started after all (or a Settle claimed the run).
			return p.afterLoss(ctx, t, hp, cmd, res, nil, "a session that failed to open started the command after all")
		}
		return res, targetErr(t, ErrRunTaken, nil, "run %s was taken on the machine (settled by another worker, or started before): the command did not run", cmd.RunID)
	}

	if stopped {
		if ctx.Err() == nil && errors.Is(context.Cause(runCtx), errCmdTimeout) {
			return res, targetErr(t, ErrTimeout, nil,
				"command exceeded its timeout of %s and was killed (process group TERM, KILL after %s)", cmd.Timeout, p.cfg.KillGrace)
		}
		return res, ctxErr(t, ctx, "command cancelled and killed")
	}
	switch {
	case waitErr == nil:
		return res, nil
	case xe != nil:
		return res, &ExitError{Code: res.ExitCode, Signal: res.Signal, Msg: xe.Msg(), Machine: t.Name, Address: t.User + "@" + hp.addr}
	default:
		reason := c.closeReason()
		if reason == nil {
			reason = waitErr
		}
		if cmd.RunID != "" {
			return p.afterLoss(ctx, t, hp, cmd, res, reason, "connection lost while the command ran")
		}
		return res, targetErr(t, ErrConnect, reason,
			"connection lost while the command ran (it may have run partly or completely)")
	}
}

// afterLoss settles a run (cmd.RunID) whose own session was lost, on a
// fresh connection: it returns the run's exit status when it ended (with
// what output arrived), or ErrConnect once it is stopped or known not to
// have run (a retry is then safe), or an error wrapping ErrConnect and
// ErrFateUnknown when the machine cannot tell.
func (p *Pool) afterLoss(ctx context.Context, t *Target, hp *hostPool, cmd *Command, res *Result, reason error, what string) (*Result, error) {
	fate, err := p.settle(context.WithoutCancel(ctx), t, hp, cmd.RunID, res.Remote)
	if err != nil {
		return res, targetErr(t, ErrConnect, err, "%s, and whether it still runs cannot be learned: do not run it again before it is settled", what)
	}
	if fate.Remote.PGID > 0 {
		res.Remote = fate.Remote
	}
	cause := func() error {
		if reason != nil {
			return fmt.Errorf("%v; %s", reason, fate.Detail)
		}
		return errors.New(fate.Detail)
	}
	switch fate.State {
	case FateExited:
		if fate.ExitCode == 141 {
			// SIGPIPE: it died writing output that nobody read any more.
			return res, targetErr(t, ErrConnect, cause(), "%s; then the command died writing output nobody read (exit 141, SIGPIPE)", what)
		}
		res.ExitCode, res.Signal, res.Recovered = fate.ExitCode, "", true
		if fate.ExitCode == 0 {
			return res, nil
		}
		return res, &ExitError{Code: fate.ExitCode, Msg: "exit status read from the run's marker after the connection was lost",
			Machine: t.Name, Address: t.User + "@" + hp.addr}
	case FateNotStarted:
		if reason == nil {
			return res, targetErr(t, ErrRunTaken, nil, "run %s was claimed on the machine by another worker: the command did not run", cmd.RunID)
		}
		return res, targetErr(t, ErrConnect, cause(), "%s before it started; it will not start any more", what)
	case FateStopped:
		return res, targetErr(t, ErrConnect, cause(), "%s; the command was stopped on the machine", what)
	default: // FateGone
		return res, targetErr(t, ErrConnect, cause(), "%s; it ended without recording whether it completed", what)
	}
}

// stop ends a running command: a TERM signal request on its session, then
// TERM to its process group from a second session, KILL after KillGrace.
// It returns the session's Wait error once the session has ended; as a last
// resort the connection is dropped to end it.
func (p *Pool) stop(t *Target, hp *hostPool, c *conn, st *started, filter *pidFilter, waitCh chan error) error {
	grace := p.cfg.KillGrace
	_ = st.sess.Signal(xssh.SIGTERM)
	pid := 0
	timer := time.NewTimer(grace)
	select {
	case ri := <-filter.pidCh:
		pid = ri.pid
	case err := <-waitCh:
		timer.Stop()
		return err
	case <-timer.C:
	}
	timer.Stop()
	if pid > 0 {
		if err := p.killGroup(t, hp, pid); err != nil {
			p.log.Warn("ssh: could not kill remote process group", "machine", t.Name, "addr", hp.addr, "pgid", pid, "err", err)
		}
	} else {
		p.log.Warn("ssh: remote pid unknown; closing the session only", "machine", t.Name, "addr", hp.addr)
	}
	wait := func() (error, bool) {
		tm := time.NewTimer(grace)
		defer tm.Stop()
		select {
		case err := <-waitCh:
			return err, true
		case <-tm.C:
			return nil, false
		}
	}
	if err, ok := wait(); ok {
		return err
	}
	st.sess.Close()
	if err, ok := wait(); ok {
		return err
	}
	c.drop(errors.New("a killed command's session did not end"))
	return <-waitCh
}

// killGroup runs the kill script for process group pid in a new session.
func (p *Pool) killGroup(t *Target, hp *hostPool, pid int) error {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.SessionOpenTimeout+p.cfg.KillGrace+5*time.Second)
	defer cancel()
	st, c, err := p.startSession(ctx, t, hp, killScript(pid, p.cfg.KillGrace), false, true)
	if err != nil {
		return err
	}
	defer p.release(c)
	defer st.sess.Close()
	var readers sync.WaitGroup
	defer readers.Wait()
	readers.Add(2)
	go func() { defer readers.Done(); _, _ = io.Copy(io.Discard, st.stdout) }()
	go func() { defer readers.Done(); _, _ = io.Copy(io.Discard, st.stderr) }()
	waitCh := make(chan error, 1)
	go func() { waitCh <- st.sess.Wait() }()
	select {
	case err := <-waitCh:
		return err
	case <-ctx.Done():
		st.sess.Close()
		select {
		case <-waitCh:
		case <-time.After(time.Second):
			c.drop(errors.New("kill session did not end"))
			<-waitCh
		}
		return ctx.Err()
	}
}
