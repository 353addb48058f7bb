package main

import (
	"strings"
	"testing"
)

// Usage errors cobra and pflag raise before a command runs echo what was
// typed bounded (64 characters and the length) and escaped, like every
// other message of the CLI, and exit 5. The old code echoed an unknown
// command or flag whole (a 10,000-character argument came back in full)
// and an unknown flag unquoted.
func TestCLIUsageErrorsEchoBounded(t *testing.T) {
	c := binCLI{t: t, dir: t.TempDir()}
	long := strings.Repeat("y", 10000)
	esc := "a\x1b]0;owned\x07\x1b[2Jb\u202e"
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{long}, `unknown command "yyyy`},
		{[]string{"list", long}, `unknown command "yyyy`},
		{[]string{"team", "member", long}, `unknown command "yyyy`},
		{[]string{"completion", long}, `unknown command "yyyy`},
		{[]string{"--" + long}, `unknown flag "--yyyy`},
		{[]string{"list", "queue", "--" + long}, `unknown flag "--yyyy`},
		{[]string{"list", "queue", "-Z" + long}, `unknown shorthand flag "Z" in "-Zyyyy`},
		{[]string{"create", "task", "--retry-count", long}, `invalid value "yyyy`},
		{[]string{"create", "task", "--timeout", long}, `invalid value "yyyy`},
		{[]string{"list", "queue", "extra" + long}, `takes no arguments, got "extrayyyy`},
		{[]string{esc}, `unknown command "a\x1b]0;owned\a\x1b[2Jb\u202e"`},
		{[]string{"list", "--" + esc}, `unknown flag "--a\x1b]0;owned\a\x1b[2Jb\u202e"`},
		{[]string{"list", "queue", "---" + esc}, `bad flag syntax "---a\x1b]0;owned\a\x1b[2Jb\u202e"`},
		{[]string{"lis"}, `unknown command "lis" for rediacc; did you mean list?`},
		{[]string{"list", "queue", "--priority"}, "flag --priority needs a value"},
	} {
		code, out, errs := c.run("", tc.args...)
		name := tc.args[len(tc.args)-1]
		if len(name) > 20 {
			name = name[:20] + "…"
		}
		if code != exitInvalid || !strings.Contains(errs, tc.says) {
			t.Errorf("%q: exit %d (want %d), stderr %.300q (want it to say %q), stdout %.100q", name, code, exitInvalid, errs, tc.says, out)
		}
		if len(errs) > 600 || strings.ContainsAny(errs, "\x1b\x07\u202e") {
			t.Errorf("%q: stderr of %d bytes, unbounded or with raw control characters: %.300q", name, len(errs), errs)
		}
		if strings.Contains(name, "yyyy") && !strings.Contains(errs, "bytes in all)") {
			t.Errorf("%q: the long input's length is not stated: %.300q", name, errs)
		}
	}
}
