package rediacc_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/rediacc/rediacc"
)

// A nightly database backup at 02:00 Europe/Paris, and a maintenance
// window (02:00–05:00) in which the machine's low-priority work runs: each
// fire is an ordinary task linked to its schedule; a priority-5 task waits
// for the window and says so. The clock is injected, so the example moves
// it to the night instead of waiting for it.
func ExampleClient_CreateSchedule() {
	dir, _ := os.MkdirTemp("", "rediacc-example-")
	defer os.RemoveAll(dir)
	srv, machine := exampleMachine(dir)
	defer srv.Close()
	paris, _ := time.LoadLocation("Europe/Paris")
	clock := &fakeClock{now: time.Date(2031, 6, 10, 15, 0, 0, 0, paris)}

	ctx := rediacc.WithActor(context.Background(), "ops")
	c, err := rediacc.New(ctx, rediacc.Config{DataDir: dir, Logger: slog.New(slog.DiscardHandler), Health: rediacc.HealthConfig{Interval: -1}, Clock: clock})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	if _, err := c.AddMachine(ctx, machine); err != nil {
		fmt.Println(err)
		return
	}
	s, err := c.CreateSchedule(ctx, rediacc.Schedule{
		Name: "nightly-db-backup", Cron: "0 2 * * *", TimeZone: "Europe/Paris",
		Task:      rediacc.TaskSpec{Machine: "web-01", Priority: rediacc.Critical, Command: "echo database backed up"},
		MissedRun: rediacc.MissedRunOnce, // after an outage: one catch-up run, never a burst
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("next fire:", s.NextFireAt.In(paris).Format("2006-01-02 15:04 MST"))
	// Off-peak hours: priority 4-5 work on web-01 runs from 02:00 for 3 hours.
	if _, err := c.CreateWindow(ctx, rediacc.MaintenanceWindow{Machine: "web-01", Cron: "0 2 * * *", TimeZone: "Europe/Paris", Duration: 3 * time.Hour}); err != nil {
		fmt.Println(err)
		return
	}
	archive, _ := c.Submit(ctx, rediacc.TaskSpec{Machine: "web-01", Priority: rediacc.Minimal, Command: "echo logs archived"})
	got, _ := c.Get(ctx, archive.ID)
	fmt.Println(got.Status, got.Waiting[0].Code)

	clock.Set(s.NextFireAt.Add(time.Second))     // 02:00:01 the next night
	if err := c.RunUntilEmpty(ctx); err != nil { // a worker fires the schedule and runs both tasks
		fmt.Println(err)
		return
	}
	s, _ = c.GetSchedule(ctx, "nightly-db-backup")
	task, _ := c.Get(ctx, s.LastFire.TaskIDs[0])
	fmt.Println(task.Schedule, task.ScheduledAt.In(paris).Format("15:04 MST"), task.Status, strings.TrimSpace(task.Stdout))
	got, _ = c.Get(ctx, archive.ID)
	fmt.Println(got.Status, strings.TrimSpace(got.Stdout))
	fmt.Println("last status:", s.LastStatus, "next fire:", s.NextFireAt.In(paris).Format("2006-01-02 15:04 MST"))
	// Output:
	// next fire: 2031-06-11 02:00 CEST
	// PENDING maintenance-window
	// nightly-db-backup 02:00 CEST COMPLETED database backed up
	// COMPLETED logs archived
	// last status: COMPLETED next fire: 2031-06-12 02:00 CEST
}
