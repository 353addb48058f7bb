package rediacc_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// Issue 8, kind 2: a submit by an operator of alpha races an admin moving
// the machine from alpha to beta. Before, the task could be written under
// alpha on a machine already in beta (checked, then inserted). The check
// now runs in the write's transaction: either the task exists and the move
// was refused (the machine has a task), or the move happened and the
// submit failed; never a task of alpha on beta's machine. Raced 1,000
// times on the SQLite store and on the memory store, through the public
// API.
func TestSubmitRacesMove(t *testing.T) {
	for _, tc := range []struct {
		name  string
		store func(t *testing.T) *rediacc.Store
	}{
		{"sqlite", func(t *testing.T) *rediacc.Store {
			st, err := rediacc.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "race.db"))
			if err != nil {
				t.Fatal(err)
			}
			return st
		}},
		{"memory", func(t *testing.T) *rediacc.Store { return rediacc.NewMemoryStore() }},
	} {
		t.Run(tc.name, func(t *testing.T) { raceSubmitAndMove(t, tc.store(t), 1000) })
	}
}

func raceSubmitAndMove(t *testing.T, st *rediacc.Store, rounds int) {
	c := newClient(t, func(cfg *rediacc.Config) { cfg.Store = st })
	owner := asOwner()
	for _, team := range []string{"alpha", "beta"} {
		if _, err := c.CreateTeam(owner, team, ""); err != nil {
			t.Fatal(err)
		}
	}
	for user, team := range map[string]string{"op-alpha": "alpha", "boss": "alpha", "op-beta": "beta"} {
		role := rediacc.RoleOperator
		if user == "boss" {
			role = rediacc.RoleAdmin
		}
		if _, err := c.SetMember(owner, team, user, role); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.SetMember(owner, "beta", "boss", rediacc.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	_, key, err := sshtest.GenerateSigner(nil)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "id")
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddMachine(owner, rediacc.Machine{Name: "m", Team: "alpha", Host: "127.0.0.9", User: "u",
		IdentityFile: keyFile, HostKeyPolicy: rediacc.HostKeyInsecureIgnore}); err != nil {
		t.Fatal(err)
	}
	op := rediacc.WithActor(context.Background(), "op-alpha")
	boss := rediacc.WithActor(context.Background(), "boss")
	submitted, moved := 0, 0
	for i := range rounds {
		var (
			wg           sync.WaitGroup
			start        = make(chan struct{})
			task         *rediacc.Task
			serr, merr   error
			where        string
			machineAfter rediacc.Machine
		)
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			task, serr = c.Submit(op, rediacc.TaskSpec{Machine: "m", Command: "true"})
		}()
		go func() {
			defer wg.Done()
			<-start
			merr = c.MoveMachine(boss, "m", "beta")
		}()
		close(start)
		wg.Wait()
		machineAfter, err = c.Machine(owner, "m")
		if err != nil {
			t.Fatal(err)
		}
		where = machineAfter.Team
		switch {
		case serr == nil && errors.Is(merr, rediacc.ErrMachineBusy) && where == "alpha":
			submitted++
			if task.Team != "alpha" || task.MachineID != machineAfter.ID {
				t.Fatalf("round %d: task %+v", i, task)
			}
			if _, err := c.Cancel(op, task.ID); err != nil { // so the machine can move next round
				t.Fatal(err)
			}
		case merr == nil && where == "beta" &&
			// the operator of alpha no longer sees m: unknown, as any name
			(errors.Is(serr, rediacc.ErrConflict) || errors.Is(serr, rediacc.ErrPermissionDenied) || errors.Is(serr, rediacc.ErrUnknownMachine)):
			moved++
			if err := c.MoveMachine(boss, "m", "alpha"); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("round %d: submit: %v (task %v); move: %v; machine now in %s", i, serr, task, merr, where)
		}
	}
	// Zero escapes: no task of one team on a machine of another, ever.
	ts, err := c.List(owner, rediacc.ListFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range ts {
		if tk.Team != "alpha" || tk.Status != rediacc.StatusCancelled {
			t.Fatalf("ESCAPE: task %s of team %s (%s) on machine %s", tk.ID, tk.Team, tk.Status, tk.Machine)
		}
	}
	if len(ts) != submitted {
		t.Fatalf("%d tasks stored, %d submits succeeded", len(ts), submitted)
	}
	// Every task.create recorded ok names a task that exists.
	recs, err := c.AuditLog(owner, rediacc.AuditFilter{Action: "task.create", Result: "ok", Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != submitted {
		t.Fatalf("%d task.create ok records for %d tasks", len(recs), submitted)
	}
	t.Logf("%d rounds: the submit won %d times, the move %d times", rounds, submitted, moved)
	if submitted == 0 || moved == 0 {
		t.Logf("note: only one side ever won: the race was not exercised both ways on this host")
	}
}

// Issue 8, kind 2: a worker re-checks, where the work starts, what the
// task was authorized on. A task whose machine is no longer its team's
// (here written straight into the store, as a store without guards, or an
// older rediacc, could have left it) fails with ErrMachineChanged and never
// runs: the command would create a marker file, which must not appear; and
// no secret of the machine's new team is ever resolved.
func TestWorkerNeverRunsATaskOnAnotherTeamsMachine(t *testing.T) {
	c, owner := alphaBetaWithSecrets(t)
	teamMachine(t, c, "m", "alpha", nil, 104)
	marker := filepath.Join(t.TempDir(), "ran")
	if err := os.Chmod(filepath.Dir(marker), 0o777); err != nil {
		t.Fatal(err)
	}
	id, err := rediacc.InsertTaskForTest(c, "alpha", "m", rediacc.TaskSpec{Command: "touch " + marker,
		Secrets: map[string]string{"K": "api/key"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.MoveMachine(owner, "m", "beta"); !errors.Is(err, rediacc.ErrMachineBusy) {
		t.Fatalf("move with a pending task: %v", err)
	}
	if err := rediacc.MoveMachineForTest(c, "m", "beta"); err != nil { // bypassing the store's rule
		t.Fatal(err)
	}
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	got := get(t, c, id)
	if got.Status != rediacc.StatusFailed || !strings.Contains(got.Error, rediacc.ErrMachineChanged.Error()) || got.Attempts != 1 {
		t.Fatalf("task on a machine that left its team: %s attempts %d: %s", got.Status, got.Attempts, got.Error)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the task ran: %v", err)
	}
	// A removed machine: the same.
	if err := rediacc.MoveMachineForTest(c, "m", "alpha"); err != nil {
		t.Fatal(err)
	}
	id2, err := rediacc.InsertTaskForTest(c, "alpha", "m", rediacc.TaskSpec{Command: "touch " + marker})
	if err != nil {
		t.Fatal(err)
	}
	if err := rediacc.RemoveMachineForTest(c, "m"); err != nil {
		t.Fatal(err)
	}
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := get(t, c, id2); got.Status != rediacc.StatusFailed || !strings.Contains(got.Error, "was removed") {
		t.Fatalf("task on a removed machine: %s: %s", got.Status, got.Error)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the task ran: %v", err)
	}
}

// The secrets a task gets come from its own team's vault, by the team's
// id: never from another team, and a rename changes nothing.
func TestTaskSecretsComeFromItsTeam(t *testing.T) {
	c, owner := alphaBetaWithSecrets(t)
	teamMachine(t, c, "am", "alpha", nil, 105)
	// sha256 of the value: the output shows which team's value the task got
	// (the value itself would be masked).
	task := submit(t, c, rediacc.TaskSpec{Machine: "am", Command: `printf %s "$K" | sha256sum | cut -c1-16`,
		Secrets: map[string]string{"K": "api/key"}})
	if err := c.RenameTeam(owner, "alpha", "alpha2"); err != nil {
		t.Fatal(err)
	}
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	got := get(t, c, task.ID)
	// sha256("alpha-value")[:16]
	if got.Status != rediacc.StatusCompleted || strings.TrimSpace(got.Stdout) != sha16("alpha-value") {
		t.Fatalf("the task's secret: %s %q (alpha %s, beta %s) %s", got.Status, got.Stdout, sha16("alpha-value"), sha16("beta-value"), got.Error)
	}
}

// sha16 is the first 16 hex digits of s's SHA-256.
func sha16(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:16]
}

// alphaBetaWithSecrets builds teams alpha and beta, each with api/key
// = "<team>-value" in its vault.
func alphaBetaWithSecrets(t *testing.T) (*rediacc.Client, context.Context) {
	t.Helper()
	c := newClient(t, nil)
	owner := asOwner()
	for _, team := range []string{"alpha", "beta"} {
		if _, err := c.CreateTeam(owner, team, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := c.SetSecret(owner, team, "api/key", []byte(team+"-value"), nil); err != nil {
			t.Fatal(err)
		}
	}
	return c, owner
}
