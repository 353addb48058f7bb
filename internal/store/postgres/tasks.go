package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

// ---- machines

// machineCols are the columns scanMachine reads: the owning team's name
// comes third, by a scalar subquery.
const machineCols = `id, name, team_id, COALESCE((SELECT name FROM teams WHERE teams.id = machines.team_id), machines.team_id),
	host, port, user_name, config, created_at, updated_at, health, health_at, deleted_at`

func scanMachine(row pgx.Row) (store.Machine, error) {
	var (
		m                                   store.Machine
		port                                int32
		created, updated, healthAt, deleted *int64
	)
	if err := row.Scan(&m.ID, &m.Name, &m.TeamID, &m.Team, &m.Host, &port, &m.User, &m.Config, &created, &updated,
		&m.Health, &healthAt, &deleted); err != nil {
		return store.Machine{}, err
	}
	m.Port = int(port)
	m.Config, m.Health = fsm.Bytes(m.Config), fsm.Bytes(m.Health)
	m.CreatedAt, m.UpdatedAt, m.HealthAt = fromNanos(created), fromNanos(updated), fromNanos(healthAt)
	m.DeletedAt = fromNanos(deleted)
	return m, nil
}

func exists(ctx context.Context, tx pgx.Tx, q string, args ...any) (bool, error) {
	var ok bool
	err := tx.QueryRow(ctx, `SELECT EXISTS (`+q+`)`, args...).Scan(&ok)
	return ok, err
}

// lockMachine locks the live machine id's row FOR UPDATE and returns it.
func lockMachine(ctx context.Context, tx pgx.Tx, id string) (store.Machine, error) {
	m, err := scanMachine(tx.QueryRow(ctx, `SELECT `+machineCols+` FROM machines WHERE id = $1 AND deleted_at IS NULL FOR UPDATE`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Machine{}, fmt.Errorf("%w: machine %s", store.ErrNotFound, id)
	}
	return m, err
}

// lockTeam locks the live team id's row FOR SHARE (it must not be deleted
// before the transaction ends) and reports whether it exists.
func lockTeam(ctx context.Context, tx pgx.Tx, id string) (bool, error) {
	return exists(ctx, tx, `SELECT 1 FROM teams WHERE id = $1 AND deleted_at IS NULL FOR SHARE`, id)
}

// noUnfinished returns ErrMachineHasTasks when a task of machine id (named
// name) is not terminal.
func noUnfinished(ctx context.Context, tx pgx.Tx, id, name string) error {
	var tid, status string
	err := tx.QueryRow(ctx, `SELECT id, status FROM tasks
		WHERE machine_id = $1 AND status IN ('PENDING', 'ASSIGNED', 'PROCESSING') LIMIT 1`, id).Scan(&tid, &status)
	switch {
	case err == nil:
		return fsm.MachineHasTasks(name, tid, store.Status(status))
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	}
	return err
}

// CreateMachine inserts m. ErrExists (a live machine has the name, or the
// id is taken); ErrNotFound (team); ErrInvalidArgument.
func (e *Engine) CreateMachine(ctx context.Context, m store.Machine) (store.Machine, error) {
	m, err := fsm.NewMachine(m, time.Now())
	if err != nil {
		return store.Machine{}, err
	}
	var out store.Machine
	err = e.write(ctx, func(tx pgx.Tx) error {
		if ok, err := lockTeam(ctx, tx, m.TeamID); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("%w: team %s (of machine %s)", store.ErrNotFound, m.TeamID, m.Name)
		}
		// Both unique indexes (the id, the live name) reject a duplicate;
		// ON CONFLICT DO NOTHING waits for a concurrent insert to settle.
		tag, err := tx.Exec(ctx, `INSERT INTO machines (id, name, team_id, host, port, user_name, config, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING`,
			m.ID, m.Name, m.TeamID, m.Host, m.Port, m.User, blob(m.Config), nanos(m.CreatedAt), nanos(m.UpdatedAt))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			if taken, err := exists(ctx, tx, `SELECT 1 FROM machines WHERE id = $1`, m.ID); err != nil {
				return err
			} else if taken {
				return fmt.Errorf("%w: machine id %s", store.ErrExists, m.ID)
			}
			return fmt.Errorf("%w: machine %s", store.ErrExists, m.Name)
		}
		out, err = scanMachine(tx.QueryRow(ctx, `SELECT `+machineCols+` FROM machines WHERE id = $1`, m.ID))
		return err
	})
	if err != nil {
		return store.Machine{}, err
	}
	return out, nil
}

// UpdateMachine replaces the live machine m.ID, keeping its CreatedAt.
// ErrNotFound; ErrExists; ErrMachineHasTasks; ErrInvalidArgument.
func (e *Engine) UpdateMachine(ctx context.Context, m store.Machine) error {
	return e.write(ctx, func(tx pgx.Tx) error {
		old, err := lockMachine(ctx, tx, m.ID)
		if err != nil {
			return err
		}
		m, err := fsm.UpdateMachine(old, m, time.Now())
		if err != nil {
			return err
		}
		if m.TeamID != old.TeamID {
			if ok, err := lockTeam(ctx, tx, m.TeamID); err != nil {
				return err
			} else if !ok {
				return fmt.Errorf("%w: team %s (of machine %s)", store.ErrNotFound, m.TeamID, m.Name)
			}
			if err := noUnfinished(ctx, tx, m.ID, m.Name); err != nil {
				return err
			}
		}
		if m.Name != old.Name {
			if taken, err := exists(ctx, tx, `SELECT 1 FROM machines WHERE name = $1 AND deleted_at IS NULL AND id <> $2`, m.Name, m.ID); err != nil {
				return err
			} else if taken {
				return fmt.Errorf("%w: machine %s", store.ErrExists, m.Name)
			}
		}
		_, err = tx.Exec(ctx, `UPDATE machines SET name = $1, team_id = $2, host = $3, port = $4, user_name = $5, config = $6,
			created_at = $7, updated_at = $8 WHERE id = $9`,
			m.Name, m.TeamID, m.Host, m.Port, m.User, blob(m.Config), nanos(m.CreatedAt), nanos(m.UpdatedAt), m.ID)
		return err
	})
}

// GetMachine returns one machine by id, live or removed. ErrNotFound.
func (e *Engine) GetMachine(ctx context.Context, id string) (store.Machine, error) {
	return e.oneMachine(ctx, `id = $1`, id)
}

// MachineByName returns the live machine named name. ErrNotFound.
func (e *Engine) MachineByName(ctx context.Context, name string) (store.Machine, error) {
	return e.oneMachine(ctx, `name = $1 AND deleted_at IS NULL`, name)
}

func (e *Engine) oneMachine(ctx context.Context, where, arg string) (store.Machine, error) {
	if err := e.check(ctx); err != nil {
		return store.Machine{}, err
	}
	m, err := scanMachine(e.pool.QueryRow(ctx, `SELECT `+machineCols+` FROM machines WHERE `+where, arg))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Machine{}, fmt.Errorf("%w: machine %s", store.ErrNotFound, arg)
	}
	return m, e.classify(err)
}

// ListMachines returns the live machines matching f, ordered by name.
func (e *Engine) ListMachines(ctx context.Context, f store.MachineFilter) ([]store.Machine, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	q, args := `SELECT `+machineCols+` FROM machines WHERE deleted_at IS NULL AND ($1 = '' OR team_id = $1)`, []any{f.TeamID}
	if f.TeamIDs != nil {
		q, args = q+` AND team_id = ANY($2)`, append(args, f.TeamIDs)
	}
	rows, err := e.pool.Query(ctx, q+` ORDER BY name`, args...)
	if err != nil {
		return nil, e.classify(err)
	}
	defer rows.Close()
	var out []store.Machine
	for rows.Next() {
		m, err := scanMachine(rows)
		if err != nil {
			return nil, e.classify(err)
		}
		out = append(out, m)
	}
	return out, e.classify(rows.Err())
}

// DeleteMachine removes the live machine id, keeping its row.
// ErrNotFound; ErrMachineHasTasks.
func (e *Engine) DeleteMachine(ctx context.Context, id string, at time.Time) error {
	at, err := fsm.DeleteTime("machine", id, at, time.Now())
	if err != nil {
		return err
	}
	return e.write(ctx, func(tx pgx.Tx) error {
		m, err := lockMachine(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := noUnfinished(ctx, tx, id, m.Name); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE machines SET deleted_at = $1 WHERE id = $2`, nanos(at), id)
		return err
	})
}

// ---- tasks

// notify tells the workers listening on the store's channel (Wakeups)
// that work may be claimable, when the transaction commits. Notifications
// of one transaction are folded into one by PostgreSQL.
func (e *Engine) notify(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, e.channel())
	return err
}

// CreateTask inserts t as PENDING, or returns the task holding
// t.IdempotencyKey. ErrExists when the id is taken; ErrInvalidArgument.
func (e *Engine) CreateTask(ctx context.Context, t store.Task) (store.Task, bool, error) {
	t, err := fsm.NewTask(t, time.Now())
	if err != nil {
		return store.Task{}, false, err
	}
	args, err := taskArgs(&t)
	if err != nil {
		return store.Task{}, false, err
	}
	var (
		out     store.Task
		created bool
	)
	err = e.writeIf(ctx, func(tx pgx.Tx) (bool, error) {
		created = false
		// ON CONFLICT DO NOTHING waits for a concurrent insert of the same
		// key or id to commit or roll back, then tells which.
		tag, err := tx.Exec(ctx, sqlInsertTask+` ON CONFLICT DO NOTHING`, args...)
		if err != nil {
			return false, err
		}
		if tag.RowsAffected() == 1 {
			if _, out, err = e.loadTask(ctx, tx, t.ID, false); err != nil {
				return false, err
			}
			created = true
			return true, e.notify(ctx, tx)
		}
		if t.IdempotencyKey != "" {
			_, old, err := scanTask(tx.QueryRow(ctx, `SELECT `+taskCols+` FROM tasks WHERE team_id = $1 AND idempotency_key = $2`,
				t.TeamID, t.IdempotencyKey))
			if err == nil {
				out = old
				// The records about the task not created are dropped.
				recs, err := fsm.CtxAudit(ctx)
				if err == nil {
					if keep := fsm.KeepAudit(recs, map[string]bool{t.ID: true}); len(keep) > 0 {
						_, err = e.appendAudit(ctx, tx, keep)
					}
				}
				return false, err
			}
			if !errors.Is(err, pgx.ErrNoRows) {
				return false, err
			}
		}
		return false, fmt.Errorf("%w: task %s", store.ErrExists, t.ID)
	})
	if err != nil {
		return store.Task{}, false, err
	}
	return out, created, nil
}

func (e *Engine) loadTask(ctx context.Context, q pgx.Tx, id string, forUpdate bool) (int64, store.Task, error) {
	sql := `SELECT ` + taskCols + ` FROM tasks WHERE id = $1`
	var row pgx.Row
	if forUpdate {
		row = q.QueryRow(ctx, sql+` FOR UPDATE`, id)
	} else if q != nil {
		row = q.QueryRow(ctx, sql, id)
	} else {
		row = e.pool.QueryRow(ctx, sql, id)
	}
	seq, t, err := scanTask(row)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, store.Task{}, fmt.Errorf("%w: task %s", store.ErrNotFound, id)
	}
	return seq, t, err
}

// GetTask returns one task with its History. ErrNotFound.
func (e *Engine) GetTask(ctx context.Context, id string) (store.Task, error) {
	if err := e.check(ctx); err != nil {
		return store.Task{}, err
	}
	_, t, err := e.loadTask(ctx, nil, id, false)
	if err != nil {
		return store.Task{}, e.classify(err)
	}
	return t, nil
}

// ListTasks returns the tasks matching f ordered by CreatedAt then ID.
func (e *Engine) ListTasks(ctx context.Context, f store.TaskFilter) ([]store.Task, error) {
	if err := fsm.CheckFilter(f); err != nil {
		return nil, err
	}
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	q, args := taskQuery(f)
	_, ts, err := collectTasks(e.pool.Query(ctx, `SELECT `+taskCols+` FROM tasks `+q, args...))
	return ts, e.classify(err)
}

// taskQuery translates f into ListTasks' clauses after FROM tasks.
func taskQuery(f store.TaskFilter) (string, []any) {
	var (
		where []string
		args  []any
	)
	add := func(cond string, arg any) {
		args = append(args, arg)
		where = append(where, strings.ReplaceAll(cond, "?", fmt.Sprintf("$%d", len(args))))
	}
	if len(f.Statuses) > 0 {
		ss := make([]string, len(f.Statuses))
		for i, s := range f.Statuses {
			ss[i] = string(s)
		}
		add(`status = ANY(?)`, ss)
	}
	if f.TeamID != "" {
		add(`team_id = ?`, f.TeamID)
	}
	if f.TeamIDs != nil {
		add(`team_id = ANY(?)`, f.TeamIDs)
	}
	if f.MachineID != "" {
		add(`machine_id = ?`, f.MachineID)
	}
	if f.Priority != 0 {
		add(`priority = ?`, f.Priority)
	}
	if !f.CompletedAfter.IsZero() {
		add(`completed_at >= ?`, f.CompletedAfter.UnixNano())
	}
	q := ""
	if len(where) > 0 {
		q = "WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY created_at, id"
	if f.Limit > 0 {
		args = append(args, f.Limit)
		q += fmt.Sprintf(" LIMIT $%d", len(args))
	}
	return q, args
}

// saveTask writes t's mutable fields over row seq (locked by the caller).
func saveTask(ctx context.Context, tx pgx.Tx, seq int64, t *store.Task) error {
	h, err := historyJSON(t.History)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `UPDATE tasks SET status = $1, attempts = $2, history = $3, enqueued_at = $4, ready_at = $5,
		started_at = $6, completed_at = $7, lease_owner = $8, lease_expires_at = $9, cancel_requested = $10,
		exit_code = $11, stdout = $12, stderr = $13, stdout_truncated = $14, stderr_truncated = $15, error = $16,
		error_kind = $17
		WHERE seq = $18`,
		string(t.Status), t.Attempts, h, nanos(t.EnqueuedAt), nanos(t.ReadyAt),
		nanos(t.StartedAt), nanos(t.CompletedAt), t.LeaseOwner, nanos(t.LeaseExpiresAt), t.CancelRequested,
		exitCode(t.ExitCode), blob(t.Stdout), blob(t.Stderr), t.StdoutTruncated, t.StderrTruncated, t.Error, t.ErrorKind, seq)
	return err
}

// modify locks task id in a write transaction, applies fn and saves the
// result; nothing is written when fn fails. When the task ends up PENDING
// or leaves ASSIGNED/PROCESSING (a machine slot freed), the workers are
// notified.
func (e *Engine) modify(ctx context.Context, id string, fn func(t *store.Task) error) (store.Task, error) {
	var out store.Task
	err := e.write(ctx, func(tx pgx.Tx) error {
		seq, t, err := e.loadTask(ctx, tx, id, true)
		if err != nil {
			return err
		}
		was := t.Status
		if err := fn(&t); err != nil {
			return err
		}
		if err := saveTask(ctx, tx, seq, &t); err != nil {
			return err
		}
		if t.Status == store.Pending || (was.Active() && !t.Status.Active()) {
			if err := e.notify(ctx, tx); err != nil {
				return err
			}
		}
		out = t
		return nil
	})
	if err != nil {
		return store.Task{}, err
	}
	return out, nil
}

// Start moves an ASSIGNED task leased by owner to PROCESSING and appends the
// open attempt a. ErrNotFound; ErrLeaseLost; ErrDuplicateAttempt;
// ErrInvalidArgument.
func (e *Engine) Start(ctx context.Context, id, owner string, a store.Attempt) (store.Task, error) {
	return e.modify(ctx, id, func(t *store.Task) error { return fsm.Start(t, owner, a) })
}

// Heartbeat extends owner's leases on ids to until and reports the ids lost
// (not found, not active, or leased by another) and those whose
// cancellation was asked, in one statement.
func (e *Engine) Heartbeat(ctx context.Context, owner string, ids []string, until time.Time) (store.Heartbeat, error) {
	if err := fsm.CheckHeartbeat(owner, until); err != nil {
		return store.Heartbeat{}, err
	}
	var hb store.Heartbeat
	err := e.write(ctx, func(tx pgx.Tx) error {
		hb = store.Heartbeat{}
		if len(ids) == 0 {
			return nil
		}
		// Rows are locked in id order, as Rescue does, so the two never
		// deadlock.
		rows, err := tx.Query(ctx, `WITH renewed AS (
				UPDATE tasks SET lease_expires_at = $1
				WHERE seq IN (SELECT seq FROM tasks WHERE id = ANY($2) AND lease_owner = $3
					AND status IN ('ASSIGNED', 'PROCESSING') ORDER BY id FOR UPDATE)
				RETURNING id, cancel_requested)
			SELECT i.id, r.cancel_requested FROM unnest($2::text[]) WITH ORDINALITY AS i(id, n)
			LEFT JOIN renewed r ON r.id = i.id ORDER BY i.n`, until.UnixNano(), ids, owner)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				id     string
				cancel *bool
			)
			if err := rows.Scan(&id, &cancel); err != nil {
				return err
			}
			switch {
			case cancel == nil:
				hb.Lost = append(hb.Lost, id)
			case *cancel:
				hb.CancelRequested = append(hb.CancelRequested, id)
			}
		}
		return rows.Err()
	})
	if err != nil {
		return store.Heartbeat{}, err
	}
	return hb, nil
}

// Finish closes the current attempt and moves the task to f.Next if f.Owner
// still holds it, checked and written in one transaction. ErrNotFound;
// ErrLeaseLost; ErrInvalidArgument.
func (e *Engine) Finish(ctx context.Context, f store.Finish) (store.Task, error) {
	if err := fsm.CheckFinish(f); err != nil {
		return store.Task{}, err
	}
	return e.modify(ctx, f.ID, func(t *store.Task) error { return fsm.Finish(t, f) })
}

// Cancel cancels a task (see store.Engine). ErrNotFound; ErrNotCancellable.
func (e *Engine) Cancel(ctx context.Context, id string, at time.Time) (store.Task, error) {
	return e.modify(ctx, id, func(t *store.Task) error {
		_, err := fsm.Cancel(t, at)
		return err
	})
}

// Rescue takes back the tasks whose lease expired or whose owner is dead.
// r.OwnerDead is called outside any transaction. Rows another transaction
// holds (a worker finishing the task right now) are skipped: the next
// rescue sees them again if they are still held.
func (e *Engine) Rescue(ctx context.Context, r store.RescueRequest) ([]store.Task, error) {
	if err := fsm.CheckRescue(r); err != nil {
		return nil, err
	}
	if _, err := fsm.CtxAudit(ctx); err != nil {
		return nil, err
	}
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	now := r.Now.UnixNano()
	dead := []string{}
	if r.OwnerDead != nil {
		rows, _ := e.pool.Query(ctx, `SELECT DISTINCT lease_owner FROM tasks
			WHERE status IN ('ASSIGNED', 'PROCESSING') AND lease_expires_at > $1`, now)
		owners, err := pgx.CollectRows(rows, pgx.RowTo[string]) // a Query error comes back here
		if err != nil {
			return nil, e.classify(err)
		}
		for _, o := range owners {
			if r.OwnerDead(o) {
				dead = append(dead, o)
			}
		}
	}
	var out []store.Task
	err := e.write(ctx, func(tx pgx.Tx) error {
		out = nil
		seqs, ts, err := collectTasks(tx.Query(ctx, `SELECT `+taskCols+` FROM tasks
			WHERE status IN ('ASSIGNED', 'PROCESSING')
			AND (lease_expires_at IS NULL OR lease_expires_at <= $1 OR lease_owner = ANY($2))
			ORDER BY id FOR UPDATE SKIP LOCKED`, now, dead))
		if err != nil {
			return err
		}
		for i := range ts {
			t := &ts[i]
			if fsm.Held(t, r.Held) {
				continue
			}
			fsm.Rescue(t, r.Now, fsm.RescueReason(t, r.Now))
			if err := saveTask(ctx, tx, seqs[i], t); err != nil {
				return err
			}
			out = append(out, *t)
		}
		if len(out) > 0 {
			if err := e.notify(ctx, tx); err != nil {
				return err
			}
		}
		fsm.SortTasks(out)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// SetAttemptRemote records where the open attempts of owner's tasks run,
// in one transaction; it returns the ids it did not update.
func (e *Engine) SetAttemptRemote(ctx context.Context, owner string, rs []store.AttemptRemote) ([]string, error) {
	if err := fsm.CheckSetRemote(owner); err != nil {
		return nil, err
	}
	var lost []string
	err := e.write(ctx, func(tx pgx.Tx) error {
		lost = nil
		for _, r := range rs {
			seq, t, err := e.loadTask(ctx, tx, r.TaskID, true)
			if errors.Is(err, store.ErrNotFound) {
				lost = append(lost, r.TaskID)
				continue
			}
			if err != nil {
				return err
			}
			if !fsm.SetRemote(&t, owner, r) {
				lost = append(lost, r.TaskID)
				continue
			}
			if err := saveTask(ctx, tx, seq, &t); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return lost, nil
}

// NextReady returns the earliest ReadyAt among PENDING tasks; false when
// none is PENDING.
func (e *Engine) NextReady(ctx context.Context) (time.Time, bool, error) {
	if err := e.check(ctx); err != nil {
		return time.Time{}, false, err
	}
	var n *int64
	if err := e.pool.QueryRow(ctx, `SELECT min(ready_at) FROM tasks WHERE status = 'PENDING'`).Scan(&n); err != nil {
		return time.Time{}, false, e.classify(err)
	}
	return fromNanos(n), n != nil, nil
}

// Depth counts tasks grouped by status, priority, team id and machine id,
// in the order of fsm.SortDepth.
func (e *Engine) Depth(ctx context.Context) ([]store.DepthRow, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	rows, err := e.pool.Query(ctx, `SELECT status, priority, team_id, machine_id,
		COALESCE((SELECT name FROM teams WHERE teams.id = d.team_id), d.team_id),
		COALESCE((SELECT name FROM machines WHERE machines.id = d.machine_id), d.machine_id), n
		FROM (SELECT status, priority, team_id, machine_id, count(*) AS n FROM tasks GROUP BY status, priority, team_id, machine_id) d`)
	if err != nil {
		return nil, e.classify(err)
	}
	defer rows.Close()
	var out []store.DepthRow
	for rows.Next() {
		var (
			d    store.DepthRow
			s    string
			prio int16
			n    int64
		)
		if err := rows.Scan(&s, &prio, &d.TeamID, &d.MachineID, &d.Team, &d.Machine, &n); err != nil {
			return nil, e.classify(err)
		}
		d.Status, d.Priority, d.Count = store.Status(s), int(prio), int(n)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, e.classify(err)
	}
	fsm.SortDepth(out)
	return out, nil
}
