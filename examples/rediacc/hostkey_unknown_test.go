package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rediacc/rediacc/ssh/sshtest"
)

// machine add with no key of the host known warns, saying how to import a
// verified key or trust the first one (--accept-new-host-key); with the
// host in --known-hosts it does not.
func TestCLIMachineAddWarnsUnknownHostKey(t *testing.T) {
	c := cli{t: t, dir: t.TempDir()}
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 110})
	empty := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	add := func(name, known string) (int, string, string) {
		return c.run("machine", "add", name, "--host", srv.Host, "--port", strconv.Itoa(srv.Port), "--user", srv.User,
			"--identity", srv.ClientKeyPath, "--known-hosts", known)
	}
	code, _, errs := add("m1", empty)
	if code != 0 {
		t.Fatalf("machine add: exit %d %s", code, errs)
	}
	for _, want := range []string{"warning", "no key of its host", "machine hostkeys import m1", "--accept-new-host-key", "ssh-keyscan -p " + strconv.Itoa(srv.Port)} {
		if !strings.Contains(errs, want) {
			t.Errorf("machine add with no known host key: stderr lacks %q:\n%s", want, errs)
		}
	}
	if code, _, errs := add("m2", srv.KnownHostsPath); code != 0 || strings.Contains(errs, "warning:") {
		t.Errorf("machine add with the host's key known: exit %d, stderr %s", code, errs)
	}
}
