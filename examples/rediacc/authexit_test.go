package main

import (
	"context"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/store/postgres/pgtest"
	"github.com/rediacc/rediacc/internal/vault/vaulttest"
)

// Exit codes of refusals after login (real Vault and PostgreSQL, the built
// CLI): a Vault policy that does not allow the team's path exits 3
// (permission), a revoked token 2, PostgreSQL's login refused because the
// DSN's require_auth is not met ("password required" of a server that asks
// none) 2. The old code exited 1 for the first and the last.
func TestCLIExitCodesRefusedAfterLogin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	addr, root := vaulttest.StartDevServer(t)
	rc := vaulttest.Client(t, addr, root)
	tok := vaulttest.PolicyToken(ctx, t, rc, "only-default", vaulttest.DefaultTeamOnlyPolicy)
	c := binCLI{t: t, dir: t.TempDir()}
	hc := c.with("VAULT_TOKEN=" + tok)
	vaultArgs := func(args ...string) []string {
		return append([]string{"--vault-backend", "hashicorp", "--vault-addr", addr}, args...)
	}
	if code, _, errs := c.run("", "team", "create", "other"); code != 0 {
		t.Fatalf("team create: exit %d: %s", code, errs)
	}
	if code, _, errs := hc.run("v1", vaultArgs("vault", "set", "--team", "default", "db/pw")...); code != 0 {
		t.Fatalf("vault set on the allowed path: exit %d: %s", code, errs)
	}
	hc.expect(exitPermission, "the token's policies do not allow it", vaultArgs("vault", "set", "--team", "other", "db/pw")...)
	hc.expect(exitPermission, "the token's policies do not allow it", vaultArgs("vault", "list", "--team", "other")...)
	if err := rc.Auth().Token().RevokeTreeWithContext(ctx, tok); err != nil {
		t.Fatal(err)
	}
	hc.expect(exitAuth, "VAULT_TOKEN", vaultArgs("vault", "get", "--team", "default", "db/pw")...)

	c.expect(exitAuth, "require_auth", "--store", pgtest.WithParam(pgtest.Schema(t), "require_auth", "password"), "list", "queue")
}
