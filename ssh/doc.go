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
// and then runs the script itself: no extra process, and the command keeps
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
// Subpackage sshtest starts an in-process SSH server and real OpenSSH sshd
// processes for tests.
package ssh
