package fsm

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

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

// ClaimAudit returns the records r.Audit gives for the claimed tasks
// (nil when r.Audit is nil or nothing was claimed), checked with
// CheckAudit.
func ClaimAudit(r store.ClaimRequest, claimed []store.Task) ([]audit.Record, error) {
	if r.Audit == nil || len(claimed) == 0 {
		return nil, nil
	}
	recs := r.Audit(claimed)
	if err := CheckAudit(recs); err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	return recs, nil
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

// CtxGuard returns ctx's guard conditions (store.WithGuard), each checked
// with Condition.Validate.
func CtxGuard(ctx context.Context) ([]store.Condition, error) {
	cs := store.GuardFrom(ctx)
	for _, c := range cs {
		if err := c.Validate(); err != nil {
			return nil, err
		}
	}
	return cs, nil
}

// GuardFailed is the *store.GuardError of condition c, with what was
// found instead.
func GuardFailed(c store.Condition, format string, a ...any) error {
	return &store.GuardError{Condition: c, Found: fmt.Sprintf(format, a...)}
}

// MachineUnchanged evaluates c (store.CondMachineUnchanged) against cur,
// the machine's record now (found false: there is none).
func MachineUnchanged(c store.Condition, cur store.Machine, found bool) error {
	switch {
	case !found:
		return GuardFailed(c, "no such machine")
	case !cur.DeletedAt.IsZero():
		return GuardFailed(c, "the machine was removed")
	case cur.TeamID != c.TeamID:
		return GuardFailed(c, "the machine is in team %q", cur.TeamID)
	case !store.SameMachine(*c.Machine, cur):
		return GuardFailed(c, "the machine's record changed (name, address, user or config)")
	}
	return nil
}

// Granted reports whether a user holding storeRoles store-wide and teamRole
// in c.TeamID ("" for none) satisfies the role condition c.
func Granted(c store.Condition, storeRoles []string, teamRole string) bool {
	for _, r := range storeRoles {
		if slices.Contains(c.StoreRoles, r) {
			return true
		}
	}
	return teamRole != "" && c.TeamID != "" && slices.Contains(c.TeamRoles, teamRole)
}

// DescribeRoles says which roles user holds, for a failed role guard.
func DescribeRoles(user string, storeRoles []string, teamRole, team string) string {
	storeRoles = slices.Clone(storeRoles)
	slices.Sort(storeRoles)
	s := user + " holds no store role"
	if len(storeRoles) > 0 {
		s = user + " holds the store roles " + strings.Join(storeRoles, ", ")
	}
	if team == "" {
		return s
	}
	if teamRole == "" {
		return s + fmt.Sprintf(" and no role in team %q", team)
	}
	return s + fmt.Sprintf(" and the role %s in team %q", teamRole, team)
}

// SortTeams sorts teams by name, then id.
func SortTeams(ts []store.Team) {
	slices.SortFunc(ts, func(a, b store.Team) int { return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID)) })
}

// KeepAudit drops from recs the records about tasks that were not created:
// those whose EntityID is in notCreated (the given ids of tasks an
// idempotency key turned into an existing one).
func KeepAudit(recs []audit.Record, notCreated map[string]bool) []audit.Record {
	if len(notCreated) == 0 {
		return recs
	}
	out := make([]audit.Record, 0, len(recs))
	for _, r := range recs {
		if !notCreated[r.EntityID] {
			out = append(out, r)
		}
	}
	return out
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

// NewTeam checks t and fills its ID (a new UUID when empty) and CreatedAt;
// DeletedAt is cleared.
func NewTeam(t store.Team, now time.Time) (store.Team, error) {
	if t.Name == "" {
		return store.Team{}, fmt.Errorf("%w: team name is empty", store.ErrInvalidArgument)
	}
	if err := checkTimes("CreatedAt", t.CreatedAt); err != nil {
		return store.Team{}, fmt.Errorf("team %s: %w", t.Name, err)
	}
	if t.ID == "" {
		t.ID = uuid.NewString()
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = now
	}
	t.CreatedAt, t.DeletedAt = Time(t.CreatedAt), time.Time{}
	return t, nil
}

// CheckRename checks RenameTeam's arguments.
func CheckRename(id, newName string) error {
	switch {
	case id == "" || newName == "":
		return fmt.Errorf("%w: rename team %q to %q: empty id or name", store.ErrInvalidArgument, id, newName)
	case id == store.DefaultTeam:
		return fmt.Errorf("%w: team %s cannot be renamed", store.ErrInvalidArgument, store.DefaultTeam)
	}
	return nil
}

// DeleteTime checks DeleteTeam's (and DeleteMachine's) arguments and
// returns the deletion time: at, or now when zero, normalized.
func DeleteTime(what, id string, at, now time.Time) (time.Time, error) {
	switch {
	case id == "":
		return time.Time{}, fmt.Errorf("%w: %s id is empty", store.ErrInvalidArgument, what)
	case what == "team" && id == store.DefaultTeam:
		return time.Time{}, fmt.Errorf("%w: team %s cannot be deleted", store.ErrInvalidArgument, store.DefaultTeam)
	}
	if err := checkTimes("deleted at", at); err != nil {
		return time.Time{}, fmt.Errorf("%s %s: %w", what, id, err)
	}
	if at.IsZero() {
		at = now
	}
	return Time(at), nil
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

// NewMember checks m (a team role) and fills its AddedAt; Team (a name) is
// cleared: engines fill it on read.
func NewMember(m store.Member, now time.Time) (store.Member, error) {
	switch {
	case m.TeamID == "":
		return store.Member{}, fmt.Errorf("%w: member %s: team id is empty", store.ErrInvalidArgument, m.User)
	case m.User == "":
		return store.Member{}, fmt.Errorf("%w: member of team %s: user is empty", store.ErrInvalidArgument, m.TeamID)
	case !authz.Role(m.Role).TeamScoped():
		return store.Member{}, fmt.Errorf("%w: member %s of team %s: role %q is not %s, %s or %s", store.ErrInvalidArgument,
			m.User, m.TeamID, m.Role, authz.Admin, authz.Operator, authz.Viewer)
	}
	if err := checkTimes("AddedAt", m.AddedAt); err != nil {
		return store.Member{}, fmt.Errorf("member %s of team %s: %w", m.User, m.TeamID, err)
	}
	m.Team = ""
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
func CheckMove(id, teamID string) error {
	if id == "" || teamID == "" {
		return fmt.Errorf("%w: move machine %q to team %q: empty id", store.ErrInvalidArgument, id, teamID)
	}
	return nil
}

// MachineHasTasks is the error for moving machine while task id is status.
func MachineHasTasks(machine, id string, status store.Status) error {
	return fmt.Errorf("%w: machine %s: task %s is %s", store.ErrMachineHasTasks, machine, id, status)
}

// MatchMachine reports whether m passes f (live machines only).
func MatchMachine(m *store.Machine, f store.MachineFilter) bool {
	return m.DeletedAt.IsZero() && (f.TeamID == "" || m.TeamID == f.TeamID) && (f.TeamIDs == nil || slices.Contains(f.TeamIDs, m.TeamID))
}

// SortMembers sorts members by team id then user.
func SortMembers(ms []store.Member) {
	slices.SortFunc(ms, func(a, b store.Member) int {
		if c := cmp.Compare(a.TeamID, b.TeamID); c != 0 {
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
