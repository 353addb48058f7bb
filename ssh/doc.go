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
// Subpackage sshtest starts an in-process SSH server and real OpenSSH sshd
// processes for tests.
package ssh
