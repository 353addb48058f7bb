package main

import (
	"context"
	"os"
	"testing"

	"github.com/rediacc/rediacc/internal/store/postgres/pgtest"
)

// TestMain stops the private PostgreSQL server of the tests, if one was
// started (pgtest). With REDIACC_TEST_CLI=1 the test binary is the CLI
// itself, for tests that run it as another OS user (identity_test.go).
func TestMain(m *testing.M) {
	if os.Getenv("REDIACC_TEST_CLI") == "1" {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(pgtest.Main(m))
}
