package alert

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// DefaultWindow is the default [RateLimitConfig].Window: 5 minutes.
const DefaultWindow = 5 * time.Minute

// DefaultKey is the condition an alert reports, for [RateLimiter]: a.Key
// when set; otherwise Kind, Team, Machine, Priority and TaskID together
// (the team's and machine's ids when set, else their names, so that two
// teams that had the same name are two conditions).
// For the threshold kinds TaskID is empty, so the condition is "this kind,
// on this team/machine (and priority level, for queue alerts)"; for
// task.failed every task is its own condition, so failures of different
// tasks are never suppressed, only a repeated alert for the same task.
func DefaultKey(a Alert) string {
	if a.Key != "" {
		return a.Key
	}
	team, machine := a.Team, a.Machine
	if a.TeamID != "" {
		team = "id:" + a.TeamID
	}
	if a.MachineID != "" {
		machine = "id:" + a.MachineID
	}
	return strings.Join([]string{a.Kind, team, machine, strconv.Itoa(a.Priority), a.TaskID}, "\x00")
}

// RateLimitConfig configures a [RateLimiter]. The zero value is usable.
type RateLimitConfig struct {
	// Window: after an alert for a condition goes through, further alerts
	// for it are suppressed until Window has passed. Default
	// [DefaultWindow] (5 min).
	Window time.Duration
	// Key names an alert's condition. Default [DefaultKey].
	Key func(Alert) string
	// Clock returns the current time. Default time.Now.
	Clock func() time.Time
}

// RateLimiter is a [Sender] that passes at most one alert per condition
// (see [RateLimitConfig].Key) per window to the next sender, using a token
// bucket per condition (golang.org/x/time/rate: one token, refilled once
// per window). Suppressed alerts are counted: in total ([RateLimiter.Suppressed])
// and per condition, in the [Alert].Suppressed field of the next alert for
// that condition that goes through. Conditions idle for two windows are
// forgotten (with their pending count), so memory follows the number of
// conditions active in the last two or three windows.
type RateLimiter struct {
	next Sender
	cfg  RateLimitConfig

	mu        sync.Mutex
	conds     map[string]*condition
	lastSweep time.Time

	suppressed atomic.Uint64
}

type condition struct {
	lim        *rate.Limiter
	last       time.Time // last alert seen, sent or not
	suppressed int       // since the last one sent
}

// NewRateLimiter returns a RateLimiter in front of next.
func NewRateLimiter(next Sender, cfg RateLimitConfig) *RateLimiter {
	setDefault(&cfg.Window, DefaultWindow)
	if cfg.Key == nil {
		cfg.Key = DefaultKey
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	return &RateLimiter{next: next, cfg: cfg, conds: map[string]*condition{}}
}

// Send passes a to the next sender, with a.Suppressed set, unless an alert
// for the same condition went through less than a window ago: then it
// counts a as suppressed and returns nil. It returns the next sender's
// error.
func (r *RateLimiter) Send(ctx context.Context, a Alert) error {
	key := r.cfg.Key(a)
	now := r.cfg.Clock()
	r.mu.Lock()
	r.sweep(now)
	c := r.conds[key]
	if c == nil {
		c = &condition{lim: rate.NewLimiter(rate.Every(r.cfg.Window), 1)}
		r.conds[key] = c
	}
	c.last = now
	if !c.lim.AllowN(now, 1) {
		c.suppressed++
		r.mu.Unlock()
		r.suppressed.Add(1)
		return nil
	}
	a.Suppressed, c.suppressed = c.suppressed, 0
	r.mu.Unlock()
	return r.next.Send(ctx, a)
}

// sweep forgets, at most once per window, conditions not seen for two
// windows: their bucket is full again, so forgetting them loses only a
// pending suppressed count that old. Called with r.mu held.
func (r *RateLimiter) sweep(now time.Time) {
	if now.Sub(r.lastSweep) < r.cfg.Window {
		return
	}
	r.lastSweep = now
	for k, c := range r.conds {
		if now.Sub(c.last) >= 2*r.cfg.Window {
			delete(r.conds, k)
		}
	}
}

// Suppressed returns how many alerts have been suppressed in total.
func (r *RateLimiter) Suppressed() uint64 { return r.suppressed.Load() }

// Close closes the next sender if it is a [Closer].
func (r *RateLimiter) Close(ctx context.Context) error {
	if c, ok := r.next.(Closer); ok {
		return c.Close(ctx)
	}
	return nil
}
