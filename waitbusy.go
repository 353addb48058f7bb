package rediacc

import (
	"fmt"
	"time"

	"github.com/rediacc/rediacc/internal/sched"
	"github.com/rediacc/rediacc/internal/store"
)

// The busy gate's end, as a waiting task states it (HealthConfig): the
// gate's own end by aging or MaxHold, or the lapse of the busy judgement
// that holds it, whichever comes first. The lapse is stored with the
// judgement by its prober (healthRecord.JudgedUntil), so a worker whose
// own probes are off ends the gate when every other worker does, and says
// when.

// busyUntil is when a busy machine's gate ends for a task by time alone:
// gateEnd (aging, MaxHold; zero: neither applies) or the lapse of the
// machine's judgement h, whichever comes first.
func busyUntil(h healthView, gateEnd time.Time) time.Time {
	if h.lapse.IsZero() || (!gateEnd.IsZero() && !h.lapse.Before(gateEnd)) {
		return gateEnd
	}
	return h.lapse
}

// busyMessage says why task r waits on its busy machine (judgement h) and
// until when: end is busyUntil(h, gateEnd).
func (w *waitView) busyMessage(r store.Task, h healthView, p sched.Policy, gateEnd, end time.Time) string {
	j := h.rec.Judged
	msg := fmt.Sprintf("machine %s busy: %s since %s; priority %d work waits ",
		r.Machine, j.Why, w.clock(j.Since), sched.EffectivePriority(r.Priority, r.EnqueuedAt, w.now, p.Aging))
	how := "aging lifts it to priority 2"
	if p.MaxHold > 0 && gateEnd.Equal(r.EnqueuedAt.Add(p.MaxHold)) {
		how = fmt.Sprintf("the maximum hold of %s", p.MaxHold)
	}
	switch {
	case end.IsZero():
		return msg + "until the machine is free (no aging, no maximum hold)"
	case end.Equal(gateEnd):
		return msg + fmt.Sprintf("until %s (%s) or until the machine is free", w.clock(end), how)
	}
	msg += fmt.Sprintf("until %s, when the busy judgement of the probe at %s lapses unless a new probe renews it, or until the machine is free",
		w.clock(end), w.clock(j.At))
	if gateEnd.IsZero() {
		return msg + "; renewed, it holds until the machine is free (no aging, no maximum hold)"
	}
	return msg + fmt.Sprintf("; renewed, it holds at most until %s (%s)", w.clock(gateEnd), how)
}

// renewsLapse reports whether x, a wait of task r, ends at its machine's
// busy judgement's lapse while this worker's own probes renew that
// judgement: then the lapse is no end by time alone for RunUntilEmpty (a
// probe may find the machine free, but time alone does not end the wait).
func (c *Client) renewsLapse(w *waitView, r store.Task, x WaitReason) bool {
	if x.Code != WaitMachineBusy || c.cfg.Health.Interval <= 0 || !c.probesMachine(r.Machine) {
		return false
	}
	return x.Until.Equal(w.machine(r.MachineID).h.lapse)
}
