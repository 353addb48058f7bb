package sqlite

import (
	"context"
	"database/sql"
	"errors"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

// The guard conditions' queries (run prepared: cachedQueries).
const (
	sqlGuardStoreRoles = `SELECT role FROM store_roles WHERE user_name = ?`
	sqlGuardMember     = `SELECT m.role FROM members m JOIN teams t ON t.id = m.team_id
		WHERE m.team_id = ? AND m.user_name = ? AND t.deleted_at IS NULL`
	sqlGuardMachine = `SELECT team_id, deleted_at FROM machines WHERE id = ?`
	sqlGuardTeam    = `SELECT deleted_at FROM teams WHERE id = ?`
	// sqlGuardMachineRecord reads what store.SameMachine compares.
	sqlGuardMachineRecord = `SELECT id, name, team_id, host, port, user_name, config, deleted_at FROM machines WHERE id = ?`
)

// guard evaluates the conditions of store.WithGuard inside the write
// transaction tx, before the change: BEGIN IMMEDIATE holds the write lock,
// so what it reads cannot change before the commit.
func guard(ctx context.Context, tx querier, conds []store.Condition) error {
	for _, c := range conds {
		if err := guardOne(ctx, tx, c); err != nil {
			return err
		}
	}
	return nil
}

func guardOne(ctx context.Context, tx querier, c store.Condition) error {
	switch c.Kind {
	case store.CondRole:
		var held []string
		rows, err := tx.QueryContext(ctx, sqlGuardStoreRoles, c.User)
		if err != nil {
			return err
		}
		for rows.Next() {
			var r string
			if err := rows.Scan(&r); err != nil {
				rows.Close()
				return err
			}
			held = append(held, r)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		role := ""
		if c.TeamID != "" {
			err := tx.QueryRowContext(ctx, sqlGuardMember, c.TeamID, c.User).Scan(&role)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		if !fsm.Granted(c, held, role) {
			return fsm.GuardFailed(c, "%s", fsm.DescribeRoles(c.User, held, role, c.TeamID))
		}
	case store.CondMachineInTeam:
		var (
			team    string
			deleted sql.NullInt64
		)
		err := tx.QueryRowContext(ctx, sqlGuardMachine, c.MachineID).Scan(&team, &deleted)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return fsm.GuardFailed(c, "no such machine")
		case err != nil:
			return err
		case deleted.Valid:
			return fsm.GuardFailed(c, "the machine was removed")
		case team != c.TeamID:
			return fsm.GuardFailed(c, "the machine is in team %q", team)
		}
	case store.CondMachineUnchanged:
		var (
			m       store.Machine
			deleted sql.NullInt64
		)
		err := tx.QueryRowContext(ctx, sqlGuardMachineRecord, c.MachineID).Scan(&m.ID, &m.Name, &m.TeamID, &m.Host, &m.Port, &m.User, &m.Config, &deleted)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		m.DeletedAt = fromNanos(deleted)
		return fsm.MachineUnchanged(c, m, err == nil)
	case store.CondTeamLive:
		var deleted sql.NullInt64
		err := tx.QueryRowContext(ctx, sqlGuardTeam, c.TeamID).Scan(&deleted)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return fsm.GuardFailed(c, "no such team")
		case err != nil:
			return err
		case deleted.Valid:
			return fsm.GuardFailed(c, "the team was deleted")
		}
	}
	return nil
}
