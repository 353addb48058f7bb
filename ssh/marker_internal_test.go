package ssh

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// localRun starts the exec string of cmd with shell as a session leader
// (as sshd starts a login shell) with HOME set to home.
func localRun(t *testing.T, shell, home string, cmd *Command) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	remote, block, err := buildRemote(cmd)
	if err != nil {
		t.Fatal(err)
	}
	c := shellCommand(shell, remote)
	c.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	c.Stdin = bytes.NewReader(block)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	return c, &stdout, &stderr
}

// shellCommand is `shell -c remote` (busybox: `busybox sh -c remote`).
func shellCommand(shell, remote string) *exec.Cmd {
	args := []string{"-c", remote}
	if filepath.Base(shell) == "busybox" {
		args = append([]string{"sh"}, args...)
	}
	return exec.Command(shell, args...)
}

// startSessionSleep starts `sh -c "sleep 30"` in a session of its own;
// done is closed once it has ended. It is killed when the test ends.
func startSessionSleep(t *testing.T) (c *exec.Cmd, done <-chan struct{}) {
	t.Helper()
	c = exec.Command("sh", "-c", "sleep 30")
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	ch := make(chan struct{})
	go func() { _ = c.Wait(); close(ch) }()
	t.Cleanup(func() { _ = c.Process.Kill(); <-ch })
	return c, ch
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// localSettle runs the settle script for runID locally.
func localSettle(t *testing.T, home, runID string, known Remote) (Fate, error) {
	t.Helper()
	c := exec.Command("sh", "-c", settleScript(runID, known, 300*time.Millisecond))
	c.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
	out, err := c.Output()
	if err != nil {
		t.Fatalf("settle script: %v (%s)", err, out)
	}
	return parseFate(out, runID)
}

func pidInfo(t *testing.T, stderr []byte) runInfo {
	t.Helper()
	f := newPidFilter(new(bytes.Buffer))
	f.runID = "r"
	f.Write(stderr)
	f.finish()
	return <-f.pidCh
}

// TestMarkerLocally runs marked commands in every local shell: the marker
// records the process and the exit status whatever the script does; a
// second exec of the same run does not run; Settle learns each fate.
func TestMarkerLocally(t *testing.T) {
	for _, shell := range localShells(t) {
		t.Run(filepath.Base(shell), func(t *testing.T) {
			home := t.TempDir()
			dir := filepath.Join(home, RunDirBase)
			for i, tc := range []struct {
				script string
				code   int
				out    string
			}{
				{"echo hi", 0, "hi\n"},
				{"echo partial; exit 3", 3, "partial\n"},
				{"exec sh -c 'exit 4'", 4, ""},
				{"trap 'echo bye' EXIT; false", 1, "bye\n"},
				{`printf '%s' "${_rediacc_d-unset}${_rediacc_m-unset}${_rediacc_w-unset}${_rediacc_x-unset}"`, 0, "unsetunsetunsetunset"},
				{"set -e; false; echo not reached", 1, ""},
				{"if then", syntaxErrorStatus(shell), ""}, // a syntax error
				{"echo x >/dev/null; case $- in *C*) echo noclobber;; esac", 0, ""},
			} {
				id := "t-" + strconv.Itoa(i)
				c, stdout, stderr := localRun(t, shell, home, &Command{Cmd: tc.script, RunID: id})
				code := exitCode(c.Wait())
				if code != tc.code || stdout.String() != tc.out {
					t.Errorf("%q: exit %d stdout %q stderr %q, want %d %q", tc.script, code, stdout, stderr, tc.code, tc.out)
				}
				ri := pidInfo(t, stderr.Bytes())
				if ri.pid != c.Process.Pid || ri.taken || ri.remote.RunDir == "" {
					t.Errorf("%q: pid line %+v (shell pid %d) from %q", tc.script, ri, c.Process.Pid, stderr)
				}
				// The marker is one file: its process, then its exit status.
				if b, err := os.ReadFile(filepath.Join(dir, id)); err != nil || !strings.HasPrefix(string(b), "p "+strconv.Itoa(c.Process.Pid)+" ") ||
					!strings.HasSuffix(string(b), "\nx "+strconv.Itoa(tc.code)+"\n") || strings.Count(string(b), "\n") != 2 {
					t.Errorf("%q: marker %q, %v", tc.script, b, err)
				}
				f, err := localSettle(t, home, id, Remote{})
				if err != nil || f.State != FateExited || f.ExitCode != tc.code {
					t.Errorf("%q: settle = %+v, %v", tc.script, f, err)
				}
			}

			// The same run again: taken, nothing runs.
			touched := filepath.Join(home, "touched")
			c, _, stderr := localRun(t, shell, home, &Command{Cmd: "touch " + touched, RunID: "t-0"})
			if code := exitCode(c.Wait()); code != 0 {
				t.Errorf("taken run exit %d", code)
			}
			if ri := pidInfo(t, stderr.Bytes()); !ri.taken {
				t.Errorf("second exec of a run not reported taken: %+v", ri)
			}
			if _, err := os.Stat(touched); err == nil {
				t.Error("a taken run ran its command")
			}

			// Never started: Settle claims it, and a late exec does not run.
			f, err := localSettle(t, home, "late", Remote{})
			if err != nil || f.State != FateNotStarted {
				t.Fatalf("settle of a run never started = %+v, %v", f, err)
			}
			c, _, stderr = localRun(t, shell, home, &Command{Cmd: "touch " + touched, RunID: "late"})
			_ = c.Wait()
			if ri := pidInfo(t, stderr.Bytes()); !ri.taken {
				t.Errorf("late exec after a claim not reported taken: %+v", ri)
			}
			if _, err := os.Stat(touched); err == nil {
				t.Error("a claimed run ran its command")
			}
			if f, err := localSettle(t, home, "late", Remote{}); err != nil || f.State != FateNotStarted {
				t.Errorf("second settle of a claimed run = %+v, %v", f, err)
			}

			// Running: Settle stops the whole group, background children too.
			c, _, _ = localRun(t, shell, home, &Command{Cmd: "trap '' TERM; sleep 30 & sleep 31; wait", RunID: "long"})
			done := make(chan int, 1)
			go func() { done <- exitCode(c.Wait()) }()
			waitFile(t, filepath.Join(dir, "long"))
			f, err = localSettle(t, home, "long", Remote{})
			if err != nil || f.State != FateStopped || f.Remote.PGID != c.Process.Pid {
				t.Fatalf("settle of a running run = %+v, %v", f, err)
			}
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("the stopped run's shell still runs")
			}
			if live := liveInGroup(c.Process.Pid); len(live) > 0 {
				t.Errorf("processes of the stopped run's group survive: %v", live)
			}
			if f, err := localSettle(t, home, "long", Remote{}); err != nil || f.State != FateStopped {
				t.Errorf("settling a stopped run again = %+v, %v", f, err)
			}
		})
	}
}

// TestMarkerUnwritableHome: the command runs without a marker; Settle then
// goes by the process id it is given.
func TestMarkerUnwritableHome(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root writes anywhere")
	}
	home := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(home, 0o500); err != nil {
		t.Fatal(err)
	}
	c, stdout, stderr := localRun(t, "sh", home, &Command{Cmd: "echo ran", RunID: "x"})
	if code := exitCode(c.Wait()); code != 0 || stdout.String() != "ran\n" {
		t.Fatalf("exit %d stdout %q", code, stdout)
	}
	if ri := pidInfo(t, stderr.Bytes()); ri.taken || ri.remote.RunDir != "" || ri.pid != c.Process.Pid {
		t.Errorf("pid line %+v", ri)
	}
}

// TestSettleKnownProcess: without a marker, Settle stops the process group
// it is told of, but not a younger process that reuses its pid.
// The process's identity is its start time or, as the prelude records it
// where the kernel keeps them, its autogroup ("aN").
func TestSettleKnownProcess(t *testing.T) {
	for _, mode := range []string{"starttime", "autogroup"} {
		t.Run(mode, func(t *testing.T) {
			home := t.TempDir()
			if err := os.WriteFile(filepath.Join(home, ".cache"), nil, 0o600); err != nil { // RunDirBase cannot be created
				t.Fatal(err)
			}
			c, _ := startSessionSleep(t)
			id := procStart(t, c.Process.Pid)
			other := id + "1"
			if mode == "autogroup" {
				b, err := os.ReadFile("/proc/" + strconv.Itoa(c.Process.Pid) + "/autogroup")
				n, ok := strings.CutPrefix(strings.Fields(string(b) + " x")[0], "/autogroup-")
				if err != nil || !ok {
					t.Skipf("no autogroup for the process: %q, %v", b, err)
				}
				id, other = "a"+n, "a"+n+"0"
			}
			f, err := localSettle(t, home, "x", Remote{PGID: c.Process.Pid, StartTime: other})
			if err != nil || f.State != FateGone {
				t.Errorf("settle of a pid with another identity (%s) = %+v, %v", other, f, err)
			}
			f, err = localSettle(t, home, "x", Remote{PGID: c.Process.Pid, StartTime: id})
			if err != nil || f.State != FateStopped {
				t.Errorf("settle of the known process (%s) = %+v, %v", id, f, err)
			}
			if _, err := localSettle(t, home, "x", Remote{}); !errors.Is(err, ErrFateUnknown) {
				t.Errorf("settle with nothing to go by: %v, want ErrFateUnknown", err)
			}
		})
	}
}

// liveInGroup lists the processes of process group pgid that are not
// zombies (zombies wait for init to reap them).
func liveInGroup(pgid int) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" && f[0] != "X" {
			out = append(out, e.Name()+" "+f[0])
		}
	}
	return out
}

func procStart(t *testing.T, pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Skip("no /proc")
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	return f[19]
}

func waitFile(t *testing.T, p string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(p); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", p)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestParseFate(t *testing.T) {
	for _, tc := range []struct {
		out   string
		state FateState
		code  int
		pgid  int
		err   error
	}{
		{fateMarker + "exited 3\n", FateExited, 3, 0, nil},
		{"noise\n" + fateMarker + "stopped 42 b 77\n", FateStopped, 0, 42, nil},
		{fateMarker + "gone 42 - - the machine rebooted\n", FateGone, 0, 42, nil},
		{fateMarker + "not-started claimed\n", FateNotStarted, 0, 0, nil},
		{fateMarker + "running 42 - -\n", "", 0, 0, ErrFateUnknown},
		{fateMarker + "unknown - - - why\n", "", 0, 0, ErrFateUnknown},
		{"", "", 0, 0, nil},
	} {
		f, err := parseFate([]byte(tc.out), "r")
		if tc.state == "" {
			if err == nil || tc.err != nil && !errors.Is(err, tc.err) {
				t.Errorf("%q: err = %v, want %v", tc.out, err, tc.err)
			}
			continue
		}
		if err != nil || f.State != tc.state || f.ExitCode != tc.code || f.Remote.PGID != tc.pgid {
			t.Errorf("%q: %+v, %v", tc.out, f, err)
		}
	}
}
