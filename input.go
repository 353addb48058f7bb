package rediacc

import (
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/google/uuid"
)

// maxEchoRunes bounds how much of a caller's input an error message
// repeats: a name of a megabyte is not echoed whole.
const maxEchoRunes = 64

// quoteInput quotes s (Go syntax: control characters escaped) for an error
// message, cut to its first maxEchoRunes characters with a note of its
// length when it is longer.
func quoteInput[S ~string](v S) string {
	s := string(v)
	if utf8.RuneCountInString(s) <= maxEchoRunes {
		return strconv.Quote(s)
	}
	return strconv.Quote(string([]rune(s)[:maxEchoRunes])) + fmt.Sprintf("…(%d bytes in all)", len(s))
}

// checkTaskID refuses an id that is not a task id's form (a UUID) with
// ErrInvalidArgument: it names no task, and saying "not found" would hide
// the typo.
func checkTaskID(what, id string) error {
	if err := uuid.Validate(id); err != nil || len(id) != 36 {
		return fmt.Errorf("%w: %s id %s is not an id (ids are UUIDs such as 0b5c6a1e-3f2d-4c8e-9a7b-1d2e3f4a5b6c)", ErrInvalidArgument, what, quoteInput(id))
	}
	return nil
}
