package rediacc

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/store"
)

// ErrNoActor: the operation's context names no actor (see WithActor).
// Nothing runs without one; there is no implicit superuser.
var ErrNoActor = errors.New("no actor: say who is acting with rediacc.WithActor(ctx, user) (CLI: --as USER or REDIACC_USER)")

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

// ActorFrom returns the actor of ctx and whether one was set.
func ActorFrom(ctx context.Context) (string, bool) {
	u, ok := ctx.Value(actorKey{}).(string)
	return u, ok && u != ""
}

func validateUser(u string) error {
	if !userRE.MatchString(u) {
		return fmt.Errorf("%w: user name %q must be 1..64 characters of letters, digits, '.', '_', '@', '-'", ErrInvalidArgument, u)
	}
	return nil
}

// op is one authorized, audited operation.
type op struct {
	c      *Client
	actor  string
	action authz.Action
	etype  string
	eid    string
	team   string
	detail map[string]string
	grants authz.Grants // the actor's roles, as loaded for the check
}

// record builds the audit record of the operation with the given result.
func (o *op) record(result string, extra map[string]string) audit.Record {
	d := map[string]string{}
	for k, v := range o.detail {
		d[k] = v
	}
	for k, v := range extra {
		d[k] = v
	}
	return audit.Record{
		Time: o.c.clock.Now().UTC(), Actor: o.actor, Action: string(o.action),
		EntityType: o.etype, EntityID: o.eid, Team: o.team, Result: result, Details: d,
	}
}

// ctx returns a context carrying the operation's "ok" audit record, so the
// store appends it in the same transaction as the change.
func (o *op) ctx(ctx context.Context) context.Context {
	return store.WithAudit(ctx, o.record(audit.ResultOK, nil))
}

// fail records a failed operation (result "error") and returns err.
func (o *op) fail(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	o.c.appendAudit(ctx, o.record(audit.ResultError, map[string]string{"error": trimErr(err)}))
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

// grants loads the actor's roles, making the actor the store's owner when
// the store has none yet.
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

// authorize checks that ctx's actor may do action on team (""= store-wide)
// and returns the operation to audit. A denial is audited and returned as
// ErrPermissionDenied naming the actor, the action and the team.
func (c *Client) authorize(ctx context.Context, action authz.Action, team, etype, eid string, detail map[string]string) (*op, authz.Grants, error) {
	actor, ok := ActorFrom(ctx)
	if !ok {
		return nil, authz.Grants{}, ErrNoActor
	}
	if err := validateUser(actor); err != nil {
		return nil, authz.Grants{}, err
	}
	o := &op{c: c, actor: actor, action: action, etype: etype, eid: eid, team: team, detail: detail}
	g, err := c.grants(ctx, actor)
	if err != nil {
		return nil, g, err
	}
	o.grants = g
	d := authz.Explain(g, action, team)
	if !d.Allowed {
		return nil, g, c.deny(ctx, o, d.Reason)
	}
	return o, g, nil
}

func (c *Client) deny(ctx context.Context, o *op, reason string) error {
	c.appendAudit(ctx, o.record(audit.ResultDenied, map[string]string{"reason": reason}))
	where := "store-wide"
	if o.team != "" {
		where = fmt.Sprintf("in team %q", o.team)
	}
	c.log.WarnContext(ctx, "permission denied", "actor", o.actor, "action", string(o.action), "team", o.team, "entity", o.eid)
	return fmt.Errorf("%w: %s may not %s %s (%s)", ErrPermissionDenied, o.actor, o.action, where, strings.TrimPrefix(reason, "denied: "))
}

// visibleTeams returns the teams where g allows action, or nil for every
// team (store-wide roles).
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

// scopeTeams narrows a requested team filter to what the actor may see.
// It returns the teams to query (nil = all), or a denial when the requested
// team is not visible.
func (c *Client) scopeTeams(ctx context.Context, action authz.Action, requested, etype string) ([]string, *op, error) {
	o, g, err := c.authorizeAny(ctx, action, requested, etype)
	if err != nil {
		return nil, nil, err
	}
	if requested != "" {
		return []string{requested}, o, nil
	}
	teams, all := visibleTeams(g, action)
	if all {
		return nil, o, nil
	}
	return teams, o, nil
}

// authorizeAny authorizes an action that lists across teams: with a team it
// is an ordinary check; without, the actor needs the action in some team.
func (c *Client) authorizeAny(ctx context.Context, action authz.Action, team, etype string) (*op, authz.Grants, error) {
	if team != "" {
		return c.authorize(ctx, action, team, etype, "", nil)
	}
	actor, ok := ActorFrom(ctx)
	if !ok {
		return nil, authz.Grants{}, ErrNoActor
	}
	if err := validateUser(actor); err != nil {
		return nil, authz.Grants{}, err
	}
	g, err := c.grants(ctx, actor)
	if err != nil {
		return nil, g, err
	}
	o := &op{c: c, actor: actor, action: action, etype: etype, grants: g}
	if teams, all := visibleTeams(g, action); !all && len(teams) == 0 {
		return nil, g, c.deny(ctx, o, "no role in any team allows "+string(action))
	}
	return o, g, nil
}
