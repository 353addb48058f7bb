package bench

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/benchutil"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// cpuSelf returns this process's CPU time (user + system) so far.
func cpuSelf() time.Duration { return benchutil.SelfCPU() }

// cpuOf returns the CPU time (user + system) of an exited child, including
// the descendants it waited for.
func cpuOf(ps *os.ProcessState) time.Duration {
	if ps == nil {
		return 0
	}
	return ps.UserTime() + ps.SystemTime()
}

// maxRSSOf returns the peak resident set size of an exited child, in bytes.
func maxRSSOf(ps *os.ProcessState) int64 {
	if ps == nil {
		return 0
	}
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss * 1024 // KiB on Linux
	}
	return 0
}

// busyJiffies returns the machine's non-idle CPU time from /proc/stat
// (clock ticks of 10 ms), for the whole machine's CPU per task (client,
// sshd and the commands).
func busyJiffies() int64 { return benchutil.BusyJiffies() }

// loadAvg returns /proc/loadavg's first three fields ("1.02 0.98 0.77").
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// startFleet starts n real sshd on consecutive loopback addresses from
// first (an index: 0 is 127.0.0.1, 255 is 127.0.1.1, see loopbackAddr).
func startFleet(tb testing.TB, first, n int) []*sshtest.OpenSSH {
	tb.Helper()
	servers := make([]*sshtest.OpenSSH, n)
	for i := range servers {
		servers[i] = sshtest.StartOpenSSH(tb, sshtest.OpenSSHOptions{Host: loopbackAddr(first + i), LogLevel: "ERROR"})
	}
	return servers
}

// loopbackAddr maps 0.. to 127.0.0.1..127.0.0.254, then 127.0.1.1..254, …
func loopbackAddr(i int) string {
	return fmt.Sprintf("127.0.%d.%d", i/254, 1+i%254)
}

// TestMain removes the CLI built by buildCLI when the benchmarks are done.
func TestMain(m *testing.M) {
	code := m.Run()
	if cliPath != "" {
		os.RemoveAll(filepath.Dir(cliPath))
	}
	os.Exit(code)
}

var (
	cliOnce sync.Once
	cliPath string
	cliErr  error
)

// buildCLI builds examples/rediacc once per test binary and returns the
// path of the executable.
func buildCLI(tb testing.TB) string {
	tb.Helper()
	cliOnce.Do(func() {
		dir, err := os.MkdirTemp("", "rediacc-bench-cli-")
		if err != nil {
			cliErr = err
			return
		}
		cliPath = filepath.Join(dir, "rediacc")
		cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", cliPath, "github.com/rediacc/rediacc/examples/rediacc")
		if out, err := cmd.CombinedOutput(); err != nil {
			cliErr = fmt.Errorf("go build examples/rediacc: %v: %s", err, out)
		}
	})
	if cliErr != nil {
		tb.Fatal(cliErr)
	}
	return cliPath
}

// cliRun is one invocation of the example CLI on a data directory.
type cliRun struct {
	tb      testing.TB
	bin     string
	dataDir string
	env     []string // added to the environment of every command
}

// cmd returns the command with --data-dir set; stderr goes to DATA/cli.log.
func (c cliRun) cmd(args ...string) (*exec.Cmd, *bytes.Buffer) {
	cmd := exec.Command(c.bin, append([]string{"--data-dir", c.dataDir}, args...)...)
	if len(c.env) > 0 {
		cmd.Env = append(os.Environ(), c.env...)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	if f, err := os.OpenFile(filepath.Join(c.dataDir, "cli.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
		cmd.Stderr = f
		c.tb.Cleanup(func() { f.Close() })
	}
	return cmd, &out
}

// ok runs the CLI and fails the benchmark on a non-zero exit; it returns
// stdout and the process state.
func (c cliRun) ok(args ...string) (string, *os.ProcessState) {
	c.tb.Helper()
	cmd, out := c.cmd(args...)
	if err := cmd.Run(); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.dataDir, "cli.log"))
		if len(log) > 3000 {
			log = log[len(log)-3000:]
		}
		c.tb.Fatalf("rediacc %s: %v\nstdout: %s\nlog (tail): %s", strings.Join(args, " "), err, out, log)
	}
	return out.String(), cmd.ProcessState
}

// addMachines registers servers as m000, m001, … in team (default team
// when "").
func (c cliRun) addMachines(servers []*sshtest.OpenSSH, team string) {
	c.tb.Helper()
	for i, s := range servers {
		args := []string{"machine", "add", machineName(i), "--host", s.Host, "--port", strconv.Itoa(s.Port), "--user", s.User,
			"--identity", s.ClientKeyPath, "--known-hosts", s.KnownHostsPath}
		if team != "" {
			args = append(args, "--team", team)
		}
		c.ok(args...)
	}
}

func machineName(i int) string { return fmt.Sprintf("m%03d", i) }

// osUser is the CLI's default actor: the OS login's name.
func osUser(tb testing.TB) string {
	u, err := user.Current()
	if err != nil {
		tb.Fatal(err)
	}
	return u.Username
}
