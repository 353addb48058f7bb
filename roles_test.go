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
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// The users of the role matrix tests, one per role, plus an outsider and a
// member of another team.
var matrixUsers = []string{"owner", "admin", "operator", "viewer", "auditor", "outsider", "staging-admin"}

// prodMember: the matrix users who may see prod's machines and tasks.
var prodMember = map[string]bool{"owner": true, "admin": true, "operator": true, "viewer": true}

type roleFixture struct {
	c       *rediacc.Client
	keyFile string
	task    string // a PENDING task of prod
	done    string // a COMPLETED-or-not task of prod, used for reads
}

func as(user string) context.Context { return rediacc.WithActor(context.Background(), user) }

// newRoleFixture builds a store owned by "owner" with teams prod and
// staging, a machine in each and one member per role in prod.
func newRoleFixture(t *testing.T) *roleFixture {
	t.Helper()
	_, pemKey, err := sshtest.GenerateSigner(nil)
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(t.TempDir(), "id")
	if err := os.WriteFile(key, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	// Admins may name key files there (sshpolicy.go): the matrix tests roles.
	c := newClient(t, func(cfg *rediacc.Config) { cfg.AllowedKeyPaths = []string{filepath.Dir(key)} })
	owner := as("owner")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err = c.CreateTeam(owner, "prod", "production")
	must(err)
	_, err = c.CreateTeam(owner, "staging", "")
	must(err)
	for _, m := range []struct{ name, team string }{{"prod-01", "prod"}, {"staging-01", "staging"}} {
		_, err := c.AddMachine(owner, rediacc.Machine{Name: m.name, Team: m.team, Host: "127.0.0.9", Port: 22, User: "u", IdentityFile: key, HostKeyPolicy: rediacc.HostKeyInsecureIgnore})
		must(err)
	}
	for user, role := range map[string]rediacc.Role{"admin": rediacc.RoleAdmin, "operator": rediacc.RoleOperator, "viewer": rediacc.RoleViewer} {
		_, err := c.SetMember(owner, "prod", user, role)
		must(err)
	}
	_, err = c.SetMember(owner, "staging", "staging-admin", rediacc.RoleAdmin)
	must(err)
	must(c.AddStoreRole(owner, "auditor", rediacc.RoleAuditor))
	task, err := c.Submit(owner, rediacc.TaskSpec{Machine: "prod-01", Command: "echo secret-output"})
	must(err)
	return &roleFixture{c: c, keyFile: key, task: task.ID}
}

// TestRoleMatrix runs every operation of the public API as every role and
// checks the matrix of docs/ROLES.md: allowed calls work; denied calls
// return ErrPermissionDenied naming the actor, the action and the team,
// change nothing, and are audited.
func TestRoleMatrix(t *testing.T) {
	f := newRoleFixture(t)
	c := f.c
	n := 0
	uniq := func(p string) string { n++; return p + "-" + strings.Repeat("x", 0) + itoa(n) }
	type cell struct {
		action  string
		allowed []string
		run     func(ctx context.Context, user string) error
		// hidden: the error of users who may not see the machine or task
		// the cell names (no role in its team): as for an unknown one.
		hidden error
	}
	cells := []cell{
		{"team.create", []string{"owner"}, func(ctx context.Context, _ string) error {
			_, err := c.CreateTeam(ctx, uniq("team"), "")
			return err
		}, nil},
		{"team.rename", []string{"owner"}, func(ctx context.Context, _ string) error {
			name := uniq("ren")
			if _, err := c.CreateTeam(as("owner"), name, ""); err != nil {
				return err
			}
			if _, err := c.SetMember(as("owner"), name, "admin", rediacc.RoleAdmin); err != nil {
				return err
			}
			return c.RenameTeam(ctx, name, uniq("renamed"))
		}, nil},
		{"team.delete", []string{"owner"}, func(ctx context.Context, _ string) error {
			name := uniq("del")
			if _, err := c.CreateTeam(as("owner"), name, ""); err != nil {
				return err
			}
			if _, err := c.SetMember(as("owner"), name, "admin", rediacc.RoleAdmin); err != nil {
				return err
			}
			return c.DeleteTeam(ctx, name)
		}, nil},
		{"team.member.add", []string{"owner", "admin"}, func(ctx context.Context, _ string) error {
			_, err := c.SetMember(ctx, "prod", uniq("newbie"), rediacc.RoleViewer)
			return err
		}, nil},
		{"team.member.remove", []string{"owner", "admin"}, func(ctx context.Context, _ string) error {
			u := uniq("leaver")
			if _, err := c.SetMember(as("owner"), "prod", u, rediacc.RoleViewer); err != nil {
				return err
			}
			return c.RemoveMember(ctx, "prod", u)
		}, nil},
		{"team.member.list", []string{"owner", "admin"}, func(ctx context.Context, _ string) error {
			_, err := c.Members(ctx, "prod")
			return err
		}, nil},
		{"owner.add", []string{"owner"}, func(ctx context.Context, _ string) error {
			return c.AddStoreRole(ctx, uniq("owner2"), rediacc.RoleOwner)
		}, nil},
		{"auditor.add", []string{"owner"}, func(ctx context.Context, _ string) error {
			return c.AddStoreRole(ctx, uniq("auditor2"), rediacc.RoleAuditor)
		}, nil},
		{"machine.add", []string{"owner", "admin"}, func(ctx context.Context, _ string) error {
			_, err := c.AddMachine(ctx, rediacc.Machine{Name: uniq("m"), Team: "prod", Host: "127.0.0.9", User: "u", IdentityFile: f.keyFile, HostKeyPolicy: rediacc.HostKeyInsecureIgnore})
			return err
		}, nil},
		{"machine.remove", []string{"owner", "admin"}, func(ctx context.Context, _ string) error {
			name := uniq("gone")
			if _, err := c.AddMachine(as("owner"), rediacc.Machine{Name: name, Team: "prod", Host: "127.0.0.9", User: "u", IdentityFile: f.keyFile, HostKeyPolicy: rediacc.HostKeyInsecureIgnore}); err != nil {
				return err
			}
			return c.RemoveMachine(ctx, name)
		}, rediacc.ErrNotFound},
		{"machine.hostkeys", []string{"owner", "admin"}, func(ctx context.Context, _ string) error {
			return c.ForgetHostKeys(ctx, "prod-01")
		}, rediacc.ErrNotFound},
		{"machine.read", []string{"owner", "admin", "operator", "viewer"}, func(ctx context.Context, _ string) error {
			_, err := c.Machine(ctx, "prod-01")
			return err
		}, rediacc.ErrNotFound},
		{"key.list", []string{"owner", "admin", "operator", "viewer"}, func(ctx context.Context, _ string) error {
			_, err := c.Keys(ctx, rediacc.KeyFilter{Team: "prod"})
			return err
		}, nil},
		{"key.rotate", []string{"owner", "admin"}, func(ctx context.Context, _ string) error {
			_, err := c.SubmitKeyRotation(ctx, rediacc.KeyRotationOptions{Machine: "prod-01"})
			return err
		}, rediacc.ErrNotFound},
		{"task.create", []string{"owner", "admin", "operator"}, func(ctx context.Context, _ string) error {
			_, err := c.Submit(ctx, rediacc.TaskSpec{Machine: "prod-01", Command: "true"})
			return err
		}, rediacc.ErrUnknownMachine},
		{"task.cancel", []string{"owner", "admin", "operator"}, func(ctx context.Context, _ string) error {
			task, err := c.Submit(as("owner"), rediacc.TaskSpec{Machine: "prod-01", Command: "true"})
			if err != nil {
				return err
			}
			_, err = c.Cancel(ctx, task.ID)
			return err
		}, rediacc.ErrNotFound},
		{"task.read", []string{"owner", "admin", "operator", "viewer"}, func(ctx context.Context, _ string) error {
			_, err := c.Get(ctx, f.task)
			return err
		}, rediacc.ErrNotFound},
		{"task.list", []string{"owner", "admin", "operator", "viewer"}, func(ctx context.Context, _ string) error {
			_, err := c.List(ctx, rediacc.ListFilter{Team: "prod"})
			return err
		}, nil},
		{"audit.read", []string{"owner", "admin", "auditor"}, func(ctx context.Context, _ string) error {
			_, err := c.AuditLog(ctx, rediacc.AuditFilter{Team: "prod", Limit: 5})
			return err
		}, nil},
		{"audit.verify", []string{"owner", "auditor"}, func(ctx context.Context, _ string) error {
			_, err := c.VerifyAudit(ctx)
			return err
		}, nil},
	}
	for _, cl := range cells {
		for _, user := range matrixUsers {
			want := false
			for _, a := range cl.allowed {
				want = want || a == user
			}
			t.Run(cl.action+"/"+user, func(t *testing.T) {
				before := auditCount(t, c)
				err := cl.run(as(user), user)
				switch {
				case want && err != nil:
					t.Fatalf("%s as %s: %v, want allowed", cl.action, user, err)
				case !want && cl.hidden != nil && !prodMember[user]:
					// Not a member of prod: reported as if the machine or
					// task did not exist, and audited as a denial.
					if !errors.Is(err, cl.hidden) || errors.Is(err, rediacc.ErrPermissionDenied) {
						t.Fatalf("%s as %s: %v, want %v (as for an unknown name)", cl.action, user, err, cl.hidden)
					}
					recs, aerr := c.AuditLog(as("owner"), rediacc.AuditFilter{Actor: user, Result: "denied", Action: cl.action, Limit: 10000})
					if aerr != nil || len(recs) == 0 {
						t.Errorf("hidden denial of %s to %s not audited (%v)", cl.action, user, aerr)
					}
				case !want && !errors.Is(err, rediacc.ErrPermissionDenied):
					t.Fatalf("%s as %s: %v, want ErrPermissionDenied", cl.action, user, err)
				case !want:
					if !strings.Contains(err.Error(), user) || !strings.Contains(err.Error(), cl.action) {
						t.Errorf("denial %q does not name the actor %q and the action %q", err, user, cl.action)
					}
					recs, aerr := c.AuditLog(as("owner"), rediacc.AuditFilter{Actor: user, Result: "denied", Action: cl.action, Limit: 10000})
					if aerr != nil || len(recs) == 0 {
						t.Errorf("denial of %s to %s not audited (%v)", cl.action, user, aerr)
					}
				}
				if after := auditCount(t, c); after <= before {
					t.Errorf("%s as %s appended no audit record", cl.action, user)
				}
			})
		}
	}
}

func auditCount(t *testing.T, c *rediacc.Client) int {
	t.Helper()
	recs, err := c.AuditLog(as("owner"), rediacc.AuditFilter{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	return len(recs)
}

// Denied calls change nothing; a member of staging can neither see nor
// touch prod.
func TestTeamIsolation(t *testing.T) {
	f := newRoleFixture(t)
	c := f.c
	st := as("staging-admin")
	// Another team's tasks and machines are not found, as unknown ones.
	if _, err := c.Get(st, f.task); !errors.Is(err, rediacc.ErrNotFound) {
		t.Errorf("staging admin reads a prod task: %v", err)
	}
	if _, err := c.Cancel(st, f.task); !errors.Is(err, rediacc.ErrNotFound) {
		t.Errorf("staging admin cancels a prod task: %v", err)
	}
	if got, _ := c.Get(as("owner"), f.task); got.Status != rediacc.StatusPending {
		t.Errorf("denied cancel changed the task: %s", got.Status)
	}
	if _, err := c.Submit(st, rediacc.TaskSpec{Machine: "prod-01", Command: "true"}); !errors.Is(err, rediacc.ErrUnknownMachine) {
		t.Errorf("staging admin submits to prod: %v", err)
	}
	if err := c.MoveMachine(st, "prod-01", "staging"); !errors.Is(err, rediacc.ErrNotFound) {
		t.Errorf("staging admin moves a prod machine: %v", err)
	}
	if err := c.MoveMachine(as("admin"), "prod-01", "staging"); !errors.Is(err, rediacc.ErrPermissionDenied) {
		t.Errorf("prod admin moves a machine into staging (not admin there): %v", err)
	}
	ms, err := c.Machines(st)
	if err != nil || len(ms) != 1 || ms[0].Name != "staging-01" {
		t.Errorf("staging admin sees machines %v (%v), want only staging-01", ms, err)
	}
	tasks, err := c.List(st, rediacc.ListFilter{})
	if err != nil || len(tasks) != 0 {
		t.Errorf("staging admin sees %d tasks (%v)", len(tasks), err)
	}
	if _, err := c.List(st, rediacc.ListFilter{Team: "prod"}); !errors.Is(err, rediacc.ErrPermissionDenied) {
		t.Errorf("staging admin lists prod's queue: %v", err)
	}
	teams, err := c.Teams(st)
	if err != nil || len(teams) != 1 || teams[0].Name != "staging" {
		t.Errorf("staging admin sees teams %v (%v)", teams, err)
	}
	if _, err := c.Submit(context.Background(), rediacc.TaskSpec{Machine: "prod-01", Command: "true"}); !errors.Is(err, rediacc.ErrNoActor) {
		t.Errorf("submit without an actor: %v, want ErrNoActor", err)
	}
	// Viewers read tasks without their output.
	got, err := c.Get(as("viewer"), f.task)
	if err != nil {
		t.Fatal(err)
	}
	if got.Stdout != "" || got.Stderr != "" {
		t.Errorf("viewer sees output")
	}
	// Moving a machine as admin of both teams works.
	if _, err := c.SetMember(as("owner"), "staging", "admin", rediacc.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Cancel(as("owner"), f.task); err != nil {
		t.Fatal(err)
	}
	if err := c.MoveMachine(as("admin"), "prod-01", "staging"); err != nil {
		t.Errorf("admin of both teams moves a machine: %v", err)
	}
	if err := c.DeleteTeam(as("owner"), "staging"); !errors.Is(err, rediacc.ErrTeamNotEmpty) {
		t.Errorf("delete a team with machines: %v, want ErrTeamNotEmpty", err)
	}
	if err := c.RemoveStoreRole(as("owner"), "owner", rediacc.RoleOwner); !errors.Is(err, rediacc.ErrInvalidArgument) {
		t.Errorf("remove the last owner: %v", err)
	}
}

// The worker claims only the tasks of teams where its actor may run tasks.
func TestWorkerRunsOnlyItsTeams(t *testing.T) {
	c := newClient(t, nil)
	owner := as("owner")
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 6})
	for _, team := range []string{"dev", "prod"} {
		if _, err := c.CreateTeam(owner, team, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := c.AddMachine(owner, rediacc.Machine{Name: team + "-01", Team: team, Host: srv.Host, Port: srv.Port, User: srv.User,
			IdentityFile: srv.ClientKeyPath, KnownHostsFile: srv.KnownHostsPath}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.SetMember(owner, "dev", "devops", rediacc.RoleOperator); err != nil {
		t.Fatal(err)
	}
	dev, err := c.Submit(owner, rediacc.TaskSpec{Machine: "dev-01", Command: "echo dev"})
	if err != nil {
		t.Fatal(err)
	}
	prod, err := c.Submit(owner, rediacc.TaskSpec{Machine: "prod-01", Command: "echo prod"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(as("devops"), 30*time.Second)
	defer cancel()
	go func() {
		for {
			if got, _ := c.Get(owner, dev.ID); got != nil && got.Status.Terminal() {
				cancel()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	if err := c.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Get(owner, dev.ID); got.Status != rediacc.StatusCompleted {
		t.Errorf("dev task: %s", got.Status)
	}
	if got, _ := c.Get(owner, prod.ID); got.Status != rediacc.StatusPending {
		t.Errorf("prod task run by a dev operator's worker: %s", got.Status)
	}
	// The lifecycle is in the trail, with the worker.
	recs, err := c.AuditLog(owner, rediacc.AuditFilter{EntityID: dev.ID})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, r := range recs {
		if r.Action == "task.read" { // the test's own polling
			continue
		}
		actions = append(actions, r.Action)
		if r.Action == "task.complete" && (r.Actor != "devops" || r.Details["worker"] != c.WorkerID()) {
			t.Errorf("completion record: %+v", r)
		}
	}
	if got := strings.Join(actions, ","); got != "task.create,task.assign,task.start,task.complete" {
		t.Errorf("lifecycle records: %s", got)
	}
}
