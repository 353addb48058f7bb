package hashicorp

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"

	"github.com/rediacc/rediacc/internal/vault"
	"github.com/rediacc/rediacc/internal/vault/vaulttest"
)

// TestSSHEngine signs with the SSH secrets engine of a real dev server.
func TestSSHEngine(t *testing.T) {
	addr, root := vaulttest.StartDevServer(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx := ctxT(t)
	b, err := New(ctx, Config{Logger: testLogger(t), Address: addr, Token: root})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	// No engine mounted: the error says how to mount one.
	if _, err := b.SSHCAPublicKey(ctx, "nossh"); err == nil || !strings.Contains(err.Error(), "vault secrets enable -path=nossh ssh") {
		t.Fatalf("CA of a missing mount: %v", err)
	}
	// A mounted engine without a CA key: "", then generated inside Vault.
	rc := vaulttest.Client(t, addr, root)
	if err := rc.Sys().Mount("bare-ssh", &apiMount); err != nil {
		t.Fatal(err)
	}
	if pub, err := b.SSHCAPublicKey(ctx, "bare-ssh"); err != nil || pub != "" {
		t.Fatalf("CA of a fresh engine = %q, %v; want none", pub, err)
	}
	pub, err := b.SSHGenerateCA(ctx, "bare-ssh", "ssh-ed25519")
	if err != nil || !strings.HasPrefix(pub, "ssh-ed25519 ") {
		t.Fatalf("generate: %q, %v", pub, err)
	}
	if again, err := b.SSHCAPublicKey(ctx, "bare-ssh"); err != nil || again != pub {
		t.Fatalf("CA after generating = %q, %v; want %q", again, err, pub)
	}

	eng := vaulttest.EnableSSHEngine(t, addr, root, "ssh-client", "rediacc", nil)
	caKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(eng.CAPublicKey))
	if err != nil {
		t.Fatal(err)
	}
	key, _, _, _, _ := ssh.ParseAuthorizedKey([]byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"))
	signed, err := b.SSHSign(ctx, SSHSignRequest{Mount: eng.Mount, Role: eng.Role, PublicKey: string(ssh.MarshalAuthorizedKey(key)),
		ValidPrincipals: "deploy", TTL: 2 * time.Minute, KeyID: "rediacc task=t1"})
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(signed))
	if err != nil {
		t.Fatal(err)
	}
	cert := pk.(*ssh.Certificate)
	if cert.KeyId != "rediacc task=t1" || fmt.Sprint(cert.ValidPrincipals) != "[deploy]" || len(cert.Extensions) != 0 ||
		string(cert.SignatureKey.Marshal()) != string(caKey.Marshal()) || string(cert.Key.Marshal()) != string(key.Marshal()) {
		t.Errorf("certificate: id %q principals %v extensions %v", cert.KeyId, cert.ValidPrincipals, cert.Extensions)
	}
	if d := time.Duration(cert.ValidBefore-cert.ValidAfter) * time.Second; d < 2*time.Minute || d > 3*time.Minute {
		t.Errorf("validity %s, want the 2 min asked for (plus Vault's back-dating)", d)
	}
	// What the role refuses is named.
	_, err = b.SSHSign(ctx, SSHSignRequest{Mount: eng.Mount, Role: eng.Role, PublicKey: string(ssh.MarshalAuthorizedKey(key)),
		ValidPrincipals: "deploy", Extensions: map[string]string{"no-such-extension": ""}})
	if err == nil || !strings.Contains(err.Error(), "ssh-client/sign/rediacc") {
		t.Errorf("refused extension: %v", err)
	}
	if _, err := b.SSHSign(ctx, SSHSignRequest{Mount: eng.Mount, Role: "missing", PublicKey: string(ssh.MarshalAuthorizedKey(key)), ValidPrincipals: "deploy"}); err == nil {
		t.Error("sign with a missing role succeeded")
	}
	if r, err := b.SSHRole(ctx, eng.Mount, "missing"); err != nil || r != nil {
		t.Errorf("missing role = %v, %v", r, err)
	}
	if r, err := b.SSHRole(ctx, eng.Mount, eng.Role); err != nil || r["allow_user_key_ids"] != true {
		t.Errorf("role = %v, %v", r, err)
	}
	// A token without the policy: ErrPermissionDenied.
	tok := createToken(t, rc, map[string]any{"policies": []string{"default"}, "ttl": "1h"})
	nb, err := New(ctx, Config{Logger: testLogger(t), Address: addr, Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	defer nb.Close()
	if _, err := nb.SSHSign(ctx, SSHSignRequest{Mount: eng.Mount, Role: eng.Role, PublicKey: string(ssh.MarshalAuthorizedKey(key)), ValidPrincipals: "deploy"}); !errors.Is(err, vault.ErrPermissionDenied) {
		t.Errorf("sign without the policy: %v, want ErrPermissionDenied", err)
	}
}

var apiMount = api.MountInput{Type: "ssh"}
