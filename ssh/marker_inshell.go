package ssh

import "strings"

// A marked run's script runs in a subshell (markerRun) so that whatever it
// does, the login shell records its exit status afterwards. The subshell
// is a fork of the login shell per run: on a busy fleet, most of what a
// marker costs the machine. A script that, as written, can neither replace
// the login shell (exec), nor change or disarm its traps (trap), nor
// change what the recording runs (alias, enable, function definitions,
// ulimit), nor run text it does not show (eval, ., source, command,
// builtin), nor signal the shell's parent ($PPID), runs in the login shell
// itself instead (markerRunInShell): an EXIT trap, set before the script
// runs, appends its exit status to the marker when the shell exits —
// after the last command, on exit, on a syntax error or a failing
// `set -e` command alike — and the exit status is the script's. Any other
// script, and any run whose marker path holds a quote (the trap names the
// path literally), takes the subshell as before. Tokens are matched
// after removing quotes and backslashes, so "e'x'ec" is still exec; a
// name assembled at run time ($a$b) is not seen, as it is not honest
// shell.

// inShellDenied are the words that send a script to the subshell.
var inShellDenied = map[string]bool{
	"exec": true, "trap": true, "eval": true, "alias": true, "unalias": true, "enable": true,
	"ulimit": true, "source": true, "command": true, "builtin": true, "function": true,
	"PPID": true, "fc": true, "suspend": true, "logout": true,
}

// inShellSafe reports whether script may run in the login shell with an
// EXIT trap recording its status (see above).
func inShellSafe(script string) bool {
	// What the shell joins into one word: quotes and backslashes (and
	// backslash-newline) go.
	var b strings.Builder
	b.Grow(len(script))
	for i := 0; i < len(script); i++ {
		switch c := script[i]; c {
		case '\'', '"', '\\':
			if c == '\\' && i+1 < len(script) && script[i+1] == '\n' {
				i++
			}
		default:
			b.WriteByte(c)
		}
	}
	s := b.String()
	word := func(c byte) bool {
		return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
	}
	for i := 0; i < len(s); {
		if !word(s[i]) {
			switch s[i] {
			case '(':
				// A function definition: NAME() or NAME ( ).
				if j := strings.IndexFunc(s[i+1:], func(r rune) bool { return r != ' ' && r != '\t' }); j >= 0 && s[i+1+j] == ')' {
					return false
				}
			case '.':
				// The dot command: a lone "." word.
				if (i == 0 || strings.IndexByte(" \t\n;&|({`", s[i-1]) >= 0) && (i+1 == len(s) || strings.IndexByte(" \t\n", s[i+1]) >= 0) {
					return false
				}
			}
			i++
			continue
		}
		j := i
		for j < len(s) && word(s[j]) {
			j++
		}
		if inShellDenied[s[i:j]] {
			return false
		}
		i = j
	}
	return true
}

// markerVars are the prelude's variables, unset before the script runs.
const markerVars = `_rediacc_d _rediacc_m _rediacc_b _rediacc_s _rediacc_w _rediacc_x _rediacc_q`

// markerRunInShell runs an inShellSafe script in the login shell, with an
// EXIT trap that appends "x STATUS" to the marker; when the marker's path
// holds a quote, in a subshell as markerRun does.
func markerRunInShell(runID, quotedScript string) string {
	return `_rediacc_q=` + quotedScript + "\n" +
		`case $_rediacc_m in m) case $_rediacc_d in *\'*) _rediacc_m=ms;; *) trap "echo \"x \$?\" >>'$_rediacc_d/` + runID + `'" EXIT;; esac;; esac` + "\n" +
		`case $_rediacc_m in ms) (eval "unset ` + markerVars + `
$_rediacc_q"); _rediacc_x=$?; echo "x $_rediacc_x" >>"$_rediacc_d/` + runID + `"; exit $_rediacc_x;; esac` + "\n" +
		`eval "unset ` + markerVars + `
$_rediacc_q"`
}
