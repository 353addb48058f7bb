package fsm

import (
	"bytes"
	"fmt"
	"time"

	"github.com/rediacc/rediacc/internal/store"
)

// Limits of store.Blob names.
const (
	maxBlobKind = 64
	maxBlobKey  = 255
)

// CheckBlobName returns ErrInvalidArgument unless kind and key are
// non-empty and within store.Blob's limits.
func CheckBlobName(kind, key string) error {
	if kind == "" || len(kind) > maxBlobKind || key == "" || len(key) > maxBlobKey {
		return fmt.Errorf("%w: a blob needs a kind of 1..%d bytes and a key of 1..%d bytes (kind %q, key of %d bytes)",
			store.ErrInvalidArgument, maxBlobKind, maxBlobKey, kind, len(key))
	}
	return nil
}

// PutBlob applies the put b to the stored revision cur (0: none stored):
// ErrRevision unless b names it; the result has the next revision and
// UpdatedAt now.
func PutBlob(cur int64, b store.Blob, now time.Time) (store.Blob, error) {
	if err := CheckBlobName(b.Kind, b.Key); err != nil {
		return b, err
	}
	if b.Revision != cur {
		if cur == 0 {
			return b, fmt.Errorf("%w: blob %s/%s is not stored (put names revision %d)", store.ErrRevision, b.Kind, b.Key, b.Revision)
		}
		return b, fmt.Errorf("%w: blob %s/%s is at revision %d, not %d", store.ErrRevision, b.Kind, b.Key, cur, b.Revision)
	}
	b.Data = bytes.Clone(b.Data)
	b.Revision = cur + 1
	b.UpdatedAt = Time(now)
	return b, nil
}

// DeleteBlob checks a delete of the blob stored at revision cur.
func DeleteBlob(kind, key string, cur, revision int64) error {
	if revision != 0 && revision != cur {
		return fmt.Errorf("%w: blob %s/%s is at revision %d, not %d", store.ErrRevision, kind, key, cur, revision)
	}
	return nil
}
