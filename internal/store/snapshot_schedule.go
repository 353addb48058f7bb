package store

import (
	"context"
	"fmt"
)

// readScheduleSnapshot adds e's schedules (with their kept fires), gates
// and maintenance windows to s, when e keeps them (Schedules, Gates).
func readScheduleSnapshot(ctx context.Context, e Engine, s *Snapshot) error {
	if se, ok := e.(Schedules); ok {
		ss, err := se.ListSchedules(ctx, ScheduleFilter{})
		if err != nil {
			return fmt.Errorf("reading schedules: %w", err)
		}
		s.Schedules = ss
		for _, sc := range ss {
			fs, err := se.ListFires(ctx, sc.ID, 0)
			if err != nil {
				return fmt.Errorf("reading the fires of schedule %s: %w", sc.Name, err)
			}
			for i := len(fs) - 1; i >= 0; i-- { // oldest first
				s.Fires = append(s.Fires, fs[i])
			}
		}
	}
	if ge, ok := e.(Gates); ok {
		var err error
		if s.Gates, err = ge.ListGates(ctx); err != nil {
			return fmt.Errorf("reading gates: %w", err)
		}
		if s.Windows, err = ge.ListWindows(ctx, WindowFilter{}); err != nil {
			return fmt.Errorf("reading maintenance windows: %w", err)
		}
	}
	return nil
}
