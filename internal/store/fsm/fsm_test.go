package fsm

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/store"
)

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func TestTimeRange(t *testing.T) {
	for _, tc := range []struct {
		at time.Time
		ok bool
	}{
		{time.Time{}, true},
		{t0, true},
		{time.Date(1678, 1, 1, 0, 0, 0, 0, time.UTC), true},
		{time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC), true},
		{time.Date(1677, 1, 1, 0, 0, 0, 0, time.UTC), false},
		{time.Date(2263, 1, 1, 0, 0, 0, 0, time.UTC), false},
	} {
		_, err := NewTask(store.Task{MachineID: "m", Priority: 3, CreatedAt: tc.at}, t0)
		if (err == nil) != tc.ok {
			t.Errorf("CreatedAt %v: err = %v, want ok=%v", tc.at, err, tc.ok)
		}
		if err != nil && !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("CreatedAt %v: %v is not ErrInvalidArgument", tc.at, err)
		}
	}
}

func TestTimeNormalized(t *testing.T) {
	local := time.Now().In(time.FixedZone("X", 3600)) // carries a monotonic reading
	got := Time(local)
	if got.Location() != time.UTC || got != got.Round(0) || !got.Equal(local) {
		t.Fatalf("Time(%v) = %v", local, got)
	}
	if !Time(time.Time{}).IsZero() {
		t.Fatal("zero time not kept")
	}
}

func TestNewTaskDefaults(t *testing.T) {
	got, err := NewTask(store.Task{MachineID: "m", Priority: 1, Status: store.Failed, LeaseOwner: "x", Spec: []byte{}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID == "" || got.Status != store.Pending || got.LeaseOwner != "" || !got.CreatedAt.Equal(t0) ||
		!got.EnqueuedAt.Equal(t0) || !got.ReadyAt.Equal(t0) || got.Spec != nil {
		t.Fatalf("defaults: %+v", got)
	}
}

func TestSortDepth(t *testing.T) {
	rows := []store.DepthRow{
		{Status: "WEIRD", Priority: 1},
		{Status: store.Cancelled, Priority: 1},
		{Status: store.Pending, Priority: 2, TeamID: "b"},
		{Status: store.Pending, Priority: 2, TeamID: "a", MachineID: "z"},
		{Status: store.Pending, Priority: 2, TeamID: "a", MachineID: "y"},
		{Status: store.Pending, Priority: 1},
		{Status: store.Processing, Priority: 1},
		{Status: store.Assigned, Priority: 5},
	}
	SortDepth(rows)
	var got []string
	for _, r := range rows {
		got = append(got, fmt.Sprintf("%s/%d/%s/%s", r.Status, r.Priority, r.TeamID, r.MachineID))
	}
	want := "[PENDING/1// PENDING/2/a/y PENDING/2/a/z PENDING/2/b/ ASSIGNED/5// PROCESSING/1// CANCELLED/1// WEIRD/1//]"
	if fmt.Sprint(got) != want {
		t.Fatalf("SortDepth = %v\nwant %s", got, want)
	}
}

func TestFinishLeaseLostLeavesTaskUnchanged(t *testing.T) {
	tk, _ := NewTask(store.Task{ID: "x", MachineID: "m", Priority: 3}, t0)
	Claim(&tk, store.ClaimRequest{Owner: "w1", Now: t0, LeaseUntil: t0.Add(time.Minute)})
	before := fmt.Sprintf("%+v", tk)
	err := Finish(&tk, store.Finish{ID: "x", Owner: "w2", At: t0, Next: store.Completed, CountAttempt: true, Stdout: []byte("x")})
	if !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("err = %v", err)
	}
	if after := fmt.Sprintf("%+v", tk); after != before {
		t.Fatalf("task changed:\n%s\n%s", before, after)
	}
}
