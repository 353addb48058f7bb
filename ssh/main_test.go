package ssh_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run when any goroutine outlives the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
