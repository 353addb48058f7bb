package sqlite_test

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rediacc/rediacc/internal/sched"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/sqlite"
	"github.com/rediacc/rediacc/internal/store/storetest"
)

var ctx = context.Background()

func open(tb testing.TB, path string) *sqlite.Engine {
	tb.Helper()
	e, err := sqlite.Open(ctx, path)
	if err != nil {
		tb.Fatalf("Open(%s): %v", path, err)
	}
	return e
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Engine {
		return open(t, filepath.Join(t.TempDir(), "store.db"))
	})
}

func BenchmarkEngine(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Engine {
		return open(b, filepath.Join(b.TempDir(), "store.db"))
	})
}

func at(d time.Duration) time.Time { return storetest.T0.Add(d) }

// TestReopen: everything written is there after Close and Open.
func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	e := open(t, path)
	if _, err := e.CreateTeam(ctx, store.Team{ID: "prod", Name: "prod", CreatedAt: at(0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.CreateMachine(ctx, store.Machine{ID: "web", Name: "web", TeamID: "prod", Host: "h", Port: 22, User: "u",
		Config: []byte(`{"a":1}`), CreatedAt: at(0)}); err != nil {
		t.Fatal(err)
	}
	mk := func(id string, prio int) {
		if _, _, err := e.CreateTask(ctx, store.Task{ID: id, IdempotencyKey: "k-" + id, TeamID: "prod", MachineID: "web",
			Priority: prio, Spec: []byte(`{"id":"` + id + `"}`), CreatedAt: at(time.Duration(len(id)))}); err != nil {
			t.Fatal(err)
		}
	}
	for i, id := range []string{"a", "bb", "ccc", "dddd"} {
		mk(id, 1+i)
	}
	now := at(time.Hour)
	claimed, err := e.Claim(ctx, store.ClaimRequest{Owner: "w", Now: now, LeaseUntil: now.Add(time.Minute), Max: 3})
	if err != nil || len(claimed) != 3 {
		t.Fatalf("Claim: %v, %v", claimed, err)
	}
	if _, err := e.Start(ctx, "a", "w", store.Attempt{StartedAt: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Finish(ctx, store.Finish{ID: "a", Owner: "w", At: now.Add(time.Second), Next: store.Pending, CountAttempt: true,
		ReadyAt: now.Add(time.Minute), Attempt: store.Attempt{ExitCode: new(int), Outcome: "failed", Error: "boom"},
		Stdout: []byte("out"), Stderr: []byte("err"), StderrTruncated: true, ExitCode: new(int), Error: "boom"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Start(ctx, "bb", "w", store.Attempt{StartedAt: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Cancel(ctx, "bb", now); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Cancel(ctx, "dddd", now); err != nil {
		t.Fatal(err)
	}
	wantTasks, _ := e.ListTasks(ctx, store.TaskFilter{})
	wantMachines, _ := e.ListMachines(ctx, store.MachineFilter{})
	wantDepth, _ := e.Depth(ctx)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	e = open(t, path)
	defer e.Close()
	gotTasks, _ := e.ListTasks(ctx, store.TaskFilter{})
	gotMachines, _ := e.ListMachines(ctx, store.MachineFilter{})
	gotDepth, _ := e.Depth(ctx)
	if diff := cmp.Diff(wantTasks, gotTasks); diff != "" {
		t.Errorf("tasks after reopen (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(wantMachines, gotMachines); diff != "" {
		t.Errorf("machines after reopen (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(wantDepth, gotDepth); diff != "" {
		t.Errorf("depth after reopen (-before +after):\n%s", diff)
	}
	if len(gotTasks) != 4 || gotTasks[0].History[0].Error != "boom" || !gotTasks[0].StderrTruncated {
		t.Errorf("unexpected tasks after reopen: %+v", gotTasks)
	}
	// The idempotency key survives too.
	again, created, err := e.CreateTask(ctx, store.Task{IdempotencyKey: "k-a", TeamID: "prod", MachineID: "web", Priority: 3})
	if err != nil || created || again.ID != "a" {
		t.Errorf("idempotency after reopen: %v %v %v", again.ID, created, err)
	}
}

func TestFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "nested")
	path := filepath.Join(dir, "store.db")
	e := open(t, path)
	defer e.Close()
	if _, _, err := e.CreateTask(ctx, store.Task{MachineID: "m", Priority: 3}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-lock"} {
		st, err := os.Stat(p)
		if err != nil {
			if p != path && errors.Is(err, os.ErrNotExist) {
				continue
			}
			t.Fatal(err)
		}
		if mode := st.Mode().Perm(); mode != 0o600 {
			t.Errorf("%s: mode %o, want 600", p, mode)
		}
	}
	for _, d := range []string{dir, filepath.Dir(dir)} {
		st, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if mode := st.Mode().Perm(); mode&0o077 != 0 {
			t.Errorf("%s: mode %o, want 700", d, mode)
		}
	}
	if e.Path() != path {
		t.Errorf("Path() = %s, want %s", e.Path(), path)
	}
}

func TestNotAStore(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	data := make([]byte, 8192)
	for i := range data {
		data[i] = byte(i*7 + 3)
	}
	short := filepath.Join(dir, "notes.txt")
	foreign := filepath.Join(dir, "foreign.db")
	for p, b := range map[string][]byte{garbage: data, short: []byte("hello, this is not a database\n")} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	db, err := sql.Open("sqlite", foreign)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE photos (id INTEGER PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	for _, p := range []string{garbage, short, foreign} {
		before, _ := os.ReadFile(p)
		e, err := sqlite.Open(ctx, p)
		if err == nil {
			e.Close()
			t.Fatalf("Open(%s) succeeded", p)
		}
		if !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("Open(%s): %v, want ErrCorrupt", p, err)
		}
		if !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "move it aside") {
			t.Errorf("Open(%s): error should name the path and say what to do: %v", p, err)
		}
		if after, _ := os.ReadFile(p); string(after) != string(before) {
			t.Errorf("Open(%s) modified the file", p)
		}
		t.Logf("%v", err)
	}
	if _, err := sqlite.Open(ctx, dir); !errors.Is(err, store.ErrInvalidArgument) {
		t.Errorf("Open(directory): %v", err)
	}
}

func TestSchemaTooNew(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	open(t, path).Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	var v int
	if err := db.QueryRow(`SELECT version FROM rediacc_schema`).Scan(&v); err != nil || v != sqlite.SchemaVersion() {
		t.Fatalf("schema version %d, %v; want %d", v, err, sqlite.SchemaVersion())
	}
	if _, err := db.Exec(`UPDATE rediacc_schema SET version = ?`, sqlite.SchemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = sqlite.Open(ctx, path)
	if !errors.Is(err, store.ErrSchemaTooNew) {
		t.Fatalf("Open newer schema: %v, want ErrSchemaTooNew", err)
	}
	t.Logf("%v", err)
}

// TestClaimOrderMatchesSched: the engine's claim (five index-ordered
// priority levels merged) returns exactly what sched.Pick returns on random
// queues, limits, reserve, aging, machine filters and busy machines
// included.
func TestClaimOrderMatchesSched(t *testing.T) {
	for round := range 6 {
		rng := rand.New(rand.NewPCG(uint64(round), 42))
		e := open(t, filepath.Join(t.TempDir(), "store.db"))
		aging := time.Duration(rng.IntN(4)) * 7 * time.Minute // 0 in some rounds
		now := at(24 * time.Hour)
		var cands []sched.Candidate
		for i := range 200 {
			enq := now.Add(-time.Duration(rng.Int64N(int64(2 * time.Hour))))
			if rng.IntN(10) == 0 {
				enq = now.Add(time.Duration(rng.Int64N(int64(time.Minute)))) // enqueued "in the future"
			}
			if rng.IntN(5) == 0 && len(cands) > 0 {
				enq = cands[rng.IntN(len(cands))].EnqueuedAt // ties
			}
			ready := enq
			if rng.IntN(4) == 0 {
				ready = now.Add(time.Duration(rng.Int64N(int64(time.Hour))) - 30*time.Minute)
			}
			tk, _, err := e.CreateTask(ctx, store.Task{ID: fmt.Sprintf("t%03d", i), MachineID: fmt.Sprint("m", rng.IntN(4)),
				Priority: 1 + rng.IntN(5), CreatedAt: enq, EnqueuedAt: enq, ReadyAt: ready})
			if err != nil {
				t.Fatal(err)
			}
			cands = append(cands, sched.Candidate{ID: tk.ID, Seq: int64(i + 1), Machine: tk.MachineID, Priority: tk.Priority,
				EnqueuedAt: tk.EnqueuedAt, ReadyAt: tk.ReadyAt})
		}
		r := store.ClaimRequest{Owner: "w", Now: now, LeaseUntil: now.Add(time.Hour), Max: 1 + rng.IntN(250),
			PerMachine: rng.IntN(30), ReserveCritical: rng.IntN(2) == 0, Aging: aging}
		if round%3 != 0 { // busy machines (SQL skips their levels 3..5)
			r.BusyMachines = []string{fmt.Sprint("m", rng.IntN(4)), "elsewhere"}
		}
		if round%2 == 1 { // a machine filter
			r.Machines = []string{"m0", "m1", "m3"}
		}
		want := sched.Pick(cands, nil, sched.Policy{Now: r.Now, Max: r.Max, PerMachine: r.PerMachine,
			ReserveCritical: r.ReserveCritical, Aging: r.Aging, Machines: r.Machines, BusyMachines: r.BusyMachines})
		got, err := e.Claim(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		var w, g []string
		for _, c := range want {
			w = append(w, c.ID)
		}
		for _, tk := range got {
			g = append(g, tk.ID)
		}
		if diff := cmp.Diff(w, g); diff != "" {
			t.Fatalf("round %d (aging %v): SQL claim order differs from sched.Pick (-sched +sql):\n%s", round, aging, diff)
		}
		e.Close()
	}
}

// TestTwoEngines: two engines on one file, as two processes would have,
// claim concurrently; no task is claimed twice and no limit is overrun.
func TestTwoEngines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	e1, e2 := open(t, path), open(t, path)
	defer e1.Close()
	defer e2.Close()
	const total = 300
	storetest.CreateTasks(t, e1, "x", total, 6)
	per := storetest.ClaimLoad{Workers: 6, PerMachine: 3}.Run(t, []store.Engine{e1, e2}, total)
	t.Logf("claims per worker: %v", per)
	done, _ := e2.ListTasks(ctx, store.TaskFilter{Statuses: []store.Status{store.Completed}})
	if len(done) != total {
		t.Fatalf("%d tasks completed, want %d", len(done), total)
	}
}

const (
	helperEnv = "REDIACC_SQLITE_HELPER"
	pathEnv   = "REDIACC_SQLITE_PATH"
	perMach   = 3
)

// TestHelperProcess is not a test: the multi-process tests run the test
// binary again with helperEnv set, and this is the child's main.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("helper process for the multi-process tests")
	}
	code := 0
	if err := helper(mode, os.Getenv(pathEnv)); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		code = 1
	}
	os.Exit(code)
}

func helper(mode, path string) error {
	e, err := sqlite.Open(ctx, path)
	if err != nil {
		return err
	}
	defer e.Close()
	owner := fmt.Sprintf("child-%d", os.Getpid())
	now := at(time.Hour)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	switch mode {
	case "audit":
		fmt.Fprintln(out, "ready")
		out.Flush()
		return auditHelper(e)
	case "claim":
		fmt.Fprintln(out, "ready")
		out.Flush()
		return claimLoop(e, owner, func(id string) { fmt.Fprintln(out, "claimed", id) })
	case "hold":
		ts, err := e.Claim(ctx, store.ClaimRequest{Owner: "doomed", Now: now, LeaseUntil: now.Add(time.Hour), Max: 5})
		if err != nil {
			return err
		}
		for _, tk := range ts {
			if _, err := e.Start(ctx, tk.ID, "doomed", store.Attempt{StartedAt: now}); err != nil {
				return err
			}
		}
		fmt.Fprintln(out, "held", len(ts))
		out.Flush()
		// Keep writing until killed: the kill lands mid-transaction sometimes.
		for i := 0; ; i++ {
			if _, _, err := e.CreateTask(ctx, store.Task{MachineID: "busy", Priority: 5, CreatedAt: at(time.Duration(i))}); err != nil {
				return err
			}
		}
	}
	return fmt.Errorf("unknown mode %q", mode)
}

// claimLoop claims (up to 2 at a time, PerMachine perMach) and finishes
// tasks until none is PENDING or ASSIGNED/PROCESSING by anyone.
func claimLoop(e store.Engine, owner string, claimed func(id string)) error {
	now := at(time.Hour)
	for {
		ts, err := e.Claim(ctx, store.ClaimRequest{Owner: owner, Now: now, LeaseUntil: now.Add(time.Hour), Max: 2, PerMachine: perMach})
		if err != nil {
			return err
		}
		if len(ts) == 0 {
			left, err := e.ListTasks(ctx, store.TaskFilter{Statuses: []store.Status{store.Pending}, Limit: 1})
			if err != nil {
				return err
			}
			if len(left) == 0 {
				return nil
			}
			time.Sleep(time.Millisecond)
			continue
		}
		for _, tk := range ts {
			claimed(tk.ID)
		}
		time.Sleep(500 * time.Microsecond) // hold the slots a little
		for _, tk := range ts {
			if _, err := e.Finish(ctx, store.Finish{ID: tk.ID, Owner: owner, At: now, Next: store.Completed, CountAttempt: true,
				Attempt: store.Attempt{StartedAt: now, Worker: owner}}); err != nil {
				return err
			}
		}
	}
}

func child(t *testing.T, mode, path string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, pathEnv+"="+path)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, bufio.NewScanner(stdout)
}

// TestMultiProcess: a child process and this one claim from the same file at
// the same time; no task is claimed twice, no machine ever runs more than
// perMach tasks, and every task ends COMPLETED.
func TestMultiProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a process")
	}
	path := filepath.Join(t.TempDir(), "store.db")
	e := open(t, path)
	defer e.Close()
	const total = 300
	storetest.CreateTasks(t, e, "mp", total, 5)

	cmd, sc := child(t, "claim", path)
	if !sc.Scan() || sc.Text() != "ready" {
		t.Fatalf("child did not start: %q %v", sc.Text(), sc.Err())
	}
	var (
		mu     sync.Mutex
		owners = map[string]string{}
		dups   []string
	)
	record := func(owner string) func(string) {
		return func(id string) {
			mu.Lock()
			defer mu.Unlock()
			if prev, ok := owners[id]; ok {
				dups = append(dups, fmt.Sprintf("%s by %s and %s", id, prev, owner))
			}
			owners[id] = owner
		}
	}
	var wg sync.WaitGroup
	childDone := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		rec := record("child")
		for sc.Scan() {
			if id, ok := strings.CutPrefix(sc.Text(), "claimed "); ok {
				rec(id)
			}
		}
		childDone <- cmd.Wait()
	}()
	stop := make(chan struct{})
	monitorErr := make(chan error, 1)
	go func() { // every snapshot must respect the per-machine limit
		defer close(monitorErr)
		for {
			select {
			case <-stop:
				return
			default:
			}
			active, err := e.ListTasks(ctx, store.TaskFilter{Statuses: []store.Status{store.Assigned, store.Processing}})
			if err != nil {
				monitorErr <- err
				return
			}
			per := map[string]int{}
			for _, tk := range active {
				if per[tk.MachineID]++; per[tk.MachineID] > perMach {
					monitorErr <- fmt.Errorf("machine %s runs %d tasks", tk.MachineID, per[tk.MachineID])
					return
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	parentErrs := make(chan error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			parentErrs <- claimLoop(e, fmt.Sprint("parent-", i), record(fmt.Sprint("parent-", i)))
		}()
	}
	wg.Wait()
	close(stop)
	if err := <-monitorErr; err != nil {
		t.Error(err)
	}
	if err := <-childDone; err != nil {
		t.Fatalf("child: %v", err)
	}
	close(parentErrs)
	for err := range parentErrs {
		if err != nil {
			t.Fatalf("parent: %v", err)
		}
	}
	if len(dups) > 0 {
		t.Fatalf("tasks claimed twice: %v", dups)
	}
	count := map[string]int{}
	for _, o := range owners {
		count[strings.TrimRight(o, "-0123456789")]++
	}
	t.Logf("claims: %v", count)
	if len(owners) != total || count["child"] == 0 || count["parent"] == 0 {
		t.Fatalf("claimed %d of %d tasks; per process %v (both must take part)", len(owners), total, count)
	}
	done, _ := e.ListTasks(ctx, store.TaskFilter{Statuses: []store.Status{store.Completed}})
	if len(done) != total {
		t.Fatalf("%d tasks completed, want %d", len(done), total)
	}
	for _, tk := range done {
		if len(tk.History) != 1 || tk.Attempts != 1 {
			t.Fatalf("task %s ran %d times", tk.ID, len(tk.History))
		}
	}
}

// TestKilledProcess: a process holding tasks is killed with SIGKILL while
// writing; the file stays consistent, and the tasks are rescued from the
// dead owner and claimable again with no attempt counted.
func TestKilledProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a process")
	}
	path := filepath.Join(t.TempDir(), "store.db")
	e := open(t, path)
	storetest.CreateTasks(t, e, "k", 5, 5)
	e.Close()

	cmd, sc := child(t, "hold", path)
	if !sc.Scan() || sc.Text() != "held 5" {
		t.Fatalf("child: %q %v", sc.Text(), sc.Err())
	}
	time.Sleep(50 * time.Millisecond) // let it write a while
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	e = open(t, path)
	defer e.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	var check string
	if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity_check: %q %v", check, err)
	}
	db.Close()
	held, _ := e.ListTasks(ctx, store.TaskFilter{Statuses: []store.Status{store.Processing}})
	if len(held) != 5 {
		t.Fatalf("%d PROCESSING tasks after the kill, want 5", len(held))
	}
	now := at(time.Hour + time.Minute) // leases run to T0+2h: only OwnerDead rescues them
	rescued, err := e.Rescue(ctx, store.RescueRequest{Now: now, OwnerDead: func(o string) bool { return o == "doomed" }})
	if err != nil || len(rescued) != 5 {
		t.Fatalf("Rescue: %d tasks, %v", len(rescued), err)
	}
	again, err := e.Claim(ctx, store.ClaimRequest{Owner: "survivor", Now: now, LeaseUntil: now.Add(time.Hour), Max: 10,
		Machines: []string{"m0", "m1", "m2", "m3", "m4"}})
	if err != nil || len(again) != 5 {
		t.Fatalf("Claim after rescue: %d tasks, %v", len(again), err)
	}
	for _, tk := range again {
		if tk.Attempts != 0 || len(tk.History) != 1 || tk.History[0].Outcome != store.OutcomeUnknown {
			t.Fatalf("rescued task %s: attempts %d history %+v", tk.ID, tk.Attempts, tk.History)
		}
	}
}
