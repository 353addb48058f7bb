package sched

import (
	"cmp"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// tc builds a candidate of team, enqueued and ready at t0+at.
func tc(id string, seq int64, team, machine string, prio int, at time.Duration) Candidate {
	cd := c(id, seq, machine, prio, at)
	cd.Team = team
	return cd
}

func TestCheck(t *testing.T) {
	const aging = 10 * time.Minute
	now := t0.Add(time.Hour)
	p := Policy{Now: now, PerMachine: 3, ReserveCritical: true, Aging: aging, BusyMachines: []string{"hot"}, Machines: []string{"hot", "m"}}
	tests := []struct {
		name    string
		c       Candidate
		running int
		p       Policy
		hold    Hold
		until   time.Time
	}{
		{"free", c("x", 1, "m", 3, time.Hour), 0, p, HoldNone, time.Time{}},
		{"retry delay", Candidate{ID: "x", Machine: "m", Priority: 3, EnqueuedAt: now, ReadyAt: now.Add(time.Minute)}, 0, p, HoldNotReady, now.Add(time.Minute)},
		{"other machine", c("x", 1, "elsewhere", 1, time.Hour), 0, p, HoldMachine, time.Time{}},
		{"busy, gate ends with aging", c("x", 1, "hot", 5, time.Hour), 0, p, HoldBusy, now.Add(3 * aging)},
		{"busy, priority 2 passes", c("x", 1, "hot", 2, time.Hour), 0, p, HoldNone, time.Time{}},
		{"busy, aged to 2 passes", c("x", 1, "hot", 4, time.Hour-2*aging), 0, p, HoldNone, time.Time{}},
		{"busy, one ns short", c("x", 1, "hot", 4, time.Hour-2*aging+1), 0, p, HoldBusy, now.Add(1)},
		{"busy, no aging: no end", c("x", 1, "hot", 3, 0), 0, Policy{Now: now, BusyMachines: []string{"hot"}}, HoldBusy, time.Time{}},
		{"busy, MaxHold ends it", c("x", 1, "hot", 3, 0), 0, Policy{Now: now, BusyMachines: []string{"hot"}, MaxHold: 2 * time.Hour}, HoldBusy, t0.Add(2 * time.Hour)},
		{"busy, MaxHold passed", c("x", 1, "hot", 3, 0), 0, Policy{Now: now, BusyMachines: []string{"hot"}, MaxHold: time.Hour}, HoldNone, time.Time{}},
		{"busy, MaxHold before aging", c("x", 1, "hot", 5, time.Hour), 0, Policy{Now: now, Aging: aging, BusyMachines: []string{"hot"}, MaxHold: time.Minute}, HoldBusy, now.Add(time.Minute)},
		{"full", c("x", 1, "m", 1, time.Hour), 3, p, HoldFull, time.Time{}},
		{"reserved", c("x", 1, "m", 3, time.Hour), 2, p, HoldReserved, now.Add(3 * aging)},
		{"reserved, fully aged", c("x", 1, "m", 3, time.Hour-3*aging), 2, p, HoldNone, time.Time{}},
		{"reserved, critical", c("x", 1, "m", 1, time.Hour), 2, p, HoldNone, time.Time{}},
		{"reserved, no aging: no end", c("x", 1, "m", 2, 0), 2, Policy{Now: now, PerMachine: 3, ReserveCritical: true}, HoldReserved, time.Time{}},
		{"reserve ignored with PerMachine 1", c("x", 1, "m", 5, time.Hour), 0, Policy{Now: now, PerMachine: 1, ReserveCritical: true}, HoldNone, time.Time{}},
		{"no reserve", c("x", 1, "m", 5, time.Hour), 2, Policy{Now: now, PerMachine: 3}, HoldNone, time.Time{}},
		{"unbounded", c("x", 1, "m", 5, time.Hour), 1000, Policy{Now: now}, HoldNone, time.Time{}},
	}
	for _, tt := range tests {
		h, until := tt.p.Check(tt.c, tt.running)
		if h != tt.hold || !until.Equal(tt.until) {
			t.Errorf("%s: Check = %v until %v, want %v until %v", tt.name, h, until, tt.hold, tt.until)
		}
	}
	if HoldBusy.String() != "busy" || Hold(42).String() != "Hold(42)" {
		t.Errorf("Hold names: %v %v", HoldBusy, Hold(42))
	}
}

func TestStrideAndWeight(t *testing.T) {
	for w := 1; w <= 16; w++ {
		if Stride(w)*int64(w) != Quantum {
			t.Errorf("Stride(%d) = %d is not exact", w, Stride(w))
		}
	}
	if Stride(0) != Quantum || Stride(-3) != Quantum || Stride(MaxWeight+5) != Stride(MaxWeight) {
		t.Error("weights out of range are not clamped")
	}
	p := Policy{Weights: map[string]int{"a": 3, "b": 0, "c": 5000}}
	if p.Weight("a") != 3 || p.Weight("b") != 1 || p.Weight("c") != MaxWeight || p.Weight("none") != 1 {
		t.Errorf("weights: %d %d %d %d", p.Weight("a"), p.Weight("b"), p.Weight("c"), p.Weight("none"))
	}
}

func TestPickTeams(t *testing.T) {
	tests := []struct {
		name  string
		cands []Candidate
		p     Policy
		want  []string
	}{
		{
			name: "teams take turns within a level, FIFO within a team",
			cands: []Candidate{
				tc("a1", 1, "A", "ma", 3, 0), tc("a2", 2, "A", "ma", 3, 1), tc("a3", 3, "A", "ma", 3, 2),
				tc("b1", 4, "B", "mb", 3, 3), tc("b2", 5, "B", "mb", 3, 4),
			},
			p:    Policy{Now: t0.Add(time.Second), Max: 10},
			want: []string{"a1", "b1", "a2", "b2", "a3"},
		},
		{
			name: "priority comes first",
			cands: []Candidate{
				tc("a1", 1, "A", "ma", 3, 0), tc("a2", 2, "A", "ma", 3, 1),
				tc("b1", 3, "B", "mb", 4, 2), tc("b0", 4, "B", "mb", 2, 3),
			},
			p:    Policy{Now: t0.Add(time.Second), Max: 10},
			want: []string{"b0", "a1", "a2", "b1"},
		},
		{
			name: "weights: 3 to 1",
			cands: []Candidate{
				tc("a1", 1, "A", "ma", 3, 0), tc("a2", 2, "A", "ma", 3, 1), tc("a3", 3, "A", "ma", 3, 2), tc("a4", 4, "A", "ma", 3, 3),
				tc("a5", 5, "A", "ma", 3, 4), tc("a6", 6, "A", "ma", 3, 5),
				tc("b1", 7, "B", "mb", 3, 6), tc("b2", 8, "B", "mb", 3, 7), tc("b3", 9, "B", "mb", 3, 8),
			},
			p:    Policy{Now: t0.Add(time.Second), Max: 8, Weights: map[string]int{"A": 3}},
			want: []string{"a1", "b1", "a2", "a3", "a4", "b2", "a5", "a6"},
		},
		{
			name: "machines of one team take turns",
			cands: []Candidate{
				tc("m1a", 1, "A", "m1", 3, 0), tc("m1b", 2, "A", "m1", 3, 1), tc("m1c", 3, "A", "m1", 3, 2),
				tc("m2a", 4, "A", "m2", 3, 3),
			},
			p:    Policy{Now: t0.Add(time.Second), Max: 10},
			want: []string{"m1a", "m2a", "m1b", "m1c"},
		},
		{
			name: "a full team does not block another",
			cands: []Candidate{
				tc("a1", 1, "A", "ma", 3, 0), tc("a2", 2, "A", "ma", 3, 1), tc("a3", 3, "A", "ma", 3, 2),
				tc("b1", 4, "B", "mb", 3, 3),
			},
			p:    Policy{Now: t0.Add(time.Second), Max: 10, PerMachine: 1},
			want: []string{"a1", "b1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ids(Pick(tt.cands, nil, tt.p)); !slices.Equal(got, tt.want) {
				t.Errorf("Pick = %v, want %v", got, tt.want)
			}
		})
	}
}

// An idle team arriving late starts at the current virtual time: no credit
// for the time it was away, and no burst past the busy team either.
func TestTagsCarryOver(t *testing.T) {
	s := newSim(Policy{Max: 1})
	for i := 0; i < 10; i++ {
		s.submit("A", "ma", 3)
	}
	for i := 0; i < 5; i++ {
		s.claimN(1) // A alone: its finish tag runs ahead
	}
	for i := 0; i < 5; i++ {
		s.submit("B", "mb", 3)
	}
	var got []string
	for i := 0; i < 8; i++ {
		for _, c := range s.claimN(1) {
			got = append(got, c.Team)
		}
	}
	// B joins at A's current tag: it alternates with A from there.
	if want := []string{"A", "B", "A", "B", "A", "B", "A", "B"}; !slices.Equal(got, want) && !slices.Equal(got, []string{"B", "A", "B", "A", "B", "A", "B", "A"}) {
		t.Fatalf("teams served %v, want alternation", got)
	}
}

func TestSliceSource(t *testing.T) {
	cs := []Candidate{
		c("b", 2, "m", 3, 0), c("a", 1, "m", 3, 0), c("later", 3, "m", 3, time.Second),
		{ID: "future", Seq: 4, Machine: "m", Priority: 3, EnqueuedAt: t0, ReadyAt: t0.Add(time.Hour)},
		c("other", 5, "n", 3, 0), c("dup", 1, "m", 3, 0),
	}
	s := NewSliceSource(cs, t0.Add(time.Minute), Tags{Clock: 7, Teams: map[string]TeamTag{"T": {1, 2}}, Stamp: 9, Stamps: map[string]int64{"m": 3}})
	heads, _ := s.Heads(nil, nil)
	slices.SortFunc(heads, func(a, b Candidate) int { return cmp.Compare(a.Machine, b.Machine) })
	if got := ids(heads); !slices.Equal(got, []string{"a", "other"}) {
		t.Fatalf("heads %v", got)
	}
	if got, _ := s.Heads([]string{"n", "x"}, nil); !slices.Equal(ids(got), []string{"other"}) {
		t.Fatalf("heads of n: %v", ids(got))
	}
	if got, _ := s.Heads(nil, []string{"m"}); !slices.Equal(ids(got), []string{"other"}) {
		t.Fatalf("heads skipping m: %v", ids(got))
	}
	got := []string{"a"}
	for after := heads[0]; ; {
		c, ok, err := s.Next("m", 3, after)
		if err != nil || !ok {
			break
		}
		got = append(got, c.ID)
		after = c
	}
	if want := []string{"a", "dup", "b", "later"}; !slices.Equal(got, want) {
		t.Fatalf("stream %v, want %v", got, want)
	}
	tg, _ := s.Tags([]string{"T", "U"}, []string{"m", "n"})
	if tg.Clock != 7 || tg.Stamp != 9 || len(tg.Teams) != 1 || tg.Stamps["m"] != 3 || len(tg.Stamps) != 1 {
		t.Fatalf("tags %+v", tg)
	}
}

// reference is a deliberately naive implementation of the rule, written
// independently of Claim's streams: at every step it looks at every
// candidate.
func reference(cs []Candidate, running map[string]int, p Policy, tags Tags) ([]Candidate, Tags) {
	run := maps.Clone(running)
	if run == nil {
		run = map[string]int{}
	}
	tg := Tags{Clock: tags.Clock, Stamp: tags.Stamp, Teams: maps.Clone(tags.Teams), Stamps: maps.Clone(tags.Stamps)}
	if tg.Teams == nil {
		tg.Teams = map[string]TeamTag{}
	}
	if tg.Stamps == nil {
		tg.Stamps = map[string]int64{}
	}
	eff := func(c Candidate) int {
		e := c.Priority
		if p.Aging > 0 {
			for w := p.Now.Sub(c.EnqueuedAt); w >= p.Aging && e > 1; w -= p.Aging {
				e--
			}
		}
		return e
	}
	allowed := func(c Candidate) bool {
		if c.ReadyAt.After(p.Now) || (p.Machines != nil && !slices.Contains(p.Machines, c.Machine)) {
			return false
		}
		waited := p.Now.Sub(c.EnqueuedAt)
		if slices.Contains(p.BusyMachines, c.Machine) && eff(c) >= 3 && !(p.MaxHold > 0 && waited >= p.MaxHold) {
			return false
		}
		if p.PerMachine > 0 {
			limit := p.PerMachine
			fullyAged := p.Aging > 0 && waited >= time.Duration(c.Priority)*p.Aging
			if c.Priority > 1 && p.ReserveCritical && p.PerMachine >= 2 && !fullyAged {
				limit--
			}
			if run[c.Machine] >= limit {
				return false
			}
		}
		return true
	}
	less := func(a, b Candidate) bool {
		if ea, eb := eff(a), eff(b); ea != eb {
			return ea < eb
		}
		sa, sb := max(tg.Clock, tg.Teams[a.Team].Finish), max(tg.Clock, tg.Teams[b.Team].Finish)
		if sa != sb {
			return sa < sb
		}
		if a.Team != b.Team {
			return a.Team < b.Team
		}
		if ma, mb := tg.Stamps[a.Machine], tg.Stamps[b.Machine]; ma != mb {
			return ma < mb
		}
		if !a.EnqueuedAt.Equal(b.EnqueuedAt) {
			return a.EnqueuedAt.Before(b.EnqueuedAt)
		}
		if a.Seq != b.Seq {
			return a.Seq < b.Seq
		}
		if a.ID != b.ID {
			return a.ID < b.ID
		}
		return a.Machine < b.Machine
	}
	pool := slices.Clone(cs)
	var out []Candidate
	for len(out) < p.Max {
		best := -1
		for i, c := range pool {
			if allowed(c) && (best < 0 || less(c, pool[best])) {
				best = i
			}
		}
		if best < 0 {
			break
		}
		c := pool[best]
		pool = slices.Delete(pool, best, best+1)
		out = append(out, c)
		run[c.Machine]++
		s := max(tg.Clock, tg.Teams[c.Team].Finish)
		tg.Teams[c.Team] = TeamTag{Start: s, Finish: s + Quantum/int64(min(max(p.Weights[c.Team], 1), MaxWeight))}
		tg.Clock = s
		tg.Stamp++
		tg.Stamps[c.Machine] = tg.Stamp
	}
	return out, tg
}

// merge applies a claim's changed tags to the stored ones, as an engine does.
func merge(tg *Tags, r Result) { tg.Apply(r) }

func FuzzClaim(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, uint8(3), uint8(2), true, uint16(7), uint16(100), uint8(0), uint8(0))
	f.Add([]byte{5, 5, 5, 1, 1, 1, 2, 3, 4, 0, 0, 0, 9, 9, 9}, uint8(10), uint8(3), true, uint16(1), uint16(50), uint8(3), uint8(7))
	f.Add([]byte{}, uint8(1), uint8(0), false, uint16(0), uint16(0), uint8(0), uint8(0))
	f.Add([]byte{1, 3, 0, 0, 1, 2, 1, 1, 0, 5, 2, 2, 3, 4, 3, 3, 2, 1, 4, 4}, uint8(10), uint8(0), false, uint16(5), uint16(60), uint8(9), uint8(200))
	f.Fuzz(func(t *testing.T, data []byte, maxN, per uint8, reserve bool, agingSec, nowSec uint16, filter, extra uint8) {
		// Each candidate takes 4 bytes: machine (and team), priority,
		// enqueue offset, ready offset.
		var cs []Candidate
		for i := 0; i+4 <= len(data) && len(cs) < 64; i += 4 {
			m := data[i] % 4
			cs = append(cs, Candidate{
				ID:         fmt.Sprintf("id%02d", len(cs)),
				Seq:        int64(data[i]^data[i+3]) % 8, // duplicates on purpose
				Team:       fmt.Sprint("t", m%2+m/3),     // machines 0,3 → t0/t1 mixed
				Machine:    fmt.Sprint("m", m),
				Priority:   1 + int(data[i+1]%5),
				EnqueuedAt: t0.Add(time.Duration(data[i+2]) * time.Second),
				ReadyAt:    t0.Add(time.Duration(data[i+3]) * time.Second),
			})
		}
		running := map[string]int{}
		for i := 0; i < len(data) && i < 4; i++ {
			running[fmt.Sprint("m", i)] = int(data[i] % 5)
		}
		p := Policy{
			Now:             t0.Add(time.Duration(nowSec%300) * time.Second),
			Max:             int(maxN % 20),
			PerMachine:      int(per % 6),
			ReserveCritical: reserve,
			Aging:           time.Duration(agingSec%60) * time.Second,
			MaxHold:         time.Duration(extra%4) * 40 * time.Second,
		}
		if extra&16 != 0 {
			p.Weights = map[string]int{"t0": 1 + int(extra%3), "t1": int(extra % 5)}
		}
		if filter%4 == 1 {
			p.Machines = []string{"m0", "m2"}
		} else if filter%4 == 2 {
			p.Machines = []string{}
		}
		switch filter / 4 % 4 {
		case 1:
			p.BusyMachines = []string{"m1"}
		case 2:
			p.BusyMachines = []string{"m0", "m3"}
		case 3:
			p.BusyMachines = []string{}
		}
		var tags Tags
		if extra&32 != 0 {
			tags = Tags{Clock: 3 * Quantum, Teams: map[string]TeamTag{"t0": {0, int64(extra) * 1000}, "t1": {0, 5 * Quantum}},
				Stamp: 10, Stamps: map[string]int64{"m0": 10, "m2": 4}}
		}
		res, err := Claim(p, running, NewSliceSource(cs, p.Now, tags))
		if err != nil {
			t.Fatal(err)
		}
		want, wantTags := reference(cs, running, p, tags)
		if !slices.Equal(ids(res.Picked), ids(want)) {
			t.Fatalf("Claim = %v, reference = %v (policy %+v, running %v)", ids(res.Picked), ids(want), p, running)
		}
		got := Tags{Clock: tags.Clock, Stamp: tags.Stamp, Teams: maps.Clone(tags.Teams), Stamps: maps.Clone(tags.Stamps)}
		merge(&got, res)
		if len(want) > 0 && (got.Clock != wantTags.Clock || got.Stamp != wantTags.Stamp || !maps.Equal(got.Teams, wantTags.Teams) || !maps.Equal(got.Stamps, wantTags.Stamps)) {
			t.Fatalf("tags %+v, reference %+v", got, wantTags)
		}
		// Invariants, checked directly.
		run := maps.Clone(running)
		seen := map[string]bool{}
		for _, c := range res.Picked {
			if seen[c.ID] {
				t.Fatalf("%s picked twice", c.ID)
			}
			seen[c.ID] = true
			if h, _ := p.Check(c, run[c.Machine]); h != HoldNone {
				t.Fatalf("%s picked although held (%v)", c.ID, h)
			}
			run[c.Machine]++
		}
		if len(res.Picked) > max(p.Max, 0) {
			t.Fatalf("picked %d > Max %d", len(res.Picked), p.Max)
		}
		// Fewer than Max taken: everything left is held.
		if len(res.Picked) < p.Max {
			for _, c := range cs {
				if h, _ := p.Check(c, run[c.Machine]); !seen[c.ID] && h == HoldNone {
					t.Fatalf("%s left although not held", c.ID)
				}
			}
		}
		// Priority first: nothing left not held has a better effective
		// priority than the last task taken.
		if n := len(res.Picked); n > 0 {
			last := EffectivePriority(res.Picked[n-1].Priority, res.Picked[n-1].EnqueuedAt, p.Now, p.Aging)
			for _, c := range cs {
				if h, _ := p.Check(c, run[c.Machine]); !seen[c.ID] && h == HoldNone && EffectivePriority(c.Priority, c.EnqueuedAt, p.Now, p.Aging) < last {
					t.Fatalf("%s (effective %d) left behind a task of effective %d", c.ID, EffectivePriority(c.Priority, c.EnqueuedAt, p.Now, p.Aging), last)
				}
			}
		}
	})
}

// ---- simulation with an injected clock (no sleeping)

// sim is a queue, a worker's slots and machines run by the rule, step by
// step on a simulated clock. Finished tasks free their slots; the tags
// carry over from claim to claim as a store keeps them.
type sim struct {
	p       Policy // Now and Max are set per claim
	slots   int    // worker concurrency; 0 = Policy.Max per claim
	now     time.Time
	seq     int64
	queue   []Candidate
	running map[string]int
	ends    []simRun
	tags    Tags
	// dur returns how long a task runs (default 1 step).
	dur     func(c Candidate) time.Duration
	claimed map[string]time.Time
	order   []Candidate
}

type simRun struct {
	machine string
	end     time.Time
}

func newSim(p Policy) *sim {
	return &sim{p: p, now: t0, running: map[string]int{}, claimed: map[string]time.Time{}}
}

func (s *sim) submit(team, machine string, prio int) Candidate {
	s.seq++
	cd := Candidate{ID: fmt.Sprintf("%s/%s/p%d/%d", team, machine, prio, s.seq), Seq: s.seq, Team: team, Machine: machine,
		Priority: prio, EnqueuedAt: s.now, ReadyAt: s.now}
	s.queue = append(s.queue, cd)
	return cd
}

func (s *sim) busySlots() int { return len(s.ends) }

// claimN claims up to n tasks now.
func (s *sim) claimN(n int) []Candidate {
	p := s.p
	p.Now, p.Max = s.now, n
	res, err := Claim(p, s.running, NewSliceSource(s.queue, s.now, s.tags))
	if err != nil {
		panic(err)
	}
	merge(&s.tags, res)
	for _, c := range res.Picked {
		s.queue = slices.DeleteFunc(s.queue, func(q Candidate) bool { return q.ID == c.ID })
		s.running[c.Machine]++
		d := time.Second
		if s.dur != nil {
			d = s.dur(c)
		}
		s.ends = append(s.ends, simRun{c.Machine, s.now.Add(d)})
		s.claimed[c.ID] = s.now
		s.order = append(s.order, c)
	}
	return res.Picked
}

// claim fills the worker's free slots.
func (s *sim) claim() []Candidate {
	free := s.slots - s.busySlots()
	if s.slots == 0 {
		free = s.p.Max
	}
	if free <= 0 {
		return nil
	}
	return s.claimN(free)
}

// advance moves the clock and ends the runs due.
func (s *sim) advance(d time.Duration) {
	s.now = s.now.Add(d)
	s.ends = slices.DeleteFunc(s.ends, func(r simRun) bool {
		if r.end.After(s.now) {
			return false
		}
		s.running[r.machine]--
		return true
	})
}

// The case: team A floods its 3 machines with 1,000 short tasks;
// then team B submits one task to its idle machine. B's task is taken at
// the next claim the worker makes (the first slot that frees), not after
// A's backlog.
func TestNoStarvationTeamFlood(t *testing.T) {
	const step = 50 * time.Millisecond
	s := newSim(Policy{PerMachine: 8, ReserveCritical: true, Aging: 5 * time.Minute})
	s.slots = 16
	s.dur = func(Candidate) time.Duration { return 200 * time.Millisecond }
	for i := 0; i < 1000; i++ {
		s.submit("A", fmt.Sprint("a", i%3+1), 3)
	}
	for i := 0; i < 20; i++ { // 1 s of A alone
		s.claim()
		s.advance(step)
	}
	b := s.submit("B", "b1", 3)
	aBefore := len(s.order)
	for i := 0; i < 100 && s.claimed[b.ID].IsZero(); i++ {
		s.claim()
		s.advance(step)
	}
	at, ok := s.claimed[b.ID]
	if !ok {
		t.Fatal("B's task was never claimed")
	}
	aAhead := 0
	for _, c := range s.order[aBefore:] {
		if c.ID == b.ID {
			break
		}
		aAhead++
	}
	if wait := at.Sub(b.EnqueuedAt); wait > 200*time.Millisecond || aAhead > 0 {
		t.Fatalf("B waited %v with %d of A's tasks claimed ahead of it", wait, aAhead)
	}
	t.Logf("B's task claimed after %v; %d of A's tasks still queued", at.Sub(b.EnqueuedAt), len(s.queue))
}

// Two teams keep work queued at one level: claims alternate in proportion
// to their weights (3:1 here), by any prefix ±1, and a third team joining
// late gets its share at once.
func TestNoStarvationWeights(t *testing.T) {
	s := newSim(Policy{Weights: map[string]int{"A": 3}})
	for i := 0; i < 400; i++ {
		s.submit("A", "ma", 3)
		s.submit("B", "mb", 3)
	}
	count := map[string]int{}
	for i := 1; i <= 400; i++ {
		for _, c := range s.claimN(1) {
			count[c.Team]++
		}
		if d := count["A"] - 3*count["B"]; d < -3 || d > 3 {
			t.Fatalf("after %d claims A %d, B %d: not 3:1", i, count["A"], count["B"])
		}
		if i == 200 {
			s.submit("C", "mc", 3)
			s.submit("C", "mc", 3)
		}
		if i == 202 && count["C"] == 0 {
			t.Fatal("team C joining late was not served within 2 claims")
		}
	}
}

// One team's machine with a backlog does not hold back the team's other
// machine, even with one worker slot.
func TestNoStarvationMachines(t *testing.T) {
	s := newSim(Policy{Aging: time.Minute})
	s.slots = 1
	for i := 0; i < 500; i++ {
		s.submit("A", "m1", 3)
	}
	s.claim()
	s.advance(time.Second)
	late := s.submit("A", "m2", 3)
	for i := 0; i < 3 && s.claimed[late.ID].IsZero(); i++ {
		s.claim()
		s.advance(time.Second)
	}
	if s.claimed[late.ID].IsZero() {
		t.Fatal("m2's task waited behind m1's backlog")
	}
}

// A constant stream of critical work on a machine with a small limit
// (2 slots, one held for priority 1) does not starve a priority-5 task:
// it ages to level 1 and, one interval later, may take the reserved slot.
// Without aging it is never taken: the simulation does model starvation.
func TestNoStarvationCriticalStream(t *testing.T) {
	const (
		aging = 10 * time.Minute
		step  = 30 * time.Second
	)
	run := func(aging time.Duration, steps int) (wait time.Duration, ok bool, reserved int) {
		s := newSim(Policy{PerMachine: 2, ReserveCritical: true, Aging: aging})
		s.dur = func(c Candidate) time.Duration { return time.Duration(40+c.Seq%3*15) * time.Second } // overlapping criticals
		low := s.submit("A", "m", 5)
		for i := 0; i < steps; i++ {
			s.submit("A", "m", 1)
			s.submit("B", "m", 1) // another team's criticals too
			pol := s.p
			pol.Now = s.now
			if h, _ := pol.Check(low, s.running["m"]); h == HoldReserved {
				reserved++
			}
			s.claimN(4)
			if !s.claimed[low.ID].IsZero() {
				return s.now.Sub(low.EnqueuedAt), true, reserved
			}
			s.advance(step)
		}
		return 0, false, reserved
	}
	bound := 5*aging + 2*55*time.Second
	wait, ok, reserved := run(aging, int(2*bound/step))
	if !ok || wait > bound {
		t.Fatalf("priority-5 task under a critical stream: taken %v after %v, want within %v", ok, wait, bound)
	}
	if reserved == 0 {
		t.Fatal("the critical stream never left only the reserved slot free: the simulation does not stress the reserve")
	}
	t.Logf("priority-5 task taken after %v (%d claims found only the reserved slot free)", wait, reserved)
	if _, ok, _ := run(0, 400); ok {
		t.Fatal("without aging the priority-5 task was taken: the simulation does not model the stream")
	}
}

// A machine that stays busy holds priority 3..5 work only until aging lifts
// it to priority 2 (or MaxHold); priority 1..2 is never held.
func TestNoStarvationBusyMachine(t *testing.T) {
	const aging = 5 * time.Minute
	for _, maxHold := range []time.Duration{0, 7 * time.Minute} {
		s := newSim(Policy{Aging: aging, BusyMachines: []string{"hot"}, MaxHold: maxHold})
		tasks := map[int]Candidate{}
		for prio := 1; prio <= 5; prio++ {
			tasks[prio] = s.submit("A", "hot", prio)
		}
		for i := 0; i < 40; i++ {
			s.claimN(10)
			s.advance(30 * time.Second)
		}
		for prio, cd := range tasks {
			want := time.Duration(0)
			if prio >= BusyFrom {
				want = time.Duration(prio-BusyFrom+1) * aging
				if maxHold > 0 && maxHold < want {
					want = maxHold // a multiple of the step
				}
			}
			got, ok := s.claimed[cd.ID]
			if !ok || got.Sub(cd.EnqueuedAt) != want {
				t.Errorf("MaxHold %v: priority %d on a busy machine taken after %v (%v), want %v", maxHold, prio, got.Sub(cd.EnqueuedAt), ok, want)
			}
		}
	}
}

// TestNoStarvationLevels simulates a steady stream of level-1..4 arrivals
// (four per step, more than the one claim per step can drain) and proves a
// level-5 task enqueued at the start is claimed within 4*aging/step + slack
// steps. Without aging it is never claimed.
func TestNoStarvationLevels(t *testing.T) {
	const (
		aging = 10 * time.Minute
		step  = 30 * time.Second
		slack = 2
		bound = int(4*aging/step) + slack
	)
	run := func(aging time.Duration, steps int) (claimedAt int) {
		s := newSim(Policy{Aging: aging})
		target := s.submit("A", "m0", 5)
		for i := 0; i < steps; i++ {
			for prio := 1; prio <= 4; prio++ {
				s.submit("A", fmt.Sprint("m", (i+prio)%3), prio)
			}
			got := s.claimN(1)
			if len(got) != 1 {
				t.Fatalf("step %d: picked %d tasks", i, len(got))
			}
			if got[0].ID == target.ID {
				return i
			}
			s.advance(step)
		}
		return -1
	}
	at := run(aging, 10*bound)
	if at < 0 || at > bound {
		t.Fatalf("level-5 task claimed at step %d, want within %d steps", at, bound)
	}
	if at < int(4*aging/step) {
		t.Fatalf("level-5 task claimed at step %d, before it aged to level 1", at)
	}
	if at := run(0, 10*bound); at >= 0 {
		t.Fatalf("without aging the level-5 task was claimed at step %d; the simulation does not model starvation", at)
	}
}

// Random fleets, teams, weights, limits, busy machines and arrivals: while
// arrivals go on, every claim follows the reference; once they stop, the
// queue drains (no task is held forever when aging is on), and no team
// with queued work goes more than a bounded number of claims unserved at
// the level being served.
func TestNoStarvationRandom(t *testing.T) {
	for round := range 40 {
		rng := rand.New(rand.NewPCG(uint64(round), 9))
		const aging = 2 * time.Minute
		nTeams, nMachines := 1+rng.IntN(3), 1+rng.IntN(5)
		teamOf := func(m int) string { return fmt.Sprint("T", m%nTeams) }
		p := Policy{PerMachine: rng.IntN(4), ReserveCritical: rng.IntN(2) == 0, Aging: aging,
			Weights: map[string]int{"T0": 1 + rng.IntN(4), "T1": 1 + rng.IntN(4)}}
		if rng.IntN(2) == 0 {
			p.BusyMachines = []string{"m0"}
		}
		s := newSim(p)
		s.slots = 1 + rng.IntN(6)
		s.dur = func(Candidate) time.Duration { return time.Duration(1+rng.IntN(90)) * time.Second }
		const step = 10 * time.Second
		for i := 0; i < 300; i++ {
			for range rng.IntN(3) {
				m := rng.IntN(nMachines)
				s.submit(teamOf(m), fmt.Sprint("m", m), 1+rng.IntN(5))
			}
			q := slices.Clone(s.queue)
			pol := s.p
			pol.Now, pol.Max = s.now, s.slots-s.busySlots()
			want, _ := reference(q, s.running, pol, s.tags)
			if got := s.claim(); !slices.Equal(ids(got), ids(want)) {
				t.Fatalf("round %d step %d: claim %v, reference %v", round, i, ids(got), ids(want))
			}
			s.advance(step)
		}
		limit := s.now.Add(6*aging + time.Duration(len(s.queue)+10)*100*time.Second)
		for len(s.queue) > 0 && s.now.Before(limit) {
			s.claim()
			s.advance(step)
		}
		if len(s.queue) > 0 {
			t.Fatalf("round %d: %d tasks never claimed, first %+v (policy %+v)", round, len(s.queue), s.queue[0], p)
		}
	}
}
