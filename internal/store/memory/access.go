package memory

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

// CreateTeam inserts t. ErrExists; ErrInvalidArgument.
func (e *Engine) CreateTeam(ctx context.Context, t store.Team) error {
	t, err := fsm.NewTeam(t, time.Now())
	if err != nil {
		return err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return err
	}
	defer e.mu.Unlock()
	if _, ok := e.teams[t.Name]; ok {
		return fmt.Errorf("%w: team %s", store.ErrExists, t.Name)
	}
	e.teams[t.Name] = t
	e.record(recs)
	return nil
}

// GetTeam returns one team. ErrNotFound.
func (e *Engine) GetTeam(ctx context.Context, name string) (store.Team, error) {
	if err := e.lock(ctx); err != nil {
		return store.Team{}, err
	}
	defer e.mu.Unlock()
	t, ok := e.teams[name]
	if !ok {
		return store.Team{}, fmt.Errorf("%w: team %s", store.ErrNotFound, name)
	}
	return t, nil
}

// ListTeams returns all teams ordered by name.
func (e *Engine) ListTeams(ctx context.Context) ([]store.Team, error) {
	if err := e.lock(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	out := make([]store.Team, 0, len(e.teams))
	for _, name := range slices.Sorted(maps.Keys(e.teams)) {
		out = append(out, e.teams[name])
	}
	return out, nil
}

// RenameTeam renames a team and every machine, task and member reference to
// it. ErrNotFound; ErrExists; ErrInvalidArgument.
func (e *Engine) RenameTeam(ctx context.Context, oldName, newName string) error {
	if err := fsm.CheckRename(oldName, newName); err != nil {
		return err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return err
	}
	defer e.mu.Unlock()
	t, ok := e.teams[oldName]
	if !ok {
		return fmt.Errorf("%w: team %s", store.ErrNotFound, oldName)
	}
	if _, ok := e.teams[newName]; ok {
		return fmt.Errorf("%w: team %s", store.ErrExists, newName)
	}
	delete(e.teams, oldName)
	t.Name = newName
	e.teams[newName] = t
	for name, m := range e.machines {
		if m.Team == oldName {
			m.Team = newName
			e.machines[name] = m
		}
	}
	for _, en := range e.tasks {
		if en.task.Team == oldName {
			en.task.Team = newName
		}
	}
	if ms, ok := e.members[oldName]; ok {
		delete(e.members, oldName)
		for u, m := range ms {
			m.Team = newName
			ms[u] = m
		}
		e.members[newName] = ms
	}
	e.record(recs)
	return nil
}

// DeleteTeam deletes a team and its members. ErrNotFound; ErrTeamNotEmpty;
// ErrInvalidArgument.
func (e *Engine) DeleteTeam(ctx context.Context, name string) error {
	if err := fsm.CheckDeleteTeam(name); err != nil {
		return err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return err
	}
	defer e.mu.Unlock()
	if _, ok := e.teams[name]; !ok {
		return fmt.Errorf("%w: team %s", store.ErrNotFound, name)
	}
	machines, tasks := 0, 0
	for _, m := range e.machines {
		if m.Team == name {
			machines++
		}
	}
	for _, en := range e.tasks {
		if en.task.Team == name && !en.task.Status.Terminal() {
			tasks++
		}
	}
	if err := fsm.TeamNotEmpty(name, machines, tasks); err != nil {
		return err
	}
	delete(e.teams, name)
	delete(e.members, name)
	e.record(recs)
	return nil
}

// PutMember adds a member or changes its role. ErrNotFound;
// ErrInvalidArgument.
func (e *Engine) PutMember(ctx context.Context, m store.Member) (bool, error) {
	m, err := fsm.NewMember(m, time.Now())
	if err != nil {
		return false, err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return false, err
	}
	defer e.mu.Unlock()
	if _, ok := e.teams[m.Team]; !ok {
		return false, fmt.Errorf("%w: team %s", store.ErrNotFound, m.Team)
	}
	ms := e.members[m.Team]
	if ms == nil {
		ms = make(map[string]store.Member)
		e.members[m.Team] = ms
	}
	old, exists := ms[m.User]
	if exists {
		m.AddedAt = old.AddedAt
	}
	ms[m.User] = m
	e.record(recs)
	return !exists, nil
}

// DeleteMember removes a user from a team. ErrNotFound.
func (e *Engine) DeleteMember(ctx context.Context, team, user string) error {
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return err
	}
	defer e.mu.Unlock()
	if _, ok := e.members[team][user]; !ok {
		return fmt.Errorf("%w: member %s of team %s", store.ErrNotFound, user, team)
	}
	delete(e.members[team], user)
	if len(e.members[team]) == 0 {
		delete(e.members, team)
	}
	e.record(recs)
	return nil
}

// ListMembers returns a team's members ordered by user, or every member
// ordered by team then user when team is "".
func (e *Engine) ListMembers(ctx context.Context, team string) ([]store.Member, error) {
	if err := e.lock(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	var out []store.Member
	for t, ms := range e.members {
		if team == "" || t == team {
			for _, m := range ms {
				out = append(out, m)
			}
		}
	}
	fsm.SortMembers(out)
	return out, nil
}

// MemberRoles returns team -> role for each team user belongs to.
func (e *Engine) MemberRoles(ctx context.Context, user string) (map[string]string, error) {
	if err := e.lock(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	out := make(map[string]string)
	for t, ms := range e.members {
		if m, ok := ms[user]; ok {
			out[t] = m.Role
		}
	}
	return out, nil
}

// PutStoreRole grants a store-wide role (idempotent). ErrInvalidArgument.
func (e *Engine) PutStoreRole(ctx context.Context, r store.StoreRole) error {
	r, err := fsm.NewStoreRole(r, time.Now())
	if err != nil {
		return err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return err
	}
	defer e.mu.Unlock()
	e.grant(r)
	e.record(recs)
	return nil
}

// grant stores r unless the user holds the role already; the mutex is held.
func (e *Engine) grant(r store.StoreRole) {
	rs := e.roles[r.User]
	if rs == nil {
		rs = make(map[string]store.StoreRole)
		e.roles[r.User] = rs
	}
	if _, ok := rs[r.Role]; !ok {
		rs[r.Role] = r
	}
}

// owners counts the users holding the owner role; the mutex is held.
func (e *Engine) owners() int {
	n := 0
	for _, rs := range e.roles {
		if _, ok := rs[string(authz.Owner)]; ok {
			n++
		}
	}
	return n
}

// DeleteStoreRole revokes a store-wide role. ErrNotFound; ErrLastOwner.
func (e *Engine) DeleteStoreRole(ctx context.Context, user, role string) error {
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return err
	}
	defer e.mu.Unlock()
	if _, ok := e.roles[user][role]; !ok {
		return fmt.Errorf("%w: user %s has no store role %s", store.ErrNotFound, user, role)
	}
	if role == string(authz.Owner) && e.owners() == 1 {
		return fmt.Errorf("%w: %s is the last owner; make another user owner first", store.ErrLastOwner, user)
	}
	delete(e.roles[user], role)
	if len(e.roles[user]) == 0 {
		delete(e.roles, user)
	}
	e.record(recs)
	return nil
}

// StoreRoles returns every store-wide role (user "") or one user's, ordered
// by user then role.
func (e *Engine) StoreRoles(ctx context.Context, user string) ([]store.StoreRole, error) {
	if err := e.lock(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	var out []store.StoreRole
	for u, rs := range e.roles {
		if user == "" || u == user {
			for _, r := range rs {
				out = append(out, r)
			}
		}
	}
	fsm.SortStoreRoles(out)
	return out, nil
}

// InitOwner makes user the owner if the store has none; it reports whether
// it did. The context's audit records are appended only then.
func (e *Engine) InitOwner(ctx context.Context, user string, at time.Time) (bool, error) {
	r, err := fsm.NewStoreRole(store.StoreRole{User: user, Role: string(authz.Owner), AddedAt: at}, time.Now())
	if err != nil {
		return false, err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return false, err
	}
	defer e.mu.Unlock()
	if e.owners() > 0 {
		return false, nil
	}
	e.grant(r)
	e.record(recs)
	return true, nil
}

// MoveMachine assigns a machine to another team. ErrNotFound;
// ErrMachineHasTasks; ErrInvalidArgument.
func (e *Engine) MoveMachine(ctx context.Context, name, team string) error {
	if err := fsm.CheckMove(name, team); err != nil {
		return err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return err
	}
	defer e.mu.Unlock()
	m, ok := e.machines[name]
	if !ok {
		return fmt.Errorf("%w: machine %s", store.ErrNotFound, name)
	}
	if _, ok := e.teams[team]; !ok {
		return fmt.Errorf("%w: team %s", store.ErrNotFound, team)
	}
	if m.Team != team {
		if t := e.unfinished(name); t != nil {
			return fsm.MachineHasTasks(name, t.ID, t.Status)
		}
		m.Team, m.UpdatedAt = team, fsm.Time(time.Now())
		e.machines[name] = m
	}
	e.record(recs)
	return nil
}

// AppendAudit appends recs to the trail and returns them as stored.
// ErrInvalidArgument.
func (e *Engine) AppendAudit(ctx context.Context, recs ...audit.Record) ([]audit.Record, error) {
	if err := fsm.CheckAudit(recs); err != nil {
		return nil, err
	}
	if err := e.lock(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	if len(recs) == 0 {
		return nil, nil
	}
	e.record(recs)
	out := make([]audit.Record, len(recs))
	for i, r := range e.trail[len(e.trail)-len(recs):] {
		out[i] = fsm.CloneRecord(r)
	}
	return out, nil
}

// ListAudit returns the records matching f in Seq order, at most f.Limit.
func (e *Engine) ListAudit(ctx context.Context, f audit.Filter) ([]audit.Record, error) {
	f, err := fsm.CheckAuditFilter(f)
	if err != nil {
		return nil, err
	}
	if err := e.lock(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	start := 0
	if f.AfterSeq > 0 {
		start = sort.Search(len(e.trail), func(i int) bool { return e.trail[i].Seq > f.AfterSeq })
	}
	var out []audit.Record
	for _, r := range e.trail[start:] {
		if len(out) == f.Limit {
			break
		}
		if f.Match(r) {
			out = append(out, fsm.CloneRecord(r))
		}
	}
	return out, nil
}

// AuditHead returns the last record's Seq and Hash (zero when empty).
func (e *Engine) AuditHead(ctx context.Context) (audit.Head, error) {
	if err := e.lock(ctx); err != nil {
		return audit.Head{}, err
	}
	defer e.mu.Unlock()
	return e.head, nil
}
