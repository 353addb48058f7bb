package sqlite_test

import (
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/sqlite"
	"github.com/rediacc/rediacc/internal/store/storetest"
)

// TestTwoEnginesAudit: two engines on one file, as two processes would have,
// append to the audit trail at once and race to become the owner; the trail
// stays one chain and exactly one owner is made.
func TestTwoEnginesAudit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	e1, e2 := open(t, path), open(t, path)
	defer e1.Close()
	defer e2.Close()
	storetest.RaceInitOwner(t, []store.Access{e1, e2}, 8)
	storetest.ConcurrentAudit(t, []store.Access{e1, e2}, 8, 40)
}

// TestMultiProcessAudit: a child process and this one append to the trail
// of one file at the same time; the chain verifies and holds every record.
func TestMultiProcessAudit(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a process")
	}
	path := filepath.Join(t.TempDir(), "store.db")
	e := open(t, path)
	defer e.Close()
	cmd, sc := child(t, "audit", path)
	if !sc.Scan() || sc.Text() != "ready" {
		t.Fatalf("child did not start: %q %v", sc.Text(), sc.Err())
	}
	for i := range auditPerProcess {
		r := audit.Record{Time: at(time.Duration(i)), Actor: "parent", Action: "op", Result: audit.ResultOK, EntityID: fmt.Sprint(i)}
		if i%2 == 0 {
			if _, err := e.AppendAudit(ctx, r); err != nil {
				t.Fatal(err)
			}
		} else if _, err := e.CreateTeam(store.WithAudit(ctx, r), store.Team{Name: fmt.Sprint("parent-", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	all := storetest.VerifyAudit(t, e)
	per := map[string]int{}
	for _, r := range all {
		per[r.Actor]++
	}
	if per["parent"] != auditPerProcess || per["child"] != auditPerProcess {
		t.Fatalf("records per process: %v, want %d each", per, auditPerProcess)
	}
	// Interleaved, not one process after the other (informative only: on a
	// loaded machine one process may finish first).
	switches := 0
	for i := 1; i < len(all); i++ {
		if all[i].Actor != all[i-1].Actor {
			switches++
		}
	}
	t.Logf("%d records, %d switches between processes", len(all), switches)
}

const auditPerProcess = 200

func auditHelper(e *sqlite.Engine) error {
	for i := range auditPerProcess {
		r := audit.Record{Time: at(time.Duration(i)), Actor: "child", Action: "op", Result: audit.ResultOK, EntityID: fmt.Sprint(i)}
		if i%2 == 0 {
			if _, err := e.AppendAudit(ctx, r); err != nil {
				return err
			}
		} else if _, err := e.CreateTeam(store.WithAudit(ctx, r), store.Team{Name: fmt.Sprint("child-", i)}); err != nil {
			return err
		}
	}
	return nil
}

// tamperStore creates a store whose trail has n records (from AppendAudit
// and from operations carrying records), closes it and returns its path and
// the records as stored.
func tamperStore(t *testing.T, n int) (string, []audit.Record) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "store.db")
	e := open(t, path)
	defer e.Close()
	for i := range n {
		r := audit.Record{Time: at(time.Duration(i) * time.Second), Actor: fmt.Sprint("user-", i%3), Action: "task.create",
			EntityType: audit.EntityTask, EntityID: fmt.Sprint("t", i), Team: "prod", Result: audit.ResultOK,
			Details: map[string]string{"n": fmt.Sprint(i)}}
		if i%2 == 0 {
			if _, err := e.AppendAudit(ctx, r); err != nil {
				t.Fatal(err)
			}
		} else if _, _, err := e.CreateTask(store.WithAudit(ctx, r), store.Task{MachineID: "m", TeamID: "prod", Priority: 3}); err != nil {
			t.Fatal(err)
		}
	}
	return path, storetest.VerifyAudit(t, e)
}

func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func sqlExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// forge inserts r as a row of the audit table.
func forge(t *testing.T, db *sql.DB, r audit.Record) {
	t.Helper()
	sqlExec(t, db, `INSERT INTO audit (seq, time, actor, action, entity_type, entity_id, team, result, details, prev_hash, hash)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)`,
		r.Seq, r.Time.UnixMilli(), r.Actor, r.Action, r.EntityType, r.EntityID, r.Team, r.Result, r.PrevHash, r.Hash)
}

// TestTamper changes the SQLite file behind the engine's back and shows
// audit.VerifyWithHead, fed ListAudit and AuditHead, reporting each kind of
// tampering at the right record.
func TestTamper(t *testing.T) {
	const n = 12
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, db *sql.DB, recs []audit.Record)
		kind   string
		seq    int64
	}{
		{"update actor", func(t *testing.T, db *sql.DB, _ []audit.Record) {
			sqlExec(t, db, `UPDATE audit SET actor = 'mallory' WHERE seq = 5`)
		}, audit.KindModified, 5},
		{"update details", func(t *testing.T, db *sql.DB, _ []audit.Record) {
			sqlExec(t, db, `UPDATE audit SET details = '{"n":"999"}' WHERE seq = 7`)
		}, audit.KindModified, 7},
		{"update time", func(t *testing.T, db *sql.DB, _ []audit.Record) {
			sqlExec(t, db, `UPDATE audit SET time = time - 3600000 WHERE seq = 3`)
		}, audit.KindModified, 3},
		{"update result of the last record", func(t *testing.T, db *sql.DB, _ []audit.Record) {
			sqlExec(t, db, `UPDATE audit SET result = 'denied' WHERE seq = ?`, n)
		}, audit.KindModified, n},
		{"update and re-hash", func(t *testing.T, db *sql.DB, recs []audit.Record) {
			r := recs[5-1]
			r.Actor = "mallory"
			sqlExec(t, db, `UPDATE audit SET actor = ?, hash = ? WHERE seq = 5`, r.Actor, audit.ComputeHash(r))
		}, audit.KindModified, 5},
		{"update and re-hash the last record", func(t *testing.T, db *sql.DB, recs []audit.Record) {
			r := recs[n-1]
			r.Result = audit.ResultDenied
			sqlExec(t, db, `UPDATE audit SET result = ?, hash = ? WHERE seq = ?`, r.Result, audit.ComputeHash(r), n)
		}, audit.KindModified, n},
		{"delete a middle record", func(t *testing.T, db *sql.DB, _ []audit.Record) {
			sqlExec(t, db, `DELETE FROM audit WHERE seq = 5`)
		}, audit.KindDeleted, 5},
		{"delete a middle record and renumber", func(t *testing.T, db *sql.DB, _ []audit.Record) {
			sqlExec(t, db, `DELETE FROM audit WHERE seq = 5`)
			sqlExec(t, db, `UPDATE audit SET seq = -seq WHERE seq > 5`)
			sqlExec(t, db, `UPDATE audit SET seq = -seq - 1 WHERE seq < 0`)
			sqlExec(t, db, `UPDATE audit_head SET seq = seq - 1`)
		}, audit.KindDeleted, 5},
		{"delete the first record", func(t *testing.T, db *sql.DB, _ []audit.Record) {
			sqlExec(t, db, `DELETE FROM audit WHERE seq = 1`)
		}, audit.KindDeleted, 1},
		{"insert a forged record, shifting the later ones", func(t *testing.T, db *sql.DB, recs []audit.Record) {
			sqlExec(t, db, `UPDATE audit SET seq = -seq WHERE seq >= 5`)
			sqlExec(t, db, `UPDATE audit SET seq = -seq + 1 WHERE seq < 0`)
			sqlExec(t, db, `UPDATE audit_head SET seq = seq + 1`)
			fake := audit.Chain(audit.HeadOf(recs[4-1]), audit.Record{Time: recs[4-1].Time, Actor: "admin", Action: "team.member.add",
				EntityType: audit.EntityMember, EntityID: "mallory", Team: "prod", Result: audit.ResultOK})
			forge(t, db, fake) // seq 5, linked to record 4, hash valid
		}, audit.KindInserted, 5},
		{"insert a forged record over a freed number", func(t *testing.T, db *sql.DB, recs []audit.Record) {
			// Record 5 is replaced by a forgery chained to record 4.
			sqlExec(t, db, `DELETE FROM audit WHERE seq = 5`)
			fake := audit.Chain(audit.HeadOf(recs[4-1]), audit.Record{Time: recs[4].Time, Actor: "admin", Action: "vault.read",
				EntityType: audit.EntityVault, EntityID: "db", Result: audit.ResultOK})
			forge(t, db, fake)
		}, audit.KindModified, 5},
		{"append a forged record after the head", func(t *testing.T, db *sql.DB, recs []audit.Record) {
			fake := audit.Chain(audit.HeadOf(recs[n-1]), audit.Record{Time: recs[n-1].Time, Actor: "admin", Action: "vault.read",
				Result: audit.ResultOK})
			forge(t, db, fake)
		}, audit.KindInserted, n + 1},
		{"swap two adjacent records' seqs", func(t *testing.T, db *sql.DB, _ []audit.Record) {
			sqlExec(t, db, `UPDATE audit SET seq = -1 WHERE seq = 4`)
			sqlExec(t, db, `UPDATE audit SET seq = 4 WHERE seq = 5`)
			sqlExec(t, db, `UPDATE audit SET seq = 5 WHERE seq = -1`)
		}, audit.KindReordered, 4},
		{"swap two distant records' seqs", func(t *testing.T, db *sql.DB, _ []audit.Record) {
			sqlExec(t, db, `UPDATE audit SET seq = -1 WHERE seq = 3`)
			sqlExec(t, db, `UPDATE audit SET seq = 3 WHERE seq = 9`)
			sqlExec(t, db, `UPDATE audit SET seq = 9 WHERE seq = -1`)
		}, audit.KindReordered, 3},
		{"swap two records' contents", func(t *testing.T, db *sql.DB, _ []audit.Record) {
			// Every column but seq moves: the same as renumbering them.
			cols := `time, actor, action, entity_type, entity_id, team, result, details, prev_hash, hash`
			sqlExec(t, db, `CREATE TEMP TABLE a6 AS SELECT `+cols+` FROM audit WHERE seq = 6`)
			sqlExec(t, db, `CREATE TEMP TABLE a8 AS SELECT `+cols+` FROM audit WHERE seq = 8`)
			for _, sw := range [][2]string{{"6", "a8"}, {"8", "a6"}} {
				set := []string{}
				for _, c := range strings.Split(cols, ", ") {
					set = append(set, fmt.Sprintf("%s = (SELECT %s FROM %s)", c, c, sw[1]))
				}
				sqlExec(t, db, `UPDATE audit SET `+strings.Join(set, ", ")+` WHERE seq = `+sw[0])
			}
		}, audit.KindReordered, 6},
		{"delete the last record", func(t *testing.T, db *sql.DB, _ []audit.Record) {
			sqlExec(t, db, `DELETE FROM audit WHERE seq = ?`, n)
		}, audit.KindDeleted, n},
		{"delete the last three records", func(t *testing.T, db *sql.DB, _ []audit.Record) {
			sqlExec(t, db, `DELETE FROM audit WHERE seq > ?`, n-3)
		}, audit.KindDeleted, n - 2},
		{"delete every record", func(t *testing.T, db *sql.DB, _ []audit.Record) {
			sqlExec(t, db, `DELETE FROM audit`)
		}, audit.KindDeleted, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, recs := tamperStore(t, n)
			db := rawDB(t, path)
			tc.tamper(t, db, recs)
			db.Close()

			e := open(t, path)
			defer e.Close()
			all := storetest.AllAudit(t, e)
			head, err := e.AuditHead(ctx)
			if err != nil {
				t.Fatal(err)
			}
			err = audit.VerifyWithHead(all, head)
			var te *audit.TamperError
			if !errors.As(err, &te) {
				t.Fatalf("VerifyWithHead after tampering: %v, want a *TamperError", err)
			}
			t.Logf("%v", err)
			if te.Kind != tc.kind || te.Seq != tc.seq {
				t.Fatalf("reported %s at seq %d, want %s at seq %d", te.Kind, te.Seq, tc.kind, tc.seq)
			}
		})
	}
}

// TestTamperLimits documents what a hash chain kept in the same file cannot
// see: records removed from the end together with the head, or the whole
// chain rewritten. Detecting those needs the head kept elsewhere.
func TestTamperLimits(t *testing.T) {
	path, recs := tamperStore(t, 6)
	db := rawDB(t, path)
	sqlExec(t, db, `DELETE FROM audit WHERE seq = 6`)
	sqlExec(t, db, `UPDATE audit_head SET seq = ?, hash = ?`, recs[4].Seq, recs[4].Hash)
	db.Close()
	e := open(t, path)
	defer e.Close()
	if err := audit.VerifyWithHead(storetest.AllAudit(t, e), audit.HeadOf(recs[4])); err != nil {
		t.Fatalf("truncation with the head moved: %v", err)
	}
	// Checked against the head as it was before (kept elsewhere), it shows.
	err := audit.VerifyWithHead(storetest.AllAudit(t, e), audit.HeadOf(recs[5]))
	var te *audit.TamperError
	if !errors.As(err, &te) || te.Kind != audit.KindDeleted || te.Seq != 6 {
		t.Fatalf("against the old head: %v", err)
	}
}

// TestAuditAfterTruncation: appends continue from the kept head, so a trail
// truncated behind the engine's back stays detectably broken.
func TestAuditAfterTruncation(t *testing.T) {
	path, _ := tamperStore(t, 4)
	db := rawDB(t, path)
	sqlExec(t, db, `DELETE FROM audit WHERE seq = 4`)
	db.Close()
	e := open(t, path)
	defer e.Close()
	out, err := e.AppendAudit(ctx, audit.Record{Time: at(0), Actor: "a", Action: "x", Result: audit.ResultOK})
	if err != nil || out[0].Seq != 5 {
		t.Fatalf("append after truncation: %+v, %v", out, err)
	}
	head, _ := e.AuditHead(ctx)
	err = audit.VerifyWithHead(storetest.AllAudit(t, e), head)
	var te *audit.TamperError
	if !errors.As(err, &te) || te.Kind != audit.KindDeleted || te.Seq != 4 {
		t.Fatalf("VerifyWithHead: %v, want record 4 deleted", err)
	}
}

// TestReopenAccess: teams, members, roles and the trail survive Close and
// Open.
func TestReopenAccess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	e := open(t, path)
	r := func(action string) audit.Record {
		return audit.Record{Time: at(0), Actor: "alice", Action: action, Result: audit.ResultOK, Details: map[string]string{"k": "v"}}
	}
	if _, err := e.CreateTeam(store.WithAudit(ctx, r("team.create")), store.Team{ID: "prod", Name: "prod", Description: "Production"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.PutMember(store.WithAudit(ctx, r("team.member.add")), store.Member{TeamID: "prod", User: "bob", Role: "admin"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.InitOwner(store.WithAudit(ctx, r("store.init")), "alice", at(0)); err != nil {
		t.Fatal(err)
	}
	snap := func(e *sqlite.Engine) []any {
		teams, _ := e.ListTeams(ctx, store.TeamFilter{IncludeDeleted: true})
		members, _ := e.ListMembers(ctx, "")
		roles, _ := e.StoreRoles(ctx, "")
		head, _ := e.AuditHead(ctx)
		return []any{teams, members, roles, storetest.VerifyAudit(t, e), head}
	}
	before := snap(e)
	e.Close()
	e = open(t, path)
	defer e.Close()
	if diff := cmp.Diff(before, snap(e)); diff != "" {
		t.Fatalf("after reopen (-before +after):\n%s", diff)
	}
}

// TestGuardAcrossEngines races a guarded CreateTask against MoveMachine
// through two engines (as two processes would) on one file.
func TestGuardAcrossEngines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	e1, e2 := open(t, path), open(t, path)
	defer e1.Close()
	defer e2.Close()
	storetest.RaceCreateVsMove(t, e1, e2, 200)
}
