package rediacc_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	gossh "golang.org/x/crypto/ssh"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// A team's SSH certificate authority: the machine has no key of its own;
// each connection logs in with a certificate valid for a few minutes,
// signed for the machine's user by the CA whose key stays in the team's
// vault. The machine trusts the CA (sshd: TrustedUserCAKeys).
func ExampleClient_InitSSHCA() {
	dir, _ := os.MkdirTemp("", "rediacc-example-")
	defer os.RemoveAll(dir)
	ctx := rediacc.WithActor(context.Background(), "ops")
	c, err := rediacc.New(ctx, rediacc.Config{DataDir: dir, Logger: slog.New(slog.DiscardHandler), Health: rediacc.HealthConfig{Interval: -1}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	ca, err := c.InitSSHCA(ctx, rediacc.DefaultTeam, rediacc.SSHCAOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	// The machine's sshd trusts what ca.TrustedUserCAKeys() prints.
	caKey, _, _, _, _ := gossh.ParseAuthorizedKey([]byte(ca.TrustedUserCAKeys()))
	srv, _ := sshtest.Start(sshtest.Options{UserCAs: []gossh.PublicKey{caKey}})
	defer srv.Close()
	known := filepath.Join(dir, "known_hosts")
	_ = os.WriteFile(known, []byte(srv.KnownHostsLine()+"\n"), 0o600)
	if _, err := c.AddMachine(ctx, rediacc.Machine{Name: "web-01", Host: srv.Host(), Port: srv.Port(), User: "deploy",
		Auth: rediacc.AuthSSHCA, KnownHostsFile: known}); err != nil {
		fmt.Println(err)
		return
	}
	task, _ := c.Submit(ctx, rediacc.TaskSpec{Machine: "web-01", Command: "echo signed in"})
	if err := c.RunUntilEmpty(ctx); err != nil {
		fmt.Println(err)
		return
	}
	done, _ := c.Wait(ctx, task.ID)
	fmt.Println(ca.CertTTL, ca.Active().State, done.Status, done.Stdout)
	// Output: 5m0s active COMPLETED signed in
}
