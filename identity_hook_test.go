package rediacc

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	_ "modernc.org/sqlite" // the SQL driver, for the hooks below

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/sqlite"
)

// InsertTaskForTest writes a PENDING task of team (a name) on machine (a
// name) straight into the store, without the SDK's checks or the store's
// guard: the state a store without guards, or an older rediacc, could have
// left.
func InsertTaskForTest(c *Client, team, machine string, spec TaskSpec) (string, error) {
	ctx := context.Background()
	t, err := c.access.TeamByName(ctx, team)
	if err != nil {
		return "", err
	}
	m, err := c.engine.MachineByName(ctx, machine)
	if err != nil {
		return "", err
	}
	spec.Machine = machine
	if spec, err = spec.normalize(); err != nil {
		return "", err
	}
	raw, err := encodeSpec(spec)
	if err != nil {
		return "", err
	}
	rec, _, err := c.engine.CreateTask(ctx, store.Task{TeamID: t.ID, MachineID: m.ID, Priority: int(spec.Priority), Spec: raw})
	c.notify()
	return rec.ID, err
}

// rawSQL runs q on the SQLite file of c's store, behind the engine's back.
func rawSQL(c *Client, q string, args ...any) error {
	e, ok := c.engine.(*sqlite.Engine)
	if !ok {
		return fmt.Errorf("rawSQL: store %s is not SQLite", c.st)
	}
	db, err := sql.Open("sqlite", e.Path())
	if err != nil {
		return err
	}
	defer db.Close()
	res, err := db.Exec(q, args...)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("rawSQL: %d rows changed, want 1", n)
	}
	return nil
}

// MoveMachineForTest moves machine to team (names) in the SQLite store
// without the store's rule (a machine with tasks does not move).
func MoveMachineForTest(c *Client, machine, team string) error {
	return rawSQL(c, `UPDATE machines SET team_id = (SELECT id FROM teams WHERE name = ? AND deleted_at IS NULL)
		WHERE name = ? AND deleted_at IS NULL`, team, machine)
}

// RemoveMachineForTest removes machine in the SQLite store without the
// store's rule (a machine with tasks is not removed).
func RemoveMachineForTest(c *Client, machine string) error {
	return rawSQL(c, `UPDATE machines SET deleted_at = ? WHERE name = ? AND deleted_at IS NULL`, time.Now().UnixNano(), machine)
}
