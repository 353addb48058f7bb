package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

// Gates and maintenance windows (the schema migration that adds them).

var _ store.Gates = (*Engine)(nil)

// PutGate sets a gate (see store.Gates).
func (e *Engine) PutGate(ctx context.Context, g store.Gate) (bool, error) {
	g, err := fsm.NewGate(g, time.Now())
	if err != nil {
		return false, err
	}
	var created bool
	err = e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO gates (kind, target, since, actor, reason) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT DO NOTHING`, string(g.Kind), g.Target, nanos(g.Since), g.Actor, g.Reason)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		created = n == 1
		return err
	})
	return created, err
}

// DeleteGate lifts a gate. ErrNotFound.
func (e *Engine) DeleteGate(ctx context.Context, kind store.GateKind, target string) error {
	return e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM gates WHERE kind = ? AND target = ?`, string(kind), target)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fsm.GateNotFound(kind, target)
		}
		return nil
	})
}

// ListGates returns the gates in force.
func (e *Engine) ListGates(ctx context.Context) ([]store.Gate, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	gs, err := listGates(ctx, e.r)
	return gs, e.classify(err)
}

func listGates(ctx context.Context, q querier) ([]store.Gate, error) {
	rows, err := q.QueryContext(ctx, sqlGates)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Gate
	for rows.Next() {
		var (
			g     store.Gate
			kind  string
			since sql.NullInt64
		)
		if err := rows.Scan(&kind, &g.Target, &since, &g.Actor, &g.Reason); err != nil {
			return nil, err
		}
		g.Kind, g.Since = store.GateKind(kind), fromNanos(since)
		out = append(out, g)
	}
	return out, rows.Err()
}

const (
	windowCols = `id, team, machine, cron, time_zone, duration, hold_from, created_at, actor`
	sqlGates   = `SELECT kind, target, since, actor, reason FROM gates ORDER BY kind, target`
	sqlWindows = `SELECT ` + windowCols + ` FROM windows ORDER BY team, machine, id`
)

func scanWindow(s scanner) (store.Window, error) {
	var (
		w       store.Window
		d       int64
		created sql.NullInt64
	)
	if err := s.Scan(&w.ID, &w.TeamID, &w.MachineID, &w.Cron, &w.TimeZone, &d, &w.HoldFrom, &created, &w.Actor); err != nil {
		return store.Window{}, err
	}
	w.Duration, w.CreatedAt = time.Duration(d), fromNanos(created)
	return w, nil
}

// CreateWindow inserts a window. ErrExists; ErrInvalidArgument.
func (e *Engine) CreateWindow(ctx context.Context, w store.Window) (store.Window, error) {
	w, err := fsm.NewWindow(w, time.Now())
	if err != nil {
		return store.Window{}, err
	}
	err = e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO windows (`+windowCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
			w.ID, w.TeamID, w.MachineID, w.Cron, w.TimeZone, int64(w.Duration), w.HoldFrom, nanos(w.CreatedAt), w.Actor)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("%w: window %s", store.ErrExists, w.ID)
		}
		return nil
	})
	if err != nil {
		return store.Window{}, err
	}
	return w, nil
}

// DeleteWindow deletes a window. ErrNotFound.
func (e *Engine) DeleteWindow(ctx context.Context, id string) error {
	return e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM windows WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("%w: window %s", store.ErrNotFound, id)
		}
		return nil
	})
}

// GetWindow returns one window. ErrNotFound.
func (e *Engine) GetWindow(ctx context.Context, id string) (store.Window, error) {
	if err := e.check(ctx); err != nil {
		return store.Window{}, err
	}
	w, err := scanWindow(e.r.QueryRowContext(ctx, `SELECT `+windowCols+` FROM windows WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Window{}, fmt.Errorf("%w: window %s", store.ErrNotFound, id)
	}
	return w, e.classify(err)
}

// ListWindows returns the windows matching f.
func (e *Engine) ListWindows(ctx context.Context, f store.WindowFilter) ([]store.Window, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	ws, err := listWindows(ctx, e.r, f)
	return ws, e.classify(err)
}

func listWindows(ctx context.Context, q querier, f store.WindowFilter) ([]store.Window, error) {
	query, args := sqlWindows, []any(nil)
	if f.TeamIDs != nil {
		query, args = `SELECT `+windowCols+` FROM windows WHERE team IN (SELECT value FROM json_each(?)) ORDER BY team, machine, id`,
			append(args, jsonList(f.TeamIDs))
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Window
	for rows.Next() {
		w, err := scanWindow(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

// gatesTx reads the gates and windows in force within a claim's
// transaction.
func gatesTx(ctx context.Context, tx querier) ([]store.Gate, []store.Window, error) {
	gates, err := listGates(ctx, tx)
	if err != nil {
		return nil, nil, err
	}
	windows, err := listWindows(ctx, tx, store.WindowFilter{})
	return gates, windows, err
}
