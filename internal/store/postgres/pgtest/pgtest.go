// Package pgtest gives tests a real PostgreSQL server.
//
// DSN returns a base connection string: $REDIACC_TEST_PG_DSN when set (CI
// starts one server for every package, see .ci/run), else a private
// server this test process starts once from the PostgreSQL binaries
// installed on the machine (Debian's postgresql package:
// /usr/lib/postgresql/*/bin, or initdb on PATH) on a temporary data
// directory, as a non-root user when run as root, listening on 127.0.0.1;
// Main stops it. When neither is available the test is skipped with a
// message saying how to get one, or fails when $REDIACC_REQUIRE_PG is set.
//
// Schema returns a DSN whose search_path is a new schema of that server,
// dropped when the test ends: tests (and the store conformance suite) run
// in parallel, each in its own schema.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvDSN names the environment variable holding a test server's DSN.
const EnvDSN = "REDIACC_TEST_PG_DSN"

// EnvRequire, when set to a non-empty value, turns a missing server into a
// test failure (CI sets it).
const EnvRequire = "REDIACC_REQUIRE_PG"

var (
	once     sync.Once
	baseDSN  string
	setupErr error
	server   *exec.Cmd
	dataDir  string
)

// Main runs the tests of a package and stops the private server, if one
// was started: call it from TestMain (os.Exit(pgtest.Main(m))).
func Main(m *testing.M) int {
	code := m.Run()
	Stop()
	return code
}

// Stop stops the private server (if any) and removes its data directory.
func Stop() {
	if server != nil && server.Process != nil {
		_ = server.Process.Signal(syscall.SIGINT) // fast shutdown
		done := make(chan struct{})
		go func() { _ = server.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = server.Process.Kill()
			<-done
		}
		server = nil
	}
	if dataDir != "" {
		_ = os.RemoveAll(dataDir)
		dataDir = ""
	}
}

// DSN returns the base DSN of the test server, starting a private one the
// first time when $REDIACC_TEST_PG_DSN is not set; it skips (or fails, see
// EnvRequire) the test when no server can be had.
func DSN(tb testing.TB) string {
	tb.Helper()
	once.Do(func() {
		if d := os.Getenv(EnvDSN); d != "" {
			baseDSN = d
			return
		}
		baseDSN, setupErr = start()
	})
	if setupErr != nil {
		msg := fmt.Sprintf("no PostgreSQL server for this test: %v (set %s to a server's DSN, or install Debian's postgresql package; bash .ci/run does both)", setupErr, EnvDSN)
		if os.Getenv(EnvRequire) != "" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	return baseDSN
}

// Schema creates a new schema on the test server and returns a DSN whose
// search_path selects it (the store's tables are created there by
// postgres.Open). The schema is dropped when tb ends.
func Schema(tb testing.TB) string {
	tb.Helper()
	base := DSN(tb)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "t_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		tb.Fatalf("pgtest: connecting to %s: %v", base, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `CREATE SCHEMA `+name); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if conn, err := pgx.Connect(ctx, base); err == nil {
			_, _ = conn.Exec(ctx, `DROP SCHEMA `+name+` CASCADE`)
			conn.Close(ctx)
		}
	})
	return WithParam(base, "search_path", name)
}

// WithParam returns dsn (a URL) with query parameter key set to value.
func WithParam(dsn, key, value string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return dsn
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

// BinDir returns the directory of the newest installed PostgreSQL server
// binaries (initdb, postgres).
func BinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("no PostgreSQL server binaries (initdb) in /usr/lib/postgresql/*/bin or on PATH")
}

func version(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// start runs initdb and postgres on a temporary data directory and
// returns the server's DSN.
func start() (string, error) {
	bin, err := BinDir()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "rediacc-pgtest-")
	if err != nil {
		return "", err
	}
	dataDir = dir
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		// postgres refuses to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			u, err = user.Lookup("nobody")
		}
		if err != nil {
			return "", fmt.Errorf("running as root and no postgres or nobody user to run the server as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return "", err
		}
	}
	data := filepath.Join(dir, "data")
	cmd := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "rediacc", "--auth=trust", "-E", "UTF8",
		"--locale=C", "--no-sync")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("initdb: %v: %s", err, lastLines(out))
	}
	port, err := freePort()
	if err != nil {
		return "", err
	}
	server = exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-k", dir, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=400", "-c", "shared_buffers=64MB")
	server.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL, Setpgid: true}
	server.Dir = dir
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return "", err
	}
	server.Stdout, server.Stderr = logf, logf
	if err := server.Start(); err != nil {
		return "", fmt.Errorf("starting postgres: %w", err)
	}
	dsn := fmt.Sprintf("postgres://rediacc@127.0.0.1:%d/postgres?sslmode=disable", port)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, dsn)
		if err == nil {
			_, err = conn.Exec(ctx, `CREATE DATABASE rediacc`)
			conn.Close(ctx)
			cancel()
			if err != nil {
				return "", err
			}
			return strings.Replace(dsn, "/postgres?", "/rediacc?", 1), nil
		}
		cancel()
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			return "", fmt.Errorf("postgres did not accept connections within 60s: %v: %s", err, lastLines(b))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func lastLines(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return strings.Join(lines, "\n")
}
