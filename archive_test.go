package rediacc_test

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// archiveClock is the system clock moved by an offset (a later "day").
type archiveClock struct{ off time.Duration }

func (c archiveClock) Now() time.Time { return time.Now().Add(c.off) }

// session opens a client on dir (each session writes its own archive
// segments), with a machine "a1" served by srv.
func session(t *testing.T, dir string, tune func(*rediacc.Config)) *rediacc.Client {
	t.Helper()
	cfg := rediacc.Config{DataDir: dir, Logger: testLogger(t), PollInterval: 20 * time.Millisecond,
		LeaseDuration: 3 * time.Second}
	if tune != nil {
		tune(&cfg)
	}
	c, err := rediacc.New(asOwner(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func addA1(t *testing.T, c *rediacc.Client, srv *sshtest.OpenSSH) {
	t.Helper()
	if _, err := c.AddMachine(asOwner(), rediacc.Machine{Name: "a1", Host: srv.Host, Port: srv.Port, User: srv.User,
		IdentityFile: srv.ClientKeyPath, KnownHostsFile: srv.KnownHostsPath}); err != nil {
		t.Fatal(err)
	}
}

func segments(t *testing.T, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(m)
	return m
}

// Finished tasks are archived by the worker (files 0600); Prune deletes them
// from the store (archiving those the worker had not: a task cancelled
// while pending) and moves old audit records to the archive; TaskLog and
// `logs` still read them, with the same access rules; VerifyAudit verifies
// the chain across archive segments and the store; retention removes old
// task segments only.
func TestPruneThenTaskLogAndAuditVerify(t *testing.T) {
	dir := t.TempDir()
	srv := realSSHD(t, 59)
	ctx := ctxTimeout(t, 2*time.Minute)

	c := session(t, dir, nil)
	addA1(t, c, srv)
	if _, err := c.SetMember(ctx, rediacc.DefaultTeam, "vera", rediacc.RoleViewer); err != nil {
		t.Fatal(err)
	}
	one := submit(t, c, rediacc.TaskSpec{Machine: "a1", Command: "echo one; echo err >&2"})
	cancelled := submit(t, c, rediacc.TaskSpec{Machine: "a1", Command: "echo never", Priority: rediacc.Minimal})
	if _, err := c.Cancel(ctx, cancelled.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.RunUntilEmpty(ctx); err != nil {
		t.Fatal(err)
	}
	segs := segments(t, filepath.Join(dir, "archive", "task", "*.jsonl.gz"))
	if len(segs) != 1 {
		t.Fatalf("task segments after the run: %v", segs)
	}
	if fi, err := os.Stat(segs[0]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("segment mode: %v %v", fi.Mode(), err)
	}
	if _, err := c.Prune(as("vera"), 0); !errors.Is(err, rediacc.ErrPermissionDenied) {
		t.Errorf("viewer prune: %v", err)
	}
	if _, err := c.Prune(ctx, -time.Hour); !errors.Is(err, rediacc.ErrInvalidArgument) {
		t.Errorf("negative prune: %v", err)
	}
	kept, err := c.Prune(ctx, time.Hour)
	if err != nil || kept.TasksDeleted != 0 || kept.AuditArchived != 0 {
		t.Fatalf("prune of nothing old: %+v %v", kept, err)
	}
	n0, err := c.VerifyAudit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Prune(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.TasksDeleted != 2 || res.TasksArchived != 1 || res.AuditArchived < int(n0) {
		t.Errorf("prune: %+v (audit records before: %d)", res, n0)
	}
	if _, err := c.Get(ctx, one.ID); !errors.Is(err, rediacc.ErrNotFound) {
		t.Errorf("Get after prune: %v", err)
	}
	got, err := c.TaskLog(ctx, one.ID)
	if err != nil || got.Status != rediacc.StatusCompleted || got.Stdout != "one\n" || got.Stderr != "err\n" ||
		got.Machine != "a1" || got.Team != rediacc.DefaultTeam || len(got.History) != 1 || *got.ExitCode != 0 {
		t.Fatalf("TaskLog after prune: %+v %v", got, err)
	}
	if got, err := c.TaskLog(ctx, cancelled.ID); err != nil || got.Status != rediacc.StatusCancelled {
		t.Errorf("cancelled task from the archive: %+v %v", got, err)
	}
	if got, err := c.TaskLog(as("vera"), one.ID); err != nil || got.Stdout != "" || got.Status != rediacc.StatusCompleted {
		t.Errorf("viewer TaskLog: %+v %v (want no output)", got, err)
	}
	if _, err := c.TaskLog(as("mallory"), one.ID); !errors.Is(err, rediacc.ErrNotFound) { // hidden: as an unknown id
		t.Errorf("outsider TaskLog: %v", err)
	}
	if _, err := c.TaskLog(ctx, "00000000-0000-0000-0000-000000000000"); !errors.Is(err, rediacc.ErrNotFound) {
		t.Errorf("TaskLog of an unknown id: %v", err)
	}
	n1, err := c.VerifyAudit(ctx)
	if err != nil || n1 <= n0 {
		t.Fatalf("VerifyAudit after prune: %d records, %v", n1, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// A second session: more tasks, a second prune, more segments.
	c = session(t, dir, nil)
	two := submit(t, c, rediacc.TaskSpec{Machine: "a1", Command: "echo two"})
	if err := c.RunUntilEmpty(ctx); err != nil {
		t.Fatal(err)
	}
	if res, err := c.Prune(ctx, 0); err != nil || res.TasksDeleted != 1 || res.TasksArchived != 0 {
		t.Fatalf("second prune: %+v %v", res, err)
	}
	if got, err := c.TaskLog(ctx, two.ID); err != nil || got.Stdout != "two\n" {
		t.Errorf("TaskLog from the second segment: %+v %v", got, err)
	}
	if got, err := c.TaskLog(ctx, one.ID); err != nil || got.Stdout != "one\n" {
		t.Errorf("TaskLog from the first segment: %+v %v", got, err)
	}
	n2, err := c.VerifyAudit(ctx)
	if err != nil || n2 <= n1 {
		t.Fatalf("VerifyAudit across segments: %d records, %v", n2, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if a := segments(t, filepath.Join(dir, "archive", "trail", "audit", "*.jsonl.gz")); len(a) < 2 {
		t.Errorf("audit segments: %v, want at least 2", a)
	}

	// Ten days later, with a 5-day retention: the old task segments go, the
	// audit segments stay and the chain still verifies.
	c = session(t, dir, func(cfg *rediacc.Config) {
		cfg.Clock = archiveClock{off: 10 * 24 * time.Hour}
		cfg.ArchiveRetention = 5 * 24 * time.Hour
	})
	res, err = c.Prune(ctx, 0)
	if err != nil || len(res.SegmentsRemoved) != 2 {
		t.Fatalf("retention prune: %+v %v", res, err)
	}
	if _, err := c.TaskLog(ctx, one.ID); !errors.Is(err, rediacc.ErrNotFound) {
		t.Errorf("TaskLog after retention: %v", err)
	}
	if n3, err := c.VerifyAudit(ctx); err != nil || n3 <= n2 {
		t.Errorf("VerifyAudit after retention: %d %v", n3, err)
	}
}

// corrupt overwrites bytes in the middle of a file.
func corrupt(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(b) / 3; i < len(b)/3+16 && i < len(b); i++ {
		b[i] ^= 0xff
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A damaged archive segment is reported (ErrArchiveCorrupt, naming the
// file) while the other segments stay readable; the audit chain's gap is
// reported as tampering.
func TestCorruptArchiveSegment(t *testing.T) {
	dir := t.TempDir()
	srv := realSSHD(t, 59)
	ctx := ctxTimeout(t, 2*time.Minute)
	var ids []string
	for i := range 2 {
		c := session(t, dir, nil)
		if i == 0 {
			addA1(t, c, srv)
		}
		ids = append(ids, submit(t, c, rediacc.TaskSpec{Machine: "a1", Command: "echo run" + itoa(i)}).ID)
		if err := c.RunUntilEmpty(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Prune(ctx, 0); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	tasks := segments(t, filepath.Join(dir, "archive", "task", "*.jsonl.gz"))
	trail := segments(t, filepath.Join(dir, "archive", "trail", "audit", "*.jsonl.gz"))
	if len(tasks) != 2 || len(trail) != 2 {
		t.Fatalf("segments: tasks %v, audit %v", tasks, trail)
	}
	corrupt(t, tasks[0])
	corrupt(t, trail[0])
	c := session(t, dir, nil)
	if got, err := c.TaskLog(ctx, ids[1]); err != nil || got.Stdout != "run1\n" {
		t.Errorf("task of the intact segment: %+v %v", got, err)
	}
	_, err := c.TaskLog(ctx, ids[0])
	var cse *rediacc.CorruptSegmentError
	if !errors.Is(err, rediacc.ErrArchiveCorrupt) || !errors.Is(err, rediacc.ErrNotFound) || !errors.As(err, &cse) || cse.Path != tasks[0] {
		t.Errorf("task of the damaged segment: %v", err)
	}
	_, err = c.VerifyAudit(ctx)
	if !errors.Is(err, rediacc.ErrArchiveCorrupt) || !errors.Is(err, rediacc.ErrAuditTampered) || !errors.As(err, &cse) || cse.Path != trail[0] {
		t.Errorf("VerifyAudit with a damaged audit segment: %v", err)
	}
}

// Issue 9, kind 5: a store made anew beside the archive of an earlier one
// (a corrupt file moved aside) is an error that says so; the archive is
// neither read as the new store's history nor moved, and nothing is
// created. An archive without its store-id file (from an older build) is
// refused until the id is written as the error says.
func TestNewStoreBesideOldArchive(t *testing.T) {
	dir := t.TempDir()
	open := func() (*rediacc.Client, error) {
		return rediacc.New(asOwner(), rediacc.Config{DataDir: dir, Logger: testLogger(t), PollInterval: 20 * time.Millisecond, Health: rediacc.HealthConfig{Interval: -1}})
	}
	c, err := open()
	if err != nil {
		t.Fatal(err)
	}
	inProcessMachine(t, c, "m1")
	task := submit(t, c, rediacc.TaskSpec{Machine: "m1", Command: "echo archived"})
	if err := c.RunUntilEmpty(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Prune(asOwner(), 0); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	before := snapshotTree(t, filepath.Join(dir, "archive"))

	// The store-id file gone: refused, with the way to claim it.
	idFile := filepath.Join(dir, "archive", "store-id")
	id, err := os.ReadFile(idFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(idFile); err != nil {
		t.Fatal(err)
	}
	if _, err := open(); !errors.Is(err, rediacc.ErrArchiveMismatch) || !strings.Contains(err.Error(), "unknown origin") ||
		!strings.Contains(err.Error(), "echo "+strings.TrimSpace(string(id))) {
		t.Fatalf("an archive without store-id: %v", err)
	}
	if err := os.WriteFile(idFile, id, 0o600); err != nil { // as the error says
		t.Fatal(err)
	}
	c, err = open()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.TaskLog(asOwner(), task.ID); err != nil || got.Stdout != "archived\n" {
		t.Fatalf("task log after prune: %+v %v", got, err)
	}
	if _, err := c.VerifyAudit(asOwner()); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	before = snapshotTree(t, filepath.Join(dir, "archive"))

	// A new store beside it: refused, nothing created or moved.
	for _, f := range []string{"rediacc.db", "rediacc.db-wal", "rediacc.db-shm"} {
		_ = os.Remove(filepath.Join(dir, f))
	}
	_, err = open()
	if !errors.Is(err, rediacc.ErrArchiveMismatch) || !strings.Contains(err.Error(), filepath.Join(dir, "archive")) {
		t.Fatalf("a new store beside an old archive: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "rediacc.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused New created a store: %v", err)
	}
	if moved, _ := filepath.Glob(filepath.Join(dir, "archive-*")); len(moved) != 0 {
		t.Errorf("the old archive was moved: %v", moved)
	}
	if after := snapshotTree(t, filepath.Join(dir, "archive")); !maps.Equal(before, after) {
		t.Errorf("the old archive changed:\nbefore %v\nafter  %v", before, after)
	}

	// Another store pointed at it: refused likewise, naming both stores.
	other := t.TempDir()
	oc, err := rediacc.New(asOwner(), rediacc.Config{DataDir: other, Logger: testLogger(t), Health: rediacc.HealthConfig{Interval: -1}})
	if err != nil {
		t.Fatal(err)
	}
	_ = oc.Close()
	_, err = rediacc.New(asOwner(), rediacc.Config{DataDir: other, ArchiveDir: filepath.Join(dir, "archive"), Logger: testLogger(t), Health: rediacc.HealthConfig{Interval: -1}})
	if !errors.Is(err, rediacc.ErrArchiveMismatch) || !strings.Contains(err.Error(), strings.TrimSpace(string(id))) {
		t.Fatalf("another store's ArchiveDir: %v", err)
	}
	if after := snapshotTree(t, filepath.Join(dir, "archive")); !maps.Equal(before, after) {
		t.Errorf("the old archive changed")
	}
}

// snapshotTree maps every file under dir to its content's hash.
func snapshotTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			out[p] = "dir"
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[p] = fmt.Sprintf("%x", sha256.Sum256(b))
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return out
}
