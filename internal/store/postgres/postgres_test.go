package postgres_test

import (
	"context"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/postgres"
	"github.com/rediacc/rediacc/internal/store/postgres/pgtest"
	"github.com/rediacc/rediacc/internal/store/storetest"
)

var ctx = context.Background()

func TestMain(m *testing.M) {
	code := pgtest.Main(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			println("goleak:", err.Error())
			code = 1
		}
	}
	os.Exit(code)
}

// open opens a store in a new schema of the test server.
func open(tb testing.TB) *postgres.Engine {
	tb.Helper()
	e, err := postgres.Open(ctx, pgtest.Schema(tb))
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	return e
}

// TestConformance runs the store conformance suite, each subtest in its own
// schema, in parallel.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Engine {
		t.Parallel()
		return open(t)
	})
}

// TestGuardAcrossEngines races a guarded CreateTask against MoveMachine
// through two engines (two connection pools) on one store.
func TestGuardAcrossEngines(t *testing.T) {
	dsn := pgtest.Schema(t)
	var es [2]*postgres.Engine
	for i := range es {
		e, err := postgres.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		es[i] = e
	}
	storetest.RaceCreateVsMove(t, es[0], es[1], 200)
}
