package rediacc

import "github.com/google/uuid"

// newTaskID returns a new task id: a UUID of version 7 (RFC 9562, section
// 5.7), whose first 48 bits are the Unix time in milliseconds and which
// google/uuid keeps increasing within a process. The store indexes tasks
// by id: ids that follow the time they are made in are appended at the end
// of that index, where random (version 4) ids landed on a different page
// for every task of a large backlog, so a batch of 10,000 tasks rewrote
// thousands of the index's pages and submitting slowed down as the store
// grew (issue 11; docs/BENCHMARKS.md, "Backlog"). A task's id tells its
// creation time, which its CreatedAt shows anyway. It panics only when the
// system's random source fails, as uuid.NewString does.
func newTaskID() string {
	return uuid.Must(uuid.NewV7()).String()
}
