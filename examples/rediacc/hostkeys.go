package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/rediacc/rediacc"
)

// newMachineHostKeys is `rediacc machine hostkeys`: the host keys the store
// holds for a machine (every worker, on any host, verifies it against them).
func newMachineHostKeys(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "hostkeys",
		Short: "Show, import or forget the host keys the store holds for a machine",
	}
	var output string
	list := &cobra.Command{
		Use:   "list NAME [-o json]",
		Short: "Print the machine's known_hosts lines held in the store",
		Args:  exactArgs(1, "NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				lines, err := cl.HostKeys(ctx, args[0])
				if err != nil {
					return err
				}
				if output == "json" {
					if lines == nil {
						lines = []string{}
					}
					return writeJSON(g, lines)
				}
				for _, l := range lines {
					fmt.Fprintln(g.stdout, l)
				}
				return nil
			})
		},
	}
	list.Flags().StringVarP(&output, "output", "o", "", "output format: table or json")
	imp := &cobra.Command{
		Use:   "import NAME FILE",
		Short: "Copy the lines of a known_hosts file (e.g. ssh-keyscan's output, verified) that name the machine's address into the store",
		Args:  exactArgs(2, "NAME and FILE"),
		RunE: func(c *cobra.Command, args []string) error {
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				n, err := cl.ImportHostKeys(ctx, args[0], args[1])
				if err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "machine %s: %d host key line(s) added from %s\n", args[0], n, args[1])
				return nil
			})
		},
	}
	forget := &cobra.Command{
		Use:   "forget NAME",
		Short: "Drop every host key the store holds for the machine (after a legitimate change of its key)",
		Args:  exactArgs(1, "NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				if err := cl.ForgetHostKeys(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "machine %s: host keys forgotten\n", args[0])
				return nil
			})
		},
	}
	c.AddCommand(list, imp, forget)
	return c
}
