package store

import (
	"context"
	"errors"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
)

// Errors of the access layer (teams, members, roles, audit).
var (
	// ErrTeamNotEmpty: the team still has machines or unfinished tasks.
	ErrTeamNotEmpty = errors.New("store: team still has machines or unfinished tasks")
	// ErrLastOwner: removing this owner would leave the store without one.
	ErrLastOwner = errors.New("store: the store must keep at least one owner")
)

// DefaultTeam exists in every store (created with the store: by the SQLite
// schema's migration 2, by memory.New) and cannot be deleted or renamed.
const DefaultTeam = "default"

// Team is a group of machines and members (prod, staging, dev …).
type Team struct {
	Name        string
	Description string
	CreatedAt   time.Time
}

// Member is a user's role in one team: "admin", "operator" or "viewer"
// (authz.Admin, authz.Operator, authz.Viewer).
type Member struct {
	Team    string
	User    string
	Role    string
	AddedAt time.Time
}

// StoreRole is a store-wide role of a user: "owner" or "auditor"
// (authz.Owner, authz.Auditor).
type StoreRole struct {
	User    string
	Role    string
	AddedAt time.Time
}

type auditKey struct{}

// WithAudit returns a context carrying audit records. Every mutating Engine
// and Access method, when its context carries records, appends them to the
// audit chain in the same transaction as its change, and only if the change
// is made: a change is never recorded without its audit records, nor the
// records without the change. Seq, PrevHash, KeyID and Hash are assigned by
// the engine (fsm.AuditSeal.ChainAudit, sealing with the keyring set by
// Access.SetAuditKeyring). Records are checked with audit.Record.Validate
// before the change: an invalid one gives ErrInvalidArgument and changes
// nothing.
func WithAudit(ctx context.Context, recs ...audit.Record) context.Context {
	if len(recs) == 0 {
		return ctx
	}
	prev := AuditFrom(ctx)
	all := make([]audit.Record, 0, len(prev)+len(recs))
	all = append(append(all, prev...), recs...)
	return context.WithValue(ctx, auditKey{}, all)
}

// AuditFrom returns the audit records ctx carries (nil when none).
func AuditFrom(ctx context.Context) []audit.Record {
	recs, _ := ctx.Value(auditKey{}).([]audit.Record)
	return recs
}

// Access is the part of an engine that keeps teams, members, store-wide
// roles and the audit trail. Engines implement Engine and Access.
//
// Every mutating method (Create*, Rename*, Delete*, Put*, InitOwner,
// MoveMachine, TrimAudit) appends the audit records its context carries (WithAudit) in
// the same transaction as its change, and only when it returns no error.
// Times zero on input (CreatedAt, AddedAt) default to now. Names and users
// must be non-empty (ErrInvalidArgument).
type Access interface {
	// CreateTeam inserts t. ErrExists; ErrInvalidArgument (empty name).
	CreateTeam(ctx context.Context, t Team) error
	// GetTeam returns one team. ErrNotFound.
	GetTeam(ctx context.Context, name string) (Team, error)
	// ListTeams returns all teams ordered by name.
	ListTeams(ctx context.Context) ([]Team, error)
	// RenameTeam renames a team and, in the same transaction, every
	// reference to it (machines, tasks, members; audit records keep the name
	// they were written with). ErrNotFound (old), ErrExists (new, including
	// new == old), ErrInvalidArgument when old is DefaultTeam or new is
	// empty.
	RenameTeam(ctx context.Context, oldName, newName string) error
	// DeleteTeam deletes a team and its members. ErrNotFound;
	// ErrTeamNotEmpty while it has machines or non-terminal tasks;
	// ErrInvalidArgument for DefaultTeam.
	DeleteTeam(ctx context.Context, name string) error

	// PutMember adds a member or changes its role; created reports which
	// (a changed role keeps the first AddedAt). ErrNotFound when the team
	// does not exist; ErrInvalidArgument for a role that is not a team role.
	PutMember(ctx context.Context, m Member) (created bool, err error)
	// DeleteMember removes a user from a team. ErrNotFound.
	DeleteMember(ctx context.Context, team, user string) error
	// ListMembers returns a team's members ordered by user ("" = every
	// team, ordered by team then user).
	ListMembers(ctx context.Context, team string) ([]Member, error)
	// MemberRoles returns the user's role in each team it belongs to, team
	// -> role (an empty map when none).
	MemberRoles(ctx context.Context, user string) (map[string]string, error)

	// PutStoreRole grants a store-wide role (idempotent: granting it again
	// keeps the first AddedAt). ErrInvalidArgument for a role that is not a
	// store-wide role.
	PutStoreRole(ctx context.Context, r StoreRole) error
	// DeleteStoreRole revokes a store-wide role. ErrNotFound; ErrLastOwner
	// when it is the last owner.
	DeleteStoreRole(ctx context.Context, user, role string) error
	// StoreRoles returns every store-wide role (user "") or one user's,
	// ordered by user then role.
	StoreRoles(ctx context.Context, user string) ([]StoreRole, error)
	// InitOwner makes user the store's owner if the store has none yet, in
	// one transaction (two first actors racing: exactly one wins). It
	// returns whether user became the owner (false when the store already
	// has one, user included).
	InitOwner(ctx context.Context, user string, at time.Time) (bool, error)

	// MoveMachine assigns a machine to another team (setting its
	// UpdatedAt; moving it to its own team changes nothing). ErrNotFound
	// (machine or team); ErrMachineHasTasks while it has non-terminal tasks.
	// The machine's finished tasks keep the team they ran under.
	MoveMachine(ctx context.Context, name, team string) error

	// SetAuditKeyring sets the keyring whose current key seals the audit
	// records appended from now on, by every method that appends them
	// (nil: version 1 records, plain SHA-256). The engine keeps it in
	// memory only: the store never holds a key. Engines embed
	// fsm.AuditSeal, which implements it, and chain records with its
	// ChainAudit (audit.Keyring.Chain) inside the appending transaction.
	SetAuditKeyring(k *audit.Keyring)
	// AppendAudit appends records to the chain (assigning Seq, PrevHash,
	// KeyID and Hash with fsm.AuditSeal.ChainAudit and moving the head) and
	// returns them as stored, in one transaction. ErrInvalidArgument
	// (audit.Record.Validate).
	AppendAudit(ctx context.Context, recs ...audit.Record) ([]audit.Record, error)
	// ListAudit returns the records matching f (normalized by the caller
	// with audit.Filter.Normalize; engines normalize it again) in Seq order,
	// at most f.Limit. ErrInvalidArgument wrapping audit.ErrInvalidFilter.
	ListAudit(ctx context.Context, f audit.Filter) ([]audit.Record, error)
	// AuditHead returns the last record's Seq and Hash as kept beside the
	// chain (zero Head for an empty trail). AuditHead and ListAudit are
	// separate reads, and a record and the head that covers it are
	// committed together: to verify a trail others may be appending to,
	// list the records, then read the head; while the head is past the
	// last record listed, list the records after that one and read the
	// head again (stop when a listing adds none), as storetest.VerifyAudit
	// does. Trimming (TrimAudit) does not move the head.
	AuditHead(ctx context.Context) (audit.Head, error)

	// TrimAudit deletes the records with Seq <= uptoSeq, once the caller
	// has archived them, and moves the base (AuditBase) to the last record
	// deleted, in one transaction. uptoSeq at or below the base trims
	// nothing (not an error). ErrInvalidArgument when uptoSeq is negative
	// or past the head; ErrCorrupt when record uptoSeq is missing. The
	// context's audit records are appended after the head as usual.
	TrimAudit(ctx context.Context, uptoSeq int64) error
	// AuditBase returns where the stored chain starts: the Seq and Hash of
	// the last trimmed record (zero Head when nothing was trimmed), so the
	// first stored record has Seq base.Seq+1 and PrevHash
	// base.LinkHash(). The stored records verify with
	// audit.NewVerifier(base, audit.WithHead(head)); the whole trail is the
	// archived segments, verified from the zero Head up to base, then the
	// stored rest. A trim between reading the base and listing the records
	// makes the listing start past base: read the base again after listing
	// and start over when it moved (storetest.CheckAudit does).
	AuditBase(ctx context.Context) (audit.Head, error)
}
