package postgres

import (
	"context"
	"math"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/rediacc/rediacc/internal/sched"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

// Claim moves up to r.Max ready PENDING tasks to ASSIGNED under r.Owner, in
// scheduling order, honouring per-machine limits across every worker
// sharing the store (internal/sched decides). ErrInvalidArgument.
//
// The claim is one transaction made of rounds. A round reads, in one
// statement, the next ready PENDING tasks of each base priority in
// enqueued order (the tasks_pending index), leaving out the machines known
// to be full for that level, busy (levels sched.BusyFrom..5) or held by
// another claimer, and merges the five levels with sched.Compare into the
// longest prefix of the scheduling order they determine. For each machine
// of that prefix not seen yet it takes the machine's advisory lock with
// pg_try_advisory_xact_lock (a machine held by another claimer is skipped
// for this claim, as SKIP LOCKED skips rows) and only then counts the
// machine's ASSIGNED and PROCESSING tasks: under the lock the count is
// exact until the transaction ends, because only a claim raises it. The
// prefix's rows on locked machines are locked FOR UPDATE SKIP LOCKED and
// re-read (a row that changed since it was read is dropped or seen as it
// is now), sorted with sched.Sort and offered to a sched.Picker holding the
// exact counts. Rounds go on until Max tasks are taken or no task is left.
func (e *Engine) Claim(ctx context.Context, r store.ClaimRequest) ([]store.Task, error) {
	if err := fsm.CheckClaim(r); err != nil {
		return nil, err
	}
	var out []store.Task
	err := e.write(ctx, func(tx pgx.Tx) error {
		out = nil
		picked, err := e.pick(ctx, tx, r)
		if err != nil || len(picked) == 0 {
			return err
		}
		seqs := make([]int64, len(picked))
		for i, c := range picked {
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
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// level is one base priority's read position in a claim.
type level struct {
	afterEnq, afterSeq int64 // keyset: the last row consumed
	done               bool  // no row left after the keyset
	rows               []sched.Candidate
	more               bool // rows holds a full page: more may follow
}

// pick runs the claim's rounds (see Claim) and returns the candidates
// taken, in the order taken.
func (e *Engine) pick(ctx context.Context, tx pgx.Tx, r store.ClaimRequest) ([]sched.Candidate, error) {
	policy := fsm.Policy(r)
	bounded := r.PerMachine > 0
	lowLimit := r.PerMachine // slots priority 2..5 may fill
	if r.ReserveCritical && r.PerMachine >= 2 {
		lowLimit = r.PerMachine - 1
	}
	running := map[string]int{} // exact for locked machines, a hint for the others
	locked := map[string]bool{}
	held := map[string]bool{} // locked by another claimer
	if bounded {
		if err := countRunning(ctx, tx, nil, running); err != nil {
			return nil, err
		}
	}
	var levels [5]level
	for i := range levels {
		levels[i].afterEnq, levels[i].afterSeq = math.MinInt64, 0
	}
	var picked []sched.Candidate
	for len(picked) < r.Max {
		page := max(2*(r.Max-len(picked)), 16)
		// Machines no task of a level can go to now.
		var excl [3][]string // level 1, level 2, levels 3..5
		for m, n := range running {
			if held[m] || (bounded && n >= r.PerMachine) {
				excl[0] = append(excl[0], m)
			}
			if held[m] || (bounded && n >= lowLimit) {
				excl[1] = append(excl[1], m)
			}
		}
		for m := range held {
			if _, ok := running[m]; !ok {
				excl[0], excl[1] = append(excl[0], m), append(excl[1], m)
			}
		}
		excl[2] = append(slices.Clone(excl[1]), r.BusyMachines...)
		if err := e.readLevels(ctx, tx, r, &levels, excl, page); err != nil {
			return nil, err
		}
		prefix := mergePrefix(&levels, r)
		if len(prefix) == 0 {
			break
		}
		if bounded {
			if err := e.lockMachines(ctx, tx, prefix, locked, held, running); err != nil {
				return nil, err
			}
		}
		cands, err := relock(ctx, tx, prefix, held)
		if err != nil {
			return nil, err
		}
		sched.Sort(cands, r.Now, r.Aging)
		p := policy
		p.Max = r.Max - len(picked)
		pk := sched.NewPicker(p, running)
		for _, c := range cands {
			if pk.Done() {
				break
			}
			pk.Offer(c)
		}
		picked = append(picked, pk.Picked()...)
		for _, c := range pk.Picked() {
			running[c.Machine] = pk.Running(c.Machine)
		}
		if allDone(&levels) {
			break
		}
	}
	return picked, nil
}

func allDone(levels *[5]level) bool {
	for i := range levels {
		if !levels[i].done {
			return false
		}
	}
	return true
}

// readLevels reads the next page of ready PENDING tasks of every level not
// done, after each level's keyset, in one statement.
func (e *Engine) readLevels(ctx context.Context, tx pgx.Tx, r store.ClaimRequest, levels *[5]level, excl [3][]string, page int) error {
	var ps []int32
	var enqs, seqs []int64
	for i := range levels {
		levels[i].rows, levels[i].more = nil, false
		if !levels[i].done {
			ps = append(ps, int32(i+1))
			enqs = append(enqs, levels[i].afterEnq)
			seqs = append(seqs, levels[i].afterSeq)
		}
	}
	if len(ps) == 0 {
		return nil
	}
	machines := ""
	args := []any{ps, enqs, seqs, r.Now.UnixNano(), nonNil(excl[0]), nonNil(excl[1]), nonNil(excl[2]), page}
	if r.Machines != nil {
		machines = ` AND t.machine = ANY($9)`
		args = append(args, r.Machines)
	}
	rows, err := tx.Query(ctx, `SELECT t.seq, t.id, t.machine, t.priority, t.enqueued_at, t.ready_at
		FROM unnest($1::int[], $2::bigint[], $3::bigint[]) AS l(p, after_enq, after_seq)
		CROSS JOIN LATERAL (
			SELECT t.seq, t.id, t.machine, t.priority, t.enqueued_at, t.ready_at FROM tasks t
			WHERE t.status = 'PENDING' AND t.priority = l.p AND t.ready_at <= $4
			AND (t.enqueued_at, t.seq) > (l.after_enq, l.after_seq)
			AND NOT t.machine = ANY(CASE WHEN l.p = 1 THEN $5::text[] WHEN l.p < `+itoa(sched.BusyFrom)+` THEN $6::text[] ELSE $7::text[] END)`+
		machines+`
			ORDER BY t.enqueued_at, t.seq LIMIT $8) t
		ORDER BY t.priority, t.enqueued_at, t.seq`, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		c, err := scanCandidate(rows)
		if err != nil {
			return err
		}
		l := &levels[c.Priority-1]
		l.rows = append(l.rows, c)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for i := range levels {
		l := &levels[i]
		if l.done {
			continue
		}
		l.more = len(l.rows) >= page
		if len(l.rows) == 0 {
			l.done = true
		}
	}
	return nil
}

func nonNil(ss []string) []string {
	if ss == nil {
		return []string{}
	}
	return ss
}

func itoa(n int) string {
	return string(rune('0' + n)) // BusyFrom is one digit (1..5)
}

func scanCandidate(row pgx.Row) (sched.Candidate, error) {
	var (
		c          sched.Candidate
		prio       int16
		enq, ready int64
	)
	if err := row.Scan(&c.Seq, &c.ID, &c.Machine, &prio, &enq, &ready); err != nil {
		return sched.Candidate{}, err
	}
	c.Priority = int(prio)
	c.EnqueuedAt, c.ReadyAt = fromNanos(&enq), fromNanos(&ready)
	return c, nil
}

// mergePrefix merges the levels' pages in scheduling order and returns the
// longest prefix they determine: it stops where a level whose page is used
// up may have more rows. The levels' keysets move past the rows returned.
func mergePrefix(levels *[5]level, r store.ClaimRequest) []sched.Candidate {
	var out []sched.Candidate
	pos := [5]int{}
	for {
		best := -1
		for i := range levels {
			l := &levels[i]
			if pos[i] < len(l.rows) {
				if best < 0 || sched.Compare(l.rows[pos[i]], levels[best].rows[pos[best]], r.Now, r.Aging) < 0 {
					best = i
				}
			}
		}
		// A level whose page is used up but may hold more rows: its next
		// row could come before any other, so the prefix ends here.
		stop := false
		for i := range levels {
			l := &levels[i]
			if l.more && pos[i] == len(l.rows) {
				stop = true
			}
		}
		if best < 0 || stop {
			break
		}
		c := levels[best].rows[pos[best]]
		out = append(out, c)
		pos[best]++
		levels[best].afterEnq, levels[best].afterSeq = c.EnqueuedAt.UnixNano(), c.Seq
	}
	for i := range levels {
		l := &levels[i]
		if !l.more && pos[i] == len(l.rows) {
			l.done = true
		}
	}
	return out
}

// lockMachines takes the advisory lock of each machine of cands not seen
// yet (without waiting: a machine another claimer holds goes to held), and
// counts the running tasks of the machines it locked, after locking them.
func (e *Engine) lockMachines(ctx context.Context, tx pgx.Tx, cands []sched.Candidate, locked, held map[string]bool, running map[string]int) error {
	var ms []string
	var keys []int64
	for _, c := range cands {
		if !locked[c.Machine] && !held[c.Machine] && !slices.Contains(ms, c.Machine) {
			ms = append(ms, c.Machine)
		}
	}
	if len(ms) == 0 {
		return nil
	}
	slices.Sort(ms)
	for _, m := range ms {
		keys = append(keys, e.lockKey("machine", m))
	}
	rows, err := tx.Query(ctx, `SELECT m, pg_try_advisory_xact_lock(k) FROM unnest($1::text[], $2::bigint[]) AS x(m, k)`, ms, keys)
	if err != nil {
		return err
	}
	var got []string
	for rows.Next() {
		var (
			m  string
			ok bool
		)
		if err := rows.Scan(&m, &ok); err != nil {
			rows.Close()
			return err
		}
		if ok {
			locked[m] = true
			got = append(got, m)
		} else {
			held[m] = true
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if len(got) == 0 {
		return nil
	}
	for _, m := range got {
		delete(running, m)
	}
	// A new statement: its snapshot sees every claim committed before the
	// locks were granted.
	return countRunning(ctx, tx, got, running)
}

// countRunning sets running[m] to the ASSIGNED and PROCESSING tasks of
// machine m, for the machines given (nil: every machine with such tasks).
func countRunning(ctx context.Context, tx pgx.Tx, machines []string, running map[string]int) error {
	q, args := `SELECT machine, count(*) FROM tasks WHERE status IN ('ASSIGNED', 'PROCESSING') GROUP BY machine`, []any(nil)
	if machines != nil {
		q = `SELECT machine, count(*) FROM tasks WHERE status IN ('ASSIGNED', 'PROCESSING') AND machine = ANY($1) GROUP BY machine`
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

// relock locks the rows of cands whose machine is not held by another
// claimer, FOR UPDATE SKIP LOCKED, and returns them as they are now: a task
// no longer PENDING, or locked by another transaction (a cancel), is
// dropped.
func relock(ctx context.Context, tx pgx.Tx, cands []sched.Candidate, held map[string]bool) ([]sched.Candidate, error) {
	seqs := make([]int64, 0, len(cands))
	for _, c := range cands {
		if !held[c.Machine] {
			seqs = append(seqs, c.Seq)
		}
	}
	if len(seqs) == 0 {
		return nil, nil
	}
	rows, err := tx.Query(ctx, `SELECT seq, id, machine, priority, enqueued_at, ready_at FROM tasks
		WHERE seq = ANY($1) AND status = 'PENDING' ORDER BY seq FOR UPDATE SKIP LOCKED`, seqs)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (sched.Candidate, error) { return scanCandidate(row) })
}
