package rediacc

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/rediacc/rediacc/internal/store"
)

// What a removed machine or a deleted team leaves behind.
//
// A machine's drain and its maintenance windows mean nothing once the
// machine is removed, and a team's pause and windows nothing once the team
// is deleted: their records stay in the store (by id, like the machine's
// and the team's own) but Gates and ListWindows no longer list them, and a
// machine's window no longer applies once the machine has left the
// window's team (the window was its old team's; the new team sets its
// own). A schedule pinned to a removed machine stays listed: its team may
// pin it to another machine, and each of its fires fails meanwhile with a
// schedule.failed alert. A deleted team's schedules could only fail, and
// nobody of the team could see them: DeleteTeam is refused while the team
// has schedules (ErrTeamNotEmpty, naming them), and ListSchedules hides
// those of a deleted team all the same (one created as the team was
// deleted).

// liveness answers, with memoization over one listing, whether a team is
// live and where a machine is.
type liveness struct {
	c        *Client
	teams    map[string]bool
	machines map[string]liveMachine
}

type liveMachine struct {
	teamID string
	live   bool
}

func (c *Client) newLiveness() *liveness {
	return &liveness{c: c, teams: map[string]bool{}, machines: map[string]liveMachine{}}
}

// team reports whether team id names a live (not deleted) team.
func (l *liveness) team(ctx context.Context, id string) (bool, error) {
	if v, ok := l.teams[id]; ok {
		return v, nil
	}
	t, err := l.c.access.GetTeam(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return false, mapStoreErr(err)
	}
	live := err == nil && t.DeletedAt.IsZero()
	l.teams[id] = live
	return live, nil
}

// machine returns machine id's team and whether it is live (registered).
func (l *liveness) machine(ctx context.Context, id string) (liveMachine, error) {
	if v, ok := l.machines[id]; ok {
		return v, nil
	}
	m, err := l.c.engine.GetMachine(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return liveMachine{}, mapStoreErr(err)
	}
	v := liveMachine{live: err == nil && m.DeletedAt.IsZero()}
	if err == nil {
		v.teamID = m.TeamID
	}
	l.machines[id] = v
	return v, nil
}

// gateInForce reports whether a stored gate still concerns something: a
// drain a registered machine, a pause a live team.
func (l *liveness) gateInForce(ctx context.Context, g store.Gate) (bool, error) {
	if g.Kind == store.GateDrain {
		m, err := l.machine(ctx, g.Target)
		return m.live, err
	}
	return l.team(ctx, g.Target)
}

// windowInForce reports whether a stored window still concerns something:
// its team is live and, for a machine's window, the machine is registered
// and still in the window's team.
func (l *liveness) windowInForce(ctx context.Context, w store.Window) (bool, error) {
	live, err := l.team(ctx, w.TeamID)
	if err != nil || !live || w.MachineID == "" {
		return live, err
	}
	m, err := l.machine(ctx, w.MachineID)
	return m.live && m.teamID == w.TeamID, err
}

// teamSchedules returns the names of team teamID's schedules, sorted.
func (c *Client) teamSchedules(ctx context.Context, teamID string) ([]string, error) {
	sch, ok := c.engine.(store.Schedules)
	if !ok {
		return nil, nil
	}
	rs, err := sch.ListSchedules(ctx, store.ScheduleFilter{TeamIDs: []string{teamID}})
	if err != nil {
		return nil, mapStoreErr(err)
	}
	names := make([]string, 0, len(rs))
	for _, r := range rs {
		names = append(names, r.Name)
	}
	sort.Strings(names)
	return names, nil
}

// quoteList renders names as "a", "b" (at most 5, then "and N more").
func quoteList(names []string) string {
	var b strings.Builder
	for i, n := range names {
		if i == 5 {
			fmt.Fprintf(&b, " and %d more", len(names)-5)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", n)
	}
	return b.String()
}
