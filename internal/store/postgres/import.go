package postgres

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
)

var _ store.Importer = (*Engine)(nil)

// importChunk bounds the audit records of one INSERT.
const importChunk = 5000

// Import implements store.Importer: one transaction, which first locks the
// audit head (an import and any audit append are serialized) and checks
// that the store is empty.
func (e *Engine) Import(ctx context.Context, s store.Snapshot) error {
	return e.tx(ctx, nil, func(tx pgx.Tx) (bool, error) {
		var head int64
		if err := tx.QueryRow(ctx, `SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE`).Scan(&head); err != nil {
			return false, err
		}
		var holds []string
		for _, c := range []struct{ what, sql string }{
			{"tasks", `SELECT count(*) FROM tasks`},
			{"machines", `SELECT count(*) FROM machines`},
			{"team members", `SELECT count(*) FROM members`},
			{"store roles", `SELECT count(*) FROM store_roles`},
			{"teams other than default", `SELECT count(*) FROM teams WHERE id <> 'default'`},
			{"SSH keys", `SELECT count(*) FROM ssh_keys`},
			{"host keys or vault files", `SELECT count(*) FROM blobs`},
			{"schedules", `SELECT count(*) FROM schedules`},
			{"gates", `SELECT count(*) FROM gates`},
			{"maintenance windows", `SELECT count(*) FROM windows`},
			{"audit records", `SELECT seq FROM audit_head WHERE id = 1`},
		} {
			var n int64
			if err := tx.QueryRow(ctx, c.sql).Scan(&n); err != nil {
				return false, err
			}
			if n > 0 {
				holds = append(holds, fmt.Sprintf("%d %s", n, c.what))
			}
		}
		if len(holds) > 0 {
			return false, fmt.Errorf("%w: the target store is not empty (it holds %s): import into a new database or schema", store.ErrExists, strings.Join(holds, ", "))
		}
		for _, t := range s.Teams {
			if _, err := tx.Exec(ctx, `INSERT INTO teams (id, name, description, created_at, deleted_at) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (id) DO UPDATE SET name = excluded.name, description = excluded.description,
					created_at = excluded.created_at, deleted_at = excluded.deleted_at`,
				t.ID, t.Name, t.Description, nanos(t.CreatedAt), nanos(t.DeletedAt)); err != nil {
				return false, fmt.Errorf("team %s (%s): %w", t.Name, t.ID, err)
			}
		}
		for _, m := range s.Members {
			if _, err := tx.Exec(ctx, `INSERT INTO members (team_id, user_name, role, added_at) VALUES ($1, $2, $3, $4)`,
				m.TeamID, m.User, m.Role, nanos(m.AddedAt)); err != nil {
				return false, fmt.Errorf("member %s of team %s: %w", m.User, m.Team, err)
			}
		}
		for _, r := range s.StoreRoles {
			if _, err := tx.Exec(ctx, `INSERT INTO store_roles (user_name, role, added_at) VALUES ($1, $2, $3)`,
				r.User, r.Role, nanos(r.AddedAt)); err != nil {
				return false, fmt.Errorf("store role %s of %s: %w", r.Role, r.User, err)
			}
		}
		for _, m := range s.Machines {
			if _, err := tx.Exec(ctx, `INSERT INTO machines (id, name, team_id, host, port, user_name, config, created_at, updated_at, health, health_at, deleted_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
				m.ID, m.Name, m.TeamID, m.Host, m.Port, m.User, blob(m.Config), nanos(m.CreatedAt), nanos(m.UpdatedAt), blob(m.Health), nanos(m.HealthAt), nanos(m.DeletedAt)); err != nil {
				return false, fmt.Errorf("machine %s (%s): %w", m.Name, m.ID, err)
			}
		}
		for i := range s.Tasks {
			args, err := taskArgs(&s.Tasks[i])
			if err != nil {
				return false, fmt.Errorf("task %s: %w", s.Tasks[i].ID, err)
			}
			if _, err := tx.Exec(ctx, sqlInsertTask, args...); err != nil {
				return false, fmt.Errorf("task %s: %w", s.Tasks[i].ID, err)
			}
		}
		for _, k := range s.Keys {
			if _, err := tx.Exec(ctx, `INSERT INTO ssh_keys (id, team_id, fingerprint, data, revision, created_at, updated_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7)`, k.ID, k.TeamID, k.Fingerprint, blob(k.Data), k.Revision, nanos(k.CreatedAt), nanos(k.UpdatedAt)); err != nil {
				return false, fmt.Errorf("SSH key %s: %w", k.ID, err)
			}
		}
		for _, b := range s.Blobs {
			data := b.Data
			if data == nil {
				data = []byte{}
			}
			if _, err := tx.Exec(ctx, `INSERT INTO blobs (kind, key, data, revision, updated_at) VALUES ($1, $2, $3, $4, $5)`,
				b.Kind, b.Key, data, b.Revision, nanos(b.UpdatedAt)); err != nil {
				return false, fmt.Errorf("%s blob %s: %w", b.Kind, b.Key, err)
			}
		}
		if err := importSchedules(ctx, tx, s); err != nil { // schedule.go
			return false, err
		}
		// The trail as it is: its base, records and head.
		h := s.AuditBase
		for i, r := range s.Audit {
			want := h.Seq + 1
			if r.Seq != want {
				return false, fmt.Errorf("%w: audit record %d follows %d in the snapshot (want %d): the source trail has a gap", store.ErrInvalidArgument, r.Seq, h.Seq, want)
			}
			h = audit.HeadOf(r)
			if (i+1)%importChunk == 0 || i == len(s.Audit)-1 {
				if err := insertAudit(ctx, tx, s.Audit[i-i%importChunk:i+1]); err != nil {
					return false, err
				}
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE audit_base SET seq = $1, hash = $2 WHERE id = 1`, s.AuditBase.Seq, s.AuditBase.Hash); err != nil {
			return false, err
		}
		if _, err := tx.Exec(ctx, `UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1`, h.Seq, h.Hash); err != nil {
			return false, err
		}
		return true, nil
	})
}
