package postgres_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/store"
)

// TestOutboxAcrossEngines: workers on four engines (four pools, as four
// processes) raise the same condition at once: one alert is inserted, the
// others counted as suppressed; then they claim one endpoint's deliveries
// at once: each delivery is held by one lease at a time and all are
// claimed.
func TestOutboxAcrossEngines(t *testing.T) {
	es := openN(t, 4)
	if err := es[0].RegisterAlertEndpoints(ctx, []string{"hook"}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	const raisers = 16
	var mu sync.Mutex
	var inserted, suppressed int
	var wg sync.WaitGroup
	at := time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range raisers {
		wg.Go(func() {
			res, err := es[i%len(es)].EnqueueAlerts(ctx, store.AlertRequest{Alert: store.Alert{Kind: "queue.depth", Key: "depth/prod",
				CreatedAt: at}, Window: time.Minute})
			if err != nil {
				t.Errorf("raiser %d: %v", i, err)
				return
			}
			mu.Lock()
			if res[0].Suppressed {
				suppressed++
			} else {
				inserted++
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	if inserted != 1 || suppressed != raisers-1 {
		t.Fatalf("one condition raised %d times at once: %d inserted, %d suppressed; want 1 and %d", raisers, inserted, suppressed, raisers-1)
	}
	res, err := es[0].EnqueueAlerts(ctx, store.AlertRequest{Alert: store.Alert{Kind: "queue.depth", Key: "depth/prod",
		CreatedAt: at.Add(time.Minute)}, Window: time.Minute})
	if err != nil || res[0].Suppressed || res[0].Count != raisers-1 {
		t.Fatalf("after the window: %+v, %v; want it carries %d suppressed", res, err, raisers-1)
	}

	const n = 120
	var reqs []store.AlertRequest
	for i := range n {
		reqs = append(reqs, store.AlertRequest{Alert: store.Alert{ID: fmt.Sprintf("a%03d", i), Kind: "task.failed"}})
	}
	if _, err := es[1].EnqueueAlerts(ctx, reqs...); err != nil {
		t.Fatal(err)
	}
	holder := map[string]string{}
	now := time.Now().Add(time.Second)
	for w := range 8 {
		wg.Go(func() {
			owner := fmt.Sprintf("w%d", w)
			for {
				as, err := es[w%len(es)].ClaimAlerts(ctx, store.AlertClaim{Endpoint: "hook", Owner: owner, Now: now,
					LeaseUntil: now.Add(time.Hour), Max: 1 + w%4})
				if err != nil {
					t.Errorf("%s: %v", owner, err)
					return
				}
				if len(as) == 0 {
					return
				}
				mu.Lock()
				for _, a := range as {
					if prev, ok := holder[a.ID]; ok {
						t.Errorf("%s claimed %s, held by %s", owner, a.ID, prev)
					}
					holder[a.ID] = owner
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(holder) != n+2 { // the two queue.depth alerts too
		t.Fatalf("%d deliveries claimed, want %d", len(holder), n+2)
	}
}
