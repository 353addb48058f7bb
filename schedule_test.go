package rediacc_test

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
)

// Set moves the clock to t.
func (f *fakeClock) Set(t time.Time) {
	f.mu.Lock()
	f.now = t
	f.mu.Unlock()
}

func paris(t testing.TB) *time.Location {
	t.Helper()
	l, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// alertLog collects the alerts a client raises.
type alertLog struct {
	mu     sync.Mutex
	alerts []rediacc.Alert
}

func (l *alertLog) Alert(_ context.Context, a rediacc.Alert) error {
	l.mu.Lock()
	l.alerts = append(l.alerts, a)
	l.mu.Unlock()
	return nil
}

func (l *alertLog) kinds(kind string) []rediacc.Alert {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []rediacc.Alert
	for _, a := range l.alerts {
		if a.Kind == kind {
			out = append(out, a)
		}
	}
	return out
}

// schedClient is a client on an injected clock at start with an
// in-process machine m1 and an alert log.
func schedClient(t *testing.T, start time.Time, tune func(*rediacc.Config)) (*rediacc.Client, *fakeClock, *alertLog) {
	t.Helper()
	clock := &fakeClock{now: start}
	alerts := &alertLog{}
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.Clock, cfg.Alerter, cfg.AlertRateWindow = clock, alerts, time.Nanosecond
		cfg.Health.Interval = -1 // the in-process machine is this host: its load says nothing here
		if tune != nil {
			tune(cfg)
		}
	})
	inProcessMachine(t, c, "m1")
	return c, clock, alerts
}

func createSchedule(t *testing.T, c *rediacc.Client, s rediacc.Schedule) *rediacc.Schedule {
	t.Helper()
	got, err := c.CreateSchedule(asOwner(), s)
	if err != nil {
		t.Fatalf("CreateSchedule(%s): %v", s.Name, err)
	}
	return got
}

// runAt moves the clock to at and runs the worker until the queue is
// empty: it fires what is due at that instant and runs the tasks.
func runAt(t *testing.T, c *rediacc.Client, clock *fakeClock, at time.Time) {
	t.Helper()
	clock.Set(at)
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
}

// scheduledTasks returns the tasks of schedule name, oldest first.
func scheduledTasks(t *testing.T, c *rediacc.Client, name string) []*rediacc.Task {
	t.Helper()
	all, err := c.List(asOwner(), rediacc.ListFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var out []*rediacc.Task
	for _, task := range all {
		if task.Schedule == name {
			out = append(out, task)
		}
	}
	return out
}

func wantScheduledAt(t *testing.T, what string, tasks []*rediacc.Task, want ...time.Time) {
	t.Helper()
	if len(tasks) != len(want) {
		var got []time.Time
		for _, task := range tasks {
			got = append(got, task.ScheduledAt)
		}
		t.Fatalf("%s: %d tasks scheduled at %v, want %d at %v", what, len(tasks), got, len(want), want)
	}
	for i, task := range tasks {
		if !task.ScheduledAt.Equal(want[i]) {
			t.Fatalf("%s: task %d scheduled at %v, want %v", what, i, task.ScheduledAt, want[i].UTC())
		}
	}
}

// A nightly 02:30 Europe/Paris backup across the spring-forward night
// (2031-03-30, when 02:30 does not exist): it does not fire that night and
// fires the next night at 02:30 CEST; each run is an ordinary task that
// completes, linked to its schedule and scheduled time.
func TestScheduleSpringForwardNight(t *testing.T) { onStores(t, testScheduleSpringForwardNight) }

func testScheduleSpringForwardNight(t *testing.T, store func(*rediacc.Config)) {
	l := paris(t)
	c, clock, _ := schedClient(t, time.Date(2031, 3, 28, 12, 0, 0, 0, l), store)
	s := createSchedule(t, c, rediacc.Schedule{Name: "nightly-backup", Cron: "30 2 * * *", TimeZone: "Europe/Paris",
		Task: rediacc.TaskSpec{Machine: "m1", Priority: rediacc.Critical, Command: "echo backup done"}})
	if s.Team != rediacc.DefaultTeam || s.Owner != "alice" || !s.NextFireAt.Equal(time.Date(2031, 3, 29, 2, 30, 0, 0, l)) {
		t.Fatalf("created: team %q owner %q next %v", s.Team, s.Owner, s.NextFireAt)
	}
	runAt(t, c, clock, time.Date(2031, 3, 29, 2, 30, 0, 0, l).Add(time.Second))
	got, err := c.GetSchedule(asOwner(), "nightly-backup")
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2031, 3, 31, 2, 30, 0, 0, l); !got.NextFireAt.Equal(want) {
		t.Fatalf("after the 29th: next fire %v, want %v (02:30 does not exist on the 30th)", got.NextFireAt, want.UTC())
	}
	if got.LastFire == nil || got.LastFire.Outcome != rediacc.FireCreated || got.LastStatus != "COMPLETED" {
		t.Fatalf("last fire %+v status %q", got.LastFire, got.LastStatus)
	}
	runAt(t, c, clock, time.Date(2031, 3, 30, 4, 0, 0, 0, l)) // the short night: nothing due
	runAt(t, c, clock, time.Date(2031, 3, 31, 2, 30, 0, 0, l).Add(2*time.Second))
	tasks := scheduledTasks(t, c, "nightly-backup")
	wantScheduledAt(t, "spring forward", tasks, time.Date(2031, 3, 29, 2, 30, 0, 0, l), time.Date(2031, 3, 31, 2, 30, 0, 0, l))
	for _, task := range tasks {
		if task.Status != rediacc.StatusCompleted || task.Stdout != "backup done\n" || task.ScheduleID != s.ID || task.Priority != rediacc.Critical {
			t.Fatalf("scheduled task: %s %q schedule %q", task.Status, task.Stdout, task.ScheduleID)
		}
	}
	b, err := json.Marshal(tasks[1])
	if err != nil {
		t.Fatal(err)
	}
	var j map[string]any
	_ = json.Unmarshal(b, &j)
	if j["scheduleId"] != s.ID || j["schedule"] != "nightly-backup" || j["scheduledAt"] != "2031-03-31T00:30:00Z" {
		t.Fatalf("task JSON lacks its schedule: %s", b)
	}
}

// The fall-back night (2031-10-26, when 02:30 happens twice): the nightly
// 02:30 fires twice, at 02:30 CEST and at 02:30 CET an hour later, as
// robfig/cron defines it.
func TestScheduleFallBackNight(t *testing.T) {
	l := paris(t)
	c, clock, _ := schedClient(t, time.Date(2031, 10, 25, 12, 0, 0, 0, l), nil)
	createSchedule(t, c, rediacc.Schedule{Name: "nightly", Cron: "30 2 * * *", TimeZone: "Europe/Paris",
		Task: rediacc.TaskSpec{Machine: "m1", Command: "echo ok"}})
	first, second := time.Date(2031, 10, 26, 0, 30, 0, 0, time.UTC), time.Date(2031, 10, 26, 1, 30, 0, 0, time.UTC)
	runAt(t, c, clock, first.Add(time.Second))
	runAt(t, c, clock, first.Add(30*time.Minute))
	runAt(t, c, clock, second.Add(time.Second))
	runAt(t, c, clock, time.Date(2031, 10, 27, 1, 30, 1, 0, time.UTC))
	wantScheduledAt(t, "fall back", scheduledTasks(t, c, "nightly"), first, second, time.Date(2031, 10, 27, 2, 30, 0, 0, l))
}

// Workers away for three nights: with the default missed-run policy the
// three fires are recorded as missed (one decision, one alert, no task);
// with run-once, one catch-up task runs, never three.
func TestScheduleMissedRunsAfterOutage(t *testing.T) { onStores(t, testScheduleMissedRunsAfterOutage) }

func testScheduleMissedRunsAfterOutage(t *testing.T, store func(*rediacc.Config)) {
	start := time.Date(2031, 5, 7, 12, 0, 0, 0, time.UTC)
	back := time.Date(2031, 5, 10, 5, 0, 0, 0, time.UTC)
	night := func(d int) time.Time { return time.Date(2031, 5, d, 2, 0, 0, 0, time.UTC) }
	for _, policy := range []rediacc.MissedRunPolicy{"", rediacc.MissedRunOnce} {
		t.Run(map[rediacc.MissedRunPolicy]string{"": "skip", rediacc.MissedRunOnce: "run-once"}[policy], func(t *testing.T) {
			c, clock, alerts := schedClient(t, start, store)
			createSchedule(t, c, rediacc.Schedule{Name: "nightly", Cron: "0 2 * * *", MissedRun: policy,
				Task: rediacc.TaskSpec{Machine: "m1", Command: "echo ok"}})
			runAt(t, c, clock, back)
			s, err := c.GetSchedule(asOwner(), "nightly")
			if err != nil {
				t.Fatal(err)
			}
			fires, err := c.ScheduleFires(asOwner(), "nightly", 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(fires) != 1 || !fires[0].MissedFrom.Equal(night(8)) || !fires[0].MissedTo.Equal(night(10)) ||
				!fires[0].ScheduledAt.Equal(night(10)) || !s.NextFireAt.Equal(night(11)) {
				t.Fatalf("fires %+v, next %v", fires, s.NextFireAt)
			}
			tasks := scheduledTasks(t, c, "nightly")
			if policy == rediacc.MissedRunOnce {
				if fires[0].Outcome != rediacc.FireCreated || !fires[0].CatchUp || len(tasks) != 1 || tasks[0].Status != rediacc.StatusCompleted {
					t.Fatalf("run-once: fire %+v, %d tasks", fires[0], len(tasks))
				}
				wantScheduledAt(t, "catch-up", tasks, night(10))
				if n := len(alerts.kinds(rediacc.AlertScheduleMissed)); n != 0 {
					t.Fatalf("run-once raised %d missed alerts", n)
				}
			} else {
				if fires[0].Outcome != rediacc.FireMissed || len(tasks) != 0 || !strings.Contains(fires[0].Reason, "2031-05-08 02:00 UTC") {
					t.Fatalf("skip: fire %+v, %d tasks", fires[0], len(tasks))
				}
				waitFor(t, "the missed alert", func() bool { return len(alerts.kinds(rediacc.AlertScheduleMissed)) >= 1 }) // delivered from the outbox
				as := alerts.kinds(rediacc.AlertScheduleMissed)
				if len(as) != 1 || as[0].Schedule != "nightly" || as[0].Team != rediacc.DefaultTeam || !strings.Contains(as[0].Message, "missed") {
					t.Fatalf("missed alerts: %+v", as)
				}
			}
			// The next night is on time again: one task.
			runAt(t, c, clock, night(11).Add(10*time.Second))
			if n := len(scheduledTasks(t, c, "nightly")); n != map[rediacc.MissedRunPolicy]int{"": 1, rediacc.MissedRunOnce: 2}[policy] {
				t.Fatalf("after the next night: %d tasks", n)
			}
		})
	}
}

// A fire found later than the misfire threshold counts as missed; within
// it, as on time.
func TestScheduleMisfireThreshold(t *testing.T) {
	start := time.Date(2031, 5, 7, 12, 0, 0, 0, time.UTC)
	c, clock, _ := schedClient(t, start, nil)
	createSchedule(t, c, rediacc.Schedule{Name: "late", Cron: "0 * * * *", MisfireThreshold: 10 * time.Minute,
		Task: rediacc.TaskSpec{Machine: "m1", Command: "true"}})
	runAt(t, c, clock, start.Add(time.Hour+9*time.Minute)) // 9 min late: on time
	runAt(t, c, clock, start.Add(2*time.Hour+11*time.Minute))
	fires, _ := c.ScheduleFires(asOwner(), "late", 0)
	if len(fires) != 2 || fires[1].Outcome != rediacc.FireCreated || fires[0].Outcome != rediacc.FireMissed {
		t.Fatalf("fires: %+v", fires)
	}
	if _, err := c.CreateSchedule(asOwner(), rediacc.Schedule{Name: "bad", Cron: "@hourly", MisfireThreshold: 48 * time.Hour,
		Task: rediacc.TaskSpec{Machine: "m1", Command: "true"}}); !errors.Is(err, rediacc.ErrInvalidArgument) {
		t.Fatalf("threshold of 48h: %v", err)
	}
}

// The overlap policies, through TriggerSchedule (run now) and the worker:
// skip refuses while the previous run is unfinished, allow lets runs
// overlap, cancel-previous stops the running one (its remote command
// ended) and starts the new one.
func TestScheduleOverlapPolicies(t *testing.T) { onStores(t, testScheduleOverlapPolicies) }

func testScheduleOverlapPolicies(t *testing.T, store func(*rediacc.Config)) {
	start := time.Date(2031, 5, 7, 12, 0, 0, 0, time.UTC)
	c, _, alerts := schedClient(t, start, store)
	realMachine(t, c, "r1", 13) // a real sshd: a cancelled command's processes end
	marker := "rediacc-overlap-" + filepath.Base(t.TempDir())
	trigger := func(name string) ([]*rediacc.Task, error) { return c.TriggerSchedule(asOwner(), name) }
	for _, p := range []rediacc.OverlapPolicy{rediacc.OverlapSkip, rediacc.OverlapAllow, rediacc.OverlapCancelPrevious} {
		createSchedule(t, c, rediacc.Schedule{Name: "o-" + string(p), Cron: "@daily", Overlap: p,
			Task: rediacc.TaskSpec{Machine: "r1", Command: "sh -c 'sleep 300; echo " + marker + "'; echo late"}})
	}
	// No worker runs: the first run stays PENDING.
	first, err := trigger("o-skip")
	if err != nil || len(first) != 1 || first[0].Status != rediacc.StatusPending || first[0].Schedule != "o-skip" {
		t.Fatalf("first trigger: %v %v", first, err)
	}
	if _, err := trigger("o-skip"); !errors.Is(err, rediacc.ErrScheduleOverlap) || !strings.Contains(err.Error(), first[0].ID) {
		t.Fatalf("second trigger under skip: %v, want ErrScheduleOverlap naming %s", err, first[0].ID)
	}
	if n := len(scheduledTasks(t, c, "o-skip")); n != 1 {
		t.Fatalf("skip: %d tasks", n)
	}
	waitFor(t, "the skipped fire's alert", func() bool { return len(alerts.kinds(rediacc.AlertScheduleMissed)) >= 1 }) // delivered from the outbox
	if as := alerts.kinds(rediacc.AlertScheduleMissed); len(as) != 1 || as[0].Schedule != "o-skip" {
		t.Fatalf("skipped fire alerts: %+v", as)
	}
	for range 2 {
		if _, err := trigger("o-allow"); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(scheduledTasks(t, c, "o-allow")); n != 2 {
		t.Fatalf("allow: %d tasks", n)
	}
	// cancel-previous, with the previous run PROCESSING on the machine.
	prev, err := trigger("o-cancel-previous")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{first[0].ID} {
		if _, err := c.Cancel(asOwner(), id); err != nil { // keep the worker on the one that matters
			t.Fatal(err)
		}
	}
	for _, task := range scheduledTasks(t, c, "o-allow") {
		if _, err := c.Cancel(asOwner(), task.ID); err != nil {
			t.Fatal(err)
		}
	}
	runWorker(t, c)
	waitStatus(t, c, prev[0].ID, rediacc.StatusProcessing)
	// Cancel a command that runs, not one still starting; remember its
	// processes (the next run's look the same).
	var pids []string
	waitFor(t, "the remote command to start", func() bool {
		out, _ := exec.Command("pgrep", "-f", "sleep 300; echo "+marker).Output()
		pids = strings.Fields(string(out))
		return len(pids) > 0
	})
	next, err := trigger("o-cancel-previous")
	if err != nil || len(next) != 1 {
		t.Fatalf("trigger under cancel-previous: %v %v", next, err)
	}
	got := waitStatus(t, c, prev[0].ID, rediacc.StatusCancelled)
	if strings.Contains(got.Stdout, "late") {
		t.Fatalf("the cancelled run finished: %q", got.Stdout)
	}
	waitFor(t, "the previous run's remote processes to end", func() bool {
		for _, pid := range pids {
			if exec.Command("ps", "-p", pid).Run() == nil { // ps, not kill -0: another user's process
				return false
			}
		}
		return true
	})
	fires, _ := c.ScheduleFires(asOwner(), "o-cancel-previous", 0)
	if len(fires) != 2 || !fires[0].Manual || len(fires[0].CancelledIDs) != 1 || fires[0].CancelledIDs[0] != prev[0].ID {
		t.Fatalf("fires: %+v", fires)
	}
	if _, err := c.Cancel(asOwner(), next[0].ID); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, next[0].ID, rediacc.StatusCancelled)
	noRemoteProcess(t, marker)
}

// A cron fire under the default overlap policy while the previous run is
// still going is recorded as skipped and alerted; the next fire after the
// run finished submits again.
func TestScheduleOverlapSkipOnCronFires(t *testing.T) {
	onStores(t, testScheduleOverlapSkipOnCronFires)
}

func testScheduleOverlapSkipOnCronFires(t *testing.T, store func(*rediacc.Config)) {
	start := time.Date(2031, 5, 7, 12, 0, 0, 0, time.UTC)
	c, clock, alerts := schedClient(t, start, store)
	createSchedule(t, c, rediacc.Schedule{Name: "hourly", Cron: "@hourly", Task: rediacc.TaskSpec{Machine: "m1", Command: "true"}})
	// A worker whose actor may not run the default team's tasks fires
	// schedules all the same (the owner's authority submits them); the
	// tasks stay PENDING.
	if _, err := c.CreateTeam(asOwner(), "elsewhere", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetMember(asOwner(), "elsewhere", "scheduler", rediacc.RoleOperator); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(rediacc.WithActor(context.Background(), "scheduler"))
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFires := func(n int) []rediacc.ScheduleFire {
		t.Helper()
		var fires []rediacc.ScheduleFire
		waitFor(t, "fires", func() bool {
			fires, _ = c.ScheduleFires(asOwner(), "hourly", 0)
			return len(fires) == n
		})
		return fires
	}
	clock.Set(start.Add(time.Hour + time.Second))
	fires := waitFires(1)
	if fires[0].Outcome != rediacc.FireCreated {
		t.Fatalf("first fire: %+v", fires[0])
	}
	clock.Set(start.Add(2*time.Hour + time.Second))
	fires = waitFires(2)
	if fires[0].Outcome != rediacc.FireSkipped || !strings.Contains(fires[0].Reason, fires[1].TaskIDs[0]) {
		t.Fatalf("second fire: %+v", fires[0])
	}
	waitFor(t, "a missed alert", func() bool { return len(alerts.kinds(rediacc.AlertScheduleMissed)) == 1 })
	if _, err := c.Cancel(asOwner(), fires[1].TaskIDs[0]); err != nil {
		t.Fatal(err)
	}
	clock.Set(start.Add(3*time.Hour + time.Second))
	if fires = waitFires(3); fires[0].Outcome != rediacc.FireCreated {
		t.Fatalf("third fire: %+v", fires[0])
	}
	// The fire's audit record: the owner's authority, the worker named.
	recs, err := c.AuditLog(asOwner(), rediacc.AuditFilter{Action: "schedule.fire"})
	if err != nil || len(recs) != 3 {
		t.Fatalf("schedule.fire records: %d %v", len(recs), err)
	}
	if r := recs[0]; r.Actor != "alice" || r.Details["worker_actor"] != "scheduler" || r.Details["worker"] != c.WorkerID() || r.Details["outcome"] != "created" {
		t.Fatalf("fire record: %+v", r)
	}
}

// The schedule fires as its owner, checked again at every fire: an owner
// who lost the role, or a machine that left the team, makes the fire fail
// (recorded, alerted, audited), submitting nothing; restored, it fires.
func TestScheduleRechecksAuthorityAtFire(t *testing.T) {
	onStores(t, testScheduleRechecksAuthorityAtFire)
}

func testScheduleRechecksAuthorityAtFire(t *testing.T, store func(*rediacc.Config)) {
	start := time.Date(2031, 5, 7, 12, 0, 0, 0, time.UTC)
	c, clock, alerts := schedClient(t, start, store)
	owner := asOwner()
	for _, team := range []string{"prod", "staging"} {
		if _, err := c.CreateTeam(owner, team, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.MoveMachine(owner, "m1", "prod"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetMember(owner, "prod", "olga", rediacc.RoleOperator); err != nil {
		t.Fatal(err)
	}
	olga := rediacc.WithActor(context.Background(), "olga")
	s, err := c.CreateSchedule(olga, rediacc.Schedule{Name: "hourly", Cron: "@hourly", Task: rediacc.TaskSpec{Machine: "m1", Command: "echo ok"}})
	if err != nil {
		t.Fatal(err)
	}
	if s.Owner != "olga" || s.Team != "prod" {
		t.Fatalf("owner %q team %q", s.Owner, s.Team)
	}
	hour := func(n int) time.Time { return start.Add(time.Duration(n)*time.Hour + time.Second) }
	runAt(t, c, clock, hour(1))
	if err := c.RemoveMember(owner, "prod", "olga"); err != nil {
		t.Fatal(err)
	}
	runAt(t, c, clock, hour(2))
	fires, _ := c.ScheduleFires(owner, "hourly", 0)
	if fires[0].Outcome != rediacc.FireFailed || !strings.Contains(fires[0].Reason, "permission denied") || !strings.Contains(fires[0].Reason, "olga") {
		t.Fatalf("fire after olga left prod: %+v", fires[0])
	}
	waitFor(t, "the failed fire's alert", func() bool { return len(alerts.kinds(rediacc.AlertScheduleFailed)) >= 1 }) // delivered from the outbox
	as := alerts.kinds(rediacc.AlertScheduleFailed)
	if len(as) != 1 || as[0].Schedule != "hourly" || as[0].Team != "prod" {
		t.Fatalf("failed-fire alerts: %+v", as)
	}
	denied, _ := c.AuditLog(owner, rediacc.AuditFilter{Actor: "olga", Result: "denied", Action: "task.create"})
	failed, _ := c.AuditLog(owner, rediacc.AuditFilter{Action: "schedule.fire", Result: "error"})
	if len(denied) != 1 || len(failed) != 1 {
		t.Fatalf("audit: %d task.create denials of olga, %d failed fires", len(denied), len(failed))
	}
	// Olga is back, but the machine moved to staging: the schedule does
	// not follow it there.
	if _, err := c.SetMember(owner, "prod", "olga", rediacc.RoleOperator); err != nil {
		t.Fatal(err)
	}
	if err := c.MoveMachine(owner, "m1", "staging"); err != nil {
		t.Fatal(err)
	}
	runAt(t, c, clock, hour(3))
	fires, _ = c.ScheduleFires(owner, "hourly", 0)
	if fires[0].Outcome != rediacc.FireFailed || !strings.Contains(fires[0].Reason, `team "staging", not "prod"`) {
		t.Fatalf("fire after the machine left prod: %+v", fires[0])
	}
	if err := c.MoveMachine(owner, "m1", "prod"); err != nil {
		t.Fatal(err)
	}
	runAt(t, c, clock, hour(4))
	if tasks := scheduledTasks(t, c, "hourly"); len(tasks) != 2 || tasks[1].Status != rediacc.StatusCompleted {
		t.Fatalf("tasks: %d", len(tasks))
	}
}

// Invalid definitions are refused with errors naming what is wrong, and
// write nothing.
func TestScheduleValidation(t *testing.T) {
	c, _, _ := schedClient(t, time.Date(2031, 5, 7, 12, 0, 0, 0, time.UTC), nil)
	if _, err := c.CreateTeam(asOwner(), "prod", ""); err != nil {
		t.Fatal(err)
	}
	ok := rediacc.Schedule{Name: "ok", Cron: "0 2 * * *", Task: rediacc.TaskSpec{Machine: "m1", Command: "true"}}
	createSchedule(t, c, ok)
	mod := func(fn func(*rediacc.Schedule)) rediacc.Schedule {
		s := ok
		s.Name = "other"
		fn(&s)
		return s
	}
	for _, tc := range []struct {
		s    rediacc.Schedule
		err  error
		says string
	}{
		{mod(func(s *rediacc.Schedule) { s.Name = "Bad Name" }), rediacc.ErrInvalidArgument, "name"},
		{mod(func(s *rediacc.Schedule) { s.Name = "ok" }), rediacc.ErrExists, "ok"},
		{mod(func(s *rediacc.Schedule) { s.Cron = "0 2 * *" }), rediacc.ErrInvalidArgument, "5 fields"},
		{mod(func(s *rediacc.Schedule) { s.Cron = "0 0 30 2 *" }), rediacc.ErrInvalidArgument, "never fires"},
		{mod(func(s *rediacc.Schedule) { s.Cron = "@every 5s" }), rediacc.ErrInvalidArgument, "at least"},
		{mod(func(s *rediacc.Schedule) { s.TimeZone = "Europe/Atlantis" }), rediacc.ErrInvalidArgument, "IANA"},
		{mod(func(s *rediacc.Schedule) { s.TimeZone = "Local" }), rediacc.ErrInvalidArgument, "Local"},
		{mod(func(s *rediacc.Schedule) { s.Overlap = "sometimes" }), rediacc.ErrInvalidArgument, "overlap"},
		{mod(func(s *rediacc.Schedule) { s.MissedRun = "all" }), rediacc.ErrInvalidArgument, "missed-run"},
		{mod(func(s *rediacc.Schedule) { s.Task.Machine = "ghost" }), rediacc.ErrUnknownMachine, "ghost"},
		{mod(func(s *rediacc.Schedule) { s.Team = "prod" }), rediacc.ErrInvalidTask, `team "default", not "prod"`},
		{mod(func(s *rediacc.Schedule) { s.Task.Command = "" }), rediacc.ErrInvalidTask, "command"},
		{mod(func(s *rediacc.Schedule) { s.Task.Priority = 9 }), rediacc.ErrInvalidPriority, "priority"},
		{mod(func(s *rediacc.Schedule) { s.Task.IdempotencyKey = "k" }), rediacc.ErrInvalidArgument, "idempotency"},
		{mod(func(s *rediacc.Schedule) { s.All = true }), rediacc.ErrInvalidArgument, "fan-out"},
		{mod(func(s *rediacc.Schedule) { s.Task.Machine, s.Team = "", "" }), rediacc.ErrInvalidArgument, "machine"},
		{mod(func(s *rediacc.Schedule) { s.Task.Machine, s.Team = "", "nope" }), rediacc.ErrNotFound, "nope"},
	} {
		_, err := c.CreateSchedule(asOwner(), tc.s)
		if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("CreateSchedule(%+v): %v, want %v saying %q", tc.s, err, tc.err, tc.says)
		}
	}
	all, err := c.ListSchedules(asOwner(), rediacc.ScheduleFilter{})
	if err != nil || len(all) != 1 {
		t.Fatalf("schedules after refusals: %d %v", len(all), err)
	}
	if _, err := c.GetSchedule(asOwner(), "ghost"); !errors.Is(err, rediacc.ErrNotFound) {
		t.Fatalf("get unknown: %v", err)
	}
	if _, err := c.CreateSchedule(context.Background(), ok); !errors.Is(err, rediacc.ErrNoActor) {
		t.Fatalf("no actor: %v", err)
	}
}

// Pause and resume: a paused schedule does not fire, and the fires that
// fell while it was paused are neither run nor missed.
func TestSchedulePauseResume(t *testing.T) { onStores(t, testSchedulePauseResume) }

func testSchedulePauseResume(t *testing.T, store func(*rediacc.Config)) {
	start := time.Date(2031, 5, 7, 12, 0, 0, 0, time.UTC)
	c, clock, alerts := schedClient(t, start, store)
	createSchedule(t, c, rediacc.Schedule{Name: "h", Cron: "@hourly", Task: rediacc.TaskSpec{Machine: "m1", Command: "true"}})
	p, err := c.PauseSchedule(asOwner(), "h")
	if err != nil || !p.Paused || !p.NextFireAt.IsZero() {
		t.Fatalf("pause: %+v %v", p, err)
	}
	if again, err := c.PauseSchedule(asOwner(), "h"); err != nil || !again.Paused {
		t.Fatalf("pause again: %v", err)
	}
	runAt(t, c, clock, start.Add(5*time.Hour+30*time.Minute))
	r, err := c.ResumeSchedule(asOwner(), "h")
	if err != nil || r.Paused || !r.NextFireAt.Equal(start.Add(6*time.Hour)) {
		t.Fatalf("resume: %+v %v", r, err)
	}
	runAt(t, c, clock, start.Add(6*time.Hour+time.Second))
	fires, _ := c.ScheduleFires(asOwner(), "h", 0)
	if len(fires) != 1 || fires[0].Outcome != rediacc.FireCreated || len(alerts.kinds(rediacc.AlertScheduleMissed)) != 0 {
		t.Fatalf("fires after resume: %+v", fires)
	}
	// Update: a new definition, the updater its owner, the next fire from now.
	if _, err := c.SetMember(asOwner(), rediacc.DefaultTeam, "bob", rediacc.RoleOperator); err != nil {
		t.Fatal(err)
	}
	u, err := c.UpdateSchedule(rediacc.WithActor(context.Background(), "bob"), rediacc.Schedule{Name: "h", Cron: "30 7 * * *",
		TimeZone: "Asia/Tokyo", Task: rediacc.TaskSpec{Machine: "m1", Command: "echo updated"}})
	if err != nil {
		t.Fatal(err)
	}
	if u.Owner != "bob" || u.Cron != "30 7 * * *" || !u.NextFireAt.Equal(time.Date(2031, 5, 7, 22, 30, 0, 0, time.UTC)) || u.LastFire == nil {
		t.Fatalf("updated: %+v", u)
	}
	if err := c.DeleteSchedule(asOwner(), "h"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetSchedule(asOwner(), "h"); !errors.Is(err, rediacc.ErrNotFound) {
		t.Fatalf("deleted: %v", err)
	}
	if n := len(scheduledTasks(t, c, "h")); n != 1 {
		t.Fatalf("the deleted schedule's tasks: %d, want 1 (they stay)", n)
	}
}

// A fan-out schedule (All) submits one task per matching machine per fire.
func TestScheduleFanOut(t *testing.T) {
	start := time.Date(2031, 5, 7, 12, 0, 0, 0, time.UTC)
	c, clock, _ := schedClient(t, start, nil)
	inProcessMachine(t, c, "m2")
	s := createSchedule(t, c, rediacc.Schedule{Name: "everywhere", Team: rediacc.DefaultTeam, All: true, Cron: "@daily",
		Task: rediacc.TaskSpec{Command: "echo cleaned", Priority: rediacc.Low}})
	runAt(t, c, clock, time.Date(2031, 5, 8, 0, 0, 1, 0, time.UTC))
	tasks := scheduledTasks(t, c, "everywhere")
	if len(tasks) != 2 || tasks[0].Machine == tasks[1].Machine {
		t.Fatalf("fan-out tasks: %d", len(tasks))
	}
	got, _ := c.GetSchedule(asOwner(), s.ID)
	if got.LastStatus != "2 COMPLETED" || len(got.LastFire.TaskIDs) != 2 {
		t.Fatalf("last status %q", got.LastStatus)
	}
}

// The schedule actions of the role matrix (docs/ROLES.md), every cell
// through the public API: allowed calls work, denied ones return
// ErrPermissionDenied naming the actor and the action, and are audited.
func TestScheduleRoleMatrix(t *testing.T) {
	f := newRoleFixture(t)
	c := f.c
	owner := as("owner")
	n := 0
	mk := func() string {
		n++
		name := "s-" + itoa(n)
		if _, err := c.CreateSchedule(owner, rediacc.Schedule{Name: name, Cron: "@daily", Overlap: rediacc.OverlapAllow,
			Task: rediacc.TaskSpec{Machine: "prod-01", Command: "true"}}); err != nil {
			t.Fatal(err)
		}
		return name
	}
	writers := []string{"owner", "admin", "operator"}
	readers := []string{"owner", "admin", "operator", "viewer"}
	cells := []struct {
		action  string
		allowed []string
		run     func(ctx context.Context) error
	}{
		{"schedule.create", writers, func(ctx context.Context) error {
			n++
			_, err := c.CreateSchedule(ctx, rediacc.Schedule{Name: "new-" + itoa(n), Cron: "@daily", Task: rediacc.TaskSpec{Machine: "prod-01", Command: "true"}})
			return err
		}},
		{"schedule.update", writers, func(ctx context.Context) error {
			_, err := c.UpdateSchedule(ctx, rediacc.Schedule{Name: mk(), Cron: "@hourly", Task: rediacc.TaskSpec{Machine: "prod-01", Command: "true"}})
			return err
		}},
		{"schedule.delete", writers, func(ctx context.Context) error { return c.DeleteSchedule(ctx, mk()) }},
		{"schedule.pause", writers, func(ctx context.Context) error {
			_, err := c.PauseSchedule(ctx, mk())
			return err
		}},
		{"schedule.trigger", writers, func(ctx context.Context) error {
			_, err := c.TriggerSchedule(ctx, mk())
			return err
		}},
		{"schedule.list", readers, func(ctx context.Context) error {
			if _, err := c.ListSchedules(ctx, rediacc.ScheduleFilter{Team: "prod"}); err != nil {
				return err
			}
			_, err := c.GetSchedule(ctx, mk())
			return err
		}},
	}
	for _, cl := range cells {
		for _, user := range matrixUsers {
			want := false
			for _, a := range cl.allowed {
				want = want || a == user
			}
			t.Run(cl.action+"/"+user, func(t *testing.T) {
				mine := func() int { // the user's records of the action (an indexed read, not the whole trail)
					recs, err := c.AuditLog(owner, rediacc.AuditFilter{Actor: user, Action: cl.action, Limit: 10000})
					if err != nil {
						t.Fatal(err)
					}
					return len(recs)
				}
				before := mine()
				err := cl.run(as(user))
				switch {
				case want && err != nil:
					t.Fatalf("%s as %s: %v, want allowed", cl.action, user, err)
				case !want && !prodMember[user] && cl.action != "schedule.list":
					// prod's schedules (and machine) are hidden from
					// non-members: not found, as unknown ones (hidden.go)
					if !errors.Is(err, rediacc.ErrNotFound) && !errors.Is(err, rediacc.ErrUnknownMachine) {
						t.Fatalf("%s as %s: %v, want not found", cl.action, user, err)
					}
				case !want && !errors.Is(err, rediacc.ErrPermissionDenied):
					t.Fatalf("%s as %s: %v, want ErrPermissionDenied", cl.action, user, err)
				case !want:
					if !strings.Contains(err.Error(), user) || !strings.Contains(err.Error(), cl.action) {
						t.Errorf("denial %q does not name the actor %q and the action %q", err, user, cl.action)
					}
					recs, aerr := c.AuditLog(owner, rediacc.AuditFilter{Actor: user, Result: "denied", Action: cl.action, Limit: 10000})
					if aerr != nil || len(recs) == 0 {
						t.Errorf("denial of %s to %s not audited (%v)", cl.action, user, aerr)
					}
				}
				if after := mine(); after <= before {
					t.Errorf("%s as %s appended no audit record of it", cl.action, user)
				}
			})
		}
	}
	// A viewer lists only what its team holds; a member of staging sees
	// none of prod's schedules.
	if ss, err := c.ListSchedules(as("staging-admin"), rediacc.ScheduleFilter{}); err != nil || len(ss) != 0 {
		t.Fatalf("staging admin sees %d schedules (%v)", len(ss), err)
	}
	if _, err := c.ListSchedules(as("staging-admin"), rediacc.ScheduleFilter{Team: "prod"}); !errors.Is(err, rediacc.ErrPermissionDenied) {
		t.Fatalf("staging admin lists prod's schedules: %v", err)
	}
	// A schedule with secrets needs vault.use as well (operators have it),
	// and the secrets must exist.
	withSecret := rediacc.Schedule{Name: "with-secret", Cron: "@daily",
		Task: rediacc.TaskSpec{Machine: "prod-01", Command: "true", Secrets: map[string]string{"PW": "db/password"}}}
	if _, err := c.CreateSchedule(as("operator"), withSecret); !errors.Is(err, rediacc.ErrSecretNotFound) || !strings.Contains(err.Error(), "db/password") {
		t.Fatalf("a schedule naming a missing secret: %v, want ErrSecretNotFound", err)
	}
	if _, err := c.SetSecret(owner, "prod", "db/password", []byte("s3cret-pw"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSchedule(as("operator"), withSecret); err != nil {
		t.Fatalf("operator creates a schedule with a secret: %v", err)
	}
}

// The metrics of schedules: by state, the last fire's lag, fires by
// outcome.
func TestScheduleMetrics(t *testing.T) {
	start := time.Date(2031, 5, 7, 12, 0, 0, 0, time.UTC)
	c, clock, _ := schedClient(t, start, nil)
	createSchedule(t, c, rediacc.Schedule{Name: "on-time", Cron: "@hourly", Task: rediacc.TaskSpec{Machine: "m1", Command: "true"}})
	createSchedule(t, c, rediacc.Schedule{Name: "sleepy", Cron: "@hourly", Paused: true, Task: rediacc.TaskSpec{Machine: "m1", Command: "true"}})
	scrape := serveMetrics(t, c)
	m := scrape()
	if sumSeries(m, "rediacc_schedules", `state="active"`) != 1 || sumSeries(m, "rediacc_schedules", `state="paused"`) != 1 {
		t.Fatalf("schedules by state: %v", m)
	}
	runAt(t, c, clock, start.Add(time.Hour+7*time.Second))
	runAt(t, c, clock, start.Add(3*time.Hour+30*time.Minute)) // the 14:00 and 15:00 fires missed
	m = scrape()
	if got := sumSeries(m, "rediacc_schedule_last_fire_lag_seconds", `schedule="on-time"`); got != 30*60 {
		t.Fatalf("last fire lag: %v, want 1800 (the missed 15:00 fire recorded at 15:30)", got)
	}
	if sumSeries(m, "rediacc_schedule_fires_total", `outcome="created"`) != 1 || sumSeries(m, "rediacc_schedule_fires_total", `outcome="missed"`) != 1 ||
		sumSeries(m, "rediacc_alerts_total", `kind="schedule.missed"`) != 1 || sumSeries(m, "rediacc_store_up") != 1 {
		t.Fatalf("fires and alerts: %v", m)
	}
}

// A fire's task is an ordinary task: it runs with its team's vault secret
// (masked in its output, absent from the audit trail), retries per its
// policy when the injected clock says so, and when its last attempt fails
// raises AlertTaskFailed naming the schedule; its task.create record is
// the schedule owner's.
func TestScheduledTaskIsOrdinary(t *testing.T) { onStores(t, testScheduledTaskIsOrdinary) }

func testScheduledTaskIsOrdinary(t *testing.T, store func(*rediacc.Config)) {
	start := time.Date(2031, 5, 7, 12, 0, 0, 0, time.UTC)
	c, clock, alerts := schedClient(t, start, store)
	owner := asOwner()
	canary := "pw-" + strings.Repeat("z", 16)
	if _, err := c.SetSecret(owner, rediacc.DefaultTeam, "db/password", []byte(canary), nil); err != nil {
		t.Fatal(err)
	}
	// Attempt 2 (the first night's retry) succeeds; attempts 1, 3 and 4 fail.
	counter := filepath.Join(t.TempDir(), "attempts")
	createSchedule(t, c, rediacc.Schedule{Name: "nightly", Cron: "0 2 * * *", Task: rediacc.TaskSpec{Machine: "m1", Priority: rediacc.Critical,
		Command: `n=$(cat ` + counter + ` 2>/dev/null || echo 0); n=$((n+1)); echo $n > ` + counter + `; echo "attempt $n pw $PW"; [ $n -eq 2 ]`,
		Secrets: map[string]string{"PW": "db/password"}, Retry: rediacc.RetryPolicy{RetryCount: 1, RetryDelay: time.Hour}}})
	stop := runWorker(t, c)
	defer stop()
	night := func(d int) time.Time { return time.Date(2031, 5, d, 2, 0, 1, 0, time.UTC) }
	// waitRetry waits for the night's task to fail its first attempt.
	waitRetry := func(n int) *rediacc.Task {
		t.Helper()
		var task *rediacc.Task
		waitFor(t, "the first attempt of the night's task to fail", func() bool {
			tasks := scheduledTasks(t, c, "nightly")
			if len(tasks) < n {
				return false
			}
			task = tasks[n-1]
			return task.Attempts == 1 && task.Status == rediacc.StatusPending
		})
		if want := clock.Now().Add(time.Hour); !task.NextAttemptAt.Equal(want) {
			t.Fatalf("next attempt at %v, want %v", task.NextAttemptAt, want)
		}
		return task
	}
	clock.Set(night(8))
	first := waitRetry(1)
	clock.Advance(time.Hour)
	got, err := c.Wait(ctxTimeout(t, time.Minute), first.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != rediacc.StatusCompleted || got.Attempts != 2 || !strings.Contains(got.Stdout, "attempt 2 pw ") ||
		strings.Contains(got.Stdout, canary) || !got.ScheduledAt.Equal(night(8).Truncate(time.Minute)) {
		t.Fatalf("the first night's task: %s, %d attempts, stdout %q, scheduled at %v", got.Status, got.Attempts, got.Stdout, got.ScheduledAt)
	}
	if n := len(alerts.kinds(rediacc.AlertTaskFailed)); n != 0 {
		t.Fatalf("%d task.failed alerts after a retry that succeeded", n)
	}
	clock.Set(night(9))
	second := waitRetry(2)
	clock.Advance(time.Hour)
	if got, err := c.Wait(ctxTimeout(t, time.Minute), second.ID); err != nil || got.Status != rediacc.StatusFailed || got.Attempts != 2 {
		t.Fatalf("the second night's task: %+v %v", got, err)
	}
	waitFor(t, "the task.failed alert", func() bool { return len(alerts.kinds(rediacc.AlertTaskFailed)) == 1 })
	if a := alerts.kinds(rediacc.AlertTaskFailed)[0]; a.Schedule != "nightly" || a.TaskID != second.ID || a.Machine != "m1" || a.Team != rediacc.DefaultTeam {
		t.Fatalf("task.failed alert: %+v", a)
	}
	recs, err := c.AuditLog(owner, rediacc.AuditFilter{Action: "task.create", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	mine := 0
	for _, r := range recs {
		if r.EntityID == first.ID || r.EntityID == second.ID {
			mine++
			if r.Actor != "alice" || r.Result != "ok" {
				t.Errorf("task.create record of a scheduled task: %+v", r)
			}
		}
		for k, v := range r.Details {
			if strings.Contains(v, canary) {
				t.Errorf("audit record %s detail %s holds the secret", r.Action, k)
			}
		}
	}
	if mine != 2 {
		t.Fatalf("%d task.create records of the scheduled tasks, want 2", mine)
	}
}
