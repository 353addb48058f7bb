package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/lmittmann/tint"

	"github.com/rediacc/rediacc/ssh/sshtest"
)

// hostile holds what a task's output, a name or a description may carry to
// take over a terminal: OSC (window title, clipboard), clear screen, cursor
// up, a carriage return overwriting the line, a BiDi override, C1 CSI.
const hostile = "safe\x1b]0;PWNED\x07\x1b[2J\x1b[1Ared\rHIDDEN \u202eevil\u0085\u009b2J"

// terminalActive reports the first character a terminal would act on.
func terminalActive(s string) (rune, bool) {
	for _, r := range strings.ReplaceAll(s, "\r\n", "\n") {
		if (r < 0x20 && r != '\n' && r != '\t') || r == 0x7f || (r >= 0x80 && r < 0xa0) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
			return r, true
		}
	}
	return 0, false
}

func TestTermWriter(t *testing.T) {
	var b bytes.Buffer
	w := newTermWriter(&b)
	// An escape, a multi-byte character and CR LF split across writes.
	in := []byte("a\x1b[2Jé\u202e\r\nb\rc\r")
	for i := range in {
		if _, err := w.Write(in[i : i+1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if want := `a\x1b[2Jé\u202e` + "\r\n" + `b\rc\r`; b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
	b.Reset()
	_, _ = w.Write([]byte("x\xff\x9by\tz\n"))
	if want := `x\xff\x9by` + "\tz\n"; b.String() != want {
		t.Errorf("invalid UTF-8: got %q, want %q", b.String(), want)
	}
	if got := cell("a\tb\nc\x1bd"); got != `a\tb\nc\x1bd` {
		t.Errorf("cell: %q", got)
	}
}

// Every human output path escapes what a terminal would act on — a task's
// output (logs, inspect, list, create --wait), descriptions, reasons, audit
// details, error messages and log records — while -o json and logs --raw
// keep it exact.
func TestCLITerminalEscapes(t *testing.T) {
	c := cli{t: t, dir: t.TempDir()}
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 5})
	c.ok("team", "create", "dev", "--description", hostile)
	addMachine(c, "m1", "dev", srv)
	cmd := "printf '%s' '" + hostile + "'; printf '%s' '" + hostile + "' >&2; exit 3"
	id := strings.TrimSpace(c.ok("create", "task", "--machine", "m1", "--command", cmd, "--failure-action", "none"))

	// The worker logs with the text handler (tint), the task's error included.
	code, _, werr := c.run("--log-format", "text", "worker", "--until-empty")
	if code != 0 {
		t.Fatalf("worker: exit %d: %s", code, werr)
	}
	check := func(what, s string) {
		t.Helper()
		if r, bad := terminalActive(s); bad {
			t.Errorf("%s prints %U to the terminal:\n%q", what, r, s)
		}
	}
	check("worker log", werr)
	for _, args := range [][]string{
		{"logs", id},
		{"inspect", "queue", id},
		{"list", "queue"},
		{"team", "list"},
		{"list", "audit-logs"},
		{"machine", "drain", "m1", "--reason", hostile},
		{"queue", "status"},
		{"team", "create", "x" + hostile},
		{"vault", "get", "--team", "dev", hostile},
		{"inspect", "queue", hostile},
		{"machine", "add", hostile, "--host", "127.0.0.1"},
	} {
		_, out, errs := c.run(args...)
		check(strings.Join(args[:2], " ")+" stdout", out)
		check(strings.Join(args[:2], " ")+" stderr", errs)
	}
	_, out, errs := c.run("logs", id)
	if !strings.Contains(out, `safe\x1b]0;PWNED\x07\x1b[2J\x1b[1Ared\rHIDDEN \u202eevil\u0085\u009b2J`) || !strings.Contains(errs, `\x1b]0;PWNED`) {
		t.Errorf("logs does not show the escapes visibly:\nstdout %q\nstderr %q", out, errs)
	}
	// Exact for programs.
	if _, out, errs := c.run("logs", id, "--raw"); out != hostile || !strings.Contains(errs, hostile) {
		t.Errorf("logs --raw: stdout %q stderr %q, want %q each", out, errs, hostile)
	}
	var task map[string]any
	if err := json.Unmarshal([]byte(c.ok("inspect", "queue", id, "-o", "json")), &task); err != nil || task["stdout"] != hostile {
		t.Errorf("inspect -o json: stdout %q (%v), want %q", task["stdout"], err, hostile)
	}
	var teams []map[string]any
	if err := json.Unmarshal([]byte(c.ok("team", "list", "-o", "json")), &teams); err != nil {
		t.Fatal(err)
	}
	for _, tm := range teams {
		if tm["name"] == "dev" && tm["description"] != hostile {
			t.Errorf("team list -o json: description %q, want %q", tm["description"], hostile)
		}
	}
}

// tint, colouring, keeps the escape sequences of values: safeHandler
// escapes them (and the message) first.
func TestSafeHandlerUnderTint(t *testing.T) {
	var b bytes.Buffer
	log := slog.New(safeHandler{tint.NewHandler(&b, &tint.Options{NoColor: false})})
	log.With("task", hostile).WithGroup("g").Info("failed: "+hostile, "error", errors.New(hostile), "out", hostile, "literal", `\x1b[2J`)
	for _, active := range []string{"\x1b]", "\x1b[2J", "\x1b[1A", "\r", "\u202e", "\u009b", "\x07"} {
		if strings.Contains(b.String(), active) {
			t.Errorf("log record holds %q:\n%q", active, b.String())
		}
	}
}
