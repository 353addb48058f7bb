package rediacc_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// The rotation's steps, in order, at which failures are injected: after
// the new key is made; after it is added on the first machine; after the
// first machine accepted it; after the first machine's vault entry took
// it (between machines); after the old key was removed on the first
// machine (before the proof); after the proof.
var rotationSteps = []string{"generate", "install", "verify", "store", "revoke", "prove"}

// Child process of the SIGKILL case: rotates a key and kills itself with
// SIGKILL right after a step.
const (
	rotateChildDirEnv  = "REDIACC_ROTATE_CHILD_DIR"
	rotateChildStepEnv = "REDIACC_ROTATE_CHILD_STEP"
	rotateChildKeyEnv  = "REDIACC_ROTATE_CHILD_MACHINE"
	// rotateChildQueueEnv, when set, makes the child run a worker (the
	// rotation comes from a queued task) instead of calling RotateKey.
	rotateChildQueueEnv = "REDIACC_ROTATE_CHILD_QUEUE"
)

// rotationChild runs in the test binary's child process (see TestMain).
func rotationChild(dir string) {
	step, machine := os.Getenv(rotateChildStepEnv), os.Getenv(rotateChildKeyEnv)
	c, err := rediacc.New(asOwner(), rediacc.Config{DataDir: dir, Logger: testLogger(nil), HealthInterval: -1})
	if err != nil {
		fmt.Fprintln(os.Stderr, "rotation child:", err)
		os.Exit(2)
	}
	rediacc.SetRotationHook("*", func(s, m string) {
		if s == step && (m == "" || m == machine || step == "generate") {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	})
	if os.Getenv(rotateChildQueueEnv) != "" {
		err = c.Run(asOwner())
	} else {
		_, err = c.RotateKey(asOwner(), rediacc.KeyRotationOptions{Machine: machine})
	}
	fmt.Fprintln(os.Stderr, "rotation child: the step never came:", err)
	os.Exit(3)
}

// fault is a kind of failure and how to undo it.
type fault struct {
	name   string
	inject func(t *testing.T, f *keyFixture, i int)
	heal   func(t *testing.T, f *keyFixture, i int)
}

// finish completes the key's rotation after a failure: a resume when one is
// unfinished, else a new rotation.
func (f *keyFixture) finish(t *testing.T) rediacc.KeyRotationResult {
	t.Helper()
	ctx := asOwner()
	res, err := f.c.RotateKey(ctx, rediacc.KeyRotationOptions{Machine: f.names[0], Resume: true})
	if err == nil && len(res) == 1 && res[0].Action == rediacc.KeyActionNothing {
		res, err = f.c.RotateKey(ctx, rediacc.KeyRotationOptions{Machine: f.names[0]})
	}
	if err != nil {
		t.Fatalf("the second run did not complete the rotation: %v", err)
	}
	for _, m := range res[0].Machines {
		if m.State != rediacc.KeyStateRevoked {
			t.Fatalf("second run: machine %s is %s (%s)", m.Machine, m.State, m.Error)
		}
	}
	return res[0]
}

// complete checks the state after a finished rotation from old: the vault's
// key logs in everywhere, old is refused, the files keep their other lines
// and exactly one line of ours, no temporary file is left, nothing is
// unfinished.
func (f *keyFixture) complete(t *testing.T, old []byte, res rediacc.KeyRotationResult) {
	t.Helper()
	for i, srv := range f.srvs {
		cur, _ := f.vaultKeys(t, i)
		if err := f.login(t, i, cur); err != nil {
			t.Fatalf("%s: the vault's key does not log in after the second run: %v", f.names[i], err)
		}
		if err := f.login(t, i, old); !errors.Is(err, rediacc.ErrAuthFailed) {
			t.Fatalf("%s: the replaced key: %v, want ErrAuthFailed", f.names[i], err)
		}
		b, _ := os.ReadFile(srv.AuthorizedKeysPath)
		if n := strings.Count(string(b), "rediacc key="); n != 1 {
			t.Fatalf("%s: %d lines of ours after the second run:\n%s", f.names[i], n, b)
		}
		if left, _ := filepath.Glob(filepath.Join(filepath.Dir(srv.AuthorizedKeysPath), ".authorized_keys.rediacc-*")); len(left) > 0 {
			t.Fatalf("%s: temporary files left: %v", f.names[i], left)
		}
	}
	k := keyOf(t, f.c, f.team, f.names[0])
	if k.Rotation != nil || k.Fingerprint != res.To {
		t.Fatalf("inventory after the second run: %+v", k)
	}
	f.othersIntact(t)
}

// TestRotationSurvivesFailureAtEveryStep injects each kind of failure after
// each step of a rotation of a key two real sshds share (keys in ~/.ssh,
// StrictModes on), then checks that a key the vault holds still logs in
// on every machine (no lock-out), undoes the failure, and has a second run
// complete the rotation.
func TestRotationSurvivesFailureAtEveryStep(t *testing.T) {
	faults := []fault{
		{name: "connection-cut",
			inject: func(t *testing.T, f *keyFixture, i int) { f.proxies[i].Cut() },
			heal:   func(t *testing.T, f *keyFixture, i int) { f.proxies[i].Restore() }},
		{name: "sshd-stopped",
			inject: func(t *testing.T, f *keyFixture, i int) { f.srvs[i].Stop() },
			heal:   func(t *testing.T, f *keyFixture, i int) { f.srvs[i].Start() }},
		{name: "read-only-authorized_keys",
			inject: func(t *testing.T, f *keyFixture, i int) { os.Chmod(f.srvs[i].AuthorizedKeysPath, 0o400) },
			heal:   func(t *testing.T, f *keyFixture, i int) { os.Chmod(f.srvs[i].AuthorizedKeysPath, 0o600) }},
		{name: "disk-full",
			inject: func(t *testing.T, f *keyFixture, i int) { fillDisk(t, filepath.Dir(f.srvs[i].AuthorizedKeysPath)) },
			heal: func(t *testing.T, f *keyFixture, i int) {
				os.Remove(filepath.Join(filepath.Dir(f.srvs[i].AuthorizedKeysPath), "filler"))
			}},
		{name: "worker-SIGKILL"},
	}
	for fi, fa := range faults {
		t.Run(fa.name, func(t *testing.T) {
			t.Parallel()
			c, v, dir := newKeyClientDir(t, nil)
			team := fmt.Sprintf("f%d", fi)
			f := newKeyFixtureWith(t, c, v, dir, team, keyFixtureOptions{proxies: fa.name == "connection-cut", tmpfs: fa.name == "disk-full"},
				30+2*fi, 31+2*fi)
			for _, step := range rotationSteps {
				old, _ := f.vaultKeys(t, 0)
				var once sync.Once
				injected := false
				if fa.name == "worker-SIGKILL" {
					f.killChild(t, step)
					injected = true
				} else {
					restore := rediacc.SetRotationHook(team, func(s, m string) {
						if s != step || (m != "" && m != f.names[0]) {
							return
						}
						once.Do(func() { fa.inject(t, f, 0); injected = true })
					})
					_, err := c.RotateKey(asOwner(), rediacc.KeyRotationOptions{Machine: f.names[0]})
					restore()
					t.Logf("%s after %s: %v", fa.name, step, err)
					// With the failure still in place, whatever the vault
					// holds logs in on every machine that is reachable.
					if fa.name != "connection-cut" && fa.name != "sshd-stopped" {
						f.vaultLogsIn(t)
					}
					fa.heal(t, f, 0)
				}
				if !injected {
					t.Fatalf("step %s never came", step)
				}
				f.vaultLogsIn(t)
				res := f.finish(t)
				f.complete(t, old, res)
			}
		})
	}
}

// killChild runs a rotation in a child process that kills itself with
// SIGKILL right after step, and waits for it to die.
func (f *keyFixture) killChild(t *testing.T, step string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), rotateChildDirEnv+"="+f.dataDir, rotateChildStepEnv+"="+step, rotateChildKeyEnv+"="+f.names[0])
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the rotation child was not killed after %s: %v\n%s", step, err, out)
	}
}

// keyFixtureOptions: proxies puts a sshtest.Proxy in front of every sshd
// (machines are registered at the proxy's address); tmpfs mounts a small
// tmpfs on every ~/.ssh (for the full-disk case).
type keyFixtureOptions struct {
	proxies bool
	tmpfs   bool
}

func newKeyFixtureWith(t *testing.T, c *rediacc.Client, v rediacc.Vault, dataDir, team string, o keyFixtureOptions, loopbacks ...int) *keyFixture {
	t.Helper()
	f := newKeyFixture(t, c, v, team, loopbacks...)
	f.dataDir = dataDir
	ctx := asOwner()
	for i, srv := range f.srvs {
		if o.tmpfs {
			dir := filepath.Dir(srv.AuthorizedKeysPath)
			content, _ := os.ReadFile(srv.AuthorizedKeysPath)
			if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=64k,mode=0700,uid=%d,gid=%d", srv.UID, srv.GID), "tmpfs", dir).CombinedOutput(); err != nil {
				t.Skipf("cannot mount a small tmpfs to fill (needs root and mount rights): %v: %s", err, out)
			}
			t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
			if err := os.WriteFile(srv.AuthorizedKeysPath, content, 0o600); err != nil {
				t.Fatal(err)
			}
			os.Chown(srv.AuthorizedKeysPath, srv.UID, srv.GID)
		}
		if o.proxies {
			p := sshtest.NewProxy(t, srv.Host, srv.Addr())
			kh := filepath.Join(t.TempDir(), "known_hosts")
			if err := os.WriteFile(kh, []byte(knownhosts.Line([]string{p.Addr()}, srv.HostPublicKey)+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			f.proxies = append(f.proxies, p)
			// Re-register the machine at the proxy's address.
			if err := c.RemoveMachine(ctx, f.names[i]); err != nil {
				t.Fatal(err)
			}
			if _, err := c.AddMachine(ctx, rediacc.Machine{Name: f.names[i], Team: team, Host: p.Host(), Port: p.Port(), User: srv.User,
				IdentityFile: f.keyPath, ImportIdentity: true, KnownHostsFile: kh}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if k := keyOf(t, c, team, f.names[0]); len(k.Machines) != len(f.srvs) || k.Fingerprint != gossh.FingerprintSHA256(f.signer.PublicKey()) {
		t.Fatalf("fixture key: %+v", k)
	}
	return f
}
