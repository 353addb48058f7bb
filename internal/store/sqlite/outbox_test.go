package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/storetest"
)

// BenchmarkOutbox: what the alert outbox adds to a failing task's writes,
// and the dispatcher's claim and settle per alert (docs/BENCHMARKS.md).
func BenchmarkOutbox(b *testing.B) {
	storetest.BenchOutbox(b, func(b *testing.B) store.Engine {
		return open(b, filepath.Join(b.TempDir(), "store.db"))
	})
}
