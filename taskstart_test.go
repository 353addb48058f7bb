package rediacc_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
)

// A worker keeps the records of the machines its tasks started on, and
// starts the next task on a known machine without reading it again: the
// store checks, in the start's transaction, that the record is still the
// one the worker connects with. Here another process (raw SQL, keeping
// updated_at) points machine m at another sshd between two tasks, while
// the same client works: the second task must run on the new address.
func TestWorkerStartsWithTheMachinesCurrentRecord(t *testing.T) {
	c := newClient(t, nil)
	a := realMachine(t, c, "m", 133)
	b := realMachine(t, c, "other", 134)
	where := func() string {
		t.Helper()
		task := submit(t, c, rediacc.TaskSpec{Machine: "m", Command: `set -- $SSH_CONNECTION; echo "$3:$4"`})
		if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
			t.Fatal(err)
		}
		got := get(t, c, task.ID)
		if got.Status != rediacc.StatusCompleted {
			t.Fatalf("task: %s: %s", got.Status, got.Error)
		}
		return strings.TrimSpace(got.Stdout)
	}
	addr := func(host string, port int) string { return host + ":" + strconv.Itoa(port) }
	if got := where(); got != addr(a.Host, a.Port) {
		t.Fatalf("first task ran on %s, want %s", got, addr(a.Host, a.Port))
	}
	if err := rediacc.PointMachineForTest(c, "m", "other"); err != nil {
		t.Fatal(err)
	}
	if got := where(); got != addr(b.Host, b.Port) {
		t.Fatalf("after the machine was pointed at %s, the task ran on %s", addr(b.Host, b.Port), got)
	}
	// And back: each change is seen.
	if _, err := c.AddMachine(asOwner(), rediacc.Machine{Name: "back", Host: a.Host, Port: a.Port, User: a.User,
		IdentityFile: a.ClientKeyPath, KnownHostsFile: a.KnownHostsPath}); err != nil {
		t.Fatal(err)
	}
	if err := rediacc.PointMachineForTest(c, "m", "back"); err != nil {
		t.Fatal(err)
	}
	if got := where(); got != addr(a.Host, a.Port) {
		t.Fatalf("after the machine was pointed back at %s, the task ran on %s", addr(a.Host, a.Port), got)
	}
}
