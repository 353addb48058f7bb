package rediacc_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/internal/store/postgres/pgtest"
)

// TestMigrateFromSQLite copies a used embedded store into PostgreSQL: the
// copy has the same teams, members, roles, machines (host keys included),
// tasks (finished ones with their output, a pending one that a worker on
// the copy then runs with the machine's identity from the copied vault)
// and the same audit trail record for record, which verifies there with
// the source's keyring. A second copy into the same store is refused and
// changes nothing; a directory without a store is reported.
func TestMigrateFromSQLite(t *testing.T) {
	dirA := t.TempDir()
	src := newClient(t, func(c *rediacc.Config) { c.DataDir = dirA; c.HealthInterval = -1 })
	srv := realSSHD(t, 45)
	if _, err := src.CreateTeam(asOwner(), "ops", "the ops team"); err != nil {
		t.Fatal(err)
	}
	if _, err := src.SetMember(asOwner(), "ops", "alice", rediacc.RoleOperator); err != nil {
		t.Fatal(err)
	}
	if err := src.AddStoreRole(asOwner(), "carol", rediacc.RoleAuditor); err != nil {
		t.Fatal(err)
	}
	if _, err := src.AddMachine(asOwner(), rediacc.Machine{Name: "web-1", Team: "ops", Host: srv.Host, Port: srv.Port, User: srv.User,
		IdentityFile: srv.ClientKeyPath, ImportIdentity: true, KnownHostsFile: srv.KnownHostsPath, Labels: map[string]string{"role": "web"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := src.SetSecret(asOwner(), "ops", "db/password", []byte("moved-secret"), nil); err != nil {
		t.Fatal(err)
	}
	// A schedule with a fire, a maintenance window, a paused queue.
	srcSched, err := src.CreateSchedule(asOwner(), rediacc.Schedule{Name: "nightly", Cron: "0 2 * * *", TimeZone: "Europe/Paris",
		Task: rediacc.TaskSpec{Machine: "web-1", Command: "echo nightly"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.TriggerSchedule(asOwner(), "nightly"); err != nil {
		t.Fatal(err)
	}
	if _, err := src.CreateWindow(asOwner(), rediacc.MaintenanceWindow{Machine: "web-1", Cron: "0 3 * * *", Duration: time.Hour, HoldFrom: rediacc.Minimal}); err != nil {
		t.Fatal(err)
	}
	if _, err := src.CreateTeam(asOwner(), "frozen", ""); err != nil {
		t.Fatal(err)
	}
	if err := src.PauseQueue(asOwner(), "frozen", "migration"); err != nil {
		t.Fatal(err)
	}
	done := submit(t, src, rediacc.TaskSpec{Machine: "web-1", Command: "echo before-move", Priority: 2})
	failed := submit(t, src, rediacc.TaskSpec{Machine: "web-1", Command: "echo oops >&2; exit 3"})
	if err := src.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	pending := submit(t, src, rediacc.TaskSpec{Machine: "web-1", Command: `echo "after-move $PW"`, Secrets: map[string]string{"PW": "db/password"}})
	if _, err := src.VerifyAudit(asOwner()); err != nil {
		t.Fatal(err)
	}
	srcTrail, err := src.AuditLog(asOwner(), rediacc.AuditFilter{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	srcKeys, err := src.HostKeys(asOwner(), "web-1")
	if err != nil || len(srcKeys) != 1 {
		t.Fatalf("source host keys: %q, %v", srcKeys, err)
	}

	url := pgtest.Schema(t)
	dst, err := rediacc.OpenPostgres(ctxTimeout(t, time.Minute), url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rediacc.MigrateFromSQLite(ctxTimeout(t, time.Minute), t.TempDir(), dst); !errors.Is(err, rediacc.ErrNotFound) {
		t.Fatalf("migrating an empty directory: %v, want ErrNotFound", err)
	}
	rep, err := rediacc.MigrateFromSQLite(ctxTimeout(t, time.Minute), dirA, dst)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Teams != 3 || rep.Members != 1 || rep.Machines != 1 || rep.Tasks != 4 || rep.HostKeys != 1 || rep.VaultTeams != 1 ||
		rep.AuditRecords < len(srcTrail) || rep.StoreRoles < 2 {
		t.Fatalf("report %+v (source trail %d records)", rep, len(srcTrail))
	}
	if _, err := rediacc.MigrateFromSQLite(ctxTimeout(t, time.Minute), dirA, dst); !errors.Is(err, rediacc.ErrExists) || !strings.Contains(err.Error(), "4 tasks") {
		t.Fatalf("second migration into the same store: %v, want ErrExists naming what it holds", err)
	}
	_ = dst.Close()

	// Another host: the store's URL, a copy of the vault key, the source's
	// audit keyring.
	dirB := t.TempDir()
	key, err := os.ReadFile(filepath.Join(dirA, "vault.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirB, "vault.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	pg, err := rediacc.New(asOwner(), rediacc.Config{StoreURL: url, DataDir: dirB, AuditKeyFile: filepath.Join(dirA, "audit.key"),
		Logger: testLogger(t), PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	n, err := pg.VerifyAudit(asOwner())
	if err != nil || n < int64(len(srcTrail)) {
		t.Fatalf("audit verify on the copy: %d records, %v", n, err)
	}
	dstTrail, err := pg.AuditLog(asOwner(), rediacc.AuditFilter{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range srcTrail {
		d := dstTrail[i]
		if d.Seq != r.Seq || d.Hash != r.Hash || d.PrevHash != r.PrevHash || d.KeyID != r.KeyID || d.Action != r.Action || !d.Time.Equal(r.Time) {
			t.Fatalf("audit record %d differs in the copy:\n%+v\n%+v", r.Seq, r, d)
		}
	}
	for _, id := range []string{done.ID, failed.ID} {
		a, b := get(t, src, id), get(t, pg, id)
		if a.Status != b.Status || a.Stdout != b.Stdout || a.Stderr != b.Stderr || a.Attempts != b.Attempts || a.Priority != b.Priority ||
			!a.CreatedAt.Equal(b.CreatedAt) || !a.CompletedAt.Equal(b.CompletedAt) || a.Machine != b.Machine || a.Team != b.Team {
			t.Fatalf("task %s differs in the copy:\n%+v\n%+v", id, a, b)
		}
	}
	if got := get(t, pg, done.ID); got.Stdout != "before-move\n" || got.Status != rediacc.StatusCompleted {
		t.Fatalf("copied task: %+v", got)
	}
	if ms, err := pg.Members(asOwner(), "ops"); err != nil || len(ms) != 1 || ms[0].User != "alice" {
		t.Fatalf("members in the copy: %+v, %v", ms, err)
	}
	m, err := pg.Machine(asOwner(), "web-1")
	if err != nil || m.Team != "ops" || m.Labels["role"] != "web" || m.IdentitySecret == "" {
		t.Fatalf("machine in the copy: %+v, %v", m, err)
	}
	if keys, err := pg.HostKeys(asOwner(), "web-1"); err != nil || len(keys) != 1 || keys[0] != srcKeys[0] {
		t.Fatalf("host keys in the copy: %q, %v", keys, err)
	}
	if s, err := pg.GetSchedule(asOwner(), "nightly"); err != nil || s.ID != srcSched.ID || !s.NextFireAt.Equal(srcSched.NextFireAt) ||
		s.LastFire == nil || !s.LastFire.Manual || s.LastStatus != "COMPLETED" || s.TimeZone != "Europe/Paris" {
		t.Fatalf("schedule in the copy: %+v, %v", s, err)
	}
	if fs, err := pg.ScheduleFires(asOwner(), "nightly", 0); err != nil || len(fs) != 1 || len(fs[0].TaskIDs) != 1 {
		t.Fatalf("fires in the copy: %+v, %v", fs, err)
	}
	if ws, err := pg.ListWindows(asOwner(), rediacc.WindowFilter{}); err != nil || len(ws) != 1 || ws[0].Machine != "web-1" || ws[0].HoldFrom != rediacc.Minimal {
		t.Fatalf("windows in the copy: %+v, %v", ws, err)
	}
	if gs, err := pg.Gates(asOwner()); err != nil || len(gs) != 1 || gs[0].Team != "frozen" || gs[0].Reason != "migration" {
		t.Fatalf("gates in the copy: %+v, %v", gs, err)
	}
	if err := pg.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := get(t, pg, pending.ID); got.Status != rediacc.StatusCompleted || !strings.Contains(got.Stdout, "after-move") {
		t.Fatalf("pending task run on the copy: %s %q %q", got.Status, got.Stdout, got.Error)
	}
	if _, err := pg.VerifyAudit(asOwner()); err != nil {
		t.Fatalf("audit verify on the copy after new records: %v", err)
	}
}
