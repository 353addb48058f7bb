package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// Issue 9, kind 3: a `create batch` line over 64 KiB is judged by the
// task limits, and the error names the line and the limit (not a scanner
// buffer); a line no task could fit in is refused without reading on.
// Nothing is queued either way.
func TestCLIBatchLinesLimitedByTheTaskRule(t *testing.T) {
	c := cli{t: t, dir: t.TempDir()}
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 63})
	addMachine(c, "m1", "default", srv)
	line := func(v map[string]any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	okLine := line(map[string]any{"machine": "m1", "command": "true"})
	write := func(lines ...string) string {
		p := filepath.Join(t.TempDir(), "tasks.jsonl")
		if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	// A 100 KB env value: the line is over 64 KiB, the task over the env
	// value limit.
	big := line(map[string]any{"machine": "m1", "command": "true", "env": map[string]string{"BLOB": strings.Repeat("b", 100_000)}})
	code, _, errs := c.run("create", "batch", "-f", write(okLine, big))
	if code != exitInvalid || !strings.Contains(errs, "line 2:") || !strings.Contains(errs, "MaxEnvValueBytes") || strings.Contains(errs, "token too long") {
		t.Fatalf("a 100 KB env value on line 2: exit %d, stderr %s", code, errs)
	}

	// A 70 KiB command made of quotes: within the command limit of the
	// JSON, over the command line after quoting.
	quotes := line(map[string]any{"machine": "m1", "command": "echo " + strings.Repeat(`'\''`, 15_000)})
	code, _, errs = c.run("create", "batch", "-f", write(okLine, okLine, quotes))
	if code != exitInvalid || !strings.Contains(errs, "line 3:") || !strings.Contains(errs, "MaxCommandLineBytes") {
		t.Fatalf("quotes on line 3: exit %d, stderr %s", code, errs)
	}

	// A line no task fits in.
	huge := line(map[string]any{"machine": "m1", "command": strings.Repeat("x", 2<<20)})
	code, _, errs = c.run("create", "batch", "-f", write(okLine, huge))
	if code != exitInvalid || !strings.Contains(errs, "line 2 is longer than") || !strings.Contains(errs, "MaxCommandLineBytes") {
		t.Fatalf("a 2 MiB line: exit %d, stderr %s", code, errs)
	}

	var tasks []rediacc.Task
	if err := json.Unmarshal([]byte(c.ok("list", "queue", "-o", "json")), &tasks); err != nil || len(tasks) != 0 {
		t.Fatalf("refused batches queued %d tasks (%v)", len(tasks), err)
	}

	// A long line that holds a valid task (a 90 KiB command of escapes
	// that JSON writes as \u003c) is queued.
	long := line(map[string]any{"machine": "m1", "command": "echo '" + strings.Repeat("<", 20_000) + "'"})
	if len(long) < 64<<10 {
		t.Fatalf("the long line is only %d bytes", len(long))
	}
	c.ok("create", "batch", "-f", write(okLine, long))
}
