package memory_test

import (
	"testing"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/memory"
	"github.com/rediacc/rediacc/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Engine { return memory.New() })
}

func BenchmarkEngine(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Engine { return memory.New() })
}

// BenchmarkConcurrent: storetest.BenchConcurrent with task.assign
// appended after the claim (separate) and committed with it (fold).
func BenchmarkConcurrent(b *testing.B) {
	for _, fold := range []bool{false, true} {
		name := "separate"
		if fold {
			name = "fold"
		}
		b.Run(name, func(b *testing.B) {
			storetest.BenchConcurrent(b, func(b *testing.B) store.Engine { return memory.New() }, fold)
		})
	}
}

// BenchmarkClaims: storetest.BenchClaims (claims alone, from a backlog).
func BenchmarkClaims(b *testing.B) {
	storetest.BenchClaims(b, func(b *testing.B) store.Engine { return memory.New() })
}
