package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
)

// Guards: the checks an operation's authorization relies on, evaluated by
// the engine inside the transaction of the write they guard.
//
// The root package authorizes an operation before calling the store (who
// may do what on which team), but the facts it looked at can change before
// the write commits: a machine moves to another team, a member loses a
// role, a team is deleted. It therefore attaches those facts, as data, to
// the mutating call's context (WithGuard), and every engine evaluates them
// inside the same transaction as the change, before changing anything: the
// write happens only if they still hold. Conditions are plain data, not
// callbacks, so that a SQL engine evaluates them in SQL (PostgreSQL: in the
// transaction, with the rows read locked FOR SHARE or under SERIALIZABLE,
// so that a concurrent change to them waits or fails).

// ConditionKind says what a Condition requires.
type ConditionKind string

// The condition kinds.
const (
	// CondRole: User holds one of StoreRoles store-wide, or TeamID is a
	// live team in which User holds one of TeamRoles.
	CondRole ConditionKind = "role"
	// CondMachineInTeam: MachineID is a live machine of team TeamID.
	CondMachineInTeam ConditionKind = "machine-in-team"
	// CondTeamLive: TeamID is a live (not deleted) team.
	CondTeamLive ConditionKind = "team-live"
	// CondMachineUnchanged: MachineID is a live machine of team TeamID
	// whose record is still Machine: the same name, host, port, user and
	// config (see SameMachine). A worker that keeps machines' records
	// between tasks starts a task with it, so that a task runs only with
	// its machine's current record.
	CondMachineUnchanged ConditionKind = "machine-unchanged"
)

// Condition is one requirement of a guarded write (see WithGuard). Build
// one with HasRole, MachineInTeam or TeamLive.
type Condition struct {
	Kind ConditionKind
	// User (CondRole) is the acting user.
	User string
	// TeamID is the team the condition is about ("" in CondRole: store
	// roles only).
	TeamID string
	// TeamRoles and StoreRoles (CondRole) are the roles that satisfy it.
	TeamRoles  []string
	StoreRoles []string
	// MachineID (CondMachineInTeam, CondMachineUnchanged) is the machine.
	MachineID string
	// Machine (CondMachineUnchanged) is the machine's record as the
	// caller read it (GetMachine).
	Machine *Machine
}

// HasRole requires user to hold one of storeRoles store-wide, or one of
// teamRoles in the live team teamID ("" for none).
func HasRole(user, teamID string, teamRoles, storeRoles []string) Condition {
	return Condition{Kind: CondRole, User: user, TeamID: teamID, TeamRoles: teamRoles, StoreRoles: storeRoles}
}

// MachineInTeam requires machineID to be a live machine of team teamID.
func MachineInTeam(machineID, teamID string) Condition {
	return Condition{Kind: CondMachineInTeam, MachineID: machineID, TeamID: teamID}
}

// MachineUnchanged requires m (a record read with GetMachine) to be a live
// machine of team m.TeamID whose record has not changed since (see
// SameMachine).
func MachineUnchanged(m Machine) Condition {
	return Condition{Kind: CondMachineUnchanged, MachineID: m.ID, TeamID: m.TeamID, Machine: &m}
}

// SameMachine reports whether the records a and b of one machine name the
// same machine the same way: name, team, host, port, user and config
// (what a connection to it is made from). Health and times are not
// compared.
func SameMachine(a, b Machine) bool {
	return a.ID == b.ID && a.Name == b.Name && a.TeamID == b.TeamID && a.Host == b.Host && a.Port == b.Port &&
		a.User == b.User && bytes.Equal(a.Config, b.Config)
}

// TeamLive requires teamID to be a live team.
func TeamLive(teamID string) Condition {
	return Condition{Kind: CondTeamLive, TeamID: teamID}
}

// Validate reports a malformed condition (ErrInvalidArgument).
func (c Condition) Validate() error {
	switch c.Kind {
	case CondRole:
		if c.User == "" {
			return fmt.Errorf("%w: guard %s: no user", ErrInvalidArgument, c.Kind)
		}
		if len(c.TeamRoles) > 0 && c.TeamID == "" {
			return fmt.Errorf("%w: guard %s: team roles without a team", ErrInvalidArgument, c.Kind)
		}
	case CondMachineInTeam:
		if c.MachineID == "" || c.TeamID == "" {
			return fmt.Errorf("%w: guard %s: machine %q or team %q is empty", ErrInvalidArgument, c.Kind, c.MachineID, c.TeamID)
		}
	case CondTeamLive:
		if c.TeamID == "" {
			return fmt.Errorf("%w: guard %s: no team", ErrInvalidArgument, c.Kind)
		}
	case CondMachineUnchanged:
		if c.MachineID == "" || c.TeamID == "" || c.Machine == nil || c.Machine.ID != c.MachineID {
			return fmt.Errorf("%w: guard %s: machine %q, team %q or the record is missing", ErrInvalidArgument, c.Kind, c.MachineID, c.TeamID)
		}
	default:
		return fmt.Errorf("%w: guard: unknown condition kind %q", ErrInvalidArgument, c.Kind)
	}
	return nil
}

// String describes the condition, e.g. `alice holds admin or operator in
// team "t1" (or owner store-wide)`.
func (c Condition) String() string {
	switch c.Kind {
	case CondRole:
		var parts []string
		if len(c.TeamRoles) > 0 {
			parts = append(parts, fmt.Sprintf("%s in team %q", strings.Join(c.TeamRoles, " or "), c.TeamID))
		}
		if len(c.StoreRoles) > 0 {
			parts = append(parts, strings.Join(c.StoreRoles, " or ")+" store-wide")
		}
		if len(parts) == 0 {
			parts = append(parts, "no role at all")
		}
		return fmt.Sprintf("%s holds %s", c.User, strings.Join(parts, ", or "))
	case CondMachineInTeam:
		return fmt.Sprintf("machine %q is registered in team %q", c.MachineID, c.TeamID)
	case CondTeamLive:
		return fmt.Sprintf("team %q exists", c.TeamID)
	case CondMachineUnchanged:
		return fmt.Sprintf("machine %q is registered in team %q, its record unchanged", c.MachineID, c.TeamID)
	}
	return fmt.Sprintf("condition %q", c.Kind)
}

// ErrGuard: a guard condition did not hold when the write was to happen;
// nothing changed. Engines return it as a *GuardError.
var ErrGuard = errors.New("store: a guarded condition no longer holds")

// GuardError names the condition that failed and what the engine found.
type GuardError struct {
	Condition Condition
	// Found says what the engine found instead, e.g. "the machine is in
	// team \"t2\"".
	Found string
}

// Error implements error.
func (e *GuardError) Error() string {
	return fmt.Sprintf("%v: %s: %s", ErrGuard, e.Condition, e.Found)
}

// Is makes errors.Is(err, ErrGuard) hold.
func (e *GuardError) Is(target error) bool { return target == ErrGuard }

type guardKey struct{}

// WithGuard returns a context carrying conditions (after those ctx already
// carries). Every mutating Engine and Access method evaluates them, in
// order, inside its transaction before its change and fails with the
// *GuardError of the first that does not hold, changing nothing and
// appending no audit record. A malformed condition gives
// ErrInvalidArgument.
func WithGuard(ctx context.Context, conds ...Condition) context.Context {
	if len(conds) == 0 {
		return ctx
	}
	prev := GuardFrom(ctx)
	all := make([]Condition, 0, len(prev)+len(conds))
	all = append(append(all, prev...), conds...)
	return context.WithValue(ctx, guardKey{}, all)
}

// GuardFrom returns the conditions ctx carries (nil when none).
func GuardFrom(ctx context.Context) []Condition {
	cs, _ := ctx.Value(guardKey{}).([]Condition)
	return cs
}
