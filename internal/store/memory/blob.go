package memory

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/fsm"
)

var _ store.BlobEngine = (*Engine)(nil)

func blobOut(b store.Blob) store.Blob {
	b.Data = bytes.Clone(b.Data)
	return b
}

// GetBlob implements store.BlobEngine.
func (e *Engine) GetBlob(ctx context.Context, kind, key string) (store.Blob, error) {
	if err := e.lock(ctx); err != nil {
		return store.Blob{}, err
	}
	defer e.mu.Unlock()
	b, ok := e.blobs[[2]string{kind, key}]
	if !ok {
		return store.Blob{}, fmt.Errorf("%w: blob %s/%s", store.ErrNotFound, kind, key)
	}
	return blobOut(b), nil
}

// PutBlob implements store.BlobEngine.
func (e *Engine) PutBlob(ctx context.Context, b store.Blob) (store.Blob, error) {
	if err := fsm.CheckBlobName(b.Kind, b.Key); err != nil {
		return store.Blob{}, err
	}
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return store.Blob{}, err
	}
	defer e.mu.Unlock()
	k := [2]string{b.Kind, b.Key}
	next, err := fsm.PutBlob(e.blobs[k].Revision, b, time.Now())
	if err != nil {
		return store.Blob{}, err
	}
	if e.blobs == nil {
		e.blobs = make(map[[2]string]store.Blob)
	}
	e.blobs[k] = next
	e.record(recs)
	return blobOut(next), nil
}

// DeleteBlob implements store.BlobEngine.
func (e *Engine) DeleteBlob(ctx context.Context, kind, key string, revision int64) error {
	recs, err := e.lockAudit(ctx)
	if err != nil {
		return err
	}
	defer e.mu.Unlock()
	k := [2]string{kind, key}
	cur, ok := e.blobs[k]
	if !ok {
		return fmt.Errorf("%w: blob %s/%s", store.ErrNotFound, kind, key)
	}
	if err := fsm.DeleteBlob(kind, key, cur.Revision, revision); err != nil {
		return err
	}
	delete(e.blobs, k)
	e.record(recs)
	return nil
}

// ListBlobs implements store.BlobEngine.
func (e *Engine) ListBlobs(ctx context.Context, kind string) ([]store.Blob, error) {
	if err := e.lock(ctx); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	var out []store.Blob
	for k, b := range e.blobs {
		if k[0] == kind {
			out = append(out, blobOut(b))
		}
	}
	slices.SortFunc(out, func(a, b store.Blob) int { return cmp.Compare(a.Key, b.Key) })
	return out, nil
}
