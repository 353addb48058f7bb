package sqlite_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Close must leave no goroutine behind (connection openers, write gate).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
