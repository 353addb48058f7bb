package fsm

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
)

// Terminal lists the final statuses, in queue-state order.
var Terminal = []store.Status{store.Completed, store.Failed, store.Cancelled}

// Queued lists the statuses QueuedByMachine counts.
var Queued = []store.Status{store.Pending, store.Assigned, store.Processing}

// BatchErr names the index of the batch task err is about ("task 3: …").
func BatchErr(i int, err error) error { return fmt.Errorf("task %d: %w", i, err) }

// NewTasks checks every task of a CreateTasks batch with NewTask and
// returns them defaulted, or the first error named by its index (BatchErr).
// Ids are generated here, so the engine sees the final id of every task.
func NewTasks(ts []store.Task, now time.Time) ([]store.Task, error) {
	out := make([]store.Task, len(ts))
	for i, t := range ts {
		n, err := NewTask(t, now)
		if err != nil {
			return nil, BatchErr(i, err)
		}
		out[i] = n
	}
	return out, nil
}

// HealthTime checks SetMachineHealth's arguments and returns the sample's
// time: at, or now when zero, normalized.
func HealthTime(name string, at, now time.Time) (time.Time, error) {
	if name == "" {
		return time.Time{}, fmt.Errorf("%w: machine health: machine name is empty", store.ErrInvalidArgument)
	}
	if err := checkTimes("health time", at); err != nil {
		return time.Time{}, fmt.Errorf("machine %s: %w", name, err)
	}
	if at.IsZero() {
		at = now
	}
	return Time(at), nil
}

// CheckPrune checks ListPrunable's arguments.
func CheckPrune(before time.Time, limit int) error {
	switch {
	case limit < 1:
		return fmt.Errorf("%w: list prunable: limit %d < 1", store.ErrInvalidArgument, limit)
	case before.IsZero():
		return fmt.Errorf("%w: list prunable: before is zero", store.ErrInvalidArgument)
	}
	return checkTimes("list prunable before", before)
}

// Prunable reports whether t is finished before `before`.
func Prunable(t *store.Task, before time.Time) bool {
	return t.Status.Terminal() && !t.CompletedAt.IsZero() && t.CompletedAt.Before(before)
}

// ComparePrunable is ListPrunable's order: CompletedAt, then creation
// sequence.
func ComparePrunable(a, b *store.Task, seqA, seqB int64) int {
	if c := a.CompletedAt.Compare(b.CompletedAt); c != 0 {
		return c
	}
	return cmp.Compare(seqA, seqB)
}

// CheckTrim checks TrimAudit's uptoSeq against the chain's base and head
// and reports whether records are to be deleted (false: at or below the
// base, nothing to do).
func CheckTrim(uptoSeq int64, base, head audit.Head) (bool, error) {
	switch {
	case uptoSeq < 0:
		return false, fmt.Errorf("%w: trim audit: seq %d < 0", store.ErrInvalidArgument, uptoSeq)
	case uptoSeq > head.Seq:
		return false, fmt.Errorf("%w: trim audit: seq %d is past the head %s", store.ErrInvalidArgument, uptoSeq, head)
	}
	return uptoSeq > base.Seq, nil
}

// MissingAudit is TrimAudit's error for a record missing between the base
// and the head.
func MissingAudit(seq int64, base, head audit.Head) error {
	return fmt.Errorf("%w: audit record %d is missing (stored chain from %s to %s)", store.ErrCorrupt, seq, base, head)
}

// QueuedCounts prepares QueuedByMachine's answer: an empty map, holding 0
// for every machine given.
func QueuedCounts(machines []string) map[string]int {
	out := make(map[string]int, len(machines))
	for _, m := range machines {
		out[m] = 0
	}
	return out
}

// Dedup returns ids without repeats, in first-seen order.
func Dedup(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return slices.Clip(out)
}
