package store

import (
	"context"
	"time"
)

// Blob kinds the root package keeps (Blob.Kind).
const (
	// BlobHostKeys: a machine's known_hosts lines (Key: the machine).
	BlobHostKeys = "hostkeys"
	// BlobVault: a team vault's age-encrypted file, encrypted by the client
	// before it reaches the engine (Key: the team).
	BlobVault = "vault"
)

// Blob is an opaque value that every process sharing the store reads: what
// a worker on any host needs besides the queue (a machine's host keys, a
// team's encrypted vault). Engines store Data as given and never interpret
// it.
type Blob struct {
	// Kind is the namespace (BlobHostKeys, BlobVault, …): 1..64 bytes.
	Kind string
	// Key names the blob within its kind: 1..255 bytes.
	Key string
	// Data is the value (may be empty).
	Data []byte
	// Revision is 1 once created and grows by one with every put; a put
	// names the revision it read (0: none stored), so that concurrent
	// writers of one blob have exactly one winner (check-and-set).
	Revision int64
	// UpdatedAt is set by the engine (now) on every put.
	UpdatedAt time.Time
}

// BlobEngine keeps Blobs. Engines implement it beside Engine and Access;
// the conformance tests are in storetest (Blobs). Mutating methods append
// the context's audit records in the same transaction as their change,
// like every Engine method.
type BlobEngine interface {
	// GetBlob returns one blob. ErrNotFound.
	GetBlob(ctx context.Context, kind, key string) (Blob, error)
	// PutBlob stores b.Data under (b.Kind, b.Key) if the stored revision is
	// still b.Revision (0: no blob may be stored), and returns the blob as
	// stored, with the next revision. ErrRevision when the revision differs
	// (nothing changed); ErrInvalidArgument (kind or key empty or too
	// long).
	PutBlob(ctx context.Context, b Blob) (Blob, error)
	// DeleteBlob removes a blob if its stored revision is revision (0:
	// any). ErrNotFound; ErrRevision.
	DeleteBlob(ctx context.Context, kind, key string, revision int64) error
	// ListBlobs returns the blobs of kind, Data included, ordered by key
	// (byte order).
	ListBlobs(ctx context.Context, kind string) ([]Blob, error)
}
