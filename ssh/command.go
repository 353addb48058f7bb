package ssh

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Command is a shell command to run on a Target.
type Command struct {
	// Cmd is a POSIX shell script, run by the remote user's login shell as
	// ssh(1) does (through eval; the login shell must be POSIX-compatible:
	// sh, bash, dash, zsh, ash). Required; must not contain NUL bytes.
	Cmd string
	// Env holds environment variables for the command. They are not sent
	// with the SSH "env" request (OpenSSH only accepts LANG and LC_* by
	// default) but as shell-quoted `export K='v'` assignments in front of
	// Cmd. Keys must match [A-Za-z_][A-Za-z0-9_]*; values must not contain
	// NUL. A bad entry fails Run with ErrInvalidCommand. The values appear in
	// the remote command line (visible to `ps` on the remote host while the
	// login shell parses it); pass real secrets through Stdin instead.
	Env map[string]string
	// Stdin, when non-nil, is copied to the command's standard input, which
	// is closed at EOF. When nil the command reads EOF at once. Run does not
	// wait for a blocked Stdin reader after the command ends.
	Stdin io.Reader
	// Stdout and Stderr, when non-nil, receive a live copy of the full
	// streams, uncapped (OutputLimit applies only to Result). They are
	// written from separate goroutines, each sequentially, and Run returns
	// only after the last write. A write error stops the copy to that
	// writer; it does not fail the command. A writer that blocks stalls the
	// reading of that stream (and, once SSH flow control kicks in, the
	// remote command).
	Stdout, Stderr io.Writer
	// OutputLimit caps the bytes kept per stream in Result: 0 means the
	// Config default (1 MiB), negative means unlimited. Output beyond the
	// cap is read and discarded (the remote never blocks on a full pipe) and
	// the Truncated flag is set.
	OutputLimit int
	// Timeout bounds the run time from the moment the command starts (0 =
	// no limit beyond ctx). On expiry the remote process group is sent TERM,
	// then KILL after Config.KillGrace, and Run returns an error wrapping
	// ErrTimeout. Connection and session setup are bounded by ctx and the
	// Config timeouts, not by Timeout.
	Timeout time.Duration
}

// Result is the outcome of a command.
type Result struct {
	// ExitCode is the exit status: 0 for success, 1..255 otherwise,
	// 128+signal number when killed by a signal, -1 when unknown (the
	// command was cancelled or the connection dropped before it ended).
	ExitCode int
	// Signal is the name of the signal that killed the command ("TERM",
	// "KILL"), without the "SIG" prefix, or "".
	Signal string
	// Stdout and Stderr hold the captured output, each at most the output
	// limit in bytes.
	Stdout, Stderr []byte
	// StdoutTruncated and StderrTruncated report that the stream was longer
	// than the output limit and only its first bytes are kept.
	StdoutTruncated, StderrTruncated bool
	// Started is when the command started on the remote host (zero when it
	// never started); Ended is when Run saw it end.
	Started, Ended time.Time
}

// Duration returns Ended - Started, or 0 when the command never started.
func (r *Result) Duration() time.Duration {
	if r == nil || r.Started.IsZero() {
		return 0
	}
	return r.Ended.Sub(r.Started)
}

// ValidEnvName reports whether name is a portable environment variable name
// usable in Command.Env: [A-Za-z_][A-Za-z0-9_]*.
func ValidEnvName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// ShellQuote returns s quoted as one POSIX shell word. A non-empty s made
// only of letters, digits and the characters -_./:@+, is returned as is;
// any other s is wrapped in single quotes, each embedded single quote
// written as the four characters
//
//	'\''
//
// A POSIX shell (sh, dash, bash, zsh, ash) reads the result back as exactly
// s. s must not contain NUL, which no shell word can hold.
func ShellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_./:@+,", c) >= 0) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// pidMarker starts the line the wrapper writes first on stderr to report
// the remote process id (which is also its process group id).
const pidMarker = "\x1erediacc-pid "

// wrapperPrefix starts the exec string: the login shell (which OpenSSH
// makes a session and process group leader) reports its pid on stderr, then
// evals the user's script in the same process. No extra process is started:
// the command costs what a bare `ssh host cmd` costs, and a syntax error in
// the script is reported by eval after the pid line.
const wrapperPrefix = `printf '\036rediacc-pid %s\n' "$$" >&2; eval `

// buildScript returns the user's script with the env exports in front.
func buildScript(cmd *Command) (string, error) {
	if strings.TrimSpace(cmd.Cmd) == "" {
		return "", fmt.Errorf("Command.Cmd is empty")
	}
	if strings.IndexByte(cmd.Cmd, 0) >= 0 {
		return "", fmt.Errorf("Command.Cmd contains a NUL byte")
	}
	var b strings.Builder
	if len(cmd.Env) > 0 {
		keys := make([]string, 0, len(cmd.Env))
		for k := range cmd.Env {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b.WriteString("export")
		for _, k := range keys {
			v := cmd.Env[k]
			if !ValidEnvName(k) {
				return "", fmt.Errorf("Command.Env key %q is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)", k)
			}
			if strings.IndexByte(v, 0) >= 0 {
				return "", fmt.Errorf("Command.Env[%q] contains a NUL byte", k)
			}
			b.WriteString(" " + k + "=" + ShellQuote(v))
		}
		b.WriteString("\n")
	} else if c := cmd.Cmd[0]; c == '-' || c == '+' {
		b.WriteString(" ") // keep sh from reading the script as options
	}
	b.WriteString(cmd.Cmd)
	return b.String(), nil
}

// buildRemote returns the exec string sent to the server.
func buildRemote(cmd *Command) (string, error) {
	script, err := buildScript(cmd)
	if err != nil {
		return "", err
	}
	return wrapperPrefix + ShellQuote(script), nil
}

// killScript returns the remote script that stops process group pid:
// TERM, up to grace for it to exit, then KILL.
func killScript(pid int, grace time.Duration) string {
	steps := int(grace / (100 * time.Millisecond))
	p := strconv.Itoa(pid)
	return "kill -TERM -" + p + " 2>/dev/null || kill -TERM " + p + " 2>/dev/null\n" +
		"i=0\n" +
		"while [ $i -lt " + strconv.Itoa(steps) + " ] && { kill -0 -" + p + " 2>/dev/null || kill -0 " + p + " 2>/dev/null; }; do\n" +
		"  sleep 0.1 2>/dev/null || sleep 1; i=$((i+1))\n" +
		"done\n" +
		"kill -KILL -" + p + " 2>/dev/null; kill -KILL " + p + " 2>/dev/null\n" +
		"exit 0\n"
}

// capture is an io.Writer that keeps the first limit bytes (limit < 0:
// everything), sets truncated past it, and copies everything to live.
type capture struct {
	limit     int
	buf       bytes.Buffer
	truncated bool
	live      io.Writer
	liveErr   error
}

func (c *capture) Write(p []byte) (int, error) {
	if c.live != nil && c.liveErr == nil {
		if _, err := c.live.Write(p); err != nil {
			c.liveErr = err
		}
	}
	if c.limit < 0 {
		c.buf.Write(p)
		return len(p), nil
	}
	room := c.limit - c.buf.Len()
	if room >= len(p) {
		c.buf.Write(p)
	} else {
		if room > 0 {
			c.buf.Write(p[:room])
		}
		c.truncated = true
	}
	return len(p), nil
}

// pidFilter strips the wrapper's pid line from the start of stderr and
// reports the pid once (0 when it was not found). Lines before the marker
// (e.g. noise from the login shell's start-up files) pass through.
type pidFilter struct {
	dst     io.Writer
	pending []byte
	done    bool
	lines   int
	once    sync.Once
	pidCh   chan int // buffered, receives exactly one value
}

func newPidFilter(dst io.Writer) *pidFilter {
	return &pidFilter{dst: dst, pidCh: make(chan int, 1)}
}

func (f *pidFilter) report(pid int) { f.once.Do(func() { f.pidCh <- pid }) }

func (f *pidFilter) Write(p []byte) (int, error) {
	if f.done {
		return f.dst.Write(p)
	}
	f.pending = append(f.pending, p...)
	for !f.done {
		i := bytes.IndexByte(f.pending, '\n')
		if i < 0 {
			if len(f.pending) > 64<<10 {
				f.giveUp()
			}
			break
		}
		line := f.pending[:i+1]
		if rest, ok := bytes.CutPrefix(line, []byte(pidMarker)); ok {
			pid, err := strconv.Atoi(string(bytes.TrimSpace(rest)))
			if err != nil || pid <= 1 {
				pid = 0
			}
			f.report(pid)
			f.done = true
			tail := f.pending[i+1:]
			f.pending = nil
			if len(tail) > 0 {
				f.dst.Write(tail)
			}
			break
		}
		f.dst.Write(line)
		f.pending = f.pending[i+1:]
		if f.lines++; f.lines > 100 {
			f.giveUp()
		}
	}
	return len(p), nil
}

func (f *pidFilter) giveUp() {
	f.done = true
	if len(f.pending) > 0 {
		f.dst.Write(f.pending)
	}
	f.pending = nil
	f.report(0)
}

// finish flushes what is pending at EOF.
func (f *pidFilter) finish() {
	if !f.done {
		f.giveUp()
	}
}
