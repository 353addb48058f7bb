package rediacc_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rediacc/rediacc"
)

// These examples need registered, reachable machines: they are compiled,
// not run.

func ExampleClient_SubmitBatch() {
	ctx := rediacc.WithActor(context.Background(), "alice")
	c, err := rediacc.New(ctx, rediacc.Config{})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	specs := []rediacc.TaskSpec{
		{Machine: "db-01", Command: "pg_dump app > /backup/app.sql", Priority: rediacc.Critical},
		// Placed on the least loaded healthy web machine of prod.
		{Team: "prod", Selector: map[string]string{"role": "web"}, Command: "logrotate -f /etc/logrotate.conf", Priority: rediacc.Low},
	}
	tasks, err := c.SubmitBatch(ctx, specs) // all or none
	var be *rediacc.BatchError
	if errors.As(err, &be) {
		fmt.Printf("task %d is bad: %v\n", be.Index, be.Err)
		return
	}
	for _, t := range tasks {
		fmt.Println(t.ID, t.Machine)
	}
}

func ExampleClient_FanOut() {
	ctx := rediacc.WithActor(context.Background(), "alice")
	c, err := rediacc.New(ctx, rediacc.Config{})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	tasks, err := c.FanOut(ctx, rediacc.FanOutSpec{
		Team: "prod", Selector: map[string]string{"role": "web"},
		TaskSpec: rediacc.TaskSpec{Command: "systemctl reload nginx", Priority: rediacc.High},
	})
	if err != nil {
		panic(err)
	}
	ids := make([]string, len(tasks))
	for i, t := range tasks {
		ids[i] = t.ID
	}
	done, err := c.WaitAll(ctx, ids)
	if err != nil {
		panic(err)
	}
	for _, t := range done {
		fmt.Println(t.Machine, t.Status)
	}
}

func ExampleClient_Watch() {
	ctx, cancel := context.WithTimeout(rediacc.WithActor(context.Background(), "alice"), time.Hour)
	defer cancel()
	c, err := rediacc.New(ctx, rediacc.Config{})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	t, err := c.Submit(ctx, rediacc.TaskSpec{Team: "prod", Command: "make deploy"})
	if err != nil {
		panic(err)
	}
	events, err := c.Watch(ctx, []string{t.ID})
	if err != nil {
		panic(err)
	}
	for ev := range events { // closed once the task is finished
		fmt.Printf("%s: %s -> %s\n", ev.TaskID, ev.Previous, ev.Status)
	}
}

func ExampleClient_MachineStatus() {
	ctx := rediacc.WithActor(context.Background(), "alice")
	c, err := rediacc.New(ctx, rediacc.Config{})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	if _, err := c.ProbeMachine(ctx, "web-01"); err != nil {
		fmt.Println("probe failed:", err)
	}
	sts, err := c.MachineStatus(ctx, rediacc.MachineFilter{Team: "prod"})
	if err != nil {
		panic(err)
	}
	for _, s := range sts {
		fmt.Printf("%s cpu %.0f%% load/core %.2f mem %.0f%% running %d busy %v\n",
			s.Name, s.CPUPercent, s.LoadPerCPU, s.MemUsedPercent, s.Running, s.Busy)
	}
}

func ExampleClient_Prune() {
	ctx := rediacc.WithActor(context.Background(), "alice") // an owner
	c, err := rediacc.New(ctx, rediacc.Config{ArchiveRetention: 365 * 24 * time.Hour})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	res, err := c.Prune(ctx, 30*24*time.Hour)
	if err != nil {
		panic(err)
	}
	fmt.Println(res.TasksDeleted, "tasks and", res.AuditArchived, "audit records moved to the archive")
	// Pruned tasks stay readable, and the audit chain verifiable.
	t, err := c.TaskLog(ctx, "4d0b3c1e-9c56-4a43-b1f7-2f0f8a3c9b11")
	if err == nil {
		fmt.Print(t.Stdout)
	}
	if _, err := c.VerifyAudit(ctx); err != nil {
		fmt.Println("audit trail:", err)
	}
}
