package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rediacc/rediacc"
)

// newListWorkers is `rediacc list workers`: the workers sharing a
// PostgreSQL store (--store postgres://…).
func newListWorkers(g *globals) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "workers [-o json]",
		Short: "List the workers sharing the store (PostgreSQL): id, host, started, last heartbeat, running tasks, leader",
		Args:  exactArgs(0, ""),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				ws, err := cl.ListWorkers(ctx)
				if err != nil {
					return err
				}
				if output == "json" {
					if ws == nil {
						ws = []rediacc.WorkerInfo{}
					}
					return writeJSON(g, ws)
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tHOST\tSTARTED\tLAST HEARTBEAT\tRUNNING\tLEADER")
				now := time.Now()
				for _, w := range ws {
					leader := ""
					if w.Leader {
						leader = "yes"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s ago\t%d\t%s\n", printable(w.ID), printable(w.Host), w.StartedAt.Local().Format(time.DateTime),
						now.Sub(w.HeartbeatAt).Round(100*time.Millisecond), w.Running, leader)
				}
				return tw.Flush()
			})
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "", "output format: table or json")
	return c
}
