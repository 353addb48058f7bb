package memory

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

// CreateTeam inserts t. ErrExists; ErrInvalidArgument.
func (e *Engine) CreateTeam(ctx context.Context, t store.Team) (store.Team, error) {
	t, err := fsm.NewTeam(t, time.Now())
	if err != nil {
		return store.Team{}, err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return store.Team{}, err
	}
	defer e.mu.Unlock()
	if _, ok := e.teams[t.ID]; ok {
		return store.Team{}, fmt.Errorf("%w: team id %s", store.ErrExists, t.ID)
	}
	if _, ok := e.liveTeamNamed(t.Name); ok {
		return store.Team{}, fmt.Errorf("%w: team %s", store.ErrExists, t.Name)
	}
	e.teams[t.ID] = t
	e.record(recs)
	return t, nil
}

// liveTeamNamed returns the live team named name; the mutex is held.
func (e *Engine) liveTeamNamed(name string) (store.Team, bool) {
	for _, t := range e.teams {
		if t.Name == name && t.DeletedAt.IsZero() {
			return t, true
		}
	}
	return store.Team{}, false
}

// GetTeam returns one team by id, live or deleted. ErrNotFound.
func (e *Engine) GetTeam(ctx context.Context, id string) (store.Team, error) {
	if err := e.lock(ctx); err != nil {
		return store.Team{}, err
	}
	defer e.mu.Unlock()
	t, ok := e.teams[id]
	if !ok {
		return store.Team{}, fmt.Errorf("%w: team id %s", store.ErrNotFound, id)
	}
	return t, nil
}

// TeamByName returns the live team named name. ErrNotFound.
func (e *Engine) TeamByName(ctx context.Context, name string) (store.Team, error) {
	if err := e.lock(ctx); err != nil {
		return store.Team{}, err
	}
	defer e.mu.Unlock()
	t, ok := e.liveTeamNamed(name)
	if !ok {
		return store.Team{}, fmt.Errorf("%w: team %s", store.ErrNotFound, name)
	}
	return t, nil
}

// ListTeams returns the live teams (and deleted ones with
// f.IncludeDeleted) ordered by name, then id.
func (e *Engine) ListTeams(ctx context.Context, f store.TeamFilter) ([]store.Team, error) {
	if err := e.lock(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	out := make([]store.Team, 0, len(e.teams))
	for _, t := range e.teams {
		if f.IncludeDeleted || t.DeletedAt.IsZero() {
			out = append(out, t)
		}
	}
	fsm.SortTeams(out)
	return out, nil
}

// RenameTeam renames the live team id. ErrNotFound; ErrExists;
// ErrInvalidArgument.
func (e *Engine) RenameTeam(ctx context.Context, id, newName string) error {
	if err := fsm.CheckRename(id, newName); err != nil {
		return err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return err
	}
	defer e.mu.Unlock()
	t, ok := e.teams[id]
	if !ok || !t.DeletedAt.IsZero() {
		return fmt.Errorf("%w: team %s", store.ErrNotFound, id)
	}
	if _, ok := e.liveTeamNamed(newName); ok {
		return fmt.Errorf("%w: team %s", store.ErrExists, newName)
	}
	t.Name = newName
	e.teams[id] = t
	e.record(recs)
	return nil
}

// DeleteTeam deletes the live team id and its members, keeping its record.
// ErrNotFound; ErrTeamNotEmpty; ErrInvalidArgument.
func (e *Engine) DeleteTeam(ctx context.Context, id string, at time.Time) error {
	at, err := fsm.DeleteTime("team", id, at, time.Now())
	if err != nil {
		return err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return err
	}
	defer e.mu.Unlock()
	t, ok := e.teams[id]
	if !ok || !t.DeletedAt.IsZero() {
		return fmt.Errorf("%w: team %s", store.ErrNotFound, id)
	}
	machines, tasks := 0, 0
	for _, m := range e.machines {
		if m.TeamID == id && m.DeletedAt.IsZero() {
			machines++
		}
	}
	for _, en := range e.tasks {
		if en.task.TeamID == id && !en.task.Status.Terminal() {
			tasks++
		}
	}
	if err := fsm.TeamNotEmpty(t.Name, machines, tasks); err != nil {
		return err
	}
	t.DeletedAt = at
	e.teams[id] = t
	delete(e.members, id)
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
	if !e.liveTeam(m.TeamID) {
		return false, fmt.Errorf("%w: team %s", store.ErrNotFound, m.TeamID)
	}
	ms := e.members[m.TeamID]
	if ms == nil {
		ms = make(map[string]store.Member)
		e.members[m.TeamID] = ms
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
func (e *Engine) DeleteMember(ctx context.Context, teamID, user string) error {
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return err
	}
	defer e.mu.Unlock()
	if _, ok := e.members[teamID][user]; !ok {
		return fmt.Errorf("%w: member %s of team %s", store.ErrNotFound, user, teamID)
	}
	delete(e.members[teamID], user)
	if len(e.members[teamID]) == 0 {
		delete(e.members, teamID)
	}
	e.record(recs)
	return nil
}

// ListMembers returns a team's members ordered by user, or every member
// ordered by team id then user when teamID is "".
func (e *Engine) ListMembers(ctx context.Context, teamID string) ([]store.Member, error) {
	if err := e.lock(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	var out []store.Member
	for t, ms := range e.members {
		if teamID == "" || t == teamID {
			for _, m := range ms {
				m.Team = e.teamName(t)
				out = append(out, m)
			}
		}
	}
	fsm.SortMembers(out)
	return out, nil
}

// MemberRoles returns team id -> role for each team user belongs to.
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

// MoveMachine assigns the live machine id to the live team teamID.
// ErrNotFound; ErrMachineHasTasks; ErrInvalidArgument.
func (e *Engine) MoveMachine(ctx context.Context, id, teamID string) error {
	if err := fsm.CheckMove(id, teamID); err != nil {
		return err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return err
	}
	defer e.mu.Unlock()
	m, ok := e.machines[id]
	if !ok || !m.DeletedAt.IsZero() {
		return fmt.Errorf("%w: machine %s", store.ErrNotFound, id)
	}
	if !e.liveTeam(teamID) {
		return fmt.Errorf("%w: team %s", store.ErrNotFound, teamID)
	}
	if m.TeamID != teamID {
		if t := e.unfinished(id); t != nil {
			return fsm.MachineHasTasks(m.Name, t.ID, t.Status)
		}
		m.TeamID, m.UpdatedAt = teamID, fsm.Time(time.Now())
		e.machines[id] = m
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
	if _, err := e.lockAudit(ctx); err != nil {
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
