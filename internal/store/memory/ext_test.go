package memory_test

import (
	"testing"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/memory"
	"github.com/rediacc/rediacc/internal/store/storetest"
)

func BenchmarkBatch(b *testing.B) {
	storetest.BenchBatch(b, func(b *testing.B) store.Engine { return memory.New() })
}
