package ssh

import (
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// BenchmarkShellPrelude measures what the exec strings cost the machine,
// without SSH: each op starts `sh -c STRING` (as sshd starts the login
// shell) in a fresh home and waits for it. Reported: the CPU time (user +
// system, the shell and every process it starts) per run, and per run
// minus that of `sh -c true` (bare) measured in the same run.
//
//	go test -run '^$' -bench ShellPrelude -benchtime 2000x ./ssh
func BenchmarkShellPrelude(b *testing.B) {
	home := b.TempDir()
	var bare float64
	for _, bc := range []struct {
		name   string
		remote func(i int) string
	}{
		{"bare", func(int) string { return "true" }},
		{"unmarked", func(int) string { r, _, _ := buildRemote(&Command{Cmd: "true"}); return r }},
		{"marked-legacy", func(i int) string { return legacyExec("l"+strconv.Itoa(i), "true") }},
		{"marked-subshell", func(i int) string { // the previous version, and scripts inShellSafe refuses
			id := "s" + strconv.Itoa(i)
			return markerPrelude(id) + markerRun(id, "true")
		}},
		{"marked", func(i int) string { // in the login shell (marker_inshell.go)
			r, _, _ := buildRemote(&Command{Cmd: "true", RunID: "m" + strconv.Itoa(i)})
			return r
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			// Each sub-benchmark starts from an empty RunDirBase.
			_ = os.RemoveAll(home + "/" + RunDirBase)
			_ = os.MkdirAll(home+"/"+RunDirBase, 0o755)
			env := []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
			before := childCPU()
			n := 0
			for b.Loop() {
				c := exec.Command("sh", "-c", bc.remote(n))
				c.Env = env
				if err := c.Run(); err != nil {
					b.Fatal(err)
				}
				n++
			}
			ms := float64(childCPU()-before) / float64(time.Millisecond) / float64(n)
			if bc.name == "bare" {
				bare = ms
			}
			b.ReportMetric(ms, "cpu-ms/run")
			b.ReportMetric(ms-bare, "extra-cpu-ms/run")
		})
	}
}

// childCPU returns the CPU time of this process's waited-for children.
func childCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
