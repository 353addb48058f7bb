package fsm

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/store"
)

// Audit limits on a record's time: years 1..9999, the range of its RFC 3339
// form (engines may store it as int64 unix milliseconds).
var (
	minAuditTime = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	maxAuditTime = time.Date(9999, 12, 31, 23, 59, 59, 999e6, time.UTC)
)

// CheckAudit checks records about to be appended (audit.Record.Validate and
// a time in years 1..9999). Errors wrap store.ErrInvalidArgument.
func CheckAudit(recs []audit.Record) error {
	for i, r := range recs {
		if err := r.Validate(); err != nil {
			return fmt.Errorf("%w: audit record %d (%s): %v", store.ErrInvalidArgument, i+1, r.Action, err)
		}
		if t := audit.NormalizeTime(r.Time); t.Before(minAuditTime) || t.After(maxAuditTime) {
			return fmt.Errorf("%w: audit record %d (%s): time %v is outside years 1..9999", store.ErrInvalidArgument, i+1, r.Action, r.Time)
		}
	}
	return nil
}

// CtxAudit returns ctx's audit records (store.WithAudit), checked with
// CheckAudit.
func CtxAudit(ctx context.Context) ([]audit.Record, error) {
	recs := store.AuditFrom(ctx)
	if err := CheckAudit(recs); err != nil {
		return nil, err
	}
	return recs, nil
}

// CloneRecord deep-copies r; empty Details become nil.
func CloneRecord(r audit.Record) audit.Record {
	if len(r.Details) == 0 {
		r.Details = nil
	} else {
		r.Details = maps.Clone(r.Details)
	}
	return r
}

// CheckAuditFilter normalizes an audit filter; errors wrap
// store.ErrInvalidArgument and audit.ErrInvalidFilter.
func CheckAuditFilter(f audit.Filter) (audit.Filter, error) {
	n, err := f.Normalize()
	if err != nil {
		return f, fmt.Errorf("%w: %w", store.ErrInvalidArgument, err)
	}
	return n, nil
}

// NewTeam checks t and fills its CreatedAt.
func NewTeam(t store.Team, now time.Time) (store.Team, error) {
	if t.Name == "" {
		return store.Team{}, fmt.Errorf("%w: team name is empty", store.ErrInvalidArgument)
	}
	if err := checkTimes("CreatedAt", t.CreatedAt); err != nil {
		return store.Team{}, fmt.Errorf("team %s: %w", t.Name, err)
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = now
	}
	t.CreatedAt = Time(t.CreatedAt)
	return t, nil
}

// CheckRename checks RenameTeam's arguments.
func CheckRename(oldName, newName string) error {
	switch {
	case oldName == "" || newName == "":
		return fmt.Errorf("%w: rename team %q to %q: empty name", store.ErrInvalidArgument, oldName, newName)
	case oldName == store.DefaultTeam:
		return fmt.Errorf("%w: team %s cannot be renamed", store.ErrInvalidArgument, store.DefaultTeam)
	}
	return nil
}

// CheckDeleteTeam checks DeleteTeam's argument.
func CheckDeleteTeam(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: team name is empty", store.ErrInvalidArgument)
	case name == store.DefaultTeam:
		return fmt.Errorf("%w: team %s cannot be deleted", store.ErrInvalidArgument, store.DefaultTeam)
	}
	return nil
}

// TeamNotEmpty is DeleteTeam's error for a team with machines or unfinished
// tasks; nil when both counts are zero.
func TeamNotEmpty(team string, machines, tasks int) error {
	if machines == 0 && tasks == 0 {
		return nil
	}
	return fmt.Errorf("%w: team %s has %d machine(s) and %d unfinished task(s); move or delete the machines and let the tasks finish (or cancel them) first",
		store.ErrTeamNotEmpty, team, machines, tasks)
}

// NewMember checks m (a team role) and fills its AddedAt.
func NewMember(m store.Member, now time.Time) (store.Member, error) {
	switch {
	case m.Team == "":
		return store.Member{}, fmt.Errorf("%w: member %s: team is empty", store.ErrInvalidArgument, m.User)
	case m.User == "":
		return store.Member{}, fmt.Errorf("%w: member of team %s: user is empty", store.ErrInvalidArgument, m.Team)
	case !authz.Role(m.Role).TeamScoped():
		return store.Member{}, fmt.Errorf("%w: member %s of team %s: role %q is not %s, %s or %s", store.ErrInvalidArgument,
			m.User, m.Team, m.Role, authz.Admin, authz.Operator, authz.Viewer)
	}
	if err := checkTimes("AddedAt", m.AddedAt); err != nil {
		return store.Member{}, fmt.Errorf("member %s of team %s: %w", m.User, m.Team, err)
	}
	if m.AddedAt.IsZero() {
		m.AddedAt = now
	}
	m.AddedAt = Time(m.AddedAt)
	return m, nil
}

// NewStoreRole checks r (a store-wide role) and fills its AddedAt.
func NewStoreRole(r store.StoreRole, now time.Time) (store.StoreRole, error) {
	switch {
	case r.User == "":
		return store.StoreRole{}, fmt.Errorf("%w: store role %s: user is empty", store.ErrInvalidArgument, r.Role)
	case !authz.Role(r.Role).StoreWide():
		return store.StoreRole{}, fmt.Errorf("%w: store role of %s: %q is not %s or %s", store.ErrInvalidArgument,
			r.User, r.Role, authz.Owner, authz.Auditor)
	}
	if err := checkTimes("AddedAt", r.AddedAt); err != nil {
		return store.StoreRole{}, fmt.Errorf("store role %s of %s: %w", r.Role, r.User, err)
	}
	if r.AddedAt.IsZero() {
		r.AddedAt = now
	}
	r.AddedAt = Time(r.AddedAt)
	return r, nil
}

// CheckMove checks MoveMachine's arguments.
func CheckMove(name, team string) error {
	if name == "" || team == "" {
		return fmt.Errorf("%w: move machine %q to team %q: empty name", store.ErrInvalidArgument, name, team)
	}
	return nil
}

// MachineHasTasks is the error for moving machine while task id is status.
func MachineHasTasks(machine, id string, status store.Status) error {
	return fmt.Errorf("%w: machine %s: task %s is %s", store.ErrMachineHasTasks, machine, id, status)
}

// MatchMachine reports whether m passes f.
func MatchMachine(m *store.Machine, f store.MachineFilter) bool {
	return (f.Team == "" || m.Team == f.Team) && (f.Teams == nil || slices.Contains(f.Teams, m.Team))
}

// SortMembers sorts members by team then user.
func SortMembers(ms []store.Member) {
	slices.SortFunc(ms, func(a, b store.Member) int {
		if c := cmp.Compare(a.Team, b.Team); c != 0 {
			return c
		}
		return cmp.Compare(a.User, b.User)
	})
}

// SortStoreRoles sorts roles by user then role.
func SortStoreRoles(rs []store.StoreRole) {
	slices.SortFunc(rs, func(a, b store.StoreRole) int {
		if c := cmp.Compare(a.User, b.User); c != 0 {
			return c
		}
		return cmp.Compare(a.Role, b.Role)
	})
}
