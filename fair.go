package rediacc

import (
	"fmt"

	"github.com/rediacc/rediacc/internal/sched"
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

// claimWeights is ClaimRequest.Weights: Config.TeamWeights keyed as the
// store keys teams.
func (c *Client) claimWeights() map[string]int {
	if len(c.cfg.TeamWeights) == 0 {
		return nil
	}
	return c.cfg.TeamWeights
}
