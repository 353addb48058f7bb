package ssh_test

import (
	"bytes"
	"context"
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

func TestRunInProcess(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	tg := inprocTarget(t, "inproc", srv)
	p := newPool(t, ssh.Config{})
	for _, tc := range []struct {
		name       string
		cmd        ssh.Command
		wantOut    string
		wantErrOut string
		wantCode   int
		wantSignal string
	}{
		{name: "stdout and stderr apart", cmd: ssh.Command{Cmd: "echo out; echo err >&2; echo out2"},
			wantOut: "out\nout2\n", wantErrOut: "err\n"},
		{name: "exit code", cmd: ssh.Command{Cmd: "echo partial; exit 42"}, wantOut: "partial\n", wantCode: 42},
		{name: "killed by signal", cmd: ssh.Command{Cmd: "kill -TERM $$"}, wantCode: 128 + 15, wantSignal: "TERM"},
		{name: "env", cmd: ssh.Command{Cmd: `printf '%s|%s' "$GREETING" "$Q"`,
			Env: map[string]string{"GREETING": "hello world", "Q": `it's "$(quoted)"`}},
			wantOut: `hello world|it's "$(quoted)"`},
		{name: "stdin", cmd: ssh.Command{Cmd: "tr a-z A-Z", Stdin: strings.NewReader("shout\n")}, wantOut: "SHOUT\n"},
		{name: "no stdin reads EOF", cmd: ssh.Command{Cmd: "cat; echo done"}, wantOut: "done\n"},
		{name: "syntax error", cmd: ssh.Command{Cmd: "if then fi"}, wantCode: 2},
		{name: "leading dash script", cmd: ssh.Command{Cmd: "-x 2>/dev/null; echo $?"}, wantOut: "127\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := p.Run(context.Background(), tg, tc.cmd)
			if res == nil {
				t.Fatalf("nil result, err %v", err)
			}
			if tc.wantCode == 0 && err != nil {
				t.Fatalf("err = %v", err)
			}
			if tc.wantCode != 0 {
				var ee *ssh.ExitError
				if !errors.As(err, &ee) || ee.Code != tc.wantCode || ee.Signal != tc.wantSignal {
					t.Fatalf("err = %#v, want ExitError code %d signal %q", err, tc.wantCode, tc.wantSignal)
				}
				if !strings.Contains(err.Error(), `"inproc"`) || ssh.IsRetryable(err) {
					t.Errorf("exit error %q should name the machine and not be retryable", err)
				}
			}
			if res.ExitCode != tc.wantCode || res.Signal != tc.wantSignal {
				t.Errorf("result code %d signal %q", res.ExitCode, res.Signal)
			}
			if string(res.Stdout) != tc.wantOut {
				t.Errorf("stdout = %q, want %q", res.Stdout, tc.wantOut)
			}
			if tc.wantErrOut != "" && string(res.Stderr) != tc.wantErrOut {
				t.Errorf("stderr = %q, want %q", res.Stderr, tc.wantErrOut)
			}
			if res.Started.IsZero() || res.Ended.Before(res.Started) {
				t.Errorf("times: started %v ended %v", res.Started, res.Ended)
			}
		})
	}
	if s := p.Stats(); s.Dials != 1 || s.OpenConns != 1 || s.SessionsInFlight != 0 {
		t.Errorf("sequential runs should share one connection: %+v", s)
	}
}

func TestLiveWriters(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	p := newPool(t, ssh.Config{})
	var out, errOut bytes.Buffer
	res, err := p.Run(context.Background(), inprocTarget(t, "m", srv), ssh.Command{
		Cmd: "echo a; echo b >&2; echo c", Stdout: &out, Stderr: &errOut, OutputLimit: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != "a\nc\n" || errOut.String() != "b\n" {
		t.Errorf("live copies are uncapped: out %q err %q", out.String(), errOut.String())
	}
	if string(res.Stdout) != "a\n" || !res.StdoutTruncated || string(res.Stderr) != "b\n" || res.StderrTruncated {
		t.Errorf("result capped at 2: %q %v %q %v", res.Stdout, res.StdoutTruncated, res.Stderr, res.StderrTruncated)
	}
}

func TestOutputLimitInProcess(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	tg := inprocTarget(t, "m", srv)
	p := newPool(t, ssh.Config{})
	const mib = 1 << 20
	cmd := "head -c 3145728 /dev/zero | tr '\\0' o; head -c 3145728 /dev/zero | tr '\\0' e >&2; echo end"
	res, err := p.Run(context.Background(), tg, ssh.Command{Cmd: cmd})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Stdout) != mib || !res.StdoutTruncated || len(res.Stderr) != mib || !res.StderrTruncated {
		t.Fatalf("stdout %d %v, stderr %d %v", len(res.Stdout), res.StdoutTruncated, len(res.Stderr), res.StderrTruncated)
	}
	if len(bytes.Trim(res.Stdout, "o")) != 0 || len(bytes.Trim(res.Stderr, "e")) != 0 {
		t.Fatal("captured bytes are not the start of the streams")
	}
	res, err = p.Run(context.Background(), tg, ssh.Command{Cmd: cmd, OutputLimit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Stdout) != 3*mib+4 || res.StdoutTruncated || len(res.Stderr) != 3*mib {
		t.Fatalf("unlimited: stdout %d, stderr %d", len(res.Stdout), len(res.Stderr))
	}
}

func TestTimeoutKillsTreeInProcess(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	p := newPool(t, ssh.Config{KillGrace: 500 * time.Millisecond})
	m := marker()
	res, err := p.Run(context.Background(), inprocTarget(t, "slow", srv), ssh.Command{Cmd: treeCmd(m), Timeout: 300 * time.Millisecond})
	if !errors.Is(err, ssh.ErrTimeout) || ssh.IsRetryable(err) {
		t.Fatalf("err = %v, want ErrTimeout (not retryable)", err)
	}
	if !strings.Contains(err.Error(), `"slow"`) {
		t.Errorf("error does not name the machine: %v", err)
	}
	if res == nil || string(res.Stdout) != "started\n" {
		t.Fatalf("partial result = %+v", res)
	}
	waitGone(t, m)
}

func TestCancelKillsTreeInProcess(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	p := newPool(t, ssh.Config{KillGrace: 500 * time.Millisecond})
	m := marker()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := newSignalWriter()
	go func() {
		<-started.ch
		waitRunning(t, m+"2")
		cancel()
	}()
	res, err := p.Run(ctx, inprocTarget(t, "m", srv), ssh.Command{Cmd: treeCmd(m), Stdout: started})
	if !errors.Is(err, context.Canceled) || errors.Is(err, ssh.ErrTimeout) || ssh.IsRetryable(err) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if res == nil || res.Started.IsZero() {
		t.Fatalf("partial result = %+v", res)
	}
	waitGone(t, m)
}

// TestTermIgnoredGetsKilled: a command that ignores TERM is KILLed after
// the grace period.
func TestTermIgnoredGetsKilled(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	p := newPool(t, ssh.Config{KillGrace: 300 * time.Millisecond})
	m := marker()
	cmd := "trap '' TERM; echo started; sleep " + m + "1; sleep 1"
	_, err := p.Run(context.Background(), inprocTarget(t, "m", srv), ssh.Command{Cmd: cmd, Timeout: 200 * time.Millisecond})
	if !errors.Is(err, ssh.ErrTimeout) {
		t.Fatalf("err = %v", err)
	}
	waitGone(t, m)
}

func TestCancelBeforeStart(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	p := newPool(t, ssh.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := p.Run(ctx, inprocTarget(t, "m", srv), ssh.Command{Cmd: "true"})
	if res != nil || !errors.Is(err, context.Canceled) || ssh.IsRetryable(err) {
		t.Fatalf("res %v err %v", res, err)
	}
}

func TestHostKeyMismatchInProcess(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	other := sshtest.NewServer(t, sshtest.Options{})
	tg := inprocTarget(t, "web-1", srv)
	// A known_hosts file claiming srv's address has other's key.
	kh := filepath.Join(t.TempDir(), "known_hosts")
	line := knownhosts.Line([]string{srv.Addr()}, other.HostKey())
	if err := os.WriteFile(kh, []byte("# comment\n"+line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tg.HostKey = ssh.KnownHosts(kh)
	p := newPool(t, ssh.Config{})
	_, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"})
	if !errors.Is(err, ssh.ErrHostKeyMismatch) || ssh.IsRetryable(err) {
		t.Fatalf("err = %v, want ErrHostKeyMismatch", err)
	}
	for _, want := range []string{`"web-1"`, srv.Addr(), kh, "line 2", "ssh-keygen -R", "does not match", "not the host you expect"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if s := p.Stats(); s.OpenConns != 0 || s.DialErrors != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestUnknownHostInProcess(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	tg := inprocTarget(t, "new-box", srv)
	p := newPool(t, ssh.Config{})
	for _, files := range [][]string{
		{filepath.Join(t.TempDir(), "missing")},
		{writeFile(t, "# only a comment\n")},
	} {
		tg.HostKey = ssh.KnownHosts(files...)
		_, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"})
		if !errors.Is(err, ssh.ErrUnknownHostKey) || ssh.IsRetryable(err) {
			t.Fatalf("err = %v, want ErrUnknownHostKey", err)
		}
		for _, want := range []string{`"new-box"`, "not in known_hosts", "ssh-keyscan", "AcceptNewHostKey", "SHA256:"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
	}
}

func writeFile(t testing.TB, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestAcceptNewHostKeyInProcess(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	tg := inprocTarget(t, "tofu", srv)
	dir := filepath.Join(t.TempDir(), "nested", "dir")
	kh := filepath.Join(dir, "known_hosts")
	tg.HostKey = ssh.AcceptNewHostKey(kh)

	// Concurrent first contacts (separate pools, so separate dials)
	// record exactly one line.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := ssh.NewPool(ssh.Config{})
			defer p.Close()
			_, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(kh)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(b), "\n"); got != 1 || strings.TrimSpace(string(b)) != srv.KnownHostsLine() {
		t.Fatalf("known_hosts has %d lines:\n%s\nwant %s", got, b, srv.KnownHostsLine())
	}
	if st, _ := os.Stat(kh); st.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v", st.Mode())
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v", st.Mode())
	}

	// Later: verified against the recorded key (strict policy works too).
	tg.HostKey = ssh.KnownHosts(kh)
	p := newPool(t, ssh.Config{})
	runOK(t, p, tg, "true")

	// A different server on the same address is refused, not re-recorded.
	addr := srv.Addr()
	srv.Close()
	impostor := sshtest.NewServer(t, sshtest.Options{Addr: addr, AuthorizedKeys: []xssh.PublicKey{srv.ClientSigner().PublicKey()}})
	_ = impostor
	tg.HostKey = ssh.AcceptNewHostKey(kh)
	p2 := newPool(t, ssh.Config{})
	_, err = p2.Run(context.Background(), tg, ssh.Command{Cmd: "true"})
	if !errors.Is(err, ssh.ErrHostKeyMismatch) {
		t.Fatalf("err = %v, want ErrHostKeyMismatch", err)
	}
	if b2, _ := os.ReadFile(kh); !bytes.Equal(b, b2) {
		t.Errorf("known_hosts changed after a mismatch:\n%s", b2)
	}
}

func TestInsecureIgnoreHostKey(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	tg := inprocTarget(t, "m", srv)
	tg.HostKey = ssh.InsecureIgnoreHostKey()
	runOK(t, newPool(t, ssh.Config{}), tg, "true")
}

func TestWrongClientKeyInProcess(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	tg := inprocTarget(t, "m", srv)
	wrong, _, err := sshtest.GenerateSigner(nil)
	if err != nil {
		t.Fatal(err)
	}
	tg.Auth = []ssh.Auth{ssh.Signers(wrong)}
	_, err = newPool(t, ssh.Config{}).Run(context.Background(), tg, ssh.Command{Cmd: "true"})
	if !errors.Is(err, ssh.ErrAuthFailed) || ssh.IsRetryable(err) || errors.Is(err, ssh.ErrConnect) {
		t.Fatalf("err = %v, want ErrAuthFailed only", err)
	}
	if !strings.Contains(err.Error(), `user "tester"`) || !strings.Contains(err.Error(), "authorized_keys") {
		t.Errorf("error should say what to check: %v", err)
	}
}

func TestKeyFilesInProcess(t *testing.T) {
	signer, plainPEM, err := sshtest.GenerateSigner(nil)
	if err != nil {
		t.Fatal(err)
	}
	encPEM, err := sshtest.FastEncryptedKey(plainPEM, []byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	srv := sshtest.NewServer(t, sshtest.Options{AuthorizedKeys: []xssh.PublicKey{signer.PublicKey()}})
	base := inprocTarget(t, "keys", srv)
	dir := t.TempDir()
	plain := filepath.Join(dir, "id_plain")
	enc := filepath.Join(dir, "id_enc")
	garbage := filepath.Join(dir, "id_garbage")
	os.WriteFile(plain, plainPEM, 0o600)
	os.WriteFile(enc, encPEM, 0o600)
	os.WriteFile(garbage, []byte("not a key"), 0o600)
	missing := filepath.Join(dir, "nope")

	p := newPool(t, ssh.Config{})
	for _, tc := range []struct {
		name    string
		auth    ssh.Auth
		want    error
		mention string
	}{
		{"plain file", ssh.KeyFile(plain, nil), nil, ""},
		{"plain file, needless passphrase", ssh.KeyFile(plain, []byte("x")), nil, ""},
		{"encrypted, right passphrase", ssh.KeyFile(enc, []byte("s3cret")), nil, ""},
		{"in-memory encrypted", ssh.PrivateKey(encPEM, []byte("s3cret")), nil, ""},
		{"encrypted, no passphrase", ssh.KeyFile(enc, nil), ssh.ErrWrongPassphrase, enc},
		{"encrypted, wrong passphrase", ssh.KeyFile(enc, []byte("nope")), ssh.ErrWrongPassphrase, enc},
		{"in-memory wrong passphrase", ssh.PrivateKey(encPEM, []byte("nope")), ssh.ErrWrongPassphrase, "in-memory"},
		{"missing file", ssh.KeyFile(missing, nil), ssh.ErrKeyFile, missing},
		{"garbage file", ssh.KeyFile(garbage, nil), ssh.ErrKeyFile, garbage},
		{"zero Auth", ssh.Auth{}, ssh.ErrInvalidCommand, "zero Auth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := base
			tg.Auth = []ssh.Auth{tc.auth}
			before := p.Stats()
			_, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"})
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				p.Forget(tg.Name) // next case dials and loads its key again
				return
			}
			if !errors.Is(err, tc.want) || ssh.IsRetryable(err) || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("err = %v, want %v mentioning %q", err, tc.want, tc.mention)
			}
			if after := p.Stats(); after.OpenConns != before.OpenConns {
				t.Errorf("a bad key must fail before connecting: %+v -> %+v", before, after)
			}
		})
	}
}

func TestAgentWithoutSocket(t *testing.T) {
	t.Setenv("SSH_AUTH_SOCK", "")
	srv := sshtest.NewServer(t, sshtest.Options{})
	tg := inprocTarget(t, "m", srv)
	tg.Auth = []ssh.Auth{ssh.Agent()}
	_, err := newPool(t, ssh.Config{}).Run(context.Background(), tg, ssh.Command{Cmd: "true"})
	if !errors.Is(err, ssh.ErrAuthFailed) || !strings.Contains(err.Error(), "SSH_AUTH_SOCK is not set") {
		t.Fatalf("err = %v", err)
	}
}

func TestUnreachablePort(t *testing.T) {
	tg := ssh.Target{Name: "down", Host: "127.0.0.1", Port: freePort(t), User: "u",
		Auth: []ssh.Auth{ssh.Password("x")}, HostKey: ssh.InsecureIgnoreHostKey()}
	p := newPool(t, ssh.Config{DialTimeout: 2 * time.Second})
	_, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"})
	if !errors.Is(err, ssh.ErrConnect) || !ssh.IsRetryable(err) {
		t.Fatalf("err = %v, want retryable ErrConnect", err)
	}
	if !strings.Contains(err.Error(), `"down"`) || !strings.Contains(err.Error(), tg.Addr()) {
		t.Errorf("error should name machine and address: %v", err)
	}
	if s := p.Stats(); s.Dials != 1 || s.DialErrors != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestInvalidInput(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	tg := inprocTarget(t, "m", srv)
	p := newPool(t, ssh.Config{})
	noHost := tg
	noHost.Host = ""
	noAuth := tg
	noAuth.Auth = nil
	for _, tc := range []struct {
		name string
		tg   ssh.Target
		cmd  ssh.Command
	}{
		{"bad env key", tg, ssh.Command{Cmd: "true", Env: map[string]string{"BAD-KEY": "v"}}},
		{"nul", tg, ssh.Command{Cmd: "echo \x00"}},
		{"empty", tg, ssh.Command{}},
		{"no host", noHost, ssh.Command{Cmd: "true"}},
		{"no auth", noAuth, ssh.Command{Cmd: "true"}},
	} {
		_, err := p.Run(context.Background(), tc.tg, tc.cmd)
		if !errors.Is(err, ssh.ErrInvalidCommand) || ssh.IsRetryable(err) {
			t.Errorf("%s: err = %v, want ErrInvalidCommand", tc.name, err)
		}
	}
	if s := p.Stats(); s.Dials != 0 {
		t.Errorf("invalid input must not dial: %+v", s)
	}
}

// TestSessionRefusalsAbsorbed: a server that refuses sessions beyond 2 per
// connection ("administratively prohibited") while the pool would allow 10:
// every command still succeeds.
func TestSessionRefusalsAbsorbed(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{MaxSessions: 2})
	tg := inprocTarget(t, "m", srv)
	p := newPool(t, ssh.Config{MaxSessionsPerConn: 10, MaxConnsPerHost: 2})
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "sleep 0.1; echo ok"})
			if err == nil && string(res.Stdout) != "ok\n" {
				err = errors.New("bad output " + string(res.Stdout))
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
	if s.SessionRefusals == 0 || s.OpenConns > 2 {
		t.Errorf("stats %+v: want refusals absorbed, at most 2 connections", s)
	}
	t.Logf("stats: %+v", s)
}

func TestPoolLimits(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	tg := inprocTarget(t, "m", srv)
	p := newPool(t, ssh.Config{MaxSessionsPerConn: 3, MaxConnsPerHost: 2})
	var wg sync.WaitGroup
	var maxInFlight, maxConns int
	var mu sync.Mutex
	stop := make(chan struct{})
	var pollWG sync.WaitGroup
	pollWG.Add(1)
	go func() {
		defer pollWG.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			s := p.Stats()
			mu.Lock()
			maxInFlight = max(maxInFlight, s.SessionsInFlight)
			maxConns = max(maxConns, s.OpenConns)
			mu.Unlock()
		}
	}()
	for i := 0; i < 18; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "sleep 0.1"}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	close(stop)
	pollWG.Wait()
	if maxInFlight > 6 || maxConns > 2 || maxInFlight == 0 {
		t.Errorf("max in flight %d (limit 6), max conns %d (limit 2)", maxInFlight, maxConns)
	}
	if s := p.Stats(); s.Dials > 2 {
		t.Errorf("dials %d", s.Dials)
	}
}

func TestWaitForSlotRespectsContext(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	tg := inprocTarget(t, "m", srv)
	p := newPool(t, ssh.Config{MaxSessionsPerConn: 1, MaxConnsPerHost: 1, KillGrace: 200 * time.Millisecond})
	started := newSignalWriter()
	blockCtx, cancelBlock := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Run(blockCtx, tg, ssh.Command{Cmd: "echo go; sleep 30", Stdout: started})
	}()
	<-started.ch
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := p.Run(ctx, tg, ssh.Command{Cmd: "true"})
	if !errors.Is(err, context.DeadlineExceeded) || ssh.IsRetryable(err) {
		t.Fatalf("err = %v, want DeadlineExceeded while waiting for a slot", err)
	}
	cancelBlock()
	<-done
	runOK(t, p, tg, "true")
}

func TestForgetAndIdle(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	tg := inprocTarget(t, "m", srv)
	p := newPool(t, ssh.Config{})
	runOK(t, p, tg, "true")
	p.Forget("m")
	if s := p.Stats(); s.OpenConns != 0 {
		t.Fatalf("after Forget: %+v", s)
	}
	runOK(t, p, tg, "true")
	if s := p.Stats(); s.Dials != 2 || s.OpenConns != 1 {
		t.Fatalf("after re-run: %+v", s)
	}

	idle := newPool(t, ssh.Config{IdleTimeout: 100 * time.Millisecond, KeepaliveInterval: 30 * time.Millisecond})
	runOK(t, idle, tg, "true")
	eventually(t, "idle connection closed", func() bool { return idle.Stats().OpenConns == 0 })
}

// TestDeadHost: a host that goes dark (packets black-holed) is detected by
// keepalives while a command runs, and a pooled connection to it is
// dropped when opening a session times out.
func TestDeadHost(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	cfg := ssh.Config{
		KeepaliveInterval:  50 * time.Millisecond,
		KeepaliveMax:       3,
		SessionOpenTimeout: 300 * time.Millisecond,
		HandshakeTimeout:   300 * time.Millisecond,
		KillGrace:          100 * time.Millisecond,
	}

	t.Run("keepalive", func(t *testing.T) {
		proxy := newFreezeProxy(t, srv.Addr())
		tg := inprocTarget(t, "dark", srv)
		tg.Port = proxy.Port()
		tg.HostKey = ssh.InsecureIgnoreHostKey()
		p := newPool(t, cfg)
		started := newSignalWriter()
		go func() { <-started.ch; proxy.Freeze() }()
		res, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "echo up; sleep 30", Stdout: started})
		if !errors.Is(err, ssh.ErrConnect) || !ssh.IsRetryable(err) || !strings.Contains(err.Error(), "keepalive") {
			t.Fatalf("err = %v, want retryable ErrConnect mentioning keepalive", err)
		}
		if res == nil || string(res.Stdout) != "up\n" {
			t.Errorf("partial result %+v", res)
		}
		if s := p.Stats(); s.OpenConns != 0 {
			t.Errorf("dead connection kept: %+v", s)
		}
	})

	t.Run("session open timeout", func(t *testing.T) {
		proxy := newFreezeProxy(t, srv.Addr())
		tg := inprocTarget(t, "dark", srv)
		tg.Port = proxy.Port()
		tg.HostKey = ssh.InsecureIgnoreHostKey()
		c := cfg
		c.KeepaliveInterval = -1 // only the session open deadline can notice
		p := newPool(t, c)
		runOK(t, p, tg, "true")
		proxy.Freeze()
		_, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"})
		if !errors.Is(err, ssh.ErrConnect) || !ssh.IsRetryable(err) {
			t.Fatalf("err = %v, want retryable ErrConnect", err)
		}
		if s := p.Stats(); s.Retries != 1 || s.OpenConns != 0 || s.Dials != 2 {
			t.Errorf("want one retry on a fresh (failing) connection: %+v", s)
		}
	})
}

// TestServerRestartInProcess: the pooled connection dies with the server;
// the next Run dials the new one.
func TestServerRestartInProcess(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	tg := inprocTarget(t, "m", srv)
	p := newPool(t, ssh.Config{})
	runOK(t, p, tg, "true")
	addr := srv.Addr()
	srv.Close()
	srv2 := sshtest.NewServer(t, sshtest.Options{Addr: addr, HostKey: nil, AuthorizedKeys: []xssh.PublicKey{srv.ClientSigner().PublicKey()}})
	tg.HostKey = ssh.InsecureIgnoreHostKey()
	_ = srv2
	runOK(t, p, tg, "echo again")
	if s := p.Stats(); s.Dials != 2 || s.OpenConns != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestPoolCloseNoLeaks(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	tg := inprocTarget(t, "m", srv)
	ignore := goleak.IgnoreCurrent()
	p := ssh.NewPool(ssh.Config{KeepaliveInterval: 20 * time.Millisecond, KillGrace: 100 * time.Millisecond})
	runOK(t, p, tg, "true")
	// A command running while the pool closes fails, not hangs.
	started := newSignalWriter()
	errc := make(chan error, 1)
	go func() {
		_, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "echo x; sleep 30", Stdout: started})
		errc <- err
	}()
	<-started.ch
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ssh.ErrPoolClosed) || ssh.IsRetryable(err) {
		t.Errorf("running command: err = %v, want ErrPoolClosed", err)
	}
	if _, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"}); !errors.Is(err, ssh.ErrPoolClosed) {
		t.Errorf("Run after Close: %v", err)
	}
	p.Close()
	srv.Close() // ends the server's goroutines for the still running command
	goleak.VerifyNone(t, ignore)
}

// TestDarkHostSharesDialFailure: many commands for a host that accepts TCP
// but never speaks SSH all fail with ErrConnect, without each waiting for
// its own handshake timeout in turn.
func TestDarkHostSharesDialFailure(t *testing.T) {
	proxy := newFreezeProxy(t, "127.0.0.1:1")
	proxy.Freeze()
	tg := ssh.Target{Name: "dark", Host: "127.0.0.1", Port: proxy.Port(), User: "u",
		Auth: []ssh.Auth{ssh.Password("x")}, HostKey: ssh.InsecureIgnoreHostKey()}
	p := newPool(t, ssh.Config{HandshakeTimeout: 300 * time.Millisecond, MaxConnsPerHost: 1})
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "true"})
			if !errors.Is(err, ssh.ErrConnect) || !strings.Contains(err.Error(), "handshake") {
				t.Errorf("err = %v, want ErrConnect from the handshake", err)
			}
		}()
	}
	wg.Wait()
	if s := p.Stats(); s.Dials >= 6 {
		t.Errorf("every waiter dialed on its own: %+v", s)
	}
}

// TestForgetBusy: Forget lets a running command finish, then closes its
// connection; Close still reaches connections of forgotten targets.
func TestForgetBusy(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	tg := inprocTarget(t, "m", srv)
	p := newPool(t, ssh.Config{})
	started := newSignalWriter()
	release := writeFile(t, "")
	os.Remove(release)
	done := make(chan error, 1)
	go func() {
		res, err := p.Run(context.Background(), tg, ssh.Command{
			Cmd: "echo go; while [ ! -e " + ssh.ShellQuote(release) + " ]; do sleep 0.02; done; echo finished", Stdout: started})
		if err == nil && !strings.Contains(string(res.Stdout), "finished") {
			err = errors.New("unexpected output " + string(res.Stdout))
		}
		done <- err
	}()
	<-started.ch
	p.Forget("m")
	if s := p.Stats(); s.OpenConns != 1 {
		t.Errorf("busy connection closed by Forget: %+v", s)
	}
	os.WriteFile(release, nil, 0o600)
	if err := <-done; err != nil {
		t.Fatalf("command on a forgotten connection: %v", err)
	}
	eventually(t, "retired connection closed", func() bool { return p.Stats().OpenConns == 0 })

	// A busy forgotten connection is closed by Close.
	started2 := newSignalWriter()
	go func() {
		_, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "echo go; sleep 30", Stdout: started2})
		done <- err
	}()
	<-started2.ch
	p.Forget("m")
	p.Close()
	if err := <-done; !errors.Is(err, ssh.ErrPoolClosed) {
		t.Fatalf("err = %v, want ErrPoolClosed", err)
	}
}
