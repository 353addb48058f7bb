package rediacc

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
)

// AuditRecord is one entry of the audit trail: who (Actor) did what
// (Action, e.g. "task.create", "team.member.add", "machine.add",
// "vault.read", "task.attempt.failed") to which entity (EntityType,
// EntityID) of which Team, with what Result ("ok", "denied", "error"), when
// (Time, UTC), with Details that never hold secret values. Records form a
// hash chain: Hash is the SHA-256 of the record's canonical encoding, which
// includes PrevHash, the hash of the record before it (the idea of
// Certificate Transparency logs and Teleport's audit events).
type AuditRecord = audit.Record

// AuditFilter selects audit records: time range [Start, End), Actor, Action
// (exact, or a prefix ending in "." such as "task."), EntityType, EntityID,
// Team, Result, AfterSeq (paging cursor) and Limit (default 1000, at most
// 10000, as in the product's CLI).
type AuditFilter = audit.Filter

// AuditTamperError reports the first record of the trail that was modified,
// deleted, inserted or reordered (Kind), with its sequence number.
// errors.Is(err, ErrAuditTampered) holds.
type AuditTamperError = audit.TamperError

// ErrAuditTampered: VerifyAudit found the trail altered.
var ErrAuditTampered = audit.ErrTampered

// AuditLog returns the audit records matching f, oldest first. Owners and
// auditors read every record; a team admin reads the records of their team
// (f.Team must name it, or is set to it when the admin has one team).
// Errors: ErrNoActor, ErrPermissionDenied, ErrInvalidArgument (bad filter).
func (c *Client) AuditLog(ctx context.Context, f AuditFilter) ([]AuditRecord, error) {
	o, g, err := c.authorizeAny(ctx, authz.AuditRead, f.Team, audit.EntityAudit)
	if err != nil {
		return nil, err
	}
	if f.Team == "" && !authz.Allowed(g, authz.AuditRead, "") {
		teams, _ := visibleTeams(g, authz.AuditRead)
		if len(teams) != 1 {
			return nil, c.deny(ctx, o, fmt.Sprintf("a team admin reads one team's records at a time: name one of %v", teams))
		}
		f.Team = teams[0]
	}
	o.team = f.Team
	nf, err := f.Normalize()
	if err != nil {
		return nil, o.fail(ctx, fmt.Errorf("%w: %v", ErrInvalidArgument, err))
	}
	recs, err := c.access.ListAudit(ctx, nf)
	if err != nil {
		return nil, mapStoreErr(err)
	}
	o.detail = map[string]string{"records": fmt.Sprint(len(recs))}
	o.done(ctx)
	return recs, nil
}

// ExportAudit writes the records matching f to w as JSON Lines, with the
// same access rules as AuditLog.
func (c *Client) ExportAudit(ctx context.Context, w io.Writer, f AuditFilter) error {
	recs, err := c.AuditLog(ctx, f)
	if err != nil {
		return err
	}
	return audit.WriteJSONL(w, recs)
}

// VerifyAudit walks the whole audit chain and checks every record's hash,
// every link to the record before it, and the chain's head (kept beside it,
// so a truncated trail is caught). It returns nil for an intact trail and
// the number of records checked, or an *AuditTamperError naming the first
// record that was modified, deleted, inserted or reordered. Records Prune
// moved to the log archive are verified first, from the chain's first
// record, and the chain then goes on into the store; a damaged archive
// segment is reported (ErrArchiveCorrupt, with the *AuditTamperError for
// the records it hides). Owners and auditors. Errors: ErrNoActor,
// ErrPermissionDenied, ErrAuditTampered, ErrArchiveCorrupt.
func (c *Client) VerifyAudit(ctx context.Context) (int64, error) {
	o, _, err := c.authorize(ctx, authz.AuditVerify, "", audit.EntityAudit, "", nil)
	if err != nil {
		return 0, err
	}
	n, verr := c.verifyArchivedChain(ctx) // archive.go: archived segments, then the store
	if verr != nil && !errors.Is(verr, audit.ErrTampered) && !errors.Is(verr, ErrArchiveCorrupt) {
		return n, verr
	}
	res := "intact"
	if verr != nil {
		res = verr.Error()
	}
	o.detail = map[string]string{"records": fmt.Sprint(n), "verdict": res}
	o.done(ctx)
	return n, verr
}
