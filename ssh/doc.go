// Package ssh runs shell commands on remote machines over SSH, for the
// rediacc task workers. It is built on golang.org/x/crypto/ssh (no ssh
// binary is ever executed) and adds what a job runner needs: a connection
// pool that respects OpenSSH's per-connection session limit and start-up
// throttling, explicit host-key policies, credential loading that fails
// fast, deadlines on every network step, output capture with caps, and
// timeouts and cancellations that kill the remote process tree.
//
// # Quick start
//
//	pool := ssh.NewPool(ssh.Config{}) // zero Config: documented defaults
//	defer pool.Close()
//
//	web1 := ssh.Target{
//		Name:    "web-1",
//		Host:    "10.0.0.5",
//		User:    "deploy",
//		Auth:    []ssh.Auth{ssh.KeyFile("/home/deploy/.ssh/id_ed25519", nil)},
//		HostKey: ssh.KnownHosts(), // ~/.ssh/known_hosts, strict
//	}
//	res, err := pool.Run(ctx, web1, ssh.Command{
//		Cmd:     "systemctl restart app && systemctl is-active app",
//		Env:     map[string]string{"RELEASE": "2024.06.1"},
//		Timeout: 2 * time.Minute,
//	})
//	var exit *ssh.ExitError
//	switch {
//	case err == nil:
//		fmt.Printf("%s", res.Stdout)
//	case errors.As(err, &exit):
//		fmt.Printf("exit %d: %s", exit.Code, res.Stderr)
//	case ssh.IsRetryable(err):
//		// connection trouble: try again later
//	default:
//		// host key, auth, key file, timeout, cancellation: do not retry
//	}
//
// # Errors
//
// Errors wrap the sentinels of errors.go (ErrConnect, ErrAuthFailed,
// ErrHostKeyMismatch, ErrUnknownHostKey, ErrKeyFile, ErrWrongPassphrase,
// ErrTimeout, ErrPoolClosed, ErrInvalidCommand) and name the machine, user
// and address; messages say what to do. A non-zero exit is an *ExitError.
// IsRetryable is true only for connection problems.
//
// # How commands run
//
// The command string is executed by the login shell as
//
//	printf '\036rediacc-pid %s\n' "$$" >&2; eval '<exports>; <Cmd>'
//
// so the shell writes its process id as a first, stripped line on stderr
// and then runs the script itself (in a subshell when the Command has a
// RunID, see below): no extra process, and the command keeps
// the process group that OpenSSH creates for every session. On timeout or
// cancellation Run sends a "signal" request, then, from a second session,
// TERM to that process group and KILL after Config.KillGrace, so background
// children die too. Environment variables are exported by the script
// because OpenSSH accepts only LANG and LC_* through "env" requests.
//
// Command.Secrets never go into the exec string (which `ps` shows on the
// server, and sshd logs at LogLevel DEBUG3) nor into any argv. With
// secrets, a prelude comes between the pid line and the eval:
//
//	_rediacc_e=rediacc-secrets-end-<32 random hex digits> _rediacc_b= _rediacc_l= _rediacc_ok=
//	while IFS= read -r _rediacc_l; do case $_rediacc_l in "$_rediacc_e") _rediacc_ok=1; break;; esac; _rediacc_b="$_rediacc_b$_rediacc_l
//	"; done
//	case $_rediacc_ok in 1) ;; *) printf 'rediacc: the secrets block on stdin ended early\n' >&2; exit 125;; esac
//	eval "unset _rediacc_e _rediacc_b _rediacc_l _rediacc_ok
//	$_rediacc_b"; eval '<exports>; <Cmd>'
//
// and Run writes to the session's stdin, before Command.Stdin, the block
//
//	export DB_PASSWORD='<value, quoted as by ShellQuote>'
//	…one line per secret, sorted by name (a value's newlines continue it)…
//	rediacc-secrets-end-<the same hex digits>
//
// then zeroes its copy. The end line is drawn from crypto/rand for every
// Run (again in the unlikely case a value contains it). The shell reads
// the block line by line with its read builtin (which reads a pipe byte by
// byte, so nothing after the end line is consumed: the script's stdin is
// exactly Command.Stdin), and only builtins and shell syntax (read, case,
// assignment, eval, unset, export) ever hold the values, so no process has
// them in its argv; the temporary variables are unset before the exports
// run. Commands the script starts inherit the secrets in their environment,
// as with any exported variable. If stdin ends before the end line, the
// script does not run and the exit status is 125.
//
// # Runs that can be found again
//
// A Command with a RunID leaves a marker on the machine, so that at most
// one copy of the run ever runs and any process can later learn what
// became of it, even when the process that started it died. The exec
// string then starts with a prelude that creates the marker, the file
// ~/.cache/rediacc/run/RUNID (RunDirBase), with a noclobber redirection
// (set -C; the shell opens it O_CREAT|O_EXCL — checked in dash, bash and
// busybox ash — so of the run and a Pool.Settle, which claims the same
// path with mkdir, exactly one creates it), writing the line
// "p PGID BOOTID IDENT": the shell's process group id, the machine's
// boot id and what tells the shell apart from a later process with its
// pid (Remote.StartTime: "aN", the session's scheduler autogroup, from
// /proc/$$/autogroup, or the shell's start time in clock ticks, from
// /proc/$$/stat; "-" elsewhere). A worker of a version before the
// autogroup (2026-12) settling a run recorded with one takes it for gone:
// do not go back to such a version while runs are in flight. When
// the path already exists the run was taken: the shell reports so on its
// pid line and exits without running anything (ErrRunTaken). A script
// that could replace the shell, change its traps or run text it does not
// show (exec, trap, eval, ., source, alias, a function definition… see
// marker_inshell.go) then runs in a subshell,
//
//	(eval '<exports>; <Cmd>'); s=$?; echo "x $s" >>MARKER; exit $s
//
// so its exit status is recorded whatever it does; any other script runs
// in the login shell itself, after an EXIT trap that appends "x STATUS" to
// the marker (on the script's end, exit, a syntax error or a failing
// set -e command alike). The prelude uses shell builtins only (a mkdir -p
// of RunDirBase runs once per machine): a marked run costs the machine
// about 0.4 ms of CPU more than an unmarked one in the login shell, 0.65 ms
// with the subshell, where the first prelude of this kind cost 0.85 ms and
// the one before it, which exec'd mkdir, 2.1 ms (see docs/BENCHMARKS.md,
// "Cost on the managed host" and "Worker hot path"). A machine that cannot
// write ~/.cache runs the command without a marker (Result.Remote.RunDir
// is "").
//
// Markers are removed without ever listing them all. Once the caller has
// stored a run's result it calls Pool.ReleaseRun: the pool removes the
// released markers of a machine in batches of 32, with one rm prepended
// to a later command's exec string, and the rest when it closes. Only
// runs whose shell Run saw end are released; markers of runs whose
// connection was lost, that a Settle decided, or whose exec was sent
// twice stay (they may still keep a late copy from starting), and so do
// those of a worker that crashed. For those, a sweep runs in the
// background once a day per machine (the first pool to see, on a marked
// run's pid line, that RunDirBase/.swept is more than a day old, sends it
// with its next command): one find over what is left in RunDirBase, which
// removes the markers older than six days (find -mtime +6) of runs that
// are over (an exit status, or a Settle verdict). Its cost follows the
// leftovers, not the number of runs ever made. A marker of a run that may
// still go on, or was killed with nobody settling it, is never swept.
//
// Markers made by the previous version of this package (a directory
// RUNID/ holding pid, status, claimed and stopped files) are still
// settled and swept; Settle's mkdir claim keeps an exec of either version
// from starting.
//
// Pool.Settle(ctx, target, runID, known) runs a second script that claims
// the marker path with mkdir when nothing is there (the run never started,
// and now never will), or reads the run's identity and status from the
// marker: an exit
// status gives FateExited; a process group still alive (zombies aside;
// the leader's autogroup or start time guards against a reused pid; a
// leader whose autogroup file is readable but names another autogroup,
// or none, is another process; another boot id
// means it is gone) is stopped — TERM, KILL after Config.KillGrace — and
// seen gone (FateStopped); a group gone without a status gives FateGone.
// The verdicts stopped and gone are appended to the marker ("s", "g").
// When the machine cannot be reached, or the group survives KILL, Settle
// returns an error wrapping ErrFateUnknown: the run may still be running.
//
// Run settles its own run when its connection is lost under it (declared
// dead by keepalive, or dropped), and when a session that timed out while
// opening turns out to have started the command: it returns the exit
// status read from the marker (Result.Recovered), or a retryable
// ErrConnect once the copy is stopped or known never to have run, or an
// error wrapping ErrFateUnknown (not retryable) when the machine cannot
// tell — never a retryable error while a copy may still run.
//
// Subpackage sshtest starts an in-process SSH server and real OpenSSH sshd
// processes for tests.
package ssh
