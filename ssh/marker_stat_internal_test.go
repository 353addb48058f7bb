package ssh

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMarkerStartTime: the pid line and the marker carry the login shell's
// start time, field 22 of /proc/PID/stat, as the kernel says, also when
// the shell's command name holds a space (field 2 is then two words: the
// prelude splits after its last ") " instead).
func TestMarkerStartTime(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	shells := localShells(t)
	if sh, err := os.ReadFile(shells[0]); err == nil { // a copy named with a space
		spaced := filepath.Join(t.TempDir(), "my sh")
		if err := os.WriteFile(spaced, sh, 0o755); err != nil {
			t.Fatal(err)
		}
		shells = append(shells, spaced)
	}
	for _, shell := range shells {
		t.Run(filepath.Base(shell), func(t *testing.T) {
			home := t.TempDir()
			c, stdout, stderr := localRun(t, shell, home, &Command{Cmd: "cat /proc/$$/stat", RunID: "st"})
			if code := exitCode(c.Wait()); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			line := stdout.String()
			i := strings.LastIndex(line, ") ")
			if i < 0 {
				t.Fatalf("stat line %q", line)
			}
			f := strings.Fields(line[i+2:])
			want := f[19] // field 22
			ri := pidInfo(t, stderr.Bytes())
			if ri.remote.StartTime != want || ri.pid != c.Process.Pid {
				t.Errorf("pid line %+v, want pid %d start %s (stat %q)", ri, c.Process.Pid, want, line)
			}
			b, err := os.ReadFile(filepath.Join(home, RunDirBase, "st"))
			if err != nil || !strings.HasPrefix(string(b), "p ") || strings.Fields(string(b))[3] != want {
				t.Errorf("marker %q, %v; want start %s", b, err, want)
			}
		})
	}
}
