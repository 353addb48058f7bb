package health

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// Judging load. One probe sees the CPU over ~200 ms, which says little: a
// machine is judged on an exponentially weighted moving average (EWMA) of
// its samples, and with hysteresis: it becomes busy when the average rises
// above a threshold (after at least MinBusySamples samples spanning at least
// half the time constant, see Rules.Smoothing) and stops being
// busy only when the average falls below the threshold minus the
// hysteresis band, so a load hovering at the threshold does not flap.

// Defaults of [Rules].
const (
	// DefaultHysteresis is the band, in percentage points, below a
	// threshold that the average must fall to before a busy machine is
	// no longer busy: busy above 90 %, free again below 80 %.
	DefaultHysteresis = 10.0
	// MinBusySamples is how many samples the average must rest on before
	// it can make a machine busy: one sample alone never does.
	MinBusySamples = 2
)

// Rules are how samples are judged.
type Rules struct {
	// Thresholds: busy when the average is above either.
	Thresholds Thresholds
	// Hysteresis in percentage points (see DefaultHysteresis). Negative
	// means 0 (no band); 0 means the default.
	Hysteresis float64
	// Smoothing is the EWMA's time constant τ: a sample taken dt after the
	// previous one weighs 1 - exp(-dt/τ). The average can make a machine
	// busy only once its samples span at least τ/2 (a load seen for a
	// moment, even by several probes in a row, is not sustained). 0 or
	// less: no smoothing (each sample replaces the average; only
	// MinBusySamples applies).
	Smoothing time.Duration
	// Stale: a sample taken more than Stale after the previous one starts
	// a new average (the old one says nothing about now). 0: never.
	Stale time.Duration
}

// Judgement is a machine's smoothed load and busy state after its samples.
type Judgement struct {
	// CPUPercent and MemPercent are the averages (0–100).
	CPUPercent float64 `json:"cpuPercent"`
	MemPercent float64 `json:"memPercent"`
	// Samples is how many samples the average rests on (reset by a stale
	// gap).
	Samples int `json:"samples"`
	// At is the last sample's time; First the first sample's of this
	// average (zero in judgements stored before it was kept).
	At    time.Time `json:"at"`
	First time.Time `json:"first,omitzero"`
	// Busy is the judgement; Since is when it last changed to busy, and
	// Why says which average is above which threshold ("CPU 97 % > 90 %").
	Busy  bool      `json:"busy,omitempty"`
	Since time.Time `json:"since,omitzero"`
	Why   string    `json:"why,omitempty"`
}

func (r Rules) band() float64 {
	switch {
	case r.Hysteresis < 0:
		return 0
	case r.Hysteresis == 0:
		return DefaultHysteresis
	}
	return r.Hysteresis
}

func (r Rules) thresholds() (cpu, mem float64) {
	th := r.Thresholds
	if th.CPUPercent == 0 {
		th.CPUPercent = DefaultCPUPercent
	}
	if th.MemPercent == 0 {
		th.MemPercent = DefaultMemPercent
	}
	return th.CPUPercent, th.MemPercent
}

// Next returns the judgement after sample s, given the previous one (the
// zero Judgement when none). A sample not after prev.At (out of order)
// leaves prev as it is.
func (r Rules) Next(prev Judgement, s Sample) Judgement {
	if prev.Samples > 0 && !s.At.After(prev.At) {
		return prev
	}
	j := prev
	dt := s.At.Sub(prev.At)
	if prev.Samples == 0 || (r.Stale > 0 && dt > r.Stale) {
		j = Judgement{CPUPercent: s.CPUPercent, MemPercent: s.MemUsedPercent, First: s.At}
	} else {
		if j.First.IsZero() { // stored before First was kept: count from the last sample
			j.First = prev.At
		}
		w := 1.0
		if r.Smoothing > 0 {
			w = 1 - math.Exp(-float64(dt)/float64(r.Smoothing))
		}
		j.CPUPercent += w * (s.CPUPercent - j.CPUPercent)
		j.MemPercent += w * (s.MemUsedPercent - j.MemPercent)
	}
	j.Samples++
	j.At = s.At
	cpu, mem := r.thresholds()
	over := j.over(cpu, mem)
	switch {
	case !j.Busy && j.Samples >= MinBusySamples && s.At.Sub(j.First) >= r.Smoothing/2 && len(over) > 0:
		j.Busy, j.Since = true, s.At
	case j.Busy && len(j.over(cpu-r.band(), mem-r.band())) == 0:
		j.Busy, j.Since = false, time.Time{}
	}
	j.Why = ""
	if j.Busy {
		if len(over) == 0 { // busy still, inside the band
			over = j.overIn(cpu-r.band(), mem-r.band(), "%s %.0f %% (busy until below %.0f %%)")
		}
		j.Why = strings.Join(over, ", ")
	}
	return j
}

// over lists the averages above the given thresholds, as "CPU 97 % > 90 %".
func (j Judgement) over(cpu, mem float64) []string {
	return j.overIn(cpu, mem, "%s %.0f %% > %.0f %%")
}

func (j Judgement) overIn(cpu, mem float64, format string) []string {
	var out []string
	if j.CPUPercent > cpu {
		out = append(out, fmt.Sprintf(format, "CPU", j.CPUPercent, cpu))
	}
	if j.MemPercent > mem {
		out = append(out, fmt.Sprintf(format, "memory", j.MemPercent, mem))
	}
	return out
}
