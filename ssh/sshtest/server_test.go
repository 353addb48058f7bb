package sshtest_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/rediacc/rediacc/ssh/sshtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// dial connects to srv with its generated client key, checking the host key.
func dial(t *testing.T, srv *sshtest.Server, signer ssh.Signer) *ssh.Client {
	t.Helper()
	c, err := ssh.Dial("tcp", srv.Addr(), &ssh.ClientConfig{
		User:            "tester",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(srv.HostKey()),
		Timeout:         5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func run(t *testing.T, c *ssh.Client, cmd string, setup func(*ssh.Session)) (string, string, error) {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out, errOut bytes.Buffer
	s.Stdout, s.Stderr = &out, &errOut
	if setup != nil {
		setup(s)
	}
	err = s.Run(cmd)
	return out.String(), errOut.String(), err
}

func TestServerExec(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	c := dial(t, srv, srv.ClientSigner())
	out, errOut, err := run(t, c, "echo hi; echo oops >&2; exit 3", nil)
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 3 || out != "hi\n" || errOut != "oops\n" {
		t.Fatalf("out %q err %q exit %v", out, errOut, err)
	}
	out, _, err = run(t, c, "cat", func(s *ssh.Session) { s.Stdin = strings.NewReader("piped") })
	if err != nil || out != "piped" {
		t.Fatalf("stdin: %q %v", out, err)
	}
	out, _, err = run(t, c, `printf %s "$FOO"`, func(s *ssh.Session) {
		if err := s.Setenv("FOO", "bar baz"); err != nil {
			t.Fatal(err)
		}
	})
	if err != nil || out != "bar baz" {
		t.Fatalf("env: %q %v", out, err)
	}
	_, _, err = run(t, c, "kill -USR1 $$", nil)
	if !errors.As(err, &ee) || ee.Signal() != "USR1" {
		t.Fatalf("exit-signal: %v", err)
	}
}

func TestServerSignalRequest(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	c := dial(t, srv, srv.ClientSigner())
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stdout, _ := s.StdoutPipe()
	if err := s.Start("echo ready; exec sleep 30"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := stdout.Read(buf); err != nil {
		t.Fatal(err)
	}
	if err := s.Signal(ssh.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var ee *ssh.ExitError
	if err := s.Wait(); !errors.As(err, &ee) || ee.Signal() != "TERM" || ee.ExitStatus() != 143 {
		t.Fatalf("wait: %v", err)
	}
}

func TestServerKeepaliveAndLimits(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{MaxSessions: 1})
	c := dial(t, srv, srv.ClientSigner())
	ok, _, err := c.SendRequest("keepalive@openssh.com", true, nil)
	if err != nil || !ok {
		t.Fatalf("keepalive: %v %v", ok, err)
	}
	s1, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.NewSession()
	var oce *ssh.OpenChannelError
	if !errors.As(err, &oce) || oce.Reason != ssh.Prohibited {
		t.Fatalf("second session: %v, want administratively prohibited", err)
	}
	s1.Close()
	// The slot frees once the first session is gone.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := c.NewSession()
		if err == nil {
			s.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestServerAuth(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	other, _, err := sshtest.GenerateSigner(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ssh.Dial("tcp", srv.Addr(), &ssh.ClientConfig{
		User: "x", Auth: []ssh.AuthMethod{ssh.PublicKeys(other)},
		HostKeyCallback: ssh.FixedHostKey(srv.HostKey()),
	})
	if err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
		t.Fatalf("unauthorized key: %v", err)
	}
	open := sshtest.NewServer(t, sshtest.Options{NoClientAuth: true})
	if open.ClientSigner() != nil {
		t.Error("NoClientAuth server generated a client key")
	}
	dial(t, open, other) // any key (or none) is accepted
	want := knownhosts.Line([]string{srv.Addr()}, srv.HostKey())
	if srv.KnownHostsLine() != want || !strings.HasPrefix(want, "[127.0.0.1]:") {
		t.Errorf("KnownHostsLine = %q", srv.KnownHostsLine())
	}
}

func TestServerCloseKillsCommands(t *testing.T) {
	srv, err := sshtest.Start(sshtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := ssh.Dial("tcp", srv.Addr(), &ssh.ClientConfig{
		User: "x", Auth: []ssh.AuthMethod{ssh.PublicKeys(srv.ClientSigner())},
		HostKeyCallback: ssh.FixedHostKey(srv.HostKey()),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := fmt.Sprint(100000000 + rand.IntN(800000000))
	s, _ := c.NewSession()
	if err := s.Start("sleep " + m + " & sleep " + m + "1"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !running(m) {
		if time.Now().After(deadline) {
			t.Fatal("command did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for running(m) {
		if time.Now().After(deadline) {
			t.Fatal("Close left commands running")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := net.DialTimeout("tcp", srv.Addr(), time.Second); err == nil {
		t.Error("still listening after Close")
	}
}

func running(pattern string) bool {
	return exec.Command("pgrep", "-f", pattern).Run() == nil
}

func TestStartOpenSSH(t *testing.T) {
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 4, MaxSessions: 3, ExtraConfig: []string{"ClientAliveInterval 0"}})
	if o.Host != "127.0.0.4" || o.Port == 0 || o.Addr() != net.JoinHostPort(o.Host, fmt.Sprint(o.Port)) {
		t.Fatalf("address %s %d %s", o.Host, o.Port, o.Addr())
	}
	cfg, _ := os.ReadFile(o.ConfigPath)
	for _, want := range []string{"ListenAddress " + o.Addr(), "MaxSessions 3", "UsePAM no", "StrictModes no", "PasswordAuthentication no", "ClientAliveInterval 0"} {
		if !bytes.Contains(cfg, []byte(want)) {
			t.Errorf("sshd_config lacks %q:\n%s", want, cfg)
		}
	}
	kh, _ := os.ReadFile(o.KnownHostsPath)
	if string(kh) != knownhosts.Line([]string{o.Addr()}, o.HostPublicKey)+"\n" {
		t.Errorf("known_hosts = %q", kh)
	}
	hostCheck, err := knownhosts.New(o.KnownHostsPath)
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := os.ReadFile(o.EncryptedClientKeyPath)
	if _, err := ssh.ParsePrivateKey(enc); err == nil {
		t.Error("encrypted key parses without passphrase")
	}
	encSigner, err := ssh.ParsePrivateKeyWithPassphrase(enc, o.Passphrase)
	if err != nil || !bytes.Equal(encSigner.PublicKey().Marshal(), o.ClientSigner.PublicKey().Marshal()) {
		t.Fatalf("encrypted key: %v", err)
	}
	plain, _ := os.ReadFile(o.ClientKeyPath)
	signer, err := ssh.ParsePrivateKey(plain)
	if err != nil {
		t.Fatal(err)
	}
	connect := func() error {
		c, err := ssh.Dial("tcp", o.Addr(), &ssh.ClientConfig{
			User: o.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: hostCheck, Timeout: 5 * time.Second,
		})
		if err != nil {
			return err
		}
		defer c.Close()
		s, err := c.NewSession()
		if err != nil {
			return err
		}
		defer s.Close()
		out, err := s.Output("id -un")
		if err == nil && string(out) != o.User+"\n" {
			err = fmt.Errorf("logged in as %q, want %q", out, o.User)
		}
		return err
	}
	if err := connect(); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 && o.User != sshtest.DefaultTestUser {
		t.Errorf("as root, log in as %s, not %s", sshtest.DefaultTestUser, o.User)
	}
	o.Stop()
	if err := connect(); err == nil {
		t.Fatal("connected to a stopped sshd")
	}
	o.Start()
	if err := connect(); err != nil {
		t.Fatalf("after restart: %v\n%s", err, o.Log())
	}
}

// TestStartOpenSSHConcurrently: several servers started at once (user
// creation and port picking are safe under concurrency).
func TestStartOpenSSHConcurrently(t *testing.T) {
	for i := 5; i < 8; i++ {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: i})
			c, err := net.DialTimeout("tcp", o.Addr(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		})
	}
}
