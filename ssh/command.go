package ssh

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
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
	// Cmd and the Env exports, after quoting, must fit the command line
	// limit MaxCommandLineBytes (see CommandLineSize).
	Cmd string
	// Env holds environment variables for the command. They are not sent
	// with the SSH "env" request (OpenSSH only accepts LANG and LC_* by
	// default) but as shell-quoted `export K='v'` assignments in front of
	// Cmd. Keys must match [A-Za-z_][A-Za-z0-9_]*; values must not contain
	// NUL. A bad entry fails Run with ErrInvalidCommand. The values appear in
	// the remote command line (visible to `ps` on the remote host while the
	// login shell parses it); pass credentials through Secrets instead.
	Env map[string]string
	// Secrets holds environment variables whose values must never appear on
	// a command line: not in the exec string sent to the server (so not in
	// the remote `ps`), not in any local argv. They reach the script through
	// the session's stdin instead: the exec string starts with a prelude
	// that reads `export K='v'` lines with the shell's read builtin up to a
	// random per-run end line, evals them and unsets its temporary
	// variables, then Stdin (if any) follows on the same stream (see "How
	// commands run" in the package doc). Inside the script they are
	// ordinary exported variables: the commands it starts inherit them in
	// their environment (readable by the same user and root through
	// /proc/PID/environ), and whatever the script prints is returned as is —
	// mask output with internal/redact where needed.
	//
	// Keys follow the rules of Env and must not also be keys of Env; values
	// may hold any bytes but NUL (newlines and quotes included), up to
	// MaxSecretEntryBytes for NAME=value and MaxSecretsBytes together. A bad entry
	// fails Run with ErrInvalidCommand naming the key, never the value; no
	// error or log line of this package contains a value. An empty map is
	// the same as nil. The values are copied into a buffer that is zeroed
	// once written to the session (a best effort: the SSH layer has its own
	// buffers).
	Secrets map[string][]byte
	// Stdin, when non-nil, is copied to the command's standard input, which
	// is closed at EOF. When nil the command reads EOF at once. With Secrets
	// the script sees only the bytes of Stdin: the secrets block before them
	// is consumed by the prelude. Run does not wait for a blocked Stdin
	// reader after the command ends.
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
	// RunID, when set, makes the run findable on the machine, so that at
	// most one copy of it ever runs and its fate can be learned later,
	// from any process, with Pool.Settle (see "Runs that can be found
	// again" in the package doc). The login shell creates the marker,
	// the file RunDirBase/RunID in the login user's home (atomically:
	// when it exists already the run was taken, and Run returns an error
	// wrapping ErrRunTaken without running Cmd), records its process
	// group, the boot id and what tells it apart from a later process
	// with its pid (its autogroup or start time: Remote.StartTime) there,
	// and, when Cmd ends, its exit status. Cmd runs in the login shell or
	// in a subshell (see the package doc). When the marker cannot
	// be created (the home is not writable) Cmd runs without one
	// (Result.Remote.RunDir is ""). A connection lost while such a run is
	// under way is settled before Run returns (see Run). Once its result is
	// stored, pass the Result to Pool.ReleaseRun so that the marker is
	// removed. 1..MaxRunIDLen bytes of [A-Za-z0-9._-], not starting with
	// '.'; use a new id for every run.
	RunID string
	// OnStart, when set, is called once, from one of Run's goroutines,
	// when the remote shell has reported its process (before Cmd runs),
	// with that process's identity. It must not block for long.
	OnStart func(Remote)
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
	// Remote identifies the command's processes on the machine (zero when
	// its shell never reported them).
	Remote Remote
	// Recovered reports a result whose exit status was read from the
	// run's marker after the connection was lost: the output after the
	// loss is missing.
	Recovered bool

	marker markerRef // the run's marker, for Pool.ReleaseRun (release.go)
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
	if shellSafe(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// shellSafe reports whether every byte of s is a letter, a digit or one of
// -_./:@+, (a word that needs no quotes).
func shellSafe[S string | []byte](s S) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_./:@+,", c) >= 0) {
			return false
		}
	}
	return true
}

// appendShellQuote appends ShellQuote(string(v)) to dst without making a
// string of v (so that the copy of a secret can be zeroed).
func appendShellQuote(dst, v []byte) []byte {
	if len(v) == 0 {
		return append(dst, "''"...)
	}
	if shellSafe(v) {
		return append(dst, v...)
	}
	dst = append(dst, '\'')
	for _, c := range v {
		if c == '\'' {
			dst = append(dst, `'\''`...)
		} else {
			dst = append(dst, c)
		}
	}
	return append(dst, '\'')
}

// pidMarker starts the line the wrapper writes first on stderr to report
// the remote process id (which is also its process group id).
const pidMarker = "\x1erediacc-pid "

// wrapperPrefix starts the exec string: the login shell (which OpenSSH
// makes a session and process group leader) reports its pid on stderr, then
// evals the user's script in the same process. No extra process is started:
// the command costs what a bare `ssh host cmd` costs, and a syntax error in
// the script is reported by eval after the pid line.
const wrapperPrefix = pidReport + "eval "

// pidReport is the first command of the exec string: the login shell
// reports its pid on stderr.
const pidReport = `printf '\036rediacc-pid %s\n' "$$" >&2; `

// buildScript returns the user's script with the env exports in front.
func buildScript(cmd *Command) (string, error) {
	if strings.TrimSpace(cmd.Cmd) == "" {
		return "", fmt.Errorf("Command.Cmd is empty")
	}
	// Quoting only adds: refuse what is over the limit before quoting it
	// (a Cmd of 256 MiB of quotes took 29 s and 3.5 GiB to be refused).
	if size := rawSize(cmd); size > MaxCommandLineBytes {
		return "", fmt.Errorf("Command.Cmd and Env are %d bytes before shell quoting, more than MaxCommandLineBytes (%d): "+
			"the remote system would refuse the command line; pass large data another way (Stdin, a file on the machine)", size, MaxCommandLineBytes)
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
				return "", fmt.Errorf("Command.Env key %s is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)", quoteName(k))
			}
			if strings.IndexByte(v, 0) >= 0 {
				return "", fmt.Errorf("Command.Env[%s] contains a NUL byte", quoteName(k))
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

// rawSize is the size of cmd's Cmd and Env before shell quoting: a lower
// bound of its command line.
func rawSize(cmd *Command) int {
	size := len(cmd.Cmd)
	for k, v := range cmd.Env {
		size += len(k) + 1 + len(v)
	}
	return size
}

// quoteName quotes a name (an Env or Secrets key, a RunID) for an error
// message: Go-quoted, cut before its first byte outside [A-Za-z0-9_.-]
// and after 64 bytes, with its length when cut — a "NAME=value" or
// "NAME value" passed as a key must not echo the value.
func quoteName(s string) string {
	n := len(s)
	i := 0
	for i < len(s) && i < 64 {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			break
		}
		i++
	}
	if i < n {
		return fmt.Sprintf("%q… (%d bytes)", s[:i], n)
	}
	return fmt.Sprintf("%q", s)
}

// ExecString returns the exec request string that Pool.Run sends for cmd:
// its script wrapped as the pool wraps it (the run's marker when RunID is
// set, the secrets prelude when Secrets are; the secret values themselves
// go on stdin and never appear in it). The pool may put its own upkeep in
// front of it now and then (removing released markers, the daily sweep of
// leftovers, see RunDirBase), and the secrets' end line is drawn anew for
// each run. For debugging, and for benchmarks that replay the pool's
// remote work with another client. It returns an
// error wrapping ErrInvalidCommand where Pool.Run would (an empty script,
// a RunID that ValidRunID refuses, an invalid environment name or secret,
// an exec string over the server's limit).
func ExecString(cmd Command) (string, error) {
	remote, block, err := buildExec(&cmd)
	clear(block)
	if err != nil {
		return "", &wrapError{msg: "ssh: " + err.Error(), errs: []error{ErrInvalidCommand}}
	}
	return remote, nil
}

// buildExec is buildRemote with the command line's size checked
// (checkCommandLine, limits.go): what Run sends. On error the block is nil.
func buildExec(cmd *Command) (remote string, block []byte, err error) {
	remote, block, err = buildRemote(cmd)
	if err == nil {
		err = checkCommandLine(remote)
	}
	if err != nil {
		clear(block)
		return "", nil, err
	}
	return remote, block, nil
}

// buildRemote returns the exec string sent to the server and, when
// cmd.Secrets is not empty, the secrets block to write to the session's
// stdin before cmd.Stdin (nil otherwise).
func buildRemote(cmd *Command) (remote string, block []byte, err error) {
	script, err := buildScript(cmd)
	if err != nil {
		return "", nil, err
	}
	if cmd.RunID != "" && !ValidRunID(cmd.RunID) {
		return "", nil, fmt.Errorf("Command.RunID %s is not 1..%d bytes of [A-Za-z0-9._-] not starting with '.'", quoteName(cmd.RunID), MaxRunIDLen)
	}
	prelude := ""
	if len(cmd.Secrets) > 0 {
		var end string
		if end, block, err = buildSecrets(cmd); err != nil {
			return "", nil, err
		}
		prelude = secretsPrelude(end)
	}
	if cmd.RunID != "" {
		if inShellSafe(script) { // marker_inshell.go: no subshell
			return markerPrelude(cmd.RunID) + prelude + markerRunInShell(cmd.RunID, ShellQuote(script)), block, nil
		}
		return markerPrelude(cmd.RunID) + prelude + markerRun(cmd.RunID, ShellQuote(script)), block, nil
	}
	if prelude == "" {
		return wrapperPrefix + ShellQuote(script), nil, nil
	}
	return pidReport + prelude + "eval " + ShellQuote(script), block, nil
}

// secretsEndPrefix starts the line that ends the secrets block on stdin;
// 32 random hex digits follow.
const secretsEndPrefix = "rediacc-secrets-end-"

// newSecretsEnd returns a fresh end line (without its newline): 128 random
// bits. A variable so that tests can force a collision.
var newSecretsEnd = func() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (Go 1.24+: crashes the program instead)
	return secretsEndPrefix + hex.EncodeToString(b[:])
}

// secretsPrelude returns the shell text that reads the secrets block from
// stdin up to the line end, evals it and unsets its own variables. Only
// builtins and shell syntax touch the values (read, case, variable
// assignment, eval, unset, export): no process gets them in its argv. The
// unset runs inside the same eval, before the exports, so a secret may
// even share a name with a temporary variable. If stdin ends before the
// end line, the script is not run: exit status 125 and a fixed message.
func secretsPrelude(end string) string {
	return "_rediacc_e=" + end + " _rediacc_b= _rediacc_l= _rediacc_ok=\n" +
		"while IFS= read -r _rediacc_l; do case $_rediacc_l in \"$_rediacc_e\") _rediacc_ok=1; break;; esac; " +
		"_rediacc_b=\"$_rediacc_b$_rediacc_l\n\"; done\n" +
		"case $_rediacc_ok in 1) ;; *) printf 'rediacc: the secrets block on stdin ended early\\n' >&2; exit 125;; esac\n" +
		"eval \"unset _rediacc_e _rediacc_b _rediacc_l _rediacc_ok\n$_rediacc_b\"; "
}

// buildSecrets validates cmd.Secrets and returns the end line and the
// block for stdin: one `export K='v'` line per secret, sorted by key, then
// the end line. The end line is drawn again in the (2^-128) case that a
// value contains it, so no line of the block can end it early. Errors name
// keys, never values.
func buildSecrets(cmd *Command) (end string, block []byte, err error) {
	keys := make([]string, 0, len(cmd.Secrets))
	size := 0
	for k, v := range cmd.Secrets {
		keys = append(keys, k)
		size += len("export =\n''") + len(k) + len(v) + 3*bytes.Count(v, []byte("'"))
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !ValidEnvName(k) {
			return "", nil, fmt.Errorf("Command.Secrets key %s is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)", quoteName(k))
		}
		if _, dup := cmd.Env[k]; dup {
			return "", nil, fmt.Errorf("%s is a key of both Command.Env and Command.Secrets: keep it in one of them", quoteName(k))
		}
		if bytes.IndexByte(cmd.Secrets[k], 0) >= 0 {
			return "", nil, fmt.Errorf("Command.Secrets[%s] contains a NUL byte, which no shell variable can hold", quoteName(k))
		}
	}
	if err := checkSecretSizes(cmd.Secrets); err != nil {
		return "", nil, err
	}
	for {
		end = newSecretsEnd()
		clash := false
		for _, v := range cmd.Secrets {
			if bytes.Contains(v, []byte(end)) {
				clash = true
				break
			}
		}
		if !clash {
			break
		}
	}
	block = make([]byte, 0, size+len(end)+1)
	for _, k := range keys {
		block = append(block, "export "...)
		block = append(block, k...)
		block = append(block, '=')
		block = appendShellQuote(block, cmd.Secrets[k])
		block = append(block, '\n')
	}
	block = append(block, end...)
	block = append(block, '\n')
	return end, block, nil
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

// runInfo is what the pid line reports: the remote process and, for runs
// with a RunID, whether the marker was kept or the run was taken.
type runInfo struct {
	pid    int // 0 when the line was not found
	remote Remote
	taken  bool   // the run's marker existed: the command did not run
	swept  string // when the machine's markers were last swept (Unix seconds; "" unknown)
}

// pidFilter strips the wrapper's pid line from the start of stderr and
// reports it once (pid 0 when it was not found). Lines before the marker
// (e.g. noise from the login shell's start-up files) pass through.
type pidFilter struct {
	dst     io.Writer
	pending []byte
	done    bool
	lines   int
	once    sync.Once
	pidCh   chan runInfo // buffered, receives exactly one value
	runID   string
	onStart func(Remote)
	mu      sync.Mutex
	seen    runInfo
}

func newPidFilter(dst io.Writer) *pidFilter {
	return &pidFilter{dst: dst, pidCh: make(chan runInfo, 1)}
}

// info returns what the pid line reported (zero before it was seen).
func (f *pidFilter) info() runInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen
}

func (f *pidFilter) report(ri runInfo) {
	f.once.Do(func() {
		f.mu.Lock()
		f.seen = ri
		f.mu.Unlock()
		if ri.pid > 0 && !ri.taken && f.onStart != nil {
			f.onStart(ri.remote)
		}
		f.pidCh <- ri
	})
}

// parsePidLine reads "PID [BOOT START FLAG]" (after the marker).
func (f *pidFilter) parsePidLine(rest []byte) runInfo {
	fields := strings.Fields(string(rest))
	if len(fields) == 0 {
		return runInfo{}
	}
	pid, err := strconv.Atoi(fields[0])
	if err != nil || pid <= 1 {
		return runInfo{}
	}
	ri := runInfo{pid: pid, remote: Remote{PGID: pid}}
	if len(fields) >= 4 {
		ri.remote.BootID, ri.remote.StartTime = undash(fields[1]), undash(fields[2])
		if len(fields) >= 5 {
			ri.swept = undash(fields[4])
		}
		switch fields[3] {
		case "m":
			if f.runID != "" {
				ri.remote.RunDir = RunDirBase + "/" + f.runID
			}
		case "t":
			ri.taken = true
		}
	}
	return ri
}

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
			f.report(f.parsePidLine(rest))
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
	f.report(runInfo{})
}

// finish flushes what is pending at EOF.
func (f *pidFilter) finish() {
	if !f.done {
		f.giveUp()
	}
}
