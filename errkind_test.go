package rediacc_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// Every way a task fails reaches the caller as a value: Task.Err matches
// its sentinel with errors.Is (or gives an *ExitError to errors.As), the
// kind is stored (Task.ErrorKind, "errorKind" in the JSON form, on each
// attempt) and alerts carry it too — no English to parse.
func TestTaskErrKinds(t *testing.T) {
	var mu sync.Mutex
	alerts := map[string]rediacc.Alert{}
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.Alerter = rediacc.AlerterFunc(func(_ context.Context, a rediacc.Alert) error {
			mu.Lock()
			alerts[a.TaskID] = a
			mu.Unlock()
			return nil
		})
	})
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 5})
	other := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 6})
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty_known_hosts")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	forged := filepath.Join(dir, "forged_known_hosts")
	line, err := os.ReadFile(other.KnownHostsPath)
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(line))
	fields[0] = "[" + srv.Host + "]:" + itoa(srv.Port)
	if err := os.WriteFile(forged, []byte(strings.Join(fields, " ")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	add := func(name string, port int, known, key string) {
		if _, err := c.AddMachine(asOwner(), rediacc.Machine{Name: name, Host: srv.Host, Port: port, User: srv.User,
			IdentityFile: key, KnownHostsFile: known}); err != nil {
			t.Fatal(err)
		}
	}
	add("ok", srv.Port, srv.KnownHostsPath, srv.ClientKeyPath)
	add("mismatch", srv.Port, forged, srv.ClientKeyPath)
	add("unknown", srv.Port, empty, srv.ClientKeyPath)
	add("wrongkey", srv.Port, srv.KnownHostsPath, other.ClientKeyPath)
	add("down", freeTCPPort(t, srv.Host), srv.KnownHostsPath, srv.ClientKeyPath)
	if _, err := c.AddMachine(asOwner(), rediacc.Machine{Name: "oldcipher", Host: srv.Host, Port: srv.Port, User: srv.User,
		IdentityFile: srv.ClientKeyPath, KnownHostsFile: srv.KnownHostsPath,
		Algorithms: rediacc.SSHAlgorithms{Ciphers: []string{"aes128-cbc"}}}); err != nil { // OpenSSH 9 offers no CBC cipher
		t.Fatal(err)
	}

	type check func(t *testing.T, err error)
	is := func(target error) check {
		return func(t *testing.T, err error) {
			if !errors.Is(err, target) {
				t.Errorf("errors.Is(%v, %v) = false", err, target)
			}
		}
	}
	exit := func(code int, signal string) check {
		return func(t *testing.T, err error) {
			var ee *rediacc.ExitError
			if !errors.As(err, &ee) || ee.Code != code || ee.Signal != signal {
				t.Errorf("errors.As(%v, *ExitError) = %+v, want code %d signal %q", err, ee, code, signal)
			}
		}
	}
	cases := []struct {
		name    string
		spec    rediacc.TaskSpec
		kind    rediacc.ErrorKind
		outcome rediacc.Outcome
		check   check
	}{
		{"exit", rediacc.TaskSpec{Machine: "ok", Command: "echo partial; exit 3"}, rediacc.ErrorKindExit, rediacc.OutcomeFailed, exit(3, "")},
		{"signal", rediacc.TaskSpec{Machine: "ok", Command: "kill -TERM $$; sleep 5"}, rediacc.ErrorKindExit, rediacc.OutcomeFailed, exit(143, "TERM")},
		{"timeout", rediacc.TaskSpec{Machine: "ok", Command: "sleep 30", Timeout: 300 * time.Millisecond}, rediacc.ErrorKindTimeout, rediacc.OutcomeTimeout, is(rediacc.ErrTimeout)},
		{"host key mismatch", rediacc.TaskSpec{Machine: "mismatch", Command: "true"}, rediacc.ErrorKindHostKeyMismatch, rediacc.OutcomeFailed, is(rediacc.ErrHostKeyMismatch)},
		{"unknown host key", rediacc.TaskSpec{Machine: "unknown", Command: "true"}, rediacc.ErrorKindUnknownHostKey, rediacc.OutcomeFailed, is(rediacc.ErrUnknownHostKey)},
		{"auth failed", rediacc.TaskSpec{Machine: "wrongkey", Command: "true"}, rediacc.ErrorKindAuthFailed, rediacc.OutcomeFailed, is(rediacc.ErrAuthFailed)},
		{"connect", rediacc.TaskSpec{Machine: "down", Command: "true"}, rediacc.ErrorKindConnect, rediacc.OutcomeFailed, is(rediacc.ErrConnect)},
		{"algorithm negotiation", rediacc.TaskSpec{Machine: "oldcipher", Command: "true"}, rediacc.ErrorKindAlgorithmNegotiation,
			rediacc.OutcomeFailed, is(rediacc.ErrAlgorithmNegotiation)},
		{"secret not found", rediacc.TaskSpec{Machine: "ok", Command: "true", Secrets: map[string]string{"PW": "db/missing"}},
			rediacc.ErrorKindSecretNotFound, rediacc.OutcomeFailed, is(rediacc.ErrSecretNotFound)},
	}
	if _, err := c.SetSecret(asOwner(), "default", "db/missing", []byte("pw"), nil); err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for _, tc := range cases {
		tc.spec.Priority = rediacc.High // a busy-judged test host holds no priority 1–2 work
		ids[tc.name] = submit(t, c, tc.spec).ID
	}
	okID := submit(t, c, rediacc.TaskSpec{Machine: "ok", Command: "echo fine", Priority: rediacc.High}).ID
	// The missing secret was there at submit (a missing one is refused
	// then) and deleted before the task ran.
	if err := c.DeleteSecret(asOwner(), "default", "db/missing"); err != nil {
		t.Fatal(err)
	}
	if err := c.RunUntilEmpty(ctxTimeout(t, 2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := get(t, c, ids[tc.name])
			err := got.Err()
			if got.Status != rediacc.StatusFailed || err == nil || err.Error() != got.Error || got.ErrorKind != tc.kind {
				t.Fatalf("task %s, ErrorKind %q (want %q), Err() = %v, Error %q", got.Status, got.ErrorKind, tc.kind, err, got.Error)
			}
			tc.check(t, err)
			last := got.History[len(got.History)-1]
			if last.Outcome != tc.outcome || last.ErrorKind != tc.kind {
				t.Errorf("last attempt: outcome %q kind %q", last.Outcome, last.ErrorKind)
			}
			tc.check(t, last.Err())
			b, _ := json.Marshal(got)
			var j struct {
				ErrorKind string                       `json:"errorKind"`
				History   []struct{ ErrorKind string } `json:"history"`
			}
			if json.Unmarshal(b, &j) != nil || j.ErrorKind != string(tc.kind) || j.History[len(j.History)-1].ErrorKind != string(tc.kind) {
				t.Errorf("JSON form: %s", b)
			}
			var back rediacc.Task
			if err := json.Unmarshal(b, &back); err != nil || back.ErrorKind != tc.kind {
				t.Errorf("JSON round trip: %v, kind %q", err, back.ErrorKind)
			} else {
				tc.check(t, back.Err())
			}
			mu.Lock()
			a, ok := alerts[got.ID]
			mu.Unlock()
			if !ok || a.ErrorKind != tc.kind {
				t.Fatalf("alert %+v", a)
			}
			tc.check(t, a.Err())
		})
	}
	if got := get(t, c, okID); got.Err() != nil || got.ErrorKind != "" || got.History[0].Err() != nil {
		t.Errorf("succeeded task: Err() = %v, kind %q", got.Err(), got.ErrorKind)
	}

	// A cancelled task.
	running := submit(t, c, rediacc.TaskSpec{Machine: "ok", Command: "sleep 30", Priority: rediacc.High})
	runWorker(t, c)
	waitStatus(t, c, running.ID, rediacc.StatusProcessing)
	if _, err := c.Cancel(asOwner(), running.ID); err != nil {
		t.Fatal(err)
	}
	got, err := c.Wait(ctxTimeout(t, 30*time.Second), running.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Err(); got.Status != rediacc.StatusCancelled || got.ErrorKind != rediacc.ErrorKindCancelled ||
		!errors.Is(err, rediacc.ErrCancelled) || !errors.Is(err, rediacc.ErrTaskCancelled) {
		t.Errorf("cancelled task: status %s kind %q Err() %v", got.Status, got.ErrorKind, err)
	}
}

// Records written before kinds were stored still give typed errors.
func TestTaskErrWithoutStoredKind(t *testing.T) {
	code := 7
	for _, tc := range []struct {
		task  rediacc.Task
		check func(error) bool
	}{
		{rediacc.Task{Error: "exit 7", ExitCode: &code}, func(err error) bool {
			var ee *rediacc.ExitError
			return errors.As(err, &ee) && ee.Code == 7
		}},
		{rediacc.Task{Error: "timed out", History: []rediacc.Attempt{{Error: "timed out", Outcome: rediacc.OutcomeTimeout, EndedAt: time.Now()}}},
			func(err error) bool { return errors.Is(err, rediacc.ErrTimeout) }},
		{rediacc.Task{Error: "something"}, func(err error) bool { return err != nil && err.Error() == "something" }},
		{rediacc.Task{}, func(err error) bool { return err == nil }},
	} {
		if err := tc.task.Err(); !tc.check(err) {
			t.Errorf("%+v: Err() = %v", tc.task, err)
		}
	}
}

// freeTCPPort returns a port nothing listens on at host. It must probe
// host itself: a port free on 127.0.0.1 may be a server's port on another
// loopback address (TestTaskErrKinds' "down" machine once reached srv).
func freeTCPPort(t testing.TB, host string) int {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}
