package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
)

// The audit head is kept in memory while a shared write transaction runs
// (audithead.go): a change that appended records and then failed rolls
// back to its savepoint, and the head with it, so the next change in the
// same transaction chains onto the last record that stays; the trail
// verifies to the head stored at COMMIT.
func TestGroupCommitAuditHeadAfterFailedChange(t *testing.T) {
	ctx := context.Background()
	e := openGrouped(t)
	rec := func(action string) audit.Record {
		return audit.Record{Time: time.Now().UTC(), Actor: "t", Action: action, EntityType: audit.EntityTask,
			EntityID: action, Team: store.DefaultTeam, Result: audit.ResultOK}
	}
	nothing := func(context.Context, *sql.Tx) (bool, error) { return true, nil }
	release := make(chan struct{})
	first := make(chan error, 1)
	go func() { // the leader: its change waits until the others are queued
		first <- e.tx(ctx, []audit.Record{rec("first")}, func(ctx context.Context, tx *sql.Tx) (bool, error) {
			<-release
			return true, nil
		})
	}()
	for !e.leading() {
		time.Sleep(time.Millisecond)
	}
	errFail := errors.New("fails after appending")
	failed := make(chan error, 1)
	go func() {
		failed <- e.tx(ctx, nil, func(ctx context.Context, tx *sql.Tx) (bool, error) {
			if _, err := e.appendAudit(ctx, tx, []audit.Record{rec("rolled-back-1"), rec("rolled-back-2")}); err != nil {
				return false, err
			}
			return false, errFail
		})
	}()
	for e.queued() < 1 {
		time.Sleep(time.Millisecond)
	}
	last := make(chan error, 1)
	go func() { last <- e.tx(ctx, []audit.Record{rec("last")}, nothing) }()
	for e.queued() < 2 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("first change: %v", err)
	}
	if err := <-failed; !errors.Is(err, errFail) {
		t.Fatalf("failing change: %v, want its own error", err)
	}
	if err := <-last; err != nil {
		t.Fatalf("last change: %v", err)
	}
	recs, err := e.ListAudit(ctx, audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	head, err := e.AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, r := range recs {
		actions = append(actions, r.Action)
	}
	if len(recs) != 2 || actions[0] != "first" || actions[1] != "last" || head.Seq != 2 {
		t.Fatalf("trail %v, head %d; want [first last], head 2", actions, head.Seq)
	}
	if err := audit.VerifyWithHead(recs, head); err != nil {
		t.Fatalf("trail does not verify: %v", err)
	}
}
