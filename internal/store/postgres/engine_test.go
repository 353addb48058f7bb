package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/postgres"
	"github.com/rediacc/rediacc/internal/store/postgres/pgtest"
	"github.com/rediacc/rediacc/internal/store/storetest"
)

// openN opens n engines (n pools, as n processes would) on one new schema.
func openN(t *testing.T, n int) []*postgres.Engine {
	t.Helper()
	dsn := pgtest.Schema(t)
	es := make([]*postgres.Engine, n)
	for i := range es {
		e, err := postgres.Open(ctx, dsn)
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		t.Cleanup(func() { _ = e.Close() })
		es[i] = e
	}
	return es
}

// TestClaimLimitsAcrossEngines: claimers on four engines (four pools: as
// four processes) never claim a task twice nor run more than the
// per-machine limit on a machine, counted across all of them.
func TestClaimLimitsAcrossEngines(t *testing.T) {
	es := openN(t, 4)
	const total = 400
	storetest.CreateTasks(t, es[0], "c", total, 5)
	engines := make([]store.Engine, len(es))
	for i, e := range es {
		engines[i] = e
	}
	per := storetest.ClaimLoad{Workers: 8, PerMachine: 3, Timeout: 5 * time.Minute}.Run(t, engines, total)
	sum := 0
	for _, n := range per {
		sum += n
	}
	if sum != total {
		t.Fatalf("claimed %d tasks in all, want %d: %v", sum, total, per)
	}
}

// TestClaimSameMachineRace: many claimers at once on one machine with a
// limit of 2 (one slot held back for priority 1): exactly one low-priority
// task gets the free slot, then exactly one critical task the reserved one.
func TestClaimSameMachineRace(t *testing.T) {
	es := openN(t, 4)
	for round := range 5 {
		prefix := fmt.Sprintf("r%d", round)
		storetest.CreateTasks(t, es[0], prefix, 20, 1) // all on m0, priorities 1..5
		var (
			wg  sync.WaitGroup
			mu  sync.Mutex
			got []store.Task
		)
		start := make(chan struct{})
		now := storetest.T0.Add(time.Hour)
		for i := range 12 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				ts, err := es[i%len(es)].Claim(ctx, store.ClaimRequest{Owner: fmt.Sprintf("w%d", i), Now: now,
					LeaseUntil: now.Add(time.Hour), Max: 1 + i%3, PerMachine: 2, ReserveCritical: true})
				if err != nil {
					t.Errorf("Claim: %v", err)
				}
				mu.Lock()
				got = append(got, ts...)
				mu.Unlock()
			}()
		}
		close(start)
		wg.Wait()
		running, err := es[1].ListTasks(ctx, store.TaskFilter{Statuses: []store.Status{store.Assigned, store.Processing}})
		if err != nil {
			t.Fatal(err)
		}
		if len(running) > 2 || len(got) != len(running) {
			t.Fatalf("round %d: %d claims returned, %d running on m0 (limit 2): %v", round, len(got), len(running), ids(running))
		}
		// Claims by the losers of the race come later: the limit still holds.
		for i := range 4 {
			if ts, err := es[i].Claim(ctx, store.ClaimRequest{Owner: "late", Now: now, LeaseUntil: now.Add(time.Hour),
				Max: 5, PerMachine: 2, ReserveCritical: true}); err != nil {
				t.Fatal(err)
			} else {
				running = append(running, ts...)
			}
		}
		if len(running) != 2 {
			t.Fatalf("round %d: %d tasks running on m0, want 2 (one low, one critical): %v", round, len(running), ids(running))
		}
		crit := 0
		for _, r := range running {
			if r.Priority == 1 {
				crit++
			}
		}
		if crit < 1 {
			t.Fatalf("round %d: the reserved slot went to a priority 2..5 task: %v", round, running)
		}
		for _, r := range running {
			if _, err := es[0].Finish(ctx, store.Finish{ID: r.ID, Owner: r.LeaseOwner, At: now, Next: store.Cancelled}); err != nil {
				t.Fatal(err)
			}
		}
		// Leave no PENDING task of this round behind.
		pend, _ := es[0].ListTasks(ctx, store.TaskFilter{Statuses: []store.Status{store.Pending}})
		for _, p := range pend {
			if _, err := es[0].Cancel(ctx, p.ID, now); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func ids(ts []store.Task) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.ID
	}
	return out
}

// TestAccessAcrossEngines: the first-owner race and concurrent audit
// appenders on four engines keep one owner and one linear chain.
func TestAccessAcrossEngines(t *testing.T) {
	es := openN(t, 4)
	as := make([]store.Access, len(es))
	for i, e := range es {
		as[i] = e
	}
	storetest.RaceInitOwner(t, as, 8)
	storetest.ConcurrentAudit(t, as, 8, 30)
}

// TestAuditAppendOnly: the store's own role cannot UPDATE, DELETE or
// TRUNCATE audit records directly; TrimAudit (the store's trim path) still
// works, and trims nothing past the base it sets.
func TestAuditAppendOnly(t *testing.T) {
	e := open(t)
	defer e.Close()
	for i := range 5 {
		if _, err := e.AppendAudit(ctx, audit.Record{Time: storetest.T0.Add(time.Duration(i) * time.Second), Actor: "alice",
			Action: "team.create", EntityType: audit.EntityTeam, EntityID: fmt.Sprint(i), Team: "t", Result: audit.ResultOK}); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{
		`UPDATE audit SET actor = 'mallory' WHERE seq = 2`,
		`DELETE FROM audit WHERE seq = 2`,
		`DELETE FROM audit`,
		`TRUNCATE audit`,
	} {
		_, err := e.Pool().Exec(ctx, q)
		if err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: err = %v, want the append-only refusal", q, err)
		}
	}
	if err := e.TrimAudit(ctx, 2); err != nil {
		t.Fatalf("TrimAudit: %v", err)
	}
	if _, err := e.Pool().Exec(ctx, `DELETE FROM audit WHERE seq = 4`); err == nil {
		t.Fatal("a direct DELETE after a trim went through")
	}
	recs := storetest.VerifyAudit(t, e)
	if len(recs) != 3 || recs[0].Seq != 3 {
		t.Fatalf("after trimming to 2: %d records from %d, want 3 from 3", len(recs), recs[0].Seq)
	}
}

// TestAuditRoleWithoutDelete: where roles are separated, a role granted
// what the store needs but not UPDATE/DELETE on audit uses the store (and
// trims through rediacc_trim_audit) yet cannot change records even with the
// trigger's flag set.
func TestAuditRoleWithoutDelete(t *testing.T) {
	dsn := pgtest.Schema(t)
	owner, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	schema := owner.Schema()
	role, pass := "app_"+schema, "pw-"+schema
	for _, q := range []string{
		`CREATE ROLE ` + role + ` LOGIN PASSWORD '` + pass + `'`,
		`GRANT USAGE ON SCHEMA ` + schema + ` TO ` + role,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ` + schema + ` TO ` + role,
		`REVOKE UPDATE, DELETE, TRUNCATE ON ` + schema + `.audit FROM ` + role,
		`GRANT EXECUTE ON FUNCTION ` + schema + `.rediacc_trim_audit(bigint) TO ` + role,
	} {
		if _, err := owner.Pool().Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		_, _ = owner.Pool().Exec(context.Background(), `DROP OWNED BY `+role)
		_, _ = owner.Pool().Exec(context.Background(), `DROP ROLE `+role)
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(role, pass)
	app, err := postgres.Open(ctx, u.String())
	if err != nil {
		t.Fatalf("Open as %s: %v", role, err)
	}
	defer app.Close()
	// The app login acts as rediacc user "a" (login.go: without a mapping
	// it could act only as itself).
	if err := owner.PutLogin(ctx, store.Login{Login: role, User: "a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := app.CreateTeam(store.WithAudit(ctx, audit.Record{Time: storetest.T0, Actor: "a", Action: "team.create",
		EntityType: audit.EntityTeam, EntityID: "x", Team: "x", Result: audit.ResultOK}), store.Team{Name: "x"}); err != nil {
		t.Fatalf("CreateTeam as %s: %v", role, err)
	}
	if _, err := app.AppendAudit(ctx, audit.Record{Time: storetest.T0, Actor: "a", Action: "team.list",
		EntityType: audit.EntityTeam, EntityID: "x", Team: "x", Result: audit.ResultOK}); err != nil {
		t.Fatal(err)
	}
	tx, err := app.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = tx.Exec(ctx, `SELECT set_config('rediacc.audit_trim', 'on', true)`)
	_, err = tx.Exec(ctx, `DELETE FROM audit WHERE seq = 1`)
	_ = tx.Rollback(ctx)
	if err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("DELETE by the app role: err = %v, want permission denied", err)
	}
	if err := app.TrimAudit(ctx, 1); err != nil {
		t.Fatalf("TrimAudit as %s: %v", role, err)
	}
	storetest.VerifyAudit(t, app)
}

// TestSchemaTooNew: a store migrated by a newer build is refused with
// ErrSchemaTooNew naming both versions; an unrelated schema with ErrCorrupt.
func TestSchemaTooNew(t *testing.T) {
	dsn := pgtest.Schema(t)
	e, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Pool().Exec(ctx, `UPDATE rediacc_schema_version SET version = 99`); err != nil {
		t.Fatal(err)
	}
	e.Close()
	_, err = postgres.Open(ctx, dsn)
	if !errors.Is(err, store.ErrSchemaTooNew) || !strings.Contains(err.Error(), "99") {
		t.Fatalf("Open of a newer schema: %v, want ErrSchemaTooNew naming version 99", err)
	}

	other := pgtest.Schema(t)
	conn, err := pgx.Connect(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE invoices (id int)`); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if _, err := postgres.Open(ctx, other); !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), "invoices") {
		t.Fatalf("Open of a foreign schema: %v, want ErrCorrupt naming its tables", err)
	}
	if _, err := postgres.Open(ctx, "postgres://%zz"); !errors.Is(err, store.ErrInvalidArgument) {
		t.Fatalf("Open of a bad DSN: %v, want ErrInvalidArgument", err)
	}
}

// TestConcurrentOpen: processes opening a new store at once migrate it once.
func TestConcurrentOpen(t *testing.T) {
	dsn := pgtest.WithParam(pgtest.DSN(t), "search_path", fmt.Sprintf("t_open_%d", time.Now().UnixNano()))
	t.Cleanup(func() {
		if conn, err := pgx.Connect(context.Background(), pgtest.DSN(t)); err == nil {
			_, _ = conn.Exec(context.Background(), `DROP SCHEMA IF EXISTS `+strings.Split(dsn, "search_path=")[1]+` CASCADE`)
			conn.Close(context.Background())
		}
	})
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, err := postgres.Open(ctx, dsn)
			if err == nil {
				_, err = e.CreateMachine(ctx, store.Machine{Name: fmt.Sprint("m", i), Host: "h", Port: 22, User: "u"})
				e.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("opener %d: %v", i, err)
		}
	}
}

// TestWakeups: a task created through one engine wakes a listener on
// another.
func TestWakeups(t *testing.T) {
	es := openN(t, 2)
	ch := es[1].Wakeups()
	// The first value says the listener is (re)connected.
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatal("no wake-up after the listener connected")
	}
	for i := range 3 {
		if _, _, err := es[0].CreateTask(ctx, store.Task{MachineID: "m", Priority: 3}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ch:
		case <-time.After(30 * time.Second):
			t.Fatalf("no wake-up %d after CreateTask on another engine", i)
		}
	}
}

// TestLeadership: one of several engines leads; when it closes (its
// process dies), another takes over.
func TestLeadership(t *testing.T) {
	es := openN(t, 3)
	for i, e := range es {
		if err := e.BeatWorker(ctx, store.Worker{ID: fmt.Sprint("w", i), Host: "h", PID: i, StartedAt: storetest.T0, HeartbeatAt: storetest.T0}); err != nil {
			t.Fatal(err)
		}
	}
	leaders := func() []int {
		var out []int
		for i, e := range es {
			if e == nil {
				continue
			}
			ok, err := e.Lead(ctx, fmt.Sprint("w", i))
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				out = append(out, i)
			}
		}
		return out
	}
	l := leaders()
	if len(l) != 1 {
		t.Fatalf("leaders %v, want exactly one", l)
	}
	if again := leaders(); fmt.Sprint(again) != fmt.Sprint(l) {
		t.Fatalf("leaders moved from %v to %v without a reason", l, again)
	}
	ws, err := es[0].ListWorkers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		if w.Leader != (w.ID == fmt.Sprint("w", l[0])) {
			t.Fatalf("ListWorkers: %+v, leader should be w%d", ws, l[0])
		}
	}
	es[l[0]].Close()
	es[l[0]] = nil
	// The lock goes with the session, once the server has ended it:
	// another engine leads.
	deadline := time.Now().Add(time.Minute)
	for {
		l2 := leaders()
		if len(l2) > 1 || (len(l2) == 1 && l2[0] == l[0]) {
			t.Fatalf("after the leader closed: leaders %v", l2)
		}
		if len(l2) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no engine leads a minute after the leader closed")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
