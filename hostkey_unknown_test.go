package rediacc_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// AddMachine under the known-hosts policy with no key of the host known
// says so (HostKeyUnknown) instead of succeeding silently: the first task
// would fail with an unknown host key.
func TestAddMachineHostKeyUnknown(t *testing.T) {
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 109})
	dir := t.TempDir()
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.Health.Interval = -1
		cfg.AllowedKeyPaths = []string{dir, filepath.Dir(srv.ClientKeyPath)}
		cfg.AllowedKnownHostsPaths = []string{dir, filepath.Dir(srv.KnownHostsPath)}
	})
	owner := asOwner()
	empty := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	base := rediacc.Machine{Host: srv.Host, Port: srv.Port, User: srv.User, IdentityFile: srv.ClientKeyPath}
	for _, tc := range []struct {
		name, known string
		policy      rediacc.HostKeyPolicy
		unknown     bool
	}{
		{"no-line", empty, rediacc.HostKeyKnownHosts, true},
		{"missing-file", filepath.Join(dir, "absent"), rediacc.HostKeyKnownHosts, true},
		{"with-line", srv.KnownHostsPath, rediacc.HostKeyKnownHosts, false},
		{"accept-new", empty, rediacc.HostKeyAcceptNew, false},
	} {
		m := base
		m.Name, m.KnownHostsFile, m.HostKeyPolicy = tc.name, tc.known, tc.policy
		got, err := c.AddMachine(owner, m)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got.HostKeyUnknown != tc.unknown {
			t.Errorf("%s: HostKeyUnknown = %v, want %v", tc.name, got.HostKeyUnknown, tc.unknown)
		}
	}
	// What the flag announces is what happens: the first task fails on
	// the host key; after importing a verified key it runs.
	task, err := c.Submit(owner, rediacc.TaskSpec{Machine: "no-line", Command: "true"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := get(t, c, task.ID); got.Status != rediacc.StatusFailed || !errors.Is(got.Err(), rediacc.ErrUnknownHostKey) {
		t.Fatalf("first task of a machine with no known host key: %s %v", got.Status, got.Err())
	}
	if _, err := c.ImportHostKeys(owner, "no-line", srv.KnownHostsPath); err != nil {
		t.Fatal(err)
	}
	task, err = c.Submit(owner, rediacc.TaskSpec{Machine: "no-line", Command: "true"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := get(t, c, task.ID); got.Status != rediacc.StatusCompleted {
		t.Fatalf("after the import: %s %v", got.Status, got.Err())
	}
}
