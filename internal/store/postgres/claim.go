package postgres

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/rediacc/rediacc/internal/sched"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

// Claim moves up to r.Max ready PENDING tasks to ASSIGNED under r.Owner,
// chosen by sched.Claim (priority with aging, fair shares between teams,
// round robin between a team's machines, per-machine limits with the slot
// held back for priority 1, busy machines), and stores the fairness tags
// it changed, in one transaction. ErrInvalidArgument.
//
// The fair-queueing state (sched.Tags: a virtual clock every claim reads
// and advances) is global, so claims are serialized: each takes the
// store's claim lock (a transaction-scoped advisory lock) first. Under it
// the running counts it reads are exact until it commits, so the
// per-machine limit and the reserved slot hold across every worker on
// every host. The tasks it reads are locked FOR UPDATE SKIP LOCKED: a task
// another transaction is changing (a cancel) is passed over, never waited
// for. A claim is a few statements long; TestClaimSameMachineRace and
// TestClaimLimitsAcrossEngines show the limits under concurrent claimers.
func (e *Engine) Claim(ctx context.Context, r store.ClaimRequest) ([]store.Task, error) {
	if err := fsm.CheckClaim(r); err != nil {
		return nil, err
	}
	var out []store.Task
	err := e.write(ctx, func(tx pgx.Tx) error {
		out = nil
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, e.lockKey("claim", "")); err != nil {
			return err
		}
		running := map[string]int{}
		if err := countRunning(ctx, tx, nil, running); err != nil {
			return err
		}
		gates, windows, err := gatesTx(ctx, tx) // window.go
		if err != nil {
			return err
		}
		src := &source{ctx: ctx, tx: tx, now: r.Now.UnixNano()}
		res, err := sched.Claim(fsm.GatedPolicy(r, gates, windows), running, src)
		if err != nil || len(res.Picked) == 0 {
			return err
		}
		if err := saveTags(ctx, tx, res); err != nil {
			return err
		}
		seqs := make([]int64, len(res.Picked))
		for i, c := range res.Picked {
			seqs[i] = c.Seq
		}
		got, ts, err := collectTasks(tx.Query(ctx, `UPDATE tasks SET status = 'ASSIGNED', lease_owner = $1, lease_expires_at = $2
			WHERE seq = ANY($3) RETURNING `+taskCols, r.Owner, r.LeaseUntil.UnixNano(), seqs))
		if err != nil {
			return err
		}
		bySeq := make(map[int64]store.Task, len(ts))
		for i, s := range got {
			bySeq[s] = ts[i]
		}
		for _, s := range seqs {
			out = append(out, bySeq[s])
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

// saveTags stores the fairness tags a claim changed.
func saveTags(ctx context.Context, tx pgx.Tx, res sched.Result) error {
	var teams, machines []string
	var starts, finishes, stamps []int64
	for t, tag := range res.Teams {
		teams, starts, finishes = append(teams, t), append(starts, tag.Start), append(finishes, tag.Finish)
	}
	for m, s := range res.Stamps {
		machines, stamps = append(machines, m), append(stamps, s)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO fair_teams (team, start, finish) SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])
		ON CONFLICT (team) DO UPDATE SET start = EXCLUDED.start, finish = EXCLUDED.finish`, teams, starts, finishes); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO fair_machines (machine, stamp) SELECT * FROM unnest($1::text[], $2::bigint[])
		ON CONFLICT (machine) DO UPDATE SET stamp = EXCLUDED.stamp`, machines, stamps)
	return err
}

// candCols are the columns scanCandidate reads.
const candCols = `t.seq, t.id, t.team_id, t.machine_id, t.priority, t.enqueued_at, t.ready_at`

// source is a claim's sched.Source over its transaction, served by the
// tasks_pending index (machine, priority, enqueued_at, seq over PENDING
// rows): a loose index scan finds the machines with pending work, one seek
// finds each (machine, priority) head and one each next task.
type source struct {
	ctx context.Context
	tx  pgx.Tx
	now int64
}

var _ sched.Source = (*source)(nil)

// Heads implements sched.Source in one statement.
func (s *source) Heads(only, skip []string) ([]sched.Candidate, error) {
	ms := `WITH RECURSIVE scan(m) AS (
			(SELECT machine_id FROM tasks WHERE status = 'PENDING' ORDER BY machine_id LIMIT 1)
			UNION ALL
			SELECT (SELECT machine_id FROM tasks WHERE status = 'PENDING' AND machine_id > scan.m ORDER BY machine_id LIMIT 1)
			FROM scan WHERE scan.m IS NOT NULL),
		ms(m) AS (SELECT m FROM scan WHERE m IS NOT NULL)`
	args := []any{s.now, nonNil(skip)}
	if only != nil {
		ms = `WITH ms(m) AS (SELECT DISTINCT unnest($3::text[]))`
		args = append(args, only)
	}
	rows, err := s.tx.Query(s.ctx, ms+`
		SELECT `+candCols+` FROM ms CROSS JOIN generate_series(1, 5) AS lv(p)
		CROSS JOIN LATERAL (SELECT * FROM tasks t
			WHERE t.status = 'PENDING' AND t.machine_id = ms.m AND t.priority = lv.p AND t.ready_at <= $1
			ORDER BY t.enqueued_at, t.seq LIMIT 1 FOR UPDATE SKIP LOCKED) t
		WHERE NOT ms.m = ANY($2)`, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (sched.Candidate, error) { return scanCandidate(row) })
}

// Next implements sched.Source.
func (s *source) Next(machine string, priority int, after sched.Candidate) (sched.Candidate, bool, error) {
	c, err := scanCandidate(s.tx.QueryRow(s.ctx, `SELECT `+candCols+` FROM tasks t
		WHERE t.status = 'PENDING' AND t.machine_id = $1 AND t.priority = $2 AND t.ready_at <= $5
		AND (t.enqueued_at, t.seq) > ($3, $4)
		ORDER BY t.enqueued_at, t.seq LIMIT 1 FOR UPDATE SKIP LOCKED`,
		machine, priority, after.EnqueuedAt.UnixNano(), after.Seq, s.now))
	if errors.Is(err, pgx.ErrNoRows) {
		return sched.Candidate{}, false, nil
	}
	return c, err == nil, err
}

// Tags implements sched.Source in one statement.
func (s *source) Tags(teams, machines []string) (sched.Tags, error) {
	t := sched.Tags{Teams: map[string]sched.TeamTag{}, Stamps: map[string]int64{}}
	rows, err := s.tx.Query(s.ctx, `SELECT 'clock', '', (SELECT coalesce(max(start), 0) FROM fair_teams), (SELECT coalesce(max(stamp), 0) FROM fair_machines)
		UNION ALL SELECT 'team', team, start, finish FROM fair_teams WHERE team = ANY($1)
		UNION ALL SELECT 'machine', machine, stamp, 0 FROM fair_machines WHERE machine = ANY($2)`, nonNil(teams), nonNil(machines))
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

func nonNil(ss []string) []string {
	if ss == nil {
		return []string{}
	}
	return ss
}

func scanCandidate(row pgx.Row) (sched.Candidate, error) {
	var (
		c          sched.Candidate
		prio       int16
		enq, ready int64
	)
	if err := row.Scan(&c.Seq, &c.ID, &c.Team, &c.Machine, &prio, &enq, &ready); err != nil {
		return sched.Candidate{}, err
	}
	c.Priority = int(prio)
	c.EnqueuedAt, c.ReadyAt = fromNanos(&enq), fromNanos(&ready)
	return c, nil
}

// countRunning sets running[m] to the ASSIGNED and PROCESSING tasks of
// machine m, for the machines given (nil: every machine with such tasks).
func countRunning(ctx context.Context, tx pgx.Tx, machines []string, running map[string]int) error {
	q, args := `SELECT machine_id, count(*) FROM tasks WHERE status IN ('ASSIGNED', 'PROCESSING') GROUP BY machine_id`, []any(nil)
	if machines != nil {
		q = `SELECT machine_id, count(*) FROM tasks WHERE status IN ('ASSIGNED', 'PROCESSING') AND machine_id = ANY($1) GROUP BY machine_id`
		args = []any{machines}
	}
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			m string
			n int64
		)
		if err := rows.Scan(&m, &n); err != nil {
			return err
		}
		running[m] = int(n)
	}
	return rows.Err()
}
