package ssh_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	xssh "golang.org/x/crypto/ssh"

	"github.com/rediacc/rediacc/ssh"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// padTo returns a Command whose command line is exactly n bytes: Cmd is
// "echo ok #" followed by padding.
func padTo(t *testing.T, base ssh.Command, n int) ssh.Command {
	t.Helper()
	base.Cmd = "echo ok #"
	size, err := ssh.CommandLineSize(base)
	if err != nil {
		t.Fatal(err)
	}
	base.Cmd += strings.Repeat("x", n-size)
	if got, err := ssh.CommandLineSize(base); err != nil || got != n {
		t.Fatalf("CommandLineSize = %d, %v; want %d", got, err, n)
	}
	return base
}

// Issue 9, kind 3: a command that cannot run is refused before anything is
// sent, with an error naming the limit; one at the limit runs on a real sshd.
func TestCommandLineLimitOnOpenSSH(t *testing.T) {
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 61})
	tg := opensshTarget("limits", srv)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// The premise, measured on this host: Linux refuses a 131072-byte
	// argument (MAX_ARG_STRLEN), so the command line must stay below it.
	raw := rawSession(t, srv)
	out, err := raw.CombinedOutput("echo ok #" + strings.Repeat("x", 131072))
	if err == nil || !strings.Contains(string(out), "Argument list too long") {
		t.Fatalf("a 131 KiB command line: err %v, output %q; the limit's premise does not hold on this host", err, out)
	}

	var mu sync.Mutex
	var sent []string
	restore := ssh.SetExecHook(func(r string) { mu.Lock(); sent = append(sent, r); mu.Unlock() })
	defer restore()

	env := map[string]string{"Q": strings.Repeat("it's ", 100)}
	for _, withSecrets := range []bool{false, true} {
		base := ssh.Command{Env: env}
		if withSecrets {
			base.Secrets = map[string][]byte{"S": []byte("s3cr3t")}
		}
		p := newPool(t, ssh.Config{})
		at := padTo(t, base, ssh.MaxCommandLineBytes)
		res, err := p.Run(ctx, tg, at)
		if err != nil || strings.TrimSpace(string(res.Stdout)) != "ok" {
			t.Fatalf("secrets %v: a command line of MaxCommandLineBytes: %v, %+v", withSecrets, err, res)
		}
		mu.Lock()
		last := sent[len(sent)-1]
		mu.Unlock()
		if len(last) != ssh.MaxCommandLineBytes {
			t.Fatalf("CommandLineSize said %d, the exec string was %d bytes", ssh.MaxCommandLineBytes, len(last))
		}

		over := padTo(t, base, ssh.MaxCommandLineBytes+1)
		fresh := newPool(t, ssh.Config{})
		_, err = fresh.Run(ctx, tg, over)
		if !errors.Is(err, ssh.ErrInvalidCommand) || !strings.Contains(err.Error(), "MaxCommandLineBytes") || ssh.IsRetryable(err) {
			t.Fatalf("secrets %v: one byte over: %v", withSecrets, err)
		}
		if st := fresh.Stats(); st.Dials != 0 {
			t.Fatalf("a refused command dialed the server: %+v", st)
		}
	}

	// Quoting counts: 30,000 single quotes are 30,000 bytes of value but
	// far more on the command line.
	quotes := ssh.Command{Cmd: "true", Env: map[string]string{"Q": strings.Repeat("'", 30000)}}
	if n, err := ssh.CommandLineSize(quotes); err != nil || n <= ssh.MaxCommandLineBytes {
		t.Fatalf("CommandLineSize of 30,000 quotes = %d, %v", n, err)
	}
	if _, err := newPool(t, ssh.Config{}).Run(ctx, tg, quotes); !errors.Is(err, ssh.ErrInvalidCommand) {
		t.Fatalf("an Env value that quotes to more than the limit: %v", err)
	}
}

// A secret too large for the remote environment is refused before the run,
// naming the key and never the value; one at the limit reaches the command
// and the programs it starts.
func TestSecretSizeLimitOnOpenSSH(t *testing.T) {
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 62})
	tg := opensshTarget("limits", srv)
	p := newPool(t, ssh.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	value := strings.Repeat("v", ssh.MaxSecretEntryBytes-len("BIG="))
	res, err := p.Run(ctx, tg, ssh.Command{Cmd: `/bin/sh -c 'printf %s "$BIG"' | wc -c`, Secrets: map[string][]byte{"BIG": []byte(value)}})
	if err != nil || strings.TrimSpace(string(res.Stdout)) != strconv.Itoa(len(value)) {
		t.Fatalf("a secret of MaxSecretEntryBytes: %v, %+v", err, res)
	}
	_, err = p.Run(ctx, tg, ssh.Command{Cmd: "true", Secrets: map[string][]byte{"BIG": []byte(value + "v")}})
	if !errors.Is(err, ssh.ErrInvalidCommand) || !strings.Contains(err.Error(), `"BIG"`) || !strings.Contains(err.Error(), "MaxSecretEntryBytes") ||
		strings.Contains(err.Error(), "vvvv") {
		t.Fatalf("one byte over: %v", err)
	}
	many := map[string][]byte{}
	for _, k := range []string{"A", "B", "C", "D", "E"} {
		many[k] = []byte(strings.Repeat("w", ssh.MaxSecretsBytes/5))
	}
	if _, err := p.Run(ctx, tg, ssh.Command{Cmd: "true", Secrets: many}); !errors.Is(err, ssh.ErrInvalidCommand) || !strings.Contains(err.Error(), "MaxSecretsBytes") {
		t.Fatalf("secrets over MaxSecretsBytes together: %v", err)
	}
}

// rawSession opens an x/crypto session to srv, bypassing the package.
func rawSession(t *testing.T, srv *sshtest.OpenSSH) *xssh.Session {
	t.Helper()
	cl, err := xssh.Dial("tcp", srv.Addr(), &xssh.ClientConfig{
		User: srv.User, Auth: []xssh.AuthMethod{xssh.PublicKeys(srv.ClientSigner)},
		HostKeyCallback: xssh.FixedHostKey(srv.HostPublicKey), Timeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	s, err := cl.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	return s
}
