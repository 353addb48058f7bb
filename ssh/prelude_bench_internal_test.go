package ssh

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// prevStatRead is how the prelude read the login shell's start time
// before statRead (split with set --), for the benchmark's "marked-prev".
const prevStatRead = `if read -r _rediacc_s 2>/dev/null </proc/$$/stat; then _rediacc_s=${_rediacc_s##*) }; set -- $_rediacc_s; _rediacc_s=${20:--}; set --; else _rediacc_s=-; fi`

// BenchmarkShellPrelude measures what the exec strings cost the machine,
// without SSH: each op starts `sh -c STRING` in a session of its own (as
// sshd starts the login shell) once per case, the cases interleaved (so
// that a change in the host's load reaches them all alike), in a fresh
// home. Reported per case:
// the CPU time (user + system, the shell and every process it starts) per
// run, and per run minus that of `sh -c true` (bare).
//
//	go test -run '^$' -bench ShellPrelude -benchtime 2000x ./ssh
//
// Cases: bare (`true`), unmarked (no RunID), marked-legacy (the directory
// marker of the first version, with mkdir), marked-prev (the file marker
// with the start time split by set --, and the subshell), marked-subshell
// (today's prelude, a script that needs the subshell), marked-starttime
// (`true` in the login shell, the shell told apart by its start time read
// from /proc/$$/stat: the version before identityRead), marked (today's:
// `true` in the login shell, marker_inshell.go, told apart by its
// autogroup).
func BenchmarkShellPrelude(b *testing.B) {
	home := b.TempDir()
	_ = os.MkdirAll(home+"/"+RunDirBase, 0o755)
	env := []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
	cases := []struct {
		name   string
		remote func(id string) string
	}{
		{"bare", func(string) string { return "true" }},
		{"unmarked", func(string) string { r, _, _ := buildRemote(&Command{Cmd: "true"}); return r }},
		{"marked-legacy", func(id string) string { return legacyExec(id, "true") }},
		{"marked-prev", func(id string) string {
			return strings.Replace(markerPrelude(id), identityRead(), prevStatRead, 1) + markerRun(id, "true")
		}},
		{"marked-starttime", func(id string) string {
			r, _, _ := buildRemote(&Command{Cmd: "true", RunID: id})
			return strings.Replace(r, identityRead(), statRead, 1)
		}},
		{"marked-subshell", func(id string) string { return markerPrelude(id) + markerRun(id, "true") }},
		{"marked", func(id string) string { r, _, _ := buildRemote(&Command{Cmd: "true", RunID: id}); return r }},
	}
	cpu := make([]time.Duration, len(cases))
	n := 0
	for b.Loop() {
		for i, c := range cases {
			cmd := exec.Command("sh", "-c", c.remote(c.name+"-"+strconv.Itoa(n)))
			cmd.Env = env
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // as sshd starts the login shell
			before := childCPU()
			if err := cmd.Run(); err != nil {
				b.Fatalf("%s: %v", c.name, err)
			}
			cpu[i] += childCPU() - before
		}
		n++
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / float64(n) }
	for i, c := range cases {
		b.ReportMetric(ms(cpu[i]), c.name+"-cpu-ms/run")
		if i > 0 {
			b.ReportMetric(ms(cpu[i]-cpu[0]), c.name+"-extra-cpu-ms/run")
		}
	}
	b.ReportMetric(0, "ns/op")
}

// childCPU returns the CPU time of this process's waited-for children.
func childCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
