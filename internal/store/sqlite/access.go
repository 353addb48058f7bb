package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

// ---- teams

const teamCols = `id, name, description, created_at, deleted_at`

// CreateTeam inserts t. ErrExists; ErrInvalidArgument.
func (e *Engine) CreateTeam(ctx context.Context, t store.Team) (store.Team, error) {
	t, err := fsm.NewTeam(t, time.Now())
	if err != nil {
		return store.Team{}, err
	}
	err = e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var byID, byName int
		if err := tx.QueryRowContext(ctx, `SELECT
			(SELECT count(*) FROM teams WHERE id = ?1),
			(SELECT count(*) FROM teams WHERE name = ?2 AND deleted_at IS NULL)`, t.ID, t.Name).Scan(&byID, &byName); err != nil {
			return err
		}
		switch {
		case byID > 0:
			return fmt.Errorf("%w: team id %s", store.ErrExists, t.ID)
		case byName > 0:
			return fmt.Errorf("%w: team %s", store.ErrExists, t.Name)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO teams (id, name, description, created_at) VALUES (?, ?, ?, ?)`,
			t.ID, t.Name, t.Description, nanos(t.CreatedAt))
		return err
	})
	if err != nil {
		return store.Team{}, err
	}
	return t, nil
}

func scanTeam(s scanner) (store.Team, error) {
	var (
		t                store.Team
		created, deleted sql.NullInt64
	)
	if err := s.Scan(&t.ID, &t.Name, &t.Description, &created, &deleted); err != nil {
		return store.Team{}, err
	}
	t.CreatedAt, t.DeletedAt = fromNanos(created), fromNanos(deleted)
	return t, nil
}

// GetTeam returns one team by id, live or deleted. ErrNotFound.
func (e *Engine) GetTeam(ctx context.Context, id string) (store.Team, error) {
	if err := e.check(ctx); err != nil {
		return store.Team{}, err
	}
	t, err := scanTeam(e.r.QueryRowContext(ctx, `SELECT `+teamCols+` FROM teams WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Team{}, fmt.Errorf("%w: team id %s", store.ErrNotFound, id)
	}
	return t, e.classify(err)
}

// TeamByName returns the live team named name. ErrNotFound.
func (e *Engine) TeamByName(ctx context.Context, name string) (store.Team, error) {
	if err := e.check(ctx); err != nil {
		return store.Team{}, err
	}
	t, err := scanTeam(e.r.QueryRowContext(ctx, `SELECT `+teamCols+` FROM teams WHERE name = ? AND deleted_at IS NULL`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Team{}, fmt.Errorf("%w: team %s", store.ErrNotFound, name)
	}
	return t, e.classify(err)
}

// ListTeams returns the live teams (and the deleted ones with
// f.IncludeDeleted) ordered by name, then id.
func (e *Engine) ListTeams(ctx context.Context, f store.TeamFilter) ([]store.Team, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	rows, err := e.r.QueryContext(ctx, `SELECT `+teamCols+` FROM teams WHERE ? OR deleted_at IS NULL ORDER BY name, id`, f.IncludeDeleted)
	if err != nil {
		return nil, e.classify(err)
	}
	defer rows.Close()
	var out []store.Team
	for rows.Next() {
		t, err := scanTeam(rows)
		if err != nil {
			return nil, e.classify(err)
		}
		out = append(out, t)
	}
	return out, e.classify(rows.Err())
}

// RenameTeam renames the live team id: every reference is by id, so this
// changes one row. ErrNotFound; ErrExists; ErrInvalidArgument.
func (e *Engine) RenameTeam(ctx context.Context, id, newName string) error {
	if err := fsm.CheckRename(id, newName); err != nil {
		return err
	}
	return e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if ok, err := teamLive(ctx, tx, id); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("%w: team %s", store.ErrNotFound, id)
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM teams WHERE name = ? AND deleted_at IS NULL`, newName).Scan(&n); err != nil {
			return err
		} else if n > 0 {
			return fmt.Errorf("%w: team %s", store.ErrExists, newName)
		}
		_, err := tx.ExecContext(ctx, `UPDATE teams SET name = ? WHERE id = ?`, newName, id)
		return err
	})
}

// DeleteTeam deletes the live team id and its members, keeping its row.
// ErrNotFound; ErrTeamNotEmpty; ErrInvalidArgument.
func (e *Engine) DeleteTeam(ctx context.Context, id string, at time.Time) error {
	at, err := fsm.DeleteTime("team", id, at, time.Now())
	if err != nil {
		return err
	}
	return e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var name string
		err := tx.QueryRowContext(ctx, `SELECT name FROM teams WHERE id = ? AND deleted_at IS NULL`, id).Scan(&name)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: team %s", store.ErrNotFound, id)
		} else if err != nil {
			return err
		}
		var machines, tasks int
		if err := tx.QueryRowContext(ctx, `SELECT
			(SELECT count(*) FROM machines WHERE team_id = ?1 AND deleted_at IS NULL),
			(SELECT count(*) FROM tasks WHERE team_id = ?1 AND status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED'))`,
			id).Scan(&machines, &tasks); err != nil {
			return err
		}
		if err := fsm.TeamNotEmpty(name, machines, tasks); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM members WHERE team_id = ?`, id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE teams SET deleted_at = ? WHERE id = ?`, nanos(at), id)
		return err
	})
}

// ---- members

// PutMember adds a member or changes its role. ErrNotFound;
// ErrInvalidArgument.
func (e *Engine) PutMember(ctx context.Context, m store.Member) (bool, error) {
	m, err := fsm.NewMember(m, time.Now())
	if err != nil {
		return false, err
	}
	var created bool
	err = e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if ok, err := teamLive(ctx, tx, m.TeamID); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("%w: team %s", store.ErrNotFound, m.TeamID)
		}
		res, err := tx.ExecContext(ctx, `UPDATE members SET role = ? WHERE team_id = ? AND user_name = ?`, m.Role, m.TeamID, m.User)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n > 0 {
			created = false
			return err
		}
		created = true
		_, err = tx.ExecContext(ctx, `INSERT INTO members (team_id, user_name, role, added_at) VALUES (?, ?, ?, ?)`,
			m.TeamID, m.User, m.Role, nanos(m.AddedAt))
		return err
	})
	if err != nil {
		return false, err
	}
	return created, nil
}

// DeleteMember removes a user from a team. ErrNotFound.
func (e *Engine) DeleteMember(ctx context.Context, teamID, user string) error {
	return e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM members WHERE team_id = ? AND user_name = ?`, teamID, user)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("%w: member %s of team %s", store.ErrNotFound, user, teamID)
		}
		return nil
	})
}

// ListMembers returns a team's members ordered by user, or every member
// ordered by team id then user when teamID is "".
func (e *Engine) ListMembers(ctx context.Context, teamID string) ([]store.Member, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	rows, err := e.r.QueryContext(ctx, `SELECT team_id, COALESCE((SELECT name FROM teams WHERE teams.id = members.team_id), team_id),
		user_name, role, added_at FROM members WHERE ?1 = '' OR team_id = ?1 ORDER BY team_id, user_name`, teamID)
	if err != nil {
		return nil, e.classify(err)
	}
	defer rows.Close()
	var out []store.Member
	for rows.Next() {
		var (
			m     store.Member
			added sql.NullInt64
		)
		if err := rows.Scan(&m.TeamID, &m.Team, &m.User, &m.Role, &added); err != nil {
			return nil, e.classify(err)
		}
		m.AddedAt = fromNanos(added)
		out = append(out, m)
	}
	return out, e.classify(rows.Err())
}

// MemberRoles returns team id -> role for each team user belongs to.
func (e *Engine) MemberRoles(ctx context.Context, user string) (map[string]string, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	rows, err := e.r.QueryContext(ctx, `SELECT team_id, role FROM members WHERE user_name = ?`, user)
	if err != nil {
		return nil, e.classify(err)
	}
	defer rows.Close()
	out := make(map[string]string)
	for rows.Next() {
		var team, role string
		if err := rows.Scan(&team, &role); err != nil {
			return nil, e.classify(err)
		}
		out[team] = role
	}
	return out, e.classify(rows.Err())
}

// ---- store-wide roles

// PutStoreRole grants a store-wide role (idempotent). ErrInvalidArgument.
func (e *Engine) PutStoreRole(ctx context.Context, r store.StoreRole) error {
	r, err := fsm.NewStoreRole(r, time.Now())
	if err != nil {
		return err
	}
	return e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO store_roles (user_name, role, added_at) VALUES (?, ?, ?)
			ON CONFLICT (user_name, role) DO NOTHING`, r.User, r.Role, nanos(r.AddedAt))
		return err
	})
}

// DeleteStoreRole revokes a store-wide role. ErrNotFound; ErrLastOwner.
func (e *Engine) DeleteStoreRole(ctx context.Context, user, role string) error {
	return e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var owners, has int
		if err := tx.QueryRowContext(ctx, `SELECT
			(SELECT count(*) FROM store_roles WHERE role = ?3),
			(SELECT count(*) FROM store_roles WHERE user_name = ?1 AND role = ?2)`,
			user, role, string(authz.Owner)).Scan(&owners, &has); err != nil {
			return err
		}
		if has == 0 {
			return fmt.Errorf("%w: user %s has no store role %s", store.ErrNotFound, user, role)
		}
		if role == string(authz.Owner) && owners == 1 {
			return fmt.Errorf("%w: %s is the last owner; make another user owner first", store.ErrLastOwner, user)
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM store_roles WHERE user_name = ? AND role = ?`, user, role)
		return err
	})
}

// StoreRoles returns every store-wide role (user "") or one user's, ordered
// by user then role.
func (e *Engine) StoreRoles(ctx context.Context, user string) ([]store.StoreRole, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	rows, err := e.r.QueryContext(ctx, `SELECT user_name, role, added_at FROM store_roles
		WHERE ?1 = '' OR user_name = ?1 ORDER BY user_name, role`, user)
	if err != nil {
		return nil, e.classify(err)
	}
	defer rows.Close()
	var out []store.StoreRole
	for rows.Next() {
		var (
			r     store.StoreRole
			added sql.NullInt64
		)
		if err := rows.Scan(&r.User, &r.Role, &added); err != nil {
			return nil, e.classify(err)
		}
		r.AddedAt = fromNanos(added)
		out = append(out, r)
	}
	return out, e.classify(rows.Err())
}

// InitOwner makes user the owner if the store has none, checked and written
// in one write transaction (so one of several racing processes wins); it
// reports whether it did. The context's audit records are appended only then.
func (e *Engine) InitOwner(ctx context.Context, user string, at time.Time) (bool, error) {
	r, err := fsm.NewStoreRole(store.StoreRole{User: user, Role: string(authz.Owner), AddedAt: at}, time.Now())
	if err != nil {
		return false, err
	}
	var made bool
	err = e.writeIf(ctx, func(ctx context.Context, tx *sql.Tx) (bool, error) {
		made = false
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM store_roles WHERE role = ?`, r.Role).Scan(&n); err != nil {
			return false, err
		}
		if n > 0 {
			return false, nil
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO store_roles (user_name, role, added_at) VALUES (?, ?, ?)`,
			r.User, r.Role, nanos(r.AddedAt)); err != nil {
			return false, err
		}
		made = true
		return true, nil
	})
	if err != nil {
		return false, err
	}
	return made, nil
}

// MoveMachine assigns the live machine id to the live team teamID.
// ErrNotFound; ErrMachineHasTasks; ErrInvalidArgument.
func (e *Engine) MoveMachine(ctx context.Context, id, teamID string) error {
	if err := fsm.CheckMove(id, teamID); err != nil {
		return err
	}
	return e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		m, err := liveMachine(ctx, tx, id)
		if err != nil {
			return err
		}
		if ok, err := teamLive(ctx, tx, teamID); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("%w: team %s", store.ErrNotFound, teamID)
		}
		if m.TeamID == teamID {
			return nil
		}
		if err := noUnfinished(ctx, tx, id, m.Name); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE machines SET team_id = ?, updated_at = ? WHERE id = ?`,
			teamID, nanos(fsm.Time(time.Now())), id)
		return err
	})
}

// ---- audit trail

const auditCols = `seq, time, actor, action, entity_type, entity_id, team, result, details, prev_hash, hash`

// auditRowCols are the audit table's columns read and written: auditCols
// and key_id (migration 4).
const auditRowCols = auditCols + `, key_id`

// appendAudit chains recs after the head kept in audit_head, inserts them
// and moves the head, inside the caller's write transaction (so writers in
// every process extend one linear chain). The head row itself is written
// once per transaction, before its COMMIT (audithead.go).
func (e *Engine) appendAudit(ctx context.Context, tx *sql.Tx, recs []audit.Record) ([]audit.Record, error) {
	h, err := e.headTx(ctx, tx) // audithead.go: read once per transaction
	if err != nil {
		return nil, err
	}
	out := make([]audit.Record, len(recs))
	insert := stmt(ctx, tx, e.st.auditInsert)
	for i, r := range recs {
		r = fsm.CloneRecord(e.ChainAudit(h, r))
		var details any
		if len(r.Details) > 0 {
			b, err := json.Marshal(r.Details)
			if err != nil {
				return nil, err
			}
			details = string(b)
		}
		if _, err := insert.ExecContext(ctx,
			r.Seq, r.Time.UnixMilli(), r.Actor, r.Action, r.EntityType, r.EntityID, r.Team, r.Result, details,
			r.PrevHash, r.Hash, r.KeyID); err != nil {
			return nil, fmt.Errorf("appending audit record %d: %w", r.Seq, err)
		}
		h = audit.HeadOf(r)
		out[i] = r
	}
	e.moveHead(tx, h) // written to audit_head before COMMIT
	return out, nil
}

// AppendAudit appends recs to the trail in one transaction and returns them
// as stored. ErrInvalidArgument.
func (e *Engine) AppendAudit(ctx context.Context, recs ...audit.Record) ([]audit.Record, error) {
	if err := fsm.CheckAudit(recs); err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, e.check(ctx)
	}
	var out []audit.Record
	err := e.tx(ctx, nil, func(ctx context.Context, tx *sql.Tx) (bool, error) {
		var err error
		out, err = e.appendAudit(ctx, tx, recs)
		return false, err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ceilMilli is the first whole millisecond at or after t: a record's time
// (whole milliseconds) r is >= t exactly when r >= ceilMilli(t).
func ceilMilli(t time.Time) int64 {
	ms := t.UnixMilli() // floor: t.Nanosecond() is never negative
	if t.Nanosecond()%int(time.Millisecond) != 0 {
		ms++
	}
	return ms
}

// auditQuery translates f (normalized) into a WHERE clause and its
// arguments.
func auditQuery(f audit.Filter) (string, []any) {
	var (
		where []string
		args  []any
	)
	add := func(cond string, arg any) {
		where, args = append(where, cond), append(args, arg)
	}
	if f.AfterSeq > 0 {
		add(`seq > ?`, f.AfterSeq)
	}
	if !f.Start.IsZero() {
		add(`time >= ?`, ceilMilli(f.Start))
	}
	if !f.End.IsZero() {
		add(`time < ?`, ceilMilli(f.End))
	}
	if a, prefix := f.ActionPrefix(); a != "" {
		if prefix {
			// a ends in "."; the strings starting with it are exactly those
			// in [a, a with its "." replaced by "/") in byte order (BINARY
			// collation), which an index can serve, unlike LIKE (which is
			// case-insensitive and needs escaping).
			add(`action >= ?`, a)
			add(`action < ?`, a[:len(a)-1]+"/")
		} else {
			add(`action = ?`, a)
		}
	}
	for _, c := range []struct{ col, v string }{
		{"actor", f.Actor}, {"entity_type", f.EntityType}, {"entity_id", f.EntityID},
		{"team", f.Team}, {"team", f.TeamID}, {"result", f.Result},
	} {
		if c.v != "" {
			add(c.col+` = ?`, c.v)
		}
	}
	q := ""
	if len(where) > 0 {
		q = ` WHERE ` + strings.Join(where, ` AND `)
	}
	return q + ` ORDER BY seq LIMIT ?`, append(args, f.Limit)
}

// ListAudit returns the records matching f in Seq order, at most f.Limit.
func (e *Engine) ListAudit(ctx context.Context, f audit.Filter) ([]audit.Record, error) {
	f, err := fsm.CheckAuditFilter(f)
	if err != nil {
		return nil, err
	}
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	where, args := auditQuery(f)
	rows, err := e.r.QueryContext(ctx, `SELECT `+auditRowCols+` FROM audit`+where, args...)
	if err != nil {
		return nil, e.classify(err)
	}
	defer rows.Close()
	var out []audit.Record
	for rows.Next() {
		var (
			r       audit.Record
			ms      int64
			details sql.NullString
		)
		if err := rows.Scan(&r.Seq, &ms, &r.Actor, &r.Action, &r.EntityType, &r.EntityID, &r.Team, &r.Result,
			&details, &r.PrevHash, &r.Hash, &r.KeyID); err != nil {
			return nil, e.classify(err)
		}
		r.Time = time.UnixMilli(ms).UTC()
		if details.Valid && details.String != "" {
			if err := json.Unmarshal([]byte(details.String), &r.Details); err != nil {
				// Keep the record: verification reports it as modified.
				r.Details = map[string]string{"!details": details.String}
			}
		}
		out = append(out, fsm.CloneRecord(r))
	}
	return out, e.classify(rows.Err())
}

// AuditHead returns the head kept beside the trail (zero when empty).
func (e *Engine) AuditHead(ctx context.Context) (audit.Head, error) {
	if err := e.check(ctx); err != nil {
		return audit.Head{}, err
	}
	var h audit.Head
	err := e.r.QueryRowContext(ctx, sqlAuditHead).Scan(&h.Seq, &h.Hash)
	if errors.Is(err, sql.ErrNoRows) {
		return audit.Head{}, fmt.Errorf("%w: the audit trail's head (table audit_head) is missing", store.ErrCorrupt)
	}
	return h, e.classify(err)
}
