package hashicorp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"go.uber.org/goleak"

	"github.com/rediacc/rediacc/internal/vault"
	"github.com/rediacc/rediacc/internal/vault/vaulttest"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestNormalizePrefix(t *testing.T) {
	for in, want := range map[string]string{
		"":                   "rediacc/{team}/",
		"rediacc/{team}/":    "rediacc/{team}/",
		"/a/{team}":          "a/{team}/",
		"{team}":             "{team}/",
		"apps/{team}/vault/": "apps/{team}/vault/",
	} {
		got, err := normalizePrefix(in)
		if err != nil || got != want {
			t.Errorf("normalizePrefix(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"rediacc/", "a/team-{team}/", "{team}/{team}", "a//{team}", "x{team}"} {
		if got, err := normalizePrefix(bad); err == nil {
			t.Errorf("normalizePrefix(%q) = %q, want an error", bad, got)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no address":      {Token: "t"},
		"no auth":         {Address: "http://127.0.0.1:1"},
		"both auths":      {Address: "http://127.0.0.1:1", Token: "t", AppRole: &AppRole{RoleID: "r", SecretID: "s"}},
		"approle no id":   {Address: "http://127.0.0.1:1", AppRole: &AppRole{SecretID: "s"}},
		"bad path prefix": {Address: "http://127.0.0.1:1", Token: "t", PathPrefix: "shared/"},
	} {
		if b, err := New(context.Background(), cfg); err == nil {
			b.Close()
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestEncodeDecode(t *testing.T) {
	for _, v := range [][]byte{{}, []byte("plain"), []byte("ünï"), {0xff, 0xfe}, {0, 1, 2}} {
		data := encodeValue(v)
		if _, b64 := data["encoding"]; b64 == utf8Valid(v) {
			t.Errorf("%q: encoding field presence wrong: %v", v, data)
		}
		got, err := decodeValue(data)
		if err != nil || !bytes.Equal(got, v) {
			t.Errorf("round trip of %q = %q, %v", v, got, err)
		}
	}
	for _, bad := range []map[string]any{
		{},
		{"value": 3},
		{"value": "!!", "encoding": "base64"},
		{"value": "x", "encoding": "rot13"},
	} {
		if _, err := decodeValue(bad); err == nil {
			t.Errorf("decodeValue(%v) succeeded", bad)
		}
	}
}

func utf8Valid(b []byte) bool { return string([]rune(string(b))) == string(b) }

func TestConnectionRefused(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + l.Addr().String()
	l.Close() // nothing listens there now

	_, err = New(ctxT(t), Config{Logger: testLogger(t), Address: addr, Token: "t", MaxRetries: -1})
	if !errors.Is(err, vault.ErrUnavailable) {
		t.Fatalf("New against a closed port: %v, want ErrUnavailable", err)
	}
	if !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("error does not name the address and the cause: %v", err)
	}
}

// TestDevServer runs everything that needs a real Vault against one dev
// server. It is skipped when the vault binary is missing (see
// vaulttest.StartDevServer).
func TestDevServer(t *testing.T) {
	addr, root := vaulttest.StartDevServer(t)
	rc := rootClient(t, addr, root)
	var seq atomic.Int64
	uniquePrefix := func(name string) string {
		return fmt.Sprintf("test-%s-%d/{team}/", name, seq.Add(1))
	}

	t.Run("Conformance", func(t *testing.T) {
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		vaulttest.Run(t, func(t *testing.T) vault.Backend {
			b, err := New(ctxT(t), Config{Logger: testLogger(t), Address: addr, Token: root, PathPrefix: uniquePrefix("conf")})
			if err != nil {
				t.Fatal(err)
			}
			return b
		})
	})

	t.Run("DefaultLayoutAndEncoding", func(t *testing.T) {
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		ctx := ctxT(t)
		b, err := New(ctx, Config{Logger: testLogger(t), Address: addr, Token: root})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if _, err := b.Put(ctx, "layout", "db/password", []byte("plain-text"), vault.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Put(ctx, "layout", "blob", []byte{0xff, 0x00}, vault.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		kv := rc.KVv2("secret")
		s, err := kv.Get(ctx, "rediacc/layout/db/password")
		if err != nil || s.Data["value"] != "plain-text" || len(s.Data) != 1 {
			t.Fatalf("raw UTF-8 secret = %v, %v", s, err)
		}
		s, err = kv.Get(ctx, "rediacc/layout/blob")
		if err != nil || s.Data["value"] != "/wA=" || s.Data["encoding"] != "base64" {
			t.Fatalf("raw binary secret = %v, %v", s, err)
		}
		// A secret written by the vault CLI (`vault kv put ... value=...`).
		if _, err := kv.Put(ctx, "rediacc/layout/cli", map[string]any{"value": "from-cli"}); err != nil {
			t.Fatal(err)
		}
		got, err := b.Get(ctx, "layout", "cli")
		if err != nil || string(got.Value) != "from-cli" || got.Version != 1 {
			t.Fatalf("CLI-written secret: %v, %v", got, err)
		}
		// One without a value field is reported, without quoting its data.
		if _, err := kv.Put(ctx, "rediacc/layout/odd", map[string]any{"password": "odd-secret"}); err != nil {
			t.Fatal(err)
		}
		_, err = b.Get(ctx, "layout", "odd")
		if !errors.Is(err, vault.ErrCorrupt) || strings.Contains(err.Error(), "odd-secret") {
			t.Fatalf("entry without value: %v", err)
		}
	})

	t.Run("CustomMount", func(t *testing.T) {
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		ctx := ctxT(t)
		if err := rc.Sys().MountWithContext(ctx, "teamkv", &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}); err != nil {
			t.Fatal(err)
		}
		b, err := New(ctx, Config{Logger: testLogger(t), Address: addr, Token: root, Mount: "teamkv", PathPrefix: "apps/{team}/vault"})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if _, err := b.Put(ctx, "ops", "k", []byte("v"), vault.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		if s, err := rc.KVv2("teamkv").Get(ctx, "apps/ops/vault/k"); err != nil || s.Data["value"] != "v" {
			t.Fatalf("custom mount: %v %v", s, err)
		}
	})

	t.Run("PermissionDenied", func(t *testing.T) {
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		ctx := ctxT(t)
		putPolicy(t, rc, "only-allowed", "rediacc/allowed/*")
		tok := createToken(t, rc, map[string]any{"policies": []string{"only-allowed"}, "ttl": "1h"})
		b, err := New(ctx, Config{Logger: testLogger(t), Address: addr, Token: tok})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if _, err := b.Put(ctx, "allowed", "k", []byte("v"), vault.PutOptions{}); err != nil {
			t.Fatalf("allowed path: %v", err)
		}
		_, err = b.Put(ctx, "denied", "k", []byte("v-denied"), vault.PutOptions{})
		if !errors.Is(err, vault.ErrPermissionDenied) {
			t.Fatalf("denied path: %v, want ErrPermissionDenied", err)
		}
		if !strings.Contains(err.Error(), "secret/data/rediacc/denied/k") || strings.Contains(err.Error(), "v-denied") {
			t.Fatalf("error should name the path and not the value: %v", err)
		}
		if _, err := b.List(ctx, "denied"); !errors.Is(err, vault.ErrPermissionDenied) {
			t.Fatalf("List denied: %v", err)
		}
		if _, err := New(ctx, Config{Logger: testLogger(t), Address: addr, Token: "not-a-token"}); !errors.Is(err, vault.ErrPermissionDenied) {
			t.Fatalf("bogus token: %v, want ErrPermissionDenied", err)
		}
	})

	t.Run("TokenRenewal", func(t *testing.T) {
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		ctx := ctxT(t)
		tok := createToken(t, rc, map[string]any{"policies": []string{"default", "rediacc-all"}, "ttl": "3s", "renewable": true})
		putPolicy(t, rc, "rediacc-all", "rediacc/*")
		b, err := New(ctx, Config{Logger: testLogger(t), Address: addr, Token: tok})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		// Well past the 3 s TTL, the token still works because it is renewed.
		deadline := time.Now().Add(7 * time.Second)
		for i := 0; time.Now().Before(deadline); i++ {
			if _, err := b.Put(ctx, "renew", "k", []byte(fmt.Sprint(i)), vault.PutOptions{}); err != nil {
				t.Fatalf("after %v: %v", time.Until(deadline), err)
			}
			time.Sleep(500 * time.Millisecond)
		}
		if n := b.renewals.Load(); n < 2 {
			t.Fatalf("%d renewals, want at least 2", n)
		}
	})

	t.Run("AppRole", func(t *testing.T) {
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		ctx := ctxT(t)
		roleID, secretID := setupAppRole(t, rc, "2s", "4s")
		b, err := New(ctx, Config{Logger: testLogger(t), Address: addr, AppRole: &AppRole{RoleID: roleID, SecretID: secretID}})
		if err != nil {
			t.Fatal(err)
		}
		// Operations keep working across several token lifetimes: the
		// watcher renews until the 4 s max TTL, then the backend logs in again.
		deadline := time.Now().Add(10 * time.Second)
		for i := 0; time.Now().Before(deadline); i++ {
			if _, err := b.Put(ctx, "approle", "k", []byte(fmt.Sprint(i)), vault.PutOptions{}); err != nil {
				t.Fatalf("Put #%d: %v", i, err)
			}
			if _, err := b.Get(ctx, "approle", "k"); err != nil {
				t.Fatalf("Get #%d: %v", i, err)
			}
			time.Sleep(250 * time.Millisecond)
		}
		if n := b.logins.Load(); n < 3 {
			t.Errorf("%d logins in 10 s with a 4 s max TTL, want at least 3", n)
		}
		if n := b.renewals.Load(); n < 1 {
			t.Errorf("%d renewals, want at least 1", n)
		}
		t.Logf("logins=%d renewals=%d", b.logins.Load(), b.renewals.Load())
		b.Close()
		if _, err := b.Get(ctx, "approle", "k"); !errors.Is(err, vault.ErrClosed) {
			t.Fatalf("Get after Close: %v", err)
		}
	})

	t.Run("AppRoleReloginAfterExpiry", func(t *testing.T) {
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		ctx := ctxT(t)
		roleID, secretID := setupAppRole(t, rc, "1s", "1s")
		// No background renewal: the token expires, and the next request is
		// retried after a fresh login.
		b, err := New(ctx, Config{Logger: testLogger(t), Address: addr, AppRole: &AppRole{RoleID: roleID, SecretID: secretID}, DisableRenewal: true})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if _, err := b.Put(ctx, "expiry", "k", []byte("v"), vault.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2500 * time.Millisecond)
		if _, err := b.Get(ctx, "expiry", "k"); err != nil {
			t.Fatalf("Get after expiry: %v", err)
		}
		if n := b.logins.Load(); n != 2 {
			t.Fatalf("%d logins, want 2", n)
		}
	})

	t.Run("BadAppRole", func(t *testing.T) {
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		roleID, _ := setupAppRole(t, rc, "1m", "1h")
		_, err := New(ctxT(t), Config{Logger: testLogger(t), Address: addr, AppRole: &AppRole{RoleID: roleID, SecretID: "wrong-secret-id"}})
		if err == nil || strings.Contains(err.Error(), "wrong-secret-id") {
			t.Fatalf("bad secret id: %v", err)
		}
	})
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func rootClient(t *testing.T, addr, token string) *api.Client {
	t.Helper()
	conf := api.DefaultConfig()
	conf.Address = addr
	// No idle connections, so that goleak checks see only the backend's.
	conf.HttpClient.Transport.(*http.Transport).DisableKeepAlives = true
	c, err := api.NewClient(conf)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(token)
	t.Cleanup(conf.HttpClient.CloseIdleConnections)
	return c
}

func putPolicy(t *testing.T, rc *api.Client, name, pathGlob string) {
	t.Helper()
	policy := fmt.Sprintf(`
path "secret/data/%[1]s" { capabilities = ["create", "read", "update", "delete"] }
path "secret/metadata/%[1]s" { capabilities = ["read", "list", "delete"] }
`, pathGlob)
	if err := rc.Sys().PutPolicy(name, policy); err != nil {
		t.Fatal(err)
	}
}

func createToken(t *testing.T, rc *api.Client, data map[string]any) string {
	t.Helper()
	s, err := rc.Logical().Write("auth/token/create", data)
	if err != nil {
		t.Fatal(err)
	}
	return s.Auth.ClientToken
}

var approleMounted atomic.Bool
var roleSeq atomic.Int64

// setupAppRole enables AppRole (once), creates a role with the given token
// TTLs and a policy on rediacc/*, and returns its role_id and a secret_id.
func setupAppRole(t *testing.T, rc *api.Client, ttl, maxTTL string) (roleID, secretID string) {
	t.Helper()
	if approleMounted.CompareAndSwap(false, true) {
		if err := rc.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
			t.Fatal(err)
		}
	}
	putPolicy(t, rc, "rediacc-approle", "rediacc/*")
	role := fmt.Sprintf("rediacc-%d", roleSeq.Add(1))
	if _, err := rc.Logical().Write("auth/approle/role/"+role, map[string]any{
		"token_policies": []string{"rediacc-approle"},
		"token_ttl":      ttl,
		"token_max_ttl":  maxTTL,
	}); err != nil {
		t.Fatal(err)
	}
	s, err := rc.Logical().Read("auth/approle/role/" + role + "/role-id")
	if err != nil {
		t.Fatal(err)
	}
	roleID = s.Data["role_id"].(string)
	s, err = rc.Logical().Write("auth/approle/role/"+role+"/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	return roleID, s.Data["secret_id"].(string)
}
