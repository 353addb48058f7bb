package rediacc_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/rediacc/rediacc"
)

// A PENDING task says why it waits (Task.Waiting; waitReason in its JSON):
// here nothing holds it back and no worker runs yet.
func ExampleClient_Get_waiting() {
	dir, _ := os.MkdirTemp("", "rediacc-example-")
	defer os.RemoveAll(dir)
	srv, machine := exampleMachine(dir)
	defer srv.Close()
	ctx := rediacc.WithActor(context.Background(), "ops")
	c, _ := rediacc.New(ctx, rediacc.Config{DataDir: dir, Logger: slog.New(slog.DiscardHandler), Health: rediacc.HealthConfig{Interval: -1}})
	defer c.Close()
	_, _ = c.AddMachine(ctx, machine)
	task, _ := c.Submit(ctx, rediacc.TaskSpec{Machine: "web-01", Command: "true"})
	got, _ := c.Get(ctx, task.ID)
	for _, w := range got.Waiting {
		fmt.Println(w.Code, "-", w.Message)
	}
	// Output: queued - ready: waiting for a worker with a free slot
}

// RunUntilEmpty stops with a *HeldError when the tasks left are ones its
// worker may never run: here another team's, whose queue bob may see (a
// team he may not see would only be counted, in HeldError.Hidden).
func ExampleHeldError() {
	dir, _ := os.MkdirTemp("", "rediacc-example-")
	defer os.RemoveAll(dir)
	srv, machine := exampleMachine(dir)
	defer srv.Close()
	owner := rediacc.WithActor(context.Background(), "ops")
	c, _ := rediacc.New(owner, rediacc.Config{DataDir: dir, Logger: slog.New(slog.DiscardHandler), Health: rediacc.HealthConfig{Interval: -1}})
	defer c.Close()
	_, _ = c.CreateTeam(owner, "web", "")
	_, _ = c.CreateTeam(owner, "batch", "")
	_, _ = c.SetMember(owner, "batch", "bob", rediacc.RoleOperator)
	_, _ = c.SetMember(owner, "web", "bob", rediacc.RoleViewer) // sees web's queue; may not run it
	machine.Team = "web"
	_, _ = c.AddMachine(owner, machine)
	_, _ = c.Submit(owner, rediacc.TaskSpec{Machine: "web-01", Command: "true"})

	err := c.RunUntilEmpty(rediacc.WithActor(context.Background(), "bob"))
	var held *rediacc.HeldError
	if errors.As(err, &held) {
		t := held.Tasks[0]
		fmt.Println(errors.Is(err, rediacc.ErrTasksHeld), t.Team, t.Machine, t.Waiting[0].Code)
	}
	// Output: true web web-01 not-runnable
}
