// Package sched is the claim rule of the queue, defined once and used by
// every store engine: which ready task a worker gets next, and whether a
// machine has room for it.
//
// Order: effective priority ascending (see EffectivePriority), then
// EnqueuedAt ascending (FIFO within a level), then Seq (creation order) and
// ID as a stable tie-break.
//
// Per-machine limit: running[m] counts the ASSIGNED+PROCESSING tasks of
// machine m across all workers. With PerMachine > 0 a task of base priority 1
// may be taken while running[m] < PerMachine; a task of base priority 2..5
// only while running[m] < PerMachine-1 when ReserveCritical is set and
// PerMachine >= 2 (one slot held back for priority 1; aging does not give a
// task access to it), else while running[m] < PerMachine. PerMachine 0 means
// no bound.
//
// Busy machines: a machine listed in Policy.BusyMachines (above its load
// thresholds) takes no task of base priority BusyFrom (3) or lower
// (3..5); such tasks are skipped as if not ready, and aging does not lift
// them past the rule. Tasks of priority 1..2 on a busy machine are claimed
// as usual (still within its per-machine limit).
//
// The package does no I/O and reads no clock: every instant is passed in.
package sched

import (
	"container/heap"
	"slices"
	"time"
)

// Candidate is what the rule needs to know about a PENDING task.
type Candidate struct {
	ID         string
	Seq        int64 // creation sequence; the stable tie-break
	Machine    string
	Priority   int // base priority, 1 (critical) .. 5 (minimal)
	EnqueuedAt time.Time
	ReadyAt    time.Time
}

// Policy is one claim's parameters (the scheduling part of a store.ClaimRequest).
type Policy struct {
	Now             time.Time
	Max             int // tasks to pick at most; <= 0 picks nothing
	PerMachine      int // 0 = unbounded
	ReserveCritical bool
	Aging           time.Duration // <= 0 disables aging
	Machines        []string      // non-nil restricts the claim to these machines
	BusyMachines    []string      // machines that take only base priority < BusyFrom
}

// BusyFrom is the highest priority (numerically the lowest level) a busy
// machine refuses: tasks of base priority BusyFrom..5 wait while their
// machine is busy.
const BusyFrom = 3

// Busy reports whether a task of base priority on machine is held back
// because the machine is busy.
func (p Policy) Busy(machine string, priority int) bool {
	return priority >= BusyFrom && slices.Contains(p.BusyMachines, machine)
}

// EffectivePriority is priority raised one level per aging of waiting since
// enqueuedAt, and never above 1: max(1, priority - floor((now-enqueuedAt)/aging)).
// A negative wait counts as 0; aging <= 0 returns priority unchanged.
func EffectivePriority(priority int, enqueuedAt, now time.Time, aging time.Duration) int {
	if aging <= 0 {
		return priority
	}
	wait := now.Sub(enqueuedAt)
	if wait <= 0 {
		return priority
	}
	levels := int64(wait / aging) // floor: both operands are positive
	if levels >= int64(priority) {
		return 1
	}
	return max(1, priority-int(levels))
}

// Compare orders a before b (negative), after b (positive) or equal (0)
// under the scheduling order at instant now.
func Compare(a, b Candidate, now time.Time, aging time.Duration) int {
	pa := EffectivePriority(a.Priority, a.EnqueuedAt, now, aging)
	pb := EffectivePriority(b.Priority, b.EnqueuedAt, now, aging)
	if pa != pb {
		return cmpInt(pa, pb)
	}
	return tieBreak(a, b)
}

// tieBreak orders candidates of the same effective priority.
func tieBreak(a, b Candidate) int {
	switch {
	case !a.EnqueuedAt.Equal(b.EnqueuedAt):
		return a.EnqueuedAt.Compare(b.EnqueuedAt)
	case a.Seq != b.Seq:
		return cmpInt(a.Seq, b.Seq)
	case a.ID < b.ID:
		return -1
	case a.ID > b.ID:
		return 1
	}
	return 0
}

func cmpInt[T int | int64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Sort sorts cs in scheduling order at instant now.
func Sort(cs []Candidate, now time.Time, aging time.Duration) {
	slices.SortStableFunc(cs, func(a, b Candidate) int { return Compare(a, b, now, aging) })
}

// Admits reports whether a machine running `running` tasks has a slot for a
// task of base priority `priority` (see the package doc).
func Admits(priority, running, perMachine int, reserveCritical bool) bool {
	if perMachine <= 0 {
		return true
	}
	limit := perMachine
	if priority != 1 && reserveCritical && perMachine >= 2 {
		limit = perMachine - 1
	}
	return running < limit
}

// Eligible reports whether c may be claimed at all under p: it is ready
// (ReadyAt <= Now), its machine is allowed, and its machine is not busy
// unless c is of priority 1..2.
func (p Policy) Eligible(c Candidate) bool {
	if c.ReadyAt.After(p.Now) {
		return false
	}
	if p.Machines != nil && !slices.Contains(p.Machines, c.Machine) {
		return false
	}
	return !p.Busy(c.Machine, c.Priority)
}

// Picker applies the rule to candidates offered in scheduling order, so an
// engine can stream them (for example from an ORDER BY query) and stop as
// soon as Done reports true.
type Picker struct {
	p       Policy
	running map[string]int
	picked  []Candidate
}

// NewPicker starts a claim under p. running holds the ASSIGNED+PROCESSING
// count of each machine; it is copied, not modified.
func NewPicker(p Policy, running map[string]int) *Picker {
	r := make(map[string]int, len(running))
	for m, n := range running {
		r[m] = n
	}
	return &Picker{p: p, running: r}
}

// Offer takes c if it is eligible and its machine has a slot for it, and
// reports whether it was taken. Candidates must be offered in scheduling
// order; Offer takes nothing once Done.
func (pk *Picker) Offer(c Candidate) bool {
	if pk.Done() || !pk.p.Eligible(c) {
		return false
	}
	if !Admits(c.Priority, pk.running[c.Machine], pk.p.PerMachine, pk.p.ReserveCritical) {
		return false
	}
	pk.running[c.Machine]++
	pk.picked = append(pk.picked, c)
	return true
}

// Done reports whether Max candidates were taken.
func (pk *Picker) Done() bool { return len(pk.picked) >= pk.p.Max }

// Picked returns the candidates taken so far, in the order taken.
func (pk *Picker) Picked() []Candidate { return pk.picked }

// Running returns the running count of machine m including the tasks taken.
func (pk *Picker) Running(m string) int { return pk.running[m] }

// Pick returns up to p.Max candidates in scheduling order, skipping those
// that are not ready, not on an allowed machine, of priority 3..5 on a busy
// machine, or whose machine is full.
// running (ASSIGNED+PROCESSING per machine) is not modified, nor is cs.
//
// Candidates are taken from a heap, so a pick of k among n costs
// O(n + k' log n), k' being the candidates looked at, not a full sort.
func Pick(cs []Candidate, running map[string]int, p Policy) []Candidate {
	if p.Max <= 0 {
		return nil
	}
	h := &candHeap{}
	for _, c := range cs {
		if p.Eligible(c) {
			h.items = append(h.items, keyed{c, EffectivePriority(c.Priority, c.EnqueuedAt, p.Now, p.Aging)})
		}
	}
	heap.Init(h)
	pk := NewPicker(p, running)
	for !pk.Done() && h.Len() > 0 {
		pk.Offer(heap.Pop(h).(keyed).Candidate)
	}
	return pk.Picked()
}

// keyed caches a candidate's effective priority for the heap.
type keyed struct {
	Candidate
	eff int
}

type candHeap struct{ items []keyed }

func (h *candHeap) Len() int { return len(h.items) }
func (h *candHeap) Less(i, j int) bool {
	a, b := &h.items[i], &h.items[j]
	if a.eff != b.eff {
		return a.eff < b.eff
	}
	return tieBreak(a.Candidate, b.Candidate) < 0
}
func (h *candHeap) Swap(i, j int) { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *candHeap) Push(x any)    { h.items = append(h.items, x.(keyed)) }
func (h *candHeap) Pop() any {
	n := len(h.items) - 1
	x := h.items[n]
	h.items = h.items[:n]
	return x
}
