package postgres_test

import (
	"testing"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/storetest"
)

// TestTwoEnginesFire: two engines (as two hosts' workers) on one store race
// to fire one schedule: every fire time exactly once.
func TestTwoEnginesFire(t *testing.T) {
	pe := openN(t, 2)
	storetest.ConcurrentFires(t, []store.Engine{pe[0], pe[1]}, 3, 40)
}

// TestGatesAcrossEngines: a drain, a pause and a maintenance window set
// through one engine hold every claim that starts afterwards on another
// (the claim reads them in its transaction, under the claim lock).
func TestGatesAcrossEngines(t *testing.T) {
	pe := openN(t, 3)
	storetest.GatesAcrossEngines(t, []store.Engine{pe[0], pe[1], pe[2]})
}
