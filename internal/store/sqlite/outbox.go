package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

// The alert outbox (schema migration 7). Alerts are enqueued by e.tx in the
// write transaction of the change whose context carries them
// (store.WithAlerts), or by EnqueueAlerts in one of their own; deliveries
// are claimed and settled in BEGIN IMMEDIATE transactions like tasks, so
// workers in several processes never hold the same delivery at once.

var _ store.Outbox = (*Engine)(nil)

const (
	alertCols    = `a.seq, a.id, a.kind, a.cond_key, a.team, a.task_id, a.payload, a.created_at, a.suppressed`
	deliveryCols = `d.alert_seq, d.endpoint, d.state, d.attempts, d.next_attempt_at, d.last_attempt_at, d.done_at,
		d.last_error, d.lease_owner, d.lease_expires_at`
)

func scanAlert(s scanner) (store.Alert, error) {
	var a store.Alert
	var created int64
	var payload []byte
	if err := s.Scan(&a.Seq, &a.ID, &a.Kind, &a.Key, &a.Team, &a.TaskID, &payload, &created, &a.Suppressed); err != nil {
		return a, err
	}
	a.Payload = fsm.Bytes(payload)
	a.CreatedAt = time.Unix(0, created).UTC()
	return a, nil
}

func scanDelivery(s scanner) (int64, store.AlertDelivery, error) {
	var d store.AlertDelivery
	var seq, next int64
	var last, done, lease sql.NullInt64
	if err := s.Scan(&seq, &d.Endpoint, &d.State, &d.Attempts, &next, &last, &done, &d.LastError, &d.LeaseOwner, &lease); err != nil {
		return 0, d, err
	}
	d.NextAttemptAt = time.Unix(0, next).UTC()
	d.LastAttemptAt, d.DoneAt, d.LeaseExpiresAt = fromNanos(last), fromNanos(done), fromNanos(lease)
	return seq, d, nil
}

// enqueueAlerts inserts reqs inside tx (see store.AlertRequest).
func (e *Engine) enqueueAlerts(ctx context.Context, tx *sql.Tx, reqs []store.AlertRequest) error {
	if err := fsm.CheckAlertRequests(reqs); err != nil {
		return err
	}
	now := fsm.Time(time.Now())
	for _, r := range reqs {
		for _, n := range r.Endpoints {
			if _, err := tx.ExecContext(ctx, `INSERT INTO alert_endpoints (name, registered_at, last_seen_at) VALUES (?1, ?2, ?2)
				ON CONFLICT (name) DO UPDATE SET last_seen_at = max(last_seen_at, excluded.last_seen_at)`, n, now.UnixNano()); err != nil {
				return err
			}
		}
	}
	var endpoints []string
	if err := queryStrings(ctx, tx, &endpoints, `SELECT name FROM alert_endpoints ORDER BY name`); err != nil {
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

func (e *Engine) enqueueAlert(ctx context.Context, tx *sql.Tx, r store.AlertRequest, endpoints []string, now time.Time) (store.AlertResult, error) {
	a := fsm.NewAlert(r, now)
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM alerts WHERE id = ?`, a.ID).Scan(&n); err != nil {
		return store.AlertResult{}, err
	}
	if n > 0 {
		return store.AlertResult{ID: a.ID, Duplicate: true}, nil
	}
	var c *fsm.AlertCondition
	var sent, seen int64
	var held int
	err := tx.QueryRowContext(ctx, `SELECT last_sent_at, last_seen_at, suppressed FROM alert_conditions WHERE cond_key = ?`, a.Key).
		Scan(&sent, &seen, &held)
	switch {
	case err == nil:
		c = &fsm.AlertCondition{Key: a.Key, LastSentAt: time.Unix(0, sent).UTC(), LastSeenAt: time.Unix(0, seen).UTC(), Suppressed: held}
	case !errors.Is(err, sql.ErrNoRows):
		return store.AlertResult{}, err
	}
	var res store.AlertResult
	cond := fsm.Admit(c, &a, r.Window, &res)
	if c != nil || r.Window > 0 {
		if _, err := tx.ExecContext(ctx, `INSERT INTO alert_conditions (cond_key, last_sent_at, last_seen_at, suppressed) VALUES (?, ?, ?, ?)
			ON CONFLICT (cond_key) DO UPDATE SET last_sent_at = excluded.last_sent_at, last_seen_at = excluded.last_seen_at,
			suppressed = excluded.suppressed`, cond.Key, cond.LastSentAt.UnixNano(), cond.LastSeenAt.UnixNano(), cond.Suppressed); err != nil {
			return store.AlertResult{}, err
		}
	}
	if res.Suppressed {
		return res, nil
	}
	if err := tx.QueryRowContext(ctx, `INSERT INTO alerts (id, kind, cond_key, team, task_id, payload, created_at, suppressed)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq`,
		a.ID, a.Kind, a.Key, a.Team, a.TaskID, blob(a.Payload), a.CreatedAt.UnixNano(), a.Suppressed).Scan(&a.Seq); err != nil {
		return store.AlertResult{}, err
	}
	for _, d := range fsm.NewDeliveries(endpoints, now) {
		if _, err := tx.ExecContext(ctx, `INSERT INTO alert_deliveries (alert_seq, endpoint, state, next_attempt_at) VALUES (?, ?, ?, ?)`,
			a.Seq, d.Endpoint, d.State, d.NextAttemptAt.UnixNano()); err != nil {
			return store.AlertResult{}, err
		}
	}
	return res, nil
}

// queryStrings appends the first column of q's rows to out.
func queryStrings(ctx context.Context, q querier, out *[]string, query string, args ...any) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return err
		}
		*out = append(*out, s)
	}
	return rows.Err()
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
	err := e.write(store.WithAlerts(ctx, with...), func(context.Context, *sql.Tx) error { return nil })
	if err != nil {
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
	return e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for _, n := range names {
			if _, err := tx.ExecContext(ctx, `INSERT INTO alert_endpoints (name, registered_at, last_seen_at) VALUES (?1, ?2, ?2)
				ON CONFLICT (name) DO UPDATE SET last_seen_at = excluded.last_seen_at`, n, at.UnixNano()); err != nil {
				return err
			}
		}
		return nil
	})
}

// ClaimAlerts leases up to r.Max due deliveries to r.Endpoint.
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
	var dead []string
	if r.OwnerDead != nil {
		var owners []string
		if err := queryStrings(ctx, e.r, &owners, `SELECT DISTINCT lease_owner FROM alert_deliveries
			WHERE endpoint = ? AND state = 'pending' AND lease_owner <> '' AND lease_expires_at > ?`, r.Endpoint, now); err != nil {
			return nil, e.classify(err)
		}
		for _, o := range owners {
			if r.OwnerDead(o) {
				dead = append(dead, o)
			}
		}
	}
	// Most polls find nothing: ask the read pool before taking the write lock.
	var found int
	err := e.r.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT 1 FROM alert_deliveries INDEXED BY alert_deliveries_due
		WHERE endpoint = ?1 AND state = 'pending' AND next_attempt_at <= ?2
		AND (lease_owner = '' OR lease_expires_at <= ?2 OR lease_owner IN (SELECT value FROM json_each(?3))) LIMIT 1)`,
		r.Endpoint, now, jsonList(dead)).Scan(&found)
	if err != nil {
		return nil, e.classify(err)
	}
	if found == 0 {
		return nil, nil
	}
	var out []store.Alert
	err = e.writeIf(ctx, func(ctx context.Context, tx *sql.Tx) (bool, error) {
		out = nil
		rows, err := tx.QueryContext(ctx, `UPDATE alert_deliveries SET lease_owner = ?1, lease_expires_at = ?2
			WHERE endpoint = ?3 AND alert_seq IN (
				SELECT alert_seq FROM alert_deliveries INDEXED BY alert_deliveries_due
				WHERE endpoint = ?3 AND state = 'pending' AND next_attempt_at <= ?4
				AND (lease_owner = '' OR lease_expires_at <= ?4 OR lease_owner IN (SELECT value FROM json_each(?5)))
				ORDER BY next_attempt_at, alert_seq LIMIT ?6)
			RETURNING `+strings.ReplaceAll(deliveryCols, "d.", ""),
			r.Owner, r.LeaseUntil.UnixNano(), r.Endpoint, now, jsonList(dead), r.Max)
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
		if err := rows.Close(); err != nil {
			return false, err
		}
		if len(seqs) == 0 {
			return false, nil
		}
		as, err := loadAlerts(ctx, tx, `WHERE a.seq IN (SELECT value FROM json_each(?))`, jsonInts(seqs))
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

func jsonInts(ns []int64) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, n := range ns {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprint(&b, n)
	}
	b.WriteByte(']')
	return b.String()
}

// loadAlerts returns the alerts selected by where (on alerts a), in Seq
// order, without their deliveries.
func loadAlerts(ctx context.Context, q querier, where string, args ...any) ([]store.Alert, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+alertCols+` FROM alerts a `+where+` ORDER BY a.seq`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Alert
	for rows.Next() {
		a, err := scanAlert(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// SettleAlert ends the attempt on a delivery r.Owner holds.
func (e *Engine) SettleAlert(ctx context.Context, r store.AlertSettle) error {
	if err := fsm.CheckAlertSettle(r); err != nil {
		return err
	}
	return e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		seq, d, err := scanDelivery(tx.QueryRowContext(ctx, `SELECT `+deliveryCols+` FROM alert_deliveries d
			JOIN alerts a ON a.seq = d.alert_seq WHERE a.id = ? AND d.endpoint = ?`, r.AlertID, r.Endpoint))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: alert %s has no delivery to endpoint %s", store.ErrNotFound, r.AlertID, r.Endpoint)
		} else if err != nil {
			return err
		}
		if err := fsm.Settle(&d, r); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE alert_deliveries SET state = ?, attempts = ?, next_attempt_at = ?, last_attempt_at = ?,
			done_at = ?, last_error = ?, lease_owner = '', lease_expires_at = NULL WHERE alert_seq = ? AND endpoint = ?`,
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
	where := []string{"a.seq > ?"}
	args := []any{f.AfterSeq}
	if f.Kind != "" {
		where, args = append(where, "a.kind = ?"), append(args, f.Kind)
	}
	if f.TaskID != "" {
		where, args = append(where, "a.task_id = ?"), append(args, f.TaskID)
	}
	if f.Teams != nil {
		where, args = append(where, "a.team <> '' AND a.team IN (SELECT value FROM json_each(?))"), append(args, jsonList(f.Teams))
	}
	if f.Undelivered {
		where = append(where, "EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.alert_seq = a.seq AND d.state <> 'delivered')")
	}
	q := "WHERE " + strings.Join(where, " AND ")
	if f.Limit > 0 {
		q += fmt.Sprintf(" ORDER BY a.seq LIMIT %d", f.Limit)
		q = `WHERE a.seq IN (SELECT a.seq FROM alerts a ` + q + `)`
	}
	tx, err := e.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true}) // one snapshot for alerts and deliveries
	if err != nil {
		return nil, e.classify(err)
	}
	defer func() { _ = tx.Rollback() }()
	as, err := loadAlerts(ctx, tx, q, args...)
	if err != nil || len(as) == 0 {
		return nil, e.classify(err)
	}
	idx := make(map[int64]int, len(as))
	seqs := make([]int64, len(as))
	for i, a := range as {
		idx[a.Seq], seqs[i] = i, a.Seq
	}
	rows, err := tx.QueryContext(ctx, `SELECT `+deliveryCols+` FROM alert_deliveries d
		WHERE d.alert_seq IN (SELECT value FROM json_each(?)) ORDER BY d.alert_seq, d.endpoint`, jsonInts(seqs))
	if err != nil {
		return nil, e.classify(err)
	}
	defer rows.Close()
	for rows.Next() {
		seq, d, err := scanDelivery(rows)
		if err != nil {
			return nil, e.classify(err)
		}
		as[idx[seq]].Deliveries = append(as[idx[seq]].Deliveries, d)
	}
	if err := rows.Err(); err != nil {
		return nil, e.classify(err)
	}
	return as, nil
}

// AlertBacklog returns each endpoint's pending deliveries as of now.
func (e *Engine) AlertBacklog(ctx context.Context, now time.Time) ([]store.AlertBacklog, error) {
	if err := e.check(ctx); err != nil {
		return nil, err
	}
	rows, err := e.r.QueryContext(ctx, `SELECT n.endpoint, count(d.alert_seq), coalesce(sum(d.next_attempt_at <= ?), 0),
			min(a.created_at), min(d.next_attempt_at)
		FROM (SELECT name AS endpoint FROM alert_endpoints
			UNION SELECT DISTINCT endpoint FROM alert_deliveries WHERE state = 'pending') n
		LEFT JOIN alert_deliveries d ON d.endpoint = n.endpoint AND d.state = 'pending'
		LEFT JOIN alerts a ON a.seq = d.alert_seq
		GROUP BY n.endpoint ORDER BY n.endpoint`, now.UnixNano())
	if err != nil {
		return nil, e.classify(err)
	}
	defer rows.Close()
	var out []store.AlertBacklog
	for rows.Next() {
		var b store.AlertBacklog
		var oldest, next sql.NullInt64
		if err := rows.Scan(&b.Endpoint, &b.Pending, &b.Due, &oldest, &next); err != nil {
			return nil, e.classify(err)
		}
		b.Oldest, b.NextAttemptAt = fromNanos(oldest), fromNanos(next)
		out = append(out, b)
	}
	return out, e.classify(rows.Err())
}

// ExpireAlerts gives up on old alerts, gone endpoints and old conditions.
func (e *Engine) ExpireAlerts(ctx context.Context, r store.AlertExpiry) (int, error) {
	r, err := fsm.CheckAlertExpiry(r, time.Now())
	if err != nil {
		return 0, err
	}
	var n int64
	err = e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		n = 0
		expire := func(why, where string, args ...any) error {
			res, err := tx.ExecContext(ctx, `UPDATE alert_deliveries SET state = 'expired', done_at = ?1, lease_owner = '',
				lease_expires_at = NULL, last_error = CASE WHEN last_error = '' THEN ?2 ELSE ?2 || '; last error: ' || last_error END
				WHERE state = 'pending' AND `+where, append([]any{r.At.UnixNano(), why}, args...)...)
			if err != nil {
				return err
			}
			k, err := res.RowsAffected()
			n += k
			return err
		}
		if !r.EndpointSeenBefore.IsZero() {
			var gone []string
			if err := queryStrings(ctx, tx, &gone, `DELETE FROM alert_endpoints WHERE last_seen_at < ? RETURNING name`,
				r.EndpointSeenBefore.UnixNano()); err != nil {
				return err
			}
			if len(gone) > 0 {
				if err := expire(fsm.ExpiredEndpoint, `endpoint IN (SELECT value FROM json_each(?3))`, jsonList(gone)); err != nil {
					return err
				}
			}
		}
		if !r.CreatedBefore.IsZero() {
			if err := expire(fsm.ExpiredAge, `alert_seq IN (SELECT seq FROM alerts WHERE created_at < ?3)`, r.CreatedBefore.UnixNano()); err != nil {
				return err
			}
		}
		if !r.ConditionsSeenBefore.IsZero() {
			if _, err := tx.ExecContext(ctx, `DELETE FROM alert_conditions WHERE last_seen_at < ?`, r.ConditionsSeenBefore.UnixNano()); err != nil {
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
	err := e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM alerts WHERE created_at < ? AND NOT EXISTS
			(SELECT 1 FROM alert_deliveries d WHERE d.alert_seq = alerts.seq AND d.state = 'pending')`, before.UnixNano())
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return int(n), err
}
