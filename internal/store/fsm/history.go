package fsm

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/rediacc/rediacc/internal/store"
)

// The SQL engines keep a task's History as a JSON array of attemptRow
// (times as unix nanoseconds UTC): one encoding, so that a store moved from
// one engine to another reads the same.

type attemptRow struct {
	Number    int    `json:"number"`
	Worker    string `json:"worker,omitempty"`
	StartedAt *int64 `json:"started_at,omitempty"`
	EndedAt   *int64 `json:"ended_at,omitempty"`
	ExitCode  *int   `json:"exit_code,omitempty"`
	Signal    string `json:"signal,omitempty"`
	Error     string `json:"error,omitempty"`
	ErrorKind string `json:"error_kind,omitempty"`
	Outcome   string `json:"outcome,omitempty"`
	Recovered bool   `json:"recovered,omitempty"`
	RunID     string `json:"run_id,omitempty"`
	PGID      int    `json:"pgid,omitempty"`
	RemoteID  string `json:"remote_id,omitempty"`
}

func nsPtr(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	n := t.UnixNano()
	return &n
}

func fromNsPtr(p *int64) time.Time {
	if p == nil {
		return time.Time{}
	}
	return time.Unix(0, *p).UTC()
}

// HistoryJSON encodes h for a history column (nil for none).
func HistoryJSON(h []store.Attempt) ([]byte, error) {
	if len(h) == 0 {
		return nil, nil
	}
	rows := make([]attemptRow, len(h))
	for i, a := range h {
		rows[i] = attemptRow{Number: a.Number, Worker: a.Worker, StartedAt: nsPtr(a.StartedAt), EndedAt: nsPtr(a.EndedAt),
			ExitCode: a.ExitCode, Signal: a.Signal, Error: a.Error, ErrorKind: a.ErrorKind, Outcome: a.Outcome,
			Recovered: a.Recovered, RunID: a.RunID, PGID: a.PGID, RemoteID: a.RemoteID}
	}
	return json.Marshal(rows)
}

// HistoryFromJSON decodes a history column (empty: none).
func HistoryFromJSON(b []byte) ([]store.Attempt, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var rows []attemptRow
	if err := json.Unmarshal(b, &rows); err != nil {
		return nil, fmt.Errorf("task history: %w", err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	h := make([]store.Attempt, len(rows))
	for i, r := range rows {
		h[i] = store.Attempt{Number: r.Number, Worker: r.Worker, StartedAt: fromNsPtr(r.StartedAt), EndedAt: fromNsPtr(r.EndedAt),
			ExitCode: r.ExitCode, Signal: r.Signal, Error: r.Error, ErrorKind: r.ErrorKind, Outcome: r.Outcome,
			Recovered: r.Recovered, RunID: r.RunID, PGID: r.PGID, RemoteID: r.RemoteID}
	}
	return h, nil
}
