package ssh

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestInShellSafe(t *testing.T) {
	for _, tc := range []struct {
		script string
		ok     bool
	}{
		{"true", true},
		{"echo partial; exit 3", true},
		{"set -e; false; echo not reached", true},
		{"cd /tmp && ./build.sh --executable x.y", true},
		{"make -C src && echo done.", true},
		{`echo "$(date)"; sleep 1 &`, true},
		{"exec sh -c 'exit 4'", false},
		{"e'x'ec true", false},
		{"ex\\\nec true", false},
		{"trap 'echo bye' EXIT; false", false},
		{"eval \"$X\"", false},
		{". ./env.sh; run", false},
		{"x; . /etc/profile", false},
		{"source ~/.profile", false},
		{"f() { exit 3; }; f", false},
		{"f () { :; }", false},
		{"function f { :; }", false},
		{"alias echo=false", false},
		{"enable -n echo", false},
		{"ulimit -f 0", false},
		{"command exec true", false},
		{"builtin exec true", false},
		{"kill -TERM $PPID", false},
	} {
		if got := inShellSafe(tc.script); got != tc.ok {
			t.Errorf("inShellSafe(%q) = %v, want %v", tc.script, got, tc.ok)
		}
	}
}

// TestMarkerInShell: a script inShellSafe accepts runs in the login shell
// itself (no subshell: the builtin read of /proc/self/stat sees the login
// shell's pid), and its marker still gets its exit status whichever way
// it ends; with a quote in the marker's path it runs in a subshell, and
// the status is recorded all the same.
func TestMarkerInShell(t *testing.T) {
	const self = `read -r _l </proc/self/stat; echo ${_l%% *}`
	for _, shell := range localShells(t) {
		t.Run(filepath.Base(shell), func(t *testing.T) {
			for _, home := range []string{t.TempDir(), filepath.Join(t.TempDir(), "it's")} {
				if err := os.MkdirAll(home, 0o755); err != nil {
					t.Fatal(err)
				}
				quoted := strings.Contains(home, "'")
				dir := filepath.Join(home, RunDirBase)
				for i, tc := range []struct {
					script string
					code   int
				}{
					{self, 0},
					{self + "; exit 3", 3},
					{self + "; set -e; false; echo not reached", 1},
					{self + "; sh -c 'kill -9 $$'", 137},
					{self + "\nif then", syntaxErrorStatus(shell)}, // a syntax error: nothing runs, the status is recorded
					{self + "; _rediacc_d=/nowhere; HOME=/nowhere; cd /; exit 5", 5},
				} {
					if !inShellSafe(tc.script) {
						t.Fatalf("%q: not in-shell safe", tc.script)
					}
					id := "s-" + strconv.Itoa(i)
					c, stdout, stderr := localRun(t, shell, home, &Command{Cmd: tc.script, RunID: id})
					code := exitCode(c.Wait())
					if code != tc.code {
						t.Errorf("%q: exit %d, want %d (stderr %q)", tc.script, code, tc.code, stderr)
					}
					pid, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(stdout.String(), "\n", 2)[0]))
					if !strings.HasSuffix(tc.script, "if then") && (pid == c.Process.Pid) == quoted { // a syntax error runs nothing in zsh
						t.Errorf("%q (home %q): ran in pid %d, the login shell is %d", tc.script, home, pid, c.Process.Pid)
					}
					b, err := os.ReadFile(filepath.Join(dir, id))
					if err != nil || !strings.HasPrefix(string(b), "p "+strconv.Itoa(c.Process.Pid)+" ") ||
						!strings.HasSuffix(string(b), "\nx "+strconv.Itoa(tc.code)+"\n") || strings.Count(string(b), "\n") != 2 {
						t.Errorf("%q (home %q): marker %q, %v", tc.script, home, b, err)
					}
					if f, err := localSettle(t, home, id, Remote{}); err != nil || f.State != FateExited || f.ExitCode != tc.code {
						t.Errorf("%q: settle = %+v, %v", tc.script, f, err)
					}
				}
			}
		})
	}
}
