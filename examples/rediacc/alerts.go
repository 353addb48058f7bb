package main

// `list alerts`: the alert outbox, with each alert's delivery to each
// endpoint (what arrived, what waits and why).

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rediacc/rediacc"
)

func init() { readOnlyCommands["rediacc list alerts"] = true }

func newListAlerts(g *globals) *cobra.Command {
	var (
		f      rediacc.AlertFilter
		output string
	)
	c := &cobra.Command{
		Use:   "alerts [--undelivered] [--team T] [--kind K] [--task TASK_ID] [--limit N] [-o json]",
		Short: "List alerts and their delivery to each endpoint (--undelivered: those that did not arrive everywhere)",
		Args:  exactArgs(0, ""),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if f.Limit < 0 {
				return usagef("--limit %d: use 0 (all) or more", f.Limit)
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				rs, err := cl.ListAlerts(ctx, f)
				if err != nil {
					return err
				}
				if output == "json" {
					if rs == nil {
						rs = []rediacc.AlertRecord{}
					}
					return writeJSON(g, rs)
				}
				return printAlerts(g, rs)
			})
		},
	}
	fl := c.Flags()
	fl.BoolVar(&f.Undelivered, "undelivered", false, "only alerts some endpoint has not acknowledged (pending, failed or expired there)")
	fl.StringVar(&f.Team, "team", "", "only this team's alerts")
	fl.StringVar(&f.Kind, "kind", "", "only this kind ("+strings.Join([]string{rediacc.AlertTaskFailed, rediacc.AlertQueueDepth,
		rediacc.AlertQueueAge, rediacc.AlertMachineUnhealthy}, ", ")+", …)")
	fl.StringVar(&f.TaskID, "task", "", "only the alerts about this task")
	fl.IntVar(&f.Limit, "limit", 0, "at most this many alerts, oldest first (0: all)")
	fl.StringVarP(&output, "output", "o", "", "output format: table or json")
	return c
}

// printAlerts prints one line per alert, then, for the deliveries that
// did not arrive, one line each: endpoint, state, attempts, next attempt,
// the worker attempting it now (with its lease's end), last error.
func printAlerts(g *globals, rs []rediacc.AlertRecord) error {
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ALERT ID\tKIND\tTEAM\tABOUT\tRAISED\tDELIVERED\tMESSAGE")
	var waiting []string
	for _, r := range rs {
		about := r.TaskID
		if about == "" {
			about = r.Machine
		}
		n := 0
		for _, d := range r.Deliveries {
			if d.State == rediacc.AlertDelivered {
				n++
				continue
			}
			worker := "-"
			if d.Worker != "" {
				worker = printable(d.Worker) + " until " + fmtTime(d.LeaseExpiresAt)
			}
			waiting = append(waiting, fmt.Sprintf("%s\t%s\t%s\t%d\t%s\t%s\t%s", r.ID, printable(d.Endpoint), d.State, d.Attempts,
				fmtTime(d.NextAttemptAt), worker, orDefault(clip(d.LastError, 80), "-")))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\n", r.ID, r.Kind, orDefault(r.Team, "-"), orDefault(about, "-"),
			r.Time.Local().Format(time.DateTime), n, len(r.Deliveries), clip(r.Message, 60))
	}
	if err := tw.Flush(); err != nil || len(waiting) == 0 {
		return err
	}
	fmt.Fprintln(g.stdout)
	tw = tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NOT DELIVERED\tENDPOINT\tSTATE\tATTEMPTS\tNEXT ATTEMPT\tIN FLIGHT AT\tLAST ERROR")
	for _, w := range waiting {
		fmt.Fprintln(tw, w)
	}
	return tw.Flush()
}
