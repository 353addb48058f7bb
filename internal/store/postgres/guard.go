package postgres

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

// guard evaluates the conditions of store.WithGuard inside the write
// transaction tx, before the change. The rows it reads are locked FOR
// SHARE until the transaction ends, so a concurrent change to them (a
// machine moved or removed, a member's role changed or removed, a team
// deleted, a store role revoked) waits for this write to commit, or this
// guard sees its result when it committed first (READ COMMITTED re-reads
// a row it had to wait for). A role granted meanwhile (a new row) may be
// missed: the guard then fails, which changes nothing.
func guard(ctx context.Context, tx pgx.Tx, conds []store.Condition) error {
	for _, c := range conds {
		if err := guardOne(ctx, tx, c); err != nil {
			return err
		}
	}
	return nil
}

func guardOne(ctx context.Context, tx pgx.Tx, c store.Condition) error {
	switch c.Kind {
	case store.CondRole:
		rows, err := tx.Query(ctx, `SELECT role FROM store_roles WHERE user_name = $1 ORDER BY role FOR SHARE`, c.User)
		held, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		role := ""
		if c.TeamID != "" {
			err := tx.QueryRow(ctx, `SELECT m.role FROM members m JOIN teams t ON t.id = m.team_id
				WHERE m.team_id = $1 AND m.user_name = $2 AND t.deleted_at IS NULL FOR SHARE`, c.TeamID, c.User).Scan(&role)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
		}
		if !fsm.Granted(c, held, role) {
			return fsm.GuardFailed(c, "%s", fsm.DescribeRoles(c.User, held, role, c.TeamID))
		}
	case store.CondMachineInTeam:
		var (
			team    string
			deleted *int64
		)
		err := tx.QueryRow(ctx, `SELECT team_id, deleted_at FROM machines WHERE id = $1 FOR SHARE`, c.MachineID).Scan(&team, &deleted)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return fsm.GuardFailed(c, "no such machine")
		case err != nil:
			return err
		case deleted != nil:
			return fsm.GuardFailed(c, "the machine was removed")
		case team != c.TeamID:
			return fsm.GuardFailed(c, "the machine is in team %q", team)
		}
	case store.CondMachineUnchanged:
		var (
			m       store.Machine
			deleted *int64
		)
		err := tx.QueryRow(ctx, `SELECT id, name, team_id, host, port, user_name, config, deleted_at FROM machines WHERE id = $1 FOR SHARE`,
			c.MachineID).Scan(&m.ID, &m.Name, &m.TeamID, &m.Host, &m.Port, &m.User, &m.Config, &deleted)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		m.DeletedAt = fromNanos(deleted)
		return fsm.MachineUnchanged(c, m, err == nil)
	case store.CondTeamLive:
		var deleted *int64
		err := tx.QueryRow(ctx, `SELECT deleted_at FROM teams WHERE id = $1 FOR SHARE`, c.TeamID).Scan(&deleted)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return fsm.GuardFailed(c, "no such team")
		case err != nil:
			return err
		case deleted != nil:
			return fsm.GuardFailed(c, "the team was deleted")
		}
	}
	return nil
}
