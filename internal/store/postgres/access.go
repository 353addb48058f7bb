package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

// ---- teams

const teamCols = `id, name, description, created_at, deleted_at`

// CreateTeam inserts t. ErrExists (a live team has the name, or the id is
// taken); ErrInvalidArgument.
func (e *Engine) CreateTeam(ctx context.Context, t store.Team) (store.Team, error) {
	t, err := fsm.NewTeam(t, time.Now())
	if err != nil {
		return store.Team{}, err
	}
	err = e.write(ctx, func(tx pgx.Tx) error {
		// Both unique indexes (the id, the live name) reject a duplicate.
		tag, err := tx.Exec(ctx, `INSERT INTO teams (id, name, description, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
			t.ID, t.Name, t.Description, nanos(t.CreatedAt))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			if taken, err := exists(ctx, tx, `SELECT 1 FROM teams WHERE id = $1`, t.ID); err != nil {
				return err
			} else if taken {
				return fmt.Errorf("%w: team id %s", store.ErrExists, t.ID)
			}
			return fmt.Errorf("%w: team %s", store.ErrExists, t.Name)
		}
		return nil
	})
	if err != nil {
		return store.Team{}, err
	}
	return t, nil
}

func scanTeam(row pgx.Row) (store.Team, error) {
	var (
		t                store.Team
		created, deleted *int64
	)
	if err := row.Scan(&t.ID, &t.Name, &t.Description, &created, &deleted); err != nil {
		return store.Team{}, err
	}
	t.CreatedAt, t.DeletedAt = fromNanos(created), fromNanos(deleted)
	return t, nil
}

// GetTeam returns one team by id, live or deleted. ErrNotFound.
func (e *Engine) GetTeam(ctx context.Context, id string) (store.Team, error) {
	return e.oneTeam(ctx, `id = $1`, id)
}

// TeamByName returns the live team named name. ErrNotFound.
func (e *Engine) TeamByName(ctx context.Context, name string) (store.Team, error) {
	return e.oneTeam(ctx, `name = $1 AND deleted_at IS NULL`, name)
}

func (e *Engine) oneTeam(ctx context.Context, where, arg string) (store.Team, error) {
	if err := e.check(ctx); err != nil {
		return store.Team{}, err
	}
	t, err := scanTeam(e.pool.QueryRow(ctx, `SELECT `+teamCols+` FROM teams WHERE `+where, arg))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Team{}, fmt.Errorf("%w: team %s", store.ErrNotFound, arg)
	}
	return t, e.classify(err)
}

// ListTeams returns the live teams (and the deleted ones with
// f.IncludeDeleted) ordered by name, then id.
func (e *Engine) ListTeams(ctx context.Context, f store.TeamFilter) ([]store.Team, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	rows, err := e.pool.Query(ctx, `SELECT `+teamCols+` FROM teams WHERE $1 OR deleted_at IS NULL ORDER BY name, id`, f.IncludeDeleted)
	if err != nil {
		return nil, e.classify(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Team, error) { return scanTeam(row) })
	return out, e.classify(err)
}

// lockTeamRow locks the live team id FOR UPDATE and returns its name;
// ErrNotFound when there is no such live team.
func lockTeamRow(ctx context.Context, tx pgx.Tx, id string) (string, error) {
	var name string
	err := tx.QueryRow(ctx, `SELECT name FROM teams WHERE id = $1 AND deleted_at IS NULL FOR UPDATE`, id).Scan(&name)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("%w: team %s", store.ErrNotFound, id)
	}
	return name, err
}

// RenameTeam renames the live team id: every reference is by id, so this
// changes one row. ErrNotFound; ErrExists; ErrInvalidArgument.
func (e *Engine) RenameTeam(ctx context.Context, id, newName string) error {
	if err := fsm.CheckRename(id, newName); err != nil {
		return err
	}
	return e.write(ctx, func(tx pgx.Tx) error {
		if _, err := lockTeamRow(ctx, tx, id); err != nil {
			return err
		}
		if taken, err := exists(ctx, tx, `SELECT 1 FROM teams WHERE name = $1 AND deleted_at IS NULL`, newName); err != nil {
			return err
		} else if taken { // the team itself included
			return fmt.Errorf("%w: team %s", store.ErrExists, newName)
		}
		// The unique index on live names refuses a taken name, also one
		// taken by a concurrent transaction (this one then waits for it).
		var pe *pgconn.PgError
		if _, err := tx.Exec(ctx, `UPDATE teams SET name = $2 WHERE id = $1`, id, newName); errors.As(err, &pe) && pe.Code == "23505" {
			return fmt.Errorf("%w: team %s", store.ErrExists, newName)
		} else if err != nil {
			return err
		}
		return nil
	})
}

// DeleteTeam deletes the live team id and its members, keeping its row.
// ErrNotFound; ErrTeamNotEmpty; ErrInvalidArgument.
func (e *Engine) DeleteTeam(ctx context.Context, id string, at time.Time) error {
	at, err := fsm.DeleteTime("team", id, at, time.Now())
	if err != nil {
		return err
	}
	return e.write(ctx, func(tx pgx.Tx) error {
		// The row lock waits for machines being added to the team (they
		// hold it FOR SHARE), so the counts below see them.
		name, err := lockTeamRow(ctx, tx, id)
		if err != nil {
			return err
		}
		var machines, tasks int64
		if err := tx.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM machines WHERE team_id = $1 AND deleted_at IS NULL),
			(SELECT count(*) FROM tasks WHERE team_id = $1 AND status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED'))`,
			id).Scan(&machines, &tasks); err != nil {
			return err
		}
		if err := fsm.TeamNotEmpty(name, int(machines), int(tasks)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM members WHERE team_id = $1`, id); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE teams SET deleted_at = $2 WHERE id = $1`, id, nanos(at))
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
	err = e.write(ctx, func(tx pgx.Tx) error {
		if ok, err := lockTeam(ctx, tx, m.TeamID); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("%w: team %s", store.ErrNotFound, m.TeamID)
		}
		// xmax = 0 tells an inserted row from an updated one.
		return tx.QueryRow(ctx, `INSERT INTO members (team_id, user_name, role, added_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (team_id, user_name) DO UPDATE SET role = EXCLUDED.role
			RETURNING (xmax = 0)`, m.TeamID, m.User, m.Role, nanos(m.AddedAt)).Scan(&created)
	})
	if err != nil {
		return false, err
	}
	return created, nil
}

// DeleteMember removes a user from a team (id). ErrNotFound.
func (e *Engine) DeleteMember(ctx context.Context, teamID, user string) error {
	return e.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM members WHERE team_id = $1 AND user_name = $2`, teamID, user)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
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
	rows, err := e.pool.Query(ctx, `SELECT team_id, COALESCE((SELECT name FROM teams WHERE teams.id = members.team_id), team_id),
		user_name, role, added_at FROM members WHERE $1 = '' OR team_id = $1 ORDER BY team_id, user_name`, teamID)
	if err != nil {
		return nil, e.classify(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Member, error) {
		var (
			m     store.Member
			added *int64
		)
		err := row.Scan(&m.TeamID, &m.Team, &m.User, &m.Role, &added)
		m.AddedAt = fromNanos(added)
		return m, err
	})
	return out, e.classify(err)
}

// MemberRoles returns team id -> role for each team user belongs to.
func (e *Engine) MemberRoles(ctx context.Context, user string) (map[string]string, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	rows, err := e.pool.Query(ctx, `SELECT team_id, role FROM members WHERE user_name = $1`, user)
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

// lockRoles serializes the transactions that change store-wide roles, so
// that "the store keeps an owner" checks see each other's changes.
func (e *Engine) lockRoles(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, e.lockKey("store_roles", ""))
	return err
}

// PutStoreRole grants a store-wide role (idempotent). ErrInvalidArgument.
func (e *Engine) PutStoreRole(ctx context.Context, r store.StoreRole) error {
	r, err := fsm.NewStoreRole(r, time.Now())
	if err != nil {
		return err
	}
	return e.write(ctx, func(tx pgx.Tx) error {
		if err := e.lockRoles(ctx, tx); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO store_roles (user_name, role, added_at) VALUES ($1, $2, $3)
			ON CONFLICT (user_name, role) DO NOTHING`, r.User, r.Role, nanos(r.AddedAt))
		return err
	})
}

// DeleteStoreRole revokes a store-wide role. ErrNotFound; ErrLastOwner.
func (e *Engine) DeleteStoreRole(ctx context.Context, user, role string) error {
	return e.write(ctx, func(tx pgx.Tx) error {
		if err := e.lockRoles(ctx, tx); err != nil {
			return err
		}
		var owners, has int64
		if err := tx.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM store_roles WHERE role = $3),
			(SELECT count(*) FROM store_roles WHERE user_name = $1 AND role = $2)`,
			user, role, string(authz.Owner)).Scan(&owners, &has); err != nil {
			return err
		}
		if has == 0 {
			return fmt.Errorf("%w: user %s has no store role %s", store.ErrNotFound, user, role)
		}
		if role == string(authz.Owner) && owners == 1 {
			return fmt.Errorf("%w: %s is the last owner; make another user owner first", store.ErrLastOwner, user)
		}
		_, err := tx.Exec(ctx, `DELETE FROM store_roles WHERE user_name = $1 AND role = $2`, user, role)
		return err
	})
}

// StoreRoles returns every store-wide role (user "") or one user's, ordered
// by user then role.
func (e *Engine) StoreRoles(ctx context.Context, user string) ([]store.StoreRole, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	rows, err := e.pool.Query(ctx, `SELECT user_name, role, added_at FROM store_roles
		WHERE $1 = '' OR user_name = $1 ORDER BY user_name, role`, user)
	if err != nil {
		return nil, e.classify(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.StoreRole, error) {
		var (
			r     store.StoreRole
			added *int64
		)
		err := row.Scan(&r.User, &r.Role, &added)
		r.AddedAt = fromNanos(added)
		return r, err
	})
	return out, e.classify(err)
}

// InitOwner makes user the owner if the store has none, under the roles
// lock (so one of several racing processes wins); it reports whether it
// did. The context's audit records are appended only then.
func (e *Engine) InitOwner(ctx context.Context, user string, at time.Time) (bool, error) {
	r, err := fsm.NewStoreRole(store.StoreRole{User: user, Role: string(authz.Owner), AddedAt: at}, time.Now())
	if err != nil {
		return false, err
	}
	var made bool
	err = e.writeIf(ctx, func(tx pgx.Tx) (bool, error) {
		made = false
		if err := e.lockRoles(ctx, tx); err != nil {
			return false, err
		}
		if ok, err := exists(ctx, tx, `SELECT 1 FROM store_roles WHERE role = $1`, r.Role); err != nil || ok {
			return false, err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO store_roles (user_name, role, added_at) VALUES ($1, $2, $3)`,
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
	return e.write(ctx, func(tx pgx.Tx) error {
		m, err := lockMachine(ctx, tx, id)
		if err != nil {
			return err
		}
		if ok, err := lockTeam(ctx, tx, teamID); err != nil {
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
		_, err = tx.Exec(ctx, `UPDATE machines SET team_id = $1, updated_at = $2 WHERE id = $3`,
			teamID, nanos(fsm.Time(time.Now())), id)
		return err
	})
}

// ---- audit trail

const auditCols = `seq, time, actor, action, entity_type, entity_id, team, result, details, prev_hash, hash, key_id`

// appendAudit chains recs after the head kept in audit_head, inserts them
// and moves the head, inside the caller's transaction. The head row is
// locked FOR UPDATE: appenders in every process take turns, so the chain
// stays one linear order; callers append last, just before commit, to hold
// the lock briefly.
func (e *Engine) appendAudit(ctx context.Context, tx pgx.Tx, recs []audit.Record) ([]audit.Record, error) {
	var h audit.Head
	err := tx.QueryRow(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE`).Scan(&h.Seq, &h.Hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: the audit trail's head (table audit_head) is missing", store.ErrCorrupt)
	} else if err != nil {
		return nil, err
	}
	out := make([]audit.Record, len(recs))
	for i, r := range recs {
		r = fsm.CloneRecord(e.ChainAudit(h, r))
		h = audit.HeadOf(r)
		out[i] = r
	}
	if err := insertAudit(ctx, tx, out); err != nil {
		return nil, err
	}
	_, err = tx.Exec(ctx, `UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1`, h.Seq, h.Hash)
	return out, err
}

// insertAudit inserts chained and sealed records as they are (the head is
// the caller's to move).
func insertAudit(ctx context.Context, tx pgx.Tx, recs []audit.Record) error {
	n := len(recs)
	if n == 0 {
		return nil
	}
	var (
		seqs, times                                            = make([]int64, n), make([]int64, n)
		actors, actions, etypes, eids, teams, results, details = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]*string, n)
		prevs, hashes, keys                                    = make([]string, n), make([]string, n), make([]string, n)
	)
	for i, r := range recs {
		if len(r.Details) > 0 {
			b, err := json.Marshal(r.Details)
			if err != nil {
				return err
			}
			s := string(b)
			details[i] = &s
		}
		seqs[i], times[i] = r.Seq, r.Time.UnixMilli()
		actors[i], actions[i], etypes[i], eids[i], teams[i], results[i] = r.Actor, r.Action, r.EntityType, r.EntityID, r.Team, r.Result
		prevs[i], hashes[i], keys[i] = r.PrevHash, r.Hash, r.KeyID
	}
	if _, err := tx.Exec(ctx, `INSERT INTO audit (`+auditCols+`)
		SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[])`,
		seqs, times, actors, actions, etypes, eids, teams, results, details, prevs, hashes, keys); err != nil {
		return fmt.Errorf("appending audit records %d..%d: %w", seqs[0], seqs[n-1], err)
	}
	return nil
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
	err := e.tx(ctx, nil, func(tx pgx.Tx) (bool, error) {
		var err error
		out, err = e.appendAudit(ctx, tx, recs)
		return false, err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ceilMilli is the first whole millisecond at or after t.
func ceilMilli(t time.Time) int64 {
	ms := t.UnixMilli()
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
		args = append(args, arg)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.AfterSeq > 0 {
		add(`seq > $%d`, f.AfterSeq)
	}
	if !f.Start.IsZero() {
		add(`time >= $%d`, ceilMilli(f.Start))
	}
	if !f.End.IsZero() {
		add(`time < $%d`, ceilMilli(f.End))
	}
	if a, prefix := f.ActionPrefix(); a != "" {
		if prefix {
			// a ends in "."; with the "C" collation the strings starting
			// with it are those in [a, a with its "." replaced by "/").
			add(`action >= $%d`, a)
			add(`action < $%d`, a[:len(a)-1]+"/")
		} else {
			add(`action = $%d`, a)
		}
	}
	for _, c := range []struct{ col, v string }{
		{"actor", f.Actor}, {"entity_type", f.EntityType}, {"entity_id", f.EntityID},
		{"team", f.Team}, {"result", f.Result},
	} {
		if c.v != "" {
			add(c.col+` = $%d`, c.v)
		}
	}
	q := ""
	if len(where) > 0 {
		q = ` WHERE ` + strings.Join(where, ` AND `)
	}
	args = append(args, f.Limit)
	return q + fmt.Sprintf(` ORDER BY seq LIMIT $%d`, len(args)), args
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
	rows, err := e.pool.Query(ctx, `SELECT `+auditCols+` FROM audit`+where, args...)
	if err != nil {
		return nil, e.classify(err)
	}
	defer rows.Close()
	var out []audit.Record
	for rows.Next() {
		var (
			r       audit.Record
			ms      int64
			details *string
		)
		if err := rows.Scan(&r.Seq, &ms, &r.Actor, &r.Action, &r.EntityType, &r.EntityID, &r.Team, &r.Result,
			&details, &r.PrevHash, &r.Hash, &r.KeyID); err != nil {
			return nil, e.classify(err)
		}
		r.Time = time.UnixMilli(ms).UTC()
		if details != nil && *details != "" {
			if err := json.Unmarshal([]byte(*details), &r.Details); err != nil {
				// Keep the record: verification reports it as modified.
				r.Details = map[string]string{"!details": *details}
			}
		}
		out = append(out, fsm.CloneRecord(r))
	}
	return out, e.classify(rows.Err())
}

// readHead reads the single row of audit_head or audit_base.
func readHead(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, table string) (audit.Head, error) {
	var h audit.Head
	err := q.QueryRow(ctx, `SELECT seq, hash FROM `+table+` WHERE id = 1`).Scan(&h.Seq, &h.Hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return audit.Head{}, fmt.Errorf("%w: the audit trail's %s row is missing", store.ErrCorrupt, table)
	}
	return h, err
}

// AuditHead returns the head kept beside the trail (zero when empty).
func (e *Engine) AuditHead(ctx context.Context) (audit.Head, error) {
	if err := e.check(ctx); err != nil {
		return audit.Head{}, err
	}
	h, err := readHead(ctx, e.pool, "audit_head")
	return h, e.classify(err)
}

// AuditBase returns the last trimmed record's Seq and Hash (zero when
// nothing was trimmed).
func (e *Engine) AuditBase(ctx context.Context) (audit.Head, error) {
	if err := e.check(ctx); err != nil {
		return audit.Head{}, err
	}
	h, err := readHead(ctx, e.pool, "audit_base")
	return h, e.classify(err)
}

// TrimAudit deletes the audit records with Seq <= uptoSeq and moves the
// base, in one transaction, through rediacc_trim_audit (the only DELETE the
// audit table's trigger lets through). ErrInvalidArgument; ErrCorrupt.
func (e *Engine) TrimAudit(ctx context.Context, uptoSeq int64) error {
	return e.write(ctx, func(tx pgx.Tx) error {
		// The head row's lock keeps appenders out while the base moves.
		head, err := readHead(ctx, tx, "audit_head")
		if err != nil {
			return err
		}
		base, err := readHead(ctx, tx, "audit_base")
		if err != nil {
			return err
		}
		trim, err := fsm.CheckTrim(uptoSeq, base, head)
		if err != nil || !trim {
			return err
		}
		var h *string
		if err := tx.QueryRow(ctx, `SELECT rediacc_trim_audit($1)`, uptoSeq).Scan(&h); err != nil {
			return err
		}
		if h == nil {
			return fsm.MissingAudit(uptoSeq, base, head)
		}
		return nil
	})
}
