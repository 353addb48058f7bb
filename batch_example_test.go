package rediacc_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rediacc/rediacc"
)

// Submit several tasks in one transaction: one bad spec refuses the whole
// batch, naming its index; a good batch is queued whole.
func ExampleClient_SubmitBatch() {
	e := newExampleEnv(nil)
	defer e.close()
	e.machine("db-01", "", nil)
	specs := []rediacc.TaskSpec{
		{Machine: "db-01", Command: "echo backup done", Priority: rediacc.Critical},
		{Machine: "db-01", Command: "echo logs rotated", Priority: rediacc.Low},
		{Machine: "db-01", Command: " ", Priority: rediacc.Low},
	}
	_, err := e.c.SubmitBatch(e.ctx, specs)
	var be *rediacc.BatchError
	if errors.As(err, &be) {
		fmt.Printf("task %d is bad (%v); nothing was queued\n", be.Index, errors.Is(err, rediacc.ErrInvalidTask))
	}
	tasks, err := e.c.SubmitBatch(e.ctx, specs[:2]) // all or none
	if err != nil {
		panic(err)
	}
	if err := e.c.RunUntilEmpty(e.ctx); err != nil {
		panic(err)
	}
	done, err := e.c.WaitAll(e.ctx, []string{tasks[0].ID, tasks[1].ID})
	if err != nil {
		panic(err)
	}
	for _, t := range done {
		fmt.Println(t.Priority, t.Status, strings.TrimSpace(t.Stdout))
	}
	// Output:
	// task 2 is bad (true); nothing was queued
	// critical COMPLETED backup done
	// low COMPLETED logs rotated
}

// Run one task on every web machine of a team, then wait for all of them.
func ExampleClient_FanOut() {
	e := newExampleEnv(nil)
	defer e.close()
	if _, err := e.c.CreateTeam(e.ctx, "prod", "production"); err != nil {
		panic(err)
	}
	e.machine("web-01", "prod", map[string]string{"role": "web"})
	e.machine("web-02", "prod", map[string]string{"role": "web"})
	e.machine("db-01", "prod", map[string]string{"role": "db"})
	tasks, err := e.c.FanOut(e.ctx, rediacc.FanOutSpec{
		Team: "prod", Selector: map[string]string{"role": "web"},
		TaskSpec: rediacc.TaskSpec{Command: "echo nginx reloaded", Priority: rediacc.High},
	})
	if err != nil {
		panic(err)
	}
	ids := make([]string, len(tasks))
	for i, t := range tasks {
		ids[i] = t.ID
	}
	if err := e.c.RunUntilEmpty(e.ctx); err != nil {
		panic(err)
	}
	done, err := e.c.WaitAll(e.ctx, ids)
	if err != nil {
		panic(err)
	}
	slices.SortFunc(done, func(a, b *rediacc.Task) int { return strings.Compare(a.Machine, b.Machine) })
	for _, t := range done {
		fmt.Println(t.Machine, t.Status, strings.TrimSpace(t.Stdout))
	}
	// Output:
	// web-01 COMPLETED nginx reloaded
	// web-02 COMPLETED nginx reloaded
}

// Follow a task without polling: the first event is its status when the
// watch starts, the channel closes once it is finished.
func ExampleClient_Watch() {
	e := newExampleEnv(nil)
	defer e.close()
	e.machine("web-01", "", nil)
	t, err := e.c.Submit(e.ctx, rediacc.TaskSpec{Machine: "web-01", Command: "echo deployed"})
	if err != nil {
		panic(err)
	}
	events, err := e.c.Watch(e.ctx, []string{t.ID})
	if err != nil {
		panic(err)
	}
	worker := make(chan error, 1)
	go func() { worker <- e.c.RunUntilEmpty(e.ctx) }()
	for ev := range events { // closed once the task is finished
		if ev.Previous == "" || ev.Status.Terminal() { // short states in between may be seen or not
			fmt.Println(strings.TrimSpace(string(ev.Status) + " " + ev.Task.Stdout))
		}
	}
	if err := <-worker; err != nil {
		panic(err)
	}
	// Output:
	// PENDING
	// COMPLETED deployed
}

// Probe a machine over SSH and read its status: load, memory and the tasks
// on it.
func ExampleClient_MachineStatus() {
	e := newExampleEnv(nil)
	defer e.close()
	e.machine("web-01", "", map[string]string{"role": "web"})
	if _, err := e.c.ProbeMachine(e.ctx, "web-01"); err != nil {
		fmt.Println("probe failed:", err)
	}
	sts, err := e.c.MachineStatus(e.ctx, rediacc.MachineFilter{})
	if err != nil {
		panic(err)
	}
	for _, s := range sts {
		// s.CPUPercent, s.LoadPerCPU, s.MemUsedPercent and s.DiskUsedPercent
		// hold the sample's figures.
		fmt.Printf("%s role=%s probed=%v error=%q running=%d queued=%d\n",
			s.Name, s.Labels["role"], s.Sample != nil, s.ProbeError, s.Running, s.Queued)
	}
	// Output:
	// web-01 role=web probed=true error="" running=0 queued=0
}

// exampleClock is a rediacc.Clock that can be moved forward.
type exampleClock struct{ ahead atomic.Int64 }

func (c *exampleClock) Now() time.Time          { return time.Now().Add(time.Duration(c.ahead.Load())) }
func (c *exampleClock) advance(d time.Duration) { c.ahead.Add(int64(d)) }
func (c *exampleClock) set(cfg *rediacc.Config) { cfg.Clock = c }

// Move finished tasks out of the queue store into the log archive: they
// stay readable, and the audit chain verifiable.
func ExampleClient_Prune() {
	clock := &exampleClock{}
	e := newExampleEnv(clock.set)
	defer e.close()
	e.machine("web-01", "", nil)
	t, err := e.c.Submit(e.ctx, rediacc.TaskSpec{Machine: "web-01", Command: "echo rotated"})
	if err != nil {
		panic(err)
	}
	if err := e.c.RunUntilEmpty(e.ctx); err != nil {
		panic(err)
	}
	clock.advance(31 * 24 * time.Hour)
	res, err := e.c.Prune(e.ctx, 30*24*time.Hour) // only owners may prune
	if err != nil {
		panic(err)
	}
	fmt.Println(res.TasksDeleted, "task moved to the archive")
	if _, err := e.c.Get(e.ctx, t.ID); errors.Is(err, rediacc.ErrNotFound) {
		fmt.Println("no longer in the queue store")
	}
	archived, err := e.c.TaskLog(e.ctx, t.ID)
	if err != nil {
		panic(err)
	}
	fmt.Print(archived.Status, " ", archived.Stdout)
	if _, err := e.c.VerifyAudit(e.ctx); err != nil {
		fmt.Println("audit trail:", err)
	} else {
		fmt.Println("audit trail intact")
	}
	// Output:
	// 1 task moved to the archive
	// no longer in the queue store
	// COMPLETED rotated
	// audit trail intact
}
