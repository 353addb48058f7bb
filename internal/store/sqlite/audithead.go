package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
)

// txHead is the audit trail's head as the running write transaction sees
// it. The head is read from audit_head once, by the transaction's first
// append, kept here while the transaction's changes extend the chain, and
// written back once, just before COMMIT (writeHead), instead of being read
// and written by every change: a task's four records used to cost four
// reads and four writes of the head row. Only the leader of a write
// transaction (holding the write gate and the write connection) touches
// it; it belongs to the transaction tx and means nothing after it.
type txHead struct {
	tx    *sql.Tx
	h     audit.Head
	dirty bool // h is ahead of audit_head
}

// headTx returns the head of the trail as tx sees it.
func (e *Engine) headTx(ctx context.Context, tx *sql.Tx) (audit.Head, error) {
	if e.ah.tx == tx {
		return e.ah.h, nil
	}
	var h audit.Head
	err := stmt(ctx, tx, e.st.auditHead).QueryRowContext(ctx).Scan(&h.Seq, &h.Hash)
	if errors.Is(err, sql.ErrNoRows) {
		return audit.Head{}, fmt.Errorf("%w: the audit trail's head (table audit_head) is missing", store.ErrCorrupt)
	} else if err != nil {
		return audit.Head{}, err
	}
	e.ah = txHead{tx: tx, h: h}
	return h, nil
}

// moveHead records h as tx's head (written by writeHead).
func (e *Engine) moveHead(tx *sql.Tx, h audit.Head) {
	e.ah = txHead{tx: tx, h: h, dirty: true}
}

// writeHead writes the head tx moved to audit_head; it runs before tx
// commits.
func (e *Engine) writeHead(ctx context.Context, tx *sql.Tx) error {
	if e.ah.tx != tx || !e.ah.dirty {
		return nil
	}
	if _, err := stmt(ctx, tx, e.st.auditMove).ExecContext(ctx, e.ah.h.Seq, e.ah.h.Hash); err != nil {
		return err
	}
	e.ah.dirty = false
	return nil
}

// commit writes tx's head and commits tx.
func (e *Engine) commit(ctx context.Context, tx *sql.Tx) error {
	err := e.writeHead(ctx, tx)
	if err != nil {
		_ = tx.Rollback()
	} else {
		err = tx.Commit()
	}
	e.ah = txHead{}
	return err
}

// rollback rolls tx back and forgets its head.
func (e *Engine) rollback(tx *sql.Tx) {
	_ = tx.Rollback()
	e.ah = txHead{}
}
