package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

// Gates and maintenance windows (the schema migration that adds them).
// Claims read them in their transaction under the claim lock (claim.go);
// every write here takes the claim lock too, so a drain, pause or window
// that committed is seen by every claim that starts afterwards, and no
// claim running while it commits outlives it unseen.

var _ store.Gates = (*Engine)(nil)

// claimLock takes the store's claim lock for the rest of tx.
func (e *Engine) claimLock(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, e.lockKey("claim", ""))
	return err
}

// PutGate sets a gate (see store.Gates).
func (e *Engine) PutGate(ctx context.Context, g store.Gate) (bool, error) {
	g, err := fsm.NewGate(g, time.Now())
	if err != nil {
		return false, err
	}
	var created bool
	err = e.write(ctx, func(tx pgx.Tx) error {
		if err := e.claimLock(ctx, tx); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO gates (kind, target, since, actor, reason) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
			string(g.Kind), g.Target, nanos(g.Since), g.Actor, g.Reason)
		created = err == nil && tag.RowsAffected() == 1
		return err
	})
	return created, err
}

// DeleteGate lifts a gate. ErrNotFound.
func (e *Engine) DeleteGate(ctx context.Context, kind store.GateKind, target string) error {
	return e.write(ctx, func(tx pgx.Tx) error {
		if err := e.claimLock(ctx, tx); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM gates WHERE kind = $1 AND target = $2`, string(kind), target)
		if err == nil && tag.RowsAffected() == 0 {
			return fsm.GateNotFound(kind, target)
		}
		if err == nil {
			err = e.notify(ctx, tx) // held tasks may be claimed now
		}
		return err
	})
}

// ListGates returns the gates in force.
func (e *Engine) ListGates(ctx context.Context) ([]store.Gate, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	gs, err := listGates(ctx, e.pool)
	return gs, e.classify(err)
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func listGates(ctx context.Context, q querier) ([]store.Gate, error) {
	rows, err := q.Query(ctx, `SELECT kind, target, since, actor, reason FROM gates ORDER BY kind, target`)
	if err != nil {
		return nil, err
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Gate, error) {
		var (
			g     store.Gate
			kind  string
			since int64
		)
		err := row.Scan(&kind, &g.Target, &since, &g.Actor, &g.Reason)
		g.Kind, g.Since = store.GateKind(kind), fromNanos(&since)
		return g, err
	})
	if len(out) == 0 {
		out = nil
	}
	return out, err
}

const windowCols = `id, team, machine, cron, time_zone, duration, hold_from, created_at, actor`

func scanWindow(row pgx.Row) (store.Window, error) {
	var (
		w        store.Window
		d        int64
		holdFrom int16
		created  int64
	)
	if err := row.Scan(&w.ID, &w.TeamID, &w.MachineID, &w.Cron, &w.TimeZone, &d, &holdFrom, &created, &w.Actor); err != nil {
		return store.Window{}, err
	}
	w.Duration, w.HoldFrom, w.CreatedAt = time.Duration(d), int(holdFrom), fromNanos(&created)
	return w, nil
}

// CreateWindow inserts a window. ErrExists; ErrInvalidArgument.
func (e *Engine) CreateWindow(ctx context.Context, w store.Window) (store.Window, error) {
	w, err := fsm.NewWindow(w, time.Now())
	if err != nil {
		return store.Window{}, err
	}
	err = e.write(ctx, func(tx pgx.Tx) error {
		if err := e.claimLock(ctx, tx); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO windows (`+windowCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING`,
			w.ID, w.TeamID, w.MachineID, w.Cron, w.TimeZone, int64(w.Duration), w.HoldFrom, nanos(w.CreatedAt), w.Actor)
		if err == nil && tag.RowsAffected() == 0 {
			err = fmt.Errorf("%w: window %s", store.ErrExists, w.ID)
		}
		return err
	})
	if err != nil {
		return store.Window{}, err
	}
	return w, nil
}

// DeleteWindow deletes a window. ErrNotFound.
func (e *Engine) DeleteWindow(ctx context.Context, id string) error {
	return e.write(ctx, func(tx pgx.Tx) error {
		if err := e.claimLock(ctx, tx); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM windows WHERE id = $1`, id)
		if err == nil && tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: window %s", store.ErrNotFound, id)
		}
		if err == nil {
			err = e.notify(ctx, tx)
		}
		return err
	})
}

// GetWindow returns one window. ErrNotFound.
func (e *Engine) GetWindow(ctx context.Context, id string) (store.Window, error) {
	if err := e.check(ctx); err != nil {
		return store.Window{}, err
	}
	w, err := scanWindow(e.pool.QueryRow(ctx, `SELECT `+windowCols+` FROM windows WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Window{}, fmt.Errorf("%w: window %s", store.ErrNotFound, id)
	}
	return w, e.classify(err)
}

// ListWindows returns the windows matching f.
func (e *Engine) ListWindows(ctx context.Context, f store.WindowFilter) ([]store.Window, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	ws, err := listWindows(ctx, e.pool, f)
	return ws, e.classify(err)
}

func listWindows(ctx context.Context, q querier, f store.WindowFilter) ([]store.Window, error) {
	query, args := `SELECT `+windowCols+` FROM windows`, []any(nil)
	if f.TeamIDs != nil {
		query, args = query+` WHERE team = ANY($1)`, append(args, f.TeamIDs)
	}
	rows, err := q.Query(ctx, query+` ORDER BY team, machine, id`, args...)
	if err != nil {
		return nil, err
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Window, error) { return scanWindow(row) })
	if len(out) == 0 {
		out = nil
	}
	return out, err
}

// gatesTx reads the gates and windows in force within a claim's
// transaction.
func gatesTx(ctx context.Context, tx pgx.Tx) ([]store.Gate, []store.Window, error) {
	gates, err := listGates(ctx, tx)
	if err != nil {
		return nil, nil, err
	}
	windows, err := listWindows(ctx, tx, store.WindowFilter{})
	return gates, windows, err
}
