package main

import (
	"os"
	"testing"

	"github.com/rediacc/rediacc/internal/store/postgres/pgtest"
)

// TestMain stops the private PostgreSQL server of the tests, if one was
// started (pgtest).
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
