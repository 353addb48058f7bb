package ssh

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// legacyExec is the exec string of a marked run as the previous version of
// this package built it (marker directory RUNID/ with pid and status files,
// created with mkdir): a worker upgraded while such runs go on must still
// settle them, and its Settle must still keep them from starting.
func legacyExec(runID, script string) string {
	d := `"$_rediacc_d/` + runID + `"`
	return `_rediacc_d=$HOME/` + RunDirBase + ` _rediacc_m=m _rediacc_b=- _rediacc_s=-` + "\n" +
		`read -r _rediacc_b 2>/dev/null </proc/sys/kernel/random/boot_id || _rediacc_b=-` + "\n" +
		`if read -r _rediacc_s 2>/dev/null </proc/$$/stat; then _rediacc_s=${_rediacc_s##*) }; set -- $_rediacc_s; _rediacc_s=${20:--}; set --; else _rediacc_s=-; fi` + "\n" +
		`if mkdir ` + d + ` 2>/dev/null || { mkdir -p "$_rediacc_d" 2>/dev/null && mkdir ` + d + ` 2>/dev/null; }; then ` +
		`echo "$$ $_rediacc_b $_rediacc_s" >` + d + `/pid; elif [ -d ` + d + ` ]; then _rediacc_m=t; else _rediacc_m=n; fi` + "\n" +
		`printf '\036rediacc-pid %s %s %s %s\n' "$$" "$_rediacc_b" "$_rediacc_s" "$_rediacc_m" >&2` + "\n" +
		`case $_rediacc_m in t) exit 0;; esac` + "\n" +
		`(unset _rediacc_d _rediacc_m _rediacc_b _rediacc_s; eval ` + ShellQuote(script) + `); _rediacc_x=$?` + "\n" +
		`case $_rediacc_m in m) echo "$_rediacc_x" >"$_rediacc_d/` + runID + `/status";; esac` + "\n" +
		`exit $_rediacc_x`
}

func startShell(t *testing.T, shell, home, remote, path string) *exec.Cmd {
	t.Helper()
	args := []string{"-c", remote}
	if filepath.Base(shell) == "busybox" {
		args = append([]string{"sh"}, args...)
	}
	c := exec.Command(shell, args...)
	c.Env = []string{"HOME=" + home, "PATH=" + path}
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestMarkerBuiltinsOnly: once RunDirBase exists, a marked run creates its
// marker and records its exit status with shell builtins alone (the old
// prelude exec'd mkdir for every run): with no program reachable on PATH
// the marker is still complete.
func TestMarkerBuiltinsOnly(t *testing.T) {
	for _, shell := range localShells(t) {
		t.Run(filepath.Base(shell), func(t *testing.T) {
			home := t.TempDir()
			dir := filepath.Join(home, RunDirBase)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			remote, _, err := buildRemote(&Command{Cmd: "exit 3", RunID: "b1"})
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			c := exec.Command(shell, "-c", remote)
			if filepath.Base(shell) == "busybox" {
				c.Args = []string{shell, "sh", "-c", remote}
			}
			c.Env = []string{"HOME=" + home, "PATH=" + t.TempDir()} // an empty directory: no program to run
			c.Stderr = &stderr
			if code := exitCode(c.Run()); code != 3 {
				t.Fatalf("exit %d (%s)", code, stderr.String())
			}
			ri := pidInfo(t, []byte(stderr.String()))
			if ri.remote.RunDir == "" || ri.taken {
				t.Errorf("pid line %+v: the marker was not created with builtins alone (%q)", ri, stderr.String())
			}
			b, _ := os.ReadFile(filepath.Join(dir, "b1"))
			if !strings.HasPrefix(string(b), "p "+strconv.Itoa(c.Process.Pid)+" ") || !strings.HasSuffix(string(b), "\nx 3\n") {
				t.Errorf("marker %q", b)
			}
		})
	}
}

// TestMarkerClaimRace: a run and a Settle of the same run id race, many
// times over, in every local shell: exactly one of them takes the marker —
// either the command runs once and Settle reports its fate, or Settle
// claims the run and the command never runs.
func TestMarkerClaimRace(t *testing.T) {
	for _, shell := range localShells(t) {
		t.Run(filepath.Base(shell), func(t *testing.T) {
			home := t.TempDir()
			if err := os.MkdirAll(filepath.Join(home, RunDirBase), 0o755); err != nil {
				t.Fatal(err)
			}
			claimed, ran := 0, 0
			for i := range 40 {
				id := "race-" + strconv.Itoa(i)
				file := filepath.Join(home, id+".ran")
				var (
					wg   sync.WaitGroup
					fate Fate
					ferr error
				)
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := exec.Command("sh", "-c", settleScript(id, Remote{}, 300*time.Millisecond))
					c.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
					out, err := c.Output()
					if err != nil {
						ferr = err
						return
					}
					fate, ferr = parseFate(out, id)
				}()
				c, _, stderr := localRun(t, shell, home, &Command{Cmd: "echo x >>" + file, RunID: id})
				_ = c.Wait()
				wg.Wait()
				if ferr != nil {
					t.Fatalf("round %d: settle: %v", i, ferr)
				}
				ri := pidInfo(t, stderr.Bytes())
				n := lines(t, file)
				switch fate.State {
				case FateNotStarted:
					claimed++
					if !ri.taken || n != 0 {
						t.Errorf("round %d: Settle claimed the run, yet the run was not refused (pid line %+v, %d lines)", i, ri, n)
					}
				case FateExited, FateStopped, FateGone:
					ran++
					// A run Settle stopped may have been stopped before it
					// printed its pid line (the marker was created, then the
					// TERM came): only an exited run must have reported it.
					if ri.taken || ri.remote.RunDir == "" && fate.State == FateExited || n > 1 {
						t.Errorf("round %d: fate %s, pid line %+v, command ran %d times", i, fate.State, ri, n)
					}
				default:
					t.Errorf("round %d: fate %+v", i, fate)
				}
			}
			t.Logf("%d runs claimed by Settle first, %d ran first", claimed, ran)
		})
	}
}

func lines(t *testing.T, path string) int {
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

// TestMarkerLegacyLayout: markers of runs started by the previous version
// (directories) are settled as before by the new Settle, and a Settle's
// claim still keeps such a run from starting.
func TestMarkerLegacyLayout(t *testing.T) {
	for _, shell := range localShells(t) {
		t.Run(filepath.Base(shell), func(t *testing.T) {
			home := t.TempDir()
			path := os.Getenv("PATH")
			c := startShell(t, shell, home, legacyExec("old-exit", "exit 5"), path)
			if code := exitCode(c.Wait()); code != 5 {
				t.Fatalf("legacy run exit %d", code)
			}
			if f, err := localSettle(t, home, "old-exit", Remote{}); err != nil || f.State != FateExited || f.ExitCode != 5 || f.Remote.PGID != c.Process.Pid {
				t.Errorf("settle of a legacy run that exited = %+v, %v", f, err)
			}

			c = startShell(t, shell, home, legacyExec("old-long", "sleep 30"), path)
			done := make(chan struct{})
			go func() { _ = c.Wait(); close(done) }()
			waitFile(t, filepath.Join(home, RunDirBase, "old-long", "pid"))
			if f, err := localSettle(t, home, "old-long", Remote{}); err != nil || f.State != FateStopped {
				t.Errorf("settle of a running legacy run = %+v, %v", f, err)
			}
			<-done
			if f, err := localSettle(t, home, "old-long", Remote{}); err != nil || f.State != FateStopped {
				t.Errorf("settle of a stopped legacy run again = %+v, %v", f, err)
			}

			// Claimed by the new Settle, a legacy exec does not run.
			if f, err := localSettle(t, home, "old-late", Remote{}); err != nil || f.State != FateNotStarted {
				t.Fatalf("settle of a legacy run never started = %+v, %v", f, err)
			}
			touched := filepath.Join(home, "touched")
			c = startShell(t, shell, home, legacyExec("old-late", "touch "+touched), path)
			_ = c.Wait()
			if _, err := os.Stat(touched); err == nil {
				t.Error("a legacy run claimed by the new Settle ran")
			}
		})
	}
}

// TestSweepScript: the sweep removes exactly the markers of runs that are
// over and more than six days old, in both layouts, records its time, and
// leaves runs that may still go on (or were killed with nobody settling
// them) for Settle.
func TestSweepScript(t *testing.T) {
	home := t.TempDir()
	dir := filepath.Join(home, RunDirBase)
	old := time.Now().Add(-8 * 24 * time.Hour)
	type entry struct {
		name, content string // content "" with dir: a directory marker
		dir           []string
		old, gone     bool
	}
	entries := []entry{
		{name: "old-exited", content: "p 1 b 2\nx 0\n", old: true, gone: true},
		{name: "old-stopped", content: "p 1 b 2\ns b\n", old: true, gone: true},
		{name: "old-gone", content: "p 1 b 2\ng b\n", old: true, gone: true},
		{name: "old-running", content: "p 1 b 2\n", old: true},
		{name: "new-exited", content: "p 1 b 2\nx 0\n"},
		{name: "olddir-status", dir: []string{"pid", "status"}, old: true, gone: true},
		{name: "olddir-claimed", dir: []string{"claimed"}, old: true, gone: true},
		{name: "olddir-running", dir: []string{"pid"}, old: true},
		{name: "newdir-status", dir: []string{"pid", "status"}},
	}
	for i := range 300 { // more than one rm's worth
		entries = append(entries, entry{name: fmt.Sprintf("bulk-%d", i), content: "p 1 b 2\nx 1\n", old: true, gone: true})
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.name)
		if e.dir != nil {
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, f := range e.dir {
				if err := os.WriteFile(filepath.Join(p, f), []byte("1\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		} else if err := os.WriteFile(p, []byte(e.content), 0o644); err != nil {
			t.Fatal(err)
		}
		if e.old {
			if err := os.Chtimes(p, old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	now := time.Unix(1700000000, 0)
	c := startShell(t, "sh", home, sweepScript(now)+"wait", os.Getenv("PATH"))
	if err := c.Wait(); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		_, err := os.Lstat(filepath.Join(dir, e.name))
		if gone := os.IsNotExist(err); gone != e.gone {
			t.Errorf("%s: removed = %v, want %v", e.name, gone, e.gone)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, ".swept")); err != nil || string(b) != "1700000000\n" {
		t.Errorf(".swept = %q, %v", b, err)
	}
}

// TestSweepAndReleaseRefuseSymlinkedRunDir: when RunDirBase (or a parent
// under the home) is a symbolic link, the sweep and the release remove
// nothing in the directory it points to (they used to follow it and delete
// old files there that looked like finished markers).
func TestSweepAndReleaseRefuseSymlinkedRunDir(t *testing.T) {
	if RunDirBase != ".cache/rediacc/run" {
		t.Fatalf("cdRunDir checks .cache/rediacc/run for links; RunDirBase is %q", RunDirBase)
	}
	old := time.Now().Add(-10 * 24 * time.Hour)
	for _, link := range []string{".cache", ".cache/rediacc", ".cache/rediacc/run"} {
		t.Run(link, func(t *testing.T) {
			home, victim := t.TempDir(), t.TempDir()
			// The victim holds what the run dir would hold at link's depth.
			target := filepath.Join(victim, strings.TrimPrefix(RunDirBase, link))
			if err := os.MkdirAll(filepath.Join(target, "important"), 0o755); err != nil {
				t.Fatal(err)
			}
			files := map[string]string{"notes": "x 0\n", "important/status": "1\n", "run-1.1": "p 1 b 2\nx 0\n"}
			for f, c := range files {
				p := filepath.Join(target, f)
				if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
					t.Fatal(err)
				}
				_ = os.Chtimes(p, old, old)
			}
			_ = os.Chtimes(filepath.Join(target, "important"), old, old)
			if err := os.MkdirAll(filepath.Dir(filepath.Join(home, link)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(victim, filepath.Join(home, link)); err != nil {
				t.Fatal(err)
			}
			script := sweepScript(time.Now()) + "wait\n" + releaseScript([]string{"run-1.1"})
			c := startShell(t, "sh", home, script, os.Getenv("PATH"))
			if err := c.Wait(); err != nil {
				t.Fatal(err)
			}
			for f := range files {
				if _, err := os.Lstat(filepath.Join(target, f)); err != nil {
					t.Errorf("%s in the link's target: %v (removed through the link)", f, err)
				}
			}
			if _, err := os.Lstat(filepath.Join(target, ".swept")); err == nil {
				t.Errorf(".swept written through the link")
			}
		})
	}
}
