// Package authz is the role matrix: which role may perform which action on
// which team. It does no storage and no I/O; the SDK looks up an actor's
// [Grants] in its store and asks [Allowed] (or [Explain]) before every public
// operation. Anything not granted by the matrix is denied, including unknown
// actions and unknown roles.
//
// # Roles
//
// Store-wide roles, held in [Grants].StoreRoles, apply to every team:
//
//   - [Owner]: everything, including creating, renaming and deleting teams
//     and naming owners and auditors.
//   - [Auditor]: reads and verifies the audit trail, nothing else.
//
// Team roles, held per team in [Grants].TeamRoles, apply only to that team: a
// member of staging can neither see nor touch prod's machines and tasks.
//
//   - [Admin]: the team's members, machines, vault and tasks.
//   - [Operator]: submits, cancels and reads tasks and their output on the
//     team's machines (and, as a worker, runs them); may use vault secrets in
//     tasks and list their keys, but not read their values.
//   - [Viewer]: lists and inspects the team's machines, queue and tasks; no
//     output, no cancel.
//
// # Scope
//
// A store-scoped action ([ScopeStore]: team.create, owner.*, auditor.*,
// audit.verify) ignores the team argument. A team-scoped action names the
// team it acts on; the empty team means "every team" (listing all teams, all
// tasks, the whole audit trail), which only a store role can be allowed.
//
// [Matrix] returns the whole matrix and [MarkdownTable] renders it for the
// docs.
package authz

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Role is a role an actor holds, store-wide or in one team.
type Role string

// The roles.
const (
	// Owner may do everything, store-wide.
	Owner Role = "owner"
	// Admin manages one team: members, machines, vault, tasks.
	Admin Role = "admin"
	// Operator submits, cancels and reads tasks (with output) of one team.
	Operator Role = "operator"
	// Viewer lists and inspects one team's machines, queue and tasks.
	Viewer Role = "viewer"
	// Auditor reads and verifies the whole audit trail, nothing else.
	Auditor Role = "auditor"
)

// ErrUnknownRole is returned by [ParseRole] for a name that is not a role.
var ErrUnknownRole = errors.New("unknown role")

// ErrUnknownAction is returned by [ParseAction] for a name that is not an action.
var ErrUnknownAction = errors.New("unknown action")

// Roles returns every role, in the matrix's column order.
func Roles() []Role { return []Role{Owner, Admin, Operator, Viewer, Auditor} }

// ParseRole parses a role name, ignoring case and surrounding space. The
// error wraps [ErrUnknownRole] and lists the valid names.
func ParseRole(s string) (Role, error) {
	r := Role(strings.ToLower(strings.TrimSpace(s)))
	if r.Valid() {
		return r, nil
	}
	return "", fmt.Errorf("%w %q: want one of %s", ErrUnknownRole, s, joinRoles(Roles()))
}

// Valid reports whether r is one of the five roles.
func (r Role) Valid() bool { return r.StoreWide() || r.TeamScoped() }

// StoreWide reports whether r is held store-wide: Owner or Auditor.
func (r Role) StoreWide() bool { return r == Owner || r == Auditor }

// TeamScoped reports whether r is held in a team: Admin, Operator or Viewer.
func (r Role) TeamScoped() bool { return r == Admin || r == Operator || r == Viewer }

// String returns the role's name.
func (r Role) String() string { return string(r) }

// Grants are the roles one actor holds.
type Grants struct {
	// StoreRoles are the actor's store-wide roles (Owner, Auditor); team
	// roles listed here are ignored.
	StoreRoles []Role
	// TeamRoles maps a team name to the actor's role in it (Admin, Operator,
	// Viewer); store roles, unknown roles and the empty team name are ignored.
	TeamRoles map[string]Role
}

// Has reports whether g holds the store-wide role r.
func (g Grants) Has(r Role) bool { return r.StoreWide() && slices.Contains(g.StoreRoles, r) }

// RoleIn returns g's role in team, if it holds a valid team role there.
func (g Grants) RoleIn(team string) (Role, bool) {
	if team == "" {
		return "", false
	}
	r, ok := g.TeamRoles[team]
	if !ok || !r.TeamScoped() {
		return "", false
	}
	return r, true
}

// Teams returns, sorted, the teams in which g holds a valid team role: the
// teams a non-owner sees in a team list.
func (g Grants) Teams() []string {
	var out []string
	for _, t := range slices.Sorted(maps.Keys(g.TeamRoles)) {
		if _, ok := g.RoleIn(t); ok {
			out = append(out, t)
		}
	}
	return out
}

// Validate reports the first grant that would be ignored: a team role in
// StoreRoles, a store or unknown role in TeamRoles, or an empty team name. A
// store uses it to refuse storing such grants.
func (g Grants) Validate() error {
	for _, r := range g.StoreRoles {
		if !r.StoreWide() {
			return fmt.Errorf("%w %q as a store-wide role: want %s", ErrUnknownRole, r, joinRoles([]Role{Owner, Auditor}))
		}
	}
	for _, t := range slices.Sorted(maps.Keys(g.TeamRoles)) {
		if t == "" {
			return errors.New("team role for an empty team name")
		}
		if r := g.TeamRoles[t]; !r.TeamScoped() {
			return fmt.Errorf("%w %q in team %q: want %s", ErrUnknownRole, r, t, joinRoles([]Role{Admin, Operator, Viewer}))
		}
	}
	return nil
}

// Decision is the outcome of a check, with the reason in words.
type Decision struct {
	// Allowed is the verdict.
	Allowed bool
	// Role is the role that allowed the action ("" when denied).
	Role Role
	// Reason says why, e.g. `role viewer in team "prod" does not permit
	// task.cancel (needs owner, admin or operator)`.
	Reason string
}

// String returns "allowed: reason" or "denied: reason".
func (d Decision) String() string {
	if d.Allowed {
		return "allowed: " + d.Reason
	}
	return "denied: " + d.Reason
}

// Allowed reports whether g may perform a on team (see the package
// documentation for the matrix and the meaning of the empty team). For
// MachineMove it checks one team only: use [AllowedMove].
func Allowed(g Grants, a Action, team string) bool { return Explain(g, a, team).Allowed }

// Explain is [Allowed] with the role that decided and the reason in words.
func Explain(g Grants, a Action, team string) Decision {
	ru, ok := rules[a]
	if !ok {
		return Decision{Reason: fmt.Sprintf("unknown action %q is denied by default", a)}
	}
	// Store-wide roles first: they apply to every team, and to "every team".
	for _, r := range []Role{Owner, Auditor} {
		if ru.roles[r] && g.Has(r) {
			return Decision{Allowed: true, Role: r, Reason: fmt.Sprintf("store role %s permits %s%s", r, a, onTeam(ru.scope, team))}
		}
	}
	needs := joinRoles(ru.roleList())
	if ru.scope == ScopeStore {
		return Decision{Reason: fmt.Sprintf("%s is a store-wide action and needs the store role %s", a, needs)}
	}
	if team == "" {
		return Decision{Reason: fmt.Sprintf("%s without a team covers every team and needs the store role %s", a,
			joinRoles(slices.DeleteFunc(ru.roleList(), func(r Role) bool { return !r.StoreWide() })))}
	}
	r, ok := g.RoleIn(team)
	if !ok {
		return Decision{Reason: fmt.Sprintf("no role in team %q; %s needs %s", team, a, needs)}
	}
	if ru.roles[r] {
		return Decision{Allowed: true, Role: r, Reason: fmt.Sprintf("role %s in team %q permits %s", r, team, a)}
	}
	return Decision{Reason: fmt.Sprintf("role %s in team %q does not permit %s (needs %s)", r, team, a, needs)}
}

func onTeam(s Scope, team string) string {
	switch {
	case s == ScopeStore:
		return ""
	case team == "":
		return " on every team"
	default:
		return fmt.Sprintf(" on team %q", team)
	}
}

// AllowedMove reports whether g may move a machine from team from to team to:
// MachineMove must be allowed on both.
func AllowedMove(g Grants, from, to string) bool { return ExplainMove(g, from, to).Allowed }

// ExplainMove is [AllowedMove] with the reason; when denied, the reason names
// the team that is missing the permission.
func ExplainMove(g Grants, from, to string) Decision {
	src := Explain(g, MachineMove, from)
	if !src.Allowed {
		src.Reason = "source team: " + src.Reason
		return src
	}
	dst := Explain(g, MachineMove, to)
	if !dst.Allowed {
		dst.Reason = "destination team: " + dst.Reason
		return dst
	}
	return Decision{Allowed: true, Role: src.Role, Reason: fmt.Sprintf("%s (source) and %s (destination)", src.Reason, dst.Reason)}
}

// joinRoles formats roles as "a, b or c".
func joinRoles(rs []Role) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = string(r)
	}
	switch len(s) {
	case 0:
		return "(none)"
	case 1:
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}
