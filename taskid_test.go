package rediacc_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rediacc/rediacc"
)

// Task ids are UUIDs of version 7 that increase in the order the tasks are
// submitted (within a batch and across calls), so the store's id index
// grows at its end (issue 11: random ids made a large backlog's submission
// slow down as the store grew).
func TestTaskIDsFollowSubmission(t *testing.T) {
	c := newClient(t, nil)
	realMachine(t, c, "a1", 62)
	ctx := ctxTimeout(t, time.Minute)
	specs := make([]rediacc.TaskSpec, 200)
	for i := range specs {
		specs[i] = rediacc.TaskSpec{Machine: "a1", Command: "true"}
	}
	var ids []string
	for range 2 {
		ts, err := c.SubmitBatch(ctx, specs)
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range ts {
			ids = append(ids, task.ID)
		}
		one, err := c.Submit(ctx, rediacc.TaskSpec{Machine: "a1", Command: "true"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, one.ID)
	}
	for i, id := range ids {
		u, err := uuid.Parse(id)
		if err != nil || u.Version() != 7 {
			t.Fatalf("task %d: id %q is not a UUID of version 7 (%v)", i, id, err)
		}
		if i > 0 && id <= ids[i-1] {
			t.Fatalf("task %d: id %s does not follow the id %s of the task submitted before it", i, id, ids[i-1])
		}
	}
}
