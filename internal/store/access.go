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
// schema's migration 2, by memory.New) and cannot be deleted or renamed. It
// is both the team's id and its name.
const DefaultTeam = "default"

// Team is a group of machines and members (prod, staging, dev …).
type Team struct {
	// ID is immutable; CreateTeam gives a new UUID when it is empty.
	ID string
	// Name is unique among live teams and may change (RenameTeam).
	Name        string
	Description string
	CreatedAt   time.Time
	// DeletedAt is when DeleteTeam deleted the team (zero while it is
	// live). A deleted team keeps its record (its tasks and audit records
	// still name it); its name is free for a new team, which gets a new id
	// and sees nothing of the old one.
	DeletedAt time.Time
}

// TeamFilter narrows ListTeams.
type TeamFilter struct {
	// IncludeDeleted lists deleted teams too (DeletedAt set).
	IncludeDeleted bool
}

// Member is a user's role in one team: "admin", "operator" or "viewer"
// (authz.Admin, authz.Operator, authz.Viewer).
type Member struct {
	TeamID string
	// Team is the team's name, filled on read (ignored on write).
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
// MoveMachine, TrimAudit, AppendAudit) evaluates the guard conditions its
// context carries (WithGuard) inside its transaction first, and appends the
// audit records its context carries (WithAudit) in the same transaction as
// its change, and only when it returns no error. Times zero on input
// (CreatedAt, AddedAt) default to now. Names, ids and users must be
// non-empty (ErrInvalidArgument).
type Access interface {
	// CreateTeam inserts t and returns it as stored (ID a new UUID when
	// empty). ErrExists when a live team has the name or the id is taken;
	// ErrInvalidArgument (empty name).
	CreateTeam(ctx context.Context, t Team) (Team, error)
	// GetTeam returns one team by id, live or deleted (DeletedAt set).
	// ErrNotFound.
	GetTeam(ctx context.Context, id string) (Team, error)
	// TeamByName returns the live team named name. ErrNotFound.
	TeamByName(ctx context.Context, name string) (Team, error)
	// ListTeams returns the live teams (and the deleted ones with
	// f.IncludeDeleted) ordered by name, then id.
	ListTeams(ctx context.Context, f TeamFilter) ([]Team, error)
	// RenameTeam renames the live team id; every reference to it is by id,
	// so machines, tasks, members, vault and audit records stay with it.
	// ErrNotFound (no live team id), ErrExists (a live team has the new
	// name, including the team itself), ErrInvalidArgument when id is
	// DefaultTeam or the new name is empty.
	RenameTeam(ctx context.Context, id, newName string) error
	// DeleteTeam deletes the live team id: its members are removed and the
	// team keeps its record with DeletedAt = at (zero: now); its name
	// becomes free. ErrNotFound; ErrTeamNotEmpty while it has live
	// machines or non-terminal tasks; ErrInvalidArgument for DefaultTeam.
	DeleteTeam(ctx context.Context, id string, at time.Time) error

	// PutMember adds a member to the live team m.TeamID or changes its
	// role; created reports which (a changed role keeps the first AddedAt).
	// ErrNotFound when the team is not live; ErrInvalidArgument for a role
	// that is not a team role.
	PutMember(ctx context.Context, m Member) (created bool, err error)
	// DeleteMember removes a user from a team (id). ErrNotFound.
	DeleteMember(ctx context.Context, teamID, user string) error
	// ListMembers returns a team's members ordered by user ("" = every
	// team, ordered by team id then user).
	ListMembers(ctx context.Context, teamID string) ([]Member, error)
	// MemberRoles returns the user's role in each team it belongs to, team
	// id -> role (an empty map when none).
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

	// MoveMachine assigns the live machine id to the live team teamID
	// (setting its UpdatedAt; moving it to its own team changes nothing).
	// ErrNotFound (machine or team); ErrMachineHasTasks while it has
	// non-terminal tasks. The machine's finished tasks keep the team they
	// ran under.
	MoveMachine(ctx context.Context, id, teamID string) error

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
