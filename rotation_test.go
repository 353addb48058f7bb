package rediacc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/rediacc/rediacc"
	rssh "github.com/rediacc/rediacc/ssh"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// keyFixture is a team of machines on real sshds that read the login
// user's ~/.ssh/authorized_keys (StrictModes on), all logging in with one
// shared key; each authorized_keys also holds lines of other people that
// must survive byte for byte.
type keyFixture struct {
	c        *rediacc.Client
	v        rediacc.Vault
	dataDir  string
	proxies  []*sshtest.Proxy
	team     string
	keyPath  string // the shared key (a file; imported into the vault)
	signer   gossh.Signer
	srvs     []*sshtest.OpenSSH
	names    []string
	others   map[string][]byte // each server's other lines
	original map[string][]byte // each server's initial file
}

// newKeyClient opens a client whose vault the test can read too.
func newKeyClient(t *testing.T, tune func(*rediacc.Config)) (*rediacc.Client, rediacc.Vault) {
	c, v, _ := newKeyClientDir(t, tune)
	return c, v
}

func newKeyClientDir(t *testing.T, tune func(*rediacc.Config)) (*rediacc.Client, rediacc.Vault, string) {
	t.Helper()
	dir := t.TempDir()
	v, err := rediacc.OpenLocalVault(filepath.Join(dir, "vault"), rediacc.LocalVaultOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.DataDir, cfg.Vault = dir, v
		cfg.LeaseDuration = time.Minute // these tests are not about rescues: no lease lapses on a loaded host
		if tune != nil {
			tune(cfg)
		}
	})
	return c, v, dir
}

func newKeyFixture(t *testing.T, c *rediacc.Client, v rediacc.Vault, team string, loopbacks ...int) *keyFixture {
	t.Helper()
	ctx := asOwner()
	if team != rediacc.DefaultTeam {
		if _, err := c.CreateTeam(ctx, team, ""); err != nil && !errors.Is(err, rediacc.ErrExists) {
			t.Fatal(err)
		}
	}
	signer, pemKey, err := sshtest.GenerateSigner(nil)
	if err != nil {
		t.Fatal(err)
	}
	f := &keyFixture{c: c, v: v, team: team, signer: signer, others: map[string][]byte{}, original: map[string][]byte{}}
	f.keyPath = filepath.Join(t.TempDir(), "id_shared")
	if err := os.WriteFile(f.keyPath, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, n := range loopbacks {
		srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: n, AuthorizedKeysInHome: true})
		name := fmt.Sprintf("%s-%02d", team, n)
		others := sshtest.OtherAuthorizedKeys(t, name)
		content := append(gossh.MarshalAuthorizedKey(signer.PublicKey()), others...)
		if err := os.WriteFile(srv.AuthorizedKeysPath, content, 0o600); err != nil {
			t.Fatal(err)
		}
		f.srvs, f.names = append(f.srvs, srv), append(f.names, name)
		f.others[name], f.original[name] = others, content
		if _, err := c.AddMachine(ctx, rediacc.Machine{Name: name, Team: team, Host: srv.Host, Port: srv.Port, User: srv.User,
			IdentityFile: f.keyPath, ImportIdentity: true, KnownHostsFile: srv.KnownHostsPath}); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// login reports whether a fresh connection offering only the key pemKey
// logs in on server i (nil), or why not.
func (f *keyFixture) login(t *testing.T, i int, pemKey []byte) error {
	t.Helper()
	srv := f.srvs[i]
	p := rssh.NewPool(rssh.Config{})
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := p.Run(ctx, rssh.Target{Name: f.names[i], Host: srv.Host, Port: srv.Port, User: srv.User,
		Auth: []rssh.Auth{rssh.PrivateKey(pemKey, nil)}, HostKey: rssh.KnownHosts(srv.KnownHostsPath)}, rssh.Command{Cmd: "true"})
	return err
}

// vaultKeys returns the current and previous version of machine i's
// identity in the vault (previous nil when none).
func (f *keyFixture) vaultKeys(t *testing.T, i int) (cur, prev []byte) {
	t.Helper()
	ctx := asOwner()
	m, err := f.c.Machine(ctx, f.names[i])
	if err != nil {
		t.Fatal(err)
	}
	v := f.v
	s, err := v.Get(ctx, m.TeamID, m.IdentitySecret)
	if err != nil {
		t.Fatal(err)
	}
	if s.Version > 1 {
		p, err := v.GetVersion(ctx, m.TeamID, m.IdentitySecret, s.Version-1)
		if err == nil {
			prev = p.Value
		}
	}
	return s.Value, prev
}

// vaultLogsIn checks that what the vault holds for every machine logs in,
// as a worker would offer it (current, then previous).
func (f *keyFixture) vaultLogsIn(t *testing.T, only ...int) {
	t.Helper()
	for i := range f.srvs {
		if len(only) > 0 && !slices.Contains(only, i) {
			continue
		}
		cur, prev := f.vaultKeys(t, i)
		errCur := f.login(t, i, cur)
		if errCur == nil {
			continue
		}
		if prev != nil {
			if errPrev := f.login(t, i, prev); errPrev == nil {
				continue
			}
		}
		t.Fatalf("LOCKED OUT: no key the vault holds for %s logs in: %v", f.names[i], errCur)
	}
}

// othersIntact checks that every server's file still holds its other lines
// byte for byte (the managed lines aside) with mode 0600 and its owner.
func (f *keyFixture) othersIntact(t *testing.T) {
	t.Helper()
	for i, srv := range f.srvs {
		got, err := os.ReadFile(srv.AuthorizedKeysPath)
		if err != nil {
			t.Fatal(err)
		}
		var kept []byte
		for _, l := range bytes.SplitAfter(got, []byte("\n")) {
			k, _, _, _, err := gossh.ParseAuthorizedKey(l)
			if err == nil && (strings.Contains(string(l), "rediacc key=") || bytes.Equal(k.Marshal(), f.signer.PublicKey().Marshal())) {
				continue
			}
			kept = append(kept, l...)
		}
		others := f.others[f.names[i]]
		if !bytes.Equal(bytes.TrimSuffix(kept, []byte("\n")), others) {
			t.Fatalf("%s: other lines changed:\n%q\nwant\n%q", f.names[i], kept, others)
		}
		fi, _ := os.Stat(srv.AuthorizedKeysPath)
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != 0o600 || int(st.Uid) != srv.UID || int(st.Gid) != srv.GID {
			t.Fatalf("%s: authorized_keys mode %v owner %d:%d", f.names[i], fi.Mode(), st.Uid, st.Gid)
		}
	}
}

// runTask runs one task on each machine and wants it COMPLETED.
func (f *keyFixture) runTasks(t *testing.T) {
	t.Helper()
	var ids []string
	for _, n := range f.names {
		ids = append(ids, submit(t, f.c, rediacc.TaskSpec{Machine: n, Command: "echo ok"}).ID)
	}
	ctx := ctxTimeout(t, 2*time.Minute)
	stop := runWorker(t, f.c)
	defer stop()
	for _, id := range ids {
		done, err := f.c.Wait(ctx, id)
		if err != nil || done.Status != rediacc.StatusCompleted {
			t.Fatalf("task on %s: %v %+v", done.Machine, err, done)
		}
	}
}

func keyOf(t *testing.T, c *rediacc.Client, team, machine string) rediacc.SSHKey {
	t.Helper()
	ks, err := c.Keys(asOwner(), rediacc.KeyFilter{Team: team})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range ks {
		for _, m := range k.Machines {
			if m == machine {
				return k
			}
		}
	}
	t.Fatalf("no key for machine %s in %+v", machine, ks)
	return rediacc.SSHKey{}
}

// A key shared by three machines is rotated on all of them: the new key
// logs in, the old one is refused, other lines are kept byte for byte,
// the vault keeps the old key as the previous version, tasks run, and
// every step is audited without key material.
func TestRotateSharedKeyOnOpenSSH(t *testing.T) {
	c, v := newKeyClient(t, nil)
	f := newKeyFixture(t, c, v, "prod", 21, 22, 23)
	ctx := asOwner()
	before := keyOf(t, c, "prod", f.names[0])
	if len(before.Machines) != 3 || before.Fingerprint != gossh.FingerprintSHA256(f.signer.PublicKey()) || before.Type != "ssh-ed25519" || before.Source != rediacc.KeyInVault {
		t.Fatalf("inventory before: %+v", before)
	}
	var events []string
	res, err := c.RotateKey(ctx, rediacc.KeyRotationOptions{Machine: f.names[1], Progress: func(e rediacc.KeyRotationEvent) {
		events = append(events, e.Step+":"+e.Machine)
	}})
	if err != nil {
		t.Fatalf("RotateKey: %v", err)
	}
	if len(res) != 1 || res[0].Action != rediacc.KeyActionRotated || res[0].From != before.Fingerprint || res[0].To == "" || res[0].To == res[0].From {
		t.Fatalf("result %+v", res)
	}
	for _, m := range res[0].Machines {
		if m.State != rediacc.KeyStateRevoked {
			t.Fatalf("machine %s ended %s (%s)", m.Machine, m.State, m.Error)
		}
	}
	oldPEM, _ := os.ReadFile(f.keyPath)
	for i := range f.srvs {
		cur, prev := f.vaultKeys(t, i)
		if err := f.login(t, i, cur); err != nil {
			t.Fatalf("%s: the vault's new key does not log in: %v", f.names[i], err)
		}
		if err := f.login(t, i, oldPEM); !errors.Is(err, rediacc.ErrAuthFailed) {
			t.Fatalf("%s: the old key: %v, want ErrAuthFailed", f.names[i], err)
		}
		if !bytes.Equal(prev, oldPEM) {
			t.Fatalf("%s: the previous vault version is not the old key", f.names[i])
		}
		got, _ := os.ReadFile(f.srvs[i].AuthorizedKeysPath)
		if n := strings.Count(string(got), "rediacc key="+before.ID+" machine="+f.names[i]+" added="); n != 1 {
			t.Fatalf("%s: %d marked lines in\n%s", f.names[i], n, got)
		}
	}
	f.othersIntact(t)
	after := keyOf(t, c, "prod", f.names[0])
	if after.ID != before.ID || after.Fingerprint != res[0].To || after.Previous != before.Fingerprint || after.RotatedAt.IsZero() || after.Rotation != nil || len(after.Machines) != 3 {
		t.Fatalf("inventory after: %+v", after)
	}
	f.runTasks(t)

	// The audit trail: every step, fingerprints and machine names, never
	// key material.
	recs, err := c.AuditLog(ctx, rediacc.AuditFilter{Action: "key.", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, r := range recs {
		count[r.Action]++
		raw := fmt.Sprintf("%+v", r)
		if strings.Contains(raw, "PRIVATE KEY") || strings.Contains(raw, "AAAA") {
			t.Fatalf("audit record holds key material: %s", raw)
		}
	}
	for action, n := range map[string]int{"key.generate": 1, "key.install": 3, "key.verify": 3, "key.store": 3, "key.revoke": 3, "key.rotate": 1} {
		if count[action] != n {
			t.Fatalf("audit: %d %s records, want %d (all: %v)", count[action], action, n, count)
		}
	}
	if len(events) < 10 || events[0] != "generate:" {
		t.Fatalf("progress events %v", events)
	}

	// A complete rotation revoked the previous key: no rollback.
	_, err = c.RotateKey(ctx, rediacc.KeyRotationOptions{Machine: f.names[0], Rollback: true})
	if !errors.Is(err, rediacc.ErrRollbackImpossible) {
		t.Fatalf("rollback after a complete rotation: %v, want ErrRollbackImpossible", err)
	}
	if k := keyOf(t, c, "prod", f.names[0]); k.Fingerprint != res[0].To {
		t.Fatalf("a refused rollback changed the key: %+v", k)
	}
	f.vaultLogsIn(t)
}

// 100 tasks on three machines while the key they share rotates: in-flight
// sessions on old connections finish, new connections use the new key, and
// every task completes at its first attempt.
func TestTasksRunThroughSharedKeyRotation(t *testing.T) {
	c, v := newKeyClient(t, func(cfg *rediacc.Config) { cfg.Concurrency = 24 })
	f := newKeyFixture(t, c, v, "busy", 24, 25, 26)
	ctx := ctxTimeout(t, 5*time.Minute)
	var ids []string
	for i := 0; i < 70; i++ {
		ids = append(ids, submit(t, c, rediacc.TaskSpec{Machine: f.names[i%3], Command: fmt.Sprintf("sleep 0.3; echo during-%d", i)}).ID)
	}
	stop := runWorker(t, c)
	defer stop()
	for { // rotate while tasks run
		ts, err := c.List(ctx, rediacc.ListFilter{Statuses: []rediacc.Status{rediacc.StatusProcessing}})
		if err != nil {
			t.Fatal(err)
		}
		if len(ts) >= 6 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("tasks never ran")
		}
		time.Sleep(10 * time.Millisecond)
	}
	res, err := c.RotateKey(asOwner(), rediacc.KeyRotationOptions{Machine: f.names[0]})
	if err != nil {
		t.Fatalf("RotateKey while tasks run: %v", err)
	}
	// Tasks queued after the rotation dial with the new key only working.
	for i := 0; i < 30; i++ {
		ids = append(ids, submit(t, c, rediacc.TaskSpec{Machine: f.names[i%3], Command: fmt.Sprintf("echo after-%d", i)}).ID)
	}
	for _, id := range ids {
		done, err := c.Wait(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if done.Status != rediacc.StatusCompleted || done.Attempts != 1 || len(done.History) != 1 {
			t.Fatalf("task %s on %s: %s after %d attempts, tries %+v: %s", id, done.Machine, done.Status, done.Attempts, done.History, done.Error)
		}
	}
	oldPEM, _ := os.ReadFile(f.keyPath)
	for i := range f.srvs {
		if err := f.login(t, i, oldPEM); !errors.Is(err, rediacc.ErrAuthFailed) {
			t.Fatalf("%s: the old key after the rotation: %v", f.names[i], err)
		}
	}
	if res[0].Action != rediacc.KeyActionRotated {
		t.Fatalf("result %+v", res)
	}
}
