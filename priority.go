package rediacc

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/rediacc/rediacc/internal/sched"
)

// Priority orders tasks: 1 is the highest, 5 the lowest. The zero value means
// "not set" and becomes Normal on submit.
//
// The levels, in the product guide's words: 1 critical (database backups,
// emergency fixes: run immediately), 2 important and time-sensitive
// (deployments, security patches), 3 standard (regular syncs, reports; the
// default), 4 background (cleanup, maintenance), 5 low (archives, logs).
type Priority int

// The five priority levels.
const (
	Critical Priority = 1
	High     Priority = 2
	Normal   Priority = 3
	Low      Priority = 4
	Minimal  Priority = 5
)

var priorityNames = [...]string{"", "critical", "high", "normal", "low", "minimal"}

// ParsePriority reads a priority from a number "1".."5" or a name
// ("critical", "high", "normal", "low", "minimal"; case-insensitive; leading
// and trailing spaces ignored). Anything else returns ErrInvalidPriority
// naming the input.
func ParsePriority(s string) (Priority, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	if n, err := strconv.Atoi(t); err == nil {
		p := Priority(n)
		if err := p.Validate(); err != nil {
			return 0, err
		}
		return p, nil
	}
	for i, name := range priorityNames {
		if i > 0 && t == name {
			return Priority(i), nil
		}
	}
	return 0, fmt.Errorf("%w: got %s (use 1..5 or critical, high, normal, low, minimal)", ErrInvalidPriority, quoteInput(s))
}

// Validate returns ErrInvalidPriority unless p is in 1..5.
func (p Priority) Validate() error {
	if p < Critical || p > Minimal {
		return fmt.Errorf("%w: got %d", ErrInvalidPriority, int(p))
	}
	return nil
}

// String returns the level's name ("critical" … "minimal"), or "priority(N)"
// for a value outside 1..5.
func (p Priority) String() string {
	if p >= Critical && p <= Minimal {
		return priorityNames[p]
	}
	return "priority(" + strconv.Itoa(int(p)) + ")"
}

// MarshalJSON writes the priority as its number.
func (p Priority) MarshalJSON() ([]byte, error) { return []byte(strconv.Itoa(int(p))), nil }

// UnmarshalJSON accepts a number 1..5 or a level name.
func (p *Priority) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		s = string(b)
	}
	v, err := ParsePriority(s)
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// DefaultAgingInterval is how long a task waits before its effective priority
// rises one level, unless Config.AgingInterval says otherwise.
const DefaultAgingInterval = 5 * time.Minute

// EffectivePriority is the level a task of priority p that has waited since
// enqueued is scheduled at, at time now: p raised one level per aging
// interval of waiting, never above Critical. aging <= 0 disables aging.
//
// Tasks are claimed by effective priority, then first in, first out. Aging is
// what keeps a level-5 task from starving behind a steady stream of higher
// ones (the failure asynq's strict priority mode is known for); the one slot
// per machine held back for priority 1 (Config.ReserveCriticalSlot) is what
// keeps a critical task from waiting behind a machine full of lower work.
func EffectivePriority(p Priority, enqueued, now time.Time, aging time.Duration) Priority {
	return Priority(sched.EffectivePriority(int(p), enqueued, now, aging))
}
