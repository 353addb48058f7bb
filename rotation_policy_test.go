package rediacc_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/internal/store/postgres/pgtest"
	"github.com/rediacc/rediacc/internal/vault/vaulttest"
	rssh "github.com/rediacc/rediacc/ssh"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// A queued rotation is a task like any other: priority 4, listed, queued
// once per key, run by the worker, audited; a cancelled one does nothing.
func TestKeyRotationTask(t *testing.T) {
	c, v := newKeyClient(t, nil)
	f := newKeyFixture(t, c, v, "ops", 41, 42)
	ctx := asOwner()
	before := keyOf(t, c, "ops", f.names[0])
	ts, err := c.SubmitKeyRotation(ctx, rediacc.KeyRotationOptions{Machine: f.names[1]})
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 1 || ts[0].Kind != rediacc.TaskKindKeyRotation || ts[0].Priority != rediacc.Low || ts[0].Status != rediacc.StatusPending ||
		ts[0].Team != "ops" || !strings.Contains(ts[0].Command, before.Fingerprint) {
		t.Fatalf("queued %+v", ts)
	}
	again, err := c.SubmitKeyRotation(ctx, rediacc.KeyRotationOptions{Key: before.ID})
	if err != nil || len(again) != 1 || again[0].ID != ts[0].ID {
		t.Fatalf("queueing the same key twice: %+v, %v", again, err)
	}
	listed, _ := c.List(ctx, rediacc.ListFilter{Team: "ops"})
	if len(listed) != 1 || listed[0].Kind != rediacc.TaskKindKeyRotation {
		t.Fatalf("list queue: %+v", listed)
	}
	if _, err := c.SubmitKeyRotation(ctx, rediacc.KeyRotationOptions{Machine: f.names[0], Resume: true}); !errors.Is(err, rediacc.ErrInvalidArgument) {
		t.Fatalf("queued resume: %v", err)
	}
	stop := runWorker(t, c)
	done := waitStatus(t, c, ts[0].ID, rediacc.StatusCompleted)
	stop()
	if done.Attempts != 1 || !strings.Contains(done.Stdout, "rotated") {
		t.Fatalf("rotation task: %+v", done)
	}
	after := keyOf(t, c, "ops", f.names[0])
	if after.Fingerprint == before.Fingerprint || after.Previous != before.Fingerprint {
		t.Fatalf("key after the task: %+v", after)
	}
	oldPEM, _ := os.ReadFile(f.keyPath)
	for i := range f.srvs {
		if err := f.login(t, i, oldPEM); !errors.Is(err, rediacc.ErrAuthFailed) {
			t.Fatalf("%s: old key after the task: %v", f.names[i], err)
		}
	}
	recs, err := c.AuditLog(ctx, rediacc.AuditFilter{Action: "key.generate"})
	if err != nil || len(recs) != 1 || recs[0].Actor != "alice" {
		t.Fatalf("key.generate records: %+v, %v", recs, err)
	}

	// Cancelled before it ran: nothing happens to the key.
	ts, err = c.SubmitKeyRotation(ctx, rediacc.KeyRotationOptions{Machine: f.names[0]})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Cancel(ctx, ts[0].ID); err != nil {
		t.Fatal(err)
	}
	stop = runWorker(t, c)
	time.Sleep(100 * time.Millisecond)
	stop()
	if k := keyOf(t, c, "ops", f.names[0]); k.Fingerprint != after.Fingerprint {
		t.Fatalf("a cancelled rotation rotated the key: %+v", k)
	}
}

// A worker whose actor may not rotate the team's keys fails the task at
// once (permission denied), changing nothing; an unreachable machine makes
// the task retry, and it completes once the machine is back.
func TestKeyRotationTaskPermissionAndRetry(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	c, v := newKeyClient(t, func(cfg *rediacc.Config) { cfg.Clock = clock })
	f := newKeyFixture(t, c, v, "dev", 43, 44)
	ctx := asOwner()
	if _, err := c.SetMember(ctx, "dev", "op", rediacc.RoleOperator); err != nil {
		t.Fatal(err)
	}
	ts, err := c.SubmitKeyRotation(ctx, rediacc.KeyRotationOptions{Machine: f.names[0]})
	if err != nil {
		t.Fatal(err)
	}
	before := keyOf(t, c, "dev", f.names[0])
	// The operator's worker may run dev's tasks but not rotate its keys.
	opCtx := rediacc.WithActor(ctxTimeout(t, time.Minute), "op")
	opDone := make(chan error, 1)
	go func() { opDone <- c.RunUntilEmpty(opCtx) }()
	done, err := c.Wait(ctx, ts[0].ID)
	if err != nil || done.Status != rediacc.StatusFailed || done.Attempts != 1 || !strings.Contains(done.Error, "may not rotate keys") {
		t.Fatalf("task run by an operator's worker: %+v, %v", done, err)
	}
	if _, err := c.RotateKey(rediacc.WithActor(ctx, "op"), rediacc.KeyRotationOptions{Machine: f.names[0]}); !errors.Is(err, rediacc.ErrPermissionDenied) {
		t.Fatalf("RotateKey as an operator: %v, want ErrPermissionDenied", err)
	}
	if k := keyOf(t, c, "dev", f.names[0]); k.Fingerprint != before.Fingerprint || k.Rotation != nil {
		t.Fatalf("denied rotations changed the key: %+v", k)
	}
	if err := <-opDone; err != nil { // the operator's worker stops once the queue is empty
		t.Fatal(err)
	}

	// One machine down: the attempt fails, the task waits for its retry.
	f.srvs[1].Stop()
	ts, err = c.SubmitKeyRotation(ctx, rediacc.KeyRotationOptions{Machine: f.names[0]})
	if err != nil {
		t.Fatal(err)
	}
	stop := runWorker(t, c)
	defer stop()
	deadline := time.Now().Add(time.Minute)
	for {
		cur := get(t, c, ts[0].ID)
		if cur.Status == rediacc.StatusPending && cur.Attempts == 1 {
			break
		}
		if cur.Status.Terminal() || time.Now().After(deadline) {
			t.Fatalf("after a failed attempt: %+v", cur)
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.vaultLogsIn(t, 0) // the machine that took the new key uses it (the other, down, keeps the old one)
	f.srvs[1].Start()
	clock.Advance(time.Hour) // past the retry delay
	done = waitStatus(t, c, ts[0].ID, rediacc.StatusCompleted)
	if done.Attempts != 2 || !strings.Contains(done.Stdout, "resumed") {
		t.Fatalf("retried rotation: %+v", done)
	}
	f.vaultLogsIn(t)
	f.othersIntact(t)
}

// waitIdle waits until no task is PENDING, ASSIGNED or PROCESSING.
func waitIdle(t *testing.T, c *rediacc.Client) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		ts, _ := c.List(asOwner(), rediacc.ListFilter{Statuses: []rediacc.Status{rediacc.StatusPending, rediacc.StatusAssigned, rediacc.StatusProcessing}})
		if len(ts) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("tasks still unfinished")
}

// The policy: a key past MaxAge is flagged in Keys and MachineStatus,
// exported as a gauge, reported in one key.overdue alert per check, and
// with Auto rotated by a queued task.
func TestKeyAgePolicy(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	sink := &alertSink{}
	c, v := newKeyClient(t, func(cfg *rediacc.Config) {
		cfg.Clock, cfg.Alerter = clock, sink
		cfg.KeyRotation = rediacc.KeyRotationPolicy{MaxAge: 90 * 24 * time.Hour, Auto: true, CheckInterval: 20 * time.Millisecond}
	})
	f := newKeyFixture(t, c, v, "web", 45)
	ctx := asOwner()
	if k := keyOf(t, c, "web", f.names[0]); k.Overdue || k.Age > time.Minute {
		t.Fatalf("new key: %+v", k)
	}
	clock.Advance(91 * 24 * time.Hour)
	k := keyOf(t, c, "web", f.names[0])
	if !k.Overdue || k.Age < 91*24*time.Hour {
		t.Fatalf("old key not overdue: %+v", k)
	}
	sts, err := c.MachineStatus(ctx, rediacc.MachineFilter{Team: "web"})
	if err != nil || len(sts) != 1 || !sts[0].KeyOverdue || sts[0].KeyFingerprint != k.Fingerprint {
		t.Fatalf("machine status: %+v, %v", sts, err)
	}
	srv := httptest.NewServer(c.MetricsHandler())
	defer srv.Close()
	metrics := scrape(t, srv.URL)
	labels := `{fingerprint="` + k.Fingerprint + `",team="web",team_id="` + k.TeamID + `"}`
	for _, want := range []string{`rediacc_ssh_key_age_seconds` + labels, `rediacc_ssh_key_overdue` + labels + ` 1`} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("metrics lack %s:\n%s", want, grepLines(metrics, "ssh_key"))
		}
	}
	if strings.Contains(metrics, "PRIVATE") {
		t.Fatal("key material in the metrics")
	}
	stop := runWorker(t, c)
	deadline := time.Now().Add(2 * time.Minute)
	for keyOf(t, c, "web", f.names[0]).Fingerprint == k.Fingerprint {
		if time.Now().After(deadline) {
			t.Fatal("the overdue key was never rotated")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // more checks: the new key is not overdue
	waitIdle(t, c)
	stop()
	// Stored by the check, delivered by the client's outbox dispatcher.
	if got := storedAlerts(t, c, rediacc.AlertKeyOverdue); len(got) != 1 {
		t.Fatalf("%d key.overdue alerts stored, want 1 (rate limited)", len(got))
	}
	waitFor(t, "the key.overdue alert's delivery", func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		for _, a := range sink.alerts {
			if a.Kind == rediacc.AlertKeyOverdue {
				return true
			}
		}
		return false
	})
	overdue := 0
	sink.mu.Lock()
	for _, a := range sink.alerts {
		if a.Kind == rediacc.AlertKeyOverdue {
			overdue++
			if !strings.Contains(a.Message, k.Fingerprint) || a.Team != "web" || strings.Contains(a.Message, "PRIVATE") {
				t.Errorf("alert %+v", a)
			}
		}
	}
	sink.mu.Unlock()
	if overdue != 1 {
		t.Fatalf("%d key.overdue alerts, want 1 (rate limited)", overdue)
	}
	after := keyOf(t, c, "web", f.names[0])
	if after.Overdue || after.Age > time.Minute {
		t.Fatalf("rotated key: %+v", after)
	}
	ts, _ := c.List(ctx, rediacc.ListFilter{Team: "web"})
	if len(ts) != 1 || ts[0].Kind != rediacc.TaskKindKeyRotation || ts[0].Status != rediacc.StatusCompleted || ts[0].Priority != rediacc.Low {
		for _, x := range ts {
			t.Logf("task %s %s %s attempts %d: %s %s", x.ID, x.Kind, x.Status, x.Attempts, x.Stdout, x.Error)
		}
		t.Fatalf("queue after the policy: %d tasks, want one completed rotation", len(ts))
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// One rotation of a key at a time, across clients sharing the store: a
// second rotation of a key being rotated is refused (ErrKeyRotationBusy),
// and the first one completes.
func TestOneRotationPerKeyAtATime(t *testing.T) {
	c, v, dir := newKeyClientDir(t, nil)
	f := newKeyFixture(t, c, v, "lock", 46)
	other, err := rediacc.New(asOwner(), rediacc.Config{DataDir: dir, Logger: testLogger(t), HealthInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	inside, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	restore := rediacc.SetRotationHook("lock", func(step, machine string) {
		if step == "install" {
			once.Do(func() { close(inside); <-release })
		}
	})
	defer restore()
	errc := make(chan error, 1)
	go func() {
		_, err := c.RotateKey(asOwner(), rediacc.KeyRotationOptions{Machine: f.names[0]})
		errc <- err
	}()
	<-inside
	_, err = other.RotateKey(asOwner(), rediacc.KeyRotationOptions{Machine: f.names[0]})
	if !errors.Is(err, rediacc.ErrKeyRotationBusy) || !strings.Contains(err.Error(), "alice") {
		t.Fatalf("second rotation while the first runs: %v, want ErrKeyRotationBusy naming its actor", err)
	}
	close(release)
	if err := <-errc; err != nil {
		t.Fatalf("first rotation: %v", err)
	}
	if _, err := other.RotateKey(asOwner(), rediacc.KeyRotationOptions{Machine: f.names[0]}); err != nil {
		t.Fatalf("rotation once the lock is free: %v", err)
	}
	f.vaultLogsIn(t)
}

// Clear errors naming the machine, and nothing changed: home directory
// missing, read-only authorized_keys (dry run and partial rotation), an
// sshd too old for Ed25519.
func TestRotationErrors(t *testing.T) {
	ctx := asOwner()
	t.Run("home directory missing", func(t *testing.T) {
		c, _ := newKeyClient(t, nil)
		srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 47, OwnUser: true})
		if _, err := c.AddMachine(ctx, rediacc.Machine{Name: "homeless", Host: srv.Host, Port: srv.Port, User: srv.User,
			IdentityFile: srv.ClientKeyPath, ImportIdentity: true, KnownHostsFile: srv.KnownHostsPath}); err != nil {
			t.Fatal(err)
		}
		os.RemoveAll(srv.Home)
		before, _ := os.ReadFile(srv.AuthorizedKeysPath)
		_, err := c.RotateKey(ctx, rediacc.KeyRotationOptions{Machine: "homeless"})
		var ke *rediacc.KeyRotationError
		if !errors.Is(err, rediacc.ErrHomeMissing) || !errors.As(err, &ke) || !strings.Contains(err.Error(), "homeless") {
			t.Fatalf("err = %v, want ErrHomeMissing naming the machine", err)
		}
		if after, _ := os.ReadFile(srv.AuthorizedKeysPath); !bytes.Equal(before, after) {
			t.Fatal("authorized_keys changed")
		}
		if k := keyOf(t, c, rediacc.DefaultTeam, "homeless"); k.Rotation != nil || k.Fingerprint != gossh.FingerprintSHA256(srv.ClientSigner.PublicKey()) {
			t.Fatalf("key after a failed rotation: %+v", k)
		}
	})
	t.Run("read-only authorized_keys", func(t *testing.T) {
		c, v := newKeyClient(t, nil)
		f := newKeyFixture(t, c, v, "ro", 48, 49)
		os.Chmod(f.srvs[1].AuthorizedKeysPath, 0o400)
		files := [][]byte{}
		for _, s := range f.srvs {
			b, _ := os.ReadFile(s.AuthorizedKeysPath)
			files = append(files, b)
		}
		res, err := c.RotateKey(ctx, rediacc.KeyRotationOptions{Machine: f.names[0], DryRun: true})
		if !errors.Is(err, rediacc.ErrAuthorizedKeysNotWritable) || len(res) != 1 || res[0].Machines[0].State != rediacc.KeyStateReady ||
			res[0].Machines[1].State != rediacc.KeyStateFailed || !strings.Contains(res[0].Machines[1].Error, f.names[1]) {
			t.Fatalf("dry run: %+v, %v", res, err)
		}
		for i, s := range f.srvs {
			if b, _ := os.ReadFile(s.AuthorizedKeysPath); !bytes.Equal(b, files[i]) {
				t.Fatalf("the dry run changed %s", f.names[i])
			}
		}
		before := keyOf(t, c, "ro", f.names[0])
		// The real thing: machine 0 takes the new key, machine 1 keeps the
		// old one; nothing is revoked.
		res, err = c.RotateKey(ctx, rediacc.KeyRotationOptions{Machine: f.names[0]})
		if !errors.Is(err, rediacc.ErrKeyRotationIncomplete) || !errors.Is(err, rediacc.ErrAuthorizedKeysNotWritable) || res[0].Action != rediacc.KeyActionUnfinished {
			t.Fatalf("rotation with a read-only machine: %+v, %v", res, err)
		}
		f.vaultLogsIn(t)
		k := keyOf(t, c, "ro", f.names[0])
		if k.Rotation == nil || k.Rotation.Machines[1].State != rediacc.KeyStateFailed || !strings.Contains(k.Rotation.Machines[1].Error, "not writable") {
			t.Fatalf("inventory of an unfinished rotation: %+v", k.Rotation)
		}
		// A plain rotation refuses to start over an unfinished one.
		if _, err := c.RotateKey(ctx, rediacc.KeyRotationOptions{Machine: f.names[0]}); !errors.Is(err, rediacc.ErrKeyRotationIncomplete) || !strings.Contains(err.Error(), "--resume") {
			t.Fatalf("rotating over an unfinished rotation: %v", err)
		}
		// Roll back while the old key is still authorized everywhere.
		res, err = c.RotateKey(ctx, rediacc.KeyRotationOptions{Machine: f.names[0], Rollback: true})
		if err != nil || res[0].Action != rediacc.KeyActionRolledBack || res[0].To != before.Fingerprint {
			t.Fatalf("rollback: %+v, %v", res, err)
		}
		os.Chmod(f.srvs[1].AuthorizedKeysPath, 0o600)
		for i, s := range f.srvs { // back to the file it was, byte for byte
			if b, _ := os.ReadFile(s.AuthorizedKeysPath); !bytes.Equal(b, files[i]) {
				t.Fatalf("%s after the rollback:\n%s\nwant\n%s", f.names[i], b, files[i])
			}
		}
		oldPEM, _ := os.ReadFile(f.keyPath)
		for i := range f.srvs {
			cur, _ := f.vaultKeys(t, i)
			if !bytes.Equal(cur, oldPEM) {
				t.Fatalf("%s: the vault's current key is not the old one after the rollback", f.names[i])
			}
		}
		if k := keyOf(t, c, "ro", f.names[0]); k.Fingerprint != before.Fingerprint || k.Rotation != nil {
			t.Fatalf("key after the rollback: %+v", k)
		}
		f.vaultLogsIn(t)
	})
	t.Run("sshd too old for ed25519", func(t *testing.T) {
		c, _ := newKeyClient(t, nil)
		signer, pemKey, err := rssh.GenerateKey(rssh.KeyRSA, 3072, "old rsa") // what an old sshd takes
		if err != nil {
			t.Fatal(err)
		}
		home := t.TempDir()
		if err := os.MkdirAll(filepath.Join(home, ".ssh"), 0o700); err != nil {
			t.Fatal(err)
		}
		ak := filepath.Join(home, ".ssh", "authorized_keys")
		if err := os.WriteFile(ak, gossh.MarshalAuthorizedKey(signer.PublicKey()), 0o600); err != nil {
			t.Fatal(err)
		}
		srv := sshtest.NewServer(t, sshtest.Options{Home: home, ServerVersion: "SSH-2.0-OpenSSH_6.2",
			RefuseKeyTypes: []string{gossh.KeyAlgoED25519}})
		key, known := filepath.Join(home, "id"), filepath.Join(home, "known_hosts")
		os.WriteFile(key, pemKey, 0o600)
		os.WriteFile(known, []byte(srv.KnownHostsLine()+"\n"), 0o600)
		if _, err := c.AddMachine(ctx, rediacc.Machine{Name: "ancient", Host: srv.Host(), Port: srv.Port(), User: "u",
			IdentityFile: key, ImportIdentity: true, KnownHostsFile: known}); err != nil {
			t.Fatal(err)
		}
		before, _ := os.ReadFile(ak)
		_, err = c.RotateKey(ctx, rediacc.KeyRotationOptions{Machine: "ancient"})
		if !errors.Is(err, rediacc.ErrKeyTypeUnsupported) || !strings.Contains(err.Error(), "ancient") || !strings.Contains(err.Error(), "OpenSSH_6.2") || !strings.Contains(err.Error(), "--type rsa") {
			t.Fatalf("err = %v, want ErrKeyTypeUnsupported naming the machine, its version and the way out", err)
		}
		if after, _ := os.ReadFile(ak); !bytes.Equal(before, after) {
			t.Fatal("authorized_keys changed")
		}
		res, err := c.RotateKey(ctx, rediacc.KeyRotationOptions{Machine: "ancient", Type: "rsa", Bits: 3072})
		if err != nil || res[0].Action != rediacc.KeyActionRotated {
			t.Fatalf("rotation to RSA: %+v, %v", res, err)
		}
		if k := keyOf(t, c, rediacc.DefaultTeam, "ancient"); k.Type != "ssh-rsa" || k.Bits != 3072 {
			t.Fatalf("rotated key: %+v", k)
		}
	})
	t.Run("ssh-agent key", func(t *testing.T) {
		c, _ := newKeyClient(t, nil)
		s, _, _ := sshtest.GenerateSigner(nil)
		fp := gossh.FingerprintSHA256(s.PublicKey())
		if _, err := c.AddMachine(ctx, rediacc.Machine{Name: "agented", Host: "127.0.0.1", Port: 22, User: "u", AgentKey: fp,
			HostKeyPolicy: rediacc.HostKeyInsecureIgnore}); err != nil {
			t.Fatal(err)
		}
		k := keyOf(t, c, rediacc.DefaultTeam, "agented")
		if k.Source != rediacc.KeyInAgent || k.Fingerprint != fp || k.Overdue {
			t.Fatalf("agent key in the inventory: %+v", k)
		}
		if _, err := c.RotateKey(ctx, rediacc.KeyRotationOptions{Machine: "agented"}); !errors.Is(err, rediacc.ErrInvalidArgument) || !strings.Contains(err.Error(), "ssh-agent") {
			t.Fatalf("rotating an agent key: %v", err)
		}
	})
	t.Run("bad options", func(t *testing.T) {
		c, _ := newKeyClient(t, nil)
		for _, o := range []rediacc.KeyRotationOptions{
			{}, {Machine: "a", Key: "b"}, {All: true}, {Machine: "a", Resume: true, Rollback: true},
			{Machine: "a", Type: "dsa"}, {Machine: "a", Type: "rsa", Bits: 1024}, {Machine: "a", Bits: 4096},
			{Machine: "a", Rollback: true, Type: "rsa"},
		} {
			if _, err := c.RotateKey(ctx, o); !errors.Is(err, rediacc.ErrInvalidArgument) {
				t.Errorf("RotateKey(%+v): %v, want ErrInvalidArgument", o, err)
			}
		}
		if _, err := c.RotateKey(ctx, rediacc.KeyRotationOptions{Machine: "nope"}); !errors.Is(err, rediacc.ErrNotFound) {
			t.Errorf("unknown machine: %v", err)
		}
		if _, err := c.RotateKey(ctx, rediacc.KeyRotationOptions{Key: "SHA256:nope"}); !errors.Is(err, rediacc.ErrNotFound) {
			t.Errorf("unknown key: %v", err)
		}
	})
}

// The same lock-out-proof rotation with the team vault in HashiCorp Vault
// (KV v2 versions): a rotation left unfinished by a read-only machine is
// rolled back to the previous version, then a new rotation completes.
func TestRotationWithHashiCorpVault(t *testing.T) {
	addr, token := vaulttest.StartDevServer(t)
	ctx := asOwner()
	v, err := rediacc.NewHashiCorpVault(ctx, rediacc.HashiCorpVaultConfig{Address: addr, Token: token, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, func(cfg *rediacc.Config) { cfg.Vault = v })
	f := newKeyFixture(t, c, v, "hv", 52, 53)
	before := keyOf(t, c, "hv", f.names[0])
	os.Chmod(f.srvs[1].AuthorizedKeysPath, 0o400)
	if _, err := c.RotateKey(ctx, rediacc.KeyRotationOptions{Machine: f.names[0]}); !errors.Is(err, rediacc.ErrKeyRotationIncomplete) {
		t.Fatalf("rotation with a read-only machine: %v", err)
	}
	f.vaultLogsIn(t)
	res, err := c.RotateKey(ctx, rediacc.KeyRotationOptions{Machine: f.names[0], Rollback: true})
	if err != nil || res[0].To != before.Fingerprint {
		t.Fatalf("rollback: %+v, %v", res, err)
	}
	os.Chmod(f.srvs[1].AuthorizedKeysPath, 0o600)
	f.vaultLogsIn(t)
	res, err = c.RotateKey(ctx, rediacc.KeyRotationOptions{Machine: f.names[0]})
	if err != nil || res[0].Action != rediacc.KeyActionRotated {
		t.Fatalf("rotation: %+v, %v", res, err)
	}
	oldPEM, _ := os.ReadFile(f.keyPath)
	for i := range f.srvs {
		cur, prev := f.vaultKeys(t, i)
		if err := f.login(t, i, cur); err != nil {
			t.Fatalf("%s: %v", f.names[i], err)
		}
		if !bytes.Equal(prev, oldPEM) {
			t.Fatalf("%s: Vault's previous version is not the old key", f.names[i])
		}
		if err := f.login(t, i, oldPEM); !errors.Is(err, rediacc.ErrAuthFailed) {
			t.Fatalf("%s: old key: %v", f.names[i], err)
		}
	}
	f.othersIntact(t)
}

// A rotation task cancelled while it runs stops at its next step: the task
// is CANCELLED, the vault's keys still log in, and a later rotation
// finishes the job.
func TestKeyRotationTaskCancelledWhileRunning(t *testing.T) {
	c, v := newKeyClient(t, nil)
	f := newKeyFixture(t, c, v, "cancel", 54, 55)
	ctx := asOwner()
	inside, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	restore := rediacc.SetRotationHook("cancel", func(step, machine string) {
		if step == "install" {
			once.Do(func() { close(inside); <-release })
		}
	})
	defer restore()
	ts, err := c.SubmitKeyRotation(ctx, rediacc.KeyRotationOptions{Machine: f.names[0]})
	if err != nil {
		t.Fatal(err)
	}
	stop := runWorker(t, c)
	defer stop()
	<-inside
	if _, err := c.Cancel(ctx, ts[0].ID); err != nil {
		t.Fatal(err)
	}
	close(release)
	done := waitStatus(t, c, ts[0].ID, rediacc.StatusCancelled)
	if done.Attempts > 1 {
		t.Fatalf("cancelled rotation: %+v", done)
	}
	f.vaultLogsIn(t)
	res := f.finish(t)
	oldPEM, _ := os.ReadFile(f.keyPath)
	f.complete(t, oldPEM, res)
}

// On PostgreSQL, shared by two clients (as by two hosts): one rotation of
// a key at a time across them, and a rotation queued by one is run by the
// other's worker.
func TestRotationOnPostgresAcrossWorkers(t *testing.T) {
	url := pgtest.Schema(t)
	dir := t.TempDir()
	v, err := rediacc.OpenLocalVault(filepath.Join(dir, "vault"), rediacc.LocalVaultOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	auditKey := filepath.Join(dir, "audit.key")
	open := func() *rediacc.Client {
		return newClient(t, func(cfg *rediacc.Config) {
			cfg.StoreURL, cfg.Vault, cfg.AuditKeyFile = url, v, auditKey
		})
	}
	a, b := open(), open()
	f := newKeyFixture(t, a, v, "pg", 56, 57)
	inside, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	restore := rediacc.SetRotationHook("pg", func(step, machine string) {
		if step == "install" {
			once.Do(func() { close(inside); <-release })
		}
	})
	errc := make(chan error, 1)
	go func() {
		_, err := a.RotateKey(asOwner(), rediacc.KeyRotationOptions{Machine: f.names[0]})
		errc <- err
	}()
	<-inside
	if _, err := b.RotateKey(asOwner(), rediacc.KeyRotationOptions{Machine: f.names[0]}); !errors.Is(err, rediacc.ErrKeyRotationBusy) {
		t.Fatalf("a second rotation on another client: %v, want ErrKeyRotationBusy", err)
	}
	close(release)
	if err := <-errc; err != nil {
		t.Fatalf("first rotation: %v", err)
	}
	restore()
	f.vaultLogsIn(t)
	rotated := keyOf(t, b, "pg", f.names[0])
	ts, err := a.SubmitKeyRotation(asOwner(), rediacc.KeyRotationOptions{Machine: f.names[1]})
	if err != nil {
		t.Fatal(err)
	}
	stop := runWorker(t, b)
	done := waitStatus(t, b, ts[0].ID, rediacc.StatusCompleted)
	stop()
	if k := keyOf(t, a, "pg", f.names[0]); k.Fingerprint == rotated.Fingerprint || done.Attempts != 1 {
		t.Fatalf("queued rotation run by the other worker: %+v, %+v", done, k)
	}
	f.vaultLogsIn(t)
	f.othersIntact(t)
}
