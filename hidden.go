package rediacc

import (
	"context"
	"fmt"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
)

// Entities the caller may not see are reported as not found.
//
// An operation on a machine, task, schedule or maintenance window that the
// caller names answers exactly as for a name (or id) that names nothing
// when the caller holds no role that lets them see such entities in the
// entity's team: the same error, the same message, the same exit code. A
// caller who may see the entity but not change it gets ErrPermissionDenied.
// Otherwise "permission denied" for another team's machine and "not found"
// for an unknown name would tell anyone which names exist in other teams.
// The denial is still audited (result "denied", details reported=not-found).
//
// Teams are the exception: an operation naming a team the caller has no
// role in is denied (ErrPermissionDenied) whether or not the team exists,
// which tells nothing either. Creating a machine, team or schedule under a
// name that is taken fails with ErrExists whoever holds it: those names
// are unique in the store (docs/ROLES.md).

// checkSeen is check for an operation on an entity of o's team that the
// caller named: when the actor is denied and may not even see such
// entities in the team (see: the read action of the entity's kind), the
// denial is audited and notFound is returned instead of
// ErrPermissionDenied.
func (o *op) checkSeen(ctx context.Context, see authz.Action, notFound error) error {
	team := o.team.authzTeam()
	d := authz.Explain(o.grants, o.action, team)
	if d.Allowed {
		return nil
	}
	if authz.Allowed(o.grants, see, team) {
		return o.c.deny(ctx, o, d.Reason)
	}
	return o.hide(ctx, d.Reason, notFound)
}

// hide audits o as denied (reported as not found) and returns notFound.
func (o *op) hide(ctx context.Context, reason string, notFound error) error {
	o.c.appendAudit(ctx, o.record(audit.ResultDenied, map[string]string{"reason": reason, "reported": "not-found"}))
	// No team or entity in the log line: on a CLI it is the caller's stderr.
	o.c.log.DebugContext(ctx, "denied on an entity the actor may not see (reported as not found)", "actor", o.actor, "action", string(o.action))
	return notFound
}

// authorizeSeen is authorize for an operation on an entity of team sc that
// the caller named (see checkSeen).
func (c *Client) authorizeSeen(ctx context.Context, see authz.Action, notFound error, action authz.Action, sc scope, etype, eid string, detail map[string]string) (*op, authz.Grants, error) {
	o, err := c.newOp(ctx, action, sc, etype, eid, detail)
	if err != nil {
		return nil, authz.Grants{}, err
	}
	if err := o.checkSeen(ctx, see, notFound); err != nil {
		return nil, o.grants, err
	}
	if sc.missing {
		return nil, o.grants, o.fail(ctx, sc.notFound())
	}
	return o, o.grants, nil
}

// requireSeen returns notFound (audited as a denial of action) unless
// ctx's actor may see entities of kind see in team sc; the operation's own
// check comes later. For a check that must come before an operation's
// authorization because a message would name something of the team (the
// machine's team, say).
func (c *Client) requireSeen(ctx context.Context, action, see authz.Action, sc scope, etype, eid string, detail map[string]string, notFound error) error {
	o, err := c.newOp(ctx, action, sc, etype, eid, detail)
	if err != nil {
		return err
	}
	if authz.Allowed(o.grants, see, sc.authzTeam()) {
		return nil
	}
	return o.hide(ctx, authz.Explain(o.grants, see, sc.authzTeam()).Reason, notFound)
}

// Not-found errors, one per kind of entity, worded as where the entity is
// missing, so that a hidden one reads the same.

func machineNotFound(name string) error {
	return fmt.Errorf("machine %s: %w", quoteInput(name), ErrNotFound)
}

func unknownMachine(name string) error {
	return fmt.Errorf("%w: %s is not registered, or is in a team you have no role in (add it: rediacc machine add; or ask an admin of its team for a role)", ErrUnknownMachine, quoteInput(name))
}

func taskNotFound(id string) error { return fmt.Errorf("task %s: %w", quoteInput(id), ErrNotFound) }
