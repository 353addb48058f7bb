package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/rediacc/rediacc"
)

// newStore is `rediacc store`: operations on the queue store itself.
func newStore(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "store", Short: "Operations on the queue store", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return usagef("%s needs a subcommand (see %s --help)", c.CommandPath(), c.CommandPath())
		}}
	var output string
	mig := &cobra.Command{
		Use:   "migrate-from-sqlite DIR --store postgres://… [-o json]",
		Short: "Copy the embedded store of data dir DIR (queue, teams, machines, host keys, vault files, audit trail) into a new, empty PostgreSQL store",
		Long: "Copies DIR/rediacc.db and DIR/vault/*.age into the PostgreSQL store named by --store (or REDIACC_STORE_URL), " +
			"in one transaction, records kept as they are: the audit trail keeps its seals, so `rediacc --store … audit verify " +
			"--audit-key-file DIR/audit.key` passes on the copy. The vault files stay encrypted: copy DIR/vault.key (or use the " +
			"same passphrase) on every host. Stop the workers using DIR first. The target must be empty.",
		Args: exactArgs(1, "DIR"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if !strings.HasPrefix(g.storeURL, "postgres://") && !strings.HasPrefix(g.storeURL, "postgresql://") {
				return usagef("%s needs --store postgres://… (or REDIACC_STORE_URL): the store to copy into", c.CommandPath())
			}
			dst, err := rediacc.OpenStore(c.Context(), g.storeURL)
			if err != nil {
				return err
			}
			defer dst.Close()
			rep, err := rediacc.MigrateFromSQLite(c.Context(), args[0], dst)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(g, rep)
			}
			fmt.Fprintf(g.stdout, "copied %s into %s: %d teams, %d members, %d store roles, %d machines (%d with host keys), %d tasks, %d SSH keys, %d team vault files, audit records %d..%d\n",
				args[0], dst, rep.Teams, rep.Members, rep.StoreRoles, rep.Machines, rep.HostKeys, rep.Tasks, rep.SSHKeys, rep.VaultTeams, rep.AuditBase+1, rep.AuditHeadSeq)
			return nil
		},
	}
	mig.Flags().StringVarP(&output, "output", "o", "", "output format: table or json")
	c.AddCommand(mig)
	return c
}
