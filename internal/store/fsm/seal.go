package fsm

import (
	"sync/atomic"

	"github.com/rediacc/rediacc/internal/audit"
)

// AuditSeal is how every engine seals its audit records: it holds the
// keyring (store.Access.SetAuditKeyring) in memory only, never in the store,
// and ChainAudit chains a record with the keyring's current key. Engines
// embed it, which gives them SetAuditKeyring, and call ChainAudit where they
// used to call audit.Chain: inside the transaction that appends the record,
// after reading the head. The zero AuditSeal seals version 1 records (plain
// SHA-256), as engines did before keying. Safe for concurrent use.
type AuditSeal struct {
	ring atomic.Pointer[audit.Keyring]
}

// SetAuditKeyring sets the keyring that seals the records appended from now
// on (nil: version 1 records).
func (s *AuditSeal) SetAuditKeyring(k *audit.Keyring) { s.ring.Store(k) }

// AuditKeyring returns the keyring set last (nil when none).
func (s *AuditSeal) AuditKeyring() *audit.Keyring { return s.ring.Load() }

// ChainAudit returns r chained after prev and sealed with the current key
// (audit.Keyring.Chain).
func (s *AuditSeal) ChainAudit(prev audit.Head, r audit.Record) audit.Record {
	return s.ring.Load().Chain(prev, r)
}
