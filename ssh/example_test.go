package ssh_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rediacc/rediacc/ssh"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// startExampleServer starts an in-process server and writes its
// known_hosts line; it returns a Target for it and a cleanup function.
func startExampleServer(name string) (ssh.Target, func()) {
	srv, err := sshtest.Start(sshtest.Options{})
	if err != nil {
		panic(err)
	}
	dir, _ := os.MkdirTemp("", "example")
	kh := filepath.Join(dir, "known_hosts")
	os.WriteFile(kh, []byte(srv.KnownHostsLine()+"\n"), 0o600)
	return ssh.Target{
			Name:    name,
			Host:    srv.Host(),
			Port:    srv.Port(),
			User:    "deploy",
			Auth:    []ssh.Auth{ssh.Signers(srv.ClientSigner())},
			HostKey: ssh.KnownHosts(kh),
		}, func() {
			srv.Close()
			os.RemoveAll(dir)
		}
}

func ExamplePool_Run() {
	web1, cleanup := startExampleServer("web-1")
	defer cleanup()

	pool := ssh.NewPool(ssh.Config{})
	defer pool.Close()

	res, err := pool.Run(context.Background(), web1, ssh.Command{
		Cmd: `echo "deploying $RELEASE"; echo "warning: cache cold" >&2`,
		Env: map[string]string{"RELEASE": "v1.2.3"},
	})
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Printf("exit %d\nstdout: %sstderr: %s", res.ExitCode, res.Stdout, res.Stderr)
	// Output:
	// exit 0
	// stdout: deploying v1.2.3
	// stderr: warning: cache cold
}

func ExamplePool_Run_secrets() {
	db1, cleanup := startExampleServer("db-1")
	defer cleanup()
	pool := ssh.NewPool(ssh.Config{})
	defer pool.Close()

	// The password travels on the session's stdin, never on a command line.
	res, err := pool.Run(context.Background(), db1, ssh.Command{
		Cmd:     `test -n "$PGPASSWORD" && echo "password set, $(printf %s "$PGPASSWORD" | wc -c) bytes"; cat`,
		Secrets: map[string][]byte{"PGPASSWORD": []byte("s3cr'et\n")},
		Stdin:   strings.NewReader("SELECT 1;\n"),
	})
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Printf("%s", res.Stdout)
	// Output:
	// password set, 8 bytes
	// SELECT 1;
}

func ExamplePool_Run_exitError() {
	web1, cleanup := startExampleServer("web-1")
	defer cleanup()
	pool := ssh.NewPool(ssh.Config{})
	defer pool.Close()

	res, err := pool.Run(context.Background(), web1, ssh.Command{Cmd: "echo disk full >&2; exit 28"})
	var exit *ssh.ExitError
	if errors.As(err, &exit) {
		fmt.Printf("exit %d, retryable %v, stderr %q\n", exit.Code, ssh.IsRetryable(err), res.Stderr)
	}
	// Output:
	// exit 28, retryable false, stderr "disk full\n"
}

func ExamplePool_Run_timeout() {
	web1, cleanup := startExampleServer("web-1")
	defer cleanup()
	pool := ssh.NewPool(ssh.Config{KillGrace: 200 * time.Millisecond})
	defer pool.Close()

	res, err := pool.Run(context.Background(), web1, ssh.Command{
		Cmd:     "echo working; sleep 60",
		Timeout: 300 * time.Millisecond,
	})
	fmt.Printf("timed out: %v, partial stdout: %q\n", errors.Is(err, ssh.ErrTimeout), res.Stdout)
	// Output:
	// timed out: true, partial stdout: "working\n"
}

func ExampleAcceptNewHostKey() {
	srv, _ := sshtest.Start(sshtest.Options{})
	defer srv.Close()
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	kh := filepath.Join(dir, ".ssh", "known_hosts")

	pool := ssh.NewPool(ssh.Config{})
	defer pool.Close()
	t := ssh.Target{
		Name: "new-box", Host: srv.Host(), Port: srv.Port(), User: "ops",
		Auth:    []ssh.Auth{ssh.Signers(srv.ClientSigner())},
		HostKey: ssh.AcceptNewHostKey(kh), // trust on first use, then verify
	}
	if _, err := pool.Run(context.Background(), t, ssh.Command{Cmd: "true"}); err != nil {
		fmt.Println(err)
		return
	}
	data, _ := os.ReadFile(kh)
	fmt.Println(string(data) == srv.KnownHostsLine()+"\n")
	// Output:
	// true
}

func ExampleIsRetryable() {
	pool := ssh.NewPool(ssh.Config{DialTimeout: time.Second})
	defer pool.Close()
	t := ssh.Target{
		Name: "down", Host: "127.0.0.1", Port: 1, User: "ops",
		Auth:    []ssh.Auth{ssh.Password("unused")},
		HostKey: ssh.InsecureIgnoreHostKey(),
	}
	_, err := pool.Run(context.Background(), t, ssh.Command{Cmd: "true"})
	fmt.Println(errors.Is(err, ssh.ErrConnect), ssh.IsRetryable(err))
	// Output:
	// true true
}

func ExampleShellQuote() {
	fmt.Println("grep -- " + ssh.ShellQuote("it's $HOME") + " notes.txt")
	// Output:
	// grep -- 'it'\''s $HOME' notes.txt
}
