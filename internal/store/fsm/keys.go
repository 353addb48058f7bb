package fsm

import (
	"bytes"
	"fmt"
	"time"

	"github.com/rediacc/rediacc/internal/store"
)

// NewKey checks k for CreateKey and fills its defaults: Revision 1,
// CreatedAt and UpdatedAt now.
func NewKey(k store.Key, now time.Time) (store.Key, error) {
	if k.ID == "" || k.TeamID == "" {
		return k, fmt.Errorf("%w: a key needs an id and a team", store.ErrInvalidArgument)
	}
	k.Team = ""
	k.Revision = 1
	k.Data = bytes.Clone(k.Data)
	k.CreatedAt, k.UpdatedAt = Time(now), Time(now)
	return k, nil
}

// UpdateKey applies the update u to the stored key cur: ErrRevision unless
// u names cur's revision; Fingerprint and Data replaced, Revision + 1,
// UpdatedAt now.
func UpdateKey(cur, u store.Key, now time.Time) (store.Key, error) {
	if u.Revision != cur.Revision {
		return cur, fmt.Errorf("%w: key %s is at revision %d, not %d", store.ErrRevision, cur.ID, cur.Revision, u.Revision)
	}
	cur.Fingerprint = u.Fingerprint
	cur.Data = bytes.Clone(u.Data)
	cur.Revision++
	cur.UpdatedAt = Time(now)
	return cur, nil
}
