package rediacc

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/store"
)

// ErrNoActor: the operation's context names no actor (see WithActor) and
// the Client has no Config.DefaultActor. Nothing runs without one; there is
// no implicit superuser.
var ErrNoActor = errors.New("no actor: say who is acting with rediacc.WithActor(ctx, user) or Config.DefaultActor")

type actorKey struct{}

var userRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// WithActor returns a context whose operations run as user. A service
// embedding the SDK authenticates its own users and passes the actor this
// way on every call; the SDK checks the actor's role (deny by default) and
// records the actor in the audit trail. The first actor to use a new store
// becomes its owner.
func WithActor(ctx context.Context, user string) context.Context {
	return context.WithValue(ctx, actorKey{}, user)
}

// ActorFrom returns the actor of ctx and whether one was set (with
// WithActor; Config.DefaultActor is not consulted).
func ActorFrom(ctx context.Context) (string, bool) {
	u, ok := ctx.Value(actorKey{}).(string)
	return u, ok && u != ""
}

type viaKey struct{}

// WithImpersonation returns a context whose operations run as user (like
// WithActor) on behalf of via, the account that chose to act as user
// ("root", an operating-system login, a service's own principal). The
// audit trail records the actor as user with the detail via=<via>, so an
// impersonated operation is never mistaken for the user's own. The SDK
// authorizes user, not via: deciding who may impersonate whom is the
// embedding program's job (the example CLI allows it to root and to the
// data dir's owner only).
func WithImpersonation(ctx context.Context, user, via string) context.Context {
	return context.WithValue(WithActor(ctx, user), viaKey{}, via)
}

func validateUser(u string) error {
	if !userRE.MatchString(u) {
		return fmt.Errorf("%w: user name %s must be 1..64 characters of letters, digits, '.', '_', '@', '-'", ErrInvalidArgument, quoteInput(u))
	}
	return nil
}

// scope is the team an operation acts on: its id (what authorization,
// guards and the audit trail use) and its name (what people read). The
// zero scope is store-wide. A name that names no live team gives a scope
// without an id (missing): only a store-wide role gets past its check, and
// the operation then fails with ErrNotFound, so a non-member cannot tell a
// team that exists from one that does not.
type scope struct {
	id, name string
	missing  bool
}

// teamScope is the scope of the team id.
func teamScope(id, name string) scope { return scope{id: id, name: name} }

// authzTeam is the team the role check looks at: the id, or for a missing
// team a value no grant can hold.
func (s scope) authzTeam() string {
	if s.missing {
		return "?" + s.name
	}
	return s.id
}

// label is how messages name the team: its name, else its id.
func (s scope) label() string {
	if s.name != "" {
		return s.name
	}
	return s.id
}

// resolveTeam returns the scope of the live team named name (a missing
// scope when there is none; see scope).
func (c *Client) resolveTeam(ctx context.Context, name string) (scope, error) {
	t, err := c.access.TeamByName(ctx, name)
	switch {
	case err == nil:
		return teamScope(t.ID, t.Name), nil
	case errors.Is(err, store.ErrNotFound):
		return scope{name: name, missing: true}, nil
	}
	return scope{}, mapStoreErr(err)
}

// scopeOfID returns the scope of team id (live or deleted).
func (c *Client) scopeOfID(ctx context.Context, id string) (scope, error) {
	t, err := c.access.GetTeam(ctx, id)
	switch {
	case err == nil:
		return teamScope(t.ID, t.Name), nil
	case errors.Is(err, store.ErrNotFound):
		return teamScope(id, id), nil // a task of a team that no longer exists: its id
	}
	return scope{}, mapStoreErr(err)
}

// notFound is the error of an operation on a missing team.
func (s scope) notFound() error {
	return fmt.Errorf("team %s: %w (rediacc team list shows the teams)", quoteInput(s.name), ErrNotFound)
}

// op is one authorized, audited operation.
type op struct {
	c      *Client
	actor  string
	via    string // set when the actor is impersonated (see WithImpersonation)
	action authz.Action
	etype  string
	eid    string
	team   scope
	detail map[string]string
	grants authz.Grants // the actor's roles, as loaded for the check
}

// record builds the audit record of the operation with the given result.
// Record.Team is the team's id; its name, for readers, is in the details
// ("team_name").
func (o *op) record(result string, extra map[string]string) audit.Record {
	d := map[string]string{}
	for k, v := range o.detail {
		d[k] = v
	}
	for k, v := range extra {
		d[k] = v
	}
	if o.team.name != "" && (o.team.id == "" || o.team.name != o.team.id) {
		d["team_name"] = o.team.name
	}
	if o.via != "" {
		d["via"] = o.via
	}
	return audit.Record{
		Time: o.c.clock.Now().UTC(), Actor: o.actor, Action: string(o.action),
		EntityType: o.etype, EntityID: o.eid, Team: o.team.id, Result: result, Details: d,
	}
}

// guard is the condition the write of the operation needs to hold: the
// actor still holds a role that allows the action in the team (or
// store-wide), checked by the store in the write's transaction.
func (o *op) guard() store.Condition {
	return roleGuard(o.actor, o.action, o.team)
}

// roleGuard requires actor to hold a role allowing action in team s (or a
// store-wide role allowing it).
func roleGuard(actor string, action authz.Action, s scope) store.Condition {
	rs, ok := guardRoles()[action]
	if !ok { // outside the matrix (store.prune): owners only
		return store.HasRole(actor, s.id, nil, []string{string(authz.Owner)})
	}
	var teamRoles []string
	if s.id != "" {
		teamRoles = rs.team
	}
	if teamRoles == nil && rs.store == nil {
		return store.HasRole(actor, s.id, nil, []string{string(authz.Owner)})
	}
	return store.HasRole(actor, s.id, teamRoles, rs.store)
}

// roleSets are the roles that allow an action: team-scoped roles (for an
// action done in a team) and store-wide ones.
type roleSets struct{ team, store []string }

// guardRoles is the role matrix by action, built once: roleGuard runs for
// every guarded write (each Submit), and authz.Matrix copies the matrix.
// The slices are shared: never appended to (their capacity is clipped).
var guardRoles = sync.OnceValue(func() map[authz.Action]roleSets {
	m := map[authz.Action]roleSets{}
	for _, row := range authz.Matrix() {
		var rs roleSets
		for _, r := range authz.Roles() {
			switch {
			case !row.Allowed[r]:
			case r.StoreWide():
				rs.store = append(rs.store, string(r))
			case row.Scope == authz.ScopeTeam:
				rs.team = append(rs.team, string(r))
			}
		}
		rs.team, rs.store = slices.Clip(rs.team), slices.Clip(rs.store)
		m[row.Action] = rs
	}
	return m
})

// ctx returns a context carrying the operation's "ok" audit record and its
// guard (the actor's role, plus conds), so the store checks the guard and
// appends the record in the same transaction as the change.
func (o *op) ctx(ctx context.Context, conds ...store.Condition) context.Context {
	return store.WithGuard(store.WithAudit(ctx, o.record(audit.ResultOK, nil)), append([]store.Condition{o.guard()}, conds...)...)
}

// fail records a failed operation (result "error", or "denied" when a
// guard found the actor's role gone) and returns err.
func (o *op) fail(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	result := audit.ResultError
	var ge *store.GuardError
	if errors.As(err, &ge) && ge.Condition.Kind == store.CondRole {
		result = audit.ResultDenied
	}
	o.c.appendAudit(ctx, o.record(result, map[string]string{"error": trimErr(err)}))
	return err
}

// done records a read-only operation that succeeded.
func (o *op) done(ctx context.Context) {
	o.c.appendAudit(ctx, o.record(audit.ResultOK, nil))
}

func (c *Client) appendAudit(ctx context.Context, recs ...audit.Record) {
	if _, err := c.access.AppendAudit(context.WithoutCancel(ctx), recs...); err != nil {
		c.log.ErrorContext(ctx, "audit append failed", "error", err, "action", recs[0].Action)
	}
}

// actor returns the actor of ctx (WithActor), else Config.DefaultActor,
// else (PostgreSQL) the rediacc user the database login is mapped to, and
// who impersonates it (WithImpersonation; "" when no one). ErrNoActor
// when there is none; ErrInvalidArgument for a malformed user name;
// ErrPermissionDenied (a *LoginError) on PostgreSQL for an unmapped login
// or another user without the login's impersonation grant.
func (c *Client) actor(ctx context.Context) (user, via string, err error) {
	user, ok := ActorFrom(ctx)
	if !ok {
		user = c.cfg.DefaultActor
	}
	if c.login != nil { // PostgreSQL: the database login's user (login.go)
		if user, err = c.loginActor(user); err != nil {
			return "", "", err
		}
	}
	if user == "" {
		return "", "", ErrNoActor
	}
	if err := validateUser(user); err != nil {
		return "", "", err
	}
	via, _ = ctx.Value(viaKey{}).(string)
	return user, via, nil
}

// grants loads the actor's roles, making the actor the store's owner when
// the store has none yet. TeamRoles are keyed by team id.
func (c *Client) grants(ctx context.Context, actor string) (authz.Grants, error) {
	if !c.ownerKnown.Load() {
		roles, err := c.access.StoreRoles(ctx, "")
		if err != nil {
			return authz.Grants{}, mapStoreErr(err)
		}
		hasOwner := false
		for _, r := range roles {
			hasOwner = hasOwner || r.Role == string(RoleOwner)
		}
		if !hasOwner {
			now := c.clock.Now().UTC()
			rec := audit.Record{Time: now, Actor: actor, Action: "store.init", EntityType: audit.EntityTeam,
				EntityID: DefaultTeam, Result: audit.ResultOK, Details: map[string]string{"owner": actor}}
			made, err := c.access.InitOwner(store.WithAudit(ctx, rec), actor, now)
			if err != nil {
				return authz.Grants{}, mapStoreErr(err)
			}
			if made {
				c.log.InfoContext(ctx, "store initialised: first actor is its owner", "owner", actor)
			}
		}
		c.ownerKnown.Store(true)
	}
	var g authz.Grants
	roles, err := c.access.StoreRoles(ctx, actor)
	if err != nil {
		return g, mapStoreErr(err)
	}
	for _, r := range roles {
		g.StoreRoles = append(g.StoreRoles, authz.Role(r.Role))
	}
	teams, err := c.access.MemberRoles(ctx, actor)
	if err != nil {
		return g, mapStoreErr(err)
	}
	g.TeamRoles = map[string]authz.Role{}
	for t, r := range teams {
		g.TeamRoles[t] = authz.Role(r)
	}
	return g, nil
}

// newOp returns the operation of ctx's actor, with the actor's roles.
func (c *Client) newOp(ctx context.Context, action authz.Action, sc scope, etype, eid string, detail map[string]string) (*op, error) {
	actor, via, err := c.actor(ctx)
	if err != nil {
		return nil, err
	}
	g, err := c.grants(ctx, actor)
	if err != nil {
		return nil, err
	}
	if detail == nil {
		detail = map[string]string{}
	}
	return &op{c: c, actor: actor, via: via, action: action, etype: etype, eid: eid, team: sc, detail: detail, grants: g}, nil
}

// check checks that o's actor may do o's action on o's team, and denies
// (audited) when not.
func (o *op) check(ctx context.Context) error {
	d := authz.Explain(o.grants, o.action, o.team.authzTeam())
	if !d.Allowed {
		return o.c.deny(ctx, o, d.Reason)
	}
	return nil
}

// authorize checks that ctx's actor may do action on team sc (the zero
// scope: store-wide) and returns the operation to audit. A denial is
// audited and returned as ErrPermissionDenied naming the actor, the action
// and the team. A missing team (see scope) fails with ErrNotFound for those
// who pass the check.
func (c *Client) authorize(ctx context.Context, action authz.Action, sc scope, etype, eid string, detail map[string]string) (*op, authz.Grants, error) {
	o, err := c.newOp(ctx, action, sc, etype, eid, detail)
	if err != nil {
		return nil, authz.Grants{}, err
	}
	if err := o.check(ctx); err != nil {
		return nil, o.grants, err
	}
	if sc.missing {
		return nil, o.grants, o.fail(ctx, sc.notFound())
	}
	return o, o.grants, nil
}

func (c *Client) deny(ctx context.Context, o *op, reason string) error {
	// Reasons name teams by the id the check used; people read names.
	if id := o.team.authzTeam(); id != "" && id != o.team.label() {
		reason = strings.ReplaceAll(reason, strconv.Quote(id), strconv.Quote(o.team.label()))
	}
	c.appendAudit(ctx, o.record(audit.ResultDenied, map[string]string{"reason": reason}))
	where := "store-wide"
	if o.team.label() != "" {
		where = fmt.Sprintf("in team %q", o.team.label())
	}
	c.log.WarnContext(ctx, "permission denied", "actor", o.actor, "action", string(o.action), "team", o.team.label(), "entity", o.eid)
	return fmt.Errorf("%w: %s may not %s %s (%s)", ErrPermissionDenied, o.actor, o.action, where, strings.TrimPrefix(reason, "denied: "))
}

// visibleTeams returns the teams (ids) where g allows action, or nil for
// every team (store-wide roles).
func visibleTeams(g authz.Grants, action authz.Action) (teams []string, all bool) {
	if authz.Allowed(g, action, "") {
		return nil, true
	}
	for t := range g.TeamRoles {
		if authz.Allowed(g, action, t) {
			teams = append(teams, t)
		}
	}
	if teams == nil {
		teams = []string{}
	}
	return teams, false
}

// scopeTeams narrows a requested team filter (a scope; the zero scope for
// none) to what the actor may see. It returns the team ids to query (nil =
// all), or a denial when the requested team is not visible.
func (c *Client) scopeTeams(ctx context.Context, action authz.Action, requested scope, etype string) ([]string, *op, error) {
	o, g, err := c.authorizeAny(ctx, action, requested, etype)
	if err != nil {
		return nil, nil, err
	}
	if requested.id != "" {
		return []string{requested.id}, o, nil
	}
	teams, all := visibleTeams(g, action)
	if all {
		return nil, o, nil
	}
	return teams, o, nil
}

// authorizeAny authorizes an action that lists across teams: with a team it
// is an ordinary check; without, the actor needs the action in some team.
func (c *Client) authorizeAny(ctx context.Context, action authz.Action, team scope, etype string) (*op, authz.Grants, error) {
	if team != (scope{}) {
		return c.authorize(ctx, action, team, etype, "", nil)
	}
	o, err := c.newOp(ctx, action, scope{}, etype, "", nil)
	if err != nil {
		return nil, authz.Grants{}, err
	}
	if teams, all := visibleTeams(o.grants, action); !all && len(teams) == 0 {
		return nil, o.grants, c.deny(ctx, o, "no role in any team allows "+string(action))
	}
	return o, o.grants, nil
}
