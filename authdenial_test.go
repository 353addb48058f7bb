package rediacc_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/internal/store/postgres/pgtest"
	"github.com/rediacc/rediacc/internal/vault/vaulttest"
)

// Exit codes, kind "refusals after login": a HashiCorp Vault 403 on an
// operation after the client connected is typed for a program to act on —
// a policy that does not allow the path is ErrPermissionDenied (the CLI
// exits 3), a token revoked mid-run ErrCredentialsRefused (exit 2). The
// old code returned the vault package's own denial, which matched neither
// (exit 1). Real Vault server.
func TestVaultDenialsAfterLoginTyped(t *testing.T) {
	ctx, cancel := context.WithTimeout(asOwner(), 2*time.Minute)
	defer cancel()
	addr, root := vaulttest.StartDevServer(t)
	rc := vaulttest.Client(t, addr, root)
	tok := vaulttest.PolicyToken(ctx, t, rc, "only-default", vaulttest.DefaultTeamOnlyPolicy)
	v, err := rediacc.NewHashiCorpVault(ctx, rediacc.HashiCorpVaultConfig{Address: addr, Token: tok, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, func(cfg *rediacc.Config) { cfg.Vault, cfg.Health.Interval = v, -1 })
	if _, err := c.CreateTeam(asOwner(), "other", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetSecret(ctx, rediacc.DefaultTeam, "db/pw", []byte("v1"), nil); err != nil {
		t.Fatalf("allowed path: %v", err)
	}
	// Policy: the token is valid, the path is not allowed.
	_, err = c.SetSecret(ctx, "other", "db/pw", []byte("v2"), nil)
	if !errors.Is(err, rediacc.ErrPermissionDenied) || errors.Is(err, rediacc.ErrCredentialsRefused) ||
		!strings.Contains(err.Error(), "the token's policies do not allow it (the token itself is valid") {
		t.Fatalf("denied path: %v, want ErrPermissionDenied saying the policy does not allow it", err)
	}
	if _, err := c.GetSecret(ctx, "other", "db/pw"); !errors.Is(err, rediacc.ErrPermissionDenied) {
		t.Fatalf("read on the denied path: %v", err)
	}
	// The token revoked mid-run: credentials, not permission.
	if err := rc.Auth().Token().RevokeTreeWithContext(ctx, tok); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetSecret(ctx, rediacc.DefaultTeam, "db/pw")
	if !errors.Is(err, rediacc.ErrCredentialsRefused) || errors.Is(err, rediacc.ErrPermissionDenied) ||
		!strings.Contains(err.Error(), "the token is no longer valid") {
		t.Fatalf("revoked token: %v, want ErrCredentialsRefused saying the token is no longer valid", err)
	}
}

// PostgreSQL logins refused other than by a wrong password at open: the
// client refusing the server's authentication (require_auth: "password
// required" when the server asks none), and a login refused later, on a
// new pooled connection, after the role lost LOGIN mid-run. Both are
// ErrCredentialsRefused (the CLI exits 2); the old code returned the
// driver's error (exit 1). Real PostgreSQL.
func TestPostgresLoginRefusedTyped(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dsn := pgtest.Schema(t)
	_, err := rediacc.OpenPostgres(ctx, pgtest.WithParam(dsn, "require_auth", "password"))
	if !errors.Is(err, rediacc.ErrCredentialsRefused) || !strings.Contains(err.Error(), "require_auth") {
		t.Fatalf("require_auth=password against a server that asks none: %v, want ErrCredentialsRefused", err)
	}

	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	var schema string
	if err := admin.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		t.Fatal(err)
	}
	role := "late_" + schema
	roleDSN := pgLoginRole(ctx, t, admin, dsn, role, "LOGIN SUPERUSER")
	st, err := rediacc.OpenPostgres(ctx, roleDSN)
	if err != nil {
		t.Fatal(err)
	}
	c, err := rediacc.New(rediacc.WithActor(ctx, role), rediacc.Config{Store: st, DataDir: t.TempDir(), Logger: testLogger(t), Health: rediacc.HealthConfig{Interval: -1}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.List(rediacc.WithActor(ctx, role), rediacc.ListFilter{}); err != nil {
		t.Fatalf("before: %v", err)
	}
	// The role loses LOGIN and its sessions end: the pool's next login is
	// refused.
	if _, err := admin.Exec(ctx, `ALTER ROLE `+role+` NOLOGIN`); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, role); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, err = c.List(rediacc.WithActor(ctx, role), rediacc.ListFilter{})
		if errors.Is(err, rediacc.ErrCredentialsRefused) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the role lost LOGIN: %v, want ErrCredentialsRefused", err)
		}
	}
	if !strings.Contains(err.Error(), "not permitted to log in") {
		t.Errorf("the error does not say why: %v", err)
	}
}
