package ssh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
)

// RunDirBase is where, relative to the login user's home directory, a run
// with a Command.RunID keeps its marker: the file RunDirBase/RUNID (a
// directory for runs started by older versions of this package, or claimed
// by Pool.Settle). RunDirBase/.swept records the last sweep of leftovers.
const RunDirBase = ".cache/rediacc/run"

// MaxRunIDLen bounds Command.RunID.
const MaxRunIDLen = 128

// ValidRunID reports whether id can name a run's marker directory: 1 to
// MaxRunIDLen bytes of [A-Za-z0-9._-], not starting with '.'.
func ValidRunID(id string) bool {
	if id == "" || len(id) > MaxRunIDLen || id[0] == '.' {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Remote identifies a command's processes on its machine.
type Remote struct {
	// PGID is the process group (and session) id of the command: the pid
	// of the login shell that runs it. 0 when unknown.
	PGID int
	// BootID is the machine's boot id (Linux: /proc/sys/kernel/random/boot_id),
	// "" when unknown. A different boot id means the process is gone.
	BootID string
	// StartTime tells the login shell apart from a later process that
	// reuses its pid, with BootID: "aN" for its scheduler autogroup N
	// (Linux: /proc/PGID/autogroup; a new session gets a new one, never
	// given again before a reboot) where the kernel keeps autogroups, else
	// its start time in clock ticks since boot (field 22 of
	// /proc/PGID/stat); "" when unknown. Compare it only for equality.
	StartTime string
	// RunDir is the path of the run's marker, relative to the login
	// user's home (RunDirBase/RUNID); "" when the command had no RunID or
	// the marker could not be created (the home is not writable).
	RunDir string
}

// FateState says what became of a run (see Pool.Settle).
type FateState string

// Fates of a run.
const (
	// FateNotStarted: the run never started, and never will: Settle (or an
	// earlier Settle) claimed its marker directory, so an exec request for
	// it still in flight finds the run taken and does not run the command.
	FateNotStarted FateState = "not-started"
	// FateExited: the command ended by itself; Fate.ExitCode is its status.
	FateExited FateState = "exited"
	// FateStopped: the command was running; Settle stopped its process
	// group (TERM, then KILL after Config.KillGrace) and saw every process
	// of it end. It may have done part of its work.
	FateStopped FateState = "stopped"
	// FateGone: the command no longer runs but ended without recording its
	// exit status (it was killed by a signal, the machine rebooted, or it
	// ran without a marker directory): whether it completed cannot be
	// learned.
	FateGone FateState = "gone"
)

// Fate is what Pool.Settle learned of a run.
type Fate struct {
	State FateState
	// ExitCode is the command's exit status (FateExited only).
	ExitCode int
	// Remote is the run's process as its marker recorded it (zero when it
	// never started).
	Remote Remote
	// Detail says how the fate was learned, in words.
	Detail string
}

// markerPrelude is the start of the exec string of a run with a RunID.
// The login shell creates the run's marker, the regular file
// RunDirBase/RUNID, with a noclobber redirection (set -C: the shell opens
// it with O_CREAT|O_EXCL, so of the run itself and a Settle — which claims
// the same path with mkdir — exactly one creates it; checked in dash, bash
// and busybox ash), writing its first line "p PID BOOTID IDENT" (its
// process id, the boot id, and what tells it apart from a later process
// with its pid: identityRead). It then reads the time of the
// last sweep of the machine's markers (file .swept, see sweepScript) and
// reports all that on stderr (the pid line). When the path exists already
// the run was taken (by a Settle, or an earlier exec of the same run): the
// shell reports that and exits without running anything. When it cannot
// be created (the home is not writable) the command runs without a marker.
// Only builtins run, except a mkdir -p of RunDirBase the first time on a
// machine.
func markerPrelude(runID string) string {
	f := `"$_rediacc_d/` + runID + `"`
	create := `{ echo "p $$ $_rediacc_b $_rediacc_s" >` + f + `; } 2>/dev/null`
	return `_rediacc_d=$HOME/` + RunDirBase + ` _rediacc_m=m _rediacc_b=- _rediacc_s=- _rediacc_w=- _rediacc_x=` + "\n" +
		`{ read -r _rediacc_b </proc/sys/kernel/random/boot_id; } 2>/dev/null || _rediacc_b=-` + "\n" +
		identityRead() + "\n" +
		`case $- in *C*) ;; *) set -C; _rediacc_m=mC;; esac` + "\n" +
		`if ` + create + ` || { [ ! -e ` + f + ` ] && mkdir -p "$_rediacc_d" 2>/dev/null && ` + create + `; }; then ` +
		`{ read -r _rediacc_w _rediacc_x <"$_rediacc_d/.swept"; } 2>/dev/null; elif [ -e ` + f + ` ]; then _rediacc_m=t${_rediacc_m#m}; else _rediacc_m=n${_rediacc_m#m}; fi` + "\n" +
		`case $_rediacc_m in *C) set +C; _rediacc_m=${_rediacc_m%C};; esac` + "\n" +
		`printf '\036rediacc-pid %s %s %s %s %s\n' "$$" "$_rediacc_b" "$_rediacc_s" "$_rediacc_m" "${_rediacc_w:--}" >&2` + "\n" +
		`case $_rediacc_m in t) exit 0;; esac` + "\n"
}

// identityRead sets _rediacc_s to what tells the login shell apart from a
// later process that reuses its pid (Remote.StartTime): its scheduler
// autogroup as "aN" when the kernel keeps them (Linux with
// CONFIG_SCHED_AUTOGROUP, as Debian, Ubuntu and RHEL build it) and the
// shell leads a session of its own, else its start time (statRead).
// sshd starts the login shell as the leader of a new session (setsid),
// and every new session gets a new autogroup, numbered by a counter that
// only grows (kernel/sched/autogroup.c: autogroup_seq_nr; it would take
// 2^31 sessions before a reboot to wrap, and the negative numbers past
// that take the start time); the pid of a session leader is not reused
// while its session lives. A shell whose autogroup is its parent's did not
// start a session (a server that runs it with setpgid only), so it shares
// that autogroup with other runs: it takes the start time. Both files are
// one short line ("/autogroup-N nice 0"), where /proc/PID/stat is about
// 300 bytes that dash reads one byte per read(2): on a 2-core VM the start
// time cost about 0.6 ms of the machine's CPU per run (docs/BENCHMARKS.md,
// "Cost on the managed host"). Every read is quiet when its file is
// missing (zsh reports a failed redirection even with 2>/dev/null on the
// command; in braces it does not).
func identityRead() string {
	return `if { read -r _rediacc_s _rediacc_x <` + procAutogroup + `; } 2>/dev/null && case $_rediacc_s in /autogroup-[1-9]*) ;; *) false;; esac && ` +
		`{ { read -r _rediacc_w _rediacc_x <` + procParentAutogroup + `; } 2>/dev/null || _rediacc_w=; [ "$_rediacc_w" != "$_rediacc_s" ]; }; ` +
		`then _rediacc_s=a${_rediacc_s#/autogroup-} _rediacc_w=- _rediacc_x=; else ` + statRead + `; fi`
}

// procAutogroup and procParentAutogroup are the files identityRead reads
// the shell's and its parent's autogroups from; variables so that tests
// can take the start-time paths.
// procAutogroupOf is the file Settle's alive() reads the autogroup of the
// process with pid $_p from.
var (
	procAutogroup       = `/proc/$$/autogroup`
	procParentAutogroup = `/proc/$PPID/autogroup`
	procAutogroupOf     = `/proc/"$_p"/autogroup`
)

// statRead sets _rediacc_s to the login shell's start time, field 22 of
// /proc/$$/stat, with one read into 23 variables (field 2, the command
// name in parentheses, into _rediacc_w; the rest into _rediacc_x, both
// reset): splitting the line with `set --` cost the machine about 0.2 ms
// of CPU per run in dash, most of what reading it cost. When field 2 does
// not end with ")" (a command name with a space), the line is split after
// its last ") " instead, as before.
const statRead = `if { read -r _rediacc_x _rediacc_w` + statSkip19 + ` _rediacc_s _rediacc_x </proc/$$/stat; } 2>/dev/null; then ` +
	`case $_rediacc_w in *')') ;; *) read -r _rediacc_s </proc/$$/stat; _rediacc_s=${_rediacc_s##*) }; set -- $_rediacc_s; _rediacc_s=${20:--}; set --;; esac; ` +
	`_rediacc_w=- _rediacc_x=; else _rediacc_s=-; fi`

// statSkip19 names fields 3 to 21 of /proc/PID/stat (not kept).
const statSkip19 = ` _rediacc_x _rediacc_x _rediacc_x _rediacc_x _rediacc_x _rediacc_x _rediacc_x _rediacc_x _rediacc_x _rediacc_x` +
	` _rediacc_x _rediacc_x _rediacc_x _rediacc_x _rediacc_x _rediacc_x _rediacc_x _rediacc_x _rediacc_x`

// markerRun runs the script in a subshell, so that whatever it does (exit,
// exec, traps, set -e, a syntax error) the login shell appends its exit
// status to the marker afterwards, as the line "x STATUS". (The subshell
// is the one process a marked run costs beyond an unmarked one.)
func markerRun(runID, quotedScript string) string {
	return `(unset _rediacc_d _rediacc_m _rediacc_b _rediacc_s _rediacc_w _rediacc_x; eval ` + quotedScript + `); _rediacc_x=$?` + "\n" +
		`case $_rediacc_m in m) echo "x $_rediacc_x" >>"$_rediacc_d/` + runID + `";; esac` + "\n" +
		`exit $_rediacc_x`
}

// groupLib defines the shell functions alive and stop for process group
// $_p whose leader is told apart by $_ps (Remote.StartTime: "aN", its
// autogroup, or its start time; "-" when unknown). alive fails when no
// process of the group is left; zombies (on Linux) do not count, and a
// leader pid that now belongs to another process (another autogroup,
// none, or a younger start time) means the group is gone (a pid is not
// reused while it is a process group id). stop sends
// TERM to the group, waits up to grace, sends KILL and waits up to 5 s;
// it fails when the group survives.
func groupLib(grace time.Duration) string {
	steps := strconv.Itoa(max(1, int(grace/(100*time.Millisecond))))
	return `_zz() { sleep 0.1 2>/dev/null || sleep 1; }` + "\n" +
		`alive() {
  kill -0 -"$_p" 2>/dev/null || return 1
  [ -r /proc/self/stat ] || return 0
  case $_ps in
  a[0-9]*) _l=; if { read -r _l _ag <` + procAutogroupOf + `; } 2>/dev/null || [ -r ` + procAutogroupOf + ` ]; then [ "$_l" = "/autogroup-${_ps#a}" ] || return 1; fi;;
  -) ;;
  *) if read -r _l 2>/dev/null </proc/"$_p"/stat; then
       _l=${_l##*) }; set -- $_l; [ "${20}" = "$_ps" ] || return 1
     fi;;
  esac
  for _f in /proc/[0-9]*/stat; do
    read -r _l 2>/dev/null <"$_f" || continue
    _l=${_l##*) }; set -- $_l
    if [ "$3" = "$_p" ]; then case $1 in Z|X|x) ;; *) return 0;; esac; fi
  done
  return 1
}
stop() {
  kill -TERM -"$_p" 2>/dev/null
  _i=0; while alive && [ $_i -lt ` + steps + ` ]; do _zz; _i=$((_i+1)); done
  alive || return 0
  kill -KILL -"$_p" 2>/dev/null
  _i=0; while alive && [ $_i -lt 50 ]; do _zz; _i=$((_i+1)); done
  ! alive
}
`
}

// killScript returns the remote script that stops process group pid:
// TERM, up to grace for it to exit, then KILL; it exits 0 once no process
// of the group is left, 1 when some survived KILL.
func killScript(pid int, grace time.Duration) string {
	return "_p=" + strconv.Itoa(pid) + " _ps=-\n" + groupLib(grace) + "stop\n"
}

// fateMarker starts the line the settle script prints its verdict on.
const fateMarker = "\x1erediacc-fate "

// settleScript returns the remote script of Settle: it claims the marker
// path of run runID with mkdir when nothing is there yet (the run never
// started: mkdir fails on a path that exists as a file or a directory, as
// the run's noclobber creation does, so exactly one of them wins), else
// reads the run's process identity from the marker (or uses known when the
// run kept no marker) and its exit status, and stops the run's process
// group if it still runs. It prints one fate line. The marker is a file
// (markerPrelude) or, for a run started by an older version of this
// package or claimed by a Settle, a directory holding the files pid,
// status, claimed and stopped. A verdict on a file marker is appended to
// it ("s BOOTID" stopped, "g" gone), so that sweepScript knows it is
// settled.
func settleScript(runID string, known Remote, grace time.Duration) string {
	dash := func(s string) string {
		if s == "" || !shellSafe(s) {
			return "-"
		}
		return s
	}
	kp := "-"
	if known.PGID > 1 {
		kp = strconv.Itoa(known.PGID)
	}
	return `_d=$HOME/` + RunDirBase + `/` + runID + ` _b=- _p= _pb= _ps= _x= _k= _s=` + "\n" +
		`read -r _b 2>/dev/null </proc/sys/kernel/random/boot_id || _b=-` + "\n" +
		`fate() { printf '\036rediacc-fate %s\n' "$*"; exit 0; }` + "\n" +
		`status() {
  if [ -f "$_d" ]; then
    _s=
    while read -r _k _x; do
      case $_k in
      x) case $_x in ''|*[!0-9]*) ;; *) fate exited "$_x" "${_p:--}" "${_pb:--}" "${_ps:--}";; esac;;
      s) _s=1;;
      esac
    done <"$_d"
    return 0
  fi
  _j=0
  while [ -f "$_d/status" ] && [ $_j -lt 20 ]; do
    _x=; read -r _x 2>/dev/null <"$_d/status"
    case $_x in ''|*[!0-9]*) _zz; _j=$((_j+1));; *) fate exited "$_x" "${_p:--}" "${_pb:--}" "${_ps:--}";; esac
  done
  [ -f "$_d/stopped" ] && _s=1
  return 0
}
verdict() { if [ -f "$_d" ]; then echo "$1 $_b" >>"$_d"; elif [ -d "$_d" ]; then echo "$_b" >"$_d/$2"; fi; }
` + groupLib(grace) +
		`if [ ! -e "$_d" ] && { mkdir "$_d" 2>/dev/null || { mkdir -p "${_d%/*}" 2>/dev/null && mkdir "$_d" 2>/dev/null; }; }; then echo "$_b" >"$_d/claimed"; fate not-started claimed; fi
if [ -d "$_d" ]; then
  _i=0; while [ ! -f "$_d/pid" ] && [ ! -f "$_d/claimed" ] && [ $_i -lt 30 ]; do _zz; _i=$((_i+1)); done
  [ -f "$_d/pid" ] || { [ -f "$_d/claimed" ] && fate not-started claimed-before; fate gone - - - its shell ended before recording its process id; }
  read -r _p _pb _ps <"$_d/pid"
elif [ -f "$_d" ]; then
  _i=0; until { read -r _k _p _pb _ps <"$_d"; } 2>/dev/null || [ $_i -ge 30 ]; do _zz; _i=$((_i+1)); done
  [ "$_k" = p ] || fate gone - - - its shell ended before recording its process id
else
  _p=` + kp + ` _pb=` + dash(known.BootID) + ` _ps=` + dash(known.StartTime) + `
  case $_p in ''|-|0|1|*[!0-9]*) fate unknown - - - no marker and no process id to go by;; esac
fi
_pb=${_pb:--} _ps=${_ps:--}
status
[ "$_pb" != - ] && [ "$_b" != - ] && [ "$_pb" != "$_b" ] && { verdict g gone; fate gone "$_p" "$_pb" "$_ps" the machine rebooted since it started; }
if ! alive; then
  status
  [ -n "$_s" ] && fate stopped "$_p" "$_pb" "$_ps"
  verdict g gone
  fate gone "$_p" "$_pb" "$_ps" it ended without recording its exit status
fi
stop || fate running "$_p" "$_pb" "$_ps" its process group survived KILL
status
verdict s stopped
fate stopped "$_p" "$_pb" "$_ps"
`
}

// parseFate reads the settle script's verdict from its stdout.
func parseFate(out []byte, runID string) (Fate, error) {
	i := bytes.LastIndex(out, []byte(fateMarker))
	if i < 0 {
		return Fate{}, fmt.Errorf("no verdict in the settle script's output %q", clip(string(out), 200))
	}
	line, _, _ := strings.Cut(string(out[i+len(fateMarker):]), "\n")
	f := strings.Fields(line)
	if len(f) == 0 {
		return Fate{}, fmt.Errorf("empty verdict")
	}
	fate := Fate{Remote: Remote{RunDir: RunDirBase + "/" + runID}}
	remote := func() {
		if len(f) >= 4 {
			fate.Remote.PGID, _ = strconv.Atoi(f[1])
			fate.Remote.BootID, fate.Remote.StartTime = undash(f[2]), undash(f[3])
		}
		if len(f) > 4 {
			fate.Detail = strings.Join(f[4:], " ")
		}
	}
	switch f[0] {
	case "not-started":
		fate.State, fate.Remote = FateNotStarted, Remote{}
		fate.Detail = "the run never started; its marker is now claimed, so it never will"
		if len(f) > 1 && f[1] == "claimed-before" {
			fate.Detail = "the run never started; its marker was claimed before"
		}
	case "exited":
		if len(f) < 2 {
			return Fate{}, fmt.Errorf("verdict %q lacks the exit status", line)
		}
		code, err := strconv.Atoi(f[1])
		if err != nil {
			return Fate{}, fmt.Errorf("verdict %q: %v", line, err)
		}
		fate.State, fate.ExitCode = FateExited, code
		if len(f) >= 5 {
			fate.Remote.PGID, _ = strconv.Atoi(f[2])
			fate.Remote.BootID, fate.Remote.StartTime = undash(f[3]), undash(f[4])
		}
		fate.Detail = fmt.Sprintf("the command exited with status %d (read from its marker)", code)
	case "stopped":
		fate.State = FateStopped
		remote()
		fate.Detail = "the command was running; its process group was stopped (TERM, then KILL) and is gone"
	case "gone":
		fate.State = FateGone
		remote()
	case "running":
		remote()
		return fate, fmt.Errorf("%w: process group %d of run %s survived TERM and KILL", ErrFateUnknown, fate.Remote.PGID, runID)
	case "unknown":
		remote()
		return fate, fmt.Errorf("%w: run %s: %s", ErrFateUnknown, runID, fate.Detail)
	default:
		return Fate{}, fmt.Errorf("unknown verdict %q", line)
	}
	return fate, nil
}

func undash(s string) string {
	if s == "-" {
		return ""
	}
	return s
}

// Settle learns the fate of the run of a Command with RunID runID on t and
// makes sure it no longer runs, from any process: the run's own Pool may be
// gone (its worker crashed). known is what the caller recorded of the run's
// process (Result.Remote, or Command.OnStart's argument); it is used only
// when the run kept no marker directory.
//
// The verdicts (Fate.State):
//   - FateNotStarted: the marker directory did not exist; Settle created it,
//     so the run can no longer start (its exec request, if still in
//     flight, finds it taken);
//   - FateExited: the command ended by itself with Fate.ExitCode;
//   - FateStopped: it was running and Settle stopped its process group
//     (TERM, KILL after Config.KillGrace), then saw it gone;
//   - FateGone: it ended without recording a status, or the machine
//     rebooted: whether it completed cannot be learned.
//
// Errors: ErrInvalidCommand (bad runID or Target); errors wrapping
// ErrFateUnknown when the fate cannot be learned or the run cannot be
// stopped — the machine is unreachable (the error also wraps ErrConnect,
// ErrAuthFailed, ErrHostKeyMismatch… as Run's would), the process group
// survived KILL, or there is neither a marker nor a known process id.
// Settle is idempotent: settling a settled run gives the same state (a
// Settle that stops a run records so in its marker).
func (p *Pool) Settle(ctx context.Context, t Target, runID string, known Remote) (Fate, error) {
	if err := validateTarget(&t); err != nil {
		return Fate{}, err
	}
	if !ValidRunID(runID) {
		return Fate{}, targetErr(&t, ErrInvalidCommand, nil, "run id %s is not 1..%d bytes of [A-Za-z0-9._-] not starting with '.'", quoteName(runID), MaxRunIDLen)
	}
	if !p.enter() {
		return Fate{}, targetErr(&t, ErrPoolClosed, nil, "pool closed")
	}
	defer p.wg.Done()
	hp := p.hostPool(&t)
	return p.settle(ctx, &t, hp, runID, known)
}

// settle runs the settle script on a session of its own (allowed past the
// session limits, like a kill helper).
func (p *Pool) settle(ctx context.Context, t *Target, hp *hostPool, runID string, known Remote) (Fate, error) {
	fail := func(err error) (Fate, error) {
		return Fate{}, &wrapError{msg: fmt.Sprintf("ssh: machine %q (%s@%s): the fate of run %s cannot be learned: %v",
			t.Name, t.User, t.addr(), runID, err), errs: []error{ErrFateUnknown, err}}
	}
	grace := p.cfg.KillGrace
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout+p.cfg.HandshakeTimeout+p.cfg.SessionOpenTimeout+grace+20*time.Second)
	defer cancel()
	st, c, err := p.startSession(ctx, t, hp, settleScript(runID, known, grace), false, true)
	if err != nil {
		return fail(err)
	}
	defer p.release(c)
	defer st.sess.Close()
	out, errOut := &capture{limit: 64 << 10}, &capture{limit: 64 << 10}
	var readers sync.WaitGroup
	readers.Add(2)
	go func() { defer readers.Done(); _, _ = io.Copy(out, st.stdout) }()
	go func() { defer readers.Done(); _, _ = io.Copy(errOut, st.stderr) }()
	waitCh := make(chan error, 1)
	go func() { waitCh <- st.sess.Wait() }()
	var werr error
	select {
	case werr = <-waitCh:
	case <-ctx.Done():
		st.sess.Close()
		c.drop(errors.New("settle session did not end"))
		<-waitCh
		readers.Wait()
		return fail(ctxErr(t, ctx, "settling"))
	}
	readers.Wait()
	f, perr := parseFate(out.buf.Bytes(), runID)
	if perr != nil {
		if werr != nil {
			perr = fmt.Errorf("%v (session: %v; stderr %q)", perr, werr, clip(errOut.buf.String(), 200))
		}
		if errors.Is(perr, ErrFateUnknown) {
			return f, targetErr(t, nil, perr, "settling run %s", runID)
		}
		return fail(perr)
	}
	return f, nil
}
