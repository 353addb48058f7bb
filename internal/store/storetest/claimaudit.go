package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
)

// claimAuditTests: ClaimRequest.Audit (the worker's task.assign records
// committed with its claim).
var claimAuditTests = []struct {
	name string
	fn   func(*testing.T, *fixture)
}{
	{"Claim/Audit", testClaimAudit},
}

func testClaimAudit(t *testing.T, f *fixture) {
	for i := range 3 {
		f.task("m", 3, at(time.Duration(i)*time.Second))
	}
	calls := 0
	assign := func(claimed []store.Task) []audit.Record {
		calls++
		recs := make([]audit.Record, len(claimed))
		for i, t := range claimed {
			recs[i] = audit.Record{Time: at(time.Hour), Actor: "worker", Action: "task.assign", EntityType: audit.EntityTask,
				EntityID: t.ID, Team: t.TeamID, Result: audit.ResultOK, Details: map[string]string{"machine": t.Machine}}
		}
		return recs
	}
	ctx := store.WithAudit(f.ctx, audit.Record{Time: at(time.Hour), Actor: "worker", Action: "queue.claim",
		EntityType: audit.EntityTask, Result: audit.ResultOK})
	now := at(time.Hour)
	got, err := f.e.Claim(ctx, store.ClaimRequest{Owner: "w", Now: now, LeaseUntil: now.Add(time.Minute), Max: 2, Audit: assign})
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, "claim", got, "task-001", "task-002")
	recs, err := f.a.ListAudit(f.ctx, audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, r := range recs {
		seen = append(seen, r.Action+" "+r.EntityID)
	}
	if want := []string{"task.assign task-001", "task.assign task-002", "queue.claim "}; !slices.Equal(seen, want) {
		t.Fatalf("audit trail after the claim: %q, want %q (the claim's records, then the context's)", seen, want)
	}
	if err := audit.Verify(recs); err != nil {
		t.Fatalf("audit trail: %v", err)
	}

	// A bad record fails the claim: nothing claimed, nothing appended.
	bad := func([]store.Task) []audit.Record { return []audit.Record{{Action: "task.assign"}} }
	if _, err := f.e.Claim(f.ctx, store.ClaimRequest{Owner: "w", Now: now, LeaseUntil: now.Add(time.Minute), Max: 2, Audit: bad}); !errors.Is(err, store.ErrInvalidArgument) {
		t.Fatalf("claim with an invalid audit record: %v, want ErrInvalidArgument", err)
	}
	if task := f.get("task-003"); task.Status != store.Pending {
		t.Fatalf("task-003 after the failed claim: %s, want PENDING", task.Status)
	}
	if after, _ := f.a.ListAudit(f.ctx, audit.Filter{}); len(after) != len(recs) {
		t.Fatalf("audit records after the failed claim: %d, want %d", len(after), len(recs))
	}

	// Nothing to claim: the builder is not called.
	calls = 0
	f.claim(store.ClaimRequest{Max: 5})
	if got := f.claim(store.ClaimRequest{Max: 5, Audit: assign}); len(got) != 0 || calls != 0 {
		t.Fatalf("empty claim: %d tasks, builder called %d times, want none", len(got), calls)
	}
}
