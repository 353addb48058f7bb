package rediacc

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/store"
)

// DefaultTeam is the team every new store has, and the team of a machine
// added without one. It cannot be renamed or deleted.
const DefaultTeam = store.DefaultTeam

// Role is what a user may do. Roles are denied by default and checked inside
// the SDK on every operation (docs/ROLES.md has the full matrix):
//
//   - RoleOwner (store-wide): everything, including teams and owners.
//   - RoleAdmin (per team): members, machines, vault and tasks of the team.
//   - RoleOperator (per team): submit, cancel and read tasks and their
//     output on the team's machines; use the team's secrets in tasks.
//   - RoleViewer (per team): list and inspect the team's machines, queue and
//     tasks; no output, no cancel.
//   - RoleAuditor (store-wide): reads and verifies the audit trail only.
//
// The model follows Teleport's and Rundeck's role-based access: a member of
// staging can neither see nor touch prod's machines and tasks.
type Role string

// Roles.
const (
	RoleOwner    Role = "owner"
	RoleAdmin    Role = "admin"
	RoleOperator Role = "operator"
	RoleViewer   Role = "viewer"
	RoleAuditor  Role = "auditor"
)

// ParseRole reads a role name (case-insensitive). ErrInvalidArgument.
func ParseRole(s string) (Role, error) {
	r, err := authz.ParseRole(s)
	if err != nil {
		return "", fmt.Errorf("%w: role %q (use owner, admin, operator, viewer or auditor)", ErrInvalidArgument, s)
	}
	return Role(r), nil
}

// Team groups machines and members, one per environment (prod, staging,
// dev), each with its own vault.
type Team struct {
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	CreatedAt   time.Time `json:"createdAt"`
}

// Member is a user's role in a team.
type Member struct {
	Team    string    `json:"team"`
	User    string    `json:"user"`
	Role    Role      `json:"role"`
	AddedAt time.Time `json:"addedAt"`
}

func validateTeamName(name string) error {
	if !machineNameRE.MatchString(name) {
		return fmt.Errorf("%w: team name %q must be 1..63 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit", ErrInvalidArgument, name)
	}
	return nil
}

// CreateTeam creates a team. Owners only.
// Errors: ErrNoActor, ErrPermissionDenied, ErrInvalidArgument, ErrExists.
func (c *Client) CreateTeam(ctx context.Context, name, description string) (Team, error) {
	o, _, err := c.authorize(ctx, authz.TeamCreate, "", audit.EntityTeam, name, map[string]string{"description": description})
	if err != nil {
		return Team{}, err
	}
	if err := validateTeamName(name); err != nil {
		return Team{}, o.fail(ctx, err)
	}
	t := store.Team{Name: name, Description: description, CreatedAt: c.clock.Now().UTC()}
	if err := c.access.CreateTeam(o.ctx(ctx), t); err != nil {
		if errors.Is(err, store.ErrExists) {
			err = fmt.Errorf("team %q: %w", name, ErrExists)
		}
		return Team{}, o.fail(ctx, mapStoreErr(err))
	}
	return Team(t), nil
}

// Teams lists the teams the actor belongs to (owners: all), by name.
func (c *Client) Teams(ctx context.Context) ([]Team, error) {
	o, g, err := c.authorizeAny(ctx, authz.TeamList, "", audit.EntityTeam)
	if err != nil {
		return nil, err
	}
	ts, err := c.access.ListTeams(ctx)
	if err != nil {
		return nil, mapStoreErr(err)
	}
	out := []Team{}
	for _, t := range ts {
		if authz.Allowed(g, authz.TeamList, t.Name) {
			out = append(out, Team(t))
		}
	}
	o.done(ctx)
	return out, nil
}

// RenameTeam renames a team (its machines, tasks and members follow). Owners
// only. Errors: ErrPermissionDenied, ErrInvalidArgument (bad name, or the
// default team), ErrNotFound, ErrExists.
func (c *Client) RenameTeam(ctx context.Context, oldName, newName string) error {
	o, _, err := c.authorize(ctx, authz.TeamRename, oldName, audit.EntityTeam, oldName, map[string]string{"new_name": newName})
	if err != nil {
		return err
	}
	if err := validateTeamName(newName); err != nil {
		return o.fail(ctx, err)
	}
	return o.fail(ctx, c.teamErr(c.access.RenameTeam(o.ctx(ctx), oldName, newName), oldName))
}

// DeleteTeam deletes a team and its memberships. Owners only. A team that
// still has machines or unfinished tasks is refused (ErrTeamNotEmpty), and
// so is the default team. Errors: ErrPermissionDenied, ErrNotFound,
// ErrTeamNotEmpty, ErrInvalidArgument.
func (c *Client) DeleteTeam(ctx context.Context, name string) error {
	o, _, err := c.authorize(ctx, authz.TeamDelete, name, audit.EntityTeam, name, nil)
	if err != nil {
		return err
	}
	return o.fail(ctx, c.teamErr(c.access.DeleteTeam(o.ctx(ctx), name), name))
}

// ErrTeamNotEmpty: the team still has machines or unfinished tasks.
var ErrTeamNotEmpty = errors.New("team still has machines or unfinished tasks (move or remove them first)")

func (c *Client) teamErr(err error, team string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("team %q: %w", team, ErrNotFound)
	case errors.Is(err, store.ErrTeamNotEmpty):
		return fmt.Errorf("team %q: %w: %v", team, ErrTeamNotEmpty, err)
	case errors.Is(err, store.ErrInvalidArgument):
		return fmt.Errorf("%w: team %q: %v", ErrInvalidArgument, team, err)
	}
	return mapStoreErr(err)
}

// SetMember adds user to team with role, or changes the member's role.
// Team admins and owners. role is RoleAdmin, RoleOperator or RoleViewer.
// Errors: ErrPermissionDenied, ErrInvalidArgument, ErrNotFound (team).
func (c *Client) SetMember(ctx context.Context, team, user string, role Role) (Member, error) {
	action := authz.TeamMemberAdd
	if old, err := c.access.ListMembers(ctx, team); err == nil {
		for _, m := range old {
			if m.User == user {
				action = authz.TeamMemberRole
			}
		}
	}
	o, _, err := c.authorize(ctx, action, team, audit.EntityMember, user, map[string]string{"role": string(role)})
	if err != nil {
		return Member{}, err
	}
	if err := validateUser(user); err != nil {
		return Member{}, o.fail(ctx, err)
	}
	if role != RoleAdmin && role != RoleOperator && role != RoleViewer {
		return Member{}, o.fail(ctx, fmt.Errorf("%w: team role %q (use admin, operator or viewer; owner and auditor are store-wide roles: rediacc role add, or Client.AddStoreRole)", ErrInvalidArgument, role))
	}
	m := store.Member{Team: team, User: user, Role: string(role), AddedAt: c.clock.Now().UTC()}
	if _, err := c.access.PutMember(o.ctx(ctx), m); err != nil {
		return Member{}, o.fail(ctx, c.teamErr(err, team))
	}
	return Member{Team: team, User: user, Role: role, AddedAt: m.AddedAt}, nil
}

// RemoveMember removes user from team. Team admins and owners.
// Errors: ErrPermissionDenied, ErrNotFound.
func (c *Client) RemoveMember(ctx context.Context, team, user string) error {
	o, _, err := c.authorize(ctx, authz.TeamMemberRemove, team, audit.EntityMember, user, nil)
	if err != nil {
		return err
	}
	if err := c.access.DeleteMember(o.ctx(ctx), team, user); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = fmt.Errorf("member %q of team %q: %w", user, team, ErrNotFound)
		}
		return o.fail(ctx, mapStoreErr(err))
	}
	return nil
}

// Members lists a team's members by user. Team admins and owners.
func (c *Client) Members(ctx context.Context, team string) ([]Member, error) {
	o, _, err := c.authorize(ctx, authz.TeamMemberList, team, audit.EntityMember, "", nil)
	if err != nil {
		return nil, err
	}
	if _, err := c.access.GetTeam(ctx, team); err != nil {
		return nil, o.fail(ctx, c.teamErr(err, team))
	}
	ms, err := c.access.ListMembers(ctx, team)
	if err != nil {
		return nil, mapStoreErr(err)
	}
	out := make([]Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, Member{Team: m.Team, User: m.User, Role: Role(m.Role), AddedAt: m.AddedAt})
	}
	o.done(ctx)
	return out, nil
}

// AddStoreRole grants user a store-wide role, RoleOwner or RoleAuditor.
// Owners only. Errors: ErrPermissionDenied, ErrInvalidArgument.
func (c *Client) AddStoreRole(ctx context.Context, user string, role Role) error {
	action := authz.OwnerAdd
	if role == RoleAuditor {
		action = authz.AuditorAdd
	}
	o, _, err := c.authorize(ctx, action, "", audit.EntityMember, user, map[string]string{"role": string(role)})
	if err != nil {
		return err
	}
	if err := validateUser(user); err != nil {
		return o.fail(ctx, err)
	}
	if role != RoleOwner && role != RoleAuditor {
		return o.fail(ctx, fmt.Errorf("%w: store role %q (use owner or auditor)", ErrInvalidArgument, role))
	}
	return o.fail(ctx, mapStoreErr(c.access.PutStoreRole(o.ctx(ctx), store.StoreRole{User: user, Role: string(role), AddedAt: c.clock.Now().UTC()})))
}

// RemoveStoreRole revokes a store-wide role. Owners only; the last owner
// cannot be removed. Errors: ErrPermissionDenied, ErrNotFound,
// ErrInvalidArgument (last owner).
func (c *Client) RemoveStoreRole(ctx context.Context, user string, role Role) error {
	action := authz.OwnerRemove
	if role == RoleAuditor {
		action = authz.AuditorRemove
	}
	o, _, err := c.authorize(ctx, action, "", audit.EntityMember, user, map[string]string{"role": string(role)})
	if err != nil {
		return err
	}
	err = c.access.DeleteStoreRole(o.ctx(ctx), user, string(role))
	switch {
	case errors.Is(err, store.ErrNotFound):
		err = fmt.Errorf("%s is not %s: %w", user, role, ErrNotFound)
	case errors.Is(err, store.ErrLastOwner):
		err = fmt.Errorf("%w: %s is the last owner; add another owner first", ErrInvalidArgument, user)
	}
	return o.fail(ctx, mapStoreErr(err))
}

// StoreRoles lists the store-wide roles (owners and auditors). Owners only.
func (c *Client) StoreRoles(ctx context.Context) ([]Member, error) {
	o, _, err := c.authorize(ctx, authz.OwnerAdd, "", audit.EntityMember, "", nil)
	if err != nil {
		return nil, err
	}
	rs, err := c.access.StoreRoles(ctx, "")
	if err != nil {
		return nil, mapStoreErr(err)
	}
	out := make([]Member, 0, len(rs))
	for _, r := range rs {
		out = append(out, Member{User: r.User, Role: Role(r.Role), AddedAt: r.AddedAt})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].User < out[j].User })
	o.done(ctx)
	return out, nil
}

// MoveMachine assigns a machine to another team. The actor must be admin of
// both teams (or an owner); a machine with unfinished tasks is refused.
// Errors: ErrPermissionDenied, ErrNotFound, ErrMachineBusy.
func (c *Client) MoveMachine(ctx context.Context, name, team string) error {
	m, err := c.engine.GetMachine(ctx, name)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("machine %q: %w", name, ErrNotFound)
		}
		return mapStoreErr(err)
	}
	o, g, err := c.authorize(ctx, authz.MachineMove, m.Team, audit.EntityMachine, name, map[string]string{"from": m.Team, "to": team})
	if err != nil {
		return err
	}
	if d := authz.ExplainMove(g, m.Team, team); !d.Allowed {
		return c.deny(ctx, o, d.Reason)
	}
	// A key imported into the old team's vault follows the machine.
	mm, err := machineFromRecord(m)
	if err != nil {
		return o.fail(ctx, err)
	}
	var v Vault
	if mm.IdentitySecret != "" && team != m.Team {
		if v, err = c.vault(); err != nil {
			return o.fail(ctx, err)
		}
		s, err := v.Get(ctx, m.Team, mm.IdentitySecret)
		if err != nil {
			return o.fail(ctx, fmt.Errorf("machine %q: its identity in team %q's vault: %w", name, m.Team, vaultErr(err)))
		}
		if _, err := v.Put(ctx, team, mm.IdentitySecret, s.Value, PutOptions{}); err != nil {
			return o.fail(ctx, fmt.Errorf("machine %q: copy its identity to team %q's vault: %w", name, team, vaultErr(err)))
		}
	}
	err = c.access.MoveMachine(o.ctx(ctx), name, team)
	if v != nil {
		from := team // undo the copy when the move failed
		if err == nil {
			from = m.Team
		}
		if derr := v.Delete(ctx, from, mm.IdentitySecret); derr != nil {
			c.log.WarnContext(ctx, "machine identity left behind in a vault", "machine", name, "team", from, "error", derr)
		}
	}
	switch {
	case errors.Is(err, store.ErrMachineHasTasks):
		err = fmt.Errorf("machine %q: %w (cancel or wait for them first)", name, ErrMachineBusy)
	case errors.Is(err, store.ErrNotFound):
		err = fmt.Errorf("team %q or machine %q: %w", team, name, ErrNotFound)
	}
	if err == nil {
		c.pool.Forget(name)
	}
	return o.fail(ctx, mapStoreErr(err))
}
