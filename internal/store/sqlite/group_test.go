package sqlite_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/audit"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/sqlite"
	"github.com/rediacc/rediacc/internal/store/storetest"
)

// BenchmarkConcurrent: storetest.BenchConcurrent (a worker with Slots
// slots and concurrent submitters, audit records on) in the same run on
// the engine as it was (old: a transaction per change, task.assign
// appended after the claim), with group commit (group), and with group
// commit and task.assign committed with the claim (group+fold, what the
// worker does now), so that their ratios are the gains.
func BenchmarkConcurrent(b *testing.B) {
	for _, c := range []struct {
		name string
		opts sqlite.Options
		fold bool
	}{
		{"old", sqlite.Options{MaxBatch: 1}, false},
		{"group", sqlite.Options{}, false},
		{"group+fold", sqlite.Options{}, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			storetest.BenchConcurrent(b, func(b *testing.B) store.Engine {
				e, err := sqlite.OpenOptions(ctx, filepath.Join(b.TempDir(), "store.db"), c.opts)
				if err != nil {
					b.Fatal(err)
				}
				return e
			}, c.fold)
		})
	}
}

// groupChildEnv, when set to a store path, makes TestGroupCommitKill9 the
// child: it writes to that store from many goroutines until killed.
const groupChildEnv = "REDIACC_GROUP_CHILD_STORE"

// groupRec is an audit record about task id.
func groupRec(action, id string) audit.Record {
	return audit.Record{Time: time.Now().UTC(), Actor: "child", Action: action, EntityType: audit.EntityTask, EntityID: id,
		Team: store.DefaultTeam, Result: audit.ResultOK}
}

// groupChild creates, claims, starts and finishes tasks from 40
// goroutines, with failing changes mixed in (a finish by the wrong owner,
// a create under a guard that does not hold, a batch that fails after
// inserting its first task), and prints "created <id>"
// and "finished <id>" only after the call that made the change returned
// ok; it never returns.
func groupChild(path string) {
	e, err := sqlite.Open(ctx, path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(os.Stdout, format+"\n", args...) // unbuffered: one write per line
	}
	for g := range 40 {
		go func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("t%02d-%06d", g, i)
				if _, _, err := e.CreateTask(store.WithAudit(ctx, groupRec("task.create", id)),
					store.Task{ID: id, MachineID: fmt.Sprint("m", i%4), Priority: 3}); err != nil {
					fmt.Fprintln(os.Stderr, "child create:", err)
					os.Exit(3)
				}
				say("created %s", id)
				// Fails (no such machine): changes nothing.
				gctx := store.WithGuard(store.WithAudit(ctx, groupRec("task.create", id+"-bad")), store.MachineInTeam("nope", store.DefaultTeam))
				if _, _, err := e.CreateTask(gctx, store.Task{ID: id + "-bad", MachineID: "m0", Priority: 3}); !errors.Is(err, store.ErrGuard) {
					fmt.Fprintln(os.Stderr, "child guard:", err)
					os.Exit(3)
				}
				now := time.Now().UTC()
				// Fails after writing (the second task's id is taken): its
				// savepoint takes back the first task and the record.
				bctx := store.WithAudit(ctx, groupRec("task.create", id+"-bad"))
				if _, err := e.CreateTasks(bctx, []store.Task{{ID: id + "-bad", MachineID: "m0", Priority: 3},
					{ID: id, MachineID: "m0", Priority: 3}}); !errors.Is(err, store.ErrExists) {
					fmt.Fprintln(os.Stderr, "child batch:", err)
					os.Exit(3)
				}
				ts, err := e.Claim(ctx, store.ClaimRequest{Owner: "child", Now: now, LeaseUntil: now.Add(time.Hour), Max: 2})
				if err != nil {
					fmt.Fprintln(os.Stderr, "child claim:", err)
					os.Exit(3)
				}
				for _, t := range ts {
					if _, err := e.Finish(store.WithAudit(ctx, groupRec("task.complete", t.ID)), store.Finish{ID: t.ID, Owner: "other",
						At: now, Next: store.Completed}); !errors.Is(err, store.ErrLeaseLost) {
						fmt.Fprintln(os.Stderr, "child wrong owner:", err)
						os.Exit(3)
					}
					if _, err := e.Start(store.WithAudit(ctx, groupRec("task.start", t.ID)), t.ID, "child", store.Attempt{StartedAt: now}); err != nil {
						fmt.Fprintln(os.Stderr, "child start:", err)
						os.Exit(3)
					}
					if _, err := e.Finish(store.WithAudit(ctx, groupRec("task.complete", t.ID)), store.Finish{ID: t.ID, Owner: "child",
						At: now, Next: store.Completed, CountAttempt: true, ExitCode: new(int)}); err != nil {
						fmt.Fprintln(os.Stderr, "child finish:", err)
						os.Exit(3)
					}
					say("finished %s", t.ID)
				}
			}
		}()
	}
	select {}
}

// TestGroupCommitKill9: a process writing from many goroutines through
// group commit is killed with SIGKILL; every change it was told had
// succeeded is in the store afterwards, no failed change left a trace, and
// the audit trail verifies to its head.
func TestGroupCommitKill9(t *testing.T) {
	if path := os.Getenv(groupChildEnv); path != "" {
		groupChild(path)
	}
	for round := range 3 {
		path := filepath.Join(t.TempDir(), "store.db")
		child := exec.Command(os.Args[0], "-test.run=^TestGroupCommitKill9$")
		child.Env = append(os.Environ(), groupChildEnv+"="+path)
		child.Stderr = os.Stderr
		out, err := child.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
		created, finished := map[string]bool{}, map[string]bool{}
		sc := bufio.NewScanner(out)
		for sc.Scan() && len(finished) < 200*(round+1) {
			kind, id, _ := strings.Cut(sc.Text(), " ")
			switch kind {
			case "created":
				created[id] = true
			case "finished":
				finished[id] = true
			}
		}
		if err := child.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for sc.Scan() { // lines written before the kill
			kind, id, _ := strings.Cut(sc.Text(), " ")
			switch kind {
			case "created":
				created[id] = true
			case "finished":
				finished[id] = true
			}
		}
		_ = child.Wait()
		if len(finished) == 0 {
			t.Fatalf("round %d: the child finished no task", round)
		}
		e := open(t, path)
		ts, err := e.ListTasks(ctx, store.TaskFilter{})
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]store.Task{}
		for _, task := range ts {
			if strings.HasSuffix(task.ID, "-bad") {
				t.Errorf("round %d: task %s, whose guard failed, is stored", round, task.ID)
			}
			have[task.ID] = task
		}
		for id := range created {
			if _, ok := have[id]; !ok {
				t.Errorf("round %d: task %s was created (the child was told so) but is missing after kill -9", round, id)
			}
		}
		for id := range finished {
			if have[id].Status != store.Completed {
				t.Errorf("round %d: task %s was finished (the child was told so) but is %s after kill -9", round, id, have[id].Status)
			}
		}
		var recs []audit.Record
		for {
			page, err := e.ListAudit(ctx, audit.Filter{AfterSeq: int64(len(recs)), Limit: audit.MaxLimit})
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			recs = append(recs, page...)
		}
		head, err := e.AuditHead(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := audit.VerifyWithHead(recs, head); err != nil {
			t.Errorf("round %d: audit trail after kill -9: %v", round, err)
		}
		// Every task stored has its creation record, and every finished one its completion.
		byAction := map[string]map[string]bool{}
		for _, r := range recs {
			if strings.HasSuffix(r.EntityID, "-bad") {
				t.Errorf("round %d: audit record %d (%s) of a failed change is stored", round, r.Seq, r.Action)
			}
			if byAction[r.Action] == nil {
				byAction[r.Action] = map[string]bool{}
			}
			byAction[r.Action][r.EntityID] = true
		}
		for id, task := range have {
			if !byAction["task.create"][id] {
				t.Errorf("round %d: task %s has no task.create record", round, id)
			}
			if task.Status == store.Completed && !byAction["task.complete"][id] {
				t.Errorf("round %d: completed task %s has no task.complete record", round, id)
			}
		}
		t.Logf("round %d: %d created, %d finished acknowledged; %d tasks, %d audit records stored", round, len(created), len(finished), len(ts), len(recs))
		e.Close()
	}
}

// BenchmarkClaims: storetest.BenchClaims (claims alone, from a backlog).
func BenchmarkClaims(b *testing.B) {
	storetest.BenchClaims(b, func(b *testing.B) store.Engine { return open(b, filepath.Join(b.TempDir(), "store.db")) })
}
