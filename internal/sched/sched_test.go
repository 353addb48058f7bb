package sched

import (
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
			name: "reserved slot opens for a task one interval at level 1 (fully aged)",
			cands: []Candidate{
				c("a-old5", 1, "a", 5, 0),
				c("a-crit", 2, "a", 1, 5*aging),
			},
			running: map[string]int{"a": 1},
			p:       Policy{Now: t0.Add(5 * aging), Max: 10, PerMachine: 2, ReserveCritical: true, Aging: aging},
			want:    []string{"a-old5"},
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
			name: "busy machine: aging lifts waiting tasks through the gate (machines take turns)",
			cands: []Candidate{
				c("a-old5", 1, "a", 5, 0), c("a-old3", 2, "a", 3, 0), c("b-old5", 3, "b", 5, 0),
			},
			p:    Policy{Now: t0.Add(10 * aging), Max: 10, Aging: aging, BusyMachines: []string{"x", "a"}},
			want: []string{"a-old5", "b-old5", "a-old3"},
		},
		{
			name: "busy machine: the gate ends when aging reaches priority 2",
			cands: []Candidate{
				c("a-p3", 1, "a", 3, 0), c("a-p4", 2, "a", 4, 0), c("a-p5", 3, "a", 5, 0),
			},
			p:    Policy{Now: t0.Add(2*aging - 1), Max: 10, Aging: aging, BusyMachines: []string{"a"}},
			want: []string{"a-p3"}, // p4 needs 2 intervals, p5 3
		},
		{
			name: "busy machine: MaxHold ends the gate without aging",
			cands: []Candidate{
				c("a-p5", 1, "a", 5, 0), c("a-p3", 2, "a", 3, time.Minute),
			},
			p:    Policy{Now: t0.Add(30 * time.Minute), Max: 10, MaxHold: 30 * time.Minute, BusyMachines: []string{"a"}},
			want: []string{"a-p5"},
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
