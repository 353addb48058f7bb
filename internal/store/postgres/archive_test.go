package postgres_test

import (
	"strings"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/archive"
	"github.com/rediacc/rediacc/internal/archive/archivetest"
)

// TestArchiveConformance: the archive in the database answers as the file
// and in-memory archives do.
func TestArchiveConformance(t *testing.T) {
	archivetest.Run(t, func(t *testing.T, opts archive.Options) archive.Log {
		e := open(t)
		t.Cleanup(func() { _ = e.Close() })
		return e.ArchiveLog(opts)
	})
}

// TestArchiveAppendOnly: archived records cannot be changed; archived
// audit records cannot be deleted, by the store's own role either;
// retention still removes task records.
func TestArchiveAppendOnly(t *testing.T) {
	e := open(t)
	defer e.Close()
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	l := e.ArchiveLog(archive.Options{Retention: time.Hour, Clock: func() time.Time { return now.Add(-72 * time.Hour) }})
	for _, kind := range []string{archive.KindAudit, archive.KindTask} {
		if err := l.Append(ctx, kind, "1", now, map[string]string{"x": "y"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{
		`UPDATE archive SET value = '{}' WHERE kind = 'audit'`,
		`UPDATE archive SET value = '{}' WHERE kind = 'task'`,
		`DELETE FROM archive WHERE kind = 'audit'`,
		`DELETE FROM archive`,
		`TRUNCATE archive`,
	} {
		if _, err := e.Pool().Exec(ctx, q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: err = %v, want the append-only refusal", q, err)
		}
	}
	removed, err := l.Prune(ctx, now)
	if err != nil || len(removed) != 1 || !strings.HasPrefix(removed[0], "postgres:task/") {
		t.Fatalf("Prune: %v %v (want the task day only)", removed, err)
	}
	if got, err := l.Lookup(ctx, archive.KindAudit, "1"); err != nil || len(got) != 1 {
		t.Fatalf("archived audit record after Prune: %s %v", got, err)
	}
}
