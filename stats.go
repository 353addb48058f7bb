package rediacc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/store"
)

// DefaultStatsWindow is StatsFilter.Window's default: finished tasks per
// minute are computed over the last 5 minutes.
const DefaultStatsWindow = 5 * time.Minute

// StatsFilter narrows QueueStats. Zero fields match everything the actor
// may list.
type StatsFilter struct {
	// Team counts only this team's tasks; "" means every team the actor
	// may list.
	Team string
	// Machine counts only this machine's tasks; "" means every machine.
	Machine string
	// Window is the recent span over which finished tasks are counted
	// (QueueStats.Finished, FinishedPerMinute). Default DefaultStatsWindow
	// (5 min); at most 24 h.
	Window time.Duration
}

// FinishedCounts counts tasks that workers finished, by outcome.
type FinishedCounts struct {
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
	Cancelled int `json:"cancelled"` // cancelled while ASSIGNED or PROCESSING
}

// Total returns Completed + Failed + Cancelled.
func (f FinishedCounts) Total() int { return f.Completed + f.Failed + f.Cancelled }

// QueueStats is a snapshot of the queue (see Client.QueueStats). Its JSON
// form uses the tags below; durations are in seconds there
// (oldestPendingAgeSeconds, windowSeconds).
type QueueStats struct {
	// At is when the snapshot was taken (Config.Clock, UTC).
	At time.Time `json:"at"`
	// ByStatus counts tasks by status, then priority. Terminal statuses
	// count the finished tasks the store still keeps. Only non-zero
	// counts appear.
	ByStatus map[Status]map[Priority]int `json:"byStatus"`
	// ByTeam and ByMachine count tasks by team (or machine) name, then
	// status: the live teams' and machines' tasks (a deleted team's finished
	// tasks, and a removed machine's, are not counted here, so that a later
	// team or machine of the same name never shows them).
	ByTeam    map[string]map[Status]int `json:"byTeam"`
	ByMachine map[string]map[Status]int `json:"byMachine"`
	// Pending counts PENDING tasks: ready ones and those waiting out a
	// retry delay.
	Pending int `json:"pending"`
	// Running counts ASSIGNED and PROCESSING tasks.
	Running int `json:"running"`
	// OldestPendingAge is how long ago the oldest PENDING task (ready or
	// waiting out a retry delay) was submitted, counted from its creation
	// (a retry does not reset it); 0 when none is pending. OldestPendingID
	// is that task's id.
	OldestPendingAge time.Duration `json:"-"`
	OldestPendingID  string        `json:"oldestPendingTaskId,omitempty"`
	// Window is the span Finished covers, ending at At.
	Window time.Duration `json:"-"`
	// Finished counts the tasks workers finished within Window.
	Finished FinishedCounts `json:"finished"`
	// FinishedPerMinute is Finished.Total() per minute of Window.
	FinishedPerMinute float64 `json:"finishedPerMinute"`
}

// MarshalJSON adds oldestPendingAgeSeconds and windowSeconds.
func (s QueueStats) MarshalJSON() ([]byte, error) {
	type plain QueueStats
	return json.Marshal(struct {
		plain
		OldestPendingAgeSeconds float64 `json:"oldestPendingAgeSeconds"`
		WindowSeconds           float64 `json:"windowSeconds"`
	}{plain(s), s.OldestPendingAge.Seconds(), s.Window.Seconds()})
}

// finishActions maps the audit actions of a worker finishing a task to the
// outcome they count as.
var finishActions = []struct {
	action string
	count  func(*FinishedCounts)
}{
	{"task.complete", func(f *FinishedCounts) { f.Completed++ }},
	{"task.fail", func(f *FinishedCounts) { f.Failed++ }},
	{"task.cancelled", func(f *FinishedCounts) { f.Cancelled++ }},
}

// QueueStats returns counts of the tasks of the teams the actor may list
// (task.list: every member role; owners and auditors see every team),
// narrowed by f: by status × priority, per team, per machine; the PENDING
// and running (ASSIGNED + PROCESSING) totals; the age of the oldest PENDING
// task; and the tasks finished within f.Window with their rate per minute.
//
// Cost: the counts are one grouped scan of the store's tasks; the oldest
// pending task is one query ordered by creation (LIMIT 1); the finished
// tasks come from the audit trail's task.complete, task.fail and
// task.cancelled records of the window, read through the trail's time and
// action indexes, so the cost follows the number of tasks finished in the
// window, not the size of the queue. Only workers' finishes count: a
// PENDING task cancelled at once never ran and is not counted.
//
// Errors: ErrNoActor; ErrPermissionDenied (f.Team the actor has no role
// in, or no role at all); ErrInvalidArgument (Window negative or above
// 24 h).
func (c *Client) QueueStats(ctx context.Context, f StatsFilter) (QueueStats, error) {
	var sc scope
	if f.Team != "" {
		var err error
		if sc, err = c.resolveTeam(ctx, f.Team); err != nil {
			return QueueStats{}, err
		}
	}
	teams, o, err := c.scopeTeams(ctx, authz.TaskList, sc, audit.EntityTask)
	if err != nil {
		return QueueStats{}, err
	}
	machineID := ""
	if f.Machine != "" {
		m, err := c.engine.MachineByName(ctx, f.Machine)
		switch {
		case errors.Is(err, store.ErrNotFound):
			machineID = "?" + f.Machine // no live machine of that name: nothing matches
		case err != nil:
			return QueueStats{}, mapStoreErr(err)
		default:
			machineID = m.ID
		}
	}
	live, err := c.liveNames(ctx)
	if err != nil {
		return QueueStats{}, err
	}
	if f.Window == 0 {
		f.Window = DefaultStatsWindow
	}
	if f.Window < 0 || f.Window > 24*time.Hour {
		return QueueStats{}, o.fail(ctx, fmt.Errorf("%w: stats window %s (use 1s..24h)", ErrInvalidArgument, f.Window))
	}
	now := c.clock.Now().UTC()
	s := QueueStats{
		At: now, Window: f.Window,
		ByStatus: map[Status]map[Priority]int{}, ByTeam: map[string]map[Status]int{}, ByMachine: map[string]map[Status]int{},
	}
	visible := func(team, machine string) bool { // ids
		return live.teams[team] != "" && (teams == nil || slices.Contains(teams, team)) && (machineID == "" || machine == machineID)
	}

	rows, err := c.engine.Depth(ctx)
	if err != nil {
		return QueueStats{}, mapStoreErr(err)
	}
	for _, r := range rows {
		if !visible(r.TeamID, r.MachineID) || r.Count == 0 {
			continue
		}
		st, p := Status(r.Status), Priority(r.Priority)
		bump(s.ByStatus, st, p, r.Count)
		bump(s.ByTeam, live.teams[r.TeamID], st, r.Count)
		if name := live.machines[r.MachineID]; name != "" {
			bump(s.ByMachine, name, st, r.Count)
		}
		switch {
		case r.Status == store.Pending:
			s.Pending += r.Count
		case r.Status.Active():
			s.Running += r.Count
		}
	}

	if s.Pending > 0 {
		if s.OldestPendingAge, s.OldestPendingID, err = c.oldestPending(ctx, teams, machineID); err != nil {
			return QueueStats{}, mapStoreErr(err)
		}
	}

	af := audit.Filter{Start: now.Add(-f.Window), Result: audit.ResultOK, EntityType: audit.EntityTask, Limit: audit.MaxLimit}
	if len(teams) == 1 {
		af.Team = teams[0]
	}
	for _, fa := range finishActions {
		af.Action, af.AfterSeq = fa.action, 0
		for {
			recs, err := c.access.ListAudit(ctx, af)
			if err != nil {
				return QueueStats{}, mapStoreErr(err)
			}
			for _, r := range recs {
				m := r.Details["machine_id"]
				if m == "" { // written before machines had ids: the name was the id
					m = r.Details["machine"]
				}
				if visible(r.Team, m) {
					fa.count(&s.Finished)
				}
				af.AfterSeq = r.Seq
			}
			if len(recs) < af.Limit {
				break
			}
		}
	}
	s.FinishedPerMinute = float64(s.Finished.Total()) / f.Window.Minutes()
	o.done(ctx)
	return s, nil
}

// names maps the live teams' and machines' ids to their names.
type names struct{ teams, machines map[string]string }

// liveNames reads the names of the live teams and machines.
func (c *Client) liveNames(ctx context.Context) (names, error) {
	n := names{teams: map[string]string{}, machines: map[string]string{}}
	ts, err := c.access.ListTeams(ctx, store.TeamFilter{})
	if err != nil {
		return n, mapStoreErr(err)
	}
	for _, t := range ts {
		n.teams[t.ID] = t.Name
	}
	ms, err := c.engine.ListMachines(ctx, store.MachineFilter{})
	if err != nil {
		return n, mapStoreErr(err)
	}
	for _, m := range ms {
		n.machines[m.ID] = m.Name
	}
	return n, nil
}

// bump adds n to m[k1][k2], making the inner map when needed.
func bump[K1, K2 comparable](m map[K1]map[K2]int, k1 K1, k2 K2, n int) {
	inner := m[k1]
	if inner == nil {
		inner = map[K2]int{}
		m[k1] = inner
	}
	inner[k2] += n
}
