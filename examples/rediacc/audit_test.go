package main

import (
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/rediacc/rediacc/internal/audit"
)

// rechainStore re-chains the audit table of the store in dir from its
// first record with seal, dropping the records drop selects, and moves the
// head: an intruder's script with plain database/sql.
func rechainStore(t *testing.T, dir string, drop func(audit.Record) bool, seal func(audit.Head, audit.Record) audit.Record) {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, "rediacc.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT time, actor, action, entity_type, entity_id, team, result, details FROM audit ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	var recs []audit.Record
	for rows.Next() {
		var (
			r       audit.Record
			ms      int64
			details sql.NullString
		)
		if err := rows.Scan(&ms, &r.Actor, &r.Action, &r.EntityType, &r.EntityID, &r.Team, &r.Result, &details); err != nil {
			t.Fatal(err)
		}
		r.Time = time.UnixMilli(ms)
		if details.Valid {
			_ = json.Unmarshal([]byte(details.String), &r.Details)
		}
		if !drop(r) {
			recs = append(recs, r)
		}
	}
	rows.Close()
	var h audit.Head
	if _, err := db.Exec(`DELETE FROM audit`); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		r = seal(h, r)
		var details any
		if len(r.Details) > 0 {
			b, _ := json.Marshal(r.Details)
			details = string(b)
		}
		if _, err := db.Exec(`INSERT INTO audit (seq, time, actor, action, entity_type, entity_id, team, result, details, prev_hash, key_id, hash)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, r.Seq, r.Time.UnixMilli(), r.Actor, r.Action, r.EntityType, r.EntityID,
			r.Team, r.Result, details, r.PrevHash, r.KeyID, r.Hash); err != nil {
			t.Fatal(err)
		}
		h = audit.HeadOf(r)
	}
	if _, err := db.Exec(`UPDATE audit_head SET seq = ?, hash = ?`, h.Seq, h.Hash); err != nil {
		t.Fatal(err)
	}
}

// TestCLIAuditTamperEvidence: the script against the CLI's store:
// re-hashed without the key, `audit verify` reports it; re-sealed with the
// key, `audit verify --checkpoints` does (with the checkpoint file or the
// JSON log); key list/rotate; a lost or corrupt key gives clear errors.
func TestCLIAuditTamperEvidence(t *testing.T) {
	setup := func(t *testing.T) (cli, string) {
		c := cli{t: t, dir: t.TempDir()}
		var logs strings.Builder
		for _, args := range [][]string{{"team", "create", "prod"}, {"audit", "checkpoint"}, {"team", "create", "dev"}, {"team", "list"}} {
			code, _, stderr := c.run(args...)
			if code != 0 {
				t.Fatalf("%v: exit %d: %s", args, code, stderr)
			}
			logs.WriteString(stderr)
		}
		logFile := filepath.Join(t.TempDir(), "log.jsonl")
		if err := os.WriteFile(logFile, []byte(logs.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		if out := c.ok("audit", "verify", "--checkpoints"); !strings.Contains(out, "intact") || !strings.Contains(out, "checkpoint(s)") {
			t.Fatalf("verify --checkpoints: %s", out)
		}
		return c, logFile
	}
	dropDev := func(r audit.Record) bool { return r.Details["name"] == "dev" } // team.create of dev (EntityID is its id)

	t.Run("re-hashed without the key", func(t *testing.T) {
		c, _ := setup(t)
		rechainStore(t, c.dir, dropDev, audit.Chain)
		code, _, stderr := c.run("audit", "verify")
		if code != exitError || !strings.Contains(stderr, "NOT intact") || !strings.Contains(stderr, "downgraded") {
			t.Fatalf("exit %d: %s", code, stderr)
		}
	})
	t.Run("re-sealed with the key", func(t *testing.T) {
		c, logFile := setup(t)
		b, err := os.ReadFile(filepath.Join(c.dir, "audit.key"))
		if err != nil {
			t.Fatal(err)
		}
		ring, err := audit.ParseKeyring(b)
		if err != nil {
			t.Fatal(err)
		}
		rechainStore(t, c.dir, dropDev, ring.Chain)
		if out := c.ok("audit", "verify"); !strings.Contains(out, "intact") {
			t.Fatalf("verify alone: %s", out)
		}
		for _, args := range [][]string{{"audit", "verify", "--checkpoints"}, {"audit", "verify", "--checkpoints", logFile}} {
			code, _, stderr := c.run(args...)
			if code != exitError || !strings.Contains(stderr, "NOT intact") || !strings.Contains(stderr, "checkpoint") {
				t.Fatalf("%v: exit %d: %s", args, code, stderr)
			}
		}
	})
	t.Run("keys", func(t *testing.T) {
		c, _ := setup(t)
		var keys []struct {
			ID      string `json:"id"`
			Current bool   `json:"current"`
		}
		if err := json.Unmarshal([]byte(c.ok("audit", "key", "list", "-o", "json")), &keys); err != nil || len(keys) != 1 {
			t.Fatalf("key list: %v %v", keys, err)
		}
		if out := c.ok("audit", "key", "rotate"); !strings.Contains(out, "seals the records") {
			t.Fatalf("rotate: %s", out)
		}
		c.ok("audit", "verify", "--checkpoints")
		if code, _, _ := c.run("audit", "verify", "extra"); code != exitInvalid {
			t.Fatalf("an argument without --checkpoints: exit %d", code)
		}
		// Lost: a new key is made; the old records are not verified.
		if err := os.Rename(filepath.Join(c.dir, "audit.key"), filepath.Join(c.dir, "audit.key.lost")); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := c.run("audit", "verify")
		if code != exitError || !strings.Contains(stderr, "NOT verified") || !strings.Contains(stderr, keys[0].ID) || strings.Contains(stderr, "tampered") {
			t.Fatalf("lost key: exit %d: %s", code, stderr)
		}
		// Corrupt: refused, exit 5, naming the file.
		if err := os.WriteFile(filepath.Join(c.dir, "audit.key"), []byte("garbage\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, stderr = c.run("team", "list")
		if code != exitInvalid || !strings.Contains(stderr, "audit.key") {
			t.Fatalf("corrupt key file: exit %d: %s", code, stderr)
		}
	})
}
