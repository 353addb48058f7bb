package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/rediacc/rediacc"
)

func newMachineAdd(g *globals) *cobra.Command {
	var (
		m         rediacc.Machine
		acceptNew bool
		insecure  bool
		labels    []string
		output    string
		auth      string
	)
	c := &cobra.Command{
		Use:   "add NAME --host H [--team TEAM] [--port P] [--user U] [--auth key|agent|ssh-ca] [--identity FILE | --agent [--agent-key SHA256:…] | --cert-extension E...] [--known-hosts FILE | --accept-new-host-key] [--legacy-algorithms]",
		Short: "Register a machine",
		Args:  exactArgs(1, "NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			m.Name = args[0]
			m.ImportIdentity = m.IdentityFile != "" // the key lives in the team vault, the store keeps a reference
			m.Auth = rediacc.MachineAuth(auth)
			switch {
			case acceptNew && insecure:
				return usagef("--accept-new-host-key and --insecure-ignore-host-key exclude each other")
			case acceptNew:
				m.HostKeyPolicy = rediacc.HostKeyAcceptNew
			case insecure:
				m.HostKeyPolicy = rediacc.HostKeyInsecureIgnore
			}
			var err error
			if m.Labels, err = parseKV("--label", labels); err != nil {
				return err
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				added, err := cl.AddMachine(ctx, m)
				if err != nil {
					return err
				}
				if added.HostKeyUnknown {
					warnHostKeyUnknown(g, added)
				}
				if output == "json" {
					return writeJSON(g, added)
				}
				fmt.Fprintf(g.stdout, "machine %s added (%s@%s:%d, host key: %s, auth: %s)\n", added.Name, added.User, added.Host, added.Port, added.HostKeyPolicy, added.AuthMode())
				return nil
			})
		},
	}
	f := c.Flags()
	f.StringVar(&m.Team, "team", "", "team the machine belongs to (default: the team \"default\")")
	f.StringVar(&m.Host, "host", "", "host name or address (required)")
	f.IntVar(&m.Port, "port", 22, "SSH port")
	f.StringVar(&m.User, "user", "", "login user (default: the current user)")
	f.StringVar(&auth, "auth", "", "key, agent or ssh-ca (short-lived certificates of the team's SSH CA: no key of its own; see rediacc team ssh-ca); default: key with --identity, agent with --agent")
	f.StringArrayVar(&m.CertExtensions, "cert-extension", nil, "with --auth ssh-ca: a certificate extension the machine's certificates carry (permit-pty, permit-port-forwarding, permit-agent-forwarding, permit-X11-forwarding, permit-user-rc; repeatable; default none)")
	f.StringVar(&m.IdentityFile, "identity", "", "private key file (passphrase: --identity-passphrase-file or env REDIACC_SSH_KEY_PASSPHRASE)")
	f.BoolVar(&m.UseAgent, "agent", false, "authenticate with the ssh-agent at $SSH_AUTH_SOCK (every key it holds, unless --agent-key)")
	f.StringVar(&m.AgentKey, "agent-key", "", "offer only this agent key, by SHA256 fingerprint as ssh-add -l prints it (implies --agent)")
	f.BoolVar(&m.LegacyAlgorithms, "legacy-algorithms", false, "WEAKER: also offer SHA-1 key exchanges and MACs, ssh-rsa and CBC ciphers, for an old sshd that offers nothing else")
	f.StringVar(&m.KnownHostsFile, "known-hosts", "", "known_hosts file whose lines for the host are copied into the store at add (default ~/.ssh/known_hosts); workers verify against the store, and this file where it exists")
	f.BoolVar(&acceptNew, "accept-new-host-key", false, "trust the host key on first use and record it in the store (every worker then verifies against it)")
	f.BoolVar(&insecure, "insecure-ignore-host-key", false, "accept any host key (INSECURE: tests only)")
	f.StringArrayVar(&labels, "label", nil, "label KEY=VALUE (repeatable)")
	f.StringVar(&m.AuthorizedKeysFile, "authorized-keys-file", "", "where the user's authorized_keys is on the machine, for key rotation (default ~/.ssh/authorized_keys)")
	f.StringVarP(&output, "output", "o", "", "output format: table or json")
	_ = c.MarkFlagRequired("host")
	return c
}

func newMachineList(g *globals) *cobra.Command {
	var (
		output string
		age    maxKeyAge
	)
	c := &cobra.Command{
		Use:   "list [--max-key-age 90d] [-o json]",
		Short: "List registered machines (with their SSH key's fingerprint and age)",
		Args:  exactArgs(0, ""),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return g.keyClient(c, age, func(ctx context.Context, cl *rediacc.Client) error { // keys.go
				ms, err := cl.Machines(ctx)
				if err != nil {
					return err
				}
				if output == "json" {
					if ms == nil {
						ms = []rediacc.Machine{}
					}
					return writeJSON(g, ms)
				}
				ks, err := cl.Keys(ctx)
				if err != nil {
					return err
				}
				keyOf := map[string]rediacc.SSHKey{}
				for _, k := range ks {
					for _, m := range k.Machines {
						keyOf[m] = k
					}
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tTEAM\tADDRESS\tUSER\tHOST KEY\tIDENTITY\tKEY FINGERPRINT\tKEY AGE")
				for _, m := range ms {
					id := m.IdentityFile
					if m.IdentitySecret != "" {
						id = "vault:" + m.IdentitySecret
					}
					if m.UseAgent {
						id = strings.TrimPrefix(id+" +agent", " ")
					}
					if m.Auth == rediacc.AuthSSHCA {
						id = "ssh-ca certificates"
					}
					fp, kage := "-", "-"
					if k, ok := keyOf[m.Name]; ok && k.Fingerprint != "" {
						fp, kage = k.Fingerprint, days(k.Age)
						if k.Overdue {
							kage += " OVERDUE"
						}
					}
					fmt.Fprintf(tw, "%s\t%s\t%s:%d\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Team, m.Host, m.Port, m.User, m.HostKeyPolicy, id, fp, kage)
				}
				return tw.Flush()
			})
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "", "output format: table or json")
	registerMaxKeyAge(c.Flags(), &age)
	return c
}

func newMachineRemove(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "remove NAME",
		Short: "Unregister a machine (refused while it has unfinished tasks)",
		Args:  exactArgs(1, "NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				if err := cl.RemoveMachine(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "machine %s removed\n", args[0])
				return nil
			})
		},
	}
}

// exactArgs is cobra.ExactArgs with an error that names the arguments and
// exits 5.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) == n {
			return nil
		}
		if n == 0 {
			return usagef("%s takes no arguments, got %s", c.CommandPath(), quotedArgs(args))
		}
		return usagef("%s needs %s (got %d arguments; see --help)", c.CommandPath(), names, len(args))
	}
}

// parseKV reads KEY=VALUE pairs.
func parseKV(flag string, kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usagef("%s %s: use KEY=VALUE", flag, quoted(kv))
		}
		out[k] = v
	}
	return out, nil
}

func writeJSON(g *globals, v any) error {
	w, flush := jsonOut(g.rawStdout) // termsafe.go: the same JSON value, safe on a terminal
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return err
	}
	return flush()
}

func sortStrings(s []string) { slices.Sort(s) }

// warnHostKeyUnknown tells, on stderr, that the machine just added cannot
// be reached until a key of its host is known, and how to make one known.
func warnHostKeyUnknown(g *globals, m rediacc.Machine) {
	hostArg := m.Host
	if m.Port != 22 {
		hostArg = fmt.Sprintf("-p %d %s", m.Port, m.Host)
	}
	fmt.Fprintf(g.stderr, `warning: machine %[1]s was added, but no key of its host %[2]s is known (%[3]s has no line for it): its tasks will fail with "unknown host key" until one is. Either
  - import a verified key: ssh-keyscan %[4]s > %[1]s.keys, compare its fingerprint (ssh-keygen -lf %[1]s.keys) with the host's own (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub, run on the host), then: rediacc machine hostkeys import %[1]s %[1]s.keys
  - or trust the first key seen (trust on first use): rediacc machine remove %[1]s, then add it again with --accept-new-host-key
`, m.Name, net.JoinHostPort(m.Host, strconv.Itoa(m.Port)), m.KnownHostsFile, hostArg)
}
