package rediacc_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// padCommand returns a command that makes, with env, a command line of
// exactly rediacc.MaxCommandLineBytes + extra bytes (the SDK's own measure
// is checked by probing: one byte more is refused, this one is not).
func padCommand(t *testing.T, c *rediacc.Client, env map[string]string, extra int) string {
	t.Helper()
	// Find the largest padding Submit accepts, by bisection; the probes name
	// a team that is not the machine's, which Submit refuses after the
	// limits, so nothing is queued.
	lo, hi := 0, rediacc.MaxCommandLineBytes
	for lo < hi {
		mid := (lo + hi + 1) / 2
		_, err := c.Submit(asOwner(), rediacc.TaskSpec{Machine: "m1", Command: "echo ok #" + strings.Repeat("x", mid), Env: env, Team: "not-the-machines"})
		if err == nil || !strings.Contains(err.Error(), "MaxCommandLineBytes") {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return "echo ok #" + strings.Repeat("x", lo+extra)
}

// Issue 9, kind 3: what cannot run is refused at submit with an error
// naming the limit, and nothing is queued; what fits runs on a real sshd.
func TestSubmitRefusesWhatCannotRun(t *testing.T) {
	c := newClient(t, nil)
	realMachine(t, c, "m1", 24)
	ctx := asOwner()
	cases := map[string]struct {
		spec rediacc.TaskSpec
		want string // in the error
	}{
		"the issue's 300 KB env value": {rediacc.TaskSpec{Command: "true", Env: map[string]string{"BIG": strings.Repeat("v", 300_000)}}, "MaxEnvValueBytes"},
		"quotes that grow past the command line": {rediacc.TaskSpec{Command: "true", Env: map[string]string{
			"Q1": strings.Repeat("'", 20_000), "Q2": strings.Repeat("'", 20_000)}}, "MaxCommandLineBytes"},
		"command and env together": {rediacc.TaskSpec{Command: strings.Repeat("x", 62_000), Env: map[string]string{
			"A": strings.Repeat("a", 62_000)}}, "MaxCommandLineBytes"},
		"too many variables":              {rediacc.TaskSpec{Command: "true", Env: manyVars(rediacc.MaxEnvVars + 1)}, "MaxEnvVars"},
		"a timeout past storable":         {rediacc.TaskSpec{Command: "true", Timeout: 200 * 365 * 24 * time.Hour}, "MaxTaskDuration"},
		"a retry delay of a century":      {rediacc.TaskSpec{Command: "true", Retry: rediacc.RetryPolicy{RetryCount: 1, RetryDelay: 100 * 365 * 24 * time.Hour}}, "MaxTaskDuration"},
		"a max delay of a century":        {rediacc.TaskSpec{Command: "true", Retry: rediacc.RetryPolicy{RetryCount: 1, MaxDelay: 100 * 365 * 24 * time.Hour}}, "MaxTaskDuration"},
		"an idempotency key with NUL":     {rediacc.TaskSpec{Command: "true", IdempotencyKey: "deploy\x00-1"}, "control characters"},
		"a long idempotency key":          {rediacc.TaskSpec{Command: "true", IdempotencyKey: strings.Repeat("k", 201)}, "MaxIdempotencyKeyBytes"},
		"a selector key no label has":     {rediacc.TaskSpec{Command: "true", Selector: map[string]string{"role web": "x"}}, "selector key"},
		"a selector value with a newline": {rediacc.TaskSpec{Command: "true", Selector: map[string]string{"role": "web\n"}}, "control characters"},
	}
	for name, tc := range cases {
		tc.spec.Machine = "m1"
		_, err := c.Submit(ctx, tc.spec)
		if !errors.Is(err, rediacc.ErrInvalidTask) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrInvalidTask naming %s", name, err, tc.want)
		}
		_, err = c.SubmitBatch(ctx, []rediacc.TaskSpec{{Machine: "m1", Command: "true"}, tc.spec})
		var be *rediacc.BatchError
		if !errors.As(err, &be) || be.Index != 1 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s in a batch: %v", name, err)
		}
	}
	if ts, err := c.List(ctx, rediacc.ListFilter{}); err != nil || len(ts) != 0 {
		t.Fatalf("refused submissions queued %d tasks (%v)", len(ts), err)
	}

	// At the limit: a command line of exactly MaxCommandLineBytes, with
	// quoted env values and a secret, runs.
	if _, err := c.SetSecret(ctx, rediacc.DefaultTeam, "limits/s", []byte("s3cr3t"), nil); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"Q": strings.Repeat("it's ", 1000), "V": strings.Repeat("v", rediacc.MaxEnvValueBytes)}
	cmd := padCommand(t, c, env, 0)
	if _, err := c.Submit(ctx, rediacc.TaskSpec{Machine: "m1", Command: cmd + "x", Env: env}); err == nil || !strings.Contains(err.Error(), "MaxCommandLineBytes") {
		t.Fatalf("one byte over the limit: %v", err)
	}
	task, err := c.Submit(ctx, rediacc.TaskSpec{Machine: "m1", Command: cmd + `; printf '%s' "$V" | wc -c; echo "$S"`, Env: env,
		Secrets: map[string]string{"S": "limits/s"}})
	if err == nil {
		t.Fatal("a command past the limit with a secret was accepted")
	}
	task, err = c.Submit(ctx, rediacc.TaskSpec{Machine: "m1", Command: cmd, Env: env})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := get(t, c, task.ID); got.Status != rediacc.StatusCompleted || got.Stdout != "ok\n" {
		t.Fatalf("the task at the limit: %s, stdout %q, stderr %q, error %s", got.Status, got.Stdout, got.Stderr, got.Error)
	}
}

func manyVars(n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[fmt.Sprintf("V%d", i)] = "x"
	}
	return m
}

// A secret too large for the machine's environment (values are only known
// when the task runs) fails the attempt at once, naming the secret, and is
// not retried.
func TestOversizedSecretFailsAtOnce(t *testing.T) {
	c := newClient(t, nil)
	realMachine(t, c, "m1", 25)
	ctx := asOwner()
	if _, err := c.SetSecret(ctx, rediacc.DefaultTeam, "big/cert", []byte(strings.Repeat("c", 200_000)), nil); err != nil {
		t.Fatal(err)
	}
	task := submit(t, c, rediacc.TaskSpec{Machine: "m1", Command: "true", Secrets: map[string]string{"CERT": "big/cert"},
		Retry: rediacc.RetryPolicy{RetryCount: 3, RetryDelay: time.Millisecond}})
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	got := get(t, c, task.ID)
	if got.Status != rediacc.StatusFailed || got.Attempts != 1 || !strings.Contains(got.Error, "CERT") ||
		!strings.Contains(got.Error, "MaxSecretEntryBytes") || strings.Contains(got.Error, "cccc") {
		t.Fatalf("status %s after %d attempts, error %q", got.Status, got.Attempts, got.Error)
	}
}

// Machine fields that could never be dialed or matched are refused when
// the machine is added.
func TestAddMachineRefusesWhatCannotWork(t *testing.T) {
	c := newClient(t, nil)
	ctx := asOwner()
	key := writeTestKey(t)
	dir := t.TempDir()
	base := rediacc.Machine{Name: "m", Host: "127.0.0.1", User: "deploy", IdentityFile: key, HostKeyPolicy: rediacc.HostKeyInsecureIgnore}
	for name, edit := range map[string]func(*rediacc.Machine){
		"host with a port":          func(m *rediacc.Machine) { m.Host = "web-01.example.com:2222" },
		"host with a space":         func(m *rediacc.Machine) { m.Host = "web 01" },
		"host with a shell char":    func(m *rediacc.Machine) { m.Host = "web;01" },
		"host too long":             func(m *rediacc.Machine) { m.Host = strings.Repeat("a.", 130) + "com" },
		"user with a space":         func(m *rediacc.Machine) { m.User = "de ploy" },
		"user with a newline":       func(m *rediacc.Machine) { m.User = "deploy\n" },
		"user starting with a dash": func(m *rediacc.Machine) { m.User = "-oProxyCommand=x" },
		"label no selector matches": func(m *rediacc.Machine) { m.Labels = map[string]string{"role": "web,db"} },
		"label key with '='":        func(m *rediacc.Machine) { m.Labels = map[string]string{"a=b": "c"} },
		"known_hosts is a directory": func(m *rediacc.Machine) {
			m.HostKeyPolicy, m.KnownHostsFile = rediacc.HostKeyKnownHosts, dir
		},
	} {
		m := base
		edit(&m)
		if _, err := c.AddMachine(ctx, m); !errors.Is(err, rediacc.ErrInvalidMachine) {
			t.Errorf("%s: %v, want ErrInvalidMachine", name, err)
		}
	}
	if ms, _ := c.Machines(ctx); len(ms) != 0 {
		t.Fatalf("refused machines were registered: %v", ms)
	}
	for i, host := range []string{"web-01.example.com", "10.0.0.5", "::1", "[fe80::1%eth0]", "_srv.example.com."} {
		m := base
		m.Name, m.Host = fmt.Sprintf("ok%d", i), host
		m.User = []string{"deploy", "svc@corp.example", `CORP\svc`, "host$", "a.b-c_d"}[i]
		m.Labels = map[string]string{"role": "web", "k8s.io/zone": "eu-1 (west)"}
		if _, err := c.AddMachine(ctx, m); err != nil {
			t.Errorf("host %q user %q: %v", m.Host, m.User, err)
		}
	}
}

// writeTestKey writes an unencrypted ed25519 private key and returns its
// path.
func writeTestKey(t *testing.T) string {
	t.Helper()
	_, pemKey, err := sshtest.GenerateSigner(nil)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "id")
	if err := os.WriteFile(p, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A Config whose lease would run out between heartbeats is refused by New
// (before: the worker's ticker panicked).
func TestTinyLeaseRefused(t *testing.T) {
	_, err := rediacc.New(asOwner(), rediacc.Config{Store: rediacc.NewMemoryStore(), LeaseDuration: time.Nanosecond})
	if !errors.Is(err, rediacc.ErrInvalidArgument) || !strings.Contains(err.Error(), "MinLeaseDuration") {
		t.Fatalf("New with a 1ns lease: %v", err)
	}
}
