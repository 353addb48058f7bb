package rediacc

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/rediacc/rediacc/internal/store"
)

// ErrNoEligibleMachine: a task names a team (and selector) instead of a
// machine, and no machine of the team matches the selector and is healthy;
// or a fan-out found no machine. The error names the team and selector.
// It is an ErrInvalidArgument: nothing is written. The CLI exits 5.
var ErrNoEligibleMachine = fmt.Errorf("%w: no eligible machine", ErrInvalidArgument)

// candidate is a machine placement may pick.
type candidate struct {
	m      store.Machine
	labels map[string]string
	h      healthView
}

// placer places tasks on machines, remembering the tasks it placed so that
// a batch spreads over the machines as its tasks are placed one by one.
// Not safe for concurrent use.
type placer struct {
	c      *Client
	now    time.Time
	teams  map[string][]candidate   // machines of a team (id), by name
	queued map[string]int           // PENDING+ASSIGNED+PROCESSING per machine id, batch included
	vkeys  map[string][]string      // vault keys per team (id), listed once per submission (limits.go)
	byName map[string]store.Machine // machines named by the submission, read once (machineByName)
}

// machineByName returns the live machine of that name, read from the store
// once per submission: a batch of 10,000 tasks names the same machines
// again and again (its reads were a third of SubmitBatch's CPU). The
// write's guard checks again, in its transaction, that each machine is
// still its team's. Errors are the store's (store.ErrNotFound).
func (p *placer) machineByName(ctx context.Context, name string) (store.Machine, error) {
	if m, ok := p.byName[name]; ok {
		return m, nil
	}
	m, err := p.c.engine.MachineByName(ctx, name)
	if err != nil {
		return m, err
	}
	if p.byName == nil {
		p.byName = map[string]store.Machine{}
	}
	p.byName[name] = m
	return m, nil
}

func (c *Client) newPlacer() *placer {
	return &placer{c: c, now: c.clock.Now().UTC(), teams: map[string][]candidate{}, queued: map[string]int{}}
}

// matches reports whether labels hold every key=value of selector.
func matches(labels, selector map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// formatSelector writes a selector as "k=v,k2=v2" (sorted), or "(none)".
func formatSelector(sel map[string]string) string {
	if len(sel) == 0 {
		return "(none)"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(sel)) {
		parts = append(parts, k+"="+sel[k])
	}
	return strings.Join(parts, ",")
}

// machines loads the machines of team with their labels and health, and
// their queue counts (once per team).
func (p *placer) machines(ctx context.Context, team scope) ([]candidate, error) {
	if cs, ok := p.teams[team.id]; ok {
		return cs, nil
	}
	rs, err := p.c.engine.ListMachines(ctx, store.MachineFilter{TeamID: team.id})
	if err != nil {
		return nil, mapStoreErr(err)
	}
	cs := make([]candidate, 0, len(rs))
	names := make([]string, 0, len(rs))
	for _, r := range rs {
		m, err := machineFromRecord(r)
		if err != nil {
			return nil, err
		}
		cs = append(cs, candidate{m: r, labels: m.Labels, h: p.c.viewHealth(r, p.now)})
		names = append(names, r.ID)
	}
	if len(names) > 0 {
		q, err := p.c.engine.QueuedByMachine(ctx, names)
		if err != nil {
			return nil, mapStoreErr(err)
		}
		for n, k := range q {
			p.queued[n] += k
		}
	}
	p.teams[team.id] = cs
	return cs, nil
}

// matching returns the machines of team whose labels hold selector, by
// name, whatever their health (the fan-out's set).
func (p *placer) matching(ctx context.Context, team scope, selector map[string]string) ([]candidate, error) {
	cs, err := p.machines(ctx, team)
	if err != nil {
		return nil, err
	}
	var out []candidate
	for _, cd := range cs {
		if matches(cd.labels, selector) {
			out = append(out, cd)
		}
	}
	return out, nil
}

// place picks the machine of team matching selector for a task of priority
// prio: among the healthy ones (a recent failed probe excludes a machine;
// unknown health does not), busy ones only for priority 1–2 or when no
// other is eligible; then the fewest queued+running tasks, the lowest load
// per CPU, the most free memory, the name. The task is counted on the
// machine picked. ErrNoEligibleMachine.
func (p *placer) place(ctx context.Context, team scope, selector map[string]string, prio Priority) (store.Machine, error) {
	cs, err := p.machines(ctx, team)
	if err != nil {
		return store.Machine{}, err
	}
	var match, healthy, calm []candidate
	for _, cd := range cs {
		if !matches(cd.labels, selector) {
			continue
		}
		match = append(match, cd)
		if cd.h.failed {
			continue
		}
		healthy = append(healthy, cd)
		if !cd.h.busy {
			calm = append(calm, cd)
		}
	}
	if len(healthy) == 0 {
		why := fmt.Sprintf("the team has %d machine(s), %d match the selector", len(cs), len(match))
		if len(match) > 0 {
			why += ", all failing their health probe"
		}
		return store.Machine{}, fmt.Errorf("%w in team %q with selector %s (%s)", ErrNoEligibleMachine, team.label(), formatSelector(selector), why)
	}
	pool := healthy
	if prio >= Normal && len(calm) > 0 {
		pool = calm
	}
	best := slices.MinFunc(pool, func(a, b candidate) int {
		return cmp.Or(
			cmp.Compare(p.queued[a.m.ID], p.queued[b.m.ID]),
			cmp.Compare(loadKey(a), loadKey(b)),
			cmp.Compare(freeMemKey(b), freeMemKey(a)),
			cmp.Compare(a.m.Name, b.m.Name),
		)
	})
	p.queued[best.m.ID]++
	return best.m, nil
}

// loadKey orders by load per CPU, unknown last.
func loadKey(cd candidate) float64 {
	if s := cd.h.rec.Sample; s != nil && cd.h.fresh {
		return s.LoadPerCPU
	}
	return math.Inf(1)
}

// freeMemKey orders by available memory (bytes), unknown as none.
func freeMemKey(cd candidate) float64 {
	if s := cd.h.rec.Sample; s != nil && cd.h.fresh {
		return float64(s.MemAvailableBytes)
	}
	return -1
}
