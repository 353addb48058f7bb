package rediacc_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// Issue 8, kind 7: the identity and known_hosts files a machine names are
// read (and, under accept-new, written) by this process, so a team admin
// may only name paths under Config.AllowedKeyPaths and
// AllowedKnownHostsPaths (default: no identity file, the default
// known_hosts); an owner may name any. Links and ".." do not lead out of an
// allowed directory. A denial writes nothing and is audited.
func TestNonOwnerSSHPathsConfined(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	allowed := t.TempDir()
	outside := t.TempDir()
	_, pemKey, err := sshtest.GenerateSigner(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(allowed, "id"), filepath.Join(outside, "team-b-key")} {
		if err := os.WriteFile(p, pemKey, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(outside, "team-b-key"), filepath.Join(allowed, "link")); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, func(cfg *rediacc.Config) { cfg.AllowedKeyPaths = []string{allowed} })
	owner, admin := asOwner(), as("bob")
	if _, err := c.CreateTeam(owner, "alpha", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetMember(owner, "alpha", "bob", rediacc.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	base := rediacc.Machine{Team: "alpha", Host: "127.0.0.9", User: "u", HostKeyPolicy: rediacc.HostKeyAcceptNew}
	n := 0
	add := func(ctx context.Context, edit func(*rediacc.Machine)) error {
		n++
		m := base
		m.Name = "m" + itoa(n)
		edit(&m)
		_, err := c.AddMachine(ctx, m)
		return err
	}
	denied := map[string]func(*rediacc.Machine){
		"another team's key file, imported": func(m *rediacc.Machine) {
			m.IdentityFile, m.ImportIdentity = filepath.Join(outside, "team-b-key"), true
		},
		"another team's key file, by path": func(m *rediacc.Machine) { m.IdentityFile = filepath.Join(outside, "team-b-key") },
		"a link out of the allowed dir":    func(m *rediacc.Machine) { m.IdentityFile, m.ImportIdentity = filepath.Join(allowed, "link"), true },
		"'..' out of the allowed dir": func(m *rediacc.Machine) {
			m.IdentityFile, m.ImportIdentity = filepath.Join(allowed, "..", filepath.Base(outside), "team-b-key"), true
		},
		"a known_hosts file of its choosing": func(m *rediacc.Machine) {
			m.IdentityFile, m.ImportIdentity = filepath.Join(allowed, "id"), true
			m.KnownHostsFile = filepath.Join(outside, "etc-file")
		},
	}
	for name, edit := range denied {
		err := add(admin, edit)
		if !errors.Is(err, rediacc.ErrPermissionDenied) || !strings.Contains(err.Error(), "Allowed") {
			t.Errorf("%s: %v, want ErrPermissionDenied naming the allow-list", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(outside, "etc-file")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the denied known_hosts path was created: %v", err)
	}
	if keys, err := c.ListSecrets(owner, "alpha"); err != nil || len(keys) != 0 {
		t.Errorf("denied adds imported keys into the team vault: %v %v", keys, err)
	}
	if ms, _ := c.Machines(owner); len(ms) != 0 {
		t.Errorf("denied adds registered machines: %v", ms)
	}
	recs, err := c.AuditLog(owner, rediacc.AuditFilter{Action: "machine.add", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	deniedRecs := 0
	for _, r := range recs {
		if r.Result == "denied" && r.Actor == "bob" {
			deniedRecs++
		}
	}
	if deniedRecs != len(denied) {
		t.Errorf("%d denied machine.add records, want %d", deniedRecs, len(denied))
	}

	// Allowed for the admin: an imported key from the allowed directory
	// with the default known_hosts.
	if err := add(admin, func(m *rediacc.Machine) { m.IdentityFile, m.ImportIdentity = filepath.Join(allowed, "id"), true }); err != nil {
		t.Errorf("an allowed key file: %v", err)
	}
	// An owner may name any path.
	if err := add(owner, func(m *rediacc.Machine) {
		m.IdentityFile, m.KnownHostsFile = filepath.Join(outside, "team-b-key"), filepath.Join(outside, "known_hosts")
	}); err != nil {
		t.Errorf("an owner naming paths: %v", err)
	}
}

// Issue 8, kind 7, through the public API on a real sshd that offers only
// SHA-1 key exchange: a machine with the defaults fails at once (not
// retried) with ErrAlgorithmNegotiation naming the algorithm; the same host
// with LegacyAlgorithms runs the task. An unknown algorithm is refused when
// the machine is added.
func TestMachineLegacyAlgorithms(t *testing.T) {
	c := newClient(t, nil)
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 71, ExtraConfig: []string{"KexAlgorithms diffie-hellman-group14-sha1"}})
	ctx := asOwner()
	for _, legacy := range []bool{false, true} {
		name := "old-" + map[bool]string{false: "default", true: "legacy"}[legacy]
		if _, err := c.AddMachine(ctx, rediacc.Machine{Name: name, Host: srv.Host, Port: srv.Port, User: srv.User,
			IdentityFile: srv.ClientKeyPath, KnownHostsFile: srv.KnownHostsPath, LegacyAlgorithms: legacy}); err != nil {
			t.Fatal(err)
		}
	}
	def := submit(t, c, rediacc.TaskSpec{Machine: "old-default", Command: "echo ran", Retry: rediacc.RetryPolicy{RetryCount: 3, RetryDelay: time.Millisecond}})
	leg := submit(t, c, rediacc.TaskSpec{Machine: "old-legacy", Command: "echo ran"})
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := get(t, c, def.ID); got.Status != rediacc.StatusFailed || got.Attempts != 1 ||
		!strings.Contains(got.Error, "no common key exchange") || !strings.Contains(got.Error, "diffie-hellman-group14-sha1") {
		t.Errorf("default algorithms against a SHA-1-only sshd: %s after %d attempts: %s", got.Status, got.Attempts, got.Error)
	}
	if got := get(t, c, leg.ID); got.Status != rediacc.StatusCompleted || got.Stdout != "ran\n" {
		t.Errorf("LegacyAlgorithms: %s %q %s", got.Status, got.Stdout, got.Error)
	}
	m, err := c.Machine(ctx, "old-legacy")
	if err != nil || !m.LegacyAlgorithms {
		t.Errorf("the machine record lost LegacyAlgorithms: %+v %v", m, err)
	}
	_, err = c.AddMachine(ctx, rediacc.Machine{Name: "bad-algo", Host: srv.Host, Port: srv.Port, User: srv.User,
		IdentityFile: srv.ClientKeyPath, KnownHostsFile: srv.KnownHostsPath, Algorithms: rediacc.SSHAlgorithms{MACs: []string{"hmac-md5"}}})
	if !errors.Is(err, rediacc.ErrInvalidMachine) || !strings.Contains(err.Error(), "hmac-md5") {
		t.Errorf("an unknown MAC: %v", err)
	}
}

// Issue 8, kind 7, through the public API: a machine with AgentKey offers
// only that agent key (a real agent holding four keys, the authorized one
// last; a real sshd allowing two tries); without it the agent's decoys use
// up the tries.
func TestMachineAgentKeyPinned(t *testing.T) {
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 72, LogLevel: "DEBUG1", ExtraConfig: []string{"MaxAuthTries 2"}})
	var keys []any
	var decoys []string
	for range 3 {
		s, pemKey, err := sshtest.GenerateSigner(nil)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, pemKey)
		decoys = append(decoys, ssh.FingerprintSHA256(s.PublicKey()))
	}
	clientPEM, err := os.ReadFile(srv.ClientKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSH_AUTH_SOCK", sshtest.StartAgent(t, append(keys, clientPEM)...))
	// No health probes: a worker's probe of the other machine would be
	// another login in the sshd log this test reads.
	c := newClient(t, func(cfg *rediacc.Config) { cfg.Health.Interval = -1 })
	ctx := asOwner()
	pinned := ssh.FingerprintSHA256(srv.ClientSigner.PublicKey())
	for name, fp := range map[string]string{"pinned": pinned, "every-key": ""} {
		if _, err := c.AddMachine(ctx, rediacc.Machine{Name: name, Host: srv.Host, Port: srv.Port, User: srv.User,
			UseAgent: true, AgentKey: fp, KnownHostsFile: srv.KnownHostsPath}); err != nil {
			t.Fatal(err)
		}
	}
	every := submit(t, c, rediacc.TaskSpec{Machine: "every-key", Command: "true"})
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := get(t, c, every.ID); got.Status != rediacc.StatusFailed {
		t.Fatalf("an agent offering every key against MaxAuthTries 2: %s %s", got.Status, got.Error)
	}
	mark := len(srv.Log())
	task := submit(t, c, rediacc.TaskSpec{Machine: "pinned", Command: "echo pinned"})
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := get(t, c, task.ID); got.Status != rediacc.StatusCompleted || got.Stdout != "pinned\n" {
		t.Fatalf("the pinned machine: %s %q %s", got.Status, got.Stdout, got.Error)
	}
	log := srv.Log()[mark:]
	for _, d := range decoys {
		if strings.Contains(log, d) {
			t.Errorf("the pinned machine offered decoy %s", d)
		}
	}
	if !strings.Contains(log, pinned) {
		t.Errorf("sshd log of the pinned login lacks %s:\n%s", pinned, log)
	}
	if _, err := c.AddMachine(ctx, rediacc.Machine{Name: "bad-fp", Host: srv.Host, Port: srv.Port, User: srv.User,
		AgentKey: "MD5:aa:bb", KnownHostsFile: srv.KnownHostsPath}); !errors.Is(err, rediacc.ErrInvalidMachine) {
		t.Errorf("a malformed fingerprint: %v", err)
	}
	if m, err := c.Machine(ctx, "pinned"); err != nil || m.AgentKey != pinned || !m.UseAgent {
		t.Errorf("the machine record: %+v %v", m, err)
	}
}
