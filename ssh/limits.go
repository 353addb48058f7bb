package ssh

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Size limits of what a server can run. Run refuses a Command over them
// with ErrInvalidCommand before it sends anything, so that a command that
// cannot run fails at once with an error naming the limit, instead of
// failing on the server in a way that reads like a broken host.
//
// Measured against OpenSSH 9.2 on Linux 6.x: the login shell gets the
// command line as one argument (shell -c LINE), and Linux refuses any
// single argument or environment string of 131072 bytes or more, its NUL
// included (MAX_ARG_STRLEN: a 131071-byte command line ran, a 131072-byte
// one failed with "Argument list too long", exit status 1); a request over
// OpenSSH's 256 KiB packet limit makes sshd drop the connection ("Bad
// packet length"). A secret reaches the script as an exported variable, so
// every program the script starts inherits it: one NAME=value of 131072
// bytes or more makes every exec fail ("Argument list too long", exit
// status 126), and all of them together count against ARG_MAX (2 MiB on
// Linux, 1 MiB on macOS, arguments and environment together).
const (
	// MaxCommandLineBytes bounds the command line Run sends (the exec
	// string: the pid report, the secrets prelude, the Env exports and Cmd,
	// after shell quoting; see CommandLineSize). 120 KiB: below Linux's
	// MAX_ARG_STRLEN (128 KiB), leaving 8 KiB for systems whose arguments
	// and environment share 128 KiB.
	MaxCommandLineBytes = 120 << 10
	// MaxSecretEntryBytes bounds one secret as an environment string:
	// len(name) + 1 + len(value), as for MaxCommandLineBytes.
	MaxSecretEntryBytes = 120 << 10
	// MaxSecretsBytes bounds the environment strings of all of a Command's
	// secrets together, well below ARG_MAX (1 MiB on macOS, 2 MiB on Linux).
	MaxSecretsBytes = 512 << 10
)

// CommandLineSize returns the length in bytes of the command line Run
// would send for cmd, which must not exceed MaxCommandLineBytes: Cmd and
// the Env exports after shell quoting, inside the wrapper that reports the
// remote pid and, when cmd.Secrets is not empty, reads them from stdin
// (and, when cmd.RunID is set, keeps the run's marker).
// The secrets' values do not count (they travel on stdin); only whether
// there are any. When Cmd and Env are over MaxCommandLineBytes before
// quoting, it returns that size (a lower bound, over the limit either
// way) without quoting them. It returns an error wrapping
// ErrInvalidCommand when cmd is malformed (see Run).
func CommandLineSize(cmd Command) (int, error) {
	if n := rawSize(&cmd); n > MaxCommandLineBytes && strings.TrimSpace(cmd.Cmd) != "" {
		return n, nil
	}
	if len(cmd.Secrets) > 0 {
		// Only the keys matter: values are not on the command line.
		keys := make(map[string][]byte, len(cmd.Secrets))
		for k := range cmd.Secrets {
			keys[k] = nil
		}
		cmd.Secrets = keys
	}
	remote, block, err := buildRemote(&cmd)
	clear(block)
	if err != nil {
		return 0, &wrapError{msg: "ssh: " + err.Error(), errs: []error{ErrInvalidCommand}}
	}
	return len(remote), nil
}

// checkCommandLine refuses a command line over MaxCommandLineBytes.
func checkCommandLine(remote string) error {
	if len(remote) > MaxCommandLineBytes {
		return fmt.Errorf("the command line is %d bytes after shell quoting (Cmd, Env exports and wrapper), more than MaxCommandLineBytes (%d): "+
			"the remote system would refuse it (Linux: an argument of 128 KiB or more; sshd: a request over 256 KiB); "+
			"pass large data another way (Stdin, a file on the machine)", len(remote), MaxCommandLineBytes)
	}
	return nil
}

// checkSecretSizes refuses secrets over MaxSecretEntryBytes each or
// MaxSecretsBytes together. Errors name keys and sizes, never values.
func checkSecretSizes(secrets map[string][]byte) error {
	total := 0
	for _, k := range slices.Sorted(maps.Keys(secrets)) {
		n := len(k) + 1 + len(secrets[k])
		if n > MaxSecretEntryBytes {
			return fmt.Errorf("Command.Secrets[%s] is %d bytes as an environment entry (NAME=value), more than MaxSecretEntryBytes (%d): "+
				"the remote system would refuse to start any program with it in the environment (Linux: 128 KiB or more)", quoteName(k), n, MaxSecretEntryBytes)
		}
		total += n + 1
	}
	if total > MaxSecretsBytes {
		return fmt.Errorf("Command.Secrets hold %d bytes as environment entries, more than MaxSecretsBytes (%d) together: "+
			"the remote system would refuse to start programs with them in the environment (ARG_MAX)", total, MaxSecretsBytes)
	}
	return nil
}
