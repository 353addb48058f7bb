package rediacc_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/internal/audit"
)

// keyedClient opens a client on dir with the default audit key file.
func keyedClient(t *testing.T, dir string, tune func(*rediacc.Config)) *rediacc.Client {
	t.Helper()
	cfg := rediacc.Config{DataDir: dir, Logger: testLogger(t), Health: rediacc.HealthConfig{Interval: -1}, AuditCheckpointInterval: -1}
	if tune != nil {
		tune(&cfg)
	}
	c, err := rediacc.New(asOwner(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// auditActivity writes records by alice (the owner) and bob (an operator
// of prod, whose reads and denied writes are audited too), with a
// checkpoint before bob's first record and after each round.
func auditActivity(t *testing.T, c *rediacc.Client, rounds int) {
	t.Helper()
	bob := as("bob")
	if _, err := c.CreateTeam(asOwner(), "prod", "production"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetMember(asOwner(), "prod", "bob", rediacc.RoleOperator); err != nil {
		t.Fatal(err)
	}
	for i := range rounds {
		if _, err := c.CheckpointAudit(asOwner()); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Machines(bob); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CreateTeam(bob, fmt.Sprint("bobs-", i), ""); !errors.Is(err, rediacc.ErrPermissionDenied) {
			t.Fatalf("bob creating a team: %v", err)
		}
		if _, err := c.Teams(asOwner()); err != nil {
			t.Fatal(err)
		}
	}
}

// storedRecords reads the audit table with plain database/sql, as an
// intruder with write access to the file would.
func storedRecords(t *testing.T, db *sql.DB) []audit.Record {
	t.Helper()
	rows, err := db.Query(`SELECT seq, time, actor, action, entity_type, entity_id, team, result, details, prev_hash, key_id, hash FROM audit ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []audit.Record
	for rows.Next() {
		var (
			r       audit.Record
			ms      int64
			details sql.NullString
		)
		if err := rows.Scan(&r.Seq, &ms, &r.Actor, &r.Action, &r.EntityType, &r.EntityID, &r.Team, &r.Result, &details, &r.PrevHash, &r.KeyID, &r.Hash); err != nil {
			t.Fatal(err)
		}
		r.Time = time.UnixMilli(ms).UTC()
		if details.Valid && details.String != "" {
			if err := json.Unmarshal([]byte(details.String), &r.Details); err != nil {
				t.Fatal(err)
			}
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// rewriteTrail is the script, with plain database/sql: it reads
// the audit table, lets edit drop or reorder records, renumbers and
// re-chains every record from position from (1-based; 0: from the first
// record edit moved) with seal, writes the table back and moves the head.
func rewriteTrail(t *testing.T, dir string, edit func([]audit.Record) []audit.Record, from int,
	seal func(audit.Head, audit.Record) audit.Record) (before, after []audit.Record) {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, "rediacc.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	before = storedRecords(t, db)
	var h audit.Head
	rewriting := false
	for i, r := range edit(slices.Clone(before)) {
		if rewriting = rewriting || i+1 >= from && from > 0 || r.Seq != h.Seq+1 || r.PrevHash != h.LinkHash(); rewriting {
			r = seal(h, r)
		}
		after = append(after, r)
		h = audit.HeadOf(r)
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	exec := func(q string, args ...any) {
		if _, err := tx.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`DELETE FROM audit`)
	for _, r := range after {
		var details any
		if len(r.Details) > 0 {
			b, _ := json.Marshal(r.Details)
			details = string(b)
		}
		exec(`INSERT INTO audit (seq, time, actor, action, entity_type, entity_id, team, result, details, prev_hash, key_id, hash)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, r.Seq, r.Time.UnixMilli(), r.Actor, r.Action, r.EntityType, r.EntityID,
			r.Team, r.Result, details, r.PrevHash, r.KeyID, r.Hash)
	}
	exec(`UPDATE audit_head SET seq = ?, hash = ?`, h.Seq, h.Hash)
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return before, after
}

// plainSHA256 is today's re-hash: the record as version 1, sealed with
// SHA-256 of the public encoding.
func plainSHA256(h audit.Head, r audit.Record) audit.Record { return audit.Chain(h, r) }

// withStolenKey re-seals with the keyring read from the data dir.
func withStolenKey(t *testing.T, dir string) func(audit.Head, audit.Record) audit.Record {
	b, err := os.ReadFile(filepath.Join(dir, "audit.key"))
	if err != nil {
		t.Fatal(err)
	}
	ring, err := audit.ParseKeyring(b)
	if err != nil {
		t.Fatal(err)
	}
	return ring.Chain
}

// wantTamper checks err is an *AuditTamperError of kind (one of kinds
// separated by "|") at seq (any when 0).
func wantTamper(t *testing.T, err error, kind string, seq int64) *rediacc.AuditTamperError {
	t.Helper()
	var te *rediacc.AuditTamperError
	if !errors.As(err, &te) || !errors.Is(err, rediacc.ErrAuditTampered) {
		t.Fatalf("err = %v, want an *AuditTamperError (%s at %d)", err, kind, seq)
	}
	if !slices.Contains(strings.Split(kind, "|"), te.Kind) || (seq > 0 && te.Seq != seq) {
		t.Fatalf("reported %s at %d (%s), want %s at %d", te.Kind, te.Seq, te.Detail, kind, seq)
	}
	return te
}

// The attack: a script with plain database/sql deletes every record
// of one user, renumbers and re-hashes the rest and moves the head. The
// records are keyed: the re-hash without the key is caught by VerifyAudit
// alone; a re-seal with the key (stolen from the data dir) is caught by the
// checkpoints written before.
func TestAuditRewriteScript(t *testing.T) {
	for _, tc := range []struct {
		name string
		seal func(t *testing.T, dir string) func(audit.Head, audit.Record) audit.Record
		kind string // VerifyAudit's verdict; "" intact
	}{
		{"re-hashed with plain SHA-256 (the script as it is today)", func(*testing.T, string) func(audit.Head, audit.Record) audit.Record {
			return plainSHA256
		}, audit.KindDowngraded},
		{"re-hashed with SHA-256 keeping the key id", func(*testing.T, string) func(audit.Head, audit.Record) audit.Record {
			return func(h audit.Head, r audit.Record) audit.Record {
				id := r.KeyID
				r = audit.Chain(h, r)
				r.KeyID = id
				r.Hash = audit.ComputeHash(r)
				return r
			}
		}, audit.KindModified},
		{"re-sealed with the stolen key", withStolenKey, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			c := keyedClient(t, dir, nil)
			auditActivity(t, c, 3)
			if n, err := c.VerifyAudit(asOwner()); err != nil {
				t.Fatalf("before: %d records, %v", n, err)
			}
			if _, err := c.CheckpointAudit(asOwner()); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}

			before, after := rewriteTrail(t, dir, dropBob, 0, tc.seal(t, dir))
			firstBob := int64(0)
			for _, r := range before {
				if r.Actor == "bob" {
					firstBob = r.Seq
					break
				}
			}
			if firstBob == 0 || len(after) >= len(before) {
				t.Fatalf("the script removed nothing: %d records before, %d after", len(before), len(after))
			}

			c = keyedClient(t, dir, nil)
			defer c.Close()
			_, err := c.VerifyAudit(asOwner())
			if tc.kind != "" {
				wantTamper(t, err, tc.kind, firstBob)
				return
			}
			if err != nil {
				t.Fatalf("the key holder's rewrite verifies on its own (documented): %v", err)
			}
			var rep rediacc.AuditReport
			_, err = c.VerifyAudit(asOwner(), rediacc.WithCheckpoints(), rediacc.WithAuditReport(&rep))
			// A checkpoint's record now has another seal (rewritten), or the
			// trail is shorter than a checkpoint says (deleted); the first
			// record not vouched for is at or before bob's first.
			te := wantTamper(t, err, audit.KindRewritten+"|"+audit.KindDeleted, 0)
			if te.Seq > firstBob || te.Seq <= 1 || rep.Checkpoints != 4 || len(rep.CheckpointFiles) != 1 {
				t.Fatalf("first bad seq %d (bob's first record %d), report %+v", te.Seq, firstBob, rep)
			}
			t.Log(err)
		})
	}
}

// dropBob deletes every record of bob.
func dropBob(rs []audit.Record) []audit.Record {
	return slices.DeleteFunc(rs, func(r audit.Record) bool { return r.Actor == "bob" })
}

// The other rewrites of the kind: truncation of the tail with the head
// moved back, reordering, a downgrade of the whole trail, each by a writer
// with or without the key; and what the checkpoints add.
func TestAuditRewritesCaught(t *testing.T) {
	swapMiddle := func(rs []audit.Record) []audit.Record {
		i := len(rs) / 2
		rs[i], rs[i+1] = rs[i+1], rs[i]
		return rs
	}
	truncate := func(rs []audit.Record) []audit.Record { return rs[:len(rs)-4] }
	same := func(rs []audit.Record) []audit.Record { return rs }
	stolen := func(t *testing.T, dir string) func(audit.Head, audit.Record) audit.Record {
		return withStolenKey(t, dir)
	}
	plain := func(*testing.T, string) func(audit.Head, audit.Record) audit.Record { return plainSHA256 }
	for _, tc := range []struct {
		name   string
		edit   func([]audit.Record) []audit.Record
		from   int
		seal   func(t *testing.T, dir string) func(audit.Head, audit.Record) audit.Record
		alone  string // VerifyAudit's verdict; "" intact
		withCP string // with the checkpoints
	}{
		{"tail truncated, head moved back", truncate, 0, plain, "", audit.KindDeleted},
		{"two records reordered, re-sealed with the key", swapMiddle, 0, stolen, "", audit.KindRewritten},
		{"one user's records deleted, re-sealed with the key", dropBob, 0, stolen, "", audit.KindRewritten + "|" + audit.KindDeleted},
		{"two records reordered, re-hashed without the key", swapMiddle, 0, plain, audit.KindDowngraded, audit.KindDowngraded},
		{"whole trail downgraded to version 1", same, 1, plain, audit.KindDowngraded, audit.KindDowngraded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			c := keyedClient(t, dir, nil)
			auditActivity(t, c, 2)
			if _, err := c.CheckpointAudit(asOwner()); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			rewriteTrail(t, dir, tc.edit, tc.from, tc.seal(t, dir))
			c = keyedClient(t, dir, nil)
			defer c.Close()
			_, err := c.VerifyAudit(asOwner())
			if tc.alone == "" && err != nil {
				t.Fatalf("VerifyAudit alone: %v (expected to look intact: the records and the head were rewritten together)", err)
			}
			if tc.alone != "" {
				wantTamper(t, err, tc.alone, 0)
			}
			_, err = c.VerifyAudit(asOwner(), rediacc.WithCheckpoints())
			wantTamper(t, err, tc.withCP, 0)
			t.Log(err)
		})
	}
}

// syncBuf is a buffer safe for concurrent writes (a log).
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// The key file: created 0600 beside the store on first use, never in a log;
// lost, replaced or corrupt, it gives clear errors that are not
// "tampered", and the store keeps working.
func TestAuditKeyFileLifecycle(t *testing.T) {
	dir := t.TempDir()
	var logs syncBuf
	c := keyedClient(t, dir, func(cfg *rediacc.Config) { cfg.Logger = slog.New(slog.NewJSONHandler(&logs, nil)) })
	auditActivity(t, c, 1)
	keyFile := filepath.Join(dir, "audit.key")
	fi, err := os.Stat(keyFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", fi, err)
	}
	orig, _ := os.ReadFile(keyFile)
	ring, err := audit.ParseKeyring(orig)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := c.AuditKeys(asOwner())
	if err != nil || len(keys) != 1 || keys[0].ID != ring.Current().ID || !keys[0].Current || keys[0].From != 1 {
		t.Fatalf("AuditKeys = %+v, %v", keys, err)
	}
	c.Close()
	var line struct{ Key string }
	_ = json.Unmarshal(bytes.TrimSpace(orig), &line)
	if strings.Contains(logs.String(), line.Key) || !strings.Contains(logs.String(), ring.Current().ID) {
		t.Fatalf("the log holds the key, or not even its id:\n%s", logs.String())
	}

	t.Run("lost key: the store works, verify says which key is missing", func(t *testing.T) {
		if err := os.Rename(keyFile, keyFile+".lost"); err != nil {
			t.Fatal(err)
		}
		c := keyedClient(t, dir, nil)
		defer c.Close()
		if _, err := c.Teams(asOwner()); err != nil {
			t.Fatalf("the store after losing the key: %v", err)
		}
		_, err := c.VerifyAudit(asOwner())
		var ke *rediacc.AuditKeyError
		if !errors.As(err, &ke) || !errors.Is(err, rediacc.ErrAuditKeyUnknown) || errors.Is(err, rediacc.ErrAuditTampered) ||
			ke.KeyIDs[0] != ring.Current().ID || ke.Seq != 1 || !strings.Contains(err.Error(), ring.Current().ID) {
			t.Fatalf("VerifyAudit without the key: %v", err)
		}
		// Restored by adding the old key's line: everything verifies.
		f, err := os.OpenFile(keyFile, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Write(orig)
		f.Close()
		var rep rediacc.AuditReport
		if n, err := c.VerifyAudit(asOwner(), rediacc.WithAuditReport(&rep)); err != nil || len(rep.KeyIDs) != 2 || rep.Keyed != n || rep.Unkeyed != 0 {
			t.Fatalf("after restoring the key: %d, %v, %+v", n, err, rep)
		}
	})
	t.Run("wrong key file", func(t *testing.T) {
		other, _ := audit.NewKeyring(audit.NewKey(1, time.Now()))
		if err := os.WriteFile(keyFile, other.Marshal(), 0o600); err != nil {
			t.Fatal(err)
		}
		c := keyedClient(t, dir, nil)
		defer c.Close()
		_, err := c.VerifyAudit(asOwner())
		if !errors.Is(err, rediacc.ErrAuditKeyUnknown) || errors.Is(err, rediacc.ErrAuditTampered) {
			t.Fatalf("VerifyAudit with a wrong key: %v", err)
		}
	})
	t.Run("corrupt key file: New refuses, naming the file", func(t *testing.T) {
		if err := os.WriteFile(keyFile, []byte(`{"id":"x","from":1,"created":"2026-01-01T00:00:00Z","key":"c2hvcnQ="}`+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := rediacc.New(asOwner(), rediacc.Config{DataDir: dir, Logger: testLogger(t), Health: rediacc.HealthConfig{Interval: -1}})
		if !errors.Is(err, rediacc.ErrAuditKeyring) || !strings.Contains(err.Error(), keyFile) || !strings.Contains(err.Error(), "line 1") {
			t.Fatalf("New with a corrupt key file: %v", err)
		}
		// The store was closed again: a later client opens it.
		if err := os.WriteFile(keyFile, orig, 0o600); err != nil {
			t.Fatal(err)
		}
		c := keyedClient(t, dir, nil)
		defer c.Close()
		if _, err := c.VerifyAudit(asOwner()); !errors.Is(err, rediacc.ErrAuditKeyUnknown) {
			t.Fatalf("records of the wrong-key session stay unauthenticated: %v", err)
		}
	})
}

// RotateAuditKey: the new key seals from then on, the old one still
// verifies; only owners rotate; a keyring from Config is not rotated here.
func TestAuditKeyRotation(t *testing.T) {
	dir := t.TempDir()
	c := keyedClient(t, dir, nil)
	defer c.Close()
	auditActivity(t, c, 1)
	old, _ := c.AuditKeys(asOwner())
	if _, err := c.RotateAuditKey(as("bob")); !errors.Is(err, rediacc.ErrPermissionDenied) {
		t.Fatalf("bob rotating: %v", err)
	}
	k, err := c.RotateAuditKey(asOwner())
	if err != nil || k.ID == old[0].ID || !k.Current {
		t.Fatalf("RotateAuditKey = %+v, %v", k, err)
	}
	if _, err := c.Teams(asOwner()); err != nil {
		t.Fatal(err)
	}
	recs, _ := c.AuditLog(asOwner(), rediacc.AuditFilter{Action: "audit.key.rotate", Result: "ok"})
	if len(recs) != 1 || recs[0].KeyID != k.ID || recs[0].Details["key_id"] != k.ID {
		t.Fatalf("rotation record: %+v", recs)
	}
	var rep rediacc.AuditReport
	if _, err := c.VerifyAudit(asOwner(), rediacc.WithCheckpoints(), rediacc.WithAuditReport(&rep)); err != nil ||
		fmt.Sprint(rep.KeyIDs) != fmt.Sprint([]string{old[0].ID, k.ID}) || rep.Checkpoints == 0 {
		t.Fatalf("after rotation: %v, %+v", err, rep)
	}
	// Another client on the data dir sees both keys.
	c2 := keyedClient(t, dir, nil)
	defer c2.Close()
	keys, err := c2.AuditKeys(asOwner())
	if err != nil || len(keys) != 2 || keys[0].Current || !keys[1].Current || keys[1].ID != k.ID {
		t.Fatalf("keys seen by another client: %+v, %v", keys, err)
	}
	if _, err := c2.VerifyAudit(asOwner()); err != nil {
		t.Fatal(err)
	}

	// A keyring given in Config (kept in a secret manager).
	b, _ := os.ReadFile(filepath.Join(dir, "audit.key"))
	c3 := keyedClient(t, t.TempDir(), func(cfg *rediacc.Config) { cfg.AuditKeyring = b })
	defer c3.Close()
	auditActivity(t, c3, 1)
	if _, err := c3.RotateAuditKey(asOwner()); !errors.Is(err, rediacc.ErrInvalidArgument) {
		t.Fatalf("rotating a keyring from Config: %v", err)
	}
	if _, err := c3.VerifyAudit(asOwner()); err != nil {
		t.Fatal(err)
	}
	recs, _ = c3.AuditLog(asOwner(), rediacc.AuditFilter{Limit: 1})
	if recs[0].KeyID != k.ID {
		t.Fatalf("sealed with %q, want the keyring's current key %s", recs[0].KeyID, k.ID)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(filepath.Dir(c3.AuditCheckpointFile())), "audit.key")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a keyring from Config was written to the data dir: %v", err)
	}
}

// Checkpoints go to the file (0600) and the structured log; both verify
// the trail; an altered checkpoint line is reported, naming the line.
func TestAuditCheckpointFileAndLog(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(t.TempDir(), "rediacc.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	c := keyedClient(t, dir, func(cfg *rediacc.Config) { cfg.Logger = slog.New(slog.NewJSONHandler(logFile, nil)) })
	auditActivity(t, c, 3)
	cp, err := c.CheckpointAudit(asOwner())
	if err != nil {
		t.Fatal(err)
	}
	file := c.AuditCheckpointFile()
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 || filepath.Dir(file) != filepath.Join(dir, "archive") {
		t.Fatalf("checkpoint file %s: %v, %v", file, fi, err)
	}
	head, _ := c.AuditLog(asOwner(), rediacc.AuditFilter{Action: "audit.checkpoint"})
	if last := head[len(head)-1]; cp.Seq != last.Seq || cp.Hash != last.Hash {
		t.Fatalf("the checkpoint %+v does not cover its own record %+v", cp, last)
	}
	var rep rediacc.AuditReport
	for _, src := range []string{file, logPath} {
		if _, err := c.VerifyAudit(asOwner(), rediacc.WithCheckpoints(src), rediacc.WithAuditReport(&rep)); err != nil || rep.Checkpoints != 4 {
			t.Fatalf("verify with %s: %v, %+v", src, err, rep)
		}
	}
	if _, err := c.VerifyAudit(asOwner(), rediacc.WithCheckpoints(file, logPath), rediacc.WithAuditReport(&rep)); err != nil || rep.Checkpoints != 8 {
		t.Fatalf("verify with both: %v, %+v", err, rep)
	}
	for _, bad := range []struct {
		name, file string
		want       error
	}{
		{"missing", filepath.Join(dir, "nope.jsonl"), rediacc.ErrNotFound},
		{"no checkpoint", writeTemp(t, `{"level":"INFO","msg":"hello"}`+"\n"), rediacc.ErrInvalidArgument},
	} {
		if _, err := c.VerifyAudit(asOwner(), rediacc.WithCheckpoints(bad.file)); !errors.Is(err, bad.want) {
			t.Errorf("%s: %v, want %v", bad.name, err, bad.want)
		}
	}
	c.Close()

	// An intruder without the key moves a checkpoint to a rewritten head.
	b, _ := os.ReadFile(file)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var moved map[string]any
	_ = json.Unmarshal([]byte(lines[1]), &moved)
	moved["seq"] = moved["seq"].(float64) - 1
	nb, _ := json.Marshal(moved)
	lines[1] = string(nb)
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c = keyedClient(t, dir, nil)
	defer c.Close()
	_, err = c.VerifyAudit(asOwner(), rediacc.WithCheckpoints())
	var ce *rediacc.AuditCheckpointError
	if !errors.As(err, &ce) || ce.Line != 2 || ce.Source != file || !errors.Is(err, rediacc.ErrAuditCheckpointInvalid) || errors.Is(err, rediacc.ErrAuditTampered) {
		t.Fatalf("altered checkpoint: %v", err)
	}
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A running worker checkpoints the head every AuditCheckpointInterval and
// when it stops; Prune checkpoints after trimming; Close after its changes.
func TestAuditCheckpointsWritten(t *testing.T) {
	dir := t.TempDir()
	c := keyedClient(t, dir, func(cfg *rediacc.Config) { cfg.AuditCheckpointInterval = 20 * time.Millisecond })
	file := c.AuditCheckpointFile()
	count := func() int {
		b, _ := os.ReadFile(file)
		return strings.Count(string(b), "\n")
	}
	ctx, cancel := context.WithCancel(asOwner())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for count() < 2 && time.Now().Before(deadline) {
		if _, err := c.Teams(asOwner()); err != nil { // moves the head
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := count(); n < 2 {
		t.Fatalf("%d checkpoints written by the worker", n)
	}
	n := count()
	if _, err := c.Prune(asOwner(), 0); err != nil {
		t.Fatal(err)
	}
	if count() != n+1 {
		t.Fatalf("Prune wrote %d checkpoints, want 1", count()-n)
	}
	if _, err := c.Teams(asOwner()); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if count() != n+2 {
		t.Fatalf("Close wrote %d checkpoints, want 1", count()-n-1)
	}
	c = keyedClient(t, dir, nil)
	defer c.Close()
	var rep rediacc.AuditReport
	if _, err := c.VerifyAudit(asOwner(), rediacc.WithCheckpoints(), rediacc.WithAuditReport(&rep)); err != nil || rep.Checkpoints != n+2 {
		t.Fatalf("verify: %v, %+v", err, rep)
	}
}

// A memory store without DataDir keys its trail for this process only and
// writes no file.
func TestAuditMemoryStoreKey(t *testing.T) {
	home := t.TempDir()
	t.Setenv("REDIACC_HOME", home)
	t.Setenv("HOME", home)
	c, err := rediacc.New(asOwner(), rediacc.Config{Store: rediacc.NewMemoryStore(), Logger: testLogger(t), Health: rediacc.HealthConfig{Interval: -1}})
	if err != nil {
		t.Fatal(err)
	}
	auditActivity(t, c, 1)
	var rep rediacc.AuditReport
	if _, err := c.VerifyAudit(asOwner(), rediacc.WithAuditReport(&rep)); err != nil || rep.Unkeyed != 0 || len(rep.KeyIDs) != 1 {
		t.Fatalf("%v, %+v", err, rep)
	}
	if _, err := c.RotateAuditKey(asOwner()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.VerifyAudit(asOwner()); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(home); len(ents) != 0 {
		t.Fatalf("files written for a memory store: %v", ents)
	}
}

// A durable store given without DataDir or AuditKeyFile: the library writes
// no key file anywhere; the process seals with a key of its own, says so,
// and a later client reports those records as unauthenticated.
func TestAuditKeyWithoutKeyFile(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("REDIACC_HOME", "")
	path := filepath.Join(t.TempDir(), "q.db")
	open := func(logs io.Writer) *rediacc.Client {
		st, err := rediacc.OpenSQLite(asOwner(), path)
		if err != nil {
			t.Fatal(err)
		}
		c, err := rediacc.New(asOwner(), rediacc.Config{Store: st, Logger: slog.New(slog.NewTextHandler(logs, nil)), Health: rediacc.HealthConfig{Interval: -1}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var logs syncBuf
	c := open(&logs)
	auditActivity(t, c, 1)
	if _, err := c.VerifyAudit(asOwner()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "no audit key file") || c.AuditCheckpointFile() != "" {
		t.Fatalf("no warning, or a checkpoint file %q:\n%s", c.AuditCheckpointFile(), logs.String())
	}
	c.Close()
	c = open(io.Discard)
	defer c.Close()
	if _, err := c.VerifyAudit(asOwner()); !errors.Is(err, rediacc.ErrAuditKeyUnknown) || errors.Is(err, rediacc.ErrAuditTampered) {
		t.Fatalf("a later client: %v", err)
	}
	if _, err := c.VerifyAudit(asOwner(), rediacc.WithCheckpoints()); !errors.Is(err, rediacc.ErrNoArchive) {
		t.Fatalf("checkpoints without an archive dir: %v", err)
	}
}

// Records deleted at the end of the trail while its head stays: VerifyAudit
// reports them missing (it once read the store again and again, waiting
// for the records up to the head).
func TestAuditTailDeletedHeadKept(t *testing.T) {
	dir := t.TempDir()
	c := keyedClient(t, dir, nil)
	auditActivity(t, c, 2)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", filepath.Join(dir, "rediacc.db"))
	if err != nil {
		t.Fatal(err)
	}
	var maxSeq int64
	if err := db.QueryRow(`SELECT max(seq) FROM audit`).Scan(&maxSeq); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`DELETE FROM audit WHERE seq > ?`, maxSeq-3); err != nil {
		t.Fatal(err)
	}
	db.Close()
	c = keyedClient(t, dir, nil)
	defer c.Close()
	ctx, cancel := context.WithTimeout(asOwner(), time.Minute)
	defer cancel()
	_, err = c.VerifyAudit(ctx)
	if ctx.Err() != nil {
		t.Fatal("VerifyAudit did not return")
	}
	te := wantTamper(t, err, audit.KindDeleted, maxSeq-2)
	if !strings.Contains(te.Detail, "truncated") {
		t.Fatalf("detail: %s", te.Detail)
	}
}
