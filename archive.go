package rediacc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/rediacc/rediacc/internal/archive"
	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/safefs"
	"github.com/rediacc/rediacc/internal/store"
)

// The log archive (see Config.ArchiveDir). Finished tasks' full records and
// old audit records are kept there, in append-only gzip JSON Lines
// segments (one per day, or per 64 MiB; files 0600), after Prune has taken
// them out of the queue store:
//
//	ARCHIVE_DIR/task/2026-11-29.0001.jsonl.gz         tasks (key: task id)
//	ARCHIVE_DIR/trail/audit/2026-11-29.0001.jsonl.gz  audit records (key: seq)
//
// Each line is {"key": …, "at": …, "v": …}: v is the task in its JSON form
// (Task.MarshalJSON; output already masked) or the audit record
// (AuditRecord's JSON form, hash included). zcat reads them.
//
// A store that hosts share (PostgreSQL) keeps the archive itself, in a
// table of the database with the same records (storeArchive): `rediacc logs`
// of a pruned task and VerifyAudit work from every host, and ArchiveDir
// then holds only the audit checkpoints. Finished tasks stay in the store
// until Prune moves them into its archive, in the same database.

// storeArchive is implemented by engines that keep the log archive in the
// store (internal/store/postgres).
type storeArchive interface {
	ArchiveLog(opts archive.Options) archive.Log
}

// ErrArchiveCorrupt: a segment of the log archive (or a region of one)
// could not be read: a torn or damaged gzip member, or a line that is not a
// record. The records of other segments, and of the rest of the damaged
// one, stay readable. Errors wrapping it also wrap a *CorruptSegmentError
// naming the file and byte offset.
var ErrArchiveCorrupt = errors.New("archive segment is corrupt")

// CorruptSegmentError names a damaged archive segment (Path) and the
// compressed byte offset (Offset) where the damage starts; use errors.As.
type CorruptSegmentError = archive.CorruptSegmentError

// ErrNoArchive: the client has no log archive (a Store given without
// Config.DataDir or Config.ArchiveDir, other than NewMemoryStore and a
// PostgreSQL store, which keep theirs in memory and in the database): Prune
// refuses (it would lose what it moves), TaskLog finds only what the store
// still holds, and VerifyAudit cannot check records that an earlier Prune
// moved into an archive.
var ErrNoArchive = errors.New("no log archive: set Config.ArchiveDir (or Config.DataDir)")

// ErrArchiveMismatch: Config.ArchiveDir holds the archive of another store,
// or an archive of unknown origin (no store-id file), or an archive with no
// store beside it. The client neither reads it as its own history
// (VerifyAudit would report tampering) nor moves or changes it: point
// Config.ArchiveDir elsewhere, or move the archive away. The error is an
// *ArchiveMismatchError.
var ErrArchiveMismatch = errors.New("the log archive belongs to another store")

// ArchiveMismatchError says why an archive directory is not this store's
// (errors.Is(err, ErrArchiveMismatch) holds). Its Error speaks of Config
// fields; a program with other names for them (a CLI's flags) builds its
// own advice from the fields.
type ArchiveMismatchError struct {
	// Dir is the archive directory (Config.ArchiveDir).
	Dir string
	// Store is the store file that does not exist yet (New would create
	// it); "" when the store exists.
	Store string
	// StoreID is this store's id; "" when the store does not exist yet.
	StoreID string
	// ArchiveStoreID is the store the archive names in its store-id
	// file; "" when it has none (an archive of unknown origin).
	ArchiveStoreID string
}

// Error implements error.
func (e *ArchiveMismatchError) Error() string {
	return e.Explain("point Config.ArchiveDir (or Config.DataDir) elsewhere")
}

// Explain is Error with elsewhere as the advice to use another archive
// directory (a CLI: "use another --data-dir").
func (e *ArchiveMismatchError) Explain(elsewhere string) string {
	return fmt.Sprintf("%v: %s; it was left untouched and nothing was created: %s, or move the archive away%s", ErrArchiveMismatch, e.Finding(),
		elsewhere, e.claimHint())
}

// Finding says what was found, without advice.
func (e *ArchiveMismatchError) Finding() string {
	switch {
	case e.Store != "" && e.ArchiveStoreID != "":
		return fmt.Sprintf("%s holds the log archive of store %s, but there is no store (%s) beside it: a new store would not own it", e.Dir, e.ArchiveStoreID, e.Store)
	case e.Store != "":
		return fmt.Sprintf("%s holds a log archive but there is no store (%s) beside it: a new store would not own it; if you lost the store file, restore it from a backup", e.Dir, e.Store)
	case e.ArchiveStoreID != "":
		return fmt.Sprintf("%s holds the archive of store %s, and this store is %s", e.Dir, e.ArchiveStoreID, e.StoreID)
	}
	return fmt.Sprintf("%s holds an archive of unknown origin (no %s file)", e.Dir, storeIDFile)
}

// claimHint is how to claim an archive of unknown origin for this store.
func (e *ArchiveMismatchError) claimHint() string {
	if e.Store == "" && e.ArchiveStoreID == "" {
		return fmt.Sprintf("; if it is this store's archive, write the store's id into it (echo %s > %s)", e.StoreID, filepath.Join(e.Dir, storeIDFile))
	}
	return ""
}

// Is makes errors.Is(err, ErrArchiveMismatch) hold.
func (e *ArchiveMismatchError) Is(target error) bool { return target == ErrArchiveMismatch }

// pruneBatch is how many tasks Prune archives and deletes at a time.
const pruneBatch = 500

// archiveState holds the Client's archives, opened on first use.
type archiveState struct {
	mu     sync.Mutex
	tasks  archive.Log // ArchiveDir (or memory); kind "task"; retention applies
	trail  archive.Log // ArchiveDir/trail (or memory); kind "audit"; kept forever
	closed bool
	// inStore: the archive is the store's own (storeArchive): workers do
	// not copy finished tasks into it, Prune moves them.
	inStore bool

	q archiveQueue // finished tasks on their way to the archive
}

// Finished tasks are copied into the log archive in batches, off the
// task's goroutine: a batch is written (one gzip member, one fsync) once
// archiveBatchDelay has passed since the last one was taken, or at once
// when archiveBatchMax tasks wait or a flush is asked for (Prune, TaskLog,
// the end of Run, Close). Until then the task is in the store only, as it
// is anyway until Prune: Prune archives any finished task the archive
// lacks before deleting it, so a copy lost with the process (kill -9
// within archiveBatchDelay) is archived then.
const (
	archiveBatchDelay = 500 * time.Millisecond
	archiveBatchMax   = 512
)

// archiveQueue holds the finished tasks waiting for their batch. A flusher
// goroutine runs while any wait (started by the first, ending when none is
// left).
type archiveQueue struct {
	mu      sync.Mutex
	recs    []store.Task
	running bool          // a flusher runs
	urgent  bool          // write without waiting: a flush is awaited
	wake    chan struct{} // capacity 1: write now
	done    chan struct{} // closed when the running flusher ends
}

// archiveDefaults fills Config.ArchiveDir (called by New, after DataDir
// got its default when the default store is used): DataDir/archive, or
// empty when the caller gave neither (the archive is then in memory for a
// memory store, and there is none for another store).
func archiveDefaults(cfg *Config) {
	if cfg.ArchiveDir == "" && cfg.DataDir != "" {
		cfg.ArchiveDir = filepath.Join(cfg.DataDir, "archive")
	}
}

// archives opens the task and audit archives (once). It returns
// ErrNoArchive when the client has none.
func (c *Client) archives() (tasks, trail archive.Log, err error) {
	c.arch.mu.Lock()
	defer c.arch.mu.Unlock()
	if c.arch.closed {
		return nil, nil, ErrClosed
	}
	if c.arch.tasks != nil {
		return c.arch.tasks, c.arch.trail, nil
	}
	opts := archive.Options{Retention: c.cfg.ArchiveRetention, Clock: c.clock.Now, Logger: c.log}
	if sa, ok := c.engine.(storeArchive); ok {
		c.arch.tasks = sa.ArchiveLog(opts)
		opts.Retention = 0
		c.arch.trail = sa.ArchiveLog(opts)
		c.arch.inStore = true
		return c.arch.tasks, c.arch.trail, nil
	}
	if c.cfg.ArchiveDir == "" {
		if !c.st.inMemory() {
			return nil, nil, fmt.Errorf("%w (store %s)", ErrNoArchive, c.st)
		}
		c.arch.tasks = archive.NewMemory(opts)
		opts.Retention = 0
		c.arch.trail = archive.NewMemory(opts)
		return c.arch.tasks, c.arch.trail, nil
	}
	if err := c.claimArchive(); err != nil {
		return nil, nil, err
	}
	t, err := archive.Open(c.cfg.ArchiveDir, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("rediacc: open the log archive: %w", err)
	}
	opts.Retention = 0
	a, err := archive.Open(filepath.Join(c.cfg.ArchiveDir, "trail"), opts)
	if err != nil {
		_ = t.Close()
		return nil, nil, fmt.Errorf("rediacc: open the audit archive: %w", err)
	}
	c.arch.tasks, c.arch.trail = t, a
	return t, a, nil
}

// storeIDFile, in the archive directory, names the store the archive
// belongs to.
const storeIDFile = "store-id"

// storeID identifies the client's store: a hash of the creation time of
// its default team, which cannot be renamed or deleted.
func (c *Client) storeID(ctx context.Context) (string, error) {
	t, err := c.access.GetTeam(ctx, DefaultTeam)
	if err != nil {
		return "", fmt.Errorf("rediacc: the log archive: %w", mapStoreErr(err))
	}
	sum := sha256.Sum256([]byte(t.CreatedAt.UTC().Format(time.RFC3339Nano)))
	return hex.EncodeToString(sum[:8]), nil
}

// checkArchive reports whether Config.ArchiveDir may be this store's
// archive, without writing anything: a missing or empty directory may; one
// whose store-id names this store may; anything else is ErrArchiveMismatch,
// and a directory or file in it that another user could have planted is
// ErrUnsafePath. It reports the id to write when the directory has none.
func (c *Client) checkArchive(ctx context.Context) (missingID string, err error) {
	dir := c.cfg.ArchiveDir
	holds, err := scanArchiveDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("rediacc: the log archive %s: %w", dir, err)
	}
	id, err := c.storeID(ctx)
	if err != nil {
		return "", err
	}
	b, err := readFileNoFollow(filepath.Join(dir, storeIDFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
		if holds {
			return "", &ArchiveMismatchError{Dir: dir, StoreID: id}
		}
		return id, nil
	case err != nil:
		return "", fmt.Errorf("rediacc: the log archive %s: %w", dir, err)
	case strings.TrimSpace(string(b)) != id:
		return "", &ArchiveMismatchError{Dir: dir, StoreID: id, ArchiveStoreID: strings.TrimSpace(string(b))}
	}
	return "", nil
}

// scanArchiveDir checks an archive directory and the directories in it
// (safe to write in, no symbolic links: ErrUnsafePath) and reports whether
// it holds anything but empty directories and its store-id file. It
// returns os.ErrNotExist when dir does not exist.
func scanArchiveDir(dir string) (holds bool, err error) {
	if err := unsafeErr(safefs.CheckDir(dir)); err != nil {
		return false, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		switch {
		case e.Type()&os.ModeSymlink != 0:
			return false, unsafeErr(fmt.Errorf("%w: %s is a symbolic link: refusing to follow it (the archive holds only rediacc's own files)", safefs.ErrUnsafe, p))
		case e.IsDir():
			sub, err := scanArchiveDir(p)
			if err != nil {
				return false, err
			}
			holds = holds || sub
		case e.Name() != storeIDFile:
			holds = true
		}
	}
	return holds, nil
}

// newStoreBesideArchive refuses to create a store at path (when no file is
// there yet) beside an archive dir that holds records or names a store
// (its store-id file): they belong to another store, and a new one could
// not own them. Nothing is written.
func newStoreBesideArchive(path, archiveDir string) error {
	if archiveDir == "" {
		return nil
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	holds, err := scanArchiveDir(archiveDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("rediacc: the log archive %s: %w", archiveDir, err)
	}
	b, err := readFileNoFollow(filepath.Join(archiveDir, storeIDFile))
	switch {
	case err == nil:
		return &ArchiveMismatchError{Dir: archiveDir, Store: path, ArchiveStoreID: strings.TrimSpace(string(b))}
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("rediacc: the log archive %s: %w", archiveDir, err)
	case holds:
		return &ArchiveMismatchError{Dir: archiveDir, Store: path}
	}
	return nil
}

// claimArchive binds the archive directory to this store (on first use):
// it creates the directory and its store-id file when missing, and refuses
// (ErrArchiveMismatch) the archive of another store: a store created anew
// beside the archive of an earlier one (say, after a corrupt file was moved
// aside) must not read that archive as its own history.
func (c *Client) claimArchive() error {
	ctx := context.Background()
	if err := mkdirPrivate(c.cfg.ArchiveDir); err != nil {
		return fmt.Errorf("rediacc: open the log archive: %w", err)
	}
	missing, err := c.checkArchive(ctx)
	if err != nil || missing == "" {
		return err
	}
	return writeFileExcl(filepath.Join(c.cfg.ArchiveDir, storeIDFile), []byte(missing+"\n"))
}

// closeArchives seals the open segments (Close).
func (c *Client) closeArchives() error {
	c.flushArchive()
	c.arch.mu.Lock()
	defer c.arch.mu.Unlock()
	c.arch.closed = true
	var errs []error
	for _, a := range []archive.Log{c.arch.tasks, c.arch.trail} {
		if a != nil {
			errs = append(errs, a.Close())
		}
	}
	return errors.Join(errs...)
}

// archiveTask appends a finished task's full record to the archive.
func (c *Client) archiveTask(ctx context.Context, rec store.Task) error {
	t, err := taskFromRecord(rec)
	if err != nil {
		return err
	}
	tasks, _, err := c.archives()
	if errors.Is(err, ErrNoArchive) {
		return nil // Prune, which needs one, refuses
	}
	if err != nil {
		return err
	}
	return tasks.Append(context.WithoutCancel(ctx), archive.KindTask, t.ID, c.archivedAt(t), t)
}

// archiveFinished is the worker's hook: a task just became terminal. It is
// queued for the next batch (see archiveBatchDelay); a failure to write it
// is logged, and Prune archives the task before deleting it anyway. A
// store that keeps its own archive needs no copy: the task stays in the
// store until Prune moves it.
func (c *Client) archiveFinished(ctx context.Context, rec store.Task) {
	_, _, err := c.archives()
	switch {
	case err == nil && c.archiveInStore(), errors.Is(err, ErrNoArchive):
		return
	case err != nil:
		c.log.ErrorContext(ctx, "archiving a finished task failed (Prune will retry)", "task_id", rec.ID, "error", err)
		return
	}
	q := &c.arch.q
	q.mu.Lock()
	defer q.mu.Unlock()
	q.recs = append(q.recs, rec)
	if !q.running {
		q.running, q.urgent = true, false
		q.wake, q.done = make(chan struct{}, 1), make(chan struct{})
		go c.archiveFlusher(q.wake, q.done)
	}
	if len(q.recs) >= archiveBatchMax {
		wakeUp(q.wake)
	}
}

// wakeUp signals a capacity-1 channel without blocking.
func wakeUp(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default: // already signalled
	}
}

// archiveFlusher writes the queued finished tasks in batches until none
// is left.
func (c *Client) archiveFlusher(wake <-chan struct{}, done chan<- struct{}) {
	q := &c.arch.q
	timer := time.NewTimer(archiveBatchDelay)
	defer timer.Stop()
	for {
		q.mu.Lock()
		now := q.urgent || len(q.recs) >= archiveBatchMax
		q.mu.Unlock()
		if !now {
			select {
			case <-timer.C:
			case <-wake:
			}
		}
		q.mu.Lock()
		batch := q.recs
		q.recs = nil
		if len(batch) == 0 {
			q.running = false
			close(done)
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
		c.archiveBatch(batch)
		timer.Reset(archiveBatchDelay)
	}
}

// flushArchive returns once the finished tasks queued before it are
// written to the archive (or their failure logged).
func (c *Client) flushArchive() {
	q := &c.arch.q
	q.mu.Lock()
	if !q.running {
		q.mu.Unlock()
		return
	}
	q.urgent = true
	wakeUp(q.wake)
	done := q.done
	q.mu.Unlock()
	<-done
}

// archiveBatch appends finished tasks' records to the archive in one
// batch.
func (c *Client) archiveBatch(batch []store.Task) {
	ctx := context.Background()
	tasks, _, err := c.archives()
	if err != nil {
		c.log.ErrorContext(ctx, "archiving finished tasks failed (Prune will retry)", "tasks", len(batch), "error", err)
		return
	}
	recs := make([]archive.Record, 0, len(batch))
	for _, r := range batch {
		t, err := taskFromRecord(r)
		if err != nil {
			c.log.ErrorContext(ctx, "archiving a finished task failed (Prune will retry)", "task_id", r.ID, "error", err)
			continue
		}
		recs = append(recs, archive.Record{Key: t.ID, At: c.archivedAt(t), V: t})
	}
	if ba, ok := tasks.(archive.BatchAppender); ok {
		err = ba.AppendMany(ctx, archive.KindTask, recs)
	} else {
		for _, r := range recs {
			err = errors.Join(err, tasks.Append(ctx, archive.KindTask, r.Key, r.At, r.V))
		}
	}
	if err != nil {
		c.log.ErrorContext(ctx, "archiving finished tasks failed (Prune will retry)", "tasks", len(recs), "error", err)
	}
}

// archivedAt is the time a task is archived under: when it finished.
func (c *Client) archivedAt(t *Task) time.Time {
	if t.CompletedAt.IsZero() {
		return c.clock.Now().UTC()
	}
	return t.CompletedAt
}

// archiveInStore reports whether the archive is the store's own.
func (c *Client) archiveInStore() bool {
	c.arch.mu.Lock()
	defer c.arch.mu.Unlock()
	return c.arch.inStore
}

// archivedTask reads a task from the archive (the newest copy).
func (c *Client) archivedTask(ctx context.Context, id string) (*Task, error) {
	c.flushArchive() // the tasks this worker finished are read like the others
	tasks, _, err := c.archives()
	if errors.Is(err, ErrNoArchive) {
		return nil, fmt.Errorf("task %s: %w (and %w: a pruned task cannot be read)", quoteInput(id), ErrNotFound, err)
	}
	if err != nil {
		return nil, err
	}
	raws, lerr := tasks.Lookup(ctx, archive.KindTask, id)
	if len(raws) > 0 {
		var t Task
		if err := json.Unmarshal(raws[0], &t); err != nil {
			return nil, fmt.Errorf("%w: archived task %q: %v", ErrArchiveCorrupt, id, err)
		}
		if lerr != nil {
			c.log.WarnContext(ctx, "the log archive has damaged segments", "error", lerr)
		}
		return &t, nil
	}
	var cse *archive.CorruptSegmentError
	if errors.As(lerr, &cse) {
		return nil, fmt.Errorf("task %s: %w (it may be in a damaged part of the archive: %w: %w)", quoteInput(id), ErrNotFound, ErrArchiveCorrupt, lerr)
	}
	if lerr != nil {
		return nil, lerr
	}
	return nil, fmt.Errorf("task %s: %w", quoteInput(id), ErrNotFound)
}

// TaskLog returns a task with its full record (attempts, output, exit
// code): from the queue store while it is there, else, once Prune has
// removed it, from the log archive. Access is Get's: task.read in the
// task's team, by id (the archived record's team id once pruned, so a later
// team of the same name does not see it), stdout and stderr only with
// task.output (not viewers); audited with the source it was read from.
// Reading the archive decompresses the task segments newest first:
// O(archived bytes) for a task not found.
//
// Errors: ErrNoActor, ErrPermissionDenied, ErrNotFound, ErrInvalidArgument
// (id is not a UUID); ErrArchiveCorrupt
// (with ErrNotFound) when the task is not found and the archive has damaged
// segments it may have been in.
func (c *Client) TaskLog(ctx context.Context, id string) (*Task, error) {
	if _, _, err := c.actor(ctx); err != nil {
		return nil, err
	}
	src := "store"
	t, err := c.getTask(ctx, id)
	if errors.Is(err, ErrNotFound) {
		src = "archive"
		t, err = c.archivedTask(ctx, id)
	}
	if err != nil {
		return nil, err
	}
	if t.TeamID == "" { // archived before teams had ids: the name was the id
		t.TeamID = t.Team
	}
	sc, err := c.scopeOfID(ctx, t.TeamID)
	if err != nil {
		return nil, err
	}
	o, g, err := c.authorizeSeen(ctx, authz.TaskRead, taskNotFound(id), authz.TaskRead, sc, audit.EntityTask, id, map[string]string{"source": src})
	if err != nil {
		return nil, err
	}
	redactOutput(t, g)
	o.done(ctx)
	return t, nil
}

// PruneResult says what Prune did.
type PruneResult struct {
	// Before is the cut-off: tasks finished, and audit records written,
	// before it were moved to the archive.
	Before time.Time `json:"before"`
	// TasksArchived counts the tasks Prune had to archive itself (workers
	// archive tasks in batches as they finish, and before Run returns;
	// these had not been: cancelled while pending, or their worker failed
	// to, or was killed before its last batch was written).
	TasksArchived int `json:"tasksArchived"`
	// TasksDeleted counts the finished tasks removed from the queue store.
	TasksDeleted int `json:"tasksDeleted"`
	// AuditArchived counts the audit records moved to the archive.
	AuditArchived int `json:"auditArchived"`
	// AlertsDeleted counts the alerts raised before Before, delivered or
	// given up at every endpoint, removed from the alert outbox (alerts
	// are not archived: the tasks they are about are).
	AlertsDeleted int `json:"alertsDeleted"`
	// SegmentsRemoved lists the task archive segments removed by
	// Config.ArchiveRetention.
	SegmentsRemoved []string `json:"segmentsRemoved,omitempty"`
}

// authorizeOwner lets only store owners through (operations outside the
// team role matrix: pruning).
func (c *Client) authorizeOwner(ctx context.Context, action, etype string, detail map[string]string) (*op, error) {
	o, err := c.newOp(ctx, authz.Action(action), scope{}, etype, "", detail)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(o.grants.StoreRoles, authz.Owner) {
		return nil, c.deny(ctx, o, "denied: only an owner may "+action)
	}
	return o, nil
}

// Prune moves old records out of the queue store into the log archive
// (Config.ArchiveDir), so the store stays small while the records stay
// readable (TaskLog, `rediacc logs`) and the audit trail verifiable
// (VerifyAudit):
//
//   - finished tasks (COMPLETED, FAILED, CANCELLED) that finished more than
//     olderThan ago are deleted from the store once they are in the archive
//     (workers archive tasks as they finish; Prune archives any that are
//     missing first);
//   - audit records written more than olderThan ago are appended to the
//     audit archive, then removed from the store; the hash chain goes on
//     from the archive into the store;
//   - alerts raised more than olderThan ago that every endpoint acknowledged
//     or gave up on are deleted from the alert outbox;
//   - with Config.ArchiveRetention set, task archive segments older than it
//     are removed. Archived audit records are never removed: the chain is
//     verified from its first record.
//
// Prune is safe to repeat after a crash: a task or audit record archived
// twice is read once. Only owners may prune. Tasks are archived and deleted
// 500 at a time; checking which are archived reads the task archive once
// per Prune (the records finished since the oldest task to prune).
//
// Errors: ErrNoActor, ErrPermissionDenied, ErrInvalidArgument (negative
// olderThan), ErrClosed, and the archive's I/O errors (what was done before
// is kept and counted in the result).
func (c *Client) Prune(ctx context.Context, olderThan time.Duration) (PruneResult, error) {
	o, err := c.authorizeOwner(ctx, "store.prune", audit.EntityAudit, map[string]string{"older_than": olderThan.String()})
	if err != nil {
		return PruneResult{}, err
	}
	if olderThan < 0 {
		return PruneResult{}, o.fail(ctx, fmt.Errorf("%w: prune older than %s: the age must not be negative", ErrInvalidArgument, olderThan))
	}
	c.flushArchive() // the tasks this worker finished, so Prune does not archive them again
	tasks, trail, err := c.archives()
	if err != nil {
		return PruneResult{}, o.fail(ctx, err)
	}
	now := c.clock.Now().UTC()
	res := PruneResult{Before: now.Add(-olderThan)}
	o.detail["before"] = res.Before.Format(time.RFC3339Nano)
	if err := c.pruneTasks(ctx, o, tasks, &res); err != nil {
		return res, o.fail(ctx, err)
	}
	if res.AlertsDeleted, err = c.ob.engine.DeleteAlerts(ctx, res.Before); err != nil { // outbox.go
		return res, o.fail(ctx, mapStoreErr(err))
	}
	o.detail["alerts_deleted"] = strconv.Itoa(res.AlertsDeleted)
	trimmed, err := c.pruneAudit(ctx, o, trail, &res)
	if err != nil {
		return res, o.fail(ctx, err)
	}
	if c.cfg.ArchiveRetention > 0 {
		removed, err := tasks.Prune(ctx, now)
		res.SegmentsRemoved = removed
		if err != nil {
			return res, o.fail(ctx, err)
		}
	}
	if !trimmed {
		o.detail["tasks_deleted"] = strconv.Itoa(res.TasksDeleted)
		o.detail["segments_removed"] = strconv.Itoa(len(res.SegmentsRemoved))
		o.done(ctx)
	}
	c.log.InfoContext(ctx, "pruned", "before", res.Before, "tasks_deleted", res.TasksDeleted,
		"tasks_archived", res.TasksArchived, "audit_archived", res.AuditArchived, "alerts_deleted", res.AlertsDeleted,
		"segments_removed", len(res.SegmentsRemoved))
	c.checkpointQuietly(ctx, "prune") // the head after the trim (auditkey.go)
	return res, nil
}

// archivedKey is a task id in the set of archived tasks: a UUID's 16 bytes,
// or the id itself.
type archivedKey struct {
	u   uuid.UUID
	str string
}

func keyOf(id string) archivedKey {
	if u, err := uuid.Parse(id); err == nil {
		return archivedKey{u: u}
	}
	return archivedKey{str: id}
}

// pruneTasks archives (when missing) and deletes the finished tasks older
// than res.Before.
func (c *Client) pruneTasks(ctx context.Context, o *op, tasks archive.Log, res *PruneResult) error {
	var archived map[archivedKey]struct{}
	for {
		batch, err := c.engine.ListPrunable(ctx, res.Before, pruneBatch)
		if err != nil {
			return mapStoreErr(err)
		}
		if len(batch) == 0 {
			return nil
		}
		if ix, ok := tasks.(archive.Indexed); ok {
			// An indexed archive answers for this batch alone.
			ids := make([]string, len(batch))
			for i, r := range batch {
				ids[i] = r.ID
			}
			has, err := ix.Contains(ctx, archive.KindTask, ids)
			if err != nil {
				return err
			}
			archived = map[archivedKey]struct{}{}
			for id := range has {
				archived[keyOf(id)] = struct{}{}
			}
		} else if archived == nil {
			// One pass over the task archive, keeping the ids archived as
			// finished between the oldest task to prune and the cut-off.
			from := batch[0].CompletedAt
			archived = map[archivedKey]struct{}{}
			serr := tasks.Scan(ctx, archive.KindTask, func(key string, at time.Time, _ json.RawMessage) error {
				if !at.Before(from) && at.Before(res.Before) {
					archived[keyOf(key)] = struct{}{}
				}
				return nil
			})
			var cse *archive.CorruptSegmentError
			if serr != nil && !errors.As(serr, &cse) {
				return serr
			}
			// Damaged segments: their tasks count as not archived and are
			// archived again.
		}
		ids := make([]string, 0, len(batch))
		for _, r := range batch {
			if _, ok := archived[keyOf(r.ID)]; !ok {
				if err := c.archiveTask(ctx, r); err != nil {
					return err
				}
				archived[keyOf(r.ID)] = struct{}{}
				res.TasksArchived++
			}
			ids = append(ids, r.ID)
		}
		rec := o.record(audit.ResultOK, nil)
		rec.Action, rec.EntityType = "task.prune", audit.EntityTask
		rec.Details = map[string]string{"tasks": strconv.Itoa(len(ids)), "before": res.Before.Format(time.RFC3339Nano),
			"first": ids[0], "last": ids[len(ids)-1]}
		n, err := c.engine.DeleteTasks(store.WithAudit(ctx, rec), ids)
		if err != nil {
			return mapStoreErr(err)
		}
		res.TasksDeleted += n
		if len(batch) < pruneBatch {
			return nil
		}
	}
}

// pruneAudit moves the audit records written before res.Before to the
// audit archive and trims them from the store. It reports whether it
// trimmed (the operation's "ok" record then went with the trim).
func (c *Client) pruneAudit(ctx context.Context, o *op, trail archive.Log, res *PruneResult) (bool, error) {
	base, err := c.access.AuditBase(ctx)
	if err != nil {
		return false, mapStoreErr(err)
	}
	upto, after := base.Seq, base.Seq
	for done := false; !done; {
		page, err := c.access.ListAudit(ctx, audit.Filter{AfterSeq: after, Limit: audit.MaxLimit})
		if err != nil {
			return false, mapStoreErr(err)
		}
		for _, r := range page {
			if !r.Time.Before(res.Before) {
				done = true
				break
			}
			if err := trail.Append(ctx, archive.KindAudit, strconv.FormatInt(r.Seq, 10), r.Time, r); err != nil {
				return false, err
			}
			upto = r.Seq
			res.AuditArchived++
		}
		if len(page) < audit.MaxLimit {
			done = true
		} else {
			after = page[len(page)-1].Seq
		}
	}
	if upto == base.Seq {
		return false, nil
	}
	o.detail["tasks_deleted"] = strconv.Itoa(res.TasksDeleted)
	o.detail["audit_archived"] = strconv.Itoa(res.AuditArchived)
	o.detail["audit_upto_seq"] = strconv.FormatInt(upto, 10)
	if err := c.access.TrimAudit(o.ctx(ctx), upto); err != nil {
		return false, mapStoreErr(err)
	}
	return true, nil
}

// verifyInput is what a verification pass checks with (auditkey.go).
type verifyInput struct {
	ring          *audit.Keyring
	checkpoints   []audit.CheckpointEntry // nil: none asked for
	checkpointErr error                   // from reading them
	rep           *AuditReport
}

// verifyArchivedChain verifies the whole audit chain: the archived records
// from the genesis, then the stored ones from the store's base to its head.
// A corrupt archive segment is reported (ErrArchiveCorrupt) beside the gap
// it leaves in the chain.
func (c *Client) verifyArchivedChain(ctx context.Context, in verifyInput) (int64, error) {
	for attempt := 0; ; attempt++ {
		n, moved, err := c.verifyOnce(ctx, in)
		if !moved || attempt == 2 {
			return n, err
		}
	}
}

// replay recognizes an exact replay of records already fed to the verifier
// (a Prune that crashed between archiving audit records and trimming them
// archives them again): a run of well-formed records, each linked to the
// one before it, ending with the very record last fed. Such a run is
// skipped; any other record goes to the verifier.
type replay struct {
	buf  []audit.Record
	last audit.Head     // last record fed to the verifier
	ring *audit.Keyring // checks the seals
}

// sealed reports whether r's seal holds (or cannot be checked: its key is
// not held).
func (rp *replay) sealed(r audit.Record) bool {
	ok, known := rp.ring.Sealed(r)
	return ok || !known
}

// add takes the next record and returns the records to feed the verifier.
func (rp *replay) add(r audit.Record) []audit.Record {
	inRun := len(rp.buf) > 0
	switch {
	case !inRun && r.Seq <= rp.last.Seq && r.Seq > 0 && rp.sealed(r),
		inRun && r.Seq == rp.buf[len(rp.buf)-1].Seq+1 && r.PrevHash == rp.buf[len(rp.buf)-1].Hash && rp.sealed(r):
		if r.Seq == rp.last.Seq {
			if r.Hash == rp.last.Hash {
				rp.buf = rp.buf[:0] // an exact replay: skip it
				return nil
			}
			out := append(rp.buf, r)
			rp.buf = nil
			return out
		}
		if r.Seq < rp.last.Seq {
			rp.buf = append(rp.buf, r)
			return nil
		}
	}
	out := append(rp.flush(), r)
	rp.last = audit.HeadOf(r)
	return out
}

// flush returns a pending run that turned out not to be a replay.
func (rp *replay) flush() []audit.Record {
	out := rp.buf
	rp.buf = nil
	return out
}

// verifyOnce is one verification pass; moved reports that the store's base
// moved meanwhile (a concurrent Prune), so the pass must be redone.
func (c *Client) verifyOnce(ctx context.Context, in verifyInput) (n int64, moved bool, err error) {
	base, err := c.access.AuditBase(ctx)
	if err != nil {
		return 0, false, mapStoreErr(err)
	}
	v := audit.NewVerifier(audit.Head{}, audit.WithKeyring(in.ring))
	var (
		tamper error
		cc     *audit.CheckpointCheck
		cpErr  = in.checkpointErr
	)
	if in.checkpoints != nil {
		var err error
		cc, err = audit.NewCheckpointCheck(in.ring, in.checkpoints)
		cpErr = errors.Join(cpErr, err)
	}
	files := in.rep.CheckpointFiles
	*in.rep = AuditReport{CheckpointFiles: files}
	feed := func(rs []audit.Record) {
		for _, r := range rs {
			in.rep.count(r)
			if cc != nil {
				cc.Observe(r)
			}
			if tamper == nil {
				tamper = v.Add(r)
			}
		}
	}
	// The archive: records past the store's base are still in the store
	// too (archived, not yet trimmed); remember their hashes to match.
	overlap := map[int64]string{}
	rp := &replay{ring: in.ring}
	var corrupt error
	_, trail, err := c.archives()
	if errors.Is(err, ErrNoArchive) {
		if base.Seq > 0 {
			return 0, false, fmt.Errorf("audit records 1..%d were moved by Prune into a log archive this client was not given: %w", base.Seq, err)
		}
		trail = archive.NewMemory(archive.Options{}) // nothing was ever archived
	} else if err != nil {
		return 0, false, err
	}
	serr := trail.Scan(ctx, archive.KindAudit, func(key string, _ time.Time, raw json.RawMessage) error {
		var r audit.Record
		if err := json.Unmarshal(raw, &r); err != nil {
			return &archive.CorruptSegmentError{Path: "audit record " + key, Err: err}
		}
		if r.Seq > base.Seq {
			overlap[r.Seq] = r.Hash
		}
		feed(rp.add(r))
		return nil
	})
	var cse *archive.CorruptSegmentError
	switch {
	case serr == nil:
	case errors.As(serr, &cse):
		corrupt = fmt.Errorf("%w: %w", ErrArchiveCorrupt, serr)
	default:
		return v.Count(), false, serr
	}
	feed(rp.flush())
	archivedTo := rp.last.Seq
	// The store, from its base; records also in the archive must match.
	after := base.Seq
	var head audit.Head
	for {
		before := after
		for {
			page, err := c.access.ListAudit(ctx, audit.Filter{AfterSeq: after, Limit: audit.MaxLimit})
			if err != nil {
				return v.Count(), false, mapStoreErr(err)
			}
			for _, r := range page {
				after = r.Seq
				if r.Seq <= archivedTo {
					if h, ok := overlap[r.Seq]; ok && h != r.Hash && tamper == nil {
						tamper = &AuditTamperError{Seq: r.Seq, Kind: audit.KindModified,
							Detail: fmt.Sprintf("record %d in the store differs from its archived copy", r.Seq)}
					}
					continue
				}
				feed([]audit.Record{r})
			}
			if len(page) < audit.MaxLimit {
				break
			}
		}
		if head, err = c.access.AuditHead(ctx); err != nil {
			return v.Count(), false, mapStoreErr(err)
		}
		// Done when the head is reached, or when a pass read nothing new
		// although the head is further on: the records up to the head are
		// missing (a truncated trail, reported below), not yet to come (a
		// record and the head it moves are written in one transaction).
		if head.Seq <= after || after == before {
			break
		}
	}
	if nb, err := c.access.AuditBase(ctx); err == nil && nb != base {
		return v.Count(), true, nil
	}
	if tamper == nil {
		tamper = v.Finish()
	}
	var keyErr error // records sealed with keys not held: reported after any tampering
	if errors.Is(tamper, ErrAuditKeyUnknown) {
		keyErr, tamper = tamper, nil
	}
	if tamper == nil {
		last := v.Head()
		switch {
		case last.Seq < head.Seq:
			tamper = &AuditTamperError{Seq: last.Seq + 1, Kind: audit.KindDeleted,
				Detail: fmt.Sprintf("the trail ends at seq %d but its head is %s: records missing at the end (truncated)", last.Seq, head)}
		case last.Seq > head.Seq:
			tamper = &AuditTamperError{Seq: head.Seq + 1, Kind: audit.KindInserted,
				Detail: fmt.Sprintf("records follow the trail's head %s", head)}
		case last.Seq > 0 && last.Hash != head.Hash:
			tamper = &AuditTamperError{Seq: last.Seq, Kind: audit.KindModified,
				Detail: fmt.Sprintf("the last record (hash %s) is not the head %s: it was changed and re-hashed", last.Hash, head)}
		}
	}
	var cpTamper error
	if cc != nil {
		cpTamper = cc.Check(head)
		in.rep.Checkpoints = cc.Len()
	}
	in.rep.Records, in.rep.HeadSeq = v.Count(), head.Seq
	return v.Count(), false, errors.Join(tamper, cpTamper, cpErr, keyErr, corrupt)
}
