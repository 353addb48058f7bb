package memory

import (
	"slices"
	"time"

	"github.com/google/btree"

	"github.com/rediacc/rediacc/internal/sched"
)

// queueIndex holds the PENDING tasks as claim candidates, one B-tree per
// (machine, base priority) in FIFO order (sched.CompareFIFO), the shape of
// the SQLite engine's tasks_pending index: a claim reads the heads of the
// streams and walks as far into them as it takes tasks, never the whole
// backlog. Engine.set keeps it in step with Engine.pending.
type queueIndex struct {
	streams map[streamKey]*btree.BTreeG[sched.Candidate]
}

type streamKey struct {
	machine  string
	priority int
}

func lessFIFO(a, b sched.Candidate) bool { return sched.CompareFIFO(a, b) < 0 }

func (q *queueIndex) add(c sched.Candidate) {
	if q.streams == nil {
		q.streams = map[streamKey]*btree.BTreeG[sched.Candidate]{}
	}
	k := streamKey{c.Machine, c.Priority}
	tr := q.streams[k]
	if tr == nil {
		tr = btree.NewG(16, lessFIFO)
		q.streams[k] = tr
	}
	tr.ReplaceOrInsert(c)
}

func (q *queueIndex) remove(c sched.Candidate) {
	k := streamKey{c.Machine, c.Priority}
	if tr := q.streams[k]; tr != nil {
		tr.Delete(c)
		if tr.Len() == 0 {
			delete(q.streams, k)
		}
	}
}

// source is Claim's sched.Source over the index at now, with the stored
// fairness tags.
func (q *queueIndex) source(now time.Time, tags sched.Tags) *indexSource {
	return &indexSource{q: q, now: now, tags: sched.NewSliceSource(nil, now, tags)}
}

type indexSource struct {
	q    *queueIndex
	now  time.Time
	tags *sched.SliceSource // serves Tags only
}

var _ sched.Source = (*indexSource)(nil)

// first returns the first ready candidate of tr after `after` (all of
// them when after is nil).
func (s *indexSource) first(tr *btree.BTreeG[sched.Candidate], after *sched.Candidate) (sched.Candidate, bool) {
	if after == nil { // most heads are ready: no walk
		if c, ok := tr.Min(); ok && !c.ReadyAt.After(s.now) {
			return c, true
		}
	}
	var (
		got   sched.Candidate
		found bool
	)
	visit := func(c sched.Candidate) bool {
		if (after != nil && sched.CompareFIFO(c, *after) <= 0) || c.ReadyAt.After(s.now) {
			return true
		}
		got, found = c, true
		return false
	}
	if after == nil {
		tr.Ascend(visit)
	} else {
		tr.AscendGreaterOrEqual(*after, visit)
	}
	return got, found
}

// Heads implements sched.Source.
func (s *indexSource) Heads(only, skip []string) ([]sched.Candidate, error) {
	out := make([]sched.Candidate, 0, len(s.q.streams))
	head := func(k streamKey, tr *btree.BTreeG[sched.Candidate]) {
		if slices.Contains(skip, k.machine) {
			return
		}
		if c, ok := s.first(tr, nil); ok {
			out = append(out, c)
		}
	}
	if only == nil {
		for k, tr := range s.q.streams {
			head(k, tr)
		}
		return out, nil
	}
	for _, m := range only {
		for p := 1; p <= 5; p++ {
			k := streamKey{m, p}
			if tr := s.q.streams[k]; tr != nil {
				head(k, tr)
			}
		}
	}
	return out, nil
}

// Next implements sched.Source.
func (s *indexSource) Next(machine string, priority int, after sched.Candidate) (sched.Candidate, bool, error) {
	tr := s.q.streams[streamKey{machine, priority}]
	if tr == nil {
		return sched.Candidate{}, false, nil
	}
	c, ok := s.first(tr, &after)
	return c, ok, nil
}

// Tags implements sched.Source.
func (s *indexSource) Tags(teams, machines []string) (sched.Tags, error) {
	return s.tags.Tags(teams, machines)
}
