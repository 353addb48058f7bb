// Command rediacc is the example CLI of the rediacc SDK: it registers
// machines, submits and inspects tasks, and runs a worker. It holds no logic
// of its own: every behaviour lives in the SDK; the CLI parses flags, calls
// the SDK and prints.
//
// Exit codes: 0 ok, 1 error, 2 authentication failed, 3 permission denied,
// 4 not found, 5 invalid input.
//
// Every command acts as the OS login that runs it (actor.go): --as and
// REDIACC_USER name another user only for root and the data dir's owner.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/lmittmann/tint"
	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/rediacc/rediacc"
)

// Exit codes, as in the product's CLI.
const (
	exitOK         = 0
	exitError      = 1
	exitAuth       = 2
	exitPermission = 3
	exitNotFound   = 4
	exitInvalid    = 5
)

// usageError marks a flag or argument error (exit 5).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error {
	return usageError{fmt.Errorf(format, a...)}
}

// exitCode maps an SDK error onto the CLI's exit codes.
func exitCode(err error) int {
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	// Credentials: a wrong vault or identity passphrase (or vault key
	// file), a machine refusing the identity, HashiCorp Vault or
	// PostgreSQL refusing the login.
	case errors.Is(err, rediacc.ErrWrongPassphrase), errors.Is(err, rediacc.ErrAuthFailed), errors.Is(err, rediacc.ErrCredentialsRefused):
		return exitAuth
	case errors.Is(err, rediacc.ErrPermissionDenied), errors.Is(err, rediacc.ErrUnsafePath):
		return exitPermission
	case errors.Is(err, rediacc.ErrNotFound), errors.Is(err, rediacc.ErrSecretNotFound):
		return exitNotFound
	case errors.Is(err, rediacc.ErrKeyFile), errors.Is(err, rediacc.ErrAuditKeyring):
		return exitInvalid
	case errors.Is(err, rediacc.ErrInvalidArgument), errors.As(err, &ue):
		return exitInvalid
	}
	return exitError
}

// isCobraUsageError spots the argument errors cobra raises before a command
// runs (they carry no type of their own).
func isCobraUsageError(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "required flag(s)", "unknown flag", "unknown shorthand flag", "flag needs an argument", "invalid argument"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// globals are the persistent flags.
type globals struct {
	dataDir        string
	storeURL       string // --store / REDIACC_STORE_URL: a store other than DATA-DIR/rediacc.db
	logFormat      string
	logLevel       string
	passphraseFile string
	auditKeyFile   string
	as             string
	logLevelSet    bool // --log-level was given
	vault          vaultFlags
	// stdout and stderr escape control characters (termsafe.go): what
	// the CLI prints for people. rawStdout and rawStderr are the files
	// themselves, for output read by programs (JSON, logs --raw).
	stdout, stderr       io.Writer
	rawStdout, rawStderr io.Writer
}

// cpuProfileEnv names a file to write a CPU profile of the whole process
// to (runtime/pprof; read it with `go tool pprof`), for benchmarks
// (bench/, docs/BENCHMARKS.md). Unset: no profile.
const cpuProfileEnv = "REDIACC_CPUPROFILE"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	stopProfile := startCPUProfile(os.Getenv(cpuProfileEnv), os.Stderr)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stopProfile()
	stop()
	os.Exit(code)
}

// startCPUProfile starts a CPU profile into path ("" for none) and returns
// the function that ends it. The file is created with mode 0600 (an
// existing one is truncated and set to 0600; a symbolic link is refused).
// A profile that cannot be started, or whose writes fail, is reported on
// stderr in one line that quotes the path; the command runs and exits as
// without it.
func startCPUProfile(path string, stderr io.Writer) (stop func()) {
	if path == "" {
		return func() {}
	}
	warn := func(what string, err error) {
		var pe *fs.PathError
		if errors.As(err, &pe) { // its text repeats the path unquoted
			err = fmt.Errorf("%s: %w", pe.Op, pe.Err)
		}
		fmt.Fprintf(stderr, "warning: %s=%s: %s: %v\n", cpuProfileEnv, quoted(path), what, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err == nil {
		if err = f.Chmod(0o600); err != nil {
			f.Close()
		}
	}
	w := &firstErrWriter{w: f}
	if err == nil {
		if err = pprof.StartCPUProfile(w); err != nil {
			f.Close()
		}
	}
	if err != nil {
		warn("no CPU profile", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		err := w.err
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			warn("the CPU profile is incomplete", err)
		}
	}
}

// firstErrWriter writes to w and keeps the first error (runtime/pprof
// drops the errors of the profile's writes).
type firstErrWriter struct {
	w   io.Writer
	err error
}

func (f *firstErrWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err != nil && f.err == nil {
		f.err = err
	}
	return n, err
}

// run executes the CLI with args and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	tout, terr := newTermWriter(stdout), newTermWriter(stderr) // termsafe.go
	g := &globals{stdout: tout, stderr: terr, rawStdout: stdout, rawStderr: stderr}
	root := newRoot(g)
	root.SetArgs(args)
	root.SetOut(tout)
	root.SetErr(terr)
	err := root.ExecuteContext(ctx)
	if err != nil && isCobraUsageError(err) {
		err = usageError{err}
	}
	_ = tout.Flush()
	err = advise(err) // advice.go: the SDK's advice in the CLI's terms
	if err != nil {
		fmt.Fprintf(terr, "error: %v\n", err)
	}
	_ = terr.Flush()
	return exitCode(err)
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "rediacc",
		Short:         "Run priority-scheduled, retried shell tasks on machines over SSH",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentPreRunE = func(c *cobra.Command, args []string) error {
		g.logLevelSet = c.Flags().Changed("log-level")
		if strings.TrimSpace(g.dataDir) == "" { // files would land in the working directory
			return usagef("--data-dir (env REDIACC_HOME) must not be empty: name the state directory, default %s", filepath.Join("~", ".rediacc"))
		}
		ctx, err := g.actorContext(c.Context()) // actor.go
		if err != nil {
			return err
		}
		c.SetContext(ctx)
		// A command that only reads must not create a store (and make its
		// caller the owner) in a mistyped data dir.
		if readOnlyCommands[c.CommandPath()] && g.storeURL == "" {
			if _, err := os.Stat(filepath.Join(g.dataDir, "rediacc.db")); errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("%w: no rediacc store in %s (check --data-dir or REDIACC_HOME; the first command that writes, e.g. rediacc machine add, creates one)", rediacc.ErrNotFound, g.dataDir)
			}
		}
		return nil
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.dataDir, "data-dir", rediacc.DefaultDataDir(), "state directory (env REDIACC_HOME)")
	pf.StringVar(&g.storeURL, "store", os.Getenv("REDIACC_STORE_URL"), "queue store: postgres://user@host/db (shared by workers on many hosts), sqlite:PATH; default DATA-DIR/rediacc.db (env REDIACC_STORE_URL)")
	pf.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	g.vault.register(pf)
	pf.StringVar(&g.as, "as", "", "act as this user (env REDIACC_USER): only root or the data dir's owner may, audited as impersonation; default: your OS login; on a PostgreSQL store the database login's mapped user, and --as needs the login's impersonation grant")
	pf.StringVar(&g.passphraseFile, "identity-passphrase-file", "", "file holding the passphrase of identity files (else env REDIACC_SSH_KEY_PASSPHRASE)")
	pf.StringVar(&g.auditKeyFile, "audit-key-file", os.Getenv("REDIACC_AUDIT_KEY_FILE"), "audit keyring file (env REDIACC_AUDIT_KEY_FILE; default DATA-DIR/audit.key, created 0600)")

	machine := &cobra.Command{Use: "machine", Short: "Register and list machines"}
	machine.AddCommand(newMachineAdd(g), newMachineList(g), newMachineRemove(g), newMachineMove(g), newMachineHostKeys(g))
	machine.AddCommand(newMachineStatus(g))                       // status.go
	machine.AddCommand(newMachineKeys(g), newMachineRotateKey(g)) // keys.go
	create := &cobra.Command{Use: "create", Short: "Create tasks"}
	create.AddCommand(newCreateTask(g))
	create.AddCommand(newCreateBatch(g)) // batch.go
	list := &cobra.Command{Use: "list", Short: "List the queue"}
	list.AddCommand(newListQueue(g), newListAudit(g))
	list.AddCommand(newListWorkers(g)) // workers.go
	list.AddCommand(newListAlerts(g))  // alerts.go
	inspect := &cobra.Command{Use: "inspect", Short: "Inspect a task"}
	inspect.AddCommand(newInspectQueue(g))
	root.AddCommand(machine, create, list, inspect, newCancel(g), newWorker(g), newQuickstart(g), newTeam(g), newAudit(g), newVault(g), newRole(g))
	root.AddCommand(newLogs(g), newPrune(g)) // logs.go
	root.AddCommand(newStore(g))             // storecmd.go
	// schedule.go, window.go
	root.AddCommand(newSchedule(g), newWindow(g), newQueue(g))
	machine.AddCommand(newMachineGate(g, true), newMachineGate(g, false))
	for _, c := range []*cobra.Command{machine, create, list, inspect} {
		c.Args = cobra.NoArgs
		c.RunE = func(c *cobra.Command, args []string) error {
			return usagef("%s needs a subcommand (see %s --help)", c.CommandPath(), c.CommandPath())
		}
	}
	boundUsage(root) // usage.go: unknown commands and flag errors echo bounded, escaped input
	return root
}

// logger builds the CLI's logger: tint on a terminal-friendly text format,
// or JSON with --log-format json. Logs go to stderr.
func (g *globals) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, usagef("--log-level %s: use debug, info, warn or error", quoted(g.logLevel))
	}
	switch g.logFormat {
	case "json":
		// The same JSON values, safe on a terminal (termsafe.go). Each
		// record is one Write: nothing is held back.
		return slog.New(slog.NewJSONHandler(newJSONWriter(g.rawStderr), &slog.HandlerOptions{Level: level})), nil
	case "text":
		noColor := true
		if f, ok := g.rawStderr.(*os.File); ok {
			noColor = !isatty.IsTerminal(f.Fd())
		}
		// tint writes the colours' escape sequences itself: it writes to
		// the file, and safeHandler escapes the records' text first.
		h := slog.Handler(safeHandler{tint.NewHandler(g.rawStderr, &tint.Options{Level: level, TimeFormat: time.TimeOnly, NoColor: noColor})})
		if !g.logLevelSet {
			h = quietCheckpoints{h} // audit.go
		}
		return slog.New(h), nil
	}
	return nil, usagef("--log-format %s: use text or json", quoted(g.logFormat))
}

// keyPassphrase reads the identity passphrase from --identity-passphrase-file
// or $REDIACC_SSH_KEY_PASSPHRASE; nil when neither is set.
func (g *globals) keyPassphrase(context.Context, rediacc.Machine) ([]byte, error) {
	if g.passphraseFile != "" {
		b, err := os.ReadFile(g.passphraseFile)
		if err != nil {
			return nil, fmt.Errorf("read --identity-passphrase-file: %w", err)
		}
		return []byte(strings.TrimRight(string(b), "\r\n")), nil
	}
	if p := os.Getenv("REDIACC_SSH_KEY_PASSPHRASE"); p != "" {
		return []byte(p), nil
	}
	return nil, nil
}

// client opens the SDK client on --data-dir.
func (g *globals) client(ctx context.Context, tune func(*rediacc.Config)) (*rediacc.Client, error) {
	log, err := g.logger()
	if err != nil {
		return nil, err
	}
	// On a PostgreSQL store the local vault's encrypted files live in the
	// store (every host reads them): open the store first.
	var st *rediacc.Store
	if g.vault.backend == "local" && (strings.HasPrefix(g.storeURL, "postgres://") || strings.HasPrefix(g.storeURL, "postgresql://")) {
		if st, err = rediacc.OpenStore(ctx, g.storeURL); err != nil {
			return nil, err
		}
	}
	v, err := g.vault.open(ctx, g.dataDir, st, g.stderr, log)
	if err != nil {
		if st != nil {
			_ = st.Close()
		}
		return nil, err
	}
	cfg := rediacc.Config{DataDir: g.dataDir, StoreURL: g.storeURL, Store: st, Logger: log, KeyPassphrase: g.keyPassphrase, AuditKeyFile: g.auditKeyFile,
		// Every user of this data dir is its owning OS account (New refuses
		// a data dir owned by another user), the account the workers run
		// as: a path a team admin names is read by the account that could
		// read it anyway. docs/ROLES.md.
		AllowedKeyPaths: []string{"/"}, AllowedKnownHostsPaths: []string{"/"}}
	if v != nil {
		cfg.Vault = v
	}
	if tune != nil {
		tune(&cfg)
	}
	c, err := rediacc.New(ctx, cfg)
	if err != nil && v != nil {
		_ = v.Close()
	}
	if err != nil {
		if st != nil {
			_ = st.Close()
		}
	}
	return c, err
}

// checkOutput validates -o.
func checkOutput(o string) error {
	if o != "" && o != "table" && o != "json" {
		return usagef("-o %s: use table or json", quoted(o))
	}
	return nil
}

// readOnlyCommands only read a store: they refuse a data dir without one.
var readOnlyCommands = map[string]bool{
	"rediacc machine list": true, "rediacc machine status": true, "rediacc machine keys": true, "rediacc list queue": true,
	"rediacc list audit-logs": true, "rediacc inspect queue": true, "rediacc logs": true,
	"rediacc team list": true, "rediacc team member list": true, "rediacc audit verify": true,
	"rediacc audit checkpoint": true, "rediacc audit key list": true, "rediacc audit key rotate": true,
	"rediacc role list": true, "rediacc vault get": true, "rediacc vault list": true, "rediacc cancel": true,
	"rediacc list workers": true, "rediacc team ssh-ca show": true,
	// schedule.go, window.go
	"rediacc schedule list": true, "rediacc schedule show": true, "rediacc schedule history": true,
	"rediacc window list": true, "rediacc queue status": true,
}

// withClient opens the SDK client for one command, runs fn and closes the
// client.
func (g *globals) withClient(c *cobra.Command, fn func(ctx context.Context, cl *rediacc.Client) error) error {
	cl, err := g.client(c.Context(), nil)
	if err != nil {
		return err
	}
	defer cl.Close()
	return fn(c.Context(), cl)
}
