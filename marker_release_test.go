package rediacc_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/ssh"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// Issue 11: every attempt leaves a marker on its machine; once the
// attempt's result is recorded, the worker has it removed (in batches,
// with later commands on that machine, and the rest when it closes), so a
// machine's marker directory holds only what may still be needed, not
// every attempt of the last six days (which the old prelude's cleanup
// listed again and again).
func TestWorkerRemovesRecordedMarkers(t *testing.T) {
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 111, OwnUser: true})
	c := newClient(t, nil)
	addRealMachine(t, c, "m1", srv, 0)
	const tasks = 80
	ids := make([]string, tasks)
	for i := range ids {
		ids[i] = submit(t, c, rediacc.TaskSpec{Priority: rediacc.High, Machine: "m1", Command: "true"}).ID
	}
	if err := c.RunUntilEmpty(ctxTimeout(t, 2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if got := get(t, c, id); got.Status != rediacc.StatusCompleted {
			t.Fatalf("task %s: %s", id, got.Status)
		}
	}
	dir := filepath.Join(srv.Home, ssh.RunDirBase)
	markers := func() []string {
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), ".") {
				names = append(names, e.Name())
			}
		}
		return names
	}
	// At most one batch waits (32), plus what was in flight when the last
	// batch was sent (the per-machine limit, 8).
	if left := markers(); len(left) > 32+8 {
		t.Errorf("%d markers of %d recorded attempts left on the machine", len(left), tasks)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if left := markers(); len(left) != 0 {
		t.Errorf("markers left after the worker closed: %v", left)
	}
}
