package rediacc

import (
	"context"
	"fmt"

	"github.com/rediacc/rediacc/internal/sched"
	"github.com/rediacc/rediacc/internal/store"
)

// MaxTeamWeight is the largest weight Config.TeamWeights accepts.
const MaxTeamWeight = sched.MaxWeight

// checkTeamWeights refuses weights outside 1..MaxTeamWeight and empty team
// names (New's validation of Config.TeamWeights).
func checkTeamWeights(w map[string]int) error {
	for team, n := range w {
		if team == "" {
			return fmt.Errorf("%w: Config.TeamWeights has an empty team name", ErrInvalidArgument)
		}
		if n < 1 || n > MaxTeamWeight {
			return fmt.Errorf("%w: Config.TeamWeights[%q] is %d; weights are 1..%d (1 is an equal share)", ErrInvalidArgument, team, n, MaxTeamWeight)
		}
	}
	return nil
}

// claimWeights is ClaimRequest.Weights: Config.TeamWeights (by team name)
// keyed as the store keys teams, by the id of the live team of each name
// (a name no live team has is left out: a later team of that name gets
// the weight once it exists).
func (c *Client) claimWeights(ctx context.Context) map[string]int {
	if len(c.cfg.TeamWeights) == 0 {
		return nil
	}
	ts, err := c.access.ListTeams(ctx, store.TeamFilter{})
	if err != nil {
		c.log.WarnContext(ctx, "team weights not applied: listing teams failed", "error", err)
		return nil
	}
	out := make(map[string]int, len(c.cfg.TeamWeights))
	for _, t := range ts {
		if w, ok := c.cfg.TeamWeights[t.Name]; ok {
			out[t.ID] = w
		}
	}
	return out
}
