package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// REDIACC_CPUPROFILE: a profile that cannot be written is one warning
// line that quotes the path (no raw control characters), a file is 0600
// even when it existed, a symbolic link is not followed, and writes that
// fail are reported.
func TestCPUProfileEnv(t *testing.T) {
	dir := t.TempDir()
	run := func(path string) string {
		t.Helper()
		var stderr bytes.Buffer
		stop := startCPUProfile(path, &stderr)
		for i := 0; i < 1e6; i++ { // something to sample
			_ = strings.Repeat("x", i%7)
		}
		stop()
		return stderr.String()
	}
	oneLine := func(t *testing.T, out, want string) {
		t.Helper()
		if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "warning: REDIACC_CPUPROFILE=") || !strings.Contains(out, want) ||
			strings.ContainsAny(strings.TrimSuffix(out, "\n"), "\x1b\n\r") {
			t.Errorf("warning %q: want one line with %q and no control characters", out, want)
		}
	}
	oneLine(t, run(dir), "no CPU profile")
	oneLine(t, run(filepath.Join(dir, "missing\x1b[31m\nx", "p")), "no such file or directory")
	if _, err := os.Stat("/dev/full"); err == nil {
		oneLine(t, run("/dev/full"), "the CPU profile is incomplete")
	}
	existing := filepath.Join(dir, "existing.pprof")
	if err := os.WriteFile(existing, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := run(existing); out != "" {
		t.Errorf("profile to an existing file: %q", out)
	}
	if fi, err := os.Stat(existing); err != nil || fi.Mode().Perm() != 0o600 || fi.Size() < 10 {
		t.Errorf("existing file after the profile: %v %v, want a profile with mode 0600", fi, err)
	}
	victim, link := filepath.Join(dir, "victim"), filepath.Join(dir, "link.pprof")
	if err := os.WriteFile(victim, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	oneLine(t, run(link), "no CPU profile")
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Errorf("the link's target was written: %q", b)
	}
	if out := run(""); out != "" {
		t.Errorf("empty path: %q, want no profile and no warning", out)
	}
}
