package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rediacc/rediacc"
)

// newTeamSSHCA is `rediacc team ssh-ca init|show|rotate TEAM`.
func newTeamSSHCA(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "ssh-ca", Short: "The team's SSH certificate authority (machines added with --auth ssh-ca)", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return usagef("%s needs a subcommand: init, show or rotate (see --help)", c.CommandPath())
		}}
	var (
		opts           rediacc.SSHCAOptions
		output         string
		finish, cancel bool
	)
	caFlags := func(c *cobra.Command, ttlDefault time.Duration, ttlUsage string) {
		f := c.Flags()
		f.StringVar(&opts.VaultSSHMount, "vault-ssh-mount", "", "sign with HashiCorp Vault's SSH secrets engine at this mount (the CA key never leaves Vault; needs --vault-backend hashicorp)")
		f.StringVar(&opts.VaultSSHRole, "vault-ssh-role", "", "the SSH engine's signing role (with --vault-ssh-mount)")
		durationFlag(f, &opts.CertTTL, "cert-ttl", ttlDefault, "", ttlDefault == 0, ttlUsage)
		f.StringVarP(&output, "output", "o", "", "output format: table or json")
	}
	initCmd := &cobra.Command{
		Use:   "init TEAM [--vault-ssh-mount M --vault-ssh-role R] [--cert-ttl 5m]",
		Short: "Create the team's SSH CA (team admins, owners); prints the TrustedUserCAKeys file for its machines",
		Args:  exactArgs(1, "TEAM"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				ca, err := cl.InitSSHCA(ctx, args[0], opts)
				if err != nil {
					return err
				}
				return printSSHCA(g, ca, output)
			})
		},
	}
	caFlags(initCmd, rediacc.DefaultCertTTL, "validity of each certificate (1m..24h)")
	show := &cobra.Command{
		Use:   "show TEAM [-o json]",
		Short: "Print the TrustedUserCAKeys file to install on the team's machines, and which CA each machine trusts",
		Long: `Print the file sshd_config's TrustedUserCAKeys names on the team's machines:
the active CA's public key and, during a rotation, the next one's. Lines
starting with # are comments (valid in that file), so the output installs
as is:

    rediacc team ssh-ca show prod > /etc/ssh/rediacc_user_ca.pub
    echo 'TrustedUserCAKeys /etc/ssh/rediacc_user_ca.pub' >> /etc/ssh/sshd_config
    systemctl reload ssh`,
		Args: exactArgs(1, "TEAM"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				ca, err := cl.SSHCA(ctx, args[0])
				if err != nil {
					return err
				}
				return printSSHCA(g, ca, output)
			})
		},
	}
	show.Flags().StringVarP(&output, "output", "o", "", "output format: table or json")
	rotate := &cobra.Command{
		Use:   "rotate TEAM [--vault-ssh-mount M --vault-ssh-role R] [--cert-ttl D] | --finish | --abort",
		Short: "Rotate the team's SSH CA: add a next CA; --finish retires the old one once every machine trusts the new; --abort drops the new one",
		Long: `Rotate the team's SSH CA in three steps:

  1. rediacc team ssh-ca rotate TEAM      adds a next CA (a new key, or --vault-ssh-mount/--vault-ssh-role)
  2. install 'rediacc team ssh-ca show TEAM' (both CAs) on every machine; each machine is
     signed for by the new CA as soon as a login shows it trusts it (worker health probes,
     machine status --probe)
  3. rediacc team ssh-ca rotate TEAM --finish
     logs in to every ssh-ca machine with the new CA; when all accept, the old CA is retired
     and its key deleted; otherwise nothing changes and the machines that refuse are listed.

--abort drops the new CA instead.`,
		Args: exactArgs(1, "TEAM"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if finish && cancel {
				return usagef("--finish and --abort exclude each other")
			}
			if (finish || cancel) && (opts.VaultSSHMount != "" || opts.VaultSSHRole != "" || opts.CertTTL != 0) {
				return usagef("--vault-ssh-mount, --vault-ssh-role and --cert-ttl start a rotation: not with --finish or --abort")
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				var ca rediacc.TeamSSHCA
				var err error
				switch {
				case finish:
					ca, err = cl.FinishSSHCARotation(ctx, args[0])
				case cancel:
					ca, err = cl.AbortSSHCARotation(ctx, args[0])
				default:
					ca, err = cl.RotateSSHCA(ctx, args[0], opts)
				}
				if err != nil {
					return err
				}
				return printSSHCA(g, ca, output)
			})
		},
	}
	var hostKeys []string
	var clearHosts bool
	hostCA := &cobra.Command{
		Use:   "host-ca TEAM --public-key FILE... | --clear",
		Short: "Set the host CAs the team's machines trust besides known_hosts (team admins, owners)",
		Long: `Set the host certificate authorities the team's machines trust: a machine whose
sshd presents a host certificate (HostCertificate) signed by one of them, for its
host name and valid now, is verified as with a known_hosts line
"@cert-authority * KEY". The list replaces the previous one; --clear empties it.`,
		Args: exactArgs(1, "TEAM"),
		RunE: func(c *cobra.Command, args []string) error {
			if (len(hostKeys) == 0) != clearHosts {
				return usagef("give --public-key FILE (repeatable) or --clear")
			}
			var keys []string
			for _, f := range hostKeys {
				b, err := os.ReadFile(f)
				if err != nil {
					return usagef("--public-key: %v", err)
				}
				for _, l := range strings.Split(string(b), "\n") {
					if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
						keys = append(keys, l)
					}
				}
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				set, err := cl.SetSSHHostCAs(ctx, args[0], keys)
				if err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "team %s's machines trust %d host CA(s)\n", args[0], len(set))
				return nil
			})
		},
	}
	hostCA.Flags().StringArrayVar(&hostKeys, "public-key", nil, "file with a host CA's public key (authorized_keys form; repeatable)")
	hostCA.Flags().BoolVar(&clearHosts, "clear", false, "trust no host CA of the team")
	caFlags(rotate, 0, "change the certificates' validity (1m..24h; default: unchanged)")
	rotate.Flags().BoolVar(&finish, "finish", false, "retire the old CA once every machine with --auth ssh-ca trusts the new one")
	rotate.Flags().BoolVar(&cancel, "abort", false, "drop the new CA; the active one goes on signing")
	cmd.AddCommand(initCmd, show, rotate, hostCA)
	return cmd
}

// printSSHCA prints a team's CA: JSON, or the TrustedUserCAKeys file with
// the CAs and the machines' checks as comments.
func printSSHCA(g *globals, ca rediacc.TeamSSHCA, output string) error {
	if output == "json" {
		return writeJSON(g, ca)
	}
	w := g.stdout
	fmt.Fprintf(w, "# Team %s's SSH certificate authority: certificates valid %s, for one machine's login user each.\n", ca.Team, ca.CertTTL)
	fmt.Fprintf(w, "# Install this file on the team's machines (TrustedUserCAKeys in sshd_config):\n")
	for _, c := range ca.CAs {
		how := "a key in the team's vault"
		if c.Kind == rediacc.SSHCAVaultSSH {
			how = "HashiCorp Vault " + c.Mount + "/sign/" + c.Role
		}
		when := "created " + c.CreatedAt.Local().Format(time.DateTime)
		if c.State == rediacc.SSHCARetired {
			when = "retired " + c.RetiredAt.Local().Format(time.DateTime) + ": remove it from the machines"
		}
		fmt.Fprintf(w, "#   %s %-7s %s (%s; %s)\n", c.ID, c.State, c.Fingerprint, how, when)
	}
	io.WriteString(w, ca.TrustedUserCAKeys())
	for _, h := range ca.HostCAs {
		fmt.Fprintf(w, "# Host CA the machines' host certificates may be signed by: %s\n", h)
	}
	if len(ca.Machines) > 0 {
		fmt.Fprintf(w, "# Machines, by the last login with each CA:\n")
		names := make([]string, 0, len(ca.Machines))
		for n := range ca.Machines {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(w, "#   %s: %s\n", n, caChecks(ca.Machines[n]))
		}
	}
	return nil
}

// caChecks describes a machine's CA checks on one line.
func caChecks(cks []rediacc.SSHCACheck) string {
	var parts []string
	for _, ck := range cks {
		switch {
		case ck.CA == "":
			parts = append(parts, ck.Error)
		case ck.CheckedAt.IsZero():
			parts = append(parts, fmt.Sprintf("%s CA %s not probed yet", ck.State, ck.Fingerprint))
		case ck.Trusted:
			parts = append(parts, fmt.Sprintf("trusts the %s CA %s", ck.State, ck.Fingerprint))
		default:
			parts = append(parts, fmt.Sprintf("refuses the %s CA %s (%s)", ck.State, ck.Fingerprint, printable(firstLine(ck.Error))))
		}
	}
	return strings.Join(parts, "; ")
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
