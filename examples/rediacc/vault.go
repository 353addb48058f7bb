package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/rediacc/rediacc"
)

// vaultFlags are the global vault settings.
type vaultFlags struct {
	backend        string
	addr           string
	passphraseFile string
	prompt         bool
	keyFile        string
}

func (v *vaultFlags) register(pf interface {
	StringVar(*string, string, string, string)
	BoolVar(*bool, string, bool, string)
}) {
	pf.StringVar(&v.backend, "vault-backend", "local", "where team secrets live: local (age-encrypted files in the data dir) or hashicorp")
	pf.StringVar(&v.addr, "vault-addr", os.Getenv("VAULT_ADDR"), "HashiCorp Vault address (env VAULT_ADDR); token from VAULT_TOKEN, or AppRole from REDIACC_VAULT_ROLE_ID/REDIACC_VAULT_SECRET_ID")
	pf.StringVar(&v.passphraseFile, "vault-passphrase-file", "", "file holding the local vault's passphrase (else env REDIACC_VAULT_PASSPHRASE; else the key file)")
	pf.BoolVar(&v.prompt, "vault-passphrase-prompt", false, "ask for the local vault's passphrase on the terminal")
	pf.StringVar(&v.keyFile, "vault-key-file", "", "age identity file unlocking the local vault when no passphrase is set (default DATA-DIR/vault.key, created 0600)")
}

// open builds the vault the flags describe.
// st, when not nil, keeps the local vault's encrypted files (a PostgreSQL
// store shared by hosts). A nil Vault and no error: use the Client's
// default.
func (v *vaultFlags) open(ctx context.Context, dataDir string, st *rediacc.Store, stderr io.Writer, log *slog.Logger) (rediacc.Vault, error) {
	switch v.backend {
	case "local":
		if st != nil && v.passphraseFile == "" && os.Getenv("REDIACC_VAULT_PASSPHRASE") == "" && !v.prompt && v.keyFile == "" {
			// The Client's default vault: the same files in the store and
			// key file, opened on first use, so that commands that need no
			// secret work on a host without the key.
			return nil, nil
		}
		// Opened when a secret is first read or written: a command that
		// needs none (list, inspect, logs, team list…) asks for no
		// passphrase and works without the key.
		return &lazyVault{open: func() (rediacc.Vault, error) {
			pass, err := v.passphrase(stderr)
			if err != nil {
				return nil, err
			}
			if err := os.MkdirAll(dataDir, 0o700); err != nil {
				return nil, err
			}
			return rediacc.OpenLocalVault(filepath.Join(dataDir, "vault"), rediacc.LocalVaultOptions{Passphrase: pass, IdentityFile: v.keyFile, Logger: log, Store: st})
		}}, nil
	case "hashicorp":
		if v.addr == "" {
			return nil, usagef("--vault-backend hashicorp needs --vault-addr or VAULT_ADDR")
		}
		cfg := rediacc.HashiCorpVaultConfig{Address: v.addr, Token: os.Getenv("VAULT_TOKEN")}
		if id := os.Getenv("REDIACC_VAULT_ROLE_ID"); id != "" {
			cfg.AppRole = &rediacc.HashiCorpAppRole{RoleID: id, SecretID: os.Getenv("REDIACC_VAULT_SECRET_ID")}
			cfg.Token = ""
		}
		if cfg.Token == "" && cfg.AppRole == nil {
			return nil, usagef("--vault-backend hashicorp needs VAULT_TOKEN or REDIACC_VAULT_ROLE_ID and REDIACC_VAULT_SECRET_ID")
		}
		return rediacc.NewHashiCorpVault(ctx, cfg)
	}
	return nil, usagef("--vault-backend %s: use local or hashicorp", quoted(v.backend))
}

func (v *vaultFlags) passphrase(stderr io.Writer) ([]byte, error) {
	switch {
	case v.passphraseFile != "":
		b, err := os.ReadFile(v.passphraseFile)
		if err != nil {
			return nil, fmt.Errorf("read --vault-passphrase-file: %w", err)
		}
		return []byte(strings.TrimRight(string(b), "\r\n")), nil
	case os.Getenv("REDIACC_VAULT_PASSPHRASE") != "":
		return []byte(os.Getenv("REDIACC_VAULT_PASSPHRASE")), nil
	case v.prompt:
		if !term.IsTerminal(int(os.Stdin.Fd())) {
			return nil, usagef("--vault-passphrase-prompt needs a terminal; use --vault-passphrase-file or REDIACC_VAULT_PASSPHRASE")
		}
		fmt.Fprint(stderr, "Vault passphrase: ")
		p, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(stderr)
		return p, err
	}
	return nil, nil
}

// lazyVault opens the local vault on the first call that reads or writes
// a secret (once: a failure is kept, a prompt asked once).
type lazyVault struct {
	open func() (rediacc.Vault, error)
	mu   sync.Mutex
	v    rediacc.Vault
	err  error
	done bool
}

func (l *lazyVault) get() (rediacc.Vault, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		v, err := l.open()
		if err == nil {
			l.v = v
		}
		l.err, l.done = err, true
	}
	return l.v, l.err
}

func (l *lazyVault) Get(ctx context.Context, team, key string) (rediacc.Secret, error) {
	v, err := l.get()
	if err != nil {
		return rediacc.Secret{}, err
	}
	return v.Get(ctx, team, key)
}

func (l *lazyVault) GetVersion(ctx context.Context, team, key string, version int) (rediacc.Secret, error) {
	v, err := l.get()
	if err != nil {
		return rediacc.Secret{}, err
	}
	return v.GetVersion(ctx, team, key, version)
}

func (l *lazyVault) Put(ctx context.Context, team, key string, value []byte, opts rediacc.PutOptions) (int, error) {
	v, err := l.get()
	if err != nil {
		return 0, err
	}
	return v.Put(ctx, team, key, value, opts)
}

func (l *lazyVault) Delete(ctx context.Context, team, key string) error {
	v, err := l.get()
	if err != nil {
		return err
	}
	return v.Delete(ctx, team, key)
}

func (l *lazyVault) List(ctx context.Context, team string) ([]string, error) {
	v, err := l.get()
	if err != nil {
		return nil, err
	}
	return v.List(ctx, team)
}

// Close closes the vault if it was opened.
func (l *lazyVault) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done = true
	if l.v == nil {
		return nil
	}
	return l.v.Close()
}

// fdOf returns w's file descriptor, or an invalid one when w is no file.
func fdOf(w io.Writer) uintptr {
	if f, ok := w.(*os.File); ok {
		return f.Fd()
	}
	return ^uintptr(0)
}

func newVault(g *globals) *cobra.Command {
	vc := &cobra.Command{Use: "vault", Short: "Manage team secrets", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return usagef("%s needs a subcommand (see --help)", c.CommandPath())
		}}
	var team, valueFile string
	var rawGet bool
	set := &cobra.Command{
		Use:   "set --team TEAM KEY [--value-file F]",
		Short: "Write a secret (the value comes from a file or stdin, never a flag)",
		Args:  exactArgs(1, "KEY"),
		RunE: func(c *cobra.Command, args []string) error {
			var value []byte
			var err error
			if valueFile != "" {
				value, err = os.ReadFile(valueFile)
			} else {
				if f, ok := c.InOrStdin().(*os.File); ok && term.IsTerminal(int(f.Fd())) {
					fmt.Fprint(g.stderr, "Value (end with Ctrl-D): ")
				}
				value, err = io.ReadAll(bufio.NewReader(c.InOrStdin()))
			}
			if err != nil {
				return fmt.Errorf("read the value: %w", err)
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				ver, err := cl.SetSecret(ctx, team, args[0], value, nil)
				if err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "secret %s of team %s written (version %d)\n", args[0], team, ver)
				return nil
			})
		},
	}
	set.Flags().StringVar(&valueFile, "value-file", "", "file holding the value (default: stdin)")
	get := &cobra.Command{
		Use: "get --team TEAM KEY [--raw]", Short: "Print a secret's value (team admins)", Args: exactArgs(1, "KEY"),
		RunE: func(c *cobra.Command, args []string) error {
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				s, err := cl.GetSecret(ctx, team, args[0])
				if err != nil {
					return err
				}
				// Exact into a file or a program; escaped on a terminal
				// (another admin of the team may have written it).
				w := g.stdout
				if rawGet || !isatty.IsTerminal(fdOf(g.rawStdout)) {
					w = g.rawStdout
				}
				_, err = w.Write(s.Value)
				return err
			})
		},
	}
	list := &cobra.Command{
		Use: "list --team TEAM", Short: "List a team's secret keys (never values)", Args: exactArgs(0, ""),
		RunE: func(c *cobra.Command, args []string) error {
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				keys, err := cl.ListSecrets(ctx, team)
				if err != nil {
					return err
				}
				for _, k := range keys {
					fmt.Fprintln(g.stdout, k)
				}
				return nil
			})
		},
	}
	rm := &cobra.Command{
		Use: "rm --team TEAM KEY", Short: "Delete a secret (all versions)", Args: exactArgs(1, "KEY"),
		RunE: func(c *cobra.Command, args []string) error {
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				if err := cl.DeleteSecret(ctx, team, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "secret %s of team %s deleted\n", args[0], team)
				return nil
			})
		},
	}
	get.Flags().BoolVar(&rawGet, "raw", false, "on a terminal too, write the value byte for byte (default: control characters escaped on a terminal, exact into a pipe or file)")
	for _, sc := range []*cobra.Command{set, get, list, rm} {
		sc.Flags().StringVar(&team, "team", "", "the team whose vault to use (required)")
		_ = sc.MarkFlagRequired("team")
	}
	vc.AddCommand(set, get, list, rm)
	return vc
}
