package rediacc

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/safefs"
	"github.com/rediacc/rediacc/internal/store"
	rssh "github.com/rediacc/rediacc/ssh"
)

// The result spool keeps the results a worker could not record in the
// store yet (the store is down, its disk is full): in memory, and, when the
// Client has a data dir, in DataDir/spool (one JSON file 0600 per attempt,
// written atomically), so that they survive a restart. A worker retries
// recording its own spooled results with backoff while it renews their
// leases (execution.go); a worker starting on the same data dir records
// the results left there by a worker that is gone before it rescues any
// task (adoptSpooled), and a rescue never takes back a task whose result
// is held (RescueRequest.Held).

// spooled is one kept result: the store.Finish that records it, with the
// audit records and the alert that go with it.
type spooled struct {
	Owner     string         `json:"owner"` // the worker whose lease the Finish needs
	TaskID    string         `json:"taskId"`
	RunID     string         `json:"runId"`
	Finish    store.Finish   `json:"finish"`
	Events    []audit.Record `json:"events,omitempty"`
	Alert     *Alert         `json:"alert,omitempty"`
	SpooledAt time.Time      `json:"spooledAt"`

	onDisk bool
}

// name is the entry's file name: the run id (unique per attempt).
func (e *spooled) name() string {
	id := e.RunID
	if id == "" {
		id = e.TaskID + ".0"
	}
	return id + ".json"
}

type resultSpool struct {
	dir string // "" = memory only

	mu   sync.Mutex
	held map[string]*spooled // by name()
}

func newResultSpool(dataDir string) *resultSpool {
	s := &resultSpool{held: map[string]*spooled{}}
	if dataDir != "" {
		s.dir = filepath.Join(dataDir, "spool")
	}
	return s
}

// put keeps e in memory and tries to write it to disk; the error says why
// it is in memory only.
func (s *resultSpool) put(e *spooled) error {
	s.mu.Lock()
	s.held[e.name()] = e
	s.mu.Unlock()
	if s.dir == "" || e.onDisk {
		return nil
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(s.dir, e.name(), b); err != nil {
		return err
	}
	e.onDisk = true
	return nil
}

// remove forgets e, on disk too.
func (s *resultSpool) remove(e *spooled) {
	s.mu.Lock()
	delete(s.held, e.name())
	s.mu.Unlock()
	if s.dir != "" {
		if err := os.Remove(filepath.Join(s.dir, e.name())); err == nil {
			syncDir(s.dir)
		}
	}
}

// holds lists the tasks whose results are held, for RescueRequest.Held.
func (s *resultSpool) holds() []store.Hold {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]store.Hold, 0, len(s.held))
	for _, e := range s.held {
		out = append(out, store.Hold{ID: e.TaskID, Owner: e.Owner})
	}
	return out
}

// orphans returns the entries on disk whose owner is gone (see ownerGone),
// keeping them in memory from now on: this worker records them. Unreadable
// files are reported and left alone.
func (s *resultSpool) orphans() ([]*spooled, []error) {
	if s.dir == "" {
		return nil, nil
	}
	if err := unsafeErr(safefs.CheckDir(s.dir)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, []error{fmt.Errorf("spool %s: %w", s.dir, err)}
	}
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, []error{err}
	}
	var out []*spooled
	var errs []error
	for _, de := range ents {
		name := de.Name()
		if !strings.HasSuffix(name, ".json") || !de.Type().IsRegular() {
			continue
		}
		s.mu.Lock()
		_, known := s.held[name]
		s.mu.Unlock()
		if known {
			continue
		}
		b, err := readFileNoFollow(filepath.Join(s.dir, name))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		e := &spooled{}
		if err := json.Unmarshal(b, e); err != nil || e.name() != name {
			errs = append(errs, fmt.Errorf("spool file %s is unreadable (%v): move it aside", filepath.Join(s.dir, name), err))
			continue
		}
		if !ownerGone(e.Owner) {
			continue
		}
		e.onDisk = true
		s.mu.Lock()
		if _, known := s.held[name]; !known {
			s.held[name] = e
			out = append(out, e)
		}
		s.mu.Unlock()
	}
	return out, errs
}

// writeFileAtomic writes name in dir (created 0700 and checked like the
// data dir, datadir.go) through a new temporary file (O_EXCL: a planted
// link is never followed), fsynced and renamed, mode 0600.
func writeFileAtomic(dir, name string, b []byte) error {
	if err := mkdirPrivate(dir); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+name+".*")
	if err != nil {
		return err
	}
	fail := func(err error) error {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		return fail(err)
	}
	if _, err := tmp.Write(b); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	syncDir(dir)
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// liveWorkers holds the ids of the workers running (Run) in this process.
var liveWorkers sync.Map

// ownerGone reports whether worker id owner no longer runs: not a live
// worker of this process, and either of this process (a closed Client) or
// a process on this host that no longer exists. A worker of another host
// is never taken for gone.
func ownerGone(owner string) bool {
	if _, live := liveWorkers.Load(owner); live {
		return false
	}
	parts := strings.Split(owner, "/")
	if len(parts) == 3 {
		host, _ := os.Hostname()
		if pid, err := strconv.Atoi(parts[1]); err == nil && parts[0] == host && pid == os.Getpid() {
			return true
		}
	}
	return ownerDead(owner)
}

// remoteID is how an attempt records its process's identity
// ("boot-id/start-time"); "" when unknown.
func remoteID(r rssh.Remote) string {
	if r.BootID == "" && r.StartTime == "" {
		return ""
	}
	return r.BootID + "/" + r.StartTime
}

// remoteOf is the process an attempt record names, for Pool.Settle.
func remoteOf(a store.Attempt) rssh.Remote {
	r := rssh.Remote{PGID: a.PGID}
	r.BootID, r.StartTime, _ = strings.Cut(a.RemoteID, "/")
	return r
}
