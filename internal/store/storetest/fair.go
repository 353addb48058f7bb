package storetest

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rediacc/rediacc/internal/sched"
	"github.com/rediacc/rediacc/internal/store"
)

// The fairness checks: every engine applies sched.Claim and keeps its tags
// between claims (and between workers: they live in the store).
var fairTests = []struct {
	name string
	fn   func(*testing.T, *fixture)
}{
	{"Claim/FairTeams", testFairTeams},
	{"Claim/FairWeights", testFairWeights},
	{"Claim/FairMachines", testFairMachines},
	{"Claim/FairTagsPersist", testFairTagsPersist},
	{"Claim/MatchesSched", testClaimMatchesSched},
	{"Claim/NoStarvation/TeamFlood", testStarveTeamFlood},
	{"Claim/NoStarvation/CriticalStream", testStarveCriticalStream},
	{"Claim/NoStarvation/BusyMachine", testStarveBusyMachine},
}

func inTeam(team string) func(*store.Task) { return func(t *store.Task) { t.TeamID = team } }

func testFairTeams(t *testing.T, f *fixture) {
	for i := range 3 {
		f.task("ma", 3, at(time.Duration(i)), named(fmt.Sprint("a", i+1)), inTeam("A"))
	}
	for i := range 2 {
		f.task("mb", 3, at(time.Duration(10+i)), named(fmt.Sprint("b", i+1)), inTeam("B"))
	}
	f.task("mb", 2, at(20), named("b-high"), inTeam("B"))
	// Priority first; then the teams take turns, FIFO within each. B's
	// priority-2 task counted against B's share (a team's tasks of every
	// level do), so A goes first at level 3 and again on a tie (by id).
	wantIDs(t, "one claim", f.claim(store.ClaimRequest{}), "b-high", "a1", "a2", "b1", "a3", "b2")
}

func testFairWeights(t *testing.T, f *fixture) {
	for i := range 6 {
		f.task("ma", 3, at(time.Duration(i)), named(fmt.Sprint("a", i+1)), inTeam("A"))
		f.task("mb", 3, at(time.Duration(i)), named(fmt.Sprint("b", i+1)), inTeam("B"))
	}
	got := f.claim(store.ClaimRequest{Max: 8, Weights: map[string]int{"A": 3}})
	wantIDs(t, "3:1", got, "a1", "b1", "a2", "a3", "a4", "b2", "a5", "a6")
}

func testFairMachines(t *testing.T, f *fixture) {
	for i := range 5 {
		f.task("m1", 3, at(time.Duration(i)), named(fmt.Sprint("m1-", i+1)))
	}
	f.task("m2", 3, at(100), named("m2-1"))
	// One slot at a time: m2's only task does not wait behind m1's backlog.
	wantIDs(t, "first", f.claim(store.ClaimRequest{Max: 1}), "m1-1")
	wantIDs(t, "second", f.claim(store.ClaimRequest{Max: 1}), "m2-1")
	wantIDs(t, "rest", f.claim(store.ClaimRequest{}), "m1-2", "m1-3", "m1-4", "m1-5")
}

// The tags carry over from claim to claim: single-task claims alternate;
// a team that was away rejoins at the current virtual time (no credit
// for its absence, no burst).
func testFairTagsPersist(t *testing.T, f *fixture) {
	for i := range 10 {
		f.task("ma", 3, at(time.Duration(i)), named(fmt.Sprint("a", i)), inTeam("A"))
	}
	for range 4 {
		if got := f.claim(store.ClaimRequest{Max: 1}); len(got) != 1 || got[0].Team != "A" {
			t.Fatalf("A alone: %v", ids(got))
		}
	}
	for i := range 4 {
		f.task("mb", 3, at(time.Duration(20+i)), named(fmt.Sprint("b", i)), inTeam("B"))
	}
	var teams string
	for range 8 {
		got := f.claim(store.ClaimRequest{Max: 1, Owner: fmt.Sprint("w", len(teams)%3)}) // any worker: the tags are the store's
		if len(got) != 1 {
			t.Fatalf("claim: %v", ids(got))
		}
		teams += got[0].Team
	}
	if teams != "BABABABA" && teams != "ABABABAB" {
		t.Fatalf("teams served %s, want alternation", teams)
	}
}

// model is the test's copy of a store's queue for sched.Claim.
type model struct {
	cands   []sched.Candidate
	tags    sched.Tags
	running map[string]int
}

func (m *model) claim(p sched.Policy) []string {
	res, err := sched.Claim(p, m.running, sched.NewSliceSource(m.cands, p.Now, m.tags))
	if err != nil {
		panic(err)
	}
	m.tags.Apply(res)
	var out []string
	for _, c := range res.Picked {
		out = append(out, c.ID)
		m.running[c.Machine]++
		m.cands = slices.DeleteFunc(m.cands, func(x sched.Candidate) bool { return x.ID == c.ID })
	}
	return out
}

// testClaimMatchesSched: on random queues (teams, machines, priorities,
// ties, retry delays), limits, reserve, aging, weights, busy machines and
// machine filters, a sequence of claims takes exactly what sched.Claim
// takes with the tags carried over.
func testClaimMatchesSched(t *testing.T, f *fixture) {
	rng := rand.New(rand.NewPCG(7, 42))
	now := at(24 * time.Hour)
	m := &model{running: map[string]int{}}
	for i := range 150 {
		enq := now.Add(-time.Duration(rng.Int64N(int64(2 * time.Hour))))
		if rng.IntN(10) == 0 {
			enq = now.Add(time.Duration(rng.Int64N(int64(time.Minute))))
		}
		if rng.IntN(5) == 0 && len(m.cands) > 0 {
			enq = m.cands[rng.IntN(len(m.cands))].EnqueuedAt // ties
		}
		ready := enq
		if rng.IntN(4) == 0 {
			ready = now.Add(time.Duration(rng.Int64N(int64(time.Hour))) - 30*time.Minute)
		}
		mach := rng.IntN(5)
		team := fmt.Sprint("T", mach%3)
		tk := f.task(fmt.Sprint("m", mach), 1+rng.IntN(5), enq, named(fmt.Sprintf("t%03d", i)), inTeam(team),
			func(t *store.Task) { t.ReadyAt = ready })
		m.cands = append(m.cands, sched.Candidate{ID: tk.ID, Seq: int64(i + 1), Team: tk.TeamID, Machine: tk.MachineID,
			Priority: tk.Priority, EnqueuedAt: tk.EnqueuedAt, ReadyAt: tk.ReadyAt})
	}
	for round := range 25 {
		now = now.Add(time.Duration(rng.IntN(10)) * time.Minute)
		r := store.ClaimRequest{Owner: fmt.Sprint("w", round%2), Now: now, LeaseUntil: now.Add(time.Hour), Max: 1 + rng.IntN(12),
			PerMachine: rng.IntN(12), ReserveCritical: rng.IntN(2) == 0, Aging: time.Duration(rng.IntN(4)) * 7 * time.Minute,
			MaxHold: time.Duration(rng.IntN(3)) * 40 * time.Minute, Weights: map[string]int{"T0": 1 + rng.IntN(3), "T2": 1 + rng.IntN(3)}}
		if rng.IntN(3) != 0 {
			r.BusyMachines = []string{fmt.Sprint("m", rng.IntN(5)), "elsewhere"}
		}
		if rng.IntN(2) == 1 {
			r.Machines = []string{"m0", "m1", "m3", "m4"}
		}
		want := m.claim(sched.Policy{Now: r.Now, Max: r.Max, PerMachine: r.PerMachine, ReserveCritical: r.ReserveCritical,
			Aging: r.Aging, Machines: r.Machines, BusyMachines: r.BusyMachines, MaxHold: r.MaxHold, Weights: r.Weights})
		got := ids(f.claim(r))
		if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b []string) bool { return slices.Equal(a, b) })); diff != "" {
			t.Fatalf("claim %d (%+v): engine differs from sched.Claim (-sched +engine):\n%s", round, r, diff)
		}
	}
}

// fleet runs an engine like a worker would, on a simulated clock: claims
// fill free slots, tasks finish after their duration.
type fleet struct {
	f     *fixture
	now   time.Time
	slots int // worker concurrency
	req   store.ClaimRequest
	dur   func(store.Task) time.Duration
	runs  map[string]time.Time // running task → end
	order []store.Task         // claimed, in order
	at    map[string]time.Time // task → when claimed
}

func newFleet(f *fixture, slots int, req store.ClaimRequest) *fleet {
	return &fleet{f: f, now: at(time.Hour), slots: slots, req: req, runs: map[string]time.Time{}, at: map[string]time.Time{},
		dur: func(store.Task) time.Duration { return time.Second }}
}

func (fl *fleet) submit(id, team, machine string, prio int) {
	fl.f.task(machine, prio, fl.now, named(id), inTeam(team))
}

func (fl *fleet) step(d time.Duration) {
	if free := fl.slots - len(fl.runs); free > 0 {
		r := fl.req
		r.Owner, r.Now, r.Max = "w", fl.now, free
		for _, t := range fl.f.claim(r) {
			fl.runs[t.ID] = fl.now.Add(fl.dur(t))
			fl.order = append(fl.order, t)
			fl.at[t.ID] = fl.now
		}
	}
	fl.now = fl.now.Add(d)
	for id, end := range fl.runs {
		if !end.After(fl.now) {
			fl.f.finish(store.Finish{ID: id, Owner: "w", At: fl.now, Next: store.Completed, CountAttempt: true})
			delete(fl.runs, id)
		}
	}
}

// The case through the engine: team A floods its 3 machines; team
// B's one task on its idle machine is claimed by the next claim.
func testStarveTeamFlood(t *testing.T, f *fixture) {
	fl := newFleet(f, 16, store.ClaimRequest{PerMachine: 8, ReserveCritical: true, Aging: 5 * time.Minute})
	fl.dur = func(store.Task) time.Duration { return 200 * time.Millisecond }
	for i := range 150 {
		fl.submit(fmt.Sprint("a", i), "A", fmt.Sprint("a", i%3+1), 3)
	}
	for range 8 {
		fl.step(50 * time.Millisecond)
	}
	fl.submit("b", "B", "b1", 3)
	submitted, before := fl.now, len(fl.order)
	for i := 0; i < 20 && fl.at["b"].IsZero(); i++ {
		fl.step(50 * time.Millisecond)
	}
	if fl.at["b"].IsZero() {
		t.Fatal("B's task was never claimed")
	}
	ahead := slices.IndexFunc(fl.order[before:], func(tk store.Task) bool { return tk.ID == "b" })
	if wait := fl.at["b"].Sub(submitted); ahead != 0 || wait > 200*time.Millisecond {
		t.Fatalf("B's task claimed after %v with %d of A's tasks claimed before it", wait, ahead)
	}
}

// A constant stream of critical tasks on a machine with 2 slots (one held
// for priority 1) does not starve a priority-5 task: it is claimed once
// fully aged (5 intervals) at the latest.
func testStarveCriticalStream(t *testing.T, f *fixture) {
	const aging = 10 * time.Minute
	fl := newFleet(f, 4, store.ClaimRequest{PerMachine: 2, ReserveCritical: true, Aging: aging})
	fl.dur = func(tk store.Task) time.Duration { return time.Duration(40+len(tk.ID)%3*15) * time.Second }
	fl.submit("low", "A", "m", 5)
	for i := 0; i < 140 && fl.at["low"].IsZero(); i++ {
		fl.submit(fmt.Sprint("crit-a", i), "A", "m", 1)
		fl.submit(fmt.Sprint("crit-b", i), "B", "m", 1)
		fl.step(30 * time.Second)
	}
	if fl.at["low"].IsZero() || fl.at["low"].Sub(at(time.Hour)) > 5*aging+2*time.Minute {
		t.Fatalf("priority-5 task under a critical stream: claimed at %v, want within %v", fl.at["low"].Sub(at(time.Hour)), 5*aging+2*time.Minute)
	}
}

// A machine that stays busy holds priority 3..5 work only until aging lifts
// it to priority 2.
func testStarveBusyMachine(t *testing.T, f *fixture) {
	const aging = 5 * time.Minute
	fl := newFleet(f, 10, store.ClaimRequest{Aging: aging, BusyMachines: []string{"hot"}})
	for p := 1; p <= 5; p++ {
		fl.submit(fmt.Sprint("p", p), "A", "hot", p)
	}
	for range 40 {
		fl.step(30 * time.Second)
	}
	for p := 1; p <= 5; p++ {
		want := time.Duration(max(p-sched.BusyFrom+1, 0)) * aging
		if got, ok := fl.at[fmt.Sprint("p", p)]; !ok || got.Sub(at(time.Hour)) != want {
			t.Errorf("priority %d on a busy machine claimed after %v, want %v", p, got.Sub(at(time.Hour)), want)
		}
	}
}
