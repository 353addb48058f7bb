package storetest

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
)

// windowTests cover store.Gates: gates (drain, pause) and maintenance
// windows.
var windowTests = []struct {
	name string
	fn   func(*testing.T, *fixture)
}{
	{"Gates/PutListDelete", testGates},
	{"Gates/Invalid", testGatesInvalid},
	{"Windows/CRUD", testWindows},
	{"Windows/Invalid", testWindowsInvalid},
	{"Claim/Drained", testClaimDrained},
	{"Claim/Paused", testClaimPaused},
	{"Claim/Windows", testClaimWindows},
}

func (f *fixture) gates() store.Gates {
	f.t.Helper()
	g, ok := f.e.(store.Gates)
	if !ok {
		f.t.Fatalf("%T does not implement store.Gates", f.e)
	}
	return g
}

func testGates(t *testing.T, f *fixture) {
	g := f.gates()
	head, _ := f.a.AuditHead(f.ctx)
	rec := audit.Record{Time: T0, Actor: "alice", Action: "machine.drain", Result: audit.ResultOK}
	created, err := g.PutGate(store.WithAudit(f.ctx, rec), store.Gate{Kind: store.GateDrain, Target: "m1", Since: T0, Actor: "alice", Reason: "kernel update"})
	if err != nil || !created {
		t.Fatalf("PutGate: %v %v", created, err)
	}
	// Again: the first one stays, the audit record is appended all the same.
	created, err = g.PutGate(store.WithAudit(f.ctx, rec), store.Gate{Kind: store.GateDrain, Target: "m1", Since: at(time.Hour), Actor: "bob"})
	if err != nil || created {
		t.Fatalf("PutGate again: %v %v", created, err)
	}
	if h, _ := f.a.AuditHead(f.ctx); h.Seq != head.Seq+2 {
		t.Fatalf("audit head moved from %d to %d, want +2", head.Seq, h.Seq)
	}
	if _, err := g.PutGate(f.ctx, store.Gate{Kind: store.GatePause, Target: "team-a", Actor: "carol"}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.PutGate(f.ctx, store.Gate{Kind: store.GatePause, Target: "m1", Actor: "carol", Since: T0}); err != nil {
		t.Fatal(err) // the same target under another kind is another gate
	}
	gs, err := g.ListGates(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(gs) != 3 {
		t.Fatalf("gates: %+v", gs)
	}
	if want := (store.Gate{Kind: store.GateDrain, Target: "m1", Since: T0, Actor: "alice", Reason: "kernel update"}); !cmp.Equal(gs[0], want) {
		t.Fatalf("drain gate: %+v, want %+v", gs[0], want)
	}
	if gs[1].Kind != store.GatePause || gs[1].Target != "m1" || gs[2].Target != "team-a" || gs[2].Since.IsZero() {
		t.Fatalf("order or defaults: %+v", gs)
	}
	if err := g.DeleteGate(f.ctx, store.GateDrain, "m1"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "delete again", g.DeleteGate(f.ctx, store.GateDrain, "m1"), store.ErrNotFound)
	wantErr(t, "delete unknown", g.DeleteGate(f.ctx, store.GatePause, "nope"), store.ErrNotFound)
	if gs, _ := g.ListGates(f.ctx); len(gs) != 2 {
		t.Fatalf("after delete: %+v", gs)
	}
}

func testGatesInvalid(t *testing.T, f *fixture) {
	g := f.gates()
	for _, bad := range []store.Gate{
		{Kind: "freeze", Target: "m1", Actor: "a"},
		{Kind: store.GateDrain, Actor: "a"},
		{Kind: store.GateDrain, Target: "m1"},
		{Kind: store.GateDrain, Target: "m1", Actor: "a", Since: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		_, err := g.PutGate(f.ctx, bad)
		wantErr(t, fmt.Sprintf("PutGate(%+v)", bad), err, store.ErrInvalidArgument)
	}
	if gs, _ := g.ListGates(f.ctx); len(gs) != 0 {
		t.Fatalf("invalid gates stored: %+v", gs)
	}
}

func testWindows(t *testing.T, f *fixture) {
	g := f.gates()
	w1, err := g.CreateWindow(f.ctx, store.Window{TeamID: "team-b", Cron: "0 2 * * *", TimeZone: "Europe/Paris", Duration: 3 * time.Hour,
		HoldFrom: 4, Actor: "alice", CreatedAt: T0})
	if err != nil {
		t.Fatal(err)
	}
	if w1.ID == "" || !w1.CreatedAt.Equal(T0) {
		t.Fatalf("created: %+v", w1)
	}
	w2, err := g.CreateWindow(f.ctx, store.Window{ID: "w2", TeamID: "team-a", MachineID: "m1", Cron: "@daily", Duration: time.Hour, HoldFrom: 5, Actor: "bob"})
	if err != nil || w2.CreatedAt.IsZero() {
		t.Fatalf("second: %+v %v", w2, err)
	}
	_, err = g.CreateWindow(f.ctx, store.Window{ID: "w2", TeamID: "team-a", Cron: "@daily", Duration: time.Hour, HoldFrom: 5, Actor: "bob"})
	wantErr(t, "duplicate id", err, store.ErrExists)
	got, err := g.GetWindow(f.ctx, w1.ID)
	if err != nil || !cmp.Equal(got, w1) {
		t.Fatalf("GetWindow: %+v %v, want %+v", got, err, w1)
	}
	all, err := g.ListWindows(f.ctx, store.WindowFilter{})
	if err != nil || len(all) != 2 || all[0].ID != "w2" || all[1].ID != w1.ID {
		t.Fatalf("ListWindows: %+v %v (want team-a's first)", all, err)
	}
	b, _ := g.ListWindows(f.ctx, store.WindowFilter{TeamIDs: []string{"team-b"}})
	if len(b) != 1 || b[0].ID != w1.ID {
		t.Fatalf("team-b's windows: %+v", b)
	}
	if none, _ := g.ListWindows(f.ctx, store.WindowFilter{TeamIDs: []string{}}); len(none) != 0 {
		t.Fatalf("no team: %+v", none)
	}
	if err := g.DeleteWindow(f.ctx, "w2"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "delete again", g.DeleteWindow(f.ctx, "w2"), store.ErrNotFound)
	_, err = g.GetWindow(f.ctx, "w2")
	wantErr(t, "get deleted", err, store.ErrNotFound)
}

func testWindowsInvalid(t *testing.T, f *fixture) {
	g := f.gates()
	ok := store.Window{TeamID: "t", Cron: "0 2 * * *", TimeZone: "UTC", Duration: time.Hour, HoldFrom: 4, Actor: "a"}
	for name, mod := range map[string]func(*store.Window){
		"no team":         func(w *store.Window) { w.TeamID = "" },
		"no actor":        func(w *store.Window) { w.Actor = "" },
		"hold-from 0":     func(w *store.Window) { w.HoldFrom = 0 },
		"hold-from 6":     func(w *store.Window) { w.HoldFrom = 6 },
		"bad cron":        func(w *store.Window) { w.Cron = "0 2 *" },
		"@every":          func(w *store.Window) { w.Cron = "@every 2h" },
		"bad zone":        func(w *store.Window) { w.TimeZone = "Nowhere/Land" },
		"zero duration":   func(w *store.Window) { w.Duration = 0 },
		"8 days":          func(w *store.Window) { w.Duration = 8 * 24 * time.Hour },
		"never opens":     func(w *store.Window) { w.Cron = "0 0 30 2 *" },
		"created in 3000": func(w *store.Window) { w.CreatedAt = time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC) },
	} {
		w := ok
		mod(&w)
		_, err := g.CreateWindow(f.ctx, w)
		wantErr(t, name, err, store.ErrInvalidArgument)
	}
	if ws, _ := g.ListWindows(f.ctx, store.WindowFilter{}); len(ws) != 0 {
		t.Fatalf("invalid windows stored: %+v", ws)
	}
}

// ids of the tasks a claim at now takes (Max 100, no per-machine bound).
func (f *fixture) claimIDs(now time.Time) []string {
	f.t.Helper()
	return ids(f.claim(store.ClaimRequest{Now: now, Max: 100}))
}

// A draining machine's tasks are not claimed, whatever their priority; the
// other machines' are; once resumed, they are.
func testClaimDrained(t *testing.T, f *fixture) {
	f.task("m1", 1, T0, named("m1-critical"))
	f.task("m1", 5, T0, named("m1-low"))
	f.task("m2", 3, T0, named("m2-normal"))
	if _, err := f.gates().PutGate(f.ctx, store.Gate{Kind: store.GateDrain, Target: "m1", Actor: "alice"}); err != nil {
		t.Fatal(err)
	}
	if got := f.claimIDs(at(time.Hour)); fmt.Sprint(got) != "[m2-normal]" {
		t.Fatalf("claim with m1 draining: %v, want [m2-normal]", got)
	}
	if err := f.gates().DeleteGate(f.ctx, store.GateDrain, "m1"); err != nil {
		t.Fatal(err)
	}
	if got := f.claimIDs(at(time.Hour)); fmt.Sprint(got) != "[m1-critical m1-low]" {
		t.Fatalf("claim after resume: %v", got)
	}
}

// A paused team's tasks are not claimed; other teams' are.
func testClaimPaused(t *testing.T, f *fixture) {
	f.task("m1", 1, T0, named("a1"))
	f.task("m2", 2, T0, named("b1"), inTeam("team-b"))
	if _, err := f.gates().PutGate(f.ctx, store.Gate{Kind: store.GatePause, Target: "team-a", Actor: "alice"}); err != nil {
		t.Fatal(err)
	}
	if got := f.claimIDs(at(time.Hour)); fmt.Sprint(got) != "[b1]" {
		t.Fatalf("claim with team-a paused: %v, want [b1]", got)
	}
	if err := f.gates().DeleteGate(f.ctx, store.GatePause, "team-a"); err != nil {
		t.Fatal(err)
	}
	if got := f.claimIDs(at(time.Hour)); fmt.Sprint(got) != "[a1]" {
		t.Fatalf("claim after resume: %v", got)
	}
}

// Maintenance windows hold the tasks of priority HoldFrom..5 of their
// machines while closed: a team window (02:00 for 3h, HoldFrom 4) and a
// machine window of m2 (12:00 for 1h, HoldFrom 5). Priorities 1..3 run at
// any time; a task governed by two windows runs while either is open;
// aging does not lift a task past a window.
func testClaimWindows(t *testing.T, f *fixture) {
	day := time.Date(2031, 6, 10, 0, 0, 0, 0, time.UTC)
	if _, err := f.gates().CreateWindow(f.ctx, store.Window{TeamID: "team-a", Cron: "0 2 * * *", Duration: 3 * time.Hour, HoldFrom: 4, Actor: "alice"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.gates().CreateWindow(f.ctx, store.Window{TeamID: "team-a", MachineID: "m2", Cron: "0 12 * * *", Duration: time.Hour, HoldFrom: 5, Actor: "alice"}); err != nil {
		t.Fatal(err)
	}
	enq := day.Add(-48 * time.Hour) // long aged: aging would have lifted every task to priority 1
	f.task("m1", 3, enq, named("m1-p3"))
	f.task("m1", 4, enq, named("m1-p4"))
	f.task("m2", 4, enq, named("m2-p4"))
	f.task("m2", 5, enq, named("m2-p5"))
	f.task("m3", 5, enq, named("other-team"), inTeam("team-b"))
	claim := func(now time.Time) string {
		t.Helper()
		got := f.claim(store.ClaimRequest{Now: now, Max: 100, Aging: time.Minute})
		names := ids(got)
		for _, tk := range got { // back to PENDING for the next round
			f.finish(store.Finish{ID: tk.ID, Owner: "w1", At: now, Next: store.Pending, ReadyAt: now})
		}
		slices.Sort(names)
		return fmt.Sprint(names)
	}
	if got := claim(day.Add(time.Hour)); got != "[m1-p3 other-team]" {
		t.Fatalf("01:00, every window closed: %v", got)
	}
	if got := claim(day.Add(2 * time.Hour)); got != "[m1-p3 m1-p4 m2-p4 m2-p5 other-team]" {
		t.Fatalf("02:00, the team window open: %v", got)
	}
	if got := claim(day.Add(12*time.Hour + 30*time.Minute)); got != "[m1-p3 m2-p5 other-team]" {
		t.Fatalf("12:30, only m2's window (priority 5) open: %v", got)
	}
	if got := claim(day.Add(13 * time.Hour)); got != "[m1-p3 other-team]" {
		t.Fatalf("13:00, every window closed again: %v", got)
	}
}

// GatesAcrossEngines has claimers on every engine (engines open on one
// store, as separate processes would have) claim and finish tasks of four
// machines of one team while engines[0] drains machine m0, then pauses the
// team, then (both lifted) opens a team window that holds every priority
// and is closed at the claims' time: no claim that started after a gate
// committed (and ended before it was lifted) returns a task the gate
// holds, the held tasks (and those submitted meanwhile) stay PENDING, and
// once everything is lifted the claimers finish every task.
func GatesAcrossEngines(t *testing.T, engines []store.Engine) {
	t.Helper()
	ctx := t.Context()
	const total = 400
	CreateTasks(t, engines[0], "g", total, 4) // machines m0..m3 of team "team"
	g := engines[0].(store.Gates)
	now := T0.Add(time.Hour) // 08:08 UTC: the window below (02:00 for 1h) is closed
	type phase struct {
		name string
		held func(store.Task) bool
	}
	var (
		cur      atomic.Pointer[phase]
		claimed  atomic.Int64 // tasks claimed
		calls    atomic.Int64 // Claim calls that started in the current phase
		done     atomic.Int64
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		mu       sync.Mutex
		problems []string
	)
	report := func(format string, args ...any) {
		mu.Lock()
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
		mu.Unlock()
	}
	cur.Store(&phase{name: "free", held: func(store.Task) bool { return false }})
	for w := range 4 * len(engines) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := engines[w%len(engines)]
			owner := fmt.Sprintf("gate-worker-%d", w)
			for {
				select {
				case <-stop:
					return
				default:
				}
				p := cur.Load() // the phase in force before this claim started
				calls.Add(1)
				ts, err := e.Claim(ctx, store.ClaimRequest{Owner: owner, Now: now, LeaseUntil: now.Add(time.Hour), Max: 2})
				if err != nil {
					if ctx.Err() == nil {
						report("%s: Claim: %v", owner, err)
					}
					return
				}
				same := cur.Load() == p // no gate was lifted while it ran: phases change before a lift
				for _, tk := range ts {
					if same && p.held(tk) {
						report("%s: claimed %s (machine %s, team %s) after %s committed", owner, tk.ID, tk.MachineID, tk.TeamID, p.name)
					}
					claimed.Add(1)
					if _, err := e.Finish(ctx, store.Finish{ID: tk.ID, Owner: owner, At: now, Next: store.Completed,
						CountAttempt: true, Attempt: store.Attempt{StartedAt: now, Outcome: "succeeded"}}); err != nil {
						report("%s: Finish(%s): %v", owner, tk.ID, err)
						return
					}
					done.Add(1)
				}
				if len(ts) == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
		for _, p := range problems {
			t.Error(p)
		}
	}()
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (%d claimed)", what, claimed.Load())
			}
			time.Sleep(time.Millisecond)
		}
	}
	// enter sets a gate, then the phase: a claim that read the phase
	// after the gate committed must obey it. It waits for the claimers to
	// make many claims under it.
	enter := func(p *phase, set func() error) {
		t.Helper()
		if err := set(); err != nil {
			t.Fatal(err)
		}
		cur.Store(p)
		calls.Store(0)
		waitUntil("claims under "+p.name, func() bool { return calls.Load() >= int64(50*len(engines)) })
	}
	waitUntil("the first claims", func() bool { return claimed.Load() >= 40 })
	enter(&phase{name: "the drain of m0", held: func(tk store.Task) bool { return tk.MachineID == "m0" }}, func() error {
		_, err := g.PutGate(ctx, store.Gate{Kind: store.GateDrain, Target: "m0", Actor: "alice"})
		return err
	})
	waitUntil("more claims", func() bool { return claimed.Load() >= 150 })
	enter(&phase{name: "the pause of team", held: func(store.Task) bool { return true }}, func() error {
		_, err := g.PutGate(ctx, store.Gate{Kind: store.GatePause, Target: "team", Actor: "alice"})
		return err
	})
	// Submits are still accepted: tasks created now (on every machine)
	// wait too.
	CreateTasks(t, engines[len(engines)-1], "p", 8, 4)
	pending := func() map[string]int {
		t.Helper()
		ts, err := engines[len(engines)-1].ListTasks(ctx, store.TaskFilter{Statuses: []store.Status{store.Pending}})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int{}
		for _, tk := range ts {
			out[tk.MachineID]++
		}
		return out
	}
	held := pending()
	if held["m0"] == 0 || held["m1"] == 0 || int64(held["m0"]+held["m1"]+held["m2"]+held["m3"]) != total+8-done.Load() {
		t.Fatalf("pending tasks by machine while m0 drains and the team is paused: %v (%d of %d done)", held, done.Load(), total)
	}
	// Both lifted, a closed window holding every priority of the team.
	enter(&phase{name: "the team's closed window", held: func(store.Task) bool { return true }}, func() error {
		if _, err := g.CreateWindow(ctx, store.Window{TeamID: "team", Cron: "0 2 * * *", Duration: time.Hour, HoldFrom: 1, Actor: "alice"}); err != nil {
			return err
		}
		if err := g.DeleteGate(ctx, store.GateDrain, "m0"); err != nil {
			return err
		}
		return g.DeleteGate(ctx, store.GatePause, "team")
	})
	if got := pending(); fmt.Sprint(got) != fmt.Sprint(held) {
		t.Fatalf("pending tasks by machine under the window: %v, want %v", got, held)
	}
	ws, err := g.ListWindows(ctx, store.WindowFilter{})
	if err != nil || len(ws) != 1 {
		t.Fatalf("ListWindows: %v %v", ws, err)
	}
	cur.Store(&phase{name: "nothing", held: func(store.Task) bool { return false }})
	if err := g.DeleteWindow(ctx, ws[0].ID); err != nil {
		t.Fatal(err)
	}
	waitUntil("every task", func() bool { return done.Load() == total+8 })
}
