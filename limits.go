package rediacc

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	rssh "github.com/rediacc/rediacc/ssh"
)

// Limits of what Submit, SubmitBatch, FanOut and AddMachine accept. A value
// that cannot work when the task runs is refused when it is submitted, with
// ErrInvalidTask or ErrInvalidMachine naming the field and the limit, and
// nothing is written.
const (
	// MaxCommandLineBytes bounds the command line a task's command and
	// environment make on the machine, after shell quoting (single quotes
	// count four times, twice over) and with the wrapper that runs them:
	// ssh.MaxCommandLineBytes, 120 KiB. Linux refuses an argument of 128 KiB
	// or more ("Argument list too long") and sshd drops a request over
	// 256 KiB; see package ssh.
	MaxCommandLineBytes = rssh.MaxCommandLineBytes
	// MaxEnvValueBytes bounds one TaskSpec.Env value.
	MaxEnvValueBytes = 64 << 10
	// MaxEnvVars bounds the variables of a task: Env and Secrets together.
	MaxEnvVars = 256
	// MaxSecretEntryBytes bounds one secret's NAME=value when the task runs
	// (values are only known then), and MaxSecretsBytes all of a task's
	// secrets together: the remote system refuses to start a program with
	// a larger environment. Over them, the attempt fails at once with
	// ErrInvalidTask naming the secret, without retries. As
	// ssh.MaxSecretEntryBytes and ssh.MaxSecretsBytes.
	MaxSecretEntryBytes = rssh.MaxSecretEntryBytes
	MaxSecretsBytes     = rssh.MaxSecretsBytes
	// MaxTaskDuration bounds TaskSpec.Timeout, RetryPolicy.RetryDelay and
	// RetryPolicy.MaxDelay: 10⁹ seconds (about 31 years), as in the task
	// JSON form. Times beyond it cannot be stored.
	MaxTaskDuration = 1e9 * time.Second
	// MaxIdempotencyKeyBytes bounds TaskSpec.IdempotencyKey.
	MaxIdempotencyKeyBytes = 200
	// MaxLabels bounds the labels of a machine and the pairs of a selector.
	MaxLabels = 64
	// MaxLabelValueBytes bounds a label's (or selector's) value.
	MaxLabelValueBytes = 255
	// MinLeaseDuration is the shortest Config.LeaseDuration: a worker
	// renews its leases every third of it.
	MinLeaseDuration = 100 * time.Millisecond
)

// labelKeyRE: a label or selector key, 1..63 characters.
var labelKeyRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,62})?$`)

// checkLabels validates machine labels or a task's selector (what names
// them, for errors): a key no selector could name or a value no selector
// could hold would never match.
func checkLabels(what string, m map[string]string) error {
	if len(m) > MaxLabels {
		return fmt.Errorf("%s: %d pairs, more than MaxLabels (%d)", what, len(m), MaxLabels)
	}
	for k, v := range m {
		if !labelKeyRE.MatchString(k) {
			return fmt.Errorf("%s key %s: use 1..63 characters of letters, digits, '.', '_', '/', '-', starting with a letter or digit", what, quoteInput(k))
		}
		if len(v) > MaxLabelValueBytes {
			return fmt.Errorf("%s %s: the value is %d bytes, more than MaxLabelValueBytes (%d)", what, k, len(v), MaxLabelValueBytes)
		}
		if strings.ContainsRune(v, ',') || !printable(v) {
			return fmt.Errorf("%s %s=%s: a value holds no ',' and no control characters, and is valid UTF-8", what, k, quoteInput(v))
		}
	}
	return nil
}

// printable reports whether s is valid UTF-8 without control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 {
			return false
		}
	}
	return true
}

// checkSpecLimits refuses a spec whose command and environment cannot run
// (see the limits above). Called by TaskSpec.normalize after the fields'
// syntax is checked.
func (s TaskSpec) checkSpecLimits() error {
	if n := len(s.Env) + len(s.Secrets); n > MaxEnvVars {
		return fmt.Errorf("%d environment variables and secrets, more than MaxEnvVars (%d)", n, MaxEnvVars)
	}
	for k, v := range s.Env {
		if len(v) > MaxEnvValueBytes {
			return fmt.Errorf("environment variable %s is %d bytes, more than MaxEnvValueBytes (%d): pass large data in a file on the machine", k, len(v), MaxEnvValueBytes)
		}
	}
	cmd := rssh.Command{Cmd: s.Command, Env: s.Env, RunID: longestRunID} // every attempt runs with a marker (execution.go)
	if len(s.Secrets) > 0 {
		cmd.Secrets = make(map[string][]byte, len(s.Secrets))
		for k := range s.Secrets {
			cmd.Secrets[k] = nil
		}
	}
	n, err := rssh.CommandLineSize(cmd)
	if err != nil {
		return err
	}
	if n > MaxCommandLineBytes {
		return fmt.Errorf("the command and its environment make a %d-byte command line on the machine after shell quoting, "+
			"more than MaxCommandLineBytes (%d; Linux refuses 128 KiB): pass large data in a file on the machine, or in a secret", n, MaxCommandLineBytes)
	}
	if s.Timeout > MaxTaskDuration {
		return fmt.Errorf("timeout %s is more than MaxTaskDuration (%s)", s.Timeout, MaxTaskDuration)
	}
	if len(s.IdempotencyKey) > MaxIdempotencyKeyBytes {
		return fmt.Errorf("idempotency key is %d bytes, more than MaxIdempotencyKeyBytes (%d)", len(s.IdempotencyKey), MaxIdempotencyKeyBytes)
	}
	if !printable(s.IdempotencyKey) {
		return fmt.Errorf("idempotency key %s holds control characters or is not valid UTF-8", quoteInput(s.IdempotencyKey))
	}
	return nil
}

// hostLabelRE is one label of a DNS name (underscores allowed, as many
// resolvers do).
var hostLabelRE = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$`)

// checkHost accepts an IP address (IPv6 with or without brackets, zones
// allowed) or a DNS name of at most 253 characters. It returns the host to
// dial (brackets removed).
func checkHost(h string) (string, error) {
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return h, nil
	}
	if strings.Count(h, ":") == 1 {
		return "", fmt.Errorf("host %s holds a port: give the port separately (Machine.Port, --port)", quoteInput(h))
	}
	name := strings.TrimSuffix(h, ".")
	if name == "" || len(name) > 253 {
		return "", fmt.Errorf("host %s is not an IP address or a DNS name of 1..253 characters", quoteInput(h))
	}
	for _, l := range strings.Split(name, ".") {
		if !hostLabelRE.MatchString(l) {
			return "", fmt.Errorf("host %s is not an IP address or a DNS name (label %s: letters, digits, '-', '_', at most 63)", quoteInput(h), quoteInput(l))
		}
	}
	return h, nil
}

// loginUserRE: a login name as sshd accepts it, including Windows and
// directory-service forms (user@domain, DOMAIN\user, machine accounts
// ending in $).
var loginUserRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._@\\$-]{0,63}$`)

func checkLoginUser(u string) error {
	if !loginUserRE.MatchString(u) {
		return fmt.Errorf("user %s: use 1..64 characters of letters, digits, '.', '_', '-', '@', '\\', '$', starting with a letter, digit or '_'", quoteInput(u))
	}
	return nil
}

// checkSecretValues refuses resolved secrets the machine could not hold in
// its environment (see MaxSecretEntryBytes). Errors name variables and
// vault keys, never values.
func checkSecretValues(refs map[string]string, values map[string][]byte) error {
	total := 0
	for env, v := range values {
		n := len(env) + 1 + len(v)
		if n > MaxSecretEntryBytes {
			return fmt.Errorf("%w: secret %s (vault key %q) is %d bytes as an environment entry, more than MaxSecretEntryBytes (%d): "+
				"the machine would refuse to start programs with it in the environment", ErrInvalidTask, env, refs[env], n, MaxSecretEntryBytes)
		}
		total += n + 1
	}
	if total > MaxSecretsBytes {
		return fmt.Errorf("%w: the task's secrets are %d bytes as environment entries, more than MaxSecretsBytes (%d) together", ErrInvalidTask, total, MaxSecretsBytes)
	}
	return nil
}

// checkSecretsExist refuses a task naming a vault key its team's vault
// lacks (ErrSecretNotFound): it could only fail when it runs. The keys are
// listed (never read) once per team and submission. When this client has
// no vault, or it cannot be listed now, the check is left to the worker
// (which fails the task at once, as before).
func (p *placer) checkSecretsExist(ctx context.Context, sc scope, refs map[string]string) error {
	team := sc.label()
	keys, ok := p.vkeys[sc.id]
	if !ok {
		v, err := p.c.vault()
		if err == nil {
			keys, err = v.List(ctx, sc.id) // the vault is keyed by the team's id
		}
		if err != nil {
			p.c.log.DebugContext(ctx, "secrets not checked at submit", "team", team, "error", err)
			return nil
		}
		if p.vkeys == nil {
			p.vkeys = map[string][]string{}
		}
		p.vkeys[sc.id] = keys
	}
	for _, env := range slices.Sorted(maps.Keys(refs)) {
		if !slices.Contains(keys, refs[env]) {
			return fmt.Errorf("%w: task secret %s refers to key %q, which team %q's vault lacks (add it first: rediacc vault set --team %s %s)",
				ErrSecretNotFound, env, refs[env], team, team, refs[env])
		}
	}
	return nil
}
