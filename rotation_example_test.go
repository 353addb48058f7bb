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

// Rotate the key a machine logs in with. The in-process server reads the
// keys of its user's ~/.ssh/authorized_keys at every login, as sshd does:
// the new key is added there and checked, stored in the team vault, and
// the old key removed and shown refused.
func ExampleClient_RotateKey() {
	dir, _ := os.MkdirTemp("", "rediacc-example-")
	defer os.RemoveAll(dir)
	signer, keyPEM, _ := sshtest.GenerateSigner(nil)
	home := filepath.Join(dir, "home")
	_ = os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	_ = os.WriteFile(filepath.Join(home, ".ssh", "authorized_keys"), gossh.MarshalAuthorizedKey(signer.PublicKey()), 0o600)
	srv, _ := sshtest.Start(sshtest.Options{Home: home})
	defer srv.Close()
	key, known := filepath.Join(dir, "id_ed25519"), filepath.Join(dir, "known_hosts")
	_ = os.WriteFile(key, keyPEM, 0o600)
	_ = os.WriteFile(known, []byte(srv.KnownHostsLine()+"\n"), 0o600)

	ctx := rediacc.WithActor(context.Background(), "ops")
	c, err := rediacc.New(ctx, rediacc.Config{DataDir: dir, Logger: slog.New(slog.DiscardHandler), HealthInterval: -1})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	if _, err := c.AddMachine(ctx, rediacc.Machine{Name: "web-01", Host: srv.Host(), Port: srv.Port(), User: "deploy",
		IdentityFile: key, ImportIdentity: true, KnownHostsFile: known}); err != nil {
		fmt.Println(err)
		return
	}
	res, err := c.RotateKey(ctx, rediacc.KeyRotationOptions{Machine: "web-01"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res[0].Action, res[0].From == gossh.FingerprintSHA256(signer.PublicKey()))
	for _, m := range res[0].Machines {
		fmt.Println(m.Machine, m.State)
	}
	keys, _ := c.Keys(ctx)
	fmt.Println(keys[0].Type, keys[0].Fingerprint == res[0].To, keys[0].Previous == res[0].From)
	// Output:
	// rotated true
	// web-01 revoked
	// ssh-ed25519 true true
}
