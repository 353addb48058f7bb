package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// durationValue is a flag holding a duration in Go's syntax ("90s",
// "10m", "1h30m"). A bare number is accepted only where it is unambiguous:
// "0" where zero is allowed, and "-1" (or "off") for flags that can be
// turned off (stored as -1). Any other number without a unit is refused
// with a message that names the fix: "30" could be seconds or minutes.
type durationValue struct {
	d         *time.Duration
	off       string // what -1 means ("" = -1 is not accepted)
	allowZero bool
}

// durationFlag registers a duration flag (see durationValue); off is what
// -1 means ("" when the flag cannot be turned off).
func durationFlag(f *pflag.FlagSet, d *time.Duration, name string, def time.Duration, off string, allowZero bool, usage string) {
	*d = def
	f.Var(&durationValue{d: d, off: off, allowZero: allowZero}, name, usage)
}

func (v *durationValue) Set(s string) error {
	s = strings.TrimSpace(s)
	if v.off != "" && (s == "-1" || s == "off") {
		*v.d = -1
		return nil
	}
	if s == "0" && v.allowZero {
		*v.d = 0
		return nil
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return fmt.Errorf("%s has no unit: %s", quoted(s), v.hint())
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%s is not a duration: %s", quoted(s), v.hint())
	}
	switch {
	case d < 0 && v.off != "":
		d = -1
	case d < 0:
		return fmt.Errorf("%s is negative: %s", quoted(s), v.hint())
	case d == 0 && !v.allowZero:
		return fmt.Errorf("%s is zero: %s", quoted(s), v.hint())
	}
	*v.d = d
	return nil
}

func (v *durationValue) hint() string {
	h := "write a duration with its unit, such as 90s, 10m or 1h30m"
	if v.off != "" {
		h += ", or -1 for " + v.off
	}
	return h
}

func (v *durationValue) String() string {
	if v.d == nil {
		return ""
	}
	if *v.d < 0 && v.off != "" {
		return "-1"
	}
	return v.d.String()
}

func (v *durationValue) Type() string { return "duration" }
