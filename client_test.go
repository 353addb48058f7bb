package rediacc_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// testLogger discards logs unless REDIACC_TEST_LOG=1.
func testLogger(t testing.TB) *slog.Logger {
	if t != nil && os.Getenv("REDIACC_TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newClient opens a client on a fresh SQLite store in a temp dir.
func newClient(t testing.TB, tune func(*rediacc.Config)) *rediacc.Client {
	t.Helper()
	cfg := rediacc.Config{
		DataDir: t.TempDir(), Logger: testLogger(t), PollInterval: 20 * time.Millisecond,
		LeaseDuration: 3 * time.Second,
		// Health probes on, with their defaults: a machine is judged busy
		// on averages over minutes (never on one sample), and a busy
		// machine's gate ends with aging, so a loaded test host delays
		// nothing here.
	}
	if tune != nil {
		tune(&cfg)
	}
	c, err := rediacc.New(asOwner(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func realSSHD(t testing.TB, n int) *sshtest.OpenSSH {
	return sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: n})
}

// realMachine starts a real OpenSSH sshd on 127.0.0.n and registers it.
func realMachine(t testing.TB, c *rediacc.Client, name string, n int) *sshtest.OpenSSH {
	t.Helper()
	srv := realSSHD(t, n)
	if _, err := c.AddMachine(asOwner(), rediacc.Machine{
		Name: name, Host: srv.Host, Port: srv.Port, User: srv.User,
		IdentityFile: srv.ClientKeyPath, KnownHostsFile: srv.KnownHostsPath,
	}); err != nil {
		t.Fatal(err)
	}
	return srv
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(asOwner(), d)
	t.Cleanup(cancel)
	return ctx
}

func submit(t testing.TB, c *rediacc.Client, spec rediacc.TaskSpec) *rediacc.Task {
	t.Helper()
	task, err := c.Submit(asOwner(), spec)
	if err != nil {
		t.Fatal(err)
	}
	return task
}

func get(t testing.TB, c *rediacc.Client, id string) *rediacc.Task {
	t.Helper()
	task, err := c.Get(asOwner(), id)
	if err != nil {
		t.Fatal(err)
	}
	return task
}

// runWorker runs c's worker in the background until the test ends.
func runWorker(t testing.TB, c *rediacc.Client) (stop func()) {
	ctx, cancel := context.WithCancel(asOwner())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitStatus polls until the task reaches status s.
func waitStatus(t testing.TB, c *rediacc.Client, id string, s rediacc.Status) *rediacc.Task {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		task := get(t, c, id)
		if task.Status == s {
			return task
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s stayed %s, want %s", id, task.Status, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// noRemoteProcess waits until no process on this host matches marker.
func noRemoteProcess(t testing.TB, marker string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := exec.Command("pgrep", "-af", marker).Output()
		var live []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if l != "" && !strings.Contains(l, "pgrep") {
				live = append(live, l)
			}
		}
		if len(live) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("remote processes survive: %q", live)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestTasksOnTwoRealMachines(t *testing.T) {
	c := newClient(t, nil)
	realMachine(t, c, "web-01", 2)
	realMachine(t, c, "web-02", 3)
	ok := submit(t, c, rediacc.TaskSpec{Machine: "web-01", Command: `echo "hello $NAME"; echo oops >&2`, Env: map[string]string{"NAME": "it's me"}})
	fail := submit(t, c, rediacc.TaskSpec{Machine: "web-02", Command: "echo partial; exit 7", FailureAction: rediacc.FailureNone})
	host := submit(t, c, rediacc.TaskSpec{Machine: "web-02", Command: "echo $SSH_CONNECTION", Priority: rediacc.Critical})
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	got := get(t, c, ok.ID)
	if got.Status != rediacc.StatusCompleted || got.Stdout != "hello it's me\n" || got.Stderr != "oops\n" || *got.ExitCode != 0 || got.Attempts != 1 {
		t.Errorf("ok task: %+v", got)
	}
	if len(got.History) != 1 || got.History[0].Outcome != "succeeded" || got.StartedAt.IsZero() || got.CompletedAt.IsZero() {
		t.Errorf("ok task history: %+v", got.History)
	}
	got = get(t, c, fail.ID)
	if got.Status != rediacc.StatusFailed || got.ExitCode == nil || *got.ExitCode != 7 || got.Stdout != "partial\n" || got.Error == "" {
		t.Errorf("failing task: %+v", got)
	}
	got = get(t, c, host.ID)
	if !strings.Contains(got.Stdout, "127.0.0.3") {
		t.Errorf("task for web-02 ran on %q, want 127.0.0.3", got.Stdout)
	}
}

func TestRetryThenFailRaisesOneAlert(t *testing.T) {
	var mu sync.Mutex
	var alerts []rediacc.Alert
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.Alerter = rediacc.AlerterFunc(func(_ context.Context, a rediacc.Alert) error {
			mu.Lock()
			alerts = append(alerts, a)
			mu.Unlock()
			return nil
		})
	})
	realMachine(t, c, "m1", 2)
	task := submit(t, c, rediacc.TaskSpec{Machine: "m1", Command: "exit 7",
		Retry: rediacc.RetryPolicy{RetryCount: 2, RetryDelay: 10 * time.Millisecond}})
	conn := submit(t, c, rediacc.TaskSpec{Machine: "m1", Command: "exit 7", FailureAction: rediacc.FailureNone,
		Retry: rediacc.RetryPolicy{RetryCount: 2, RetryDelay: 10 * time.Millisecond, RetryOn: rediacc.RetryOnConnection}})
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	got := get(t, c, task.ID)
	if got.Status != rediacc.StatusFailed || got.Attempts != 3 || len(got.History) != 3 {
		t.Fatalf("task: status %s attempts %d history %+v", got.Status, got.Attempts, got.History)
	}
	for i, a := range got.History {
		if a.Number != i+1 || a.ExitCode == nil || *a.ExitCode != 7 || a.Outcome != "failed" || a.EndedAt.Before(a.StartedAt) {
			t.Errorf("attempt %d: %+v", i, a)
		}
	}
	if got := get(t, c, conn.ID); got.Status != rediacc.StatusFailed || got.Attempts != 1 {
		t.Errorf("connection-only policy retried a non-zero exit: %+v", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(alerts) != 1 || alerts[0].TaskID != task.ID || alerts[0].Attempts != 3 || *alerts[0].ExitCode != 7 || alerts[0].Machine != "m1" {
		t.Errorf("alerts: %+v", alerts)
	}
}

func TestTimeoutEndsRemoteCommand(t *testing.T) {
	c := newClient(t, nil)
	realMachine(t, c, "m1", 2)
	marker := "rediacc-timeout-marker-" + filepath.Base(t.TempDir())
	task := submit(t, c, rediacc.TaskSpec{Machine: "m1", Timeout: 500 * time.Millisecond, FailureAction: rediacc.FailureNone,
		Command: "sh -c 'sleep 300; echo " + marker + "' & sh -c 'sleep 301; echo " + marker + "'; wait"})
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	got := get(t, c, task.ID)
	if got.Status != rediacc.StatusFailed || got.History[0].Outcome != "timeout" || !strings.Contains(got.Error, "timeout") {
		t.Errorf("task: %+v", got)
	}
	noRemoteProcess(t, marker)
}

func TestCancel(t *testing.T) {
	c := newClient(t, nil)
	realMachine(t, c, "m1", 2)
	ctx := asOwner()
	marker := "rediacc-cancel-marker-" + filepath.Base(t.TempDir())
	running := submit(t, c, rediacc.TaskSpec{Machine: "m1", Command: "sh -c 'sleep 300; echo " + marker + "'; echo after"})
	runWorker(t, c)
	waitStatus(t, c, running.ID, rediacc.StatusProcessing)
	time.Sleep(200 * time.Millisecond) // let the remote command start
	if _, err := c.Cancel(ctx, running.ID); err != nil {
		t.Fatal(err)
	}
	got, err := c.Wait(ctxTimeout(t, 30*time.Second), running.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != rediacc.StatusCancelled || strings.Contains(got.Stdout, "after") {
		t.Errorf("cancelled task: %+v", got)
	}
	noRemoteProcess(t, marker)

	done := submit(t, c, rediacc.TaskSpec{Machine: "m1", Command: "true"})
	if got, err := c.Wait(ctxTimeout(t, 30*time.Second), done.ID); err != nil || got.Status != rediacc.StatusCompleted {
		t.Fatalf("wait: %+v %v", got, err)
	}
	if _, err := c.Cancel(ctx, done.ID); !errors.Is(err, rediacc.ErrNotCancellable) {
		t.Errorf("cancel completed: %v, want ErrNotCancellable", err)
	}
	if _, err := c.Cancel(ctx, "no-such-task"); !errors.Is(err, rediacc.ErrInvalidArgument) {
		t.Errorf("cancel of a malformed id: %v, want ErrInvalidArgument", err)
	}
	if _, err := c.Cancel(ctx, "00000000-0000-0000-0000-000000000000"); !errors.Is(err, rediacc.ErrNotFound) {
		t.Errorf("cancel unknown: %v, want ErrNotFound", err)
	}
}

func TestCancelPendingAtOnce(t *testing.T) {
	c := newClient(t, nil)
	realMachine(t, c, "m1", 2)
	task := submit(t, c, rediacc.TaskSpec{Machine: "m1", Command: "true"})
	got, err := c.Cancel(asOwner(), task.ID)
	if err != nil || got.Status != rediacc.StatusCancelled {
		t.Fatalf("cancel pending: %+v %v", got, err)
	}
	again, err := c.Cancel(asOwner(), task.ID)
	if err != nil || again.Status != rediacc.StatusCancelled {
		t.Fatalf("cancel twice: %+v %v", again, err)
	}
	if err := c.RunUntilEmpty(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := get(t, c, task.ID); got.Status != rediacc.StatusCancelled || got.Attempts != 0 {
		t.Errorf("cancelled pending task ran: %+v", got)
	}
}

func TestSecurityFailuresAreNotRetried(t *testing.T) {
	c := newClient(t, nil)
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 2})
	other := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 3})
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty_known_hosts")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// A known_hosts file that holds other's key under srv's address.
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
	add := func(name, known, key string) {
		if _, err := c.AddMachine(asOwner(), rediacc.Machine{Name: name, Host: srv.Host, Port: srv.Port, User: srv.User,
			IdentityFile: key, KnownHostsFile: known}); err != nil {
			t.Fatal(err)
		}
	}
	add("mismatch", forged, srv.ClientKeyPath)
	add("unknown", empty, srv.ClientKeyPath)
	add("wrongkey", srv.KnownHostsPath, other.ClientKeyPath)
	retry := rediacc.RetryPolicy{RetryCount: 3, RetryDelay: 10 * time.Millisecond}
	// What the stored error must say, so the user knows what went wrong.
	want := map[string]string{"mismatch": "does not match known_hosts", "unknown": "is not in known_hosts", "wrongkey": "refused all offered credentials"}
	ids := map[string]string{}
	for name := range want {
		ids[name] = submit(t, c, rediacc.TaskSpec{Machine: name, Command: "true", Retry: retry, FailureAction: rediacc.FailureNone}).ID
	}
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	for name, phrase := range want {
		got := get(t, c, ids[name])
		if got.Status != rediacc.StatusFailed || got.Attempts != 1 || got.ExitCode != nil {
			t.Errorf("%s: status %s attempts %d (want FAILED after 1 attempt)", name, got.Status, got.Attempts)
		}
		if !strings.Contains(got.Error, phrase) {
			t.Errorf("%s: error %q does not say %q", name, got.Error, phrase)
		}
	}
}

func TestAcceptNewHostKeyRecordsThenVerifies(t *testing.T) {
	c := newClient(t, nil)
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 2})
	known := filepath.Join(t.TempDir(), "known_hosts")
	if _, err := c.AddMachine(asOwner(), rediacc.Machine{Name: "tofu", Host: srv.Host, Port: srv.Port, User: srv.User,
		IdentityFile: srv.ClientKeyPath, KnownHostsFile: known, HostKeyPolicy: rediacc.HostKeyAcceptNew}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		task := submit(t, c, rediacc.TaskSpec{Machine: "tofu", Command: "true"})
		if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
			t.Fatal(err)
		}
		if got := get(t, c, task.ID); got.Status != rediacc.StatusCompleted {
			t.Fatalf("run %d: %+v", i, got)
		}
	}
	// The key is recorded in the store (every worker's), not in the file.
	lines, err := c.HostKeys(asOwner(), "tofu")
	if err != nil || len(lines) != 1 || !strings.Contains(lines[0], srv.Host) {
		t.Fatalf("host keys after trust on first use: %q %v", lines, err)
	}
	if _, err := os.Stat(known); !os.IsNotExist(err) {
		t.Fatalf("accept-new wrote %s: %v", known, err)
	}
}

func TestMoreTasksThanMaxSessionsOnOneMachine(t *testing.T) {
	c := newClient(t, func(cfg *rediacc.Config) { cfg.Concurrency = 30; cfg.PerMachineLimit = 30 })
	realMachine(t, c, "busy", 2)
	var ids []string
	for i := 0; i < 40; i++ {
		ids = append(ids, submit(t, c, rediacc.TaskSpec{Machine: "busy", Command: "sleep 0.3; echo ok"}).ID)
	}
	if err := c.RunUntilEmpty(ctxTimeout(t, 2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if got := get(t, c, id); got.Status != rediacc.StatusCompleted || got.Stdout != "ok\n" || got.Attempts != 1 {
			t.Errorf("task %s: %s attempts %d error %q", id, got.Status, got.Attempts, got.Error)
		}
	}
}

func TestSSHDRestartedMidRun(t *testing.T) {
	c := newClient(t, func(cfg *rediacc.Config) { cfg.Concurrency = 4 })
	srv := realMachine(t, c, "flappy", 2)
	var ids []string
	for i := 0; i < 8; i++ {
		ids = append(ids, submit(t, c, rediacc.TaskSpec{Machine: "flappy", Command: "sleep 0.5; echo done",
			Retry: rediacc.RetryPolicy{RetryCount: 10, RetryDelay: 200 * time.Millisecond, Backoff: rediacc.BackoffConstant}}).ID)
	}
	runWorker(t, c)
	waitStatus(t, c, ids[0], rediacc.StatusProcessing)
	srv.Stop()
	time.Sleep(700 * time.Millisecond)
	srv.Start()
	for _, id := range ids {
		got, err := c.Wait(ctxTimeout(t, time.Minute), id)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != rediacc.StatusCompleted || got.Stdout != "done\n" {
			t.Errorf("task %s: %+v", id, got)
		}
	}
	retried := 0
	for _, id := range ids {
		if get(t, c, id).Attempts > 1 {
			retried++
		}
	}
	if retried == 0 {
		t.Errorf("no task needed a retry although sshd was stopped mid-run")
	}
}

func TestShutdownDoesNotUseUpAnAttempt(t *testing.T) {
	c := newClient(t, nil)
	realMachine(t, c, "m1", 2)
	task := submit(t, c, rediacc.TaskSpec{Machine: "m1", Command: "sleep 1; echo finished"})
	stop := runWorker(t, c)
	waitStatus(t, c, task.ID, rediacc.StatusProcessing)
	stop()
	got := get(t, c, task.ID)
	if got.Status != rediacc.StatusPending || got.Attempts != 0 || len(got.History) != 1 || got.History[0].Outcome != "interrupted" {
		t.Fatalf("after shutdown: status %s attempts %d history %+v", got.Status, got.Attempts, got.History)
	}
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	got = get(t, c, task.ID)
	if got.Status != rediacc.StatusCompleted || got.Attempts != 1 || len(got.History) != 2 || got.History[1].Number != 1 {
		t.Errorf("after rerun: %+v", got)
	}
}

func TestSubmitValidationWritesNothing(t *testing.T) {
	c := newClient(t, nil)
	realMachine(t, c, "m1", 2)
	ctx := asOwner()
	bad := []rediacc.TaskSpec{
		{Machine: "m1", Command: ""},
		{Machine: "m1", Command: "true", Priority: 6},
		{Machine: "ghost", Command: "true"},
		{Machine: "m1", Command: "true", Timeout: -1},
		{Machine: "m1", Command: "printf 'A\x9bB\xffC'"},                          // invalid UTF-8: JSON would turn it into U+FFFD
		{Machine: "m1", Command: "echo $X", Env: map[string]string{"X": "a\xc3"}}, // a truncated sequence
	}
	for _, s := range bad {
		if _, err := c.Submit(ctx, s); !errors.Is(err, rediacc.ErrInvalidArgument) {
			t.Errorf("Submit(%+v) = %v, want ErrInvalidArgument", s, err)
		}
	}
	if _, err := c.Submit(ctx, rediacc.TaskSpec{Machine: "ghost", Command: "true"}); !errors.Is(err, rediacc.ErrUnknownMachine) {
		t.Errorf("unknown machine: %v", err)
	}
	if ts, err := c.List(ctx, rediacc.ListFilter{}); err != nil || len(ts) != 0 {
		t.Errorf("queue after invalid submits: %d tasks, %v", len(ts), err)
	}
}

func TestIdempotencyKey(t *testing.T) {
	c := newClient(t, nil)
	realMachine(t, c, "m1", 2)
	a := submit(t, c, rediacc.TaskSpec{Machine: "m1", Command: "true", IdempotencyKey: "deploy-42"})
	b := submit(t, c, rediacc.TaskSpec{Machine: "m1", Command: "false", IdempotencyKey: "deploy-42"})
	if a.ID != b.ID || b.Command != "true" {
		t.Errorf("second submit with the same key gave %s (%q), want %s", b.ID, b.Command, a.ID)
	}
	if ts, _ := c.List(asOwner(), rediacc.ListFilter{}); len(ts) != 1 {
		t.Errorf("%d tasks queued, want 1", len(ts))
	}
}

func TestListFilters(t *testing.T) {
	c := newClient(t, nil)
	realMachine(t, c, "m1", 2)
	realMachine(t, c, "m2", 3)
	submit(t, c, rediacc.TaskSpec{Machine: "m1", Command: "true", Priority: rediacc.Critical})
	submit(t, c, rediacc.TaskSpec{Machine: "m2", Command: "true"})
	ctx := asOwner()
	if ts, _ := c.List(ctx, rediacc.ListFilter{Machine: "m2"}); len(ts) != 1 || ts[0].Machine != "m2" {
		t.Errorf("machine filter: %v", ts)
	}
	if ts, _ := c.List(ctx, rediacc.ListFilter{Priority: rediacc.Critical}); len(ts) != 1 || ts[0].Priority != rediacc.Critical {
		t.Errorf("priority filter: %v", ts)
	}
	if ts, _ := c.List(ctx, rediacc.ListFilter{Statuses: []rediacc.Status{rediacc.StatusCompleted}}); len(ts) != 0 {
		t.Errorf("status filter: %v", ts)
	}
	depth, err := c.QueueDepth(ctx)
	if err != nil || depth[rediacc.Critical] != 1 || depth[rediacc.Normal] != 1 {
		t.Errorf("depth %v %v", depth, err)
	}
}

func TestAddMachineValidation(t *testing.T) {
	c := newClient(t, nil)
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 2})
	ctx := asOwner()
	base := rediacc.Machine{Name: "ok", Host: srv.Host, Port: srv.Port, User: srv.User, IdentityFile: srv.ClientKeyPath, KnownHostsFile: srv.KnownHostsPath}
	cases := map[string]struct {
		edit func(*rediacc.Machine)
		want error
	}{
		"bad name":       {func(m *rediacc.Machine) { m.Name = "Bad Name" }, rediacc.ErrInvalidMachine},
		"no host":        {func(m *rediacc.Machine) { m.Host = "" }, rediacc.ErrInvalidMachine},
		"bad port":       {func(m *rediacc.Machine) { m.Port = 70000 }, rediacc.ErrInvalidMachine},
		"no identity":    {func(m *rediacc.Machine) { m.IdentityFile = "" }, rediacc.ErrInvalidMachine},
		"missing key":    {func(m *rediacc.Machine) { m.IdentityFile = "/nonexistent/key" }, rediacc.ErrKeyFile},
		"not a key":      {func(m *rediacc.Machine) { m.IdentityFile = srv.KnownHostsPath }, rediacc.ErrKeyFile},
		"encrypted key":  {func(m *rediacc.Machine) { m.IdentityFile = srv.EncryptedClientKeyPath }, rediacc.ErrWrongPassphrase},
		"bad key policy": {func(m *rediacc.Machine) { m.HostKeyPolicy = "yolo" }, rediacc.ErrInvalidMachine},
	}
	for name, tc := range cases {
		m := base
		tc.edit(&m)
		if _, err := c.AddMachine(ctx, m); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	if ms, _ := c.Machines(ctx); len(ms) != 0 {
		t.Fatalf("invalid adds registered %d machines", len(ms))
	}
	if _, err := c.AddMachine(ctx, base); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddMachine(ctx, base); !errors.Is(err, rediacc.ErrExists) {
		t.Errorf("duplicate: %v", err)
	}
}

func TestEncryptedIdentity(t *testing.T) {
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 2})
	pass := srv.Passphrase
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.KeyPassphrase = func(context.Context, rediacc.Machine) ([]byte, error) { return pass, nil }
	})
	if _, err := c.AddMachine(asOwner(), rediacc.Machine{Name: "enc", Host: srv.Host, Port: srv.Port, User: srv.User,
		IdentityFile: srv.EncryptedClientKeyPath, KnownHostsFile: srv.KnownHostsPath}); err != nil {
		t.Fatal(err)
	}
	task := submit(t, c, rediacc.TaskSpec{Machine: "enc", Command: "echo unlocked"})
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := get(t, c, task.ID); got.Status != rediacc.StatusCompleted || got.Stdout != "unlocked\n" {
		t.Errorf("%+v", got)
	}
	pass = []byte("wrong")
	if _, err := c.AddMachine(asOwner(), rediacc.Machine{Name: "enc2", Host: srv.Host, Port: srv.Port, User: srv.User,
		IdentityFile: srv.EncryptedClientKeyPath, KnownHostsFile: srv.KnownHostsPath}); !errors.Is(err, rediacc.ErrWrongPassphrase) {
		t.Errorf("wrong passphrase: %v", err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// Regression: finished tasks used to block on the worker's wake-up channel
// once it was full, so RunUntilEmpty never returned.
func TestManyQuickTasksLowConcurrency(t *testing.T) {
	c := newClient(t, func(cfg *rediacc.Config) { cfg.Concurrency = 2 })
	realMachine(t, c, "m1", 2)
	for i := 0; i < 30; i++ {
		submit(t, c, rediacc.TaskSpec{Machine: "m1", Command: "true"})
	}
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	done, err := c.List(asOwner(), rediacc.ListFilter{Statuses: []rediacc.Status{rediacc.StatusCompleted}})
	if err != nil || len(done) != 30 {
		t.Fatalf("%d of 30 completed (%v)", len(done), err)
	}
}

// asOwner is a context acting as "alice", the first actor and so the owner
// of every test store.
func asOwner() context.Context { return rediacc.WithActor(context.Background(), "alice") }
