package rediacc_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/internal/vault/vaulttest"
	rssh "github.com/rediacc/rediacc/ssh"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// Short-lived SSH certificates (issue 10 §3) on real sshds with
// TrustedUserCAKeys, 127.0.0.90-99.

// caMachine starts a real sshd trusting team's CAs (the text
// TeamSSHCA.TrustedUserCAKeys prints) and registers it with auth ssh-ca.
func caMachine(t *testing.T, c *rediacc.Client, name, team string, n int, ca rediacc.TeamSSHCA) *sshtest.OpenSSH {
	t.Helper()
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: n})
	o.SetTrustedUserCAKeys(ca.TrustedUserCAKeys())
	if _, err := c.AddMachine(asOwner(), rediacc.Machine{Name: name, Team: team, Host: o.Host, Port: o.Port, User: o.User,
		Auth: rediacc.AuthSSHCA, KnownHostsFile: o.KnownHostsPath}); err != nil {
		t.Fatal(err)
	}
	return o
}

func waitLog(t *testing.T, o *sshtest.OpenSSH, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := rx.FindStringSubmatch(o.Log()); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd's log has no line matching %q:\n%s", re, o.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSSHCATasks: a machine with no key of its own runs tasks with
// certificates signed for its user by the team's CA; sshd's log ties each
// login to the worker and the task; the CA key never leaves the vault;
// the signatures are audited in aggregate.
func TestSSHCATasks(t *testing.T) {
	dir := t.TempDir()
	// No background health probe: a task would reuse its pooled connection
	// (key ID probe=health) instead of opening one that names the task.
	c := newClient(t, func(cfg *rediacc.Config) { cfg.DataDir = dir; cfg.Health.Interval = -1 })
	ca, err := c.InitSSHCA(asOwner(), rediacc.DefaultTeam, rediacc.SSHCAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ca.CertTTL != 5*time.Minute || len(ca.CAs) != 1 || ca.Active().Kind != rediacc.SSHCAKey || !strings.HasPrefix(ca.Active().PublicKey, "ssh-ed25519 ") {
		t.Fatalf("init: %+v", ca)
	}
	if _, err := c.InitSSHCA(asOwner(), rediacc.DefaultTeam, rediacc.SSHCAOptions{}); !errors.Is(err, rediacc.ErrExists) {
		t.Fatalf("second init: %v, want ErrExists", err)
	}
	o := caMachine(t, c, "ca-01", "", 90, ca)
	m, err := c.Machine(asOwner(), "ca-01")
	if err != nil || m.Auth != rediacc.AuthSSHCA || m.IdentityFile != "" || m.IdentitySecret != "" || m.UseAgent {
		t.Fatalf("machine %+v, %v: want ssh-ca without a key", m, err)
	}
	runWorker(t, c)
	var ids []string
	for i := range 3 {
		ids = append(ids, submit(t, c, rediacc.TaskSpec{Machine: "ca-01", Command: fmt.Sprintf("echo run-%d; id -un", i)}).ID)
	}
	for i, id := range ids {
		task := waitStatus(t, c, id, rediacc.StatusCompleted)
		if want := fmt.Sprintf("run-%d\n%s\n", i, o.User); string(task.Stdout) != want || task.Attempts != 1 {
			t.Errorf("task %d: stdout %q attempts %d", i, task.Stdout, task.Attempts)
		}
	}
	// sshd logged the certificate: key ID with worker and task, CA.
	line := waitLog(t, o, `Accepted publickey for `+o.User+` .*ED25519-CERT \S+ ID rediacc worker=(\S+) task=(\S+) machine=ca-01 \(serial (\d+)\) CA ED25519 (\S+)`)
	if line[1] != c.WorkerID() || !strings.Contains(strings.Join(ids, " "), line[2]) || line[4] != ca.Active().Fingerprint {
		t.Errorf("sshd log line %q: want worker %s, one of the tasks %v, CA %s", line[0], c.WorkerID(), ids, ca.Active().Fingerprint)
	}

	// The CA's keys are not reachable through the vault API, nor by tasks.
	v, _ := c.ListSecrets(asOwner(), rediacc.DefaultTeam)
	var caKey string
	for _, k := range v {
		if strings.HasPrefix(k, "ssh-ca/") && strings.HasSuffix(k, "/key") {
			caKey = k
		}
	}
	if caKey == "" {
		t.Fatalf("vault keys %v: no CA key", v)
	}
	if _, err := c.GetSecret(asOwner(), rediacc.DefaultTeam, caKey); !errors.Is(err, rediacc.ErrInvalidArgument) {
		t.Errorf("GetSecret of the CA key: %v, want refused", err)
	}
	if _, err := c.SetSecret(asOwner(), rediacc.DefaultTeam, "ssh-ca/state", []byte("{}"), nil); !errors.Is(err, rediacc.ErrInvalidArgument) {
		t.Errorf("SetSecret of the CA state: %v, want refused", err)
	}
	if err := c.DeleteSecret(asOwner(), rediacc.DefaultTeam, caKey); !errors.Is(err, rediacc.ErrInvalidArgument) {
		t.Errorf("DeleteSecret of the CA key: %v, want refused", err)
	}
	if _, err := c.Submit(asOwner(), rediacc.TaskSpec{Machine: "ca-01", Command: "true", Secrets: map[string]string{"K": caKey}}); !errors.Is(err, rediacc.ErrInvalidTask) {
		t.Errorf("task naming the CA key: %v, want ErrInvalidTask", err)
	}

	// machine status probes by a login and shows the CA the machine trusts.
	if _, err := c.ProbeMachine(asOwner(), "ca-01"); err != nil {
		t.Fatal(err)
	}
	sts, err := c.MachineStatus(asOwner(), rediacc.MachineFilter{})
	if err != nil || len(sts) != 1 || len(sts[0].SSHCA) != 1 || !sts[0].SSHCA[0].Trusted || sts[0].SSHCA[0].Fingerprint != ca.Active().Fingerprint {
		t.Fatalf("status %+v, %v: want the active CA trusted", sts, err)
	}
	shown, err := c.SSHCA(as("alice"), rediacc.DefaultTeam)
	if err != nil || len(shown.Machines["ca-01"]) != 1 || !shown.Machines["ca-01"][0].Trusted {
		t.Fatalf("SSHCA: %+v, %v", shown, err)
	}

	// Audit: ca.init with the fingerprint; after Close, cert.sign records
	// counting every certificate (never one per connection).
	recs, err := c.AuditLog(asOwner(), rediacc.AuditFilter{Action: "ca.init", Result: "ok"})
	if err != nil || len(recs) != 1 || recs[0].Details["fingerprint"] != ca.Active().Fingerprint || recs[0].Details["kind"] != "key" {
		t.Fatalf("ca.init records %+v, %v", recs, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c2 := newClient(t, func(cfg *rediacc.Config) { cfg.DataDir = dir })
	signs, err := c2.AuditLog(asOwner(), rediacc.AuditFilter{Action: "cert.sign"})
	if err != nil || len(signs) == 0 {
		t.Fatalf("cert.sign records: %v, %v", signs, err)
	}
	total := 0
	for _, r := range signs {
		n := 0
		fmt.Sscan(r.Details["count"], &n)
		total += n
		if r.Result != "ok" || r.Team != rediacc.DefaultTeam || r.Details["fingerprint"] != ca.Active().Fingerprint || !strings.Contains(r.Details["machines"], "ca-01:") ||
			!regexp.MustCompile(`^\d+-\d+$`).MatchString(r.Details["serials"]) {
			t.Errorf("cert.sign record %+v", r)
		}
		for _, v := range r.Details {
			if strings.Contains(v, "PRIVATE KEY") {
				t.Fatal("key material in the audit trail")
			}
		}
	}
	logins := strings.Count(o.Log(), "Accepted publickey for "+o.User)
	if total != logins || len(signs) >= logins && logins > 1 {
		t.Errorf("cert.sign records count %d certificates in %d records; sshd accepted %d logins", total, len(signs), logins)
	}
}

// TestSSHCAExpiredAndRefused: with the worker's clock an hour behind (an
// injected clock), the certificate has expired by the machine's clock:
// the task fails at once (not retried) with an error naming the machine
// and both clocks. A machine that does not trust the CA, and one whose
// sshd wants another principal, fail with their own diagnosis.
func TestSSHCAExpiredAndRefused(t *testing.T) {
	clock := &fakeClock{now: time.Now().Add(-time.Hour)}
	c := newClient(t, func(cfg *rediacc.Config) { cfg.Clock = clock; cfg.Health.Interval = -1 })
	ca, err := c.InitSSHCA(asOwner(), rediacc.DefaultTeam, rediacc.SSHCAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	caMachine(t, c, "late", "", 91, ca)
	untrusting := caMachine(t, c, "untrusting", "", 92, ca)
	untrusting.SetTrustedUserCAKeys("") // trusts no CA
	principals := caMachine(t, c, "principals", "", 93, ca)
	pf := filepath.Join(principals.Dir, "principals")
	if err := os.WriteFile(pf, []byte("deploy-role\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	principals.Reconfigure("AuthorizedPrincipalsFile " + pf)
	runWorker(t, c)
	retry := rediacc.RetryPolicy{RetryCount: 3, RetryDelay: time.Millisecond}
	late := submit(t, c, rediacc.TaskSpec{Machine: "late", Command: "true", Retry: retry})
	got := waitStatus(t, c, late.ID, rediacc.StatusFailed)
	if got.Attempts != 1 {
		t.Errorf("expired certificate: %d attempts, want 1 (not retried)", got.Attempts)
	}
	signer := clock.Now().UTC().Format("2006-01-02 15:04")
	machine := time.Now().UTC().Format("2006-01-02 15:04")
	for _, want := range []string{`machine "late`, "had expired by the machine's clock", signer, machine, "ahead of the signer's"} {
		if !strings.Contains(got.Error, want) {
			t.Errorf("error lacks %q: %s", want, got.Error)
		}
	}
	clock.Advance(time.Hour) // the worker's clock is right again: the same machine works
	if task := waitStatus(t, c, submit(t, c, rediacc.TaskSpec{Machine: "late", Command: "true"}).ID, rediacc.StatusCompleted); task.Attempts != 1 {
		t.Errorf("after the clock fix: %d attempts", task.Attempts)
	}
	for name, wants := range map[string][]string{
		"untrusting": {`machine "untrusting`, "accepts no certificate of CA " + ca.Active().Fingerprint, "TrustedUserCAKeys"},
		"principals": {`machine "principals`, "principals [" + untrusting.User + "]", "AuthorizedPrincipalsFile"},
	} {
		task := waitStatus(t, c, submit(t, c, rediacc.TaskSpec{Machine: name, Command: "true", Retry: retry}).ID, rediacc.StatusFailed)
		if task.Attempts != 1 {
			t.Errorf("%s: %d attempts, want 1", name, task.Attempts)
		}
		for _, w := range wants {
			if !strings.Contains(task.Error, w) {
				t.Errorf("%s: error lacks %q: %s", name, w, task.Error)
			}
		}
	}
}

// caOfLastLogin returns the CA fingerprint of the last certificate login
// sshd o logged for machine name.
func caOfLastLogin(o *sshtest.OpenSSH, name string) string {
	rx := regexp.MustCompile(`ID rediacc worker=\S+ task=\S+ machine=` + regexp.QuoteMeta(name) + ` \(serial \d+\) CA ED25519 (\S+)`)
	all := rx.FindAllStringSubmatch(o.Log(), -1)
	if len(all) == 0 {
		return ""
	}
	return all[len(all)-1][1]
}

// TestSSHCARotation: rotate adds a next CA; a machine is signed for by it
// once a login showed it trusts it; finishing refuses while a machine
// does not (naming it, changing nothing), then retires the old CA.
func TestSSHCARotation(t *testing.T) {
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.Health.Interval = -1
		// Idle connections close at once: every task below dials afresh.
		cfg.SSH.KeepaliveInterval, cfg.SSH.IdleTimeout = -1, time.Millisecond
	})
	ctx := asOwner()
	ca, err := c.InitSSHCA(ctx, rediacc.DefaultTeam, rediacc.SSHCAOptions{CertTTL: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	old := ca.Active()
	a := caMachine(t, c, "rot-a", "", 94, ca)
	b := caMachine(t, c, "rot-b", "", 95, ca)
	runWorker(t, c)
	run := func(m string) {
		t.Helper()
		task := waitStatus(t, c, submit(t, c, rediacc.TaskSpec{Machine: m, Command: "true"}).ID, rediacc.StatusCompleted)
		if task.Attempts != 1 {
			t.Fatalf("%s: %d attempts", m, task.Attempts)
		}
		for _, o := range []*sshtest.OpenSSH{a, b} {
			waitNoConnections(t, o)
		}
	}
	if _, err := c.FinishSSHCARotation(ctx, rediacc.DefaultTeam); !errors.Is(err, rediacc.ErrSSHCARotation) {
		t.Fatalf("finish without a rotation: %v", err)
	}
	ca, err = c.RotateSSHCA(ctx, rediacc.DefaultTeam, rediacc.SSHCAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	next, ok := ca.Next()
	if !ok || ca.Active().ID != old.ID || next.Fingerprint == old.Fingerprint || strings.Count(ca.TrustedUserCAKeys(), "\n") != 2 {
		t.Fatalf("after rotate: %+v", ca)
	}
	if _, err := c.RotateSSHCA(ctx, rediacc.DefaultTeam, rediacc.SSHCAOptions{}); !errors.Is(err, rediacc.ErrSSHCARotation) {
		t.Fatalf("second rotate: %v", err)
	}
	// No machine trusts the next CA yet: the old one signs.
	run("rot-a")
	run("rot-b")
	if caOfLastLogin(a, "rot-a") != old.Fingerprint || caOfLastLogin(b, "rot-b") != old.Fingerprint {
		t.Fatalf("before any machine trusts the next CA: logins with %s and %s, want %s", caOfLastLogin(a, "rot-a"), caOfLastLogin(b, "rot-b"), old.Fingerprint)
	}
	// a trusts both; b only the old one: finishing names b and changes nothing.
	a.SetTrustedUserCAKeys(ca.TrustedUserCAKeys())
	_, err = c.FinishSSHCARotation(ctx, rediacc.DefaultTeam)
	if !errors.Is(err, rediacc.ErrSSHCANotTrusted) || !strings.Contains(err.Error(), "rot-b: ") || strings.Contains(err.Error(), "rot-a: ") ||
		!strings.Contains(err.Error(), "accepts no certificate of CA "+next.Fingerprint) {
		t.Fatalf("finish with rot-b refusing: %v", err)
	}
	now, err := c.SSHCA(ctx, rediacc.DefaultTeam)
	if err != nil || now.Active().ID != old.ID {
		t.Fatalf("a refused finish changed the CA: %+v, %v", now, err)
	}
	// a is signed for by the next CA now, b still by the old one.
	run("rot-a")
	run("rot-b")
	if caOfLastLogin(a, "rot-a") != next.Fingerprint || caOfLastLogin(b, "rot-b") != old.Fingerprint {
		t.Fatalf("during the rotation: rot-a with %s (want the next %s), rot-b with %s (want the old %s)",
			caOfLastLogin(a, "rot-a"), next.Fingerprint, caOfLastLogin(b, "rot-b"), old.Fingerprint)
	}
	sts, err := c.MachineStatus(ctx, rediacc.MachineFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range sts {
		var trusts []string
		for _, ck := range st.SSHCA {
			if ck.Trusted {
				trusts = append(trusts, string(ck.State))
			}
		}
		if want := map[string]string{"rot-a": "next", "rot-b": ""}[st.Name]; strings.Join(trusts, ",") != want && !(st.Name == "rot-a" && strings.Join(trusts, ",") == "active,next") {
			t.Errorf("status of %s: trusted %v (%+v), want %q", st.Name, trusts, st.SSHCA, want)
		}
	}
	// A machine removed and added again under its name inherits nothing:
	// the old CA signs for it until a login shows it trusts the next one.
	if err := c.RemoveMachine(ctx, "rot-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddMachine(ctx, rediacc.Machine{Name: "rot-a", Host: a.Host, Port: a.Port, User: a.User,
		Auth: rediacc.AuthSSHCA, KnownHostsFile: a.KnownHostsPath}); err != nil {
		t.Fatal(err)
	}
	run("rot-a")
	if got := caOfLastLogin(a, "rot-a"); got != old.Fingerprint {
		t.Fatalf("re-added rot-a logged in with %s, want the old CA %s", got, old.Fingerprint)
	}
	if shown, _ := c.SSHCA(ctx, rediacc.DefaultTeam); len(shown.Machines["rot-a"]) != 0 {
		t.Errorf("re-added rot-a shows the old machine's checks: %+v", shown.Machines["rot-a"])
	}
	// b trusts both: finishing retires the old CA and deletes its key.
	b.SetTrustedUserCAKeys(ca.TrustedUserCAKeys())
	done, err := c.FinishSSHCARotation(ctx, rediacc.DefaultTeam)
	if err != nil {
		t.Fatal(err)
	}
	if done.Active().ID != next.ID || len(done.CAs) != 2 || done.CAs[1].State != rediacc.SSHCARetired || done.CAs[1].RetiredAt.IsZero() {
		t.Fatalf("after finish: %+v", done)
	}
	if keys, _ := c.ListSecrets(ctx, rediacc.DefaultTeam); strings.Contains(strings.Join(keys, " "), old.ID) {
		t.Errorf("the retired CA's key is still in the vault: %v", keys)
	}
	// Machines drop the old CA: only the new one is printed and trusted.
	if strings.Contains(done.TrustedUserCAKeys(), old.PublicKey) {
		t.Errorf("TrustedUserCAKeys still lists the retired CA: %s", done.TrustedUserCAKeys())
	}
	a.SetTrustedUserCAKeys(done.TrustedUserCAKeys())
	b.SetTrustedUserCAKeys(done.TrustedUserCAKeys())
	run("rot-a")
	run("rot-b")
	if caOfLastLogin(b, "rot-b") != next.Fingerprint {
		t.Errorf("after the rotation rot-b logged in with %s", caOfLastLogin(b, "rot-b"))
	}
	// A rotation can be abandoned: the next CA and its key go.
	ca, err = c.RotateSSHCA(ctx, rediacc.DefaultTeam, rediacc.SSHCAOptions{CertTTL: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	third, _ := ca.Next()
	ab, err := c.AbortSSHCARotation(ctx, rediacc.DefaultTeam)
	if _, still := ab.Next(); err != nil || still || ab.CertTTL != 10*time.Minute {
		t.Fatalf("abort: %+v, %v", ab, err)
	}
	if keys, _ := c.ListSecrets(ctx, rediacc.DefaultTeam); strings.Contains(strings.Join(keys, " "), third.ID) {
		t.Errorf("the aborted CA's key is still in the vault: %v", keys)
	}
	steps := map[string]int{}
	recs, _ := c.AuditLog(ctx, rediacc.AuditFilter{Action: "ca.rotate"})
	for _, r := range recs {
		steps[r.Details["step"]+"/"+r.Result]++
	}
	if steps["start/ok"] != 2 || steps["finish/ok"] != 1 || steps["finish/error"] != 2 || steps["abort/ok"] != 1 || steps["start/error"] != 1 {
		t.Errorf("ca.rotate records by step/result: %v", steps)
	}
}

// waitNoConnections waits until no TCP connection to sshd o is established (the
// client's pool closed its idle connections; read from /proc/net/tcp, as
// sshd logs no line when a session ends).
func waitNoConnections(t *testing.T, o *sshtest.OpenSSH) {
	t.Helper()
	ip := net.ParseIP(o.Host).To4()
	local := fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], o.Port)
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			t.Fatalf("cannot watch connections: %v", err)
		}
		open := 0
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 3 && f[1] == local && f[3] == "01" {
				open++
			}
		}
		if open == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections to %s stay open", open, o.Addr())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSSHCAHashiCorpVault: HashiCorp Vault's SSH secrets engine (a real dev
// server) signs; the CA key never leaves Vault; a role that adds
// extensions the machine did not ask for is refused with the fix named.
func TestSSHCAHashiCorpVault(t *testing.T) {
	addr, root := vaulttest.StartDevServer(t)
	eng := vaulttest.EnableSSHEngine(t, addr, root, "ssh-client", "rediacc", nil)
	pty := vaulttest.EnableSSHEngine(t, addr, root, "ssh-pty", "rediacc", map[string]any{"default_extensions": map[string]any{"permit-pty": ""}})
	ctx := asOwner()
	v, err := rediacc.NewHashiCorpVault(ctx, rediacc.HashiCorpVaultConfig{Address: addr, Token: root, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, func(cfg *rediacc.Config) { cfg.Vault = v; cfg.Health.Interval = -1 })
	if _, err := c.InitSSHCA(ctx, rediacc.DefaultTeam, rediacc.SSHCAOptions{VaultSSHMount: "ssh-client", VaultSSHRole: "missing"}); !errors.Is(err, rediacc.ErrNotFound) || !strings.Contains(err.Error(), `no role "missing"`) {
		t.Fatalf("init with a missing role: %v", err)
	}
	if _, err := c.InitSSHCA(ctx, rediacc.DefaultTeam, rediacc.SSHCAOptions{VaultSSHMount: "no-such-mount", VaultSSHRole: "r"}); err == nil || !strings.Contains(err.Error(), "vault secrets enable -path=no-such-mount ssh") {
		t.Fatalf("init with a missing mount: %v", err)
	}
	ca, err := c.InitSSHCA(ctx, rediacc.DefaultTeam, rediacc.SSHCAOptions{VaultSSHMount: "ssh-client", VaultSSHRole: "rediacc"})
	if err != nil {
		t.Fatal(err)
	}
	if a := ca.Active(); a.Kind != rediacc.SSHCAVaultSSH || a.PublicKey != eng.CAPublicKey || a.Mount != "ssh-client" || a.Role != "rediacc" {
		t.Fatalf("CA %+v, want Vault's %s", a, eng.CAPublicKey)
	}
	o := caMachine(t, c, "vault-ca", "", 97, ca)
	runWorker(t, c)
	task := waitStatus(t, c, submit(t, c, rediacc.TaskSpec{Machine: "vault-ca", Command: "id -un"}).ID, rediacc.StatusCompleted)
	if string(task.Stdout) != o.User+"\n" {
		t.Fatalf("stdout %q", task.Stdout)
	}
	line := waitLog(t, o, `ID rediacc worker=\S+ task=(\S+) machine=vault-ca \(serial \d+\) CA ED25519 (\S+)`)
	if line[1] != task.ID || line[2] != ca.Active().Fingerprint {
		t.Errorf("sshd log %q: want task %s and Vault's CA %s", line[0], task.ID, ca.Active().Fingerprint)
	}
	if keys, _ := c.ListSecrets(ctx, rediacc.DefaultTeam); strings.Contains(strings.Join(keys, " "), "/key") {
		t.Errorf("a CA key in the team's KV: %v", keys)
	}

	// A role with default extensions: refused unless the machine asks.
	if _, err := c.CreateTeam(ctx, "pty", ""); err != nil {
		t.Fatal(err)
	}
	pca, err := c.InitSSHCA(ctx, "pty", rediacc.SSHCAOptions{VaultSSHMount: pty.Mount, VaultSSHRole: pty.Role})
	if err != nil {
		t.Fatal(err)
	}
	caMachine(t, c, "pty-quiet", "pty", 98, pca)
	failed := waitStatus(t, c, submit(t, c, rediacc.TaskSpec{Machine: "pty-quiet", Command: "true", Retry: rediacc.RetryPolicy{RetryCount: 2, RetryDelay: time.Millisecond}}).ID, rediacc.StatusFailed)
	for _, w := range []string{"pty-quiet", "permit-pty", "default_extensions='{}'", "ssh-pty/roles/rediacc"} {
		if !strings.Contains(failed.Error, w) || failed.Attempts != 1 {
			t.Errorf("role with default extensions: error lacks %q (attempts %d): %s", w, failed.Attempts, failed.Error)
		}
	}
	po := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 99})
	po.SetTrustedUserCAKeys(pca.TrustedUserCAKeys())
	if _, err := c.AddMachine(ctx, rediacc.Machine{Name: "pty-asks", Team: "pty", Host: po.Host, Port: po.Port, User: po.User,
		Auth: rediacc.AuthSSHCA, CertExtensions: []string{"permit-pty"}, KnownHostsFile: po.KnownHostsPath}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, submit(t, c, rediacc.TaskSpec{Machine: "pty-asks", Command: "true"}).ID, rediacc.StatusCompleted)
}

// TestSSHCAValidation: bad options and machines are refused with the
// reason, and nothing is written.
func TestSSHCAValidation(t *testing.T) {
	c := newClient(t, func(cfg *rediacc.Config) { cfg.Health.Interval = -1 })
	ctx := asOwner()
	m := rediacc.Machine{Name: "cert-m", Host: "127.0.0.9", User: "u", Auth: rediacc.AuthSSHCA, HostKeyPolicy: rediacc.HostKeyInsecureIgnore}
	if _, err := c.AddMachine(ctx, m); !errors.Is(err, rediacc.ErrNoSSHCA) || !errors.Is(err, rediacc.ErrNotFound) || !strings.Contains(err.Error(), "rediacc team ssh-ca init default") {
		t.Fatalf("ssh-ca machine without a CA: %v", err)
	}
	if _, err := c.SSHCA(ctx, rediacc.DefaultTeam); !errors.Is(err, rediacc.ErrNoSSHCA) {
		t.Fatalf("show without a CA: %v", err)
	}
	for name, o := range map[string]rediacc.SSHCAOptions{
		"ttl too short":  {CertTTL: time.Second},
		"ttl too long":   {CertTTL: 48 * time.Hour},
		"mount alone":    {VaultSSHMount: "ssh"},
		"role alone":     {VaultSSHRole: "r"},
		"local vault":    {VaultSSHMount: "ssh", VaultSSHRole: "r"},
		"bad mount name": {VaultSSHMount: "a b", VaultSSHRole: "r"},
	} {
		if _, err := c.InitSSHCA(ctx, rediacc.DefaultTeam, o); !errors.Is(err, rediacc.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
	}
	if _, err := c.InitSSHCA(ctx, "no-such-team", rediacc.SSHCAOptions{}); !errors.Is(err, rediacc.ErrNotFound) {
		t.Errorf("unknown team: %v", err)
	}
	if keys, _ := c.ListSecrets(ctx, rediacc.DefaultTeam); len(keys) != 0 {
		t.Fatalf("refused inits left %v in the vault", keys)
	}
	if _, err := c.InitSSHCA(ctx, rediacc.DefaultTeam, rediacc.SSHCAOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*rediacc.Machine){
		"with a key file":    func(m *rediacc.Machine) { m.IdentityFile = "/etc/hostname" },
		"with the agent":     func(m *rediacc.Machine) { m.UseAgent = true },
		"unknown extension":  func(m *rediacc.Machine) { m.CertExtensions = []string{"permit-everything"} },
		"extension, no cert": func(m *rediacc.Machine) { m.Auth = ""; m.UseAgent = true; m.CertExtensions = []string{"permit-pty"} },
		"unknown auth":       func(m *rediacc.Machine) { m.Auth = "password" },
		"key without a key":  func(m *rediacc.Machine) { m.Auth = rediacc.AuthKey },
	} {
		bad := m
		mut(&bad)
		if _, err := c.AddMachine(ctx, bad); !errors.Is(err, rediacc.ErrInvalidMachine) {
			t.Errorf("%s: %v, want ErrInvalidMachine", name, err)
		}
	}
	m.CertExtensions = []string{"permit-pty", "permit-pty", "permit-agent-forwarding"}
	added, err := c.AddMachine(ctx, m)
	if err != nil || strings.Join(added.CertExtensions, ",") != "permit-agent-forwarding,permit-pty" || added.AuthMode() != rediacc.AuthSSHCA {
		t.Fatalf("add: %+v, %v", added, err)
	}
	// Moving it to a team without a CA would leave it unable to log in.
	if _, err := c.CreateTeam(ctx, "noca", ""); err != nil {
		t.Fatal(err)
	}
	if err := c.MoveMachine(ctx, "cert-m", "noca"); !errors.Is(err, rediacc.ErrNoSSHCA) {
		t.Errorf("move to a team without a CA: %v", err)
	}
	if got, _ := c.Machine(ctx, "cert-m"); got.Team != rediacc.DefaultTeam {
		t.Errorf("refused move changed the team to %s", got.Team)
	}
}

// TestSSHCARoleMatrix: CA operations need team admin; members read.
func TestSSHCARoleMatrix(t *testing.T) {
	f := newRoleFixture(t)
	c := f.c
	n := 0
	// fresh returns a new team where the prod members hold their roles.
	fresh := func(withCA bool) string {
		n++
		team := "ca-team-" + itoa(n)
		if _, err := c.CreateTeam(as("owner"), team, ""); err != nil {
			t.Fatal(err)
		}
		for user, role := range map[string]rediacc.Role{"admin": rediacc.RoleAdmin, "operator": rediacc.RoleOperator, "viewer": rediacc.RoleViewer} {
			if _, err := c.SetMember(as("owner"), team, user, role); err != nil {
				t.Fatal(err)
			}
		}
		if withCA {
			if _, err := c.InitSSHCA(as("owner"), team, rediacc.SSHCAOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		return team
	}
	cells := []struct {
		action  string
		allowed []string
		run     func(ctx context.Context) error
	}{
		{"ca.read", []string{"owner", "admin", "operator", "viewer"}, func(ctx context.Context) error {
			_, err := c.SSHCA(ctx, fresh(true))
			return err
		}},
		{"ca.init", []string{"owner", "admin"}, func(ctx context.Context) error {
			_, err := c.InitSSHCA(ctx, fresh(false), rediacc.SSHCAOptions{})
			return err
		}},
		{"ca.rotate", []string{"owner", "admin"}, func(ctx context.Context) error {
			team := fresh(true)
			if _, err := c.RotateSSHCA(ctx, team, rediacc.SSHCAOptions{}); err != nil {
				return err
			}
			_, err := c.AbortSSHCARotation(ctx, team)
			return err
		}},
	}
	for _, cl := range cells {
		for _, user := range matrixUsers {
			t.Run(cl.action+"/"+user, func(t *testing.T) {
				before := auditCount(t, c)
				err := cl.run(as(user))
				if want := slices.Contains(cl.allowed, user); want != (err == nil) || !want && !errors.Is(err, rediacc.ErrPermissionDenied) {
					t.Fatalf("%s as %s: %v, want allowed: %v", cl.action, user, err, want)
				}
				if err != nil && (!strings.Contains(err.Error(), user) || !strings.Contains(err.Error(), cl.action)) {
					t.Errorf("denial %q does not name %s and %s", err, user, cl.action)
				}
				if auditCount(t, c) <= before {
					t.Errorf("%s as %s: not audited", cl.action, user)
				}
			})
		}
	}
}

// TestSSHTeamHostCA: a host CA stored with the team verifies machines
// whose sshd presents a host certificate it signed, with an empty
// known_hosts; a known_hosts @revoked line still refuses the host key.
func TestSSHTeamHostCA(t *testing.T) {
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.Health.Interval = -1
		cfg.SSH.KeepaliveInterval, cfg.SSH.IdleTimeout = -1, time.Millisecond // each task dials afresh
	})
	ctx := asOwner()
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 88, AuthorizedKeysInHome: true})
	hostCA, err := sshtest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := sshtest.SignHostCert(hostCA, o.HostPublicKey, []string{o.Host}, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	o.SetHostCertificate(cert)
	known := filepath.Join(t.TempDir(), "known_hosts") // empty: nothing recorded for the host
	if err := os.WriteFile(known, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddMachine(ctx, rediacc.Machine{Name: "hostcert", Host: o.Host, Port: o.Port, User: o.User,
		IdentityFile: o.ClientKeyPath, KnownHostsFile: known}); err != nil {
		t.Fatal(err)
	}
	runWorker(t, c)
	retry := rediacc.RetryPolicy{RetryCount: 2, RetryDelay: time.Millisecond}
	if task := waitStatus(t, c, submit(t, c, rediacc.TaskSpec{Machine: "hostcert", Command: "true", Retry: retry}).ID, rediacc.StatusFailed); !strings.Contains(task.Error, "not in known_hosts") {
		t.Fatalf("without a host CA: %s", task.Error)
	}
	line := strings.TrimSpace(string(gossh.MarshalAuthorizedKey(hostCA.PublicKey())))
	if _, err := c.SetSSHHostCAs(ctx, rediacc.DefaultTeam, []string{"not a key"}); !errors.Is(err, rediacc.ErrInvalidArgument) {
		t.Fatalf("bad host CA: %v", err)
	}
	if _, err := c.SetSSHHostCAs(as("mallory"), rediacc.DefaultTeam, []string{line}); !errors.Is(err, rediacc.ErrPermissionDenied) {
		t.Fatalf("host CA by an outsider: %v", err)
	}
	if set, err := c.SetSSHHostCAs(ctx, rediacc.DefaultTeam, []string{line + " my host CA", line}); err != nil || len(set) != 1 {
		t.Fatalf("set host CAs: %v, %v", set, err)
	}
	waitStatus(t, c, submit(t, c, rediacc.TaskSpec{Machine: "hostcert", Command: "true"}).ID, rediacc.StatusCompleted)
	// A key rotation verifies the machine with the team's host CAs too.
	if res, err := c.RotateKey(ctx, rediacc.KeyRotationOptions{Machine: "hostcert"}); err != nil || len(res) != 1 || res[0].Action != rediacc.KeyActionRotated {
		t.Fatalf("key rotation on a machine known by its host certificate: %+v, %v", res, err)
	}
	waitStatus(t, c, submit(t, c, rediacc.TaskSpec{Machine: "hostcert", Command: "true"}).ID, rediacc.StatusCompleted)
	waitNoConnections(t, o)
	// @revoked in the machine's known_hosts wins over the team's CA.
	if err := os.WriteFile(known, []byte("@revoked * "+strings.TrimSpace(string(gossh.MarshalAuthorizedKey(o.HostPublicKey)))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	task := waitStatus(t, c, submit(t, c, rediacc.TaskSpec{Machine: "hostcert", Command: "true", Retry: retry}).ID, rediacc.StatusFailed)
	if !strings.Contains(task.Error, "@revoked") || task.Attempts != 1 {
		t.Fatalf("revoked host key: %d attempts, %s", task.Attempts, task.Error)
	}
	if set, err := c.SetSSHHostCAs(ctx, rediacc.DefaultTeam, nil); err != nil || len(set) != 0 {
		t.Fatalf("clear: %v, %v", set, err)
	}
}

// TestSSHCARevoked: sshd revokes certificates by key ID (a KRL naming the
// worker, the task or probe, and the machine): the task fails once, not
// retried, the error naming the machine, the key ID and RevokedKeys; a
// health probe whose certificate is revoked does not count as the machine
// refusing the CA (MachineStatus shows it trusted); another task logs in.
func TestSSHCARevoked(t *testing.T) {
	c := newClient(t, func(cfg *rediacc.Config) { cfg.Health.Interval = -1 })
	ca, err := c.InitSSHCA(asOwner(), rediacc.DefaultTeam, rediacc.SSHCAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	o := caMachine(t, c, "revoked", "", 96, ca)
	retry := rediacc.RetryPolicy{RetryCount: 3, RetryDelay: time.Millisecond}
	task := submit(t, c, rediacc.TaskSpec{Machine: "revoked", Command: "true", Retry: retry})
	caPub, _, _, _, err := gossh.ParseAuthorizedKey([]byte(ca.Active().PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	keyID := fmt.Sprintf("rediacc worker=%s task=%s machine=revoked", c.WorkerID(), task.ID)
	probeID := fmt.Sprintf("rediacc worker=%s probe=health machine=revoked", c.WorkerID())
	o.RevokeKeys(caPub, "id: "+keyID, "id: "+probeID)

	_, err = c.ProbeMachine(asOwner(), "revoked")
	var ce *rediacc.CertRejectedError
	if !errors.Is(err, rediacc.ErrCertRevoked) || !errors.Is(err, rediacc.ErrAuthFailed) || !errors.As(err, &ce) || ce.Reason != rssh.CertRevoked || !strings.Contains(err.Error(), fmt.Sprintf("key ID %q", probeID)) {
		t.Fatalf("health probe with a revoked certificate: %v, want ErrCertRevoked naming its key ID", err)
	}
	sts, err := c.MachineStatus(asOwner(), rediacc.MachineFilter{})
	if err != nil || len(sts) != 1 || len(sts[0].SSHCA) != 1 {
		t.Fatalf("status: %+v, %v", sts, err)
	}
	if ck := sts[0].SSHCA[0]; !ck.Trusted || ck.CheckedAt.IsZero() {
		t.Errorf("after a revoked certificate, the machine's CA check is %+v, want trusted (a login of its own with the CA)", ck)
	}

	runWorker(t, c)
	got := waitStatus(t, c, task.ID, rediacc.StatusFailed)
	if got.Attempts != 1 {
		t.Errorf("revoked certificate: %d attempts, want 1 (not retried)", got.Attempts)
	}
	for _, want := range []string{`machine "revoked`, fmt.Sprintf("key ID %q", keyID), "RevokedKeys", "refused this certificate itself"} {
		if !strings.Contains(got.Error, want) {
			t.Errorf("error lacks %q: %s", want, got.Error)
		}
	}
	waitLog(t, o, `revoked`) // sshd's own log says why
	if other := waitStatus(t, c, submit(t, c, rediacc.TaskSpec{Machine: "revoked", Command: "true"}).ID, rediacc.StatusCompleted); other.Attempts != 1 {
		t.Errorf("another task on the machine: %d attempts", other.Attempts)
	}
}

// TestSSHCAKeyInventory: ssh-ca machines have no long-lived key: the key
// inventory lists them under the team's certificates (source ssh-ca,
// never overdue), and a key rotation on them is refused naming the CA
// rotation instead (a rotation of all the team's keys skips them).
func TestSSHCAKeyInventory(t *testing.T) {
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.Health.Interval = -1
		cfg.KeyRotation.MaxAge = time.Nanosecond
	})
	ca, err := c.InitSSHCA(asOwner(), rediacc.DefaultTeam, rediacc.SSHCAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	caMachine(t, c, "inv-a", "", 97, ca)
	caMachine(t, c, "inv-b", "", 98, ca)
	keys, err := c.Keys(asOwner())
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0].Source != rediacc.KeyBySSHCA || !slices.Equal(keys[0].Machines, []string{"inv-a", "inv-b"}) || keys[0].Overdue || keys[0].Fingerprint != "" {
		t.Fatalf("key inventory of two ssh-ca machines: %+v, want one ssh-ca entry for both, not overdue", keys)
	}
	_, err = c.RotateKey(asOwner(), rediacc.KeyRotationOptions{Machine: "inv-a"})
	if !errors.Is(err, rediacc.ErrInvalidArgument) || !strings.Contains(err.Error(), "inv-a") || !strings.Contains(err.Error(), "team ssh-ca rotate") {
		t.Fatalf("rotate-key on an ssh-ca machine: %v, want ErrInvalidArgument pointing at the CA rotation", err)
	}
	if _, err := c.SubmitKeyRotation(asOwner(), rediacc.KeyRotationOptions{Machine: "inv-b"}); !errors.Is(err, rediacc.ErrInvalidArgument) {
		t.Fatalf("queued rotate-key on an ssh-ca machine: %v, want ErrInvalidArgument", err)
	}
	res, err := c.RotateKey(asOwner(), rediacc.KeyRotationOptions{Team: rediacc.DefaultTeam, All: true})
	if err != nil || len(res) != 1 || res[0].Action != rediacc.KeyActionSkipped || !strings.Contains(res[0].Note, "rotate the CA") {
		t.Fatalf("rotation of all the team's keys: %+v, %v, want the ssh-ca entry skipped", res, err)
	}
}
