package vaulttest

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"
)

// SSHEngine describes an SSH secrets engine set up by EnableSSHEngine.
type SSHEngine struct {
	// Mount and Role are the engine's mount path and its signing role.
	Mount, Role string
	// CAPublicKey is the engine's CA public key (authorized_keys form).
	CAPublicKey string
}

// EnableSSHEngine mounts HashiCorp Vault's SSH secrets engine at mount on
// the server at addr (as root token), has it generate an ed25519 CA key
// pair and creates a signing role for user certificates: allowed_users
// "*", allow_user_key_ids, no default extensions, the extensions of
// rediacc's machines allowed, force-command allowed, ttl 5m, max_ttl 1h.
// role, when non-nil, overrides or adds role settings. It calls t.Fatal on
// failure.
func EnableSSHEngine(t testing.TB, addr, rootToken, mount, roleName string, role map[string]any) SSHEngine {
	t.Helper()
	c := Client(t, addr, rootToken)
	ctx := context.Background()
	if err := c.Sys().MountWithContext(ctx, mount, &api.MountInput{Type: "ssh"}); err != nil {
		t.Fatalf("vaulttest: mount the SSH engine at %s: %v", mount, err)
	}
	s, err := c.Logical().WriteWithContext(ctx, mount+"/config/ca", map[string]any{"generate_signing_key": true, "key_type": "ssh-ed25519"})
	if err != nil {
		t.Fatalf("vaulttest: generate the SSH CA of %s: %v", mount, err)
	}
	pub, _ := s.Data["public_key"].(string)
	data := map[string]any{
		"key_type": "ca", "allow_user_certificates": true, "allowed_users": "*", "allow_user_key_ids": true,
		"default_extensions": map[string]any{}, "allowed_extensions": "permit-pty,permit-port-forwarding,permit-agent-forwarding,permit-X11-forwarding,permit-user-rc",
		"allowed_critical_options": "force-command", "ttl": "5m", "max_ttl": "1h",
	}
	for k, v := range role {
		data[k] = v
	}
	if _, err := c.Logical().WriteWithContext(ctx, mount+"/roles/"+roleName, data); err != nil {
		t.Fatalf("vaulttest: create the SSH role %s/roles/%s: %v", mount, roleName, err)
	}
	return SSHEngine{Mount: mount, Role: roleName, CAPublicKey: strings.TrimSpace(pub)}
}

// Client returns a Vault API client for addr authenticated with token,
// without keep-alive connections (so leak checks see none of its).
func Client(t testing.TB, addr, token string) *api.Client {
	t.Helper()
	conf := api.DefaultConfig()
	conf.Address = addr
	conf.HttpClient.Transport.(*http.Transport).DisableKeepAlives = true
	c, err := api.NewClient(conf)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(token)
	t.Cleanup(conf.HttpClient.CloseIdleConnections)
	return c
}

// PolicyToken writes policy (HCL) to the server of c under name and
// returns a new token (TTL 1 h) holding only that policy.
func PolicyToken(ctx context.Context, t testing.TB, c *api.Client, name, policy string) string {
	t.Helper()
	if err := c.Sys().PutPolicyWithContext(ctx, name, policy); err != nil {
		t.Fatalf("vaulttest: write policy %s: %v", name, err)
	}
	sec, err := c.Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{Policies: []string{name}, TTL: "1h"})
	if err != nil {
		t.Fatalf("vaulttest: token with policy %s: %v", name, err)
	}
	return sec.Auth.ClientToken
}

// DefaultTeamOnlyPolicy allows the KV paths of team "default" under the
// rediacc prefix and nothing else.
const DefaultTeamOnlyPolicy = `
path "secret/data/rediacc/default/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "secret/metadata/rediacc/default/*" { capabilities = ["read", "list", "delete"] }
path "secret/metadata/rediacc/default" { capabilities = ["list"] }
`
