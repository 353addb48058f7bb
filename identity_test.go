package rediacc_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
)

// Issue 8, kind 1: a team's vault, finished tasks and audit records belong
// to its id, not its name. The example: gamma is deleted and
// created again, and the new gamma's admin must see nothing of the old one;
// the owner and auditors still can, by id.
func TestTeamNameReuseInheritsNothing(t *testing.T) {
	dir := t.TempDir()
	c := newClient(t, func(cfg *rediacc.Config) { cfg.DataDir = dir })
	owner := asOwner()
	if _, err := c.CreateTeam(owner, "gamma", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetMember(owner, "gamma", "alice-admin", rediacc.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	if err := c.AddStoreRole(owner, "audra", rediacc.RoleAuditor); err != nil {
		t.Fatal(err)
	}
	alice := rediacc.WithActor(context.Background(), "alice-admin")
	if _, err := c.SetSecret(alice, "gamma", "api/key", []byte("old-secret"), nil); err != nil {
		t.Fatal(err)
	}
	// A finished task with output, on a real machine of gamma.
	teamMachine(t, c, "gm", "gamma", nil, 101)
	old, err := c.Submit(alice, rediacc.TaskSpec{Machine: "gm", Command: "echo old-output", Env: map[string]string{"TOKEN_HINT": "old-env"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := get(t, c, old.ID); got.Status != rediacc.StatusCompleted || got.Stdout != "old-output\n" {
		t.Fatalf("old task: %s %q %s", got.Status, got.Stdout, got.Error)
	}
	teams, _ := c.Teams(owner)
	var oldID string
	for _, tm := range teams {
		if tm.Name == "gamma" {
			oldID = tm.ID
		}
	}
	if oldID == "" || oldID == "gamma" {
		t.Fatalf("gamma's id: %q (teams %+v)", oldID, teams)
	}
	if err := c.RemoveMachine(owner, "gm"); err != nil {
		t.Fatal(err)
	}

	// The vault holds a secret: delete is refused, nothing changes.
	err = c.DeleteTeam(owner, "gamma")
	if !errors.Is(err, rediacc.ErrTeamVaultNotEmpty) || !errors.Is(err, rediacc.ErrTeamNotEmpty) || !strings.Contains(err.Error(), "api/key") {
		t.Fatalf("delete with secrets: %v", err)
	}
	if s, err := c.GetSecret(alice, "gamma", "api/key"); err != nil || string(s.Value) != "old-secret" {
		t.Fatalf("the refused delete changed the vault: %v", err)
	}
	if ms, err := c.Members(owner, "gamma"); err != nil || len(ms) != 1 {
		t.Fatalf("the refused delete changed the members: %+v %v", ms, err)
	}
	vaultFile := filepath.Join(dir, "vault", oldID+".age")
	if _, err := os.Stat(vaultFile); err != nil {
		t.Fatalf("gamma's vault file (by id): %v", err)
	}
	// --purge-vault: deleted, and the vault's data gone from disk.
	if err := c.DeleteTeam(owner, "gamma", rediacc.PurgeVault()); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{vaultFile, vaultFile + ".bak"} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after the purge: %v", f, err)
		}
	}
	if hits := grepDir(t, filepath.Join(dir, "vault"), "old-secret"); len(hits) != 0 {
		t.Errorf("the old secret is still on disk: %v", hits)
	}
	purges, err := c.AuditLog(owner, rediacc.AuditFilter{Action: "team.vault.purge"})
	if err != nil || len(purges) != 1 || purges[0].Result != "ok" || purges[0].Team != oldID || purges[0].Details["keys"] != "1" {
		t.Fatalf("purge audit: %+v %v", purges, err)
	}

	// A new gamma: a new id, and nothing of the old one.
	fresh, err := c.CreateTeam(owner, "gamma", "")
	if err != nil || fresh.ID == oldID {
		t.Fatalf("new gamma: %+v %v", fresh, err)
	}
	if _, err := c.SetMember(owner, "gamma", "mallory", rediacc.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	mallory := rediacc.WithActor(context.Background(), "mallory")
	if _, err := c.GetSecret(mallory, "gamma", "api/key"); !errors.Is(err, rediacc.ErrSecretNotFound) {
		t.Errorf("mallory reads the old gamma's secret: %v", err)
	}
	if keys, err := c.ListSecrets(mallory, "gamma"); err != nil || len(keys) != 0 {
		t.Errorf("mallory lists the old gamma's keys: %v %v", keys, err)
	}
	if ts, err := c.List(mallory, rediacc.ListFilter{Team: "gamma"}); err != nil || len(ts) != 0 {
		t.Errorf("mallory lists the old gamma's tasks: %d tasks, %v", len(ts), err)
	}
	for name, read := range map[string]func() error{
		"Get":     func() error { _, err := c.Get(mallory, old.ID); return err },
		"TaskLog": func() error { _, err := c.TaskLog(mallory, old.ID); return err },
		"Wait":    func() error { _, err := c.Wait(mallory, old.ID); return err },
		"WaitAll": func() error { _, err := c.WaitAll(mallory, []string{old.ID}); return err },
		"Watch":   func() error { _, err := c.Watch(mallory, []string{old.ID}); return err },
		"List by id": func() error {
			_, err := c.List(mallory, rediacc.ListFilter{TeamID: oldID})
			return err
		},
		"AuditLog by id": func() error {
			_, err := c.AuditLog(mallory, rediacc.AuditFilter{TeamID: oldID})
			return err
		},
	} {
		// A task of a team mallory has no role in is not found (as an
		// unknown id); a team by id is denied.
		want := rediacc.ErrNotFound
		if strings.HasSuffix(name, "by id") {
			want = rediacc.ErrPermissionDenied
		}
		if err := read(); !errors.Is(err, want) {
			t.Errorf("mallory: %s of the old gamma's task: %v, want %v", name, err, want)
		}
	}
	recs, err := c.AuditLog(mallory, rediacc.AuditFilter{Team: "gamma"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Team != fresh.ID || r.Actor == "alice-admin" || r.EntityID == old.ID {
			t.Errorf("mallory reads a record of the old gamma: %+v", r)
		}
	}
	if s, err := c.QueueStats(mallory, rediacc.StatsFilter{Team: "gamma"}); err != nil || len(s.ByStatus) != 0 || s.Finished.Total() != 0 {
		t.Errorf("mallory's stats show the old gamma's tasks: %+v %v", s, err)
	}

	// The owner and the auditor still read the old team, by id.
	all, err := c.Teams(owner, rediacc.TeamFilter{IncludeDeleted: true})
	if err != nil {
		t.Fatal(err)
	}
	var deleted *rediacc.Team
	for i := range all {
		if all[i].ID == oldID {
			deleted = &all[i]
		}
	}
	if deleted == nil || deleted.Name != "gamma" || deleted.DeletedAt.IsZero() {
		t.Fatalf("Teams(IncludeDeleted): %+v", all)
	}
	if _, err := c.Teams(mallory, rediacc.TeamFilter{IncludeDeleted: true}); !errors.Is(err, rediacc.ErrPermissionDenied) {
		t.Errorf("a team admin lists deleted teams: %v", err)
	}
	if audited, err := c.Teams(rediacc.WithActor(context.Background(), "audra"), rediacc.TeamFilter{IncludeDeleted: true}); err != nil || len(audited) != len(all) {
		t.Errorf("the auditor lists deleted teams: %d, %v", len(audited), err)
	}
	oldTasks, err := c.List(owner, rediacc.ListFilter{TeamID: oldID})
	if err != nil || len(oldTasks) != 1 || oldTasks[0].ID != old.ID || oldTasks[0].Stdout != "old-output\n" || oldTasks[0].Team != "gamma" {
		t.Errorf("owner lists the old gamma's tasks by id: %+v %v", oldTasks, err)
	}
	if ts, _ := c.List(owner, rediacc.ListFilter{Team: "gamma"}); len(ts) != 0 {
		t.Errorf("owner's list of the new gamma shows the old one's tasks: %d", len(ts))
	}
	oldRecs, err := c.AuditLog(rediacc.WithActor(context.Background(), "audra"), rediacc.AuditFilter{TeamID: oldID})
	if err != nil || len(oldRecs) == 0 {
		t.Fatalf("auditor reads the old gamma's records by id: %d %v", len(oldRecs), err)
	}
	for _, r := range oldRecs {
		if r.Team != oldID {
			t.Errorf("record of another team in the old gamma's: %+v", r)
		}
	}
	if _, err := c.AuditLog(owner, rediacc.AuditFilter{Team: "gamma", TeamID: oldID}); !errors.Is(err, rediacc.ErrInvalidArgument) {
		t.Errorf("a name and an id of different teams: %v", err)
	}
}

// Issue 8, kind 1: a rename keeps everything with the team (vault, the
// machines' imported identities, tasks, audit scope), and the old name is
// free for a team that starts empty.
func TestRenameKeepsEverything(t *testing.T) {
	c := newClient(t, nil)
	owner := asOwner()
	if _, err := c.CreateTeam(owner, "blue", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetMember(owner, "blue", "bea", rediacc.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	bea := rediacc.WithActor(context.Background(), "bea")
	if _, err := c.SetSecret(bea, "blue", "db/password", []byte("s3cret"), nil); err != nil {
		t.Fatal(err)
	}
	srv := realSSHD(t, 102)
	if _, err := c.AddMachine(owner, rediacc.Machine{Name: "bm", Team: "blue", Host: srv.Host, Port: srv.Port, User: srv.User,
		IdentityFile: srv.ClientKeyPath, ImportIdentity: true, KnownHostsFile: srv.KnownHostsPath}); err != nil {
		t.Fatal(err)
	}
	before, err := c.Submit(bea, rediacc.TaskSpec{Machine: "bm", Command: "true", IdempotencyKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RenameTeam(owner, "blue", "navy"); err != nil {
		t.Fatal(err)
	}
	if s, err := c.GetSecret(bea, "navy", "db/password"); err != nil || string(s.Value) != "s3cret" {
		t.Fatalf("the vault after the rename: %v", err)
	}
	after, err := c.Submit(bea, rediacc.TaskSpec{Machine: "bm", Command: "echo $P", Secrets: map[string]string{"P": "db/password"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	got := get(t, c, after.ID)
	if got.Status != rediacc.StatusCompleted || got.Team != "navy" || got.Stdout != "***\n" {
		t.Fatalf("a task on the renamed team's machine (vault identity, vault secret): %s team %q %q %s", got.Status, got.Team, got.Stdout, got.Error)
	}
	if ts, err := c.List(bea, rediacc.ListFilter{Team: "navy"}); err != nil || len(ts) != 2 || ts[0].ID != before.ID || ts[0].Team != "navy" {
		t.Errorf("tasks after the rename: %v %v", ts, err)
	}
	if again, err := c.Submit(bea, rediacc.TaskSpec{Machine: "bm", Command: "true", IdempotencyKey: "k1"}); err != nil || again.ID != before.ID {
		t.Errorf("the idempotency key after the rename: %v %v", again, err)
	}
	recs, err := c.AuditLog(bea, rediacc.AuditFilter{Team: "navy", Action: "vault.write"})
	if err != nil || len(recs) != 1 || recs[0].Details["team_name"] != "blue" {
		t.Errorf("the team's records from before the rename, read by its new name: %+v %v", recs, err)
	}
	// The old name is free, for a team that starts empty.
	if _, err := c.CreateTeam(owner, "blue", ""); err != nil {
		t.Fatal(err)
	}
	if keys, err := c.ListSecrets(owner, "blue"); err != nil || len(keys) != 0 {
		t.Errorf("the new blue's vault: %v %v", keys, err)
	}
	if ts, err := c.List(owner, rediacc.ListFilter{Team: "blue"}); err != nil || len(ts) != 0 {
		t.Errorf("the new blue's tasks: %d %v", len(ts), err)
	}
	if ms, err := c.Machines(owner, rediacc.MachineFilter{Team: "blue"}); err != nil || len(ms) != 0 {
		t.Errorf("the new blue's machines: %v %v", ms, err)
	}
}

// Issue 8, kind 1: a machine removed and added again under its name is
// another machine: a new id, none of the old one's vault identity, tasks
// or idempotency keys.
func TestMachineNameReuseInheritsNothing(t *testing.T) {
	c := newClient(t, nil)
	owner := asOwner()
	srv := realSSHD(t, 103)
	add := func() rediacc.Machine {
		t.Helper()
		m, err := c.AddMachine(owner, rediacc.Machine{Name: "mm", Host: srv.Host, Port: srv.Port, User: srv.User,
			IdentityFile: srv.ClientKeyPath, ImportIdentity: true, KnownHostsFile: srv.KnownHostsPath})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	first := add()
	ts, err := c.FanOut(owner, rediacc.FanOutSpec{Team: rediacc.DefaultTeam, TaskSpec: rediacc.TaskSpec{Command: "true", IdempotencyKey: "rollout"}})
	if err != nil || len(ts) != 1 {
		t.Fatal(err)
	}
	if _, err := c.Cancel(owner, ts[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveMachine(owner, "mm"); err != nil {
		t.Fatal(err)
	}
	if keys, _ := c.ListSecrets(owner, rediacc.DefaultTeam); len(keys) != 0 {
		t.Fatalf("the removed machine's identity stayed: %v", keys)
	}
	second := add()
	if second.ID == first.ID || second.IdentitySecret == first.IdentitySecret {
		t.Fatalf("the new mm reuses the old one's id or key: %+v %+v", first, second)
	}
	again, err := c.FanOut(owner, rediacc.FanOutSpec{Team: rediacc.DefaultTeam, TaskSpec: rediacc.TaskSpec{Command: "true", IdempotencyKey: "rollout"}})
	if err != nil || len(again) != 1 || again[0].ID == ts[0].ID || again[0].MachineID != second.ID {
		t.Fatalf("the same fan-out key on the new mm returned the old machine's task: %+v %v", again, err)
	}
	if old := get(t, c, ts[0].ID); old.Machine != "mm" || old.MachineID != first.ID {
		t.Errorf("the old task's machine: %q %q", old.Machine, old.MachineID)
	}
	if ms, _ := c.List(owner, rediacc.ListFilter{Machine: "mm"}); len(ms) != 1 || ms[0].ID != again[0].ID {
		t.Errorf("List(machine mm) shows the old machine's tasks: %v", ms)
	}
}
