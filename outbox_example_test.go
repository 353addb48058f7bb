package rediacc_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/rediacc/rediacc"
)

// Every alert is stored before it is delivered: ListAlerts shows it with
// its delivery to each endpoint (here the default LogAlerter, "log").
func ExampleClient_ListAlerts() {
	dir, _ := os.MkdirTemp("", "rediacc-example-")
	defer os.RemoveAll(dir)
	srv, machine := exampleMachine(dir)
	defer srv.Close()
	ctx := rediacc.WithActor(context.Background(), "ops")
	c, err := rediacc.New(ctx, rediacc.Config{DataDir: dir, Logger: slog.New(slog.DiscardHandler), Health: rediacc.HealthConfig{Interval: -1}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	_, _ = c.AddMachine(ctx, machine)
	task, _ := c.Submit(ctx, rediacc.TaskSpec{Machine: "web-01", Command: "exit 3"}) // FailureAlert by default
	// RunUntilEmpty returns once the task failed and its alert is delivered.
	if err := c.RunUntilEmpty(ctx); err != nil {
		fmt.Println(err)
		return
	}
	alerts, err := c.ListAlerts(ctx, rediacc.AlertFilter{TaskID: task.ID})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, a := range alerts {
		fmt.Println(a.Kind, *a.ExitCode, a.ID != "")
		for _, d := range a.Deliveries {
			fmt.Println(d.Endpoint, d.State, d.Attempts)
		}
	}
	// Output:
	// task.failed 3 true
	// log delivered 1
}
