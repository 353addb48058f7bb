package rediacc_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/internal/store/postgres/pgtest"
)

// fileClock is a Clock shared by processes: the instant (unix nanoseconds)
// in a file the test writes (atomically, by rename).
type fileClock struct {
	path string
	mu   sync.Mutex
	last time.Time
}

func (f *fileClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b, err := os.ReadFile(f.path); err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
			f.last = time.Unix(0, n).UTC()
		}
	}
	return f.last
}

func setFileClock(t *testing.T, path string, at time.Time) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatInt(at.UnixNano(), 10)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

const (
	schedChildDir      = "REDIACC_SCHED_CHILD_DIR"
	schedChildClock    = "REDIACC_SCHED_CHILD_CLOCK"
	schedChildStore    = "REDIACC_SCHED_CHILD_STORE"     // a PostgreSQL store URL; "" = the SQLite store of the data dir
	schedChildAuditKey = "REDIACC_SCHED_CHILD_AUDIT_KEY" // the audit keyring every process of a PostgreSQL store shares
)

// TestScheduleHelperProcess is the worker process of
// TestScheduleExactlyOnceAcrossProcesses*: it runs a worker on the store
// ($REDIACC_SCHED_CHILD_STORE, else the SQLite store in
// $REDIACC_SCHED_CHILD_DIR) with the shared file clock until it is killed.
func TestScheduleHelperProcess(t *testing.T) {
	dir := os.Getenv(schedChildDir)
	if dir == "" {
		t.Skip("helper process of TestScheduleExactlyOnceAcrossProcesses")
	}
	ctx := rediacc.WithActor(context.Background(), "scheduler")
	c, err := rediacc.New(ctx, rediacc.Config{DataDir: dir, StoreURL: os.Getenv(schedChildStore), AuditKeyFile: os.Getenv(schedChildAuditKey),
		Logger: testLogger(nil), PollInterval: 5 * time.Millisecond, LeaseDuration: 3 * time.Second,
		Health: rediacc.HealthConfig{Interval: -1}, Clock: &fileClock{path: os.Getenv(schedChildClock)}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "schedule child:", err)
		os.Exit(2)
	}
	_ = c.Run(ctx)
	os.Exit(0)
}

// Three worker processes share one SQLite store and one (file) clock that
// the test moves five minutes at a time; one of them is killed with
// SIGKILL and replaced now and then. Every fire time of the schedule is
// recorded exactly once and submits exactly one task.
func TestScheduleExactlyOnceAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	scheduleAcrossProcesses(t, "")
}

// The same with the processes sharing one PostgreSQL store, as workers on
// several hosts: the elected leader fires, and a leader killed with
// SIGKILL hands over to another process without a fire lost or doubled.
func TestScheduleExactlyOnceAcrossProcessesPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	scheduleAcrossProcesses(t, pgtest.Schema(t))
}

// scheduleAcrossProcesses runs the test on the SQLite store of a data dir
// (url "") or on the PostgreSQL store url.
func scheduleAcrossProcesses(t *testing.T, url string) {
	dir := t.TempDir()
	clockPath := filepath.Join(dir, "clock")
	auditKey := filepath.Join(t.TempDir(), "audit.key")
	start := time.Date(2031, 5, 7, 12, 0, 0, 0, time.UTC)
	setFileClock(t, clockPath, start)
	c := newClient(t, func(cfg *rediacc.Config) {
		cfg.DataDir, cfg.Clock = dir, &fileClock{path: clockPath}
		if url != "" {
			cfg.StoreURL, cfg.AuditKeyFile = url, auditKey
		}
	})
	owner := asOwner()
	// The workers' actor runs tasks in another team only: the scheduled
	// tasks stay PENDING, to be counted.
	if _, err := c.CreateTeam(owner, "elsewhere", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetMember(owner, "elsewhere", "scheduler", rediacc.RoleOperator); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddMachine(owner, rediacc.Machine{Name: "m1", Host: "127.0.0.9", User: "u", IdentityFile: monKeyFile(t),
		HostKeyPolicy: rediacc.HostKeyInsecureIgnore}); err != nil {
		t.Fatal(err)
	}
	s := createSchedule(t, c, rediacc.Schedule{Name: "five", Cron: "*/5 * * * *", Overlap: rediacc.OverlapAllow,
		Task: rediacc.TaskSpec{Machine: "m1", Command: "true"}})

	var children []*exec.Cmd
	startChild := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestScheduleHelperProcess$", "-test.count=1")
		childDir := dir
		if url != "" { // each host has its own data dir
			childDir = t.TempDir()
		}
		cmd.Env = append(os.Environ(), schedChildDir+"="+childDir, schedChildClock+"="+clockPath, schedChildStore+"="+url, schedChildAuditKey+"="+auditKey)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	for range 3 {
		children = append(children, startChild())
	}
	const steps = 30
	r := rand.New(rand.NewPCG(7, 13))
	for i := 1; i <= steps; i++ {
		setFileClock(t, clockPath, start.Add(time.Duration(i)*5*time.Minute+time.Second))
		if i%7 == 0 { // a crash at a random point of the fire's race
			k := r.IntN(len(children))
			if url != "" && i%2 == 0 { // on PostgreSQL: the leader, who fires
				k = leaderChild(t, c, children)
			}
			time.Sleep(time.Duration(r.IntN(3)) * time.Millisecond)
			_ = children[k].Process.Signal(syscall.SIGKILL)
			_ = children[k].Wait()
			children[k] = startChild()
		}
		deadline := time.Now().Add(90 * time.Second)
		for {
			got, err := c.GetSchedule(owner, s.ID)
			if err != nil {
				t.Fatal(err)
			}
			if want := start.Add(time.Duration(i+1) * 5 * time.Minute); got.NextFireAt.Equal(want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("step %d: the schedule was not fired (next fire %v)", i, got.NextFireAt)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	fires, err := c.ScheduleFires(owner, s.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	tasks := scheduledTasks(t, c, "five")
	perTime := map[time.Time]int{}
	for _, task := range tasks {
		perTime[task.ScheduledAt]++
	}
	for i := 1; i <= steps; i++ {
		at := start.Add(time.Duration(i) * 5 * time.Minute)
		if perTime[at] != 1 {
			t.Errorf("fire at %v: %d tasks, want 1", at, perTime[at])
		}
	}
	if len(fires) != steps || len(tasks) != steps {
		t.Fatalf("%d fires and %d tasks, want %d of each", len(fires), len(tasks), steps)
	}
	recs, err := c.AuditLog(owner, rediacc.AuditFilter{Action: "schedule.fire", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	workers := map[string]int{}
	for _, rec := range recs {
		workers[rec.Details["worker"]]++
	}
	if len(recs) != steps {
		t.Errorf("%d schedule.fire records, want %d", len(recs), steps)
	}
	t.Logf("%d fires recorded by %d worker processes: %v", len(recs), len(workers), workers)
}

// leaderChild returns the index of the child process that recorded the
// last fire: on PostgreSQL, the leader (the registry's leader flag is no
// help here: the jumping file clock makes the leader remove and re-add
// the registry rows as stale).
func leaderChild(t *testing.T, c *rediacc.Client, children []*exec.Cmd) int {
	t.Helper()
	recs, err := c.AuditLog(asOwner(), rediacc.AuditFilter{Action: "schedule.fire", Limit: 1000})
	if err != nil || len(recs) == 0 {
		t.Fatalf("schedule.fire records: %d, %v", len(recs), err)
	}
	worker := recs[len(recs)-1].Details["worker"] // host/pid/random
	for i, cmd := range children {
		if strings.Contains(worker, "/"+strconv.Itoa(cmd.Process.Pid)+"/") {
			return i
		}
	}
	t.Fatalf("the last fire's worker %s is no child process", worker)
	return 0
}

// onStores runs test on SQLite stores (store nil) and on PostgreSQL
// stores (store sets Config.StoreURL to a new schema of the test server,
// one per client, and the audit keyring the processes of a shared store
// need).
func onStores(t *testing.T, test func(t *testing.T, store func(*rediacc.Config))) {
	t.Run("sqlite", func(t *testing.T) { test(t, nil) })
	t.Run("postgres", func(t *testing.T) {
		test(t, func(cfg *rediacc.Config) {
			cfg.StoreURL, cfg.AuditKeyFile = pgtest.Schema(t), filepath.Join(t.TempDir(), "audit.key")
		})
	})
}
