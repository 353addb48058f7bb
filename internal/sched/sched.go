// Package sched is the claim rule of the queue, defined once and used by
// every store engine: which ready tasks a worker gets next, whether a
// machine has room for them, and why a task that is not taken waits (Hold).
//
// # Order
//
// A claim takes tasks one at a time. Each time, among the candidates the
// rule admits (see Holds below), it takes the first by:
//
//  1. effective priority, ascending (EffectivePriority: the base priority
//     raised one level per Policy.Aging of waiting since EnqueuedAt);
//  2. the team's start tag, ascending: teams share each level by weighted
//     fair queueing (start-time fair queueing, Goyal, Vin and Cheng,
//     SIGCOMM 1996), so claims rotate between teams in proportion to
//     their weights (Policy.Weights, default 1 each), see Tags; a team's
//     tasks of every level count against its share;
//  3. within one team, the machine served least recently first (round
//     robin between the team's machines), so one machine's backlog does
//     not hold back the team's other machines;
//  4. FIFO: EnqueuedAt, then Seq (creation order), then ID (within one
//     machine, and between machines served equally recently).
//
// Priority always comes first: fairness orders tasks of one effective
// priority only.
//
// # Holds
//
// A candidate is held back (Policy.Check says why, and until when) when:
//
//   - it is not ready: ReadyAt is after Now (a retry delay);
//   - its machine is outside Policy.Machines (the worker may not run it);
//   - its machine is busy (Policy.BusyMachines, above its load thresholds)
//     and its effective priority is BusyFrom (3) or lower (3..5). The gate
//     has an end: aging lifts a waiting task to priority 2, which the gate
//     lets through, after (priority-2) aging intervals, and Policy.MaxHold,
//     when set, lets any task through once it has waited that long;
//   - its machine is full: running[m] counts the ASSIGNED+PROCESSING tasks
//     of machine m across all workers (and those taken so far in this
//     claim); with PerMachine > 0 a task of base priority 1 needs running[m]
//     < PerMachine;
//   - the machine's only free slot is the one held back for priority 1:
//     with ReserveCritical and PerMachine >= 2, a task of base priority
//     2..5 needs running[m] < PerMachine-1, until it is fully aged: once it
//     has waited priority × Aging (one full interval at effective priority
//     1) it may take the reserved slot too, so a constant stream of
//     critical work cannot starve it.
//
// # No starvation
//
// With Aging > 0 every ready task is eventually taken while workers keep
// claiming: aging raises it to effective priority 1 within (priority-1)
// intervals; the busy gate opens by then; the reserved slot opens one
// interval later; at level 1 its team is served within a bounded number of
// claims (a team of weight w waits for at most about Σ other weights / w
// claims of the others per claim of its own), its machine within the
// team's other machines' turns, and within its machine it is first (FIFO)
// among tasks enqueued later. The package tests prove these bounds by
// simulation with an injected clock.
//
// # Engines
//
// An engine gives Claim a Source: the machines with ready PENDING tasks,
// each machine's ready tasks of one base priority in FIFO order, and the
// stored Tags. Claim reads only the head of each (machine, priority)
// stream and one more row per task taken, so an engine can serve a claim
// from an index without loading the backlog. The engine stores the changed
// Tags in the claim's transaction.
//
// # Adding a gate
//
// A new reason to hold tasks back (a maintenance window, a drained machine,
// a paused team queue, a previous attempt whose fate is unknown) is a Hold
// constant, the Policy field that carries its state, and a case in Check
// returning the hold and, when it ends by time alone, until when. Claim
// drops a (machine, priority) stream at its first held head, so a hold
// must be monotone along the stream: if it holds a task, it holds every
// task of the same machine and base priority enqueued later (a hold by
// machine, team, base priority or age qualifies). The root package turns
// each Hold into a WaitReason (wait.go).
//
// The package does no I/O and reads no clock: every instant is passed in.
package sched

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Candidate is what the rule needs to know about a PENDING task.
type Candidate struct {
	ID         string
	Seq        int64  // creation sequence; the stable tie-break
	Team       string // the team's immutable id
	Machine    string // the machine's immutable id
	Priority   int    // base priority, 1 (critical) .. 5 (minimal)
	EnqueuedAt time.Time
	ReadyAt    time.Time
}

// Policy is one claim's parameters (the scheduling part of a store.ClaimRequest).
type Policy struct {
	Now             time.Time
	Max             int // tasks to take at most; <= 0 takes nothing
	PerMachine      int // 0 = unbounded
	ReserveCritical bool
	Aging           time.Duration // <= 0 disables aging
	Machines        []string      // non-nil restricts the claim to these machines
	// BusyMachines are machines above their load thresholds: they take
	// tasks of effective priority BusyFrom..5 only once the gate ends for
	// them (see the package doc).
	BusyMachines []string
	// MaxHold, when > 0, ends the busy gate for a task that has waited
	// this long since EnqueuedAt, whatever its priority.
	MaxHold time.Duration
	// Weights are the teams' shares within a priority level (team id →
	// weight, 1..MaxWeight). A team not listed, or with a weight < 1, has
	// weight 1; weights above MaxWeight count as MaxWeight.
	Weights map[string]int
	// Gates are the drains, pauses and maintenance windows in force at
	// Now (gate.go); engines read them in the claim's transaction.
	Gates Gates
}

// BusyFrom is the highest priority (numerically the lowest level) a busy
// machine holds back: tasks of effective priority BusyFrom..5 wait while
// their machine is busy (until the gate ends for them).
const BusyFrom = 3

// MaxWeight is the largest team weight.
const MaxWeight = 1000

// Quantum is the virtual time a team of weight 1 spends per task taken; a
// team of weight w spends Quantum/w. It is divisible by every weight up
// to 16, so small weights share exactly.
const Quantum = 720720

// Stride is the virtual time a team of weight w spends per task taken.
func Stride(w int) int64 {
	w = min(max(w, 1), MaxWeight)
	return Quantum / int64(w)
}

// Weight returns team's weight under p (see Policy.Weights).
func (p Policy) Weight(team string) int {
	return min(max(p.Weights[team], 1), MaxWeight)
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

// agedAt is the instant a task of base priority enqueued at enq has waited
// n aging intervals; zero when aging is off.
func agedAt(enq time.Time, n int, aging time.Duration) time.Time {
	if aging <= 0 {
		return time.Time{}
	}
	return enq.Add(time.Duration(max(n, 0)) * aging)
}

// Hold says why the rule holds a candidate back.
type Hold int

// Holds, in the order Check tests them.
const (
	HoldNone     Hold = iota // not held: the candidate may be taken
	HoldNotReady             // ReadyAt is after Now (a retry delay)
	HoldMachine              // its machine is outside Policy.Machines
	HoldBusy                 // its machine is busy and its effective priority is BusyFrom..5
	HoldFull                 // its machine has no free slot
	HoldReserved             // its machine's only free slot is held for priority 1
	HoldDraining             // its machine is draining (Policy.Gates)
	HoldPaused               // its team's queue is paused (Policy.Gates)
	HoldWindow               // its machine's maintenance windows are closed (Policy.Gates)
)

var holdNames = [...]string{"none", "not-ready", "machine", "busy", "full", "reserved", "draining", "paused", "window"}

func (h Hold) String() string {
	if h >= 0 && int(h) < len(holdNames) {
		return holdNames[h]
	}
	return fmt.Sprintf("Hold(%d)", int(h))
}

// Busy reports whether machine is in p.BusyMachines.
func (p Policy) Busy(machine string) bool { return slices.Contains(p.BusyMachines, machine) }

// BusyGateEnd is when the busy gate ends for c: the earlier of the instant
// aging lifts it to effective priority BusyFrom-1 and EnqueuedAt+MaxHold.
// Zero when it has no end (aging and MaxHold off). A task of base priority
// below BusyFrom is never held: its gate ended at EnqueuedAt.
func (p Policy) BusyGateEnd(c Candidate) time.Time {
	if c.Priority < BusyFrom {
		return c.EnqueuedAt
	}
	end := agedAt(c.EnqueuedAt, c.Priority-BusyFrom+1, p.Aging)
	if p.MaxHold > 0 {
		if h := c.EnqueuedAt.Add(p.MaxHold); end.IsZero() || h.Before(end) {
			end = h
		}
	}
	return end
}

// ReserveOpensAt is when c, of base priority 2..5, may take a machine's
// reserved slot: once it has waited Priority × Aging. Zero when aging is off
// (never); EnqueuedAt for priority 1 (always).
func (p Policy) ReserveOpensAt(c Candidate) time.Time {
	if c.Priority <= 1 {
		return c.EnqueuedAt
	}
	return agedAt(c.EnqueuedAt, c.Priority, p.Aging)
}

// reached reports whether instant end (zero: never) has come by now.
func reached(end, now time.Time) bool { return !end.IsZero() && !now.Before(end) }

// Check reports whether p holds c back when its machine runs `running`
// tasks, and why; until is when that hold ends by time alone (zero when
// it ends only when something else changes, such as a slot freeing, or
// never): ReadyAt for HoldNotReady, BusyGateEnd for HoldBusy,
// ReserveOpensAt for HoldReserved.
func (p Policy) Check(c Candidate, running int) (h Hold, until time.Time) {
	switch {
	case c.ReadyAt.After(p.Now):
		return HoldNotReady, c.ReadyAt
	case p.Machines != nil && !slices.Contains(p.Machines, c.Machine):
		return HoldMachine, time.Time{}
	}
	if h, until := p.gate(c); h != HoldNone { // gate.go
		return h, until
	}
	switch {
	case p.Busy(c.Machine) && EffectivePriority(c.Priority, c.EnqueuedAt, p.Now, p.Aging) >= BusyFrom:
		if end := p.BusyGateEnd(c); !reached(end, p.Now) {
			return HoldBusy, end
		}
	}
	return p.slots(c, running)
}

// slots is Check's per-machine part.
func (p Policy) slots(c Candidate, running int) (Hold, time.Time) {
	if p.PerMachine <= 0 {
		return HoldNone, time.Time{}
	}
	if running >= p.PerMachine {
		return HoldFull, time.Time{}
	}
	if c.Priority != 1 && p.ReserveCritical && p.PerMachine >= 2 && running >= p.PerMachine-1 {
		if opens := p.ReserveOpensAt(c); !reached(opens, p.Now) {
			return HoldReserved, opens
		}
	}
	return HoldNone, time.Time{}
}

// TeamTag is a team's fairness state: the start and finish tags (virtual
// time) of its last task taken.
type TeamTag struct {
	Start, Finish int64
}

// Tags are the fairness state an engine keeps between claims.
//
// Teams: start-time fair queueing. The virtual time Clock is the start tag
// of the last task taken (the largest Start of any team). A task of team T
// starts at S = max(Clock, T.Finish); the team whose next task starts
// first is served; then T.Start = S, T.Finish = S + Stride(weight) and
// Clock = S. A team that was idle starts at the current Clock (no credit
// for the time it was away); a team that keeps work queued gets claims in
// proportion to its weight.
//
// Machines: Stamps[m] orders machine m's last service (larger is more
// recent); Stamp is the largest. A machine taking a task gets Stamp+1.
type Tags struct {
	Clock  int64
	Teams  map[string]TeamTag
	Stamp  int64
	Stamps map[string]int64
}

// Source is an engine's queue as Claim reads it.
type Source interface {
	// Heads returns the first ready (ReadyAt <= the claim's Now) PENDING
	// candidate, in FIFO order (EnqueuedAt, Seq, ID), of every (machine,
	// base priority) that has one, in any order: of the machines in only
	// (nil: of every machine), except those in skip (full machines, whose
	// tasks the claim cannot take). Extra candidates are harmless.
	Heads(only, skip []string) ([]Candidate, error)
	// Next returns the first ready PENDING candidate of machine and base
	// priority that comes after `after` in FIFO order.
	Next(machine string, priority int, after Candidate) (Candidate, bool, error)
	// Tags returns the stored Clock and Stamp, and the tags of the teams
	// and machines named (those without stored tags may be left out).
	Tags(teams, machines []string) (Tags, error)
}

// Result is what a claim took, and the fairness state it changed.
type Result struct {
	// Picked are the candidates taken, in the order taken.
	Picked []Candidate
	// Clock and Stamp are the new global tags; Teams and Stamps hold the
	// changed entries only (those of the teams and machines served). An
	// engine stores them in the claim's transaction.
	Clock  int64
	Teams  map[string]TeamTag
	Stamp  int64
	Stamps map[string]int64
}

// stream is one (machine, base priority) FIFO of ready candidates.
type stream struct {
	head Candidate
	dead bool
	m    *machine // head.Machine's state in the claim
	tag  *TeamTag // head.Team's tag in the claim (claim.team)

	// What the claim knows of head: admitted by Policy.Check with m.run
	// at ran (Check depends on nothing else that changes during a
	// claim), and its effective priority.
	admitted bool
	ran      int
	eff      int
}

// setHead makes c the stream's head.
func (s *stream) setHead(c Candidate, cl *claim) {
	s.head, s.admitted = c, false
	s.tag = cl.team(c.Team)
}

// machine is a machine's state during a claim: its running count (the
// caller's, plus the tasks taken so far) and its stamp.
type machine struct {
	run   int
	stamp int64
}

// claim is the state of one Claim: the tags, and per-machine and per-team
// state reached through pointers, so that choosing among the streams for
// every task taken reads no map.
type claim struct {
	st    Tags
	teams map[string]*TeamTag // mirrors st.Teams (zero tags for teams without one)
}

func (cl *claim) team(t string) *TeamTag {
	x := cl.teams[t]
	if x == nil {
		v := cl.st.Teams[t]
		x = &v
		cl.teams[t] = x
	}
	return x
}

// setTeam stores team t's tag.
func (cl *claim) setTeam(t string, tt TeamTag) {
	cl.st.Teams[t] = tt
	*cl.team(t) = tt
}

// Claim applies the rule: it takes up to p.Max candidates from src given
// running (ASSIGNED+PROCESSING per machine; not modified) and returns them
// with the tags to store.
func Claim(p Policy, running map[string]int, src Source) (Result, error) {
	if p.Max <= 0 {
		return Result{}, nil
	}
	skip := slices.Clone(p.Gates.Draining) // draining: none of its tasks may be taken
	if p.PerMachine > 0 {
		for m, n := range running {
			if n >= p.PerMachine {
				skip = append(skip, m) // full for everyone: no need to read its tasks
			}
		}
		slices.Sort(skip)
	}
	heads, err := src.Heads(p.Machines, skip)
	if err != nil {
		return Result{}, err
	}
	all := make([]stream, 0, len(heads)) // one allocation for the streams
	streams := make([]*stream, 0, len(heads))
	for _, c := range heads {
		if p.Machines == nil || slices.Contains(p.Machines, c.Machine) {
			all = append(all, stream{head: c})
			streams = append(streams, &all[len(all)-1])
		}
	}
	// By machine and priority; of the heads of one stream (a source may
	// give extra ones) the first given stays.
	slices.SortStableFunc(streams, func(a, b *stream) int {
		if c := strings.Compare(a.head.Machine, b.head.Machine); c != 0 {
			return c
		}
		return cmp.Compare(a.head.Priority, b.head.Priority)
	})
	streams = slices.CompactFunc(streams, func(a, b *stream) bool {
		return a.head.Machine == b.head.Machine && a.head.Priority == b.head.Priority
	})
	res := Result{Teams: map[string]TeamTag{}, Stamps: map[string]int64{}}
	if len(streams) == 0 {
		return res, nil
	}
	st, err := loadTags(src, streams)
	if err != nil {
		return Result{}, err
	}
	cl := &claim{st: st, teams: make(map[string]*TeamTag, len(st.Teams))}
	ms := make([]machine, 0, len(streams))
	for i, s := range streams { // sorted by machine
		if i > 0 && streams[i-1].head.Machine == s.head.Machine {
			s.m = streams[i-1].m
		} else {
			m := s.head.Machine
			ms = append(ms, machine{run: running[m], stamp: st.Stamps[m]})
			s.m = &ms[len(ms)-1]
		}
		s.setHead(s.head, cl)
	}
	for len(res.Picked) < p.Max {
		best, err := p.best(streams, cl, src)
		if err != nil {
			return Result{}, err
		}
		if best == nil {
			break
		}
		c := best.head
		res.Picked = append(res.Picked, c)
		best.m.run++
		s := max(cl.st.Clock, best.tag.Finish)
		tt := TeamTag{Start: s, Finish: s + Stride(p.Weight(c.Team))}
		cl.setTeam(c.Team, tt)
		res.Teams[c.Team] = tt
		cl.st.Clock = s
		cl.st.Stamp++
		best.m.stamp = cl.st.Stamp
		cl.st.Stamps[c.Machine], res.Stamps[c.Machine] = cl.st.Stamp, cl.st.Stamp
		next, ok, err := src.Next(c.Machine, c.Priority, c)
		if err != nil {
			return Result{}, err
		}
		if best.dead = !ok; ok {
			if err := cl.ensure(src, next); err != nil {
				return Result{}, err
			}
			best.setHead(next, cl)
		}
	}
	res.Clock, res.Stamp = cl.st.Clock, cl.st.Stamp
	return res, nil
}

// loadTags reads the tags of the streams' teams and machines.
func loadTags(src Source, streams []*stream) (Tags, error) {
	teams, machines := make([]string, 0, len(streams)), make([]string, 0, len(streams))
	for _, s := range streams {
		teams, machines = append(teams, s.head.Team), append(machines, s.head.Machine)
	}
	slices.Sort(teams)
	slices.Sort(machines)
	st, err := src.Tags(slices.Compact(teams), slices.Compact(machines))
	if st.Teams == nil {
		st.Teams = map[string]TeamTag{}
	}
	if st.Stamps == nil {
		st.Stamps = map[string]int64{}
	}
	return st, err
}

// ensure loads c's team tag when a stream turned up a team not seen yet
// (a machine's tasks normally all belong to its team).
func (cl *claim) ensure(src Source, c Candidate) error {
	if _, ok := cl.st.Teams[c.Team]; ok {
		return nil
	}
	more, err := src.Tags([]string{c.Team}, nil)
	if err != nil {
		return err
	}
	if tt, ok := more.Teams[c.Team]; ok {
		cl.setTeam(c.Team, tt)
	}
	return nil
}

// best returns the stream whose head the rule takes next, or nil. Streams
// whose head is held are dead for the rest of the claim: the holds are
// monotone along a stream (later heads are younger, and running counts
// only grow during a claim). A head admitted once stays admitted while
// its machine's running count is unchanged (Check reads nothing else that
// changes during a claim), so a task taken re-checks only the streams of
// its machine.
func (p Policy) best(streams []*stream, cl *claim, src Source) (*stream, error) {
	var best *stream
	for _, s := range streams {
		for !s.dead {
			if s.admitted && s.ran == s.m.run {
				break
			}
			h, _ := p.Check(s.head, s.m.run)
			if h == HoldNone {
				s.admitted, s.ran = true, s.m.run
				s.eff = EffectivePriority(s.head.Priority, s.head.EnqueuedAt, p.Now, p.Aging)
				break
			}
			if h != HoldNotReady {
				s.dead = true
				break
			}
			// A source returned a task not ready yet: skip it.
			next, ok, err := src.Next(s.head.Machine, s.head.Priority, s.head)
			if err != nil {
				return nil, err
			}
			if s.dead = !ok; ok {
				s.setHead(next, cl)
			}
		}
		if !s.dead && (best == nil || cl.before(s, best)) {
			best = s
		}
	}
	return best, nil
}

// before reports whether the head of a comes before the head of b in the
// order (see the package doc): effective priority, the team's start tag,
// the team, the machine's stamp, FIFO, the machine.
func (cl *claim) before(a, b *stream) bool {
	if a.eff != b.eff {
		return a.eff < b.eff
	}
	if sa, sb := max(cl.st.Clock, a.tag.Finish), max(cl.st.Clock, b.tag.Finish); sa != sb {
		return sa < sb
	}
	if a.head.Team != b.head.Team {
		return a.head.Team < b.head.Team
	}
	if a.m.stamp != b.m.stamp {
		return a.m.stamp < b.m.stamp
	}
	if c := compareFIFO(&a.head, &b.head); c != 0 {
		return c < 0
	}
	return a.head.Machine < b.head.Machine
}

// CompareFIFO is the order within one machine and priority: EnqueuedAt,
// then Seq, then ID.
func CompareFIFO(a, b Candidate) int { return compareFIFO(&a, &b) }

func compareFIFO(a, b *Candidate) int {
	if c := a.EnqueuedAt.Compare(b.EnqueuedAt); c != 0 {
		return c
	}
	if a.Seq != b.Seq {
		return cmp.Compare(a.Seq, b.Seq)
	}
	return cmp.Compare(a.ID, b.ID)
}

// SliceSource serves Claim from candidates in memory (the in-memory engine,
// tests). Candidates not ready at now are left out.
type SliceSource struct {
	byStream map[streamKey][]Candidate // FIFO each
	tags     Tags
}

type streamKey struct {
	machine  string
	priority int
}

var _ Source = (*SliceSource)(nil)

// NewSliceSource indexes cs (not modified) for a claim at now, with the
// stored tags.
func NewSliceSource(cs []Candidate, now time.Time, tags Tags) *SliceSource {
	s := &SliceSource{byStream: map[streamKey][]Candidate{}, tags: tags}
	for _, c := range cs {
		if !c.ReadyAt.After(now) {
			k := streamKey{c.Machine, c.Priority}
			s.byStream[k] = append(s.byStream[k], c)
		}
	}
	for _, q := range s.byStream {
		slices.SortFunc(q, CompareFIFO)
	}
	return s
}

// Heads implements Source.
func (s *SliceSource) Heads(only, skip []string) ([]Candidate, error) {
	var out []Candidate
	for k, q := range s.byStream {
		if (only == nil || slices.Contains(only, k.machine)) && !slices.Contains(skip, k.machine) {
			out = append(out, q[0])
		}
	}
	return out, nil
}

// Next implements Source.
func (s *SliceSource) Next(machine string, priority int, after Candidate) (Candidate, bool, error) {
	q := s.byStream[streamKey{machine, priority}]
	i, _ := slices.BinarySearchFunc(q, after, CompareFIFO)
	for i < len(q) && CompareFIFO(q[i], after) <= 0 {
		i++
	}
	if i >= len(q) {
		return Candidate{}, false, nil
	}
	return q[i], true, nil
}

// Tags implements Source: the tags given to NewSliceSource.
func (s *SliceSource) Tags(teams, machines []string) (Tags, error) {
	out := Tags{Clock: s.tags.Clock, Stamp: s.tags.Stamp, Teams: make(map[string]TeamTag, len(teams)), Stamps: make(map[string]int64, len(machines))}
	for _, t := range teams {
		if v, ok := s.tags.Teams[t]; ok {
			out.Teams[t] = v
		}
	}
	for _, m := range machines {
		if v, ok := s.tags.Stamps[m]; ok {
			out.Stamps[m] = v
		}
	}
	return out, nil
}

// Pick is Claim over candidates in memory with no stored tags (every team
// and machine starts even); running is not modified, nor is cs.
func Pick(cs []Candidate, running map[string]int, p Policy) []Candidate {
	res, _ := Claim(p, running, NewSliceSource(cs, p.Now, Tags{}))
	return res.Picked
}

// Apply stores a claim's changed tags into t, as an engine's tables would
// (for engines that keep the tags in memory).
func (t *Tags) Apply(r Result) {
	if len(r.Picked) == 0 {
		return
	}
	if t.Teams == nil {
		t.Teams = map[string]TeamTag{}
	}
	if t.Stamps == nil {
		t.Stamps = map[string]int64{}
	}
	t.Clock, t.Stamp = r.Clock, r.Stamp
	for k, v := range r.Teams {
		t.Teams[k] = v
	}
	for k, v := range r.Stamps {
		t.Stamps[k] = v
	}
}
