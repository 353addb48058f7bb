package ssh_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/rediacc/rediacc/ssh"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// Tests against real OpenSSH sshd processes on 127.0.0.2 and 127.0.0.3.
// They skip when sshd is not installed (fail with REDIACC_REQUIRE_SSHD=1).

func TestOpenSSHTwoMachines(t *testing.T) {
	a := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 2})
	b := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 3})
	ignore := goleak.IgnoreCurrent()
	p := ssh.NewPool(ssh.Config{})
	targets := []ssh.Target{opensshTarget("alpha", a), opensshTarget("beta", b)}
	cases := []struct {
		name       string
		cmd        ssh.Command
		wantOut    string
		wantErrOut string
		wantCode   int
		wantSignal string
	}{
		{name: "stdout and stderr apart", cmd: ssh.Command{Cmd: "echo out; echo err >&2; echo out2"},
			wantOut: "out\nout2\n", wantErrOut: "err\n"},
		{name: "exit code", cmd: ssh.Command{Cmd: "echo partial; exit 3"}, wantOut: "partial\n", wantCode: 3},
		{name: "killed by signal", cmd: ssh.Command{Cmd: "kill -KILL $$"}, wantCode: 128 + 9, wantSignal: "KILL"},
		{name: "env", cmd: ssh.Command{Cmd: `printf '%s|%s' "$GREETING" "$Q"`,
			Env: map[string]string{"GREETING": "hello world", "Q": `it's "$(quoted)" $HOME`}},
			wantOut: `hello world|it's "$(quoted)" $HOME`},
		{name: "stdin", cmd: ssh.Command{Cmd: "tr a-z A-Z", Stdin: strings.NewReader("shout\n")}, wantOut: "SHOUT\n"},
		{name: "login user", cmd: ssh.Command{Cmd: "id -un"}, wantOut: a.User + "\n"},
	}
	var wg sync.WaitGroup
	for _, tg := range targets {
		for _, tc := range cases {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cmd := tc.cmd
				if cmd.Stdin != nil {
					cmd.Stdin = strings.NewReader("shout\n") // one reader per run
				}
				res, err := p.Run(context.Background(), tg, cmd)
				if res == nil {
					t.Errorf("%s/%s: nil result, err %v", tg.Name, tc.name, err)
					return
				}
				var ee *ssh.ExitError
				if tc.wantCode == 0 && err != nil ||
					tc.wantCode != 0 && (!errors.As(err, &ee) || ee.Code != tc.wantCode || ee.Signal != tc.wantSignal) {
					t.Errorf("%s/%s: err = %v, want code %d signal %q", tg.Name, tc.name, err, tc.wantCode, tc.wantSignal)
				}
				if ee != nil && !strings.Contains(ee.Error(), tg.Name) {
					t.Errorf("%s/%s: exit error does not name the machine: %v", tg.Name, tc.name, ee)
				}
				if res.ExitCode != tc.wantCode || res.Signal != tc.wantSignal || string(res.Stdout) != tc.wantOut ||
					tc.wantErrOut != "" && string(res.Stderr) != tc.wantErrOut {
					t.Errorf("%s/%s: result code %d signal %q stdout %q stderr %q", tg.Name, tc.name,
						res.ExitCode, res.Signal, res.Stdout, res.Stderr)
				}
			}()
		}
	}
	wg.Wait()
	if s := p.Stats(); s.Targets != 2 || s.SessionsInFlight != 0 {
		t.Errorf("stats %+v", s)
	}
	p.Close()
	goleak.VerifyNone(t, ignore)
}

func TestOpenSSHOutputLimit(t *testing.T) {
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 2})
	p := newPool(t, ssh.Config{})
	res, err := p.Run(context.Background(), opensshTarget("m", o), ssh.Command{
		Cmd: "head -c 3145728 /dev/zero | tr '\\0' o; head -c 3145728 /dev/zero | tr '\\0' e >&2; echo done",
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Stdout) != 1<<20 || !res.StdoutTruncated || len(res.Stderr) != 1<<20 || !res.StderrTruncated {
		t.Fatalf("stdout %d %v stderr %d %v", len(res.Stdout), res.StdoutTruncated, len(res.Stderr), res.StderrTruncated)
	}
}

func TestOpenSSHTimeoutAndCancelKillTree(t *testing.T) {
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 2})
	tg := opensshTarget("m", o)
	p := newPool(t, ssh.Config{KillGrace: time.Second})

	t.Run("timeout", func(t *testing.T) {
		m := marker()
		res, err := p.Run(context.Background(), tg, ssh.Command{Cmd: treeCmd(m), Timeout: 500 * time.Millisecond})
		if !errors.Is(err, ssh.ErrTimeout) || ssh.IsRetryable(err) {
			t.Fatalf("err = %v, want ErrTimeout", err)
		}
		if res == nil || string(res.Stdout) != "started\n" {
			t.Errorf("partial result %+v", res)
		}
		waitGone(t, m)
	})

	t.Run("cancel", func(t *testing.T) {
		m := marker()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		started := newSignalWriter()
		go func() {
			<-started.ch
			waitRunning(t, m+"2")
			cancel()
		}()
		_, err := p.Run(ctx, tg, ssh.Command{Cmd: treeCmd(m), Stdout: started})
		if !errors.Is(err, context.Canceled) || ssh.IsRetryable(err) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		waitGone(t, m)
	})

	t.Run("TERM ignored", func(t *testing.T) {
		m := marker()
		_, err := p.Run(context.Background(), tg, ssh.Command{
			Cmd: "trap '' TERM; echo started; sh -c \"trap '' TERM; sleep " + m + "1\"", Timeout: 300 * time.Millisecond})
		if !errors.Is(err, ssh.ErrTimeout) {
			t.Fatalf("err = %v", err)
		}
		waitGone(t, m)
	})
	runOK(t, p, tg, "true") // the pool is still healthy
}

func TestOpenSSHHostKeys(t *testing.T) {
	a := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 2})
	b := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 3})
	p := newPool(t, ssh.Config{})

	t.Run("mismatch", func(t *testing.T) {
		// b's address recorded with a's key: as if b had been replaced.
		kh := writeFile(t, knownhosts.Line([]string{b.Addr()}, a.HostPublicKey)+"\n")
		tg := opensshTarget("beta", b)
		tg.HostKey = ssh.KnownHosts(kh)
		_, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"})
		if !errors.Is(err, ssh.ErrHostKeyMismatch) || ssh.IsRetryable(err) {
			t.Fatalf("err = %v, want ErrHostKeyMismatch", err)
		}
		for _, want := range []string{`"beta"`, b.Addr(), kh, "ssh-keygen -R '[" + b.Host + "]:", "not the host you expect"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
	})

	t.Run("unknown", func(t *testing.T) {
		tg := opensshTarget("beta", b)
		tg.HostKey = ssh.KnownHosts(a.KnownHostsPath) // knows only a
		_, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"})
		if !errors.Is(err, ssh.ErrUnknownHostKey) || ssh.IsRetryable(err) {
			t.Fatalf("err = %v, want ErrUnknownHostKey", err)
		}
	})

	t.Run("both machines in one file", func(t *testing.T) {
		kh := writeFile(t, knownhosts.Line([]string{a.Addr()}, a.HostPublicKey)+"\n"+
			knownhosts.Line([]string{b.Addr()}, b.HostPublicKey)+"\n")
		for _, o := range []*sshtest.OpenSSH{a, b} {
			tg := opensshTarget("m-"+o.Host, o)
			tg.HostKey = ssh.KnownHosts(kh)
			runOK(t, p, tg, "true")
		}
	})

	t.Run("accept new", func(t *testing.T) {
		kh := filepath.Join(t.TempDir(), "sub", "known_hosts")
		for _, o := range []*sshtest.OpenSSH{a, b, a, b} {
			tg := opensshTarget("tofu-"+o.Host, o)
			tg.HostKey = ssh.AcceptNewHostKey(kh)
			runOK(t, p, tg, "true")
			p.Forget(tg.Name)
		}
		data, err := os.ReadFile(kh)
		if err != nil {
			t.Fatal(err)
		}
		want := knownhosts.Line([]string{a.Addr()}, a.HostPublicKey) + "\n" + knownhosts.Line([]string{b.Addr()}, b.HostPublicKey) + "\n"
		if string(data) != want {
			t.Fatalf("known_hosts:\n%s\nwant:\n%s", data, want)
		}
		// Recorded keys are enforced: b's address with a's key file entry.
		bad := filepath.Join(t.TempDir(), "known_hosts")
		os.WriteFile(bad, []byte(knownhosts.Line([]string{b.Addr()}, a.HostPublicKey)+"\n"), 0o600)
		tg := opensshTarget("tofu-bad", b)
		tg.HostKey = ssh.AcceptNewHostKey(bad)
		if _, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"}); !errors.Is(err, ssh.ErrHostKeyMismatch) {
			t.Fatalf("err = %v, want ErrHostKeyMismatch", err)
		}
	})
}

func TestOpenSSHAuth(t *testing.T) {
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 2})
	p := newPool(t, ssh.Config{})

	t.Run("wrong key", func(t *testing.T) {
		other := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 3})
		tg := opensshTarget("m", o)
		tg.Auth = []ssh.Auth{ssh.KeyFile(other.ClientKeyPath, nil)}
		_, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"})
		if !errors.Is(err, ssh.ErrAuthFailed) || ssh.IsRetryable(err) {
			t.Fatalf("err = %v, want ErrAuthFailed (not retryable)", err)
		}
	})

	t.Run("encrypted key, right passphrase", func(t *testing.T) {
		tg := opensshTarget("enc", o)
		tg.Auth = []ssh.Auth{ssh.KeyFile(o.EncryptedClientKeyPath, o.Passphrase)}
		runOK(t, p, tg, "true")
	})

	t.Run("encrypted key, wrong passphrase", func(t *testing.T) {
		tg := opensshTarget("enc-bad", o)
		tg.Auth = []ssh.Auth{ssh.KeyFile(o.EncryptedClientKeyPath, []byte("wrong"))}
		_, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"})
		if !errors.Is(err, ssh.ErrWrongPassphrase) || ssh.IsRetryable(err) || !strings.Contains(err.Error(), o.EncryptedClientKeyPath) {
			t.Fatalf("err = %v, want ErrWrongPassphrase naming the file", err)
		}
	})

	t.Run("second key works after a wrong one", func(t *testing.T) {
		wrong, _, _ := sshtest.GenerateSigner(nil)
		tg := opensshTarget("multi", o)
		tg.Auth = []ssh.Auth{ssh.Signers(wrong), ssh.KeyFile(o.ClientKeyPath, nil)}
		runOK(t, p, tg, "true")
	})
}

func TestOpenSSHUnreachable(t *testing.T) {
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 2})
	o.Stop()
	p := newPool(t, ssh.Config{DialTimeout: 2 * time.Second})
	_, err := p.Run(context.Background(), opensshTarget("gone", o), ssh.Command{Cmd: "true"})
	if !errors.Is(err, ssh.ErrConnect) || !ssh.IsRetryable(err) {
		t.Fatalf("err = %v, want retryable ErrConnect", err)
	}
}

// TestOpenSSHConcurrency: 40 concurrent commands on ONE sshd with
// MaxSessions 10 all succeed, with the default pool configuration and with
// one that provokes "administratively prohibited" refusals.
func TestOpenSSHConcurrency(t *testing.T) {
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 2, MaxSessions: 10})
	tg := opensshTarget("busy", o)
	for _, tc := range []struct {
		name string
		cfg  ssh.Config
	}{
		{"defaults", ssh.Config{}},
		{"10 sessions per connection", ssh.Config{MaxSessionsPerConn: 10, MaxConnsPerHost: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ignore := goleak.IgnoreCurrent()
			p := ssh.NewPool(tc.cfg)
			var wg sync.WaitGroup
			errs := make(chan error, 40)
			for i := 0; i < 40; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					res, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "sleep 0.2; echo ok"})
					if err == nil && string(res.Stdout) != "ok\n" {
						err = errors.New("unexpected output " + string(res.Stdout))
					}
					errs <- err
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
			s := p.Stats()
			t.Logf("stats: %+v", s)
			if s.OpenConns > max(tc.cfg.MaxConnsPerHost, 4) {
				t.Errorf("too many connections: %+v", s)
			}
			p.Close()
			goleak.VerifyNone(t, ignore)
		})
	}
}

// TestOpenSSHRestart: sshd stopped and restarted between commands; the
// pool drops the dead connection and the next Run works.
func TestOpenSSHRestart(t *testing.T) {
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 3})
	tg := opensshTarget("phoenix", o)
	ignore := goleak.IgnoreCurrent()
	p := ssh.NewPool(ssh.Config{})
	runOK(t, p, tg, "true")
	o.Stop()
	o.Start()
	if res := runOK(t, p, tg, "echo back"); string(res.Stdout) != "back\n" {
		t.Errorf("stdout %q", res.Stdout)
	}
	// Same again without giving the pool time to notice the EOF first.
	o.Stop()
	o.Start()
	runOK(t, p, tg, "true")
	if s := p.Stats(); s.Dials != 3 || s.OpenConns != 1 {
		t.Errorf("stats %+v: want 3 dials, 1 open connection", s)
	}
	// A command running when the machine goes down fails with ErrConnect.
	started := newSignalWriter()
	errc := make(chan error, 1)
	go func() {
		_, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "echo up; sleep 30", Stdout: started})
		errc <- err
	}()
	<-started.ch
	o.Stop()
	if err := <-errc; !errors.Is(err, ssh.ErrConnect) || !ssh.IsRetryable(err) {
		t.Errorf("err = %v, want retryable ErrConnect", err)
	}
	o.Start()
	runOK(t, p, tg, "true")
	p.Close()
	goleak.VerifyNone(t, ignore, goleak.IgnoreAnyFunction("github.com/rediacc/rediacc/ssh/sshtest.(*OpenSSH).start.func1"))
}

// TestOpenSSHHostKeyAlgorithms: sshd has an ed25519 and an ECDSA host key,
// known_hosts records only the ECDSA one. The client must ask for the
// recorded type (HostKeyAlgorithms), or it would negotiate ed25519 and see
// a false mismatch.
func TestOpenSSHHostKeyAlgorithms(t *testing.T) {
	dir := t.TempDir()
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := xssh.MarshalPrivateKey(ecKey, "")
	if err != nil {
		t.Fatal(err)
	}
	ecPath := filepath.Join(dir, "ssh_host_ecdsa_key")
	if err := os.WriteFile(ecPath, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	ecPub, err := xssh.NewPublicKey(&ecKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 2, ExtraConfig: []string{"HostKey " + ecPath}})
	p := newPool(t, ssh.Config{})
	tg := opensshTarget("ecdsa-only", o)
	tg.HostKey = ssh.KnownHosts(writeFile(t, knownhosts.Line([]string{o.Addr()}, ecPub)+"\n"))
	runOK(t, p, tg, "true")
	// And the ed25519-only file still works on the same server.
	tg2 := opensshTarget("ed25519-only", o)
	runOK(t, p, tg2, "true")
}

// TestOpenSSHMaxStartups: many new connections at once to an sshd that
// drops unauthenticated connections beyond 3 (MaxStartups 3); the pool
// keeps at most 2 handshakes in flight per address, so all succeed.
func TestOpenSSHMaxStartups(t *testing.T) {
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 3, MaxStartups: "3"})
	p := newPool(t, ssh.Config{MaxStartupsPerHost: 2})
	var wg sync.WaitGroup
	for i := 0; i < 12; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Distinct names: distinct pool identities, one dial each.
			tg := opensshTarget("m"+strings.Repeat("x", i), o)
			if _, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if s := p.Stats(); s.OpenConns != 12 {
		t.Errorf("stats %+v", s)
	}
}
