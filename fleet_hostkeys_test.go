package rediacc_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
)

// hostLine returns the known_hosts line of srv's key, for addr (srv's own
// address when "").
func hostLine(t *testing.T, knownHostsPath, addr string) string {
	t.Helper()
	b, err := os.ReadFile(knownHostsPath)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(strings.TrimSpace(string(b)))
	if len(f) < 3 {
		t.Fatalf("known_hosts %s: %q", knownHostsPath, b)
	}
	if addr != "" {
		f[0] = addr
	}
	return strings.Join(f[:3], " ")
}

// TestPostgresHostKeysAnyHost: a machine added on one host with its
// known_hosts file is verified by a worker on another host, where no such
// file exists: its host key is in the store.
func TestPostgresHostKeysAnyHost(t *testing.T) {
	f := newFleet(t, 0, 10*time.Second)
	srv := realSSHD(t, 40)
	known := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(known, []byte("# a comment\nother.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"+
		hostLine(t, srv.KnownHostsPath, "")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.AddMachine(asOwner(), rediacc.Machine{Name: "far", Host: srv.Host, Port: srv.Port, User: srv.User,
		IdentityFile: srv.ClientKeyPath, KnownHostsFile: known}); err != nil {
		t.Fatal(err)
	}
	lines, err := f.c.HostKeys(asOwner(), "far")
	if err != nil || len(lines) != 1 || !strings.Contains(lines[0], srv.Host) {
		t.Fatalf("HostKeys after AddMachine = %q, %v; want the file's one line for the machine", lines, err)
	}
	// The file exists only on the first host.
	if err := os.Remove(known); err != nil {
		t.Fatal(err)
	}
	other := f.client(nil)
	tk := submit(t, f.c, rediacc.TaskSpec{Machine: "far", Command: "echo verified"})
	if err := other.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := get(t, f.c, tk.ID); got.Status != rediacc.StatusCompleted || got.Stdout != "verified\n" {
		t.Fatalf("task on another host: %s %q error %q", got.Status, got.Stdout, got.Error)
	}
}

// TestPostgresAcceptNewRace: workers on two hosts meet an accept-new
// machine for the first time at once: the store records exactly one line
// (one audit record), both verify against it, and no file is written.
func TestPostgresAcceptNewRace(t *testing.T) {
	f := newFleet(t, 0, 10*time.Second)
	srv := realSSHD(t, 41)
	known := filepath.Join(t.TempDir(), "never-written")
	if _, err := f.c.AddMachine(asOwner(), rediacc.Machine{Name: "tofu", Host: srv.Host, Port: srv.Port, User: srv.User,
		IdentityFile: srv.ClientKeyPath, KnownHostsFile: known, HostKeyPolicy: rediacc.HostKeyAcceptNew}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 8 {
		ids = append(ids, submit(t, f.c, rediacc.TaskSpec{Machine: "tofu", Command: "true"}).ID)
	}
	var wg sync.WaitGroup
	for range 2 {
		w := f.client(func(c *rediacc.Config) { c.PerMachineLimit = 4 })
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if got := get(t, f.c, id); got.Status != rediacc.StatusCompleted {
			t.Fatalf("task %s: %s %q", id, got.Status, got.Error)
		}
	}
	lines, err := f.c.HostKeys(asOwner(), "tofu")
	if err != nil || len(lines) != 1 || lines[0] != hostLine(t, srv.KnownHostsPath, "["+srv.Host+"]:"+itoa(srv.Port)) {
		t.Fatalf("HostKeys after first use = %q, %v", lines, err)
	}
	recs, err := f.c.AuditLog(asOwner(), rediacc.AuditFilter{Action: "machine.hostkeys.accept", Limit: 100})
	if err != nil || len(recs) != 1 || recs[0].Details["machine"] != "tofu" || !strings.HasPrefix(recs[0].Details["fingerprint"], "SHA256:") {
		t.Fatalf("accept audit records = %+v, %v; want exactly one with the fingerprint", recs, err)
	}
	if _, err := os.Stat(known); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("accept-new wrote the known_hosts file: %v", err)
	}
}

// A different key in the store is refused with ErrHostKeyMismatch whose
// message says how to fix it in the store; forget + import fixes it.
// Bad imports change nothing and say what was wrong.
func TestHostKeysMismatchForgetImport(t *testing.T) {
	c := newClient(t, nil)
	srv := realSSHD(t, 42)
	decoy := realSSHD(t, 43) // another host's key, claimed for srv's address
	addr := "[" + srv.Host + "]:" + itoa(srv.Port)
	wrong := filepath.Join(t.TempDir(), "wrong")
	if err := os.WriteFile(wrong, []byte(hostLine(t, decoy.KnownHostsPath, addr)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddMachine(asOwner(), rediacc.Machine{Name: "rekeyed", Host: srv.Host, Port: srv.Port, User: srv.User,
		IdentityFile: srv.ClientKeyPath, KnownHostsFile: wrong}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(wrong); err != nil { // only the store has the (wrong) line now
		t.Fatal(err)
	}
	tk := submit(t, c, rediacc.TaskSpec{Machine: "rekeyed", Command: "true"})
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	got := get(t, c, tk.ID)
	if got.Status != rediacc.StatusFailed || !strings.Contains(got.Error, "does not match known_hosts (the store's host keys of machine rekeyed has") ||
		!strings.Contains(got.Error, "rediacc machine hostkeys forget rekeyed") {
		t.Fatalf("task against a wrong stored key: %s %q", got.Status, got.Error)
	}

	// Bad imports: nothing changes.
	none := filepath.Join(t.TempDir(), "none")
	if err := os.WriteFile(none, []byte(hostLine(t, decoy.KnownHostsPath, "")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(t.TempDir(), "garbage")
	if err := os.WriteFile(garbage, []byte(addr+" ssh-ed25519 not-base64!\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct{ file, says string }{
		{none, "has no key for " + srv.Host},
		{garbage, "garbage"},
		{filepath.Join(t.TempDir(), "missing"), "no such file"},
	} {
		if n, err := c.ImportHostKeys(asOwner(), "rekeyed", bad.file); !errors.Is(err, rediacc.ErrInvalidArgument) || !strings.Contains(err.Error(), bad.says) || n != 0 {
			t.Errorf("ImportHostKeys(%s) = %d, %v; want ErrInvalidArgument saying %q", bad.file, n, err, bad.says)
		}
	}
	if _, err := c.ImportHostKeys(asOwner(), "nope", srv.KnownHostsPath); !errors.Is(err, rediacc.ErrNotFound) {
		t.Errorf("ImportHostKeys of an unknown machine: %v", err)
	}
	if lines, _ := c.HostKeys(asOwner(), "rekeyed"); len(lines) != 1 || lines[0] != hostLine(t, decoy.KnownHostsPath, addr) {
		t.Fatalf("a refused import changed the lines: %q", lines)
	}

	if err := c.ForgetHostKeys(asOwner(), "rekeyed"); err != nil {
		t.Fatal(err)
	}
	if lines, err := c.HostKeys(asOwner(), "rekeyed"); err != nil || len(lines) != 0 {
		t.Fatalf("after forget: %q, %v", lines, err)
	}
	for range 2 { // the second import adds nothing
		if _, err := c.ImportHostKeys(asOwner(), "rekeyed", srv.KnownHostsPath); err != nil {
			t.Fatal(err)
		}
	}
	if lines, _ := c.HostKeys(asOwner(), "rekeyed"); len(lines) != 1 {
		t.Fatalf("after two imports of one line: %q", lines)
	}
	tk = submit(t, c, rediacc.TaskSpec{Machine: "rekeyed", Command: "echo ok"})
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := get(t, c, tk.ID); got.Status != rediacc.StatusCompleted {
		t.Fatalf("after forget and import: %s %q", got.Status, got.Error)
	}
	recs, err := c.AuditLog(asOwner(), rediacc.AuditFilter{Action: "machine.hostkeys", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var results []string
	for _, r := range recs {
		results = append(results, r.Details["op"]+":"+r.Result)
	}
	if want := "forget:ok import:ok import:ok"; !strings.Contains(strings.Join(results, " "), want) || strings.Count(strings.Join(results, " "), "import:error") != 3 {
		t.Errorf("machine.hostkeys audit = %v; want 3 import errors and %s", results, want)
	}
}
