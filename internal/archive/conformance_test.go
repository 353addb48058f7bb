package archive_test

import (
	"testing"

	"github.com/rediacc/rediacc/internal/archive"
	"github.com/rediacc/rediacc/internal/archive/archivetest"
)

func TestConformance(t *testing.T) {
	t.Run("file", func(t *testing.T) {
		archivetest.Run(t, func(t *testing.T, opts archive.Options) archive.Log {
			a, err := archive.Open(t.TempDir(), opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = a.Close() })
			return a
		})
	})
	t.Run("memory", func(t *testing.T) {
		archivetest.Run(t, func(t *testing.T, opts archive.Options) archive.Log { return archive.NewMemory(opts) })
	})
}
