package cronspec

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, expr, tz string) *Spec {
	t.Helper()
	s, err := Parse(expr, tz)
	if err != nil {
		t.Fatalf("Parse(%q, %q): %v", expr, tz, err)
	}
	return s
}

func paris(t *testing.T) *time.Location {
	t.Helper()
	l, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ expr, tz, says string }{
		{"", "", "empty"},
		{"   ", "", "empty"},
		{"0 2 * *", "", "expected exactly 5 fields"},
		{"0 0 2 * * *", "", "expected exactly 5 fields"},
		{"61 2 * * *", "", "above maximum"},
		{"0 2 * * mon-", "", "0 2 * * mon-"},
		{"*/0 * * * *", "", "step"},
		{"0 0 30 2 *", "", "never fires"},
		{"0 0 31 4 *", "", "never fires"},
		{"@every 10s", "", "at least 1m0s"},
		{"@every soon", "", "soon"},
		{"@fortnightly", "", "unrecognized descriptor"},
		{"TZ=Europe/Paris 0 2 * * *", "", "time zone separately"},
		{"CRON_TZ=UTC 0 2 * * *", "", "time zone separately"},
		{"TZ=UTC", "", "time zone separately"},
		{"0 2 * * *", "Mars/Olympus_Mons", "not an IANA zone"},
		{"0 2 * * *", "Local", "depends on the host"},
		{strings.Repeat("1,", 150) + "1 * * * *", "", "more than 200"},
	} {
		_, err := Parse(tc.expr, tc.tz)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("Parse(%q, %q) = %v, want ErrInvalid saying %q", tc.expr, tc.tz, err, tc.says)
		}
	}
}

func TestParseZones(t *testing.T) {
	for _, tc := range []struct{ tz, zone string }{{"", "UTC"}, {"UTC", "UTC"}, {"Europe/Paris", "Europe/Paris"}, {" Asia/Tokyo ", "Asia/Tokyo"}} {
		s := mustParse(t, "@daily", tc.tz)
		if s.Zone() != tc.zone || s.String() != "@daily" {
			t.Errorf("Parse(@daily, %q): zone %q, expr %q", tc.tz, s.Zone(), s.String())
		}
	}
}

func TestNextInZone(t *testing.T) {
	l := paris(t)
	s := mustParse(t, "0 2 * * *", "Europe/Paris")
	from := time.Date(2031, 6, 1, 12, 0, 0, 0, time.UTC)
	want := time.Date(2031, 6, 2, 2, 0, 0, 0, l)
	if got := s.Next(from); !got.Equal(want) || got.Location() != time.UTC {
		t.Fatalf("Next = %v, want %v (in UTC)", got, want.UTC())
	}
	// Descriptors.
	for expr, want := range map[string]time.Time{
		"@hourly":  time.Date(2031, 6, 1, 13, 0, 0, 0, time.UTC),
		"@daily":   time.Date(2031, 6, 2, 0, 0, 0, 0, time.UTC),
		"@weekly":  time.Date(2031, 6, 8, 0, 0, 0, 0, time.UTC), // Sunday
		"@monthly": time.Date(2031, 7, 1, 0, 0, 0, 0, time.UTC),
		"@yearly":  time.Date(2032, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		if got := mustParse(t, expr, "").Next(from); !got.Equal(want) {
			t.Errorf("%s: Next(%v) = %v, want %v", expr, from, got, want)
		}
	}
}

// fires steps the chain from `from` (exclusive) n times.
func fires(s *Spec, from time.Time, n int) []time.Time {
	var out []time.Time
	t := from
	for range n {
		t = s.Next(t)
		out = append(out, t)
	}
	return out
}

func wantTimes(t *testing.T, what string, got []time.Time, want ...time.Time) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
	for i := range got {
		if !got[i].Equal(want[i]) {
			t.Fatalf("%s: fire %d is %v, want %v (all: %v)", what, i, got[i], want[i].UTC(), got)
		}
	}
}

// Spring forward in Europe/Paris: on 2031-03-30 the clocks jump from 02:00
// CET to 03:00 CEST, so 02:30 does not exist that night: the nightly 02:30
// fire is skipped that night (the library's rule) and fires again the next
// night; a 01:30 and a 03:30 fire are unaffected; an hourly schedule fires
// at 01:00 CET then 03:00 CEST (one real hour later).
func TestSpringForwardNight(t *testing.T) {
	l := paris(t)
	eve := time.Date(2031, 3, 29, 12, 0, 0, 0, l)
	wantTimes(t, "30 2 * * *", fires(mustParse(t, "30 2 * * *", "Europe/Paris"), eve, 3),
		time.Date(2031, 3, 31, 2, 30, 0, 0, l), // the next night, CEST
		time.Date(2031, 4, 1, 2, 30, 0, 0, l),
		time.Date(2031, 4, 2, 2, 30, 0, 0, l))
	wantTimes(t, "30 1 * * *", fires(mustParse(t, "30 1 * * *", "Europe/Paris"), eve, 2),
		time.Date(2031, 3, 30, 0, 30, 0, 0, time.UTC),  // 01:30 CET
		time.Date(2031, 3, 30, 23, 30, 0, 0, time.UTC)) // 2031-03-31 01:30 CEST
	wantTimes(t, "30 3 * * *", fires(mustParse(t, "30 3 * * *", "Europe/Paris"), eve, 1),
		time.Date(2031, 3, 30, 1, 30, 0, 0, time.UTC)) // 03:30 CEST
	night := time.Date(2031, 3, 30, 0, 30, 0, 0, l)
	wantTimes(t, "0 * * * *", fires(mustParse(t, "0 * * * *", "Europe/Paris"), night, 3),
		time.Date(2031, 3, 30, 0, 0, 0, 0, time.UTC), // 01:00 CET
		time.Date(2031, 3, 30, 1, 0, 0, 0, time.UTC), // 03:00 CEST
		time.Date(2031, 3, 30, 2, 0, 0, 0, time.UTC)) // 04:00 CEST
	// @every ignores the local clock.
	wantTimes(t, "@every 1h", fires(mustParse(t, "@every 1h", "Europe/Paris"), time.Date(2031, 3, 30, 0, 0, 0, 0, time.UTC), 2),
		time.Date(2031, 3, 30, 1, 0, 0, 0, time.UTC), time.Date(2031, 3, 30, 2, 0, 0, 0, time.UTC))
}

// Fall back in Europe/Paris: on 2031-10-26 the clocks go from 03:00 CEST
// back to 02:00 CET, so 02:30 happens twice: the nightly 02:30 fire runs
// twice that night, an hour apart (the library's rule); 01:30 and 03:30
// once.
func TestFallBackNight(t *testing.T) {
	l := paris(t)
	eve := time.Date(2031, 10, 25, 12, 0, 0, 0, l)
	wantTimes(t, "30 2 * * *", fires(mustParse(t, "30 2 * * *", "Europe/Paris"), eve, 3),
		time.Date(2031, 10, 26, 0, 30, 0, 0, time.UTC), // 02:30 CEST
		time.Date(2031, 10, 26, 1, 30, 0, 0, time.UTC), // 02:30 CET
		time.Date(2031, 10, 27, 1, 30, 0, 0, time.UTC)) // next night, CET
	wantTimes(t, "30 1 * * *", fires(mustParse(t, "30 1 * * *", "Europe/Paris"), eve, 2),
		time.Date(2031, 10, 25, 23, 30, 0, 0, time.UTC), // 01:30 CEST
		time.Date(2031, 10, 27, 0, 30, 0, 0, time.UTC))  // 01:30 CET the next night
	wantTimes(t, "30 3 * * *", fires(mustParse(t, "30 3 * * *", "Europe/Paris"), eve, 1),
		time.Date(2031, 10, 26, 2, 30, 0, 0, time.UTC)) // 03:30 CET
}

// America/New_York as well (another zone, other dates): 2031-03-09 02:30
// does not exist, 2031-11-02 01:30 happens twice.
func TestNewYorkNights(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	wantTimes(t, "spring", fires(mustParse(t, "30 2 * * *", "America/New_York"), time.Date(2031, 3, 8, 12, 0, 0, 0, ny), 1),
		time.Date(2031, 3, 10, 2, 30, 0, 0, ny))
	wantTimes(t, "fall", fires(mustParse(t, "30 1 * * *", "America/New_York"), time.Date(2031, 11, 1, 12, 0, 0, 0, ny), 3),
		time.Date(2031, 11, 2, 5, 30, 0, 0, time.UTC), // 01:30 EDT
		time.Date(2031, 11, 2, 6, 30, 0, 0, time.UTC), // 01:30 EST
		time.Date(2031, 11, 3, 6, 30, 0, 0, time.UTC))
}

// bruteLastBefore steps the chain from next while before x.
func bruteLastBefore(s *Spec, next, x time.Time) (time.Time, bool) {
	if !next.Before(x) {
		return time.Time{}, false
	}
	f := next
	for {
		n := s.Next(f)
		if n.IsZero() || !n.Before(x) {
			return f, true
		}
		f = n
	}
}

func TestLastBeforeAndFirstAtOrAfter(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct{ expr, tz string }{
		{"*/7 * * * *", "UTC"}, {"30 2 * * *", "Europe/Paris"}, {"0 9 * * 1-5", "America/New_York"},
		{"15 */6 1,15 * *", "Asia/Kolkata"}, {"@every 90m", "UTC"}, {"@every 1h", "Europe/Paris"}, {"0 0 1 1 *", "UTC"},
	} {
		s := mustParse(t, tc.expr, tc.tz)
		for range 40 {
			next := s.Next(base.Add(time.Duration(r.Int64N(int64(300 * 24 * time.Hour)))))
			x := next.Add(time.Duration(r.Int64N(int64(20*24*time.Hour))) - time.Hour)
			got, ok := s.LastBefore(next, x)
			want, wok := bruteLastBefore(s, next, x)
			if ok != wok || !got.Equal(want) {
				t.Fatalf("%s: LastBefore(%v, %v) = %v %v, want %v %v", tc.expr, next, x, got, ok, want, wok)
			}
			wantFirst := next // the first fire at or after x: next, or the one after the last before x
			if ok {
				wantFirst = s.Next(got)
			}
			if first := s.FirstAtOrAfter(next, x); !first.Equal(wantFirst) {
				t.Fatalf("%s: FirstAtOrAfter(%v, %v) = %v, want %v", tc.expr, next, x, first, wantFirst)
			}
		}
	}
}

// A yearly schedule missed for three years: LastBefore finds the last
// missed fire without stepping through a per-minute schedule's worth of
// fires, and a per-minute schedule missed for 60 days is still exact.
func TestLastBeforeLongOutage(t *testing.T) {
	y := mustParse(t, "0 0 1 1 *", "UTC")
	next := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	if got, _ := y.LastBefore(next, time.Date(2034, 6, 1, 0, 0, 0, 0, time.UTC)); !got.Equal(time.Date(2034, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("yearly: %v", got)
	}
	m := mustParse(t, "* * * * *", "UTC")
	x := next.Add(60*24*time.Hour + 30*time.Second)
	if got, _ := m.LastBefore(next, x); !got.Equal(x.Truncate(time.Minute)) {
		t.Fatalf("per minute: %v, want %v", got, x.Truncate(time.Minute))
	}
}

func TestDue(t *testing.T) {
	s := mustParse(t, "0 2 * * *", "UTC")
	d2 := time.Date(2031, 5, 2, 2, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	for _, tc := range []struct {
		name         string
		next, now    time.Time
		fire         time.Time
		missedFrom   time.Time
		missedTo     time.Time
		wantNext     time.Time
		wantNothing  bool
		wantNotFired bool
	}{
		{name: "not yet", next: d2, now: d2.Add(-time.Second), wantNothing: true},
		{name: "on time", next: d2, now: d2.Add(200 * time.Millisecond), fire: d2, wantNext: d2.Add(day)},
		{name: "late within threshold", next: d2, now: d2.Add(59 * time.Second), fire: d2, wantNext: d2.Add(day)},
		{name: "late past threshold", next: d2, now: d2.Add(61 * time.Second), missedFrom: d2, missedTo: d2, wantNext: d2.Add(day)},
		{name: "three days away", next: d2, now: d2.Add(3*day + 5*time.Hour), missedFrom: d2, missedTo: d2.Add(3 * day), wantNext: d2.Add(4 * day)},
		{name: "back just in time", next: d2, now: d2.Add(3*day + 10*time.Second), fire: d2.Add(3 * day), missedFrom: d2, missedTo: d2.Add(2 * day), wantNext: d2.Add(4 * day)},
	} {
		d := s.Due(tc.next, tc.now, time.Minute)
		if tc.wantNothing {
			if !d.Fire.IsZero() || d.Missed() || !d.Next.Equal(tc.next) {
				t.Errorf("%s: %+v, want nothing due", tc.name, d)
			}
			continue
		}
		if !d.Fire.Equal(tc.fire) || !d.MissedFrom.Equal(tc.missedFrom) || !d.MissedTo.Equal(tc.missedTo) || !d.Next.Equal(tc.wantNext) {
			t.Errorf("%s: %+v, want fire %v missed %v..%v next %v", tc.name, d, tc.fire, tc.missedFrom, tc.missedTo, tc.wantNext)
		}
		if !d.Next.After(tc.now) {
			t.Errorf("%s: next %v is not after now %v", tc.name, d.Next, tc.now)
		}
	}
}

// The decision after a long outage is one step whatever the outage's
// length: never a burst of fires.
func TestDueNeverBursts(t *testing.T) {
	s := mustParse(t, "*/5 * * * *", "Europe/Paris")
	next := time.Date(2031, 5, 1, 0, 0, 0, 0, time.UTC)
	now := next.Add(40*24*time.Hour + 2*time.Minute)
	d := s.Due(next, now, time.Minute)
	if !d.Fire.IsZero() || !d.MissedFrom.Equal(next) || !d.MissedTo.Equal(now.Truncate(5*time.Minute)) || !d.Next.Equal(now.Truncate(5*time.Minute).Add(5*time.Minute)) {
		t.Fatalf("%+v", d)
	}
	// Deciding again at the same instant from the new next: nothing.
	if again := s.Due(d.Next, now, time.Minute); !again.Fire.IsZero() || again.Missed() {
		t.Fatalf("second decision: %+v", again)
	}
}

func TestWindow(t *testing.T) {
	l := paris(t)
	w, err := NewWindow(mustParse(t, "0 2 * * *", "Europe/Paris"), 3*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	day := time.Date(2031, 6, 10, 0, 0, 0, 0, l)
	for _, tc := range []struct {
		at           time.Time
		open         bool
		until, opens time.Time
	}{
		{day.Add(time.Hour), false, time.Time{}, day.Add(2 * time.Hour)},
		{day.Add(2 * time.Hour), true, day.Add(5 * time.Hour), time.Time{}},
		{day.Add(4*time.Hour + 59*time.Minute), true, day.Add(5 * time.Hour), time.Time{}},
		{day.Add(5 * time.Hour), false, time.Time{}, day.Add(26 * time.Hour)},
	} {
		open, until, opens := w.State(tc.at)
		if open != tc.open || !until.Equal(tc.until) || !opens.Equal(tc.opens) {
			t.Errorf("at %v: open %v until %v opens %v; want %v %v %v", tc.at, open, until, opens, tc.open, tc.until, tc.opens)
		}
	}
	// Periods that touch or overlap are one period: hourly starts for 90
	// minutes are always open once started.
	h, _ := NewWindow(mustParse(t, "0 * * * *", "UTC"), 90*time.Minute)
	if open, until, _ := h.State(time.Date(2031, 6, 10, 3, 10, 0, 0, time.UTC)); !open || until.Sub(time.Date(2031, 6, 10, 3, 10, 0, 0, time.UTC)) < 24*time.Hour {
		t.Errorf("overlapping periods: open %v until %v", open, until)
	}
	// Spring forward: the 02:00 start does not exist on 2031-03-30, so the
	// window does not open that night (the library's rule).
	if open, _, opens := w.State(time.Date(2031, 3, 30, 1, 30, 0, 0, time.UTC)); open || !opens.Equal(time.Date(2031, 3, 31, 2, 0, 0, 0, l)) {
		t.Errorf("spring forward: open %v opens %v", open, opens)
	}
	if _, err := NewWindow(mustParse(t, "@every 2h", ""), time.Hour); !errors.Is(err, ErrInvalid) {
		t.Errorf("@every window: %v", err)
	}
	for _, d := range []time.Duration{0, 30 * time.Second, 8 * 24 * time.Hour} {
		if _, err := NewWindow(mustParse(t, "@daily", ""), d); !errors.Is(err, ErrInvalid) {
			t.Errorf("duration %v: %v", d, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"0 2 * * *", "@every 5m", "*/3 1-5 * JAN-MAR MON-FRI", "TZ=", "@", "0 0 30 2 *", "1-,* * * * *"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		s, err := Parse(expr, "Europe/Paris")
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q): %v is not ErrInvalid", expr, err)
			}
			return
		}
		from := time.Date(2031, 3, 29, 0, 0, 0, 0, time.UTC)
		if n := s.Next(from); !n.IsZero() && !n.After(from) {
			t.Fatalf("Parse(%q).Next(%v) = %v", expr, from, n)
		}
	})
}
