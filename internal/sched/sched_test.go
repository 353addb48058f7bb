package sched

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func TestEffectivePriority(t *testing.T) {
	const aging = 10 * time.Minute
	tests := []struct {
		name     string
		priority int
		wait     time.Duration
		aging    time.Duration
		want     int
	}{
		{"no wait", 5, 0, aging, 5},
		{"just under one interval", 5, aging - time.Nanosecond, aging, 5},
		{"exactly one interval", 5, aging, aging, 4},
		{"one and a half", 5, aging + aging/2, aging, 4},
		{"exactly two intervals", 5, 2 * aging, aging, 3},
		{"just under four", 5, 4*aging - time.Nanosecond, aging, 2},
		{"exactly four", 5, 4 * aging, aging, 1},
		{"far past four, clamped at 1", 5, 1000 * aging, aging, 1},
		{"huge wait does not overflow", 5, time.Duration(1<<62 - 1), time.Nanosecond, 1},
		{"critical stays 1", 1, 3 * aging, aging, 1},
		{"level 3 after one", 3, aging, aging, 2},
		{"negative wait counts as 0", 4, -5 * aging, aging, 4},
		{"aging 0 disables", 5, 1000 * aging, 0, 5},
		{"negative aging disables", 5, 1000 * aging, -aging, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := EffectivePriority(tt.priority, t0, t0.Add(tt.wait), tt.aging)
			if got != tt.want {
				t.Errorf("EffectivePriority(%d, wait %v, aging %v) = %d, want %d", tt.priority, tt.wait, tt.aging, got, tt.want)
			}
		})
	}
}

func TestAdmits(t *testing.T) {
	tests := []struct {
		priority, running, per int
		reserve                bool
		want                   bool
	}{
		{3, 1000, 0, true, true}, // unbounded
		{1, 1000, 0, true, true},
		{3, 0, 1, true, true}, // PerMachine 1: reserve ignored
		{3, 1, 1, true, false},
		{1, 0, 1, true, true},
		{3, 0, 2, true, true},
		{3, 1, 2, true, false}, // one slot held back
		{1, 1, 2, true, true},
		{1, 2, 2, true, false},
		{3, 1, 2, false, true}, // no reserve
		{5, 2, 3, true, false},
		{2, 1, 3, true, true},
		{1, 2, 3, true, true},
		{1, 3, 3, true, false},
	}
	for _, tt := range tests {
		got := Admits(tt.priority, tt.running, tt.per, tt.reserve)
		if got != tt.want {
			t.Errorf("Admits(prio %d, running %d, per %d, reserve %v) = %v, want %v", tt.priority, tt.running, tt.per, tt.reserve, got, tt.want)
		}
	}
}

// c builds a candidate enqueued and ready at t0+at.
func c(id string, seq int64, machine string, prio int, at time.Duration) Candidate {
	return Candidate{ID: id, Seq: seq, Machine: machine, Priority: prio, EnqueuedAt: t0.Add(at), ReadyAt: t0.Add(at)}
}

func ids(cs []Candidate) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.ID
	}
	return out
}

func TestPick(t *testing.T) {
	const aging = 10 * time.Minute
	tests := []struct {
		name    string
		cands   []Candidate
		running map[string]int
		p       Policy
		want    []string
	}{
		{
			name: "FIFO within a level",
			cands: []Candidate{
				c("c", 3, "m", 3, 3*time.Second),
				c("a", 1, "m", 3, 1*time.Second),
				c("b", 2, "m", 3, 2*time.Second),
			},
			p:    Policy{Now: t0.Add(time.Minute), Max: 10},
			want: []string{"a", "b", "c"},
		},
		{
			name: "same EnqueuedAt falls back to creation sequence then id",
			cands: []Candidate{
				c("z", 2, "m", 3, 0),
				c("y", 1, "m", 3, 0),
				c("b", 3, "m", 3, 0),
				c("a", 3, "m", 3, 0),
			},
			p:    Policy{Now: t0, Max: 10},
			want: []string{"y", "z", "a", "b"},
		},
		{
			name: "higher level first regardless of age",
			cands: []Candidate{
				c("low-old", 1, "m", 5, 0),
				c("normal", 2, "m", 3, time.Second),
				c("critical-new", 3, "m", 1, 2*time.Second),
				c("high", 4, "m", 2, 3*time.Second),
			},
			p:    Policy{Now: t0.Add(5 * time.Second), Max: 10},
			want: []string{"critical-new", "high", "normal", "low-old"},
		},
		{
			name: "Max bounds the pick",
			cands: []Candidate{
				c("a", 1, "m", 3, 0), c("b", 2, "m", 3, 1), c("c", 3, "m", 3, 2),
			},
			p:    Policy{Now: t0.Add(time.Second), Max: 2},
			want: []string{"a", "b"},
		},
		{
			name:  "Max 0 picks nothing",
			cands: []Candidate{c("a", 1, "m", 3, 0)},
			p:     Policy{Now: t0, Max: 0},
			want:  nil,
		},
		{
			name: "aging: level 5 waited 3 intervals is level 2, ahead of fresh 2..4 (older)",
			cands: []Candidate{
				c("fresh4", 2, "m", 4, 3*aging),
				c("fresh3", 3, "m", 3, 3*aging),
				c("fresh2", 4, "m", 2, 3*aging),
				c("old5", 1, "m", 5, 0),
				c("fresh1", 5, "m", 1, 3*aging),
			},
			p:    Policy{Now: t0.Add(3 * aging), Max: 10, Aging: aging},
			want: []string{"fresh1", "old5", "fresh2", "fresh3", "fresh4"},
		},
		{
			name: "aging: one nanosecond short of 3 intervals it is level 3, behind fresh 2",
			cands: []Candidate{
				c("fresh3", 3, "m", 3, 3*aging-time.Nanosecond),
				c("fresh2", 4, "m", 2, 3*aging-time.Nanosecond),
				c("old5", 1, "m", 5, 0),
			},
			p:    Policy{Now: t0.Add(3*aging - time.Nanosecond), Max: 10, Aging: aging},
			want: []string{"fresh2", "old5", "fresh3"},
		},
		{
			name: "aging: after 4 intervals level 5 is level 1 and FIFO puts it before a fresh critical",
			cands: []Candidate{
				c("fresh1", 2, "m", 1, 4*aging),
				c("old5", 1, "m", 5, 0),
			},
			p:    Policy{Now: t0.Add(4 * aging), Max: 10, Aging: aging},
			want: []string{"old5", "fresh1"},
		},
		{
			name: "aging disabled: level 5 stays last",
			cands: []Candidate{
				c("fresh4", 2, "m", 4, 100*aging),
				c("old5", 1, "m", 5, 0),
			},
			p:    Policy{Now: t0.Add(100 * aging), Max: 10},
			want: []string{"fresh4", "old5"},
		},
		{
			name: "retry-delayed tasks (ReadyAt in the future) skipped",
			cands: []Candidate{
				{ID: "delayed", Seq: 1, Machine: "m", Priority: 1, EnqueuedAt: t0, ReadyAt: t0.Add(time.Minute)},
				{ID: "due-now", Seq: 2, Machine: "m", Priority: 3, EnqueuedAt: t0, ReadyAt: t0.Add(30 * time.Second)},
				c("ready", 3, "m", 5, time.Second),
			},
			p:    Policy{Now: t0.Add(30 * time.Second), Max: 10},
			want: []string{"due-now", "ready"},
		},
		{
			name: "machine filter",
			cands: []Candidate{
				c("a", 1, "m1", 3, 0), c("b", 2, "m2", 3, 1), c("c", 3, "m3", 3, 2),
			},
			p:    Policy{Now: t0.Add(time.Second), Max: 10, Machines: []string{"m3", "m1"}},
			want: []string{"a", "c"},
		},
		{
			name:  "empty non-nil machine filter matches nothing",
			cands: []Candidate{c("a", 1, "m1", 3, 0)},
			p:     Policy{Now: t0, Max: 10, Machines: []string{}},
			want:  nil,
		},
		{
			name: "per-machine limit counts running tasks and picks so far",
			cands: []Candidate{
				c("a1", 1, "a", 3, 0), c("a2", 2, "a", 3, 1), c("a3", 3, "a", 3, 2),
				c("b1", 4, "b", 3, 3), c("b2", 5, "b", 3, 4),
			},
			running: map[string]int{"a": 1},
			p:       Policy{Now: t0.Add(time.Second), Max: 10, PerMachine: 2},
			want:    []string{"a1", "b1", "b2"},
		},
		{
			name: "full machine skipped, later candidates of other machines still taken",
			cands: []Candidate{
				c("a1", 1, "a", 1, 0), c("b1", 2, "b", 5, 1),
			},
			running: map[string]int{"a": 3},
			p:       Policy{Now: t0.Add(time.Second), Max: 10, PerMachine: 3, ReserveCritical: true},
			want:    []string{"b1"},
		},
		{
			name: "reserved critical slot: low refused, critical accepted, other machine takes low",
			cands: []Candidate{
				c("a-low", 1, "a", 2, 0),
				c("a-crit", 2, "a", 1, 1),
				c("a-crit2", 3, "a", 1, 2),
				c("b-low", 4, "b", 4, 3),
				c("b-low2", 5, "b", 4, 4),
			},
			running: map[string]int{"a": 2, "b": 1},
			p:       Policy{Now: t0.Add(time.Second), Max: 10, PerMachine: 3, ReserveCritical: true},
			want:    []string{"a-crit", "b-low"},
		},
		{
			name: "reserved slot not used by a task aged to level 1",
			cands: []Candidate{
				c("a-old5", 1, "a", 5, 0),
				c("a-crit", 2, "a", 1, 4*aging),
			},
			running: map[string]int{"a": 1},
			p:       Policy{Now: t0.Add(4 * aging), Max: 10, PerMachine: 2, ReserveCritical: true, Aging: aging},
			want:    []string{"a-crit"},
		},
		{
			name: "reserve off: low tasks may use every slot",
			cands: []Candidate{
				c("a-low", 1, "a", 2, 0),
				c("a-crit", 2, "a", 1, 1),
			},
			running: map[string]int{"a": 2},
			p:       Policy{Now: t0.Add(time.Second), Max: 10, PerMachine: 3},
			want:    []string{"a-crit"},
		},
		{
			name: "reserve ignored when PerMachine is 1",
			cands: []Candidate{
				c("a-low", 1, "a", 4, 0),
			},
			p:    Policy{Now: t0.Add(time.Second), Max: 10, PerMachine: 1, ReserveCritical: true},
			want: []string{"a-low"},
		}, {
			name: "busy machine: priority 3..5 skipped, 1..2 taken, other machines untouched",
			cands: []Candidate{
				c("a-p5", 1, "a", 5, 0), c("a-p4", 2, "a", 4, 1), c("a-p3", 3, "a", 3, 2),
				c("a-p2", 4, "a", 2, 3), c("a-p1", 5, "a", 1, 4),
				c("b-p5", 6, "b", 5, 5), c("b-p3", 7, "b", 3, 6),
			},
			p:    Policy{Now: t0.Add(time.Second), Max: 10, BusyMachines: []string{"a"}},
			want: []string{"a-p1", "a-p2", "b-p3", "b-p5"},
		},
		{
			name: "busy machine: aging does not lift a level-5 task past the rule",
			cands: []Candidate{
				c("a-old5", 1, "a", 5, 0), c("a-old3", 2, "a", 3, 0), c("b-old5", 3, "b", 5, 0),
			},
			p:    Policy{Now: t0.Add(10 * aging), Max: 10, Aging: aging, BusyMachines: []string{"x", "a"}},
			want: []string{"b-old5"},
		},
		{
			name: "busy machine: priority 2 still bound by the per-machine limit and reserved slot",
			cands: []Candidate{
				c("a-p2", 1, "a", 2, 0), c("a-p2b", 2, "a", 2, 1), c("a-p1", 3, "a", 1, 2),
			},
			p:    Policy{Now: t0.Add(time.Second), Max: 10, PerMachine: 3, ReserveCritical: true, BusyMachines: []string{"a"}},
			want: []string{"a-p1", "a-p2"},
		},
		{
			name: "busy and filtered: empty busy list changes nothing",
			cands: []Candidate{
				c("a-p5", 1, "a", 5, 0), c("b-p4", 2, "b", 4, 1),
			},
			p:    Policy{Now: t0.Add(time.Second), Max: 10, Machines: []string{"a"}, BusyMachines: []string{}},
			want: []string{"a-p5"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.cands)
			var runBefore map[string]int
			if tt.running != nil {
				runBefore = make(map[string]int)
				for k, v := range tt.running {
					runBefore[k] = v
				}
			}
			got := ids(Pick(tt.cands, tt.running, tt.p))
			if !slices.Equal(got, tt.want) {
				t.Errorf("Pick = %v, want %v", got, tt.want)
			}
			if !slices.Equal(in, tt.cands) {
				t.Errorf("Pick modified its input")
			}
			for k, v := range runBefore {
				if tt.running[k] != v {
					t.Errorf("Pick modified running[%q]: %d -> %d", k, v, tt.running[k])
				}
			}
		})
	}
}

// TestNoStarvation simulates a steady stream of level-1..4 arrivals (four per
// step, more than the one claim per step can drain) and proves a level-5 task
// enqueued at the start is claimed within 4*aging/step + slack steps. Without
// aging it is never claimed.
func TestNoStarvation(t *testing.T) {
	const (
		aging = 10 * time.Minute
		step  = 30 * time.Second
		slack = 2
		bound = int(4*aging/step) + slack
	)
	run := func(aging time.Duration, steps int) (claimedAt int) {
		seq := int64(0)
		next := func(prio int, at time.Time) Candidate {
			seq++
			return Candidate{ID: fmt.Sprintf("t%d-p%d", seq, prio), Seq: seq, Machine: fmt.Sprint("m", seq%3), Priority: prio, EnqueuedAt: at, ReadyAt: at}
		}
		queue := []Candidate{next(5, t0)}
		target := queue[0].ID
		now := t0
		for i := 0; i < steps; i++ {
			for prio := 1; prio <= 4; prio++ {
				queue = append(queue, next(prio, now))
			}
			got := Pick(queue, nil, Policy{Now: now, Max: 1, Aging: aging})
			if len(got) != 1 {
				t.Fatalf("step %d: picked %d tasks", i, len(got))
			}
			if got[0].ID == target {
				return i
			}
			queue = slices.DeleteFunc(queue, func(c Candidate) bool { return c.ID == got[0].ID })
			now = now.Add(step)
		}
		return -1
	}
	at := run(aging, 10*bound)
	if at < 0 || at > bound {
		t.Fatalf("level-5 task claimed at step %d, want within %d steps", at, bound)
	}
	// It cannot be claimed before it ages to level 1 (4 intervals), as a
	// fresh level-1 task arrives at every step.
	if at < int(4*aging/step) {
		t.Fatalf("level-5 task claimed at step %d, before it aged to level 1", at)
	}
	t.Logf("level-5 task claimed at step %d (bound %d)", at, bound)
	if at := run(0, 10*bound); at >= 0 {
		t.Fatalf("without aging the level-5 task was claimed at step %d; the simulation does not model starvation", at)
	}
}

// reference is a deliberately naive implementation of the rule, written
// independently of Pick, for the fuzz test.
func reference(cs []Candidate, running map[string]int, p Policy) []Candidate {
	eff := func(c Candidate) int {
		if p.Aging <= 0 || !p.Now.After(c.EnqueuedAt) {
			return c.Priority
		}
		e := c.Priority
		for w := p.Now.Sub(c.EnqueuedAt); w >= p.Aging && e > 1; w -= p.Aging {
			e--
		}
		return max(1, e)
	}
	less := func(a, b Candidate) bool {
		if ea, eb := eff(a), eff(b); ea != eb {
			return ea < eb
		}
		if !a.EnqueuedAt.Equal(b.EnqueuedAt) {
			return a.EnqueuedAt.Before(b.EnqueuedAt)
		}
		if a.Seq != b.Seq {
			return a.Seq < b.Seq
		}
		return a.ID < b.ID
	}
	var pool []Candidate
	for _, c := range cs {
		if c.ReadyAt.After(p.Now) {
			continue
		}
		if p.Machines != nil && !slices.Contains(p.Machines, c.Machine) {
			continue
		}
		if c.Priority >= 3 && slices.Contains(p.BusyMachines, c.Machine) {
			continue
		}
		pool = append(pool, c)
	}
	run := map[string]int{}
	for k, v := range running {
		run[k] = v
	}
	var out []Candidate
	for len(out) < p.Max && len(pool) > 0 {
		// selection: the smallest remaining candidate
		best := 0
		for i := range pool {
			if less(pool[i], pool[best]) {
				best = i
			}
		}
		c := pool[best]
		pool = append(pool[:best], pool[best+1:]...)
		limit := p.PerMachine
		if c.Priority > 1 && p.ReserveCritical && p.PerMachine >= 2 {
			limit--
		}
		if p.PerMachine > 0 && run[c.Machine] >= limit {
			continue
		}
		run[c.Machine]++
		out = append(out, c)
	}
	return out
}

func FuzzPick(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, uint8(3), uint8(2), true, uint16(7), uint16(100), uint8(0))
	f.Add([]byte{5, 5, 5, 1, 1, 1, 2, 3, 4, 0, 0, 0, 9, 9, 9}, uint8(10), uint8(3), true, uint16(1), uint16(50), uint8(3))
	f.Add([]byte{}, uint8(1), uint8(0), false, uint16(0), uint16(0), uint8(0))
	f.Add([]byte{1, 3, 0, 0, 1, 2, 1, 1, 0, 5, 2, 2, 3, 4, 3, 3, 2, 1, 4, 4}, uint8(10), uint8(0), false, uint16(5), uint16(60), uint8(9))
	f.Fuzz(func(t *testing.T, data []byte, maxN, per uint8, reserve bool, agingSec, nowSec uint16, filter uint8) {
		// Each candidate takes 4 bytes: machine, priority, enqueue offset, ready offset.
		var cs []Candidate
		for i := 0; i+4 <= len(data) && len(cs) < 64; i += 4 {
			cs = append(cs, Candidate{
				ID:         fmt.Sprintf("id%02d", len(cs)),
				Seq:        int64(data[i]^data[i+3]) % 8, // duplicates on purpose
				Machine:    fmt.Sprint("m", data[i]%4),
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
		got := Pick(cs, running, p)
		if want := reference(cs, running, p); !slices.Equal(ids(got), ids(want)) {
			t.Fatalf("Pick = %v, reference = %v (policy %+v, running %v)", ids(got), ids(want), p, running)
		}
		// Invariants, checked directly.
		if len(got) > p.Max {
			t.Fatalf("picked %d > Max %d", len(got), p.Max)
		}
		run := map[string]int{}
		for k, v := range running {
			run[k] = v
		}
		seen := map[string]bool{}
		for i, c := range got {
			if seen[c.ID] {
				t.Fatalf("%s picked twice", c.ID)
			}
			seen[c.ID] = true
			if c.ReadyAt.After(p.Now) {
				t.Fatalf("%s picked before ReadyAt", c.ID)
			}
			if p.Machines != nil && !slices.Contains(p.Machines, c.Machine) {
				t.Fatalf("%s picked on machine %s outside the filter", c.ID, c.Machine)
			}
			if c.Priority >= BusyFrom && slices.Contains(p.BusyMachines, c.Machine) {
				t.Fatalf("%s (prio %d) picked on busy machine %s", c.ID, c.Priority, c.Machine)
			}
			if i > 0 && Compare(got[i-1], c, p.Now, p.Aging) >= 0 {
				t.Fatalf("output out of order at %d: %v then %v", i, got[i-1], c)
			}
			if p.PerMachine > 0 {
				limit := p.PerMachine
				if c.Priority != 1 && p.ReserveCritical && p.PerMachine >= 2 {
					limit--
				}
				if run[c.Machine] >= limit {
					t.Fatalf("%s (prio %d) picked on %s with %d running, limit %d", c.ID, c.Priority, c.Machine, run[c.Machine], limit)
				}
			}
			run[c.Machine]++
		}
		// Every eligible candidate not picked and ordered before the last
		// pick (or any, when fewer than Max were picked) was refused because
		// its machine was full.
		for _, c := range cs {
			if p.Max <= 0 || seen[c.ID] || !p.Eligible(c) {
				continue
			}
			if len(got) == p.Max && len(got) > 0 && Compare(c, got[len(got)-1], p.Now, p.Aging) > 0 {
				continue
			}
			if Admits(c.Priority, run[c.Machine], p.PerMachine, p.ReserveCritical) {
				t.Fatalf("%s skipped although machine %s has room (%d running)", c.ID, c.Machine, run[c.Machine])
			}
		}
	})
}

func TestPickerStreaming(t *testing.T) {
	p := Policy{Now: t0.Add(time.Hour), Max: 2, PerMachine: 2, ReserveCritical: true}
	pk := NewPicker(p, map[string]int{"a": 1})
	if pk.Offer(c("a-low", 1, "a", 3, 0)) {
		t.Fatal("low task took the reserved slot")
	}
	if !pk.Offer(c("b-low", 2, "b", 3, 1)) {
		t.Fatal("b-low refused")
	}
	if !pk.Offer(c("a-crit", 3, "a", 1, 2)) {
		t.Fatal("critical refused")
	}
	if !pk.Done() {
		t.Fatal("not done after Max picks")
	}
	if pk.Offer(c("b-crit", 4, "b", 1, 3)) {
		t.Fatal("offer accepted after Done")
	}
	if got := ids(pk.Picked()); !slices.Equal(got, []string{"b-low", "a-crit"}) {
		t.Fatalf("picked %v", got)
	}
	if pk.Running("a") != 2 || pk.Running("b") != 1 {
		t.Fatalf("running a=%d b=%d", pk.Running("a"), pk.Running("b"))
	}
}

func TestEligibleBusy(t *testing.T) {
	p := Policy{Now: t0, BusyMachines: []string{"hot", "warm"}}
	tests := []struct {
		machine  string
		priority int
		want     bool
	}{
		{"hot", 1, true},
		{"hot", 2, true},
		{"hot", 3, false},
		{"hot", 4, false},
		{"hot", 5, false},
		{"warm", 3, false},
		{"cool", 3, true},
		{"cool", 5, true},
	}
	for _, tt := range tests {
		cand := Candidate{ID: "x", Machine: tt.machine, Priority: tt.priority, EnqueuedAt: t0, ReadyAt: t0}
		if got := p.Eligible(cand); got != tt.want {
			t.Errorf("Eligible(%s, prio %d) with busy %v = %v, want %v", tt.machine, tt.priority, p.BusyMachines, got, tt.want)
		}
		if got := p.Busy(tt.machine, tt.priority); got == tt.want {
			t.Errorf("Busy(%s, %d) = %v, want %v", tt.machine, tt.priority, got, !tt.want)
		}
	}
	// Not ready stays ineligible on a cool machine; nil busy list holds nothing back.
	if p.Eligible(Candidate{Machine: "cool", Priority: 1, ReadyAt: t0.Add(1)}) {
		t.Error("a task not ready yet is eligible")
	}
	if !(Policy{Now: t0}).Eligible(Candidate{Machine: "hot", Priority: 5, ReadyAt: t0}) {
		t.Error("without busy machines a level-5 task is held back")
	}
}

func TestPickerBusy(t *testing.T) {
	pk := NewPicker(Policy{Now: t0.Add(time.Hour), Max: 3, BusyMachines: []string{"a"}}, nil)
	if pk.Offer(c("a-p3", 1, "a", 3, 0)) {
		t.Fatal("priority 3 taken on a busy machine")
	}
	for _, cand := range []Candidate{c("a-p2", 2, "a", 2, 1), c("b-p5", 3, "b", 5, 2)} {
		if !pk.Offer(cand) {
			t.Fatalf("%s refused", cand.ID)
		}
	}
	if got := ids(pk.Picked()); !slices.Equal(got, []string{"a-p2", "b-p5"}) {
		t.Fatalf("picked %v", got)
	}
}
