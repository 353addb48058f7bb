package rediacc_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/rediacc/rediacc"
)

// snapshot is what a failed operation must leave as it was: teams (deleted
// ones included), members, machines, tasks, store roles, every vault's
// contents and the vault's files on disk. The audit trail is not in it: a
// failure is audited.
type snapshot struct {
	Teams   []rediacc.Team
	Members map[string][]rediacc.Member
	Secrets map[string]map[string]string // team -> key -> value@version
	Mach    []rediacc.Machine
	Tasks   []string // id status team machine
	Roles   []rediacc.Member
	Files   map[string]string // vault dir file -> sha256
}

func takeSnapshot(t *testing.T, c *rediacc.Client, dataDir string) snapshot {
	t.Helper()
	ctx := asOwner()
	var s snapshot
	var err error
	if s.Teams, err = c.Teams(ctx, rediacc.TeamFilter{IncludeDeleted: true}); err != nil {
		t.Fatal(err)
	}
	s.Members, s.Secrets = map[string][]rediacc.Member{}, map[string]map[string]string{}
	for _, tm := range s.Teams {
		if !tm.DeletedAt.IsZero() {
			continue
		}
		if s.Members[tm.Name], err = c.Members(ctx, tm.Name); err != nil {
			t.Fatal(err)
		}
		keys, err := c.ListSecrets(ctx, tm.Name)
		if err != nil {
			t.Fatal(err)
		}
		s.Secrets[tm.Name] = map[string]string{}
		for _, k := range keys {
			v, err := c.GetSecret(ctx, tm.Name, k)
			if err != nil {
				t.Fatal(err)
			}
			s.Secrets[tm.Name][k] = string(v.Value) + "@" + itoa(v.Version)
		}
	}
	if s.Mach, err = c.Machines(ctx); err != nil {
		t.Fatal(err)
	}
	ts, err := c.List(ctx, rediacc.ListFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range ts {
		s.Tasks = append(s.Tasks, strings.Join([]string{tk.ID, string(tk.Status), tk.TeamID, tk.MachineID}, " "))
	}
	sort.Strings(s.Tasks)
	if s.Roles, err = c.StoreRoles(ctx); err != nil {
		t.Fatal(err)
	}
	s.Files = map[string]string{}
	entries, _ := os.ReadDir(filepath.Join(dataDir, "vault"))
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(dataDir, "vault", e.Name()))
		sum := sha256.Sum256(b)
		s.Files[e.Name()] = hex.EncodeToString(sum[:8])
	}
	return s
}

// Issue 8, kind 4: a failed operation changes nothing. The issue's
// example: `machine add mm … --identity key` for an existing mm failed
// with "already exists" after overwriting mm's identity in the vault and
// deleting it in the rollback, so the existing mm could no longer log in.
// Every mutating operation's failure paths are run here and checked for
// "nothing changed" (store rows, vault contents, vault files); and mm
// still logs in at the end.
func TestFailedOperationsChangeNothing(t *testing.T) {
	dir := t.TempDir()
	c := newClient(t, func(cfg *rediacc.Config) { cfg.DataDir = dir })
	owner := asOwner()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.CreateTeam(owner, "prod", "")
	must(err)
	_, err = c.CreateTeam(owner, "dev", "")
	must(err)
	_, err = c.SetMember(owner, "prod", "adm", rediacc.RoleAdmin)
	must(err)
	_, err = c.SetMember(owner, "prod", "vic", rediacc.RoleViewer)
	must(err)
	_, err = c.SetSecret(owner, "prod", "db/password", []byte("p1"), nil)
	must(err)
	_, err = c.SetSecret(owner, "dev", "api/key", []byte("d1"), nil)
	must(err)
	srv := realSSHD(t, 106)
	add := func(ctx context.Context, name, team string) (rediacc.Machine, error) {
		return c.AddMachine(ctx, rediacc.Machine{Name: name, Team: team, Host: srv.Host, Port: srv.Port, User: srv.User,
			IdentityFile: srv.ClientKeyPath, ImportIdentity: true, KnownHostsFile: srv.KnownHostsPath})
	}
	mm, err := add(owner, "mm", "prod")
	must(err)
	_, err = add(owner, "busy", "prod")
	must(err)
	pending, err := c.Submit(owner, rediacc.TaskSpec{Machine: "busy", Command: "true"})
	must(err)
	done, err := c.Submit(owner, rediacc.TaskSpec{Machine: "mm", Command: "echo before"})
	must(err)
	if _, err := c.Cancel(owner, pending.ID); err != nil { // let only "done" run now
		t.Fatal(err)
	}
	must(c.RunUntilEmpty(ctxTimeout(t, time.Minute)))
	if got := get(t, c, done.ID); got.Status != rediacc.StatusCompleted {
		t.Fatalf("setup task: %s %s", got.Status, got.Error)
	}
	pending, err = c.Submit(owner, rediacc.TaskSpec{Machine: "busy", Command: "true"})
	must(err)
	badKey := filepath.Join(t.TempDir(), "not-a-key")
	must(os.WriteFile(badKey, []byte("hello"), 0o600))
	adm, vic := as("adm"), as("vic")

	cases := []struct {
		name string
		call func() error
		want error
	}{
		{"machine add of an existing name, with its identity", func() error { _, err := add(owner, "mm", "prod"); return err }, rediacc.ErrExists},
		{"machine add of an existing name in another team", func() error { _, err := add(owner, "mm", "dev"); return err }, rediacc.ErrExists},
		{"machine add into a missing team", func() error { _, err := add(owner, "new", "ghost"); return err }, rediacc.ErrNotFound},
		{"machine add with a bad key", func() error {
			_, err := c.AddMachine(owner, rediacc.Machine{Name: "new", Team: "prod", Host: "h", IdentityFile: badKey, ImportIdentity: true})
			return err
		}, rediacc.ErrKeyFile},
		{"machine add by a viewer", func() error { _, err := add(vic, "new", "prod"); return err }, rediacc.ErrPermissionDenied},
		{"machine move to a missing team", func() error { return c.MoveMachine(owner, "mm", "ghost") }, rediacc.ErrNotFound},
		{"machine move of a busy machine (identity in the vault)", func() error { return c.MoveMachine(owner, "busy", "dev") }, rediacc.ErrMachineBusy},
		{"machine move by an admin of one team only", func() error { return c.MoveMachine(adm, "mm", "dev") }, rediacc.ErrPermissionDenied},
		{"machine move of a missing machine", func() error { return c.MoveMachine(owner, "ghost", "dev") }, rediacc.ErrNotFound},
		{"machine remove of a busy machine", func() error { return c.RemoveMachine(owner, "busy") }, rediacc.ErrMachineBusy},
		{"machine remove of a missing machine", func() error { return c.RemoveMachine(owner, "ghost") }, rediacc.ErrNotFound},
		{"machine remove by a viewer", func() error { return c.RemoveMachine(vic, "mm") }, rediacc.ErrPermissionDenied},
		{"team create of an existing name", func() error { _, err := c.CreateTeam(owner, "prod", ""); return err }, rediacc.ErrExists},
		{"team create with a bad name", func() error { _, err := c.CreateTeam(owner, "Bad Name", ""); return err }, rediacc.ErrInvalidArgument},
		{"team create by an admin", func() error { _, err := c.CreateTeam(adm, "x", ""); return err }, rediacc.ErrPermissionDenied},
		{"team rename onto an existing name", func() error { return c.RenameTeam(owner, "prod", "dev") }, rediacc.ErrExists},
		{"team rename of the default team", func() error { return c.RenameTeam(owner, rediacc.DefaultTeam, "x") }, rediacc.ErrInvalidArgument},
		{"team rename of a missing team", func() error { return c.RenameTeam(owner, "ghost", "x") }, rediacc.ErrNotFound},
		{"team rename to a bad name", func() error { return c.RenameTeam(owner, "prod", "Bad Name") }, rediacc.ErrInvalidArgument},
		{"team delete with machines", func() error { return c.DeleteTeam(owner, "prod", rediacc.PurgeVault()) }, rediacc.ErrTeamNotEmpty},
		{"team delete with secrets", func() error { return c.DeleteTeam(owner, "dev") }, rediacc.ErrTeamVaultNotEmpty},
		{"team delete of the default team", func() error { return c.DeleteTeam(owner, rediacc.DefaultTeam, rediacc.PurgeVault()) }, rediacc.ErrInvalidArgument},
		{"team delete of a missing team", func() error { return c.DeleteTeam(owner, "ghost") }, rediacc.ErrNotFound},
		{"team delete by an admin", func() error { return c.DeleteTeam(adm, "dev", rediacc.PurgeVault()) }, rediacc.ErrPermissionDenied},
		{"purge of a live team's vault", func() error {
			ts, _ := c.Teams(owner)
			for _, tm := range ts {
				if tm.Name == "dev" {
					return c.PurgeTeamVault(owner, tm.ID)
				}
			}
			return nil
		}, rediacc.ErrInvalidArgument},
		{"member add with a store role", func() error { _, err := c.SetMember(owner, "prod", "x", rediacc.RoleOwner); return err }, rediacc.ErrInvalidArgument},
		{"member add to a missing team", func() error { _, err := c.SetMember(owner, "ghost", "x", rediacc.RoleViewer); return err }, rediacc.ErrNotFound},
		{"member add by a viewer", func() error { _, err := c.SetMember(vic, "prod", "x", rediacc.RoleViewer); return err }, rediacc.ErrPermissionDenied},
		{"member remove of a non-member", func() error { return c.RemoveMember(owner, "prod", "nobody") }, rediacc.ErrNotFound},
		{"vault set with a stale version", func() error {
			_, err := c.SetSecret(owner, "prod", "db/password", []byte("p2"), rediacc.CAS(7))
			return err
		}, rediacc.ErrVersionConflict},
		{"vault set into a missing team", func() error { _, err := c.SetSecret(owner, "ghost", "k", []byte("v"), nil); return err }, rediacc.ErrNotFound},
		{"vault set with a bad key", func() error { _, err := c.SetSecret(owner, "prod", "../k", []byte("v"), nil); return err }, rediacc.ErrInvalidArgument},
		{"vault set by a viewer", func() error { _, err := c.SetSecret(vic, "prod", "k", []byte("v"), nil); return err }, rediacc.ErrPermissionDenied},
		{"vault rm of a missing key", func() error { return c.DeleteSecret(owner, "prod", "nope") }, rediacc.ErrSecretNotFound},
		{"vault rm by a viewer", func() error { return c.DeleteSecret(vic, "prod", "db/password") }, rediacc.ErrPermissionDenied},
		{"submit with a bad priority", func() error {
			_, err := c.Submit(owner, rediacc.TaskSpec{Machine: "mm", Command: "true", Priority: 9})
			return err
		}, rediacc.ErrInvalidPriority},
		{"submit to a missing machine", func() error {
			_, err := c.Submit(owner, rediacc.TaskSpec{Machine: "ghost", Command: "true"})
			return err
		}, rediacc.ErrUnknownMachine},
		{"submit with a machine identity as a secret", func() error {
			_, err := c.Submit(owner, rediacc.TaskSpec{Machine: "mm", Command: "true", Secrets: map[string]string{"K": mm.IdentitySecret}})
			return err
		}, rediacc.ErrInvalidArgument},
		{"submit by a viewer", func() error { _, err := c.Submit(vic, rediacc.TaskSpec{Machine: "mm", Command: "true"}); return err }, rediacc.ErrPermissionDenied},
		{"batch with one bad task", func() error {
			_, err := c.SubmitBatch(owner, []rediacc.TaskSpec{{Machine: "mm", Command: "true"}, {Machine: "mm", Command: ""}})
			return err
		}, rediacc.ErrInvalidTask},
		{"batch with a task of a missing machine", func() error {
			_, err := c.SubmitBatch(owner, []rediacc.TaskSpec{{Machine: "mm", Command: "true"}, {Machine: "ghost", Command: "x"}})
			return err
		}, rediacc.ErrUnknownMachine},
		{"fan-out to no machine", func() error {
			_, err := c.FanOut(owner, rediacc.FanOutSpec{Team: "dev", TaskSpec: rediacc.TaskSpec{Command: "true"}})
			return err
		}, rediacc.ErrNoEligibleMachine},
		{"cancel of a completed task", func() error { _, err := c.Cancel(owner, done.ID); return err }, rediacc.ErrNotCancellable},
		{"cancel of a missing task", func() error { _, err := c.Cancel(owner, "00000000-0000-4000-8000-000000000000"); return err }, rediacc.ErrNotFound},
		{"cancel by a viewer", func() error { _, err := c.Cancel(vic, pending.ID); return err }, rediacc.ErrPermissionDenied},
		{"store role that is a team role", func() error { return c.AddStoreRole(owner, "x", rediacc.RoleAdmin) }, rediacc.ErrInvalidArgument},
		{"removal of the last owner", func() error { return c.RemoveStoreRole(owner, "alice", rediacc.RoleOwner) }, rediacc.ErrInvalidArgument},
	}
	for _, tc := range cases {
		before := takeSnapshot(t, c, dir)
		err := tc.call()
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
			continue
		}
		if diff := cmp.Diff(before, takeSnapshot(t, c, dir), cmpopts.IgnoreUnexported(rediacc.Machine{})); diff != "" {
			t.Errorf("%s failed (%v) but changed (-before +after):\n%s", tc.name, err, diff)
		}
	}
	// mm still logs in with its own identity.
	if _, err := c.Cancel(owner, pending.ID); err != nil {
		t.Fatal(err)
	}
	after, err := c.Submit(owner, rediacc.TaskSpec{Machine: "mm", Command: "echo still here"})
	must(err)
	must(c.RunUntilEmpty(ctxTimeout(t, time.Minute)))
	if got := get(t, c, after.ID); got.Status != rediacc.StatusCompleted || got.Stdout != "still here\n" {
		t.Fatalf("mm after the failed operations: %s %q %s", got.Status, got.Stdout, got.Error)
	}
}
