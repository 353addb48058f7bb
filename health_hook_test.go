package rediacc

import (
	"context"
	"encoding/json"
	"time"

	"github.com/rediacc/rediacc/internal/health"
)

// SetMachineHealthForTest stores a health sample (nil: none) and probe error
// for a machine, judged as if the machine had been sampled steadily at s,
// and drops the cached busy list: tests make one machine of several look
// busy or failing.
func SetMachineHealthForTest(c *Client, name string, s *HealthSample, probeErr string, at time.Time) error {
	rec := healthRecord{Sample: s, Error: probeErr}
	if s != nil { // judged as a machine sampled steadily at s, over half the time constant
		var j health.Judgement
		r := c.healthRules()
		step := max(r.Smoothing/2/time.Duration(health.MinBusySamples-1), time.Second)
		for i := health.MinBusySamples - 1; i >= 0; i-- {
			j = r.Next(j, health.Sample{At: at.Add(-time.Duration(i) * step), CPUPercent: s.CPUPercent, MemUsedPercent: s.MemUsedPercent})
		}
		rec.Judged, rec.JudgedUntil = &j, j.At.Add(c.staleAfter()) // as c's prober stores it (nextHealth)
	}
	raw, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	m, err := c.engine.MachineByName(context.Background(), name)
	if err != nil {
		return err
	}
	if err := c.engine.SetMachineHealth(context.Background(), m.ID, raw, at); err != nil {
		return err
	}
	c.hstate.mu.Lock()
	c.hstate.busyAt = time.Time{}
	c.hstate.mu.Unlock()
	return nil
}
