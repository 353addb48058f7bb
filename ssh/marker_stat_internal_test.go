package ssh

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMarkerStartTime: the pid line and the marker carry what tells the
// login shell apart from a later process with its pid (Remote.StartTime):
// its autogroup "aN" as /proc/PID/autogroup says where the kernel keeps
// them, else (here: when that file cannot be read) its start time, field
// 22 of /proc/PID/stat, as the kernel says, also when the shell's command
// name holds a space (field 2 is then two words: the prelude splits after
// its last ") " instead).
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
	// The start time: field 22 of the stat line the script printed.
	startTime := func(t *testing.T, out string) string {
		line, _, _ := strings.Cut(out, "\n")
		i := strings.LastIndex(line, ") ")
		if i < 0 {
			t.Fatalf("stat line %q", line)
		}
		return strings.Fields(line[i+2:])[19]
	}
	// The autogroup: "a" and N of the "/autogroup-N nice K" line printed
	// after it, "" when the script could not read it.
	autogroup := func(out string) string {
		_, line, _ := strings.Cut(out, "\n")
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], "/autogroup-") {
			return ""
		}
		return "a" + strings.TrimPrefix(f[0], "/autogroup-")
	}
	for _, mode := range []string{"autogroup", "starttime"} {
		for _, shell := range shells {
			t.Run(mode+"/"+filepath.Base(shell), func(t *testing.T) {
				if mode == "starttime" {
					old := procAutogroup
					procAutogroup = "/proc/$$/no-such-file"
					t.Cleanup(func() { procAutogroup = old })
				}
				home := t.TempDir()
				c, stdout, stderr := localRun(t, shell, home, &Command{Cmd: "cat /proc/$$/stat; cat /proc/$$/autogroup 2>/dev/null || echo", RunID: "st"})
				if code := exitCode(c.Wait()); code != 0 {
					t.Fatalf("exit %d: %s", code, stderr)
				}
				want := autogroup(stdout.String())
				if want == "" && mode == "autogroup" {
					t.Skip("this kernel keeps no autogroups (/proc/PID/autogroup): the start time is used, as in the starttime cases")
				}
				if mode == "starttime" {
					want = startTime(t, stdout.String())
				}
				ri := pidInfo(t, stderr.Bytes())
				if ri.remote.StartTime != want || ri.pid != c.Process.Pid {
					t.Errorf("pid line %+v, want pid %d identity %s (script printed %q)", ri, c.Process.Pid, want, stdout)
				}
				b, err := os.ReadFile(filepath.Join(home, RunDirBase, "st"))
				if err != nil || !strings.HasPrefix(string(b), "p ") || strings.Fields(string(b))[3] != want {
					t.Errorf("marker %q, %v; want identity %s", b, err, want)
				}
			})
		}
	}
}
