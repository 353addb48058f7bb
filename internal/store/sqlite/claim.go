package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/rediacc/rediacc/internal/sched"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

// Claim's statements. tasks_pending (machine_id, priority, enqueued_at, and
// the rowid seq, over PENDING rows only) serves the machines with pending
// work (a loose index scan: one seek per machine), the head of each
// (machine, priority) FIFO (one seek each) and the next task of a FIFO
// (two seeks), so a claim reads about as many index entries as machines
// plus tasks it looks at, never the backlog. fair_teams and fair_machines
// hold sched's tags; their max() comes from their indexes.
const (
	candCols = `seq, id, team_id, machine_id, priority, enqueued_at, ready_at`
	// sqlHeads and sqlHeadsOf read the head (the first ready task in FIFO
	// order) of every (machine, priority): of every machine with PENDING
	// tasks (found by a loose index scan), or of the machines (ids) in ?1 (a JSON
	// list); ?2 the machines to leave out (JSON list), ?3 now. Two
	// statements: one with a "?1 IS NULL" switch would be prepared again at
	// every call.
	sqlHeads = `WITH RECURSIVE scan(m) AS (
		SELECT (SELECT machine_id FROM tasks INDEXED BY tasks_pending WHERE status = 'PENDING' ORDER BY machine_id LIMIT 1)
		UNION ALL
		SELECT (SELECT machine_id FROM tasks INDEXED BY tasks_pending WHERE status = 'PENDING' AND machine_id > scan.m ORDER BY machine_id LIMIT 1)
		FROM scan WHERE scan.m IS NOT NULL),
	ms(m) AS (SELECT m FROM scan WHERE m IS NOT NULL),` + sqlHeadsTail
	sqlHeadsOf   = `WITH ms(m) AS (SELECT DISTINCT value FROM json_each(?1)),` + sqlHeadsTail
	sqlHeadsTail = `
	lv(p) AS (VALUES (1), (2), (3), (4), (5)),
	heads(s) AS (
		SELECT (SELECT seq FROM tasks INDEXED BY tasks_pending
			WHERE status = 'PENDING' AND machine_id = ms.m AND priority = lv.p AND ready_at <= ?3
			ORDER BY enqueued_at, seq LIMIT 1)
		FROM ms, lv WHERE ms.m NOT IN (SELECT value FROM json_each(?2)))
	SELECT ` + candCols + ` FROM heads JOIN tasks ON tasks.seq = heads.s`
	// sqlNext reads the next task of one (machine, priority) FIFO after
	// (enqueued_at, seq) = (?3, ?4): the first of the tasks enqueued at the
	// same instant (a batch shares it) or of the later ones. Two branches,
	// one seek each, because a row-value comparison would seek on
	// enqueued_at only and walk a batch row by row. The priority is
	// compared as "(?2 + 0)": with "priority = ?2" SQLite marked the
	// statement to be prepared again whenever the bound priority changed
	// (most calls of a claim: 6-7 % of a task's CPU in BenchmarkConcurrent);
	// the plan is the same (EXPLAIN QUERY PLAN: tasks_pending with
	// machine_id=? AND priority=? AND enqueued_at…).
	sqlNext = `SELECT * FROM (SELECT ` + candCols + ` FROM tasks INDEXED BY tasks_pending
			WHERE status = 'PENDING' AND machine_id = ?1 AND priority = (?2 + 0) AND enqueued_at = ?3 AND seq > ?4 AND ready_at <= ?5
			ORDER BY seq LIMIT 1)
		UNION ALL
		SELECT * FROM (SELECT ` + candCols + ` FROM tasks INDEXED BY tasks_pending
			WHERE status = 'PENDING' AND machine_id = ?1 AND priority = (?2 + 0) AND enqueued_at > ?3 AND ready_at <= ?5
			ORDER BY enqueued_at, seq LIMIT 1)
		ORDER BY 6, 1 LIMIT 1`
	// sqlTags: the clocks, then the tags of the teams ?1 and machines ?2
	// (JSON lists).
	sqlTags = `SELECT 'clock', '', (SELECT coalesce(max(start), 0) FROM fair_teams), (SELECT coalesce(max(stamp), 0) FROM fair_machines)
		UNION ALL SELECT 'team', team, start, finish FROM fair_teams WHERE team IN (SELECT value FROM json_each(?1))
		UNION ALL SELECT 'machine', machine, stamp, 0 FROM fair_machines WHERE machine IN (SELECT value FROM json_each(?2))`
	sqlSaveTeamTag = `INSERT INTO fair_teams (team, start, finish) VALUES (?, ?, ?)
		ON CONFLICT (team) DO UPDATE SET start = excluded.start, finish = excluded.finish`
	sqlSaveStamp = `INSERT INTO fair_machines (machine, stamp) VALUES (?, ?)
		ON CONFLICT (machine) DO UPDATE SET stamp = excluded.stamp`
)

// Claim moves up to r.Max ready PENDING tasks to ASSIGNED under r.Owner,
// chosen by sched.Claim from the tasks_pending index, and stores the
// fairness tags it changed; the whole claim is one write transaction.
func (e *Engine) Claim(ctx context.Context, r store.ClaimRequest) ([]store.Task, error) {
	if err := fsm.CheckClaim(r); err != nil {
		return nil, err
	}
	var out []store.Task
	err := e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		out = nil
		running, err := e.runningTx(ctx, tx)
		if err != nil {
			return err
		}
		gates, windows, err := gatesTx(ctx, e.cachedTx(tx)) // window.go
		if err != nil {
			return err
		}
		src := &source{ctx: ctx, tx: tx, st: e.st, now: r.Now.UnixNano()}
		res, err := sched.Claim(fsm.GatedPolicy(r, gates, windows), running, src)
		if err != nil {
			return err
		}
		if len(res.Picked) == 0 {
			return nil
		}
		save := stmt(ctx, tx, e.st.saveTeamTag)
		for team, tag := range res.Teams {
			if _, err := save.ExecContext(ctx, team, tag.Start, tag.Finish); err != nil {
				return err
			}
		}
		save = stmt(ctx, tx, e.st.saveStamp)
		for m, stamp := range res.Stamps {
			if _, err := save.ExecContext(ctx, m, stamp); err != nil {
				return err
			}
		}
		claim := stmt(ctx, tx, e.st.claimRow)
		for _, c := range res.Picked {
			_, t, err := scanTask(claim.QueryRowContext(ctx, r.Owner, r.LeaseUntil.UnixNano(), c.Seq))
			if err != nil {
				return fmt.Errorf("claiming task %s: %w", c.ID, err)
			}
			out = append(out, t)
		}
		recs, err := fsm.ClaimAudit(r, out) // the claim's own records (task.assign)
		if err == nil && len(recs) > 0 {
			_, err = e.appendAudit(ctx, tx, recs)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// runningTx counts the ASSIGNED and PROCESSING tasks of each machine.
func (e *Engine) runningTx(ctx context.Context, tx *sql.Tx) (map[string]int, error) {
	running := make(map[string]int)
	rows, err := stmt(ctx, tx, e.st.running).QueryContext(ctx)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			m string
			n int
		)
		if err := rows.Scan(&m, &n); err != nil {
			return nil, err
		}
		running[m] = n
	}
	return running, rows.Err()
}

// source is the claim's sched.Source over the transaction.
type source struct {
	ctx context.Context
	tx  *sql.Tx
	st  *stmts
	now int64
}

var _ sched.Source = (*source)(nil)

// Heads implements sched.Source in one statement.
func (s *source) Heads(only, skip []string) ([]sched.Candidate, error) {
	q, filter := s.st.heads, any(nil) // ?1 unused
	if only != nil {
		q, filter = s.st.headsOf, jsonList(only)
	}
	rows, err := stmt(s.ctx, s.tx, q).QueryContext(s.ctx, filter, jsonList(skip), s.now)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []sched.Candidate
	for rows.Next() {
		c, err := scanCandidate(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

func scanCandidate(s scanner) (sched.Candidate, error) {
	var (
		c          sched.Candidate
		enq, ready int64
	)
	if err := s.Scan(&c.Seq, &c.ID, &c.Team, &c.Machine, &c.Priority, &enq, &ready); err != nil {
		return sched.Candidate{}, err
	}
	c.EnqueuedAt, c.ReadyAt = time.Unix(0, enq).UTC(), time.Unix(0, ready).UTC()
	return c, nil
}

// Next implements sched.Source.
func (s *source) Next(machine string, priority int, after sched.Candidate) (sched.Candidate, bool, error) {
	c, err := scanCandidate(stmt(s.ctx, s.tx, s.st.next).QueryRowContext(s.ctx, machine, priority,
		after.EnqueuedAt.UnixNano(), after.Seq, s.now))
	if errors.Is(err, sql.ErrNoRows) {
		return sched.Candidate{}, false, nil
	}
	return c, err == nil, err
}

// Tags implements sched.Source in one statement.
func (s *source) Tags(teams, machines []string) (sched.Tags, error) {
	t := sched.Tags{Teams: map[string]sched.TeamTag{}, Stamps: map[string]int64{}}
	rows, err := stmt(s.ctx, s.tx, s.st.tags).QueryContext(s.ctx, jsonList(teams), jsonList(machines))
	if err != nil {
		return t, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			kind, id string
			a, b     int64
		)
		if err := rows.Scan(&kind, &id, &a, &b); err != nil {
			return t, err
		}
		switch kind {
		case "clock":
			t.Clock, t.Stamp = a, b
		case "team":
			t.Teams[id] = sched.TeamTag{Start: a, Finish: b}
		case "machine":
			t.Stamps[id] = a
		}
	}
	return t, rows.Err()
}
