package ssh_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/rediacc/rediacc/ssh"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// TestPoolIdleTimeoutOpenSSH: a connection to a real sshd is closed once it
// has had no session for Config.IdleTimeout, also when IdleTimeout is
// shorter than the keepalive interval (the idle check used to run only on
// keepalive ticks, 15s by default); a connection with a session running
// longer than IdleTimeout is kept.
func TestPoolIdleTimeoutOpenSSH(t *testing.T) {
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 108})
	p := newPool(t, ssh.Config{IdleTimeout: 300 * time.Millisecond}) // keepalives every 15s (default)
	tg := opensshTarget("idle", srv)
	// Busy for 4 IdleTimeouts: not closed under the running command.
	if res := runOK(t, p, tg, "sleep 1.2; echo still here"); string(res.Stdout) != "still here\n" {
		t.Fatalf("stdout %q", res.Stdout)
	}
	if st := p.Stats(); st.OpenConns != 1 || st.Dials != 1 {
		t.Fatalf("after the run: %+v, want 1 open connection from 1 dial", st)
	}
	eventually(t, "the idle connection to be closed", func() bool { return p.Stats().OpenConns == 0 })
	// The next run dials afresh and works.
	runOK(t, p, tg, "true")
	if st := p.Stats(); st.Dials != 2 {
		t.Fatalf("after the idle close: %+v, want a second dial", st)
	}
}

// TestPoolOpensOnlyNeededConnsOpenSSH: a burst of 8 concurrent commands on
// a fresh pool with 6 sessions per connection opens 2 connections (it
// opened MaxConnsPerHost, 4: every caller arriving during the first dial
// dialed too).
func TestPoolOpensOnlyNeededConnsOpenSSH(t *testing.T) {
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 109})
	p := newPool(t, ssh.Config{MaxSessionsPerConn: 6, MaxConnsPerHost: 4, IdleTimeout: -1})
	tg := opensshTarget("burst", srv)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "sleep 0.5"}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Dials > 2 || st.OpenConns > 2 {
		t.Fatalf("8 concurrent sessions at 6 per connection: %+v, want at most 2 dials and 2 open connections", st)
	}
}
