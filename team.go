package rediacc

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/vault"
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
		return "", fmt.Errorf("%w: role %s (use owner, admin, operator, viewer or auditor)", ErrInvalidArgument, quoteInput(s))
	}
	return Role(r), nil
}

// Team groups machines and members, one per environment (prod, staging,
// dev), each with its own vault. ID is immutable; Name is a label, unique
// among live teams, that RenameTeam changes: machines, tasks, members,
// the vault and audit records stay with the id. A deleted team keeps its
// record (DeletedAt set), and a later team of the same name gets a new id
// and inherits nothing of it.
type Team struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	CreatedAt   time.Time `json:"createdAt"`
	// DeletedAt is when the team was deleted; zero for a live team.
	DeletedAt time.Time `json:"deletedAt,omitzero"`
}

func teamFromRecord(t store.Team) Team {
	return Team{ID: t.ID, Name: t.Name, Description: t.Description, CreatedAt: t.CreatedAt, DeletedAt: t.DeletedAt}
}

// Member is a user's role in a team.
type Member struct {
	Team    string    `json:"team"`             // the team's name ("" for store-wide roles)
	TeamID  string    `json:"teamId,omitempty"` // the team's id
	User    string    `json:"user"`
	Role    Role      `json:"role"`
	AddedAt time.Time `json:"addedAt"`
}

func validateTeamName(name string) error {
	if !machineNameRE.MatchString(name) {
		return fmt.Errorf("%w: team name %s must be 1..63 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit", ErrInvalidArgument, quoteInput(name))
	}
	return nil
}

// CreateTeam creates a team with a new id. Owners only.
// Errors: ErrNoActor, ErrPermissionDenied, ErrInvalidArgument, ErrExists
// (a live team has the name).
func (c *Client) CreateTeam(ctx context.Context, name, description string) (Team, error) {
	o, _, err := c.authorize(ctx, authz.TeamCreate, scope{}, audit.EntityTeam, "", map[string]string{"description": description, "name": name})
	if err != nil {
		return Team{}, err
	}
	if err := validateTeamName(name); err != nil {
		return Team{}, o.fail(ctx, err)
	}
	id := uuid.NewString()
	o.eid = id
	t, err := c.access.CreateTeam(o.ctx(ctx), store.Team{ID: id, Name: name, Description: description, CreatedAt: c.clock.Now().UTC()})
	if err != nil {
		if errors.Is(err, store.ErrExists) {
			err = fmt.Errorf("team %s: %w", quoteInput(name), ErrExists)
		}
		return Team{}, o.fail(ctx, mapStoreErr(err))
	}
	return teamFromRecord(t), nil
}

// TeamFilter narrows Client.Teams.
type TeamFilter struct {
	// IncludeDeleted lists deleted teams too (Team.DeletedAt set), with
	// their ids: how owners and auditors find the id under which a deleted
	// team's tasks and audit records stay readable (ListFilter.TeamID,
	// AuditFilter.TeamID). Needs a store-wide role (owner or auditor).
	IncludeDeleted bool
}

// Teams lists the live teams the actor belongs to (owners: all), by name.
// Errors: ErrNoActor, ErrPermissionDenied (no role in any team; or
// IncludeDeleted without a store-wide role).
func (c *Client) Teams(ctx context.Context, f ...TeamFilter) ([]Team, error) {
	var tf TeamFilter
	if len(f) > 0 {
		tf = f[0]
	}
	var (
		o   *op
		g   authz.Grants
		err error
	)
	if tf.IncludeDeleted {
		// Deleted teams have no members: only store-wide roles see them.
		if o, err = c.newOp(ctx, authz.TeamList, scope{}, audit.EntityTeam, "", map[string]string{"include_deleted": "true"}); err != nil {
			return nil, err
		}
		g = o.grants
		if !authz.Allowed(g, authz.TeamList, "") && !authz.Allowed(g, authz.AuditRead, "") {
			return nil, c.deny(ctx, o, "listing deleted teams needs a store-wide role (owner or auditor)")
		}
	} else if o, g, err = c.authorizeAny(ctx, authz.TeamList, scope{}, audit.EntityTeam); err != nil {
		return nil, err
	}
	ts, err := c.access.ListTeams(ctx, store.TeamFilter{IncludeDeleted: tf.IncludeDeleted})
	if err != nil {
		return nil, mapStoreErr(err)
	}
	out := []Team{}
	for _, t := range ts {
		if tf.IncludeDeleted || authz.Allowed(g, authz.TeamList, t.ID) {
			out = append(out, teamFromRecord(t))
		}
	}
	o.done(ctx)
	return out, nil
}

// RenameTeam renames a team. Its id does not change, so its machines,
// tasks, members, vault and audit records stay with it; the old name is
// free for a new team, which starts empty. Owners only. Errors:
// ErrPermissionDenied, ErrInvalidArgument (bad name, or the default team),
// ErrNotFound, ErrExists.
func (c *Client) RenameTeam(ctx context.Context, oldName, newName string) error {
	sc, err := c.resolveTeam(ctx, oldName)
	if err != nil {
		return err
	}
	o, _, err := c.authorize(ctx, authz.TeamRename, sc, audit.EntityTeam, sc.id, map[string]string{"new_name": newName})
	if err != nil {
		return err
	}
	if err := validateTeamName(newName); err != nil {
		return o.fail(ctx, err)
	}
	return o.fail(ctx, c.teamErr(c.access.RenameTeam(o.ctx(ctx), sc.id, newName), oldName))
}

// TeamDeleteOption tunes Client.DeleteTeam.
type TeamDeleteOption func(*teamDeleteOptions)

type teamDeleteOptions struct{ purgeVault bool }

// PurgeVault makes DeleteTeam destroy the team's vault: every secret,
// every version, and the machines' imported identities (for the local
// vault, the team's files; for HashiCorp Vault, the metadata and all
// versions of every key under the team's path). Without it, DeleteTeam
// refuses a team whose vault holds secrets (ErrTeamVaultNotEmpty). The
// purge is audited (action team.vault.purge, with the number of keys).
func PurgeVault() TeamDeleteOption { return func(o *teamDeleteOptions) { o.purgeVault = true } }

// ErrTeamNotEmpty: the team still has machines, unfinished tasks or
// schedules (the error says which).
var ErrTeamNotEmpty = errors.New("team still has machines or unfinished tasks (move or remove them first)")

// ErrTeamVaultNotEmpty: the team's vault still holds secrets. Delete them
// first, or delete the team with PurgeVault (CLI: --purge-vault) to
// destroy them. It is an ErrTeamNotEmpty.
var ErrTeamVaultNotEmpty = fmt.Errorf("%w: its vault holds secrets (delete them, or destroy them with the PurgeVault option, CLI --purge-vault)", ErrTeamNotEmpty)

// DeleteTeam deletes a team: its memberships go, its record stays with the
// time of deletion (its finished tasks and audit records stay readable by
// its id, see TeamFilter.IncludeDeleted), and its name becomes free; a new
// team of that name gets a new id and sees nothing of this one. Owners
// only. Refused, changing nothing: the default team; a team that still
// has machines or unfinished tasks (ErrTeamNotEmpty); a team whose vault
// holds secrets (ErrTeamVaultNotEmpty), unless PurgeVault is given, which
// destroys them once the team is deleted. An empty vault's files are
// removed with the team.
//
// Errors: ErrPermissionDenied, ErrNotFound, ErrTeamNotEmpty,
// ErrTeamVaultNotEmpty, ErrInvalidArgument, and the vault's errors (a
// vault that cannot be read refuses the delete; a purge that fails after
// the team was deleted is reported and can be repeated with
// PurgeTeamVault).
func (c *Client) DeleteTeam(ctx context.Context, name string, opts ...TeamDeleteOption) error {
	var do teamDeleteOptions
	for _, opt := range opts {
		opt(&do)
	}
	sc, err := c.resolveTeam(ctx, name)
	if err != nil {
		return err
	}
	detail := map[string]string{}
	if do.purgeVault {
		detail["purge_vault"] = "true"
	}
	o, _, err := c.authorize(ctx, authz.TeamDelete, sc, audit.EntityTeam, sc.id, detail)
	if err != nil {
		return err
	}
	if sc.id == DefaultTeam {
		return o.fail(ctx, fmt.Errorf("%w: team %s cannot be deleted", ErrInvalidArgument, DefaultTeam))
	}
	// Everything that can refuse the delete is checked before anything
	// changes: the store's rules (again in the delete's transaction), and
	// the vault.
	if err := c.teamDeletable(ctx, sc); err != nil {
		return o.fail(ctx, err)
	}
	v, keys, err := c.teamVaultKeys(ctx, sc)
	if err != nil {
		return o.fail(ctx, err)
	}
	if len(keys) > 0 && !do.purgeVault {
		return o.fail(ctx, &isError{msg: fmt.Sprintf("team %s cannot be deleted: its vault holds %d secret(s), e.g. %q: delete them (rediacc vault rm), or destroy them with the team (PurgeVault, CLI --purge-vault)",
			quoteInput(name), len(keys), keys[0]), err: ErrTeamVaultNotEmpty, is: ErrTeamVaultNotEmpty})
	}
	o.detail["vault_keys"] = strconv.Itoa(len(keys))
	if err := c.access.DeleteTeam(o.ctx(ctx), sc.id, c.clock.Now().UTC()); err != nil {
		return o.fail(ctx, c.teamErr(err, name))
	}
	c.log.InfoContext(ctx, "team deleted", "team", name, "team_id", sc.id, "actor", o.actor)
	if v == nil {
		return nil
	}
	return c.purgeVault(ctx, o, v, sc, len(keys))
}

// PurgeTeamVault destroys the vault of a deleted team (by id), as
// DeleteTeam's PurgeVault does: for a purge that failed after its team was
// deleted. Owners only. Errors: ErrPermissionDenied, ErrNotFound (no such
// team), ErrInvalidArgument (the team is not deleted: use DeleteTeam), the
// vault's errors.
func (c *Client) PurgeTeamVault(ctx context.Context, teamID string) error {
	sc, err := c.scopeOfID(ctx, teamID)
	if err != nil {
		return err
	}
	o, _, err := c.authorize(ctx, authz.TeamDelete, scope{}, audit.EntityTeam, teamID, map[string]string{"purge_vault": "true"})
	if err != nil {
		return err
	}
	o.team = sc
	t, err := c.access.GetTeam(ctx, teamID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return o.fail(ctx, fmt.Errorf("team id %s: %w", quoteInput(teamID), ErrNotFound))
	case err != nil:
		return o.fail(ctx, mapStoreErr(err))
	case t.DeletedAt.IsZero():
		return o.fail(ctx, fmt.Errorf("%w: team %q (id %s) is not deleted: delete it with its vault (DeleteTeam with PurgeVault)", ErrInvalidArgument, t.Name, teamID))
	}
	v, keys, err := c.teamVaultKeys(ctx, sc)
	if err != nil || v == nil {
		return o.fail(ctx, err)
	}
	return c.purgeVault(ctx, o, v, sc, len(keys))
}

// teamDeletable reports ErrTeamNotEmpty when the team has live machines or
// unfinished tasks (the store checks again in the delete's transaction).
func (c *Client) teamDeletable(ctx context.Context, sc scope) error {
	ms, err := c.engine.ListMachines(ctx, store.MachineFilter{TeamID: sc.id})
	if err != nil {
		return mapStoreErr(err)
	}
	ts, err := c.engine.ListTasks(ctx, store.TaskFilter{TeamID: sc.id, Statuses: []store.Status{store.Pending, store.Assigned, store.Processing}, Limit: 1})
	if err != nil {
		return mapStoreErr(err)
	}
	if len(ms) > 0 || len(ts) > 0 {
		return teamNotEmpty(sc.name, len(ms), len(ts) > 0)
	}
	if names, err := c.teamSchedules(ctx, sc.id); err != nil || len(names) > 0 { // leftovers.go
		if err == nil {
			err = fmt.Errorf("team %q: %w: it has schedules %s (delete them first: rediacc schedule delete NAME)", sc.name, ErrTeamNotEmpty, quoteList(names))
		}
		return err
	}
	return nil
}

// teamVaultKeys lists the keys of the team's vault; a nil Vault when the
// client has none (ErrNoVault).
func (c *Client) teamVaultKeys(ctx context.Context, sc scope) (Vault, []string, error) {
	v, err := c.vault()
	if errors.Is(err, ErrNoVault) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	keys, err := v.List(ctx, sc.id)
	if err != nil {
		return nil, nil, fmt.Errorf("team %q: its vault cannot be read, so it cannot be checked for secrets: %w", sc.label(), vaultErr(err))
	}
	return v, keys, nil
}

// purgeVault destroys team sc's vault and audits it (action
// team.vault.purge).
func (c *Client) purgeVault(ctx context.Context, o *op, v Vault, sc scope, keys int) error {
	err := vault.Purge(context.WithoutCancel(ctx), v, sc.id)
	rec := o.record(audit.ResultOK, map[string]string{"keys": strconv.Itoa(keys)})
	rec.Action, rec.EntityType, rec.EntityID = "team.vault.purge", audit.EntityVault, sc.id
	if err != nil {
		err = fmt.Errorf("team %q (id %s) is deleted, but destroying its vault failed: %w (repeat it with PurgeTeamVault, CLI: rediacc team delete --team-id %s --purge-vault)",
			sc.label(), sc.id, vaultErr(err), sc.id)
		rec.Result, rec.Details["error"] = audit.ResultError, trimErr(err)
	}
	c.appendAudit(ctx, rec)
	if err == nil && keys > 0 {
		c.log.InfoContext(ctx, "team vault destroyed", "team", sc.label(), "team_id", sc.id, "keys", keys)
	}
	return err
}

// teamNotEmpty is ErrTeamNotEmpty saying what is left in team (name) and
// what to do.
func teamNotEmpty(name string, machines int, tasks bool) error {
	var left []string
	if machines > 0 {
		left = append(left, fmt.Sprintf("%d machine(s) (move or remove them: rediacc machine move|remove)", machines))
	}
	if tasks {
		left = append(left, "unfinished tasks (let them finish or cancel them: rediacc list queue --team "+name+")")
	}
	return &isError{msg: fmt.Sprintf("team %s cannot be deleted: it still has %s", quoteInput(name), strings.Join(left, " and ")), err: ErrTeamNotEmpty, is: ErrTeamNotEmpty}
}

func (c *Client) teamErr(err error, team string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("team %s: %w", quoteInput(team), ErrNotFound)
	case errors.Is(err, store.ErrExists):
		return fmt.Errorf("team %q: %w: %v", team, ErrExists, err)
	case errors.Is(err, store.ErrTeamNotEmpty): // found again in the delete's transaction
		return &isError{msg: fmt.Sprintf("team %s cannot be deleted: %s", quoteInput(team), strings.TrimPrefix(err.Error(), store.ErrTeamNotEmpty.Error()+": ")), err: err, is: ErrTeamNotEmpty}
	case errors.Is(err, store.ErrInvalidArgument):
		return fmt.Errorf("%w: team %s: %v", ErrInvalidArgument, quoteInput(team), err)
	}
	return mapStoreErr(err)
}

// SetMember adds user to team with role, or changes the member's role.
// Team admins and owners. role is RoleAdmin, RoleOperator or RoleViewer.
// Errors: ErrPermissionDenied, ErrInvalidArgument, ErrNotFound (team).
func (c *Client) SetMember(ctx context.Context, team, user string, role Role) (Member, error) {
	sc, err := c.resolveTeam(ctx, team)
	if err != nil {
		return Member{}, err
	}
	action := authz.TeamMemberAdd
	if old, err := c.access.ListMembers(ctx, sc.id); err == nil && sc.id != "" {
		for _, m := range old {
			if m.User == user {
				action = authz.TeamMemberRole
			}
		}
	}
	o, _, err := c.authorize(ctx, action, sc, audit.EntityMember, user, map[string]string{"role": string(role)})
	if err != nil {
		return Member{}, err
	}
	if err := validateUser(user); err != nil {
		return Member{}, o.fail(ctx, err)
	}
	if role != RoleAdmin && role != RoleOperator && role != RoleViewer {
		return Member{}, o.fail(ctx, fmt.Errorf("%w: team role %s (use admin, operator or viewer; owner and auditor are store-wide roles: rediacc role add, or Client.AddStoreRole)", ErrInvalidArgument, quoteInput(role)))
	}
	m := store.Member{TeamID: sc.id, User: user, Role: string(role), AddedAt: c.clock.Now().UTC()}
	if _, err := c.access.PutMember(o.ctx(ctx), m); err != nil {
		return Member{}, o.fail(ctx, c.teamErr(err, team))
	}
	return Member{Team: sc.name, TeamID: sc.id, User: user, Role: role, AddedAt: m.AddedAt}, nil
}

// RemoveMember removes user from team. Team admins and owners.
// Errors: ErrPermissionDenied, ErrNotFound.
func (c *Client) RemoveMember(ctx context.Context, team, user string) error {
	sc, err := c.resolveTeam(ctx, team)
	if err != nil {
		return err
	}
	o, _, err := c.authorize(ctx, authz.TeamMemberRemove, sc, audit.EntityMember, user, nil)
	if err != nil {
		return err
	}
	if err := c.access.DeleteMember(o.ctx(ctx), sc.id, user); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = fmt.Errorf("member %s of team %s: %w", quoteInput(user), quoteInput(team), ErrNotFound)
		}
		return o.fail(ctx, mapStoreErr(err))
	}
	return nil
}

// Members lists a team's members by user. Team admins and owners.
func (c *Client) Members(ctx context.Context, team string) ([]Member, error) {
	sc, err := c.resolveTeam(ctx, team)
	if err != nil {
		return nil, err
	}
	o, _, err := c.authorize(ctx, authz.TeamMemberList, sc, audit.EntityMember, "", nil)
	if err != nil {
		return nil, err
	}
	ms, err := c.access.ListMembers(ctx, sc.id)
	if err != nil {
		return nil, mapStoreErr(err)
	}
	out := make([]Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, Member{Team: m.Team, TeamID: m.TeamID, User: m.User, Role: Role(m.Role), AddedAt: m.AddedAt})
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
	o, _, err := c.authorize(ctx, action, scope{}, audit.EntityMember, user, map[string]string{"role": string(role)})
	if err != nil {
		return err
	}
	if err := validateUser(user); err != nil {
		return o.fail(ctx, err)
	}
	if role != RoleOwner && role != RoleAuditor {
		return o.fail(ctx, fmt.Errorf("%w: store role %s (use owner or auditor; admin, operator and viewer are team roles: rediacc team member add, or Client.SetMember)", ErrInvalidArgument, quoteInput(role)))
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
	o, _, err := c.authorize(ctx, action, scope{}, audit.EntityMember, user, map[string]string{"role": string(role)})
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
	o, _, err := c.authorize(ctx, authz.OwnerAdd, scope{}, audit.EntityMember, "", nil)
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
// both teams (or an owner); a machine with unfinished tasks is refused. A
// key imported into the old team's vault moves to the new team's vault
// (under the machine's id): copied before the move, removed from the old
// vault after it; a move that fails removes only the copy it made.
// Errors: ErrPermissionDenied, ErrNotFound, ErrMachineBusy, ErrConflict
// (the machine moved, or a role changed, while this move was prepared).
func (c *Client) MoveMachine(ctx context.Context, name, team string) error {
	m, err := c.engine.MachineByName(ctx, name)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("machine %s: %w", quoteInput(name), ErrNotFound)
		}
		return mapStoreErr(err)
	}
	src := teamScope(m.TeamID, m.Team)
	dst, err := c.resolveTeam(ctx, team)
	if err != nil {
		return err
	}
	o, g, err := c.authorizeSeen(ctx, authz.MachineRead, machineNotFound(name), authz.MachineMove, src, audit.EntityMachine, m.ID,
		map[string]string{"machine": name, "from": m.Team, "to": team, "to_team_id": dst.id})
	if err != nil {
		return err
	}
	if d := authz.ExplainMove(g, src.authzTeam(), dst.authzTeam()); !d.Allowed {
		if dst.authzTeam() != dst.label() {
			d.Reason = strings.ReplaceAll(d.Reason, strconv.Quote(dst.authzTeam()), strconv.Quote(dst.label()))
		}
		return c.deny(ctx, o, d.Reason)
	}
	if dst.missing {
		return o.fail(ctx, dst.notFound())
	}
	mm, err := machineFromRecord(m)
	if err != nil {
		return o.fail(ctx, err)
	}
	if dst.id != src.id { // an ssh-ca machine needs a CA in its new team (sshca.go)
		if err := c.checkMachineCA(ctx, mm, dst); err != nil {
			return o.fail(ctx, err)
		}
	}
	// Checks before side effects: a busy machine is refused before its
	// identity is copied (the store checks again in the move).
	if q, err := c.engine.QueuedByMachine(ctx, []string{m.ID}); err != nil {
		return o.fail(ctx, mapStoreErr(err))
	} else if q[m.ID] > 0 && dst.id != src.id {
		return o.fail(ctx, fmt.Errorf("machine %q: %w: %d unfinished task(s) (cancel or wait for them first)", name, ErrMachineBusy, q[m.ID]))
	}
	var (
		v      Vault
		copied bool // this call created the copy in the new team's vault
	)
	switch {
	case mm.IdentitySecret == "" || dst.id == src.id:
	case mm.IdentitySecret == ownIdentity(m.ID): // its own imported key moves with it
		if v, err = c.vault(); err != nil {
			return o.fail(ctx, err)
		}
		if copied, err = copySecret(ctx, v, src.id, dst.id, mm.IdentitySecret); err != nil {
			return o.fail(ctx, fmt.Errorf("machine %q: copy its identity from team %q's vault to team %q's: %w", name, src.label(), dst.label(), vaultErr(err)))
		}
	default: // a key of the team's vault it only refers to: the new team must hold it
		vv, err := c.vault()
		if err == nil {
			_, err = vv.Get(ctx, dst.id, mm.IdentitySecret)
		}
		if err != nil {
			return o.fail(ctx, fmt.Errorf("%w: machine %q logs in with the vault key %q, which team %q's vault does not hold (%v): add it there first",
				ErrInvalidArgument, name, mm.IdentitySecret, dst.label(), vaultErr(err)))
		}
	}
	err = c.access.MoveMachine(o.ctx(ctx, roleGuard(o.actor, authz.MachineMove, dst), store.MachineInTeam(m.ID, src.id)), m.ID, dst.id)
	if v != nil {
		switch {
		case err == nil:
			if derr := v.Delete(ctx, src.id, mm.IdentitySecret); derr != nil && !errors.Is(derr, ErrSecretNotFound) {
				c.log.WarnContext(ctx, "machine identity left behind in its old team's vault", "machine", name, "team", src.label(), "error", derr)
			}
		case copied: // undo only the copy this call made
			if derr := v.Delete(ctx, dst.id, mm.IdentitySecret); derr != nil {
				c.log.WarnContext(ctx, "machine identity copy left in a vault", "machine", name, "team", dst.label(), "error", derr)
			}
		}
	}
	switch {
	case errors.Is(err, store.ErrMachineHasTasks):
		err = fmt.Errorf("machine %q: %w (cancel or wait for them first)", name, ErrMachineBusy)
	case errors.Is(err, store.ErrNotFound):
		err = fmt.Errorf("team %s or machine %s: %w", quoteInput(team), quoteInput(name), ErrNotFound)
	}
	if err == nil {
		c.pool.Forget(poolName(m))
	}
	return o.fail(ctx, mapStoreErr(err))
}

// copySecret copies key from team from's vault to team to's and reports
// whether it created the key there (false: it replaced a leftover copy).
func copySecret(ctx context.Context, v Vault, from, to, key string) (bool, error) {
	s, err := v.Get(ctx, from, key)
	if err != nil {
		return false, err
	}
	_, err = v.Put(ctx, to, key, s.Value, PutOptions{CAS: CAS(0)})
	if errors.Is(err, ErrVersionConflict) {
		// A copy left by an earlier move of this machine (the key names
		// the machine's id): replace it, and keep it if this move fails.
		_, err = v.Put(ctx, to, key, s.Value, PutOptions{})
		return false, err
	}
	return err == nil, err
}
