package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/sqlite"
	"github.com/rediacc/rediacc/internal/store/storetest"
)

// BenchmarkConcurrent: storetest.BenchConcurrent (Slots lifecycles at a
// time, audit records on) with a transaction per change (group=off, the
// engine before group commit) and with group commit (group=on), in the
// same run, so that their ratio is the gain.
func BenchmarkConcurrent(b *testing.B) {
	for _, c := range []struct {
		name string
		opts sqlite.Options
	}{{"group=off", sqlite.Options{MaxBatch: 1}}, {"group=on", sqlite.Options{}}} {
		b.Run(c.name, func(b *testing.B) {
			storetest.BenchConcurrent(b, func(b *testing.B) store.Engine {
				e, err := sqlite.OpenOptions(ctx, filepath.Join(b.TempDir(), "store.db"), c.opts)
				if err != nil {
					b.Fatal(err)
				}
				return e
			})
		})
	}
}
