package rediacc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
)

// AuditRecord is one entry of the audit trail: who (Actor) did what
// (Action, e.g. "task.create", "team.member.add", "machine.add",
// "vault.read", "task.attempt.failed") to which entity (EntityType,
// EntityID) of which Team, with what Result ("ok", "denied", "error"), when
// (Time, UTC), with Details that never hold secret values. Records form a
// hash chain: Hash is the HMAC-SHA256, under the audit key KeyID names, of
// the record's canonical encoding, which includes PrevHash, the hash of the
// record before it (the idea of Certificate Transparency logs and Teleport's
// audit events). The key is not in the store (Config.AuditKeyFile), so a
// writer of the store alone cannot re-seal a record it changed. Records
// written before the trail was keyed have no KeyID and a plain SHA-256
// Hash.
type AuditRecord = audit.Record

// AuditFilter selects audit records: time range [Start, End), Actor, Action
// (exact, or a prefix ending in "." such as "task."), EntityType, EntityID,
// Team (a live team's name) or TeamID (a team's id, a deleted team's
// included), Result, AfterSeq (paging cursor) and Limit (default 1000, at
// most 10000, as in the product's CLI).
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
// Records carry the team's id in Team (its name is in Details["team_name"]);
// f.Team names the live team of that name, so the records of a deleted
// team of the same name are not among them: owners and auditors read
// those with f.TeamID (see TeamFilter.IncludeDeleted).
// Errors: ErrNoActor, ErrPermissionDenied, ErrInvalidArgument (bad filter),
// ErrNotFound (f.Team names no live team, for those who may read).
func (c *Client) AuditLog(ctx context.Context, f AuditFilter) ([]AuditRecord, error) {
	sc, err := c.auditScope(ctx, f)
	if err != nil {
		return nil, err
	}
	o, g, err := c.authorizeAny(ctx, authz.AuditRead, sc, audit.EntityAudit)
	if err != nil {
		return nil, err
	}
	if sc.id == "" && !authz.Allowed(g, authz.AuditRead, "") {
		teams, _ := visibleTeams(g, authz.AuditRead)
		if len(teams) != 1 {
			var names []string
			for _, id := range teams {
				if t, err := c.scopeOfID(ctx, id); err == nil {
					names = append(names, t.label())
				}
			}
			slices.Sort(names)
			return nil, c.deny(ctx, o, fmt.Sprintf("a team admin reads one team's records at a time: name one of %v", names))
		}
		if sc, err = c.scopeOfID(ctx, teams[0]); err != nil {
			return nil, err
		}
	}
	o.team = sc
	f.Team, f.TeamID = sc.id, ""
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

// auditScope resolves the team an audit filter names (f.TeamID, else the
// live team named f.Team; the zero scope for none).
func (c *Client) auditScope(ctx context.Context, f AuditFilter) (scope, error) {
	switch {
	case f.TeamID != "":
		if f.Team != "" {
			live, err := c.resolveTeam(ctx, f.Team)
			if err != nil {
				return scope{}, err
			}
			if live.id != f.TeamID {
				return scope{}, fmt.Errorf("%w: audit filter: team %q and team id %q name different teams (give one)", ErrInvalidArgument, f.Team, f.TeamID)
			}
		}
		return c.scopeOfID(ctx, f.TeamID)
	case f.Team != "":
		return c.resolveTeam(ctx, f.Team)
	}
	return scope{}, nil
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

// VerifyAudit walks the whole audit chain and checks every record's seal
// (with the audit keyring: Config.AuditKeyFile), every link to the record
// before it, and the chain's head (kept beside it, so a truncated trail is
// caught). It returns nil for an intact trail and the number of records
// checked, or an *AuditTamperError naming the first record that was
// modified, deleted, inserted, reordered or downgraded (an unkeyed record
// where only keyed ones may be: written by someone without the key).
// Records Prune moved to the log archive are verified first, from the
// chain's first record, and the chain then goes on into the store; a
// damaged archive segment is reported (ErrArchiveCorrupt, with the
// *AuditTamperError for the records it hides).
//
// With WithCheckpoints, the trail is also compared with checkpoints of its
// head taken earlier (the checkpoint file, or logs): a checkpoint the trail
// contradicts (its record changed, deleted or moved, or the head moved
// backwards) is an *AuditTamperError naming the first record no holding
// checkpoint vouches for (KindRewritten, or KindDeleted for a head moved
// backwards). That catches a rewrite by someone who holds the key but not
// the checkpoints. WithAuditReport says what was seen.
//
// Records sealed with a key the keyring does not hold (lost, replaced, not
// supplied) cannot be authenticated: they are checked by their links and
// reported as an *AuditKeyError (ErrAuditKeyUnknown), not as tampering.
// Several findings are joined (errors.Join), tampering first. Owners and
// auditors. Errors: ErrNoActor, ErrPermissionDenied, ErrAuditTampered,
// ErrAuditKeyUnknown, ErrAuditCheckpointInvalid (a checkpoint that does not
// verify: the checkpoint file was altered), ErrArchiveCorrupt, ErrNotFound
// (a checkpoint file that does not exist), ErrInvalidArgument (a file with
// no checkpoint), ErrNoArchive (WithCheckpoints without files on a client
// with no archive directory), ErrAuditKeyring.
func (c *Client) VerifyAudit(ctx context.Context, opts ...VerifyOption) (int64, error) {
	o, _, err := c.authorize(ctx, authz.AuditVerify, scope{}, audit.EntityAudit, "", nil)
	if err != nil {
		return 0, err
	}
	var vo verifyOptions
	for _, opt := range opts {
		opt(&vo)
	}
	ring, err := c.reloadKeyring(ctx) // another process may have rotated the key
	if err != nil {
		return 0, o.fail(ctx, err)
	}
	in := verifyInput{ring: ring, rep: vo.report}
	if in.rep == nil {
		in.rep = &AuditReport{}
	}
	*in.rep = AuditReport{}
	if vo.checkpoints {
		if in.checkpoints, in.checkpointErr, err = c.readCheckpoints(vo.files, in.rep); err != nil {
			return 0, o.fail(ctx, err)
		}
	}
	n, verr := c.verifyArchivedChain(ctx, in) // archive.go: archived segments, then the store
	if verr != nil && !errors.Is(verr, audit.ErrTampered) && !errors.Is(verr, ErrArchiveCorrupt) &&
		!errors.Is(verr, ErrAuditKeyUnknown) && !errors.Is(verr, ErrAuditCheckpointInvalid) {
		return n, verr
	}
	res := "intact"
	if verr != nil {
		res = verr.Error()
	}
	o.detail = map[string]string{"records": fmt.Sprint(n), "verdict": res}
	if vo.checkpoints {
		o.detail["checkpoints"] = fmt.Sprint(in.rep.Checkpoints)
	}
	o.done(ctx)
	return n, verr
}

// VerifyOption is an option of VerifyAudit.
type VerifyOption func(*verifyOptions)

type verifyOptions struct {
	checkpoints bool
	files       []string
	report      *AuditReport
}

// WithCheckpoints makes VerifyAudit compare the trail with the checkpoints
// in files: checkpoint files (one JSON checkpoint per line, as written to
// AuditCheckpointFile) or JSON logs (--log-format json) holding "audit
// checkpoint" lines; copies kept on another host are the ones an intruder
// could not reach. No file: the client's AuditCheckpointFile.
func WithCheckpoints(files ...string) VerifyOption {
	return func(o *verifyOptions) { o.checkpoints, o.files = true, append(o.files, files...) }
}

// WithAuditReport makes VerifyAudit fill r with what it saw.
func WithAuditReport(r *AuditReport) VerifyOption {
	return func(o *verifyOptions) { o.report = r }
}

// AuditReport says what VerifyAudit saw.
type AuditReport struct {
	// Records is how many records were checked (VerifyAudit's count).
	Records int64 `json:"records"`
	// Keyed counts the records sealed with a key; Unkeyed the version 1
	// records (plain SHA-256), written before the trail was keyed.
	Keyed   int64 `json:"keyed"`
	Unkeyed int64 `json:"unkeyed"`
	// KeyIDs are the keys that sealed the records, in order of first use.
	KeyIDs []string `json:"keyIds,omitempty"`
	// HeadSeq is the sequence number of the trail's head.
	HeadSeq int64 `json:"headSeq"`
	// Checkpoints counts the checkpoints (that verified) compared with the
	// trail, read from CheckpointFiles (WithCheckpoints).
	Checkpoints     int      `json:"checkpoints"`
	CheckpointFiles []string `json:"checkpointFiles,omitempty"`
}

// count adds r to the report's counts.
func (r *AuditReport) count(rec audit.Record) {
	if rec.KeyID == "" {
		r.Unkeyed++
		return
	}
	r.Keyed++
	if !slices.Contains(r.KeyIDs, rec.KeyID) {
		r.KeyIDs = append(r.KeyIDs, rec.KeyID)
	}
}

// readCheckpoints reads the checkpoint files (the client's own when none
// is named). A missing file or one without a checkpoint fails the
// verification; a line that does not decode is reported (cpErr) with the
// checkpoints read before it kept.
func (c *Client) readCheckpoints(files []string, rep *AuditReport) (entries []audit.CheckpointEntry, cpErr, err error) {
	if len(files) == 0 {
		if c.AuditCheckpointFile() == "" {
			return nil, nil, fmt.Errorf("%w: no checkpoint file of its own (checkpoints went to the log only): name the files to read", ErrNoArchive)
		}
		files = []string{c.AuditCheckpointFile()}
	}
	var errs []error
	for _, name := range files {
		f, err := os.Open(name)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("%w: audit checkpoint file %s does not exist (workers write checkpoints every Config.AuditCheckpointInterval, Prune and Close after their changes, `rediacc audit checkpoint` on demand)", ErrNotFound, name)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("rediacc: audit checkpoint file: %w", err)
		}
		es, rerr := audit.ReadCheckpoints(f, name)
		_ = f.Close()
		if len(es) == 0 && rerr == nil {
			return nil, nil, fmt.Errorf("%w: no audit checkpoint in %s (want a checkpoint file, or a log written with --log-format json)", ErrInvalidArgument, name)
		}
		entries = append(entries, es...)
		errs = append(errs, rerr)
		rep.CheckpointFiles = append(rep.CheckpointFiles, name)
	}
	return entries, errors.Join(errs...), nil
}
