package vaulttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Environment variables read by [StartDevServer].
const (
	// EnvVaultBin names the vault binary to use, overriding PATH.
	EnvVaultBin = "REDIACC_VAULT_BIN"
	// EnvRequireVault, set to 1, turns a missing vault binary into a test
	// failure instead of a skip (for CI).
	EnvRequireVault = "REDIACC_REQUIRE_VAULT"
)

// DefaultVaultBin is where the project's tooling builds the vault binary
// (tools/vault pins its version).
const DefaultVaultBin = "/var/cache/rediacc/vault-1.21.0/vault"

// devServerStartTimeout bounds the wait for a dev server to become healthy.
const devServerStartTimeout = 60 * time.Second

// FindVaultBin returns the path of the vault binary: $REDIACC_VAULT_BIN, else
// "vault" on PATH, else [DefaultVaultBin]; "" when none exists.
func FindVaultBin() string {
	if p := os.Getenv(EnvVaultBin); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
		return ""
	}
	if p, err := exec.LookPath("vault"); err == nil {
		return p
	}
	if fi, err := os.Stat(DefaultVaultBin); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
		return DefaultVaultBin
	}
	return ""
}

// StartDevServer starts a HashiCorp Vault server in dev mode (in-memory,
// unsealed, KV v2 mounted at secret/) listening on a free 127.0.0.1 port, and
// returns its address ("http://127.0.0.1:PORT") and root token. The server is
// stopped when the test ends. Its log is in the test's temp dir and is printed
// when the server fails to start.
//
// When no vault binary is found (see [FindVaultBin]) the test is skipped, or
// fails if REDIACC_REQUIRE_VAULT=1.
func StartDevServer(t testing.TB) (addr, rootToken string) {
	t.Helper()
	bin := FindVaultBin()
	if bin == "" {
		msg := "vault binary not found; build it with `cd tools/vault && go build -o " + DefaultVaultBin +
			" github.com/hashicorp/vault` or set " + EnvVaultBin + "; set " + EnvRequireVault + "=1 to make this a failure"
		if os.Getenv(EnvRequireVault) == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}

	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		t.Fatal(err)
	}
	rootToken = "root-" + hex.EncodeToString(tok)
	home := t.TempDir() // dev mode writes ~/.vault-token: keep it out of the real home
	logPath := filepath.Join(home, "vault.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()

	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	env = append(env, "HOME="+home)

	// The port is picked by binding :0 and released before vault binds it;
	// retry in the rare case another process takes it in between.
	for attempt := 1; ; attempt++ {
		port := freePort(t)
		listen := "127.0.0.1:" + port
		cmd := exec.Command(bin, "server", "-dev",
			"-dev-listen-address="+listen,
			"-dev-root-token-id="+rootToken,
			"-log-level=warn")
		cmd.Env = env
		cmd.Dir = home
		cmd.Stdout, cmd.Stderr = logFile, logFile
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", bin, err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()

		addr = "http://" + listen
		err := waitHealthy(addr, exited)
		if err == nil {
			t.Cleanup(func() {
				_ = cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-exited:
				case <-time.After(15 * time.Second):
					_ = cmd.Process.Kill()
					<-exited
				}
			})
			return addr, rootToken
		}
		_ = cmd.Process.Kill()
		<-exited
		log, _ := os.ReadFile(logPath)
		if attempt < 3 && bytes.Contains(log, []byte("address already in use")) {
			continue
		}
		t.Fatalf("vault dev server (%s) did not become healthy at %s: %v\n--- vault log ---\n%s", bin, addr, err, tail(log, 4000))
	}
}

func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// waitHealthy polls /v1/sys/health until it answers 200 (initialized,
// unsealed, active).
func waitHealthy(addr string, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), devServerStartTimeout)
	defer cancel()
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, addr+"/v1/sys/health", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return errProcessExited
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
			}
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

type exitErr string

func (e exitErr) Error() string { return string(e) }

const errProcessExited = exitErr("vault process exited")

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
