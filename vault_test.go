package rediacc_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
)

func canary(t *testing.T) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "canary" + hex.EncodeToString(b) // 38 bytes
}

// grepDir reports the files under dir that contain needle.
func grepDir(t *testing.T, dir, needle string) []string {
	t.Helper()
	var hits []string
	_ = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(needle)) {
			hits = append(hits, p)
		}
		return nil
	})
	return hits
}

// syncBuffer is a bytes.Buffer safe for concurrent writers (slog, Output).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A secret named by a task reaches the command on a real sshd but never a
// command line, the output, the store, the logs, alerts or the audit trail.
func TestSecretsNeverLeak(t *testing.T) {
	secret := canary(t)
	var logs, live syncBuffer
	var alerts []rediacc.Alert
	var mu sync.Mutex
	dir := t.TempDir()
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.DataDir = dir
		cfg.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		cfg.Output = func(_ string, _ int, _ string, p []byte) { live.Write(p) }
		cfg.Alerter = rediacc.AlerterFunc(func(_ context.Context, a rediacc.Alert) error {
			mu.Lock()
			alerts = append(alerts, a)
			mu.Unlock()
			return nil
		})
	})
	srv := realMachine(t, c, "db-01", 7)
	ctx := asOwner()
	if _, err := c.SetSecret(ctx, rediacc.DefaultTeam, "db/password", []byte(secret), nil); err != nil {
		t.Fatal(err)
	}
	half := len(secret) / 2
	// The value printed whole, on stderr, and split across two output
	// chunks with a pause between them; then a failure that quotes it.
	cmd := `echo "pw=$DB_PASSWORD"; echo "$DB_PASSWORD" >&2; ` +
		`printf '%s' "$DB_PASSWORD" | head -c ` + itoa(half) + `; sleep 0.5; printf '%s\n' "$DB_PASSWORD" | tail -c +` + itoa(half+1) + `; ` +
		`sleep 1; echo "failing with $DB_PASSWORD" >&2; exit 3`
	task, err := c.Submit(ctx, rediacc.TaskSpec{Machine: "db-01", Command: cmd, Secrets: map[string]string{"DB_PASSWORD": "db/password"}})
	if err != nil {
		t.Fatal(err)
	}
	// Scan every process's command line while the task runs.
	stop := make(chan struct{})
	scans := make(chan int, 1)
	go func() {
		n := 0
		defer func() { scans <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, h := range cmdlinesContaining(secret) {
				t.Errorf("secret on a command line: %s", h)
			}
			n++
			time.Sleep(20 * time.Millisecond)
		}
	}()
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	close(stop)
	t.Logf("%d scans of /proc/*/cmdline", <-scans)
	got := get(t, c, task.ID)
	if got.Status != rediacc.StatusFailed || !strings.Contains(got.Stdout, "pw=***") || !strings.Contains(got.Stderr, "failing with ***") {
		t.Fatalf("task: status %s stdout %q stderr %q", got.Status, got.Stdout, got.Stderr)
	}
	if strings.Count(got.Stdout, "***") != 2 {
		t.Errorf("the split secret was not masked as one: %q", got.Stdout)
	}
	b, _ := got.MarshalJSON()
	recs, err := c.AuditLog(ctx, rediacc.AuditFilter{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	var trail bytes.Buffer
	if err := c.ExportAudit(ctx, &trail, rediacc.AuditFilter{Limit: 10000}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	alertText := ""
	for _, a := range alerts {
		alertText += a.Error
	}
	mu.Unlock()
	for where, text := range map[string]string{"task JSON": string(b), "logs": logs.String(), "live output": live.String(),
		"audit trail": trail.String(), "alert": alertText} {
		if strings.Contains(text, secret) {
			t.Errorf("secret leaked into the %s", where)
		}
	}
	if !strings.Contains(live.String(), "pw=***") {
		t.Errorf("live output not masked: %q", live.String())
	}
	if len(recs) == 0 || len(alerts) != 1 {
		t.Errorf("%d audit records, %d alerts", len(recs), len(alerts))
	}
	_ = c.Close()
	if hits := grepDir(t, dir, secret); len(hits) != 0 {
		t.Errorf("secret in plain text in %v", hits)
	}
	_ = srv
}

// cmdlinesContaining lists the processes whose command line holds needle.
func cmdlinesContaining(needle string) []string {
	var hits []string
	ms, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, m := range ms {
		b, err := os.ReadFile(m)
		if err == nil && bytes.Contains(b, []byte(needle)) {
			hits = append(hits, m+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return hits
}

func TestMissingSecretFailsAtOnce(t *testing.T) {
	c := newClient(t, nil)
	realMachine(t, c, "m1", 7)
	ctx := asOwner()
	spec := rediacc.TaskSpec{Machine: "m1", Command: "true", FailureAction: rediacc.FailureNone,
		Secrets: map[string]string{"API_TOKEN": "api/token"}, Retry: rediacc.RetryPolicy{RetryCount: 3, RetryDelay: 10 * time.Millisecond}}
	// Missing when submitted: refused at once (issue 9, kind 3), nothing queued.
	if _, err := c.Submit(ctx, spec); !errors.Is(err, rediacc.ErrSecretNotFound) || !strings.Contains(err.Error(), `"api/token"`) {
		t.Fatalf("a task naming a missing secret: %v", err)
	}
	if ts, _ := c.List(ctx, rediacc.ListFilter{}); len(ts) != 0 {
		t.Fatalf("the refused task was queued: %v", ts)
	}
	// Removed between submit and run: the task fails at once.
	if _, err := c.SetSecret(ctx, rediacc.DefaultTeam, "api/token", []byte("t0ken"), nil); err != nil {
		t.Fatal(err)
	}
	task, err := c.Submit(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteSecret(ctx, rediacc.DefaultTeam, "api/token"); err != nil {
		t.Fatal(err)
	}
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	got := get(t, c, task.ID)
	if got.Status != rediacc.StatusFailed || got.Attempts != 1 || !strings.Contains(got.Error, `"api/token"`) {
		t.Errorf("task: %s attempts %d error %q", got.Status, got.Attempts, got.Error)
	}
	if _, err := c.Submit(ctx, rediacc.TaskSpec{Machine: "m1", Command: "true", Secrets: map[string]string{"BAD NAME": "k"}}); !errors.Is(err, rediacc.ErrInvalidArgument) {
		t.Errorf("bad secret name: %v", err)
	}
	if _, err := c.Submit(ctx, rediacc.TaskSpec{Machine: "m1", Command: "true", Secrets: map[string]string{"K": "../escape"}}); !errors.Is(err, rediacc.ErrInvalidArgument) {
		t.Errorf("bad secret key: %v", err)
	}
}

// Vault access follows the roles: admins read and write, operators list
// and use secrets in tasks but cannot read values, viewers nothing.
func TestVaultRoles(t *testing.T) {
	f := newRoleFixture(t)
	c := f.c
	if _, err := c.SetSecret(as("owner"), "prod", "db/password", []byte("s3cret-value"), nil); err != nil {
		t.Fatal(err)
	}
	type op struct {
		name string
		run  func(ctx context.Context) error
		ok   []string
	}
	ops := []op{
		{"vault.write", func(ctx context.Context) error {
			_, err := c.SetSecret(ctx, "prod", "app/key", []byte("v"), nil)
			return err
		}, []string{"owner", "admin"}},
		{"vault.read", func(ctx context.Context) error { _, err := c.GetSecret(ctx, "prod", "db/password"); return err }, []string{"owner", "admin"}},
		{"vault.list", func(ctx context.Context) error { _, err := c.ListSecrets(ctx, "prod"); return err }, []string{"owner", "admin", "operator"}},
		{"vault.use", func(ctx context.Context) error {
			_, err := c.Submit(ctx, rediacc.TaskSpec{Machine: "prod-01", Command: "true", Secrets: map[string]string{"PW": "db/password"}})
			return err
		}, []string{"owner", "admin", "operator"}},
		{"vault.delete", func(ctx context.Context) error {
			if _, err := c.SetSecret(as("owner"), "prod", "tmp/x", []byte("v"), nil); err != nil {
				return err
			}
			return c.DeleteSecret(ctx, "prod", "tmp/x")
		}, []string{"owner", "admin"}},
	}
	for _, o := range ops {
		for _, user := range matrixUsers {
			want := false
			for _, a := range o.ok {
				want = want || a == user
			}
			err := o.run(as(user))
			denied := errors.Is(err, rediacc.ErrPermissionDenied)
			if o.name == "vault.use" && !prodMember[user] { // prod-01 is hidden from non-members (hidden.go)
				denied = errors.Is(err, rediacc.ErrUnknownMachine)
			}
			if want != (err == nil) || (!want && !denied) {
				t.Errorf("%s as %s: %v (want allowed=%v)", o.name, user, err, want)
			}
		}
	}
	// Vault reads and writes are audited with the key, never the value.
	var trail bytes.Buffer
	if err := c.ExportAudit(as("owner"), &trail, rediacc.AuditFilter{Action: "vault.", Limit: 10000}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(trail.String(), "db/password") || strings.Contains(trail.String(), "s3cret-value") {
		t.Errorf("vault audit trail: %s", trail.String())
	}
	// Check-and-set.
	if _, err := c.SetSecret(as("owner"), "prod", "db/password", []byte("x"), rediacc.CAS(7)); !errors.Is(err, rediacc.ErrVersionConflict) {
		t.Errorf("stale CAS: %v", err)
	}
}

// A machine's private key imported at add time lives in its team's vault;
// the store keeps only a reference.
func TestMachineIdentityInVault(t *testing.T) {
	dir := t.TempDir()
	c := newClient(t, func(cfg *rediacc.Config) { cfg.DataDir = dir })
	srv := realSSHD(t, 7)
	key, err := os.ReadFile(srv.ClientKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx := asOwner()
	m, err := c.AddMachine(ctx, rediacc.Machine{Name: "vaulted", Host: srv.Host, Port: srv.Port, User: srv.User,
		IdentityFile: srv.ClientKeyPath, ImportIdentity: true, KnownHostsFile: srv.KnownHostsPath})
	if err != nil {
		t.Fatal(err)
	}
	if m.IdentityFile != "" || m.ID == "" || m.IdentitySecret != "machines/"+m.ID+"/identity" {
		t.Fatalf("machine: %+v", m)
	}
	task := submit(t, c, rediacc.TaskSpec{Machine: "vaulted", Command: "echo via vault key"})
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := get(t, c, task.ID); got.Status != rediacc.StatusCompleted || got.Stdout != "via vault key\n" {
		t.Errorf("%+v", got)
	}
	_ = c.Close()
	body := strings.TrimSpace(strings.Split(string(key), "\n")[1]) // a line of the key's base64 body
	for _, f := range []string{"rediacc.db", "rediacc.db-wal"} {
		b, _ := os.ReadFile(filepath.Join(dir, f))
		if bytes.Contains(b, []byte(body)) {
			t.Errorf("private key material in %s", f)
		}
	}
}

// A vault-held identity follows its machine to another team.
func TestMovedMachineKeepsVaultIdentity(t *testing.T) {
	c := newClient(t, nil)
	srv := realSSHD(t, 7)
	ctx := asOwner()
	if _, err := c.CreateTeam(ctx, "prod", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddMachine(ctx, rediacc.Machine{Name: "mover", Host: srv.Host, Port: srv.Port, User: srv.User,
		IdentityFile: srv.ClientKeyPath, ImportIdentity: true, KnownHostsFile: srv.KnownHostsPath}); err != nil {
		t.Fatal(err)
	}
	if err := c.MoveMachine(ctx, "mover", "prod"); err != nil {
		t.Fatal(err)
	}
	task := submit(t, c, rediacc.TaskSpec{Machine: "mover", Command: "echo moved"})
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := get(t, c, task.ID); got.Status != rediacc.StatusCompleted {
		t.Fatalf("task after move: %s %s", got.Status, got.Error)
	}
	if keys, _ := c.ListSecrets(ctx, rediacc.DefaultTeam); len(keys) != 0 {
		t.Errorf("identity left in the old team's vault: %v", keys)
	}
}

// Machine identities cannot be handed to tasks as secrets, and go with
// their machine.
func TestMachineIdentityIsNotATaskSecret(t *testing.T) {
	c := newClient(t, nil)
	srv := realSSHD(t, 7)
	ctx := asOwner()
	if _, err := c.AddMachine(ctx, rediacc.Machine{Name: "m1", Host: srv.Host, Port: srv.Port, User: srv.User,
		IdentityFile: srv.ClientKeyPath, ImportIdentity: true, KnownHostsFile: srv.KnownHostsPath}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Submit(ctx, rediacc.TaskSpec{Machine: "m1", Command: "true", Secrets: map[string]string{"K": "machines/m1/identity"}}); !errors.Is(err, rediacc.ErrInvalidArgument) {
		t.Errorf("a machine identity as a task secret: %v", err)
	}
	// A failed add leaves no key behind.
	if _, err := c.AddMachine(ctx, rediacc.Machine{Name: "m2", Team: "ghost", Host: srv.Host, Port: srv.Port, User: srv.User,
		IdentityFile: srv.ClientKeyPath, ImportIdentity: true, KnownHostsFile: srv.KnownHostsPath}); !errors.Is(err, rediacc.ErrNotFound) {
		t.Errorf("add to a missing team: %v", err)
	}
	if err := c.RemoveMachine(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	if keys, _ := c.ListSecrets(ctx, rediacc.DefaultTeam); len(keys) != 0 {
		t.Errorf("keys left after remove: %v", keys)
	}
}

// Close stops a worker that is still running and waits for it.
func TestCloseStopsRunningWorker(t *testing.T) {
	c := newClient(t, nil)
	realMachine(t, c, "m1", 7)
	task := submit(t, c, rediacc.TaskSpec{Machine: "m1", Command: "sleep 30"})
	ran := make(chan error, 1)
	go func() { ran <- c.Run(asOwner()) }()
	waitStatus(t, c, task.ID, rediacc.StatusProcessing)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ran:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	default:
		t.Fatal("Close returned before Run")
	}
}

// A passphrase vault opened without its passphrase is refused; no new key
// file is made for it.
func TestLocalVaultWithoutItsPassphrase(t *testing.T) {
	dir := t.TempDir()
	v, err := rediacc.OpenLocalVault(filepath.Join(dir, "vault"), rediacc.LocalVaultOptions{Passphrase: []byte("correct horse"), ScryptWorkFactor: 10})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Put(context.Background(), "prod", "db/password", []byte("x"), rediacc.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	_ = v.Close()
	if _, err := rediacc.OpenLocalVault(filepath.Join(dir, "vault"), rediacc.LocalVaultOptions{}); !errors.Is(err, rediacc.ErrWrongPassphrase) || !strings.Contains(err.Error(), "passphrase the vault was created with") {
		t.Errorf("open without the passphrase: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "vault.key")); !os.IsNotExist(err) {
		t.Errorf("a key file was created for a passphrase vault: %v", err)
	}
	if _, err := rediacc.OpenLocalVault(filepath.Join(dir, "vault"), rediacc.LocalVaultOptions{Passphrase: []byte("wrong")}); !errors.Is(err, rediacc.ErrWrongPassphrase) {
		t.Errorf("wrong passphrase: %v", err)
	}
}
