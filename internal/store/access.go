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

// DefaultTeam exists in every store (created by the first migration) and
// cannot be deleted.
const DefaultTeam = "default"

// Team is a group of machines and members (prod, staging, dev …).
type Team struct {
	Name        string
	Description string
	CreatedAt   time.Time
}

// Member is a user's role in one team: "admin", "operator" or "viewer".
type Member struct {
	Team    string
	User    string
	Role    string
	AddedAt time.Time
}

// StoreRole is a store-wide role of a user: "owner" or "auditor".
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
// records without the change. Seq, PrevHash and Hash are assigned by the
// engine (audit.Chain).
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
type Access interface {
	// CreateTeam inserts t. ErrExists.
	CreateTeam(ctx context.Context, t Team) error
	// GetTeam returns one team. ErrNotFound.
	GetTeam(ctx context.Context, name string) (Team, error)
	// ListTeams returns all teams ordered by name.
	ListTeams(ctx context.Context) ([]Team, error)
	// RenameTeam renames a team and, in the same transaction, every
	// reference to it (machines, tasks, members). ErrNotFound (old),
	// ErrExists (new), ErrInvalidArgument when old is DefaultTeam.
	RenameTeam(ctx context.Context, oldName, newName string) error
	// DeleteTeam deletes a team and its members. ErrNotFound;
	// ErrTeamNotEmpty while it has machines or non-terminal tasks;
	// ErrInvalidArgument for DefaultTeam.
	DeleteTeam(ctx context.Context, name string) error

	// PutMember adds a member or changes its role; created reports which.
	// ErrNotFound when the team does not exist.
	PutMember(ctx context.Context, m Member) (created bool, err error)
	// DeleteMember removes a user from a team. ErrNotFound.
	DeleteMember(ctx context.Context, team, user string) error
	// ListMembers returns a team's members ordered by user ("" = every
	// team, ordered by team then user).
	ListMembers(ctx context.Context, team string) ([]Member, error)
	// MemberRoles returns the user's role in each team it belongs to.
	MemberRoles(ctx context.Context, user string) (map[string]string, error)

	// PutStoreRole grants a store-wide role (idempotent).
	PutStoreRole(ctx context.Context, r StoreRole) error
	// DeleteStoreRole revokes a store-wide role. ErrNotFound; ErrLastOwner
	// when it is the last owner.
	DeleteStoreRole(ctx context.Context, user, role string) error
	// StoreRoles returns every store-wide role (user "" ) or one user's.
	StoreRoles(ctx context.Context, user string) ([]StoreRole, error)
	// InitOwner makes user the store's owner if the store has none yet, in
	// one transaction (two first actors racing: exactly one wins). It
	// returns whether user became the owner.
	InitOwner(ctx context.Context, user string, at time.Time) (bool, error)

	// MoveMachine assigns a machine to another team. ErrNotFound (machine
	// or team); ErrMachineHasTasks while it has non-terminal tasks.
	MoveMachine(ctx context.Context, name, team string) error

	// AppendAudit appends records to the chain (assigning Seq, PrevHash,
	// Hash with audit.Chain and moving the head) and returns them as stored.
	AppendAudit(ctx context.Context, recs ...audit.Record) ([]audit.Record, error)
	// ListAudit returns the records matching f (already normalized) in Seq
	// order, at most f.Limit.
	ListAudit(ctx context.Context, f audit.Filter) ([]audit.Record, error)
	// AuditHead returns the last record's Seq and Hash as kept beside the
	// chain (zero Head for an empty trail).
	AuditHead(ctx context.Context) (audit.Head, error)
}
