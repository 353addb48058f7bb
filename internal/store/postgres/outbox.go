package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

// The alert outbox (schema migration 5). Alerts are enqueued by e.tx in the
// transaction of the change whose context carries them (store.WithAlerts),
// or by EnqueueAlerts in one of their own. The rate limit's decision for a
// condition is serialized by a transaction-scoped advisory lock on its key,
// so two workers raising the same condition at once insert one alert.
// Deliveries are claimed with FOR UPDATE SKIP LOCKED under a lease, so
// workers on every host never hold the same delivery at once.

const (
	alertCols    = `a.seq, a.id, a.kind, a.cond_key, a.team, a.task_id, a.payload, a.created_at, a.suppressed`
	deliveryCols = `d.alert_seq, d.endpoint, d.state, d.attempts, d.next_attempt_at, d.last_attempt_at, d.done_at,
		d.last_error, d.lease_owner, d.lease_expires_at`
)

func scanAlert(row pgx.Row) (store.Alert, error) {
	var a store.Alert
	var created int64
	if err := row.Scan(&a.Seq, &a.ID, &a.Kind, &a.Key, &a.Team, &a.TaskID, &a.Payload, &created, &a.Suppressed); err != nil {
		return a, err
	}
	a.Payload = fsm.Bytes(a.Payload)
	a.CreatedAt = time.Unix(0, created).UTC()
	return a, nil
}

func scanDelivery(row pgx.Row) (int64, store.AlertDelivery, error) {
	var d store.AlertDelivery
	var seq, next int64
	var last, done, lease *int64
	if err := row.Scan(&seq, &d.Endpoint, &d.State, &d.Attempts, &next, &last, &done, &d.LastError, &d.LeaseOwner, &lease); err != nil {
		return 0, d, err
	}
	d.NextAttemptAt = time.Unix(0, next).UTC()
	d.LastAttemptAt, d.DoneAt, d.LeaseExpiresAt = fromNanos(last), fromNanos(done), fromNanos(lease)
	return seq, d, nil
}

// enqueueAlerts inserts reqs inside tx (see store.AlertRequest).
func (e *Engine) enqueueAlerts(ctx context.Context, tx pgx.Tx, reqs []store.AlertRequest) error {
	if err := fsm.CheckAlertRequests(reqs); err != nil {
		return err
	}
	now := fsm.Time(time.Now())
	var names []string
	for _, r := range reqs {
		names = append(names, r.Endpoints...)
	}
	slices.Sort(names) // one lock order: no deadlock between upserts
	for _, n := range slices.Compact(names) {
		if _, err := tx.Exec(ctx, `INSERT INTO alert_endpoints (name, registered_at, last_seen_at) VALUES ($1, $2, $2)
			ON CONFLICT (name) DO UPDATE SET last_seen_at = GREATEST(alert_endpoints.last_seen_at, excluded.last_seen_at)`,
			n, now.UnixNano()); err != nil {
			return err
		}
	}
	rows, err := tx.Query(ctx, `SELECT name FROM alert_endpoints ORDER BY name`)
	if err != nil {
		return err
	}
	endpoints, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, r := range reqs {
		res, err := e.enqueueAlert(ctx, tx, r, endpoints, now)
		if err != nil {
			return err
		}
		if r.Result != nil {
			*r.Result = res
		}
	}
	return nil
}

func (e *Engine) enqueueAlert(ctx context.Context, tx pgx.Tx, r store.AlertRequest, endpoints []string, now time.Time) (store.AlertResult, error) {
	a := fsm.NewAlert(r, now)
	// One decision at a time per condition, across every worker.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, e.lockKey("alert-condition", a.Key)); err != nil {
		return store.AlertResult{}, err
	}
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM alerts WHERE id = $1)`, a.ID).Scan(&exists); err != nil {
		return store.AlertResult{}, err
	}
	if exists {
		return store.AlertResult{ID: a.ID, Duplicate: true}, nil
	}
	var c *fsm.AlertCondition
	var sent, seen int64
	var held int
	err := tx.QueryRow(ctx, `SELECT last_sent_at, last_seen_at, suppressed FROM alert_conditions WHERE cond_key = $1`, a.Key).
		Scan(&sent, &seen, &held)
	switch {
	case err == nil:
		c = &fsm.AlertCondition{Key: a.Key, LastSentAt: time.Unix(0, sent).UTC(), LastSeenAt: time.Unix(0, seen).UTC(), Suppressed: held}
	case !errors.Is(err, pgx.ErrNoRows):
		return store.AlertResult{}, err
	}
	var res store.AlertResult
	cond := fsm.Admit(c, &a, r.Window, &res)
	if c != nil || r.Window > 0 {
		if _, err := tx.Exec(ctx, `INSERT INTO alert_conditions (cond_key, last_sent_at, last_seen_at, suppressed) VALUES ($1, $2, $3, $4)
			ON CONFLICT (cond_key) DO UPDATE SET last_sent_at = excluded.last_sent_at, last_seen_at = excluded.last_seen_at,
			suppressed = excluded.suppressed`, cond.Key, cond.LastSentAt.UnixNano(), cond.LastSeenAt.UnixNano(), cond.Suppressed); err != nil {
			return store.AlertResult{}, err
		}
	}
	if res.Suppressed {
		return res, nil
	}
	err = tx.QueryRow(ctx, `INSERT INTO alerts (id, kind, cond_key, team, task_id, payload, created_at, suppressed)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING RETURNING seq`,
		a.ID, a.Kind, a.Key, a.Team, a.TaskID, blob(a.Payload), a.CreatedAt.UnixNano(), a.Suppressed).Scan(&a.Seq)
	if errors.Is(err, pgx.ErrNoRows) { // inserted by another transaction meanwhile
		return store.AlertResult{ID: a.ID, Duplicate: true}, nil
	} else if err != nil {
		return store.AlertResult{}, err
	}
	for _, d := range fsm.NewDeliveries(endpoints, now) {
		if _, err := tx.Exec(ctx, `INSERT INTO alert_deliveries (alert_seq, endpoint, state, next_attempt_at) VALUES ($1, $2, $3, $4)`,
			a.Seq, d.Endpoint, d.State, d.NextAttemptAt.UnixNano()); err != nil {
			return store.AlertResult{}, err
		}
	}
	return res, nil
}

// EnqueueAlerts enqueues the alerts ctx carries and reqs, in one
// transaction, all or none.
func (e *Engine) EnqueueAlerts(ctx context.Context, reqs ...store.AlertRequest) ([]store.AlertResult, error) {
	if err := fsm.CheckAlertRequests(reqs); err != nil {
		return nil, err
	}
	out := make([]store.AlertResult, len(reqs))
	with := make([]store.AlertRequest, len(reqs))
	for i, r := range reqs {
		r.Result = &out[i]
		with[i] = r
	}
	if err := e.write(store.WithAlerts(ctx, with...), func(pgx.Tx) error { return nil }); err != nil {
		return nil, err
	}
	for i, r := range reqs {
		if r.Result != nil {
			*r.Result = out[i]
		}
	}
	return out, nil
}

// RegisterAlertEndpoints adds endpoints and sets their last-seen time.
func (e *Engine) RegisterAlertEndpoints(ctx context.Context, names []string, at time.Time) error {
	if err := fsm.CheckEndpoints(names); err != nil {
		return err
	}
	if at.IsZero() {
		at = time.Now()
	}
	sorted := slices.Compact(slices.Sorted(slices.Values(names)))
	return e.write(ctx, func(tx pgx.Tx) error {
		for _, n := range sorted {
			if _, err := tx.Exec(ctx, `INSERT INTO alert_endpoints (name, registered_at, last_seen_at) VALUES ($1, $2, $2)
				ON CONFLICT (name) DO UPDATE SET last_seen_at = excluded.last_seen_at`, n, at.UnixNano()); err != nil {
				return err
			}
		}
		return nil
	})
}

// ClaimAlerts leases up to r.Max due deliveries to r.Endpoint, skipping
// those another transaction holds.
func (e *Engine) ClaimAlerts(ctx context.Context, r store.AlertClaim) ([]store.Alert, error) {
	if err := fsm.CheckAlertClaim(r); err != nil {
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
		rows, err := e.pool.Query(ctx, `SELECT DISTINCT lease_owner FROM alert_deliveries
			WHERE endpoint = $1 AND state = 'pending' AND lease_owner <> '' AND lease_expires_at > $2`, r.Endpoint, now)
		if err != nil {
			return nil, e.classify(err)
		}
		owners, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, e.classify(err)
		}
		for _, o := range owners {
			if r.OwnerDead(o) {
				dead = append(dead, o)
			}
		}
	}
	// Most polls find nothing: look before opening a write transaction.
	var found bool
	if err := e.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM alert_deliveries
		WHERE endpoint = $1 AND state = 'pending' AND next_attempt_at <= $2
		AND (lease_owner = '' OR lease_expires_at <= $2 OR lease_owner = ANY($3)))`, r.Endpoint, now, dead).Scan(&found); err != nil {
		return nil, e.classify(err)
	}
	if !found {
		return nil, nil
	}
	var out []store.Alert
	err := e.writeIf(ctx, func(tx pgx.Tx) (bool, error) {
		out = nil
		rows, err := tx.Query(ctx, `UPDATE alert_deliveries d SET lease_owner = $1, lease_expires_at = $2
			FROM (SELECT alert_seq FROM alert_deliveries
				WHERE endpoint = $3 AND state = 'pending' AND next_attempt_at <= $4
				AND (lease_owner = '' OR lease_expires_at <= $4 OR lease_owner = ANY($5))
				ORDER BY next_attempt_at, alert_seq LIMIT $6 FOR UPDATE SKIP LOCKED) c
			WHERE d.endpoint = $3 AND d.alert_seq = c.alert_seq
			RETURNING `+deliveryCols,
			r.Owner, r.LeaseUntil.UnixNano(), r.Endpoint, now, dead, r.Max)
		if err != nil {
			return false, err
		}
		claimed := map[int64]store.AlertDelivery{}
		var seqs []int64
		for rows.Next() {
			seq, d, err := scanDelivery(rows)
			if err != nil {
				rows.Close()
				return false, err
			}
			claimed[seq] = d
			seqs = append(seqs, seq)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return false, err
		}
		if len(seqs) == 0 {
			return false, nil
		}
		as, err := loadAlerts(ctx, tx, `WHERE a.seq = ANY($1)`, seqs)
		if err != nil {
			return false, err
		}
		for i := range as {
			as[i].Deliveries = []store.AlertDelivery{claimed[as[i].Seq]}
		}
		slices.SortStableFunc(as, func(x, y store.Alert) int {
			if c := x.Deliveries[0].NextAttemptAt.Compare(y.Deliveries[0].NextAttemptAt); c != 0 {
				return c
			}
			return int(x.Seq - y.Seq)
		})
		out = as
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// loadAlerts returns the alerts selected by where (on alerts a), in Seq
// order, without their deliveries.
func loadAlerts(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, where string, args ...any) ([]store.Alert, error) {
	rows, err := q.Query(ctx, `SELECT `+alertCols+` FROM alerts a `+where+` ORDER BY a.seq`, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Alert, error) { return scanAlert(row) })
}

// SettleAlert ends the attempt on a delivery r.Owner holds.
func (e *Engine) SettleAlert(ctx context.Context, r store.AlertSettle) error {
	if err := fsm.CheckAlertSettle(r); err != nil {
		return err
	}
	return e.write(ctx, func(tx pgx.Tx) error {
		seq, d, err := scanDelivery(tx.QueryRow(ctx, `SELECT `+deliveryCols+` FROM alert_deliveries d
			JOIN alerts a ON a.seq = d.alert_seq WHERE a.id = $1 AND d.endpoint = $2 FOR UPDATE OF d`, r.AlertID, r.Endpoint))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: alert %s has no delivery to endpoint %s", store.ErrNotFound, r.AlertID, r.Endpoint)
		} else if err != nil {
			return err
		}
		if err := fsm.Settle(&d, r); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE alert_deliveries SET state = $1, attempts = $2, next_attempt_at = $3, last_attempt_at = $4,
			done_at = $5, last_error = $6, lease_owner = '', lease_expires_at = NULL WHERE alert_seq = $7 AND endpoint = $8`,
			d.State, d.Attempts, d.NextAttemptAt.UnixNano(), nanos(d.LastAttemptAt), nanos(d.DoneAt), d.LastError, seq, r.Endpoint)
		return err
	})
}

// ListAlerts returns the alerts matching f in Seq order.
func (e *Engine) ListAlerts(ctx context.Context, f store.AlertFilter) ([]store.Alert, error) {
	if err := fsm.CheckAlertFilter(f); err != nil {
		return nil, err
	}
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	where := []string{"a.seq > $1"}
	args := []any{f.AfterSeq}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "$?", fmt.Sprintf("$%d", len(args))))
	}
	if f.Kind != "" {
		add("a.kind = $?", f.Kind)
	}
	if f.TaskID != "" {
		add("a.task_id = $?", f.TaskID)
	}
	if f.Teams != nil {
		add("a.team <> '' AND a.team = ANY($?)", f.Teams)
	}
	if f.Undelivered {
		where = append(where, "EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.alert_seq = a.seq AND d.state <> 'delivered')")
	}
	q := "WHERE " + strings.Join(where, " AND ")
	if f.Limit > 0 {
		q = fmt.Sprintf(`WHERE a.seq IN (SELECT a.seq FROM alerts a %s ORDER BY a.seq LIMIT %d)`, q, f.Limit)
	}
	var out []store.Alert
	// One snapshot for the alerts and their deliveries.
	err := pgx.BeginTxFunc(ctx, e.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		as, err := loadAlerts(ctx, tx, q, args...)
		if err != nil || len(as) == 0 {
			return err
		}
		idx := make(map[int64]int, len(as))
		seqs := make([]int64, len(as))
		for i, a := range as {
			idx[a.Seq], seqs[i] = i, a.Seq
		}
		rows, err := tx.Query(ctx, `SELECT `+deliveryCols+` FROM alert_deliveries d
			WHERE d.alert_seq = ANY($1) ORDER BY d.alert_seq, d.endpoint`, seqs)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			seq, d, err := scanDelivery(rows)
			if err != nil {
				return err
			}
			as[idx[seq]].Deliveries = append(as[idx[seq]].Deliveries, d)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		out = as
		return nil
	})
	if err != nil {
		return nil, e.classify(err)
	}
	return out, nil
}

// AlertBacklog returns each endpoint's pending deliveries as of now.
func (e *Engine) AlertBacklog(ctx context.Context, now time.Time) ([]store.AlertBacklog, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	rows, err := e.pool.Query(ctx, `SELECT n.endpoint, count(d.alert_seq), count(d.alert_seq) FILTER (WHERE d.next_attempt_at <= $1),
			min(a.created_at), min(d.next_attempt_at)
		FROM (SELECT name AS endpoint FROM alert_endpoints
			UNION SELECT DISTINCT endpoint FROM alert_deliveries WHERE state = 'pending') n
		LEFT JOIN alert_deliveries d ON d.endpoint = n.endpoint AND d.state = 'pending'
		LEFT JOIN alerts a ON a.seq = d.alert_seq
		GROUP BY n.endpoint ORDER BY n.endpoint`, now.UnixNano())
	if err != nil {
		return nil, e.classify(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.AlertBacklog, error) {
		var b store.AlertBacklog
		var oldest, next *int64
		err := row.Scan(&b.Endpoint, &b.Pending, &b.Due, &oldest, &next)
		b.Oldest, b.NextAttemptAt = fromNanos(oldest), fromNanos(next)
		return b, err
	})
	return out, e.classify(err)
}

// ExpireAlerts gives up on old alerts, gone endpoints and old conditions.
func (e *Engine) ExpireAlerts(ctx context.Context, r store.AlertExpiry) (int, error) {
	r, err := fsm.CheckAlertExpiry(r, time.Now())
	if err != nil {
		return 0, err
	}
	var n int64
	err = e.write(ctx, func(tx pgx.Tx) error {
		n = 0
		expire := func(why, where string, arg any) error {
			tag, err := tx.Exec(ctx, `UPDATE alert_deliveries SET state = 'expired', done_at = $1, lease_owner = '',
				lease_expires_at = NULL, last_error = CASE WHEN last_error = '' THEN $2 ELSE $2 || '; last error: ' || last_error END
				WHERE state = 'pending' AND `+where, r.At.UnixNano(), why, arg)
			n += tag.RowsAffected()
			return err
		}
		if !r.EndpointSeenBefore.IsZero() {
			rows, err := tx.Query(ctx, `DELETE FROM alert_endpoints WHERE last_seen_at < $1 RETURNING name`, r.EndpointSeenBefore.UnixNano())
			if err != nil {
				return err
			}
			gone, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			if len(gone) > 0 {
				if err := expire(fsm.ExpiredEndpoint, `endpoint = ANY($3)`, gone); err != nil {
					return err
				}
			}
		}
		if !r.CreatedBefore.IsZero() {
			if err := expire(fsm.ExpiredAge, `alert_seq IN (SELECT seq FROM alerts WHERE created_at < $3)`, r.CreatedBefore.UnixNano()); err != nil {
				return err
			}
		}
		if !r.ConditionsSeenBefore.IsZero() {
			if _, err := tx.Exec(ctx, `DELETE FROM alert_conditions WHERE last_seen_at < $1`, r.ConditionsSeenBefore.UnixNano()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return int(n), nil
}

// DeleteAlerts deletes the alerts created before `before` with no pending
// delivery.
func (e *Engine) DeleteAlerts(ctx context.Context, before time.Time) (int, error) {
	if err := fsm.CheckDeleteAlerts(before); err != nil {
		return 0, err
	}
	var n int64
	err := e.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM alerts a WHERE a.created_at < $1 AND NOT EXISTS
			(SELECT 1 FROM alert_deliveries d WHERE d.alert_seq = a.seq AND d.state = 'pending')`, before.UnixNano())
		n = tag.RowsAffected()
		return err
	})
	return int(n), err
}
