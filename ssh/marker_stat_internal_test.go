package ssh

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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

// A shell that shares its parent's autogroup (started without a session
// of its own: setpgid only) shares it with every other run so started: the
// prelude takes the start time instead.
func TestMarkerIdentityWithoutSession(t *testing.T) {
	if _, err := os.ReadFile("/proc/self/autogroup"); err != nil {
		t.Skip("no /proc/PID/autogroup")
	}
	for _, shell := range localShells(t) {
		t.Run(filepath.Base(shell), func(t *testing.T) {
			remote, _, err := buildRemote(&Command{Cmd: "true", RunID: "ns"})
			if err != nil {
				t.Fatal(err)
			}
			c := shellCommand(shell, remote)
			c.Env = []string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}
			c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			var stderr bytes.Buffer
			c.Stderr = &stderr
			if err := c.Run(); err != nil {
				t.Fatalf("%v: %s", err, stderr.String())
			}
			ri := pidInfo(t, stderr.Bytes())
			if _, err := strconv.ParseUint(ri.remote.StartTime, 10, 64); err != nil {
				t.Errorf("identity %q, want the start time (clock ticks): the shell's autogroup is its parent's", ri.remote.StartTime)
			}
		})
	}
}

// Settle's alive() takes a process whose autogroup file is readable but
// names another autogroup, or none (a process in the kernel's default
// group: the file is empty), for another process than the run's: the run
// is gone, and that process is not signalled.
func TestSettleAutogroupMismatch(t *testing.T) {
	c, done := startSessionSleep(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "autogroup")
	old := procAutogroupOf
	procAutogroupOf = `"` + file + `"`
	t.Cleanup(func() { procAutogroupOf = old })
	for _, tc := range []struct {
		content string
		want    FateState
	}{
		{"", FateGone},                      // the default group: no autogroup line
		{"/autogroup-8 nice 0\n", FateGone}, // another autogroup
		{"/autogroup-7 nice 0\n", FateStopped},
	} {
		if err := os.WriteFile(file, []byte(tc.content), 0o644); err != nil {
			t.Fatal(err)
		}
		home := t.TempDir()
		if err := os.WriteFile(filepath.Join(home, ".cache"), nil, 0o600); err != nil { // no marker: Settle goes by the known process
			t.Fatal(err)
		}
		f, err := localSettle(t, home, "x", Remote{PGID: c.Process.Pid, StartTime: "a7"})
		if err != nil || f.State != tc.want {
			t.Errorf("autogroup file %q: settle = %+v, %v; want %s", tc.content, f, err, tc.want)
		}
		select {
		case <-done:
			if tc.want != FateStopped {
				t.Fatalf("autogroup file %q: the process was signalled", tc.content)
			}
		default:
			if tc.want == FateStopped {
				t.Fatalf("autogroup file %q: the process still runs", tc.content)
			}
		}
	}
}
