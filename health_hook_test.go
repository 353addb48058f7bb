package rediacc

import (
	"context"
	"encoding/json"
	"time"
)

// SetMachineHealthForTest stores a health sample (nil: none) and probe error
// for a machine, as a probe would, and drops the cached busy list: tests
// make one machine of several look busy or failing.
func SetMachineHealthForTest(c *Client, name string, s *HealthSample, probeErr string, at time.Time) error {
	raw, err := json.Marshal(healthRecord{Sample: s, Error: probeErr})
	if err != nil {
		return err
	}
	if err := c.engine.SetMachineHealth(context.Background(), name, raw, at); err != nil {
		return err
	}
	c.hstate.mu.Lock()
	c.hstate.busyAt = time.Time{}
	c.hstate.mu.Unlock()
	return nil
}
