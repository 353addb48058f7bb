// Package cronspec reads cron expressions in an IANA time zone and answers
// the time questions of schedules and maintenance windows: when is the next
// fire, which fires were missed while nobody was watching, is a window open
// now and when does it open or close. Expressions are parsed by
// github.com/robfig/cron/v3 (five fields — minute, hour, day of month,
// month, day of week — and the descriptors @yearly, @monthly, @weekly,
// @daily, @hourly and @every DURATION); daylight-saving changes are handled
// as that library defines them:
//
//   - spring forward: a time that does not exist that night (02:30 in
//     Europe/Paris on the last Sunday of March) does not fire that night;
//     the next fire is the following matching time that exists (02:30 the
//     next day for "30 2 * * *");
//   - fall back: a time that happens twice that night (02:30 in
//     Europe/Paris on the last Sunday of October) fires twice, once in each
//     offset (02:30 CEST, then 02:30 CET an hour later);
//   - hourly and finer expressions fire at every matching instant of the
//     local clock (so the repeated hour is fired twice and the skipped
//     hour not at all).
//
// @every DURATION fires every DURATION after the first fire, whatever the
// local clock says (it is unaffected by daylight saving).
//
// The package does no I/O and reads no clock: every instant is passed in.
package cronspec

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// ErrInvalid is the error class of a bad expression, time zone or window.
var ErrInvalid = errors.New("invalid time specification")

// MinEvery is the shortest @every interval accepted: one minute, the
// period of the finest five-field expression ("* * * * *").
const MinEvery = time.Minute

// horizon is how far ahead Parse looks for a first fire: robfig/cron gives
// up after five years.
const horizon = 5 * 366 * 24 * time.Hour

var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Spec is a parsed expression in a time zone. Its methods are safe for
// concurrent use.
type Spec struct {
	expr  string
	zone  string
	loc   *time.Location
	sched cron.Schedule
	every time.Duration // > 0 for @every
}

// Parse reads expr (five fields, or a descriptor) in the IANA time zone tz
// ("" means UTC). "Local" is refused: a store shared by hosts must not
// depend on one host's zone, and a TZ= or CRON_TZ= prefix is refused in
// favour of tz. An expression that never fires (such as "0 0 30 2 *") is
// refused too. Errors wrap ErrInvalid and say what was wrong.
func Parse(expr, tz string) (s *Spec, err error) {
	expr = strings.TrimSpace(expr)
	bad := func(format string, a ...any) (*Spec, error) {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
	}
	switch {
	case expr == "":
		return bad("empty cron expression (use five fields such as \"0 2 * * *\", or @daily, @hourly, @every 10m)")
	case strings.HasPrefix(expr, "TZ=") || strings.HasPrefix(expr, "CRON_TZ="):
		return bad("cron expression %q: give the time zone separately (--tz, TimeZone), not as a prefix", expr)
	case len(expr) > 200:
		return bad("cron expression is %d bytes, more than 200", len(expr))
	}
	loc, zone, err := LoadZone(tz)
	if err != nil {
		return nil, err
	}
	defer func() { // the parser should not panic; if it does, it is bad input
		if r := recover(); r != nil {
			s, err = bad("cron expression %q: %v", expr, r)
		}
	}()
	sched, err := parser.Parse(expr)
	if err != nil {
		return bad("cron expression %q: %v (use five fields: minute hour day-of-month month day-of-week, or @daily, @hourly, @every 10m)", expr, err)
	}
	s = &Spec{expr: expr, zone: zone, loc: loc, sched: sched}
	switch c := sched.(type) {
	case *cron.SpecSchedule:
		c.Location = loc
	case cron.ConstantDelaySchedule:
		if c.Delay < MinEvery {
			return bad("cron expression %q: @every needs at least %s", expr, MinEvery)
		}
		s.every = c.Delay
	default:
		return bad("cron expression %q: unsupported schedule type %T", expr, sched)
	}
	ref := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC) // a leap year starts the horizon
	if s.every == 0 && s.sched.Next(ref).IsZero() {
		return bad("cron expression %q never fires (no date matches it within %d years)", expr, int(horizon.Hours()/24/366))
	}
	return s, nil
}

// LoadZone loads the IANA time zone tz ("" means UTC) and returns it with
// its canonical name ("UTC" for ""). "Local" is refused. Errors wrap
// ErrInvalid.
func LoadZone(tz string) (*time.Location, string, error) {
	tz = strings.TrimSpace(tz)
	switch tz {
	case "", "UTC":
		return time.UTC, "UTC", nil
	case "Local":
		return nil, "", fmt.Errorf("%w: time zone \"Local\" depends on the host: name an IANA zone such as Europe/Paris or UTC", ErrInvalid)
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, "", fmt.Errorf("%w: time zone %q is not an IANA zone name such as Europe/Paris or America/New_York (%v)", ErrInvalid, tz, err)
	}
	return loc, loc.String(), nil
}

// String returns the expression as given.
func (s *Spec) String() string { return s.expr }

// Zone returns the time zone's name ("UTC" when none was given).
func (s *Spec) Zone() string { return s.zone }

// Location returns the time zone.
func (s *Spec) Location() *time.Location { return s.loc }

// Every returns the interval of an @every expression, 0 for the others.
func (s *Spec) Every() time.Duration { return s.every }

// Next returns the first fire strictly after t, in UTC; zero when there is
// none within the library's five-year horizon. For @every it is t plus the
// interval (t's fraction of a second dropped): step a chain of fires with
// Next(previous fire).
func (s *Spec) Next(t time.Time) time.Time {
	n := s.sched.Next(t)
	if n.IsZero() {
		return n
	}
	return n.UTC()
}

// FirstAtOrAfter returns the first fire of the chain that starts at next (a
// fire) which is at or after x: next itself when it is not before x. Zero
// when there is none within the horizon.
func (s *Spec) FirstAtOrAfter(next, x time.Time) time.Time {
	if !next.Before(x) {
		return next.UTC()
	}
	if s.every > 0 {
		k := (x.Sub(next) + s.every - 1) / s.every // ceil; both positive
		return next.Add(k * s.every).UTC()
	}
	// Next rounds up to the next whole second after its argument; fires
	// are whole seconds, so the first fire at or after x follows x-1ns.
	return s.Next(x.Add(-time.Nanosecond))
}

// maxSteps bounds the fires LastBefore steps through in one window.
const maxSteps = 100_000

// LastBefore returns the last fire of the chain that starts at next which
// is strictly before x, and false when next is not before x. It looks in
// growing windows back from x (an hour, a day, a month, a year, the
// horizon) and steps fire by fire only within the first window that has
// one, so a long outage costs a bounded number of steps.
func (s *Spec) LastBefore(next, x time.Time) (time.Time, bool) {
	if !next.Before(x) {
		return time.Time{}, false
	}
	if s.every > 0 {
		k := (x.Sub(next) - 1) / s.every // floor of (x-next-1ns)/every: next+k*every < x
		return next.Add(k * s.every).UTC(), true
	}
	for _, w := range []time.Duration{time.Hour, 24 * time.Hour, 32 * 24 * time.Hour, 367 * 24 * time.Hour, horizon} {
		from := x.Add(-w)
		if from.Before(next) {
			from = next
		}
		f := s.FirstAtOrAfter(next, from)
		if f.IsZero() || !f.Before(x) {
			continue // no fire in this window (never so once from is next)
		}
		for range maxSteps {
			n := s.Next(f)
			if n.IsZero() || !n.Before(x) {
				break
			}
			f = n
		}
		return f, true
	}
	return next.UTC(), true // not reached: the last window starts at next, a fire before x
}

// Due is what a schedule should do at one instant (see Spec.Due).
type Due struct {
	// Fire is the fire to run now: the latest fire at or before now, when
	// it is at most the misfire threshold old. Zero when none is on time.
	Fire time.Time
	// MissedFrom and MissedTo are the first and the last fire that were
	// missed (due, never run, and now older than the threshold, or before
	// the on-time Fire); zero when none was missed.
	MissedFrom, MissedTo time.Time
	// Next is the schedule's next fire after this decision (after now);
	// zero when the expression fires no more within the horizon.
	Next time.Time
}

// Missed reports whether fires were missed.
func (d Due) Missed() bool { return !d.MissedFrom.IsZero() }

// Due decides, at instant now, for a schedule whose earliest unfired fire
// is next: the latest fire at or before now is run when it is at most
// threshold old (Quartz's misfire threshold); every earlier due fire is
// missed, and so is the latest one when it is older. At most one fire is
// run per decision, so a worker that was away never fires a burst. When
// next is after now nothing is due and Next is next.
func (s *Spec) Due(next, now time.Time, threshold time.Duration) Due {
	if next.IsZero() || next.After(now) {
		return Due{Next: next}
	}
	latest, _ := s.LastBefore(next, now.Add(time.Nanosecond)) // the last fire <= now
	var d Due
	if now.Sub(latest) <= threshold {
		d.Fire = latest
		if last, ok := s.LastBefore(next, latest); ok {
			d.MissedFrom, d.MissedTo = next.UTC(), last
		}
	} else {
		d.MissedFrom, d.MissedTo = next.UTC(), latest
	}
	d.Next = s.Next(latest)
	return d
}

// Window is a recurring period: it opens at each fire of Start and stays
// open for Duration (a maintenance window, "off-peak hours"). Windows whose
// periods touch or overlap make one longer period.
type Window struct {
	Start    *Spec
	Duration time.Duration
}

// MaxWindowDuration bounds a window's duration: a week.
const MaxWindowDuration = 7 * 24 * time.Hour

// NewWindow checks a window: a five-field or descriptor start (not @every,
// which has no fixed place in the calendar) and a duration of one minute to
// MaxWindowDuration. Errors wrap ErrInvalid.
func NewWindow(start *Spec, d time.Duration) (Window, error) {
	switch {
	case start.every > 0:
		return Window{}, fmt.Errorf("%w: a window's start %q must be a calendar time (five fields or @daily …), not @every", ErrInvalid, start.expr)
	case d < time.Minute || d > MaxWindowDuration:
		return Window{}, fmt.Errorf("%w: a window's duration %s must be between 1m and %s", ErrInvalid, d, MaxWindowDuration)
	}
	return Window{Start: start, Duration: d}, nil
}

// State says whether the window is open at t and until when, or when it
// opens next (open false; zero when it never opens again within the
// horizon). A period that began at s covers [s, s+Duration).
func (w Window) State(t time.Time) (open bool, until, opens time.Time) {
	s := w.Start.Next(t.Add(-w.Duration)) // the first start after t-Duration
	if s.IsZero() || s.After(t) {
		return false, time.Time{}, s // the next start, or zero
	}
	end := s.Add(w.Duration)
	for range maxSteps {
		n := w.Start.Next(s)
		if n.IsZero() || n.After(end) {
			break
		}
		s, end = n, n.Add(w.Duration)
	}
	return true, end.UTC(), time.Time{}
}
