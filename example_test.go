package rediacc_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// exampleMachine starts an SSH server inside this process (it runs commands
// with the local shell) and writes its client key and known_hosts into dir.
func exampleMachine(dir string) (*sshtest.Server, rediacc.Machine) {
	signer, keyPEM, err := sshtest.GenerateSigner(nil)
	if err != nil {
		panic(err)
	}
	srv, err := sshtest.Start(sshtest.Options{AuthorizedKeys: []gossh.PublicKey{signer.PublicKey()}})
	if err != nil {
		panic(err)
	}
	key, known := filepath.Join(dir, "id_ed25519"), filepath.Join(dir, "known_hosts")
	_ = os.WriteFile(key, keyPEM, 0o600)
	_ = os.WriteFile(known, []byte(srv.KnownHostsLine()+"\n"), 0o600)
	return srv, rediacc.Machine{Name: "web-01", Host: srv.Host(), Port: srv.Port(), User: "deploy",
		IdentityFile: key, KnownHostsFile: known}
}

// exampleEnv is what the runnable examples share: a client on a fresh data
// dir (removed by close) and in-process SSH servers standing for machines.
type exampleEnv struct {
	dir     string
	ctx     context.Context
	c       *rediacc.Client
	servers []*sshtest.Server
}

// newExampleEnv opens a client as the owner "ops" on a temporary data dir;
// tune adjusts its Config.
func newExampleEnv(tune func(*rediacc.Config)) *exampleEnv {
	dir, err := os.MkdirTemp("", "rediacc-example-")
	if err != nil {
		panic(err)
	}
	e := &exampleEnv{dir: dir, ctx: rediacc.WithActor(context.Background(), "ops")}
	cfg := rediacc.Config{DataDir: dir, Logger: slog.New(slog.DiscardHandler), Health: rediacc.HealthConfig{Interval: -1}, PollInterval: 10 * time.Millisecond}
	if tune != nil {
		tune(&cfg)
	}
	if e.c, err = rediacc.New(e.ctx, cfg); err != nil {
		panic(err)
	}
	return e
}

// machine starts an in-process SSH server and registers it as name in
// team (when not "") with labels.
func (e *exampleEnv) machine(name, team string, labels map[string]string) {
	sub, err := os.MkdirTemp(e.dir, "machine-")
	if err != nil {
		panic(err)
	}
	srv, m := exampleMachine(sub)
	e.servers = append(e.servers, srv)
	m.Name, m.Team, m.Labels = name, team, labels
	if _, err := e.c.AddMachine(e.ctx, m); err != nil {
		panic(err)
	}
}

func (e *exampleEnv) close() {
	e.c.Close()
	for _, s := range e.servers {
		s.Close()
	}
	os.RemoveAll(e.dir)
}

// Submit a task, run the worker until the queue is empty, and wait for the
// result. Every call names its actor; the first one owns the new store.
func ExampleClient_Submit() {
	dir, _ := os.MkdirTemp("", "rediacc-example-")
	defer os.RemoveAll(dir)
	srv, machine := exampleMachine(dir)
	defer srv.Close()

	ctx := rediacc.WithActor(context.Background(), "ops")
	c, err := rediacc.New(ctx, rediacc.Config{DataDir: dir, Logger: slog.New(slog.DiscardHandler), Health: rediacc.HealthConfig{Interval: -1}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	if _, err := c.AddMachine(ctx, machine); err != nil {
		fmt.Println(err)
		return
	}
	task, err := c.Submit(ctx, rediacc.TaskSpec{
		Machine: "web-01", Priority: rediacc.Critical, Command: "echo webserver restarted",
		Retry: rediacc.RetryPolicy{RetryCount: 3, RetryDelay: 30 * time.Second},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := c.RunUntilEmpty(ctx); err != nil {
		fmt.Println(err)
		return
	}
	done, err := c.Wait(ctx, task.ID)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(done.Status, *done.ExitCode, done.Attempts, done.Stdout)
	// Output: COMPLETED 0 1 webserver restarted
}

// Cancel a task that is still waiting: it is CANCELLED at once.
func ExampleClient_Cancel() {
	dir, _ := os.MkdirTemp("", "rediacc-example-")
	defer os.RemoveAll(dir)
	srv, machine := exampleMachine(dir)
	defer srv.Close()
	ctx := rediacc.WithActor(context.Background(), "ops")
	c, _ := rediacc.New(ctx, rediacc.Config{DataDir: dir, Logger: slog.New(slog.DiscardHandler), Health: rediacc.HealthConfig{Interval: -1}})
	defer c.Close()
	_, _ = c.AddMachine(ctx, machine)
	task, _ := c.Submit(ctx, rediacc.TaskSpec{Machine: "web-01", Command: "sleep 60"})
	got, err := c.Cancel(ctx, task.ID)
	fmt.Println(got.Status, err)
	_, err = c.Submit(context.Background(), rediacc.TaskSpec{Machine: "web-01", Command: "true"})
	fmt.Println(err == rediacc.ErrNoActor)
	// Output:
	// CANCELLED <nil>
	// true
}

// Priorities parse from numbers or names; anything else is refused.
func ExampleParsePriority() {
	for _, s := range []string{"1", "low", "urgent"} {
		p, err := rediacc.ParsePriority(s)
		fmt.Println(int(p), p, err != nil)
	}
	// Output:
	// 1 critical false
	// 4 low false
	// 0 priority(0) true
}

// OpenStore opens a store by URL: "postgres://user@host/db" for a store
// that workers on many hosts share, "sqlite:/path/rediacc.db" for one host,
// or "memory".
func ExampleOpenStore() {
	st, err := rediacc.OpenStore(context.Background(), "memory")
	fmt.Println(st, err)
	_, err = rediacc.OpenStore(context.Background(), "mysql://db/rediacc")
	fmt.Println(errors.Is(err, rediacc.ErrInvalidArgument))
	// Output:
	// memory <nil>
	// true
}

// A failed task's error is a value: errors.Is and errors.As tell failures
// apart, and the kind is stored with the task ("errorKind" in its JSON).
func ExampleTask_Err() {
	e := newExampleEnv(nil)
	defer e.close()
	e.machine("web-01", "", nil)
	exit, _ := e.c.Submit(e.ctx, rediacc.TaskSpec{Machine: "web-01", Command: "exit 3", FailureAction: rediacc.FailureNone})
	_, _ = e.c.SetSecret(e.ctx, "default", "db/password", []byte("s3cret"), nil)
	secret, _ := e.c.Submit(e.ctx, rediacc.TaskSpec{Machine: "web-01", Command: "true", FailureAction: rediacc.FailureNone,
		Secrets: map[string]string{"DB_PASSWORD": "db/password"}})
	_ = e.c.DeleteSecret(e.ctx, "default", "db/password") // gone before the task runs
	if err := e.c.RunUntilEmpty(e.ctx); err != nil {
		panic(err)
	}
	for _, id := range []string{exit.ID, secret.ID} {
		t, _ := e.c.Get(e.ctx, id)
		err := t.Err()
		var ee *rediacc.ExitError
		switch {
		case errors.As(err, &ee):
			fmt.Println(t.Status, t.ErrorKind, "exit code", ee.Code)
		case errors.Is(err, rediacc.ErrSecretNotFound):
			fmt.Println(t.Status, t.ErrorKind, "add the secret to the team's vault")
		case errors.Is(err, rediacc.ErrConnect), errors.Is(err, rediacc.ErrTimeout):
			fmt.Println(t.Status, t.ErrorKind, "retry later")
		}
	}
	// Output:
	// FAILED exit exit code 3
	// FAILED secret_not_found add the secret to the team's vault
}
