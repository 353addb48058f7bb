package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rediacc/rediacc"
)

// window create|list|delete; machine drain|resume; queue pause|resume|status.

func newWindow(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "window", Short: "Maintenance windows: when low-priority work may run",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return usagef("%s needs a subcommand (see %s --help)", c.CommandPath(), c.CommandPath())
		}}
	c.AddCommand(newWindowCreate(g), newWindowList(g), newWindowDelete(g))
	return c
}

func newWindowCreate(g *globals) *cobra.Command {
	var (
		w        rediacc.MaintenanceWindow
		holdFrom string
		output   string
	)
	c := &cobra.Command{
		Use:   "create (--machine M | --team T) --cron EXPR [--tz ZONE] --duration D [--hold-from 4] [-o json]",
		Short: "Create a maintenance window: tasks of priority --hold-from..5 wait for it",
		Long: `Create a maintenance window ("off-peak hours") of a machine or of every
machine of a team: it opens at each fire of --cron in --tz and stays open
for --duration. While it is closed, tasks of priority --hold-from (default
4) to 5 on those machines are not claimed; inspect queue says when the
window opens. Priorities 1 to 3 run at any time.`,
		Args: exactArgs(0, ""),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if w.Machine == "" && w.Team == "" {
				return usagef("--machine or --team is required")
			}
			if holdFrom != "" {
				p, err := rediacc.ParsePriority(holdFrom)
				if err != nil {
					return err
				}
				w.HoldFrom = p
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				out, err := cl.CreateWindow(ctx, w)
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSON(g, out)
				}
				fmt.Fprintf(g.stdout, "window %s created: %s\n", out.ID, windowState(out))
				return nil
			})
		},
	}
	f := c.Flags()
	f.StringVar(&w.Machine, "machine", "", "the machine it applies to")
	f.StringVar(&w.Team, "team", "", "the team (every machine of it, without --machine)")
	f.StringVar(&w.Cron, "cron", "", `when it opens: five fields "MIN HOUR DOM MON DOW" ("0 2 * * *") or @daily, @weekly…`)
	f.StringVar(&w.TimeZone, "tz", "", "IANA time zone of --cron, e.g. Europe/Paris (default UTC)")
	f.DurationVar(&w.Duration, "duration", 0, "how long it stays open, e.g. 3h (1m to 168h)")
	f.StringVar(&holdFrom, "hold-from", "", "tasks of this priority and lower (up to 5) wait for the window (default 4)")
	f.StringVarP(&output, "output", "o", "", "output format: table or json")
	_ = c.MarkFlagRequired("cron")
	_ = c.MarkFlagRequired("duration")
	return c
}

// windowState is "open until …" or "closed, opens …".
func windowState(w *rediacc.MaintenanceWindow) string {
	if w.Open {
		return "open until " + fmtZoned(w.ClosesAt, w.TimeZone)
	}
	if w.OpensAt.IsZero() {
		return "closed, never opens again"
	}
	return "closed, opens " + fmtZoned(w.OpensAt, w.TimeZone)
}

func newWindowList(g *globals) *cobra.Command {
	var team, output string
	c := &cobra.Command{
		Use:   "list [--team T] [-o json]",
		Short: "List maintenance windows and whether they are open",
		Args:  exactArgs(0, ""),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				ws, err := cl.ListWindows(ctx, rediacc.WindowFilter{Team: team})
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSON(g, ws)
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "WINDOW\tTEAM\tMACHINE\tCRON\tTIME ZONE\tDURATION\tHOLDS\tSTATE")
				for _, w := range ws {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d-5\t%s\n", w.ID, w.Team, orDefault(w.Machine, "(all)"), printable(w.Cron),
						w.TimeZone, w.Duration, w.HoldFrom, windowState(w))
				}
				return tw.Flush()
			})
		},
	}
	c.Flags().StringVar(&team, "team", "", "only this team")
	c.Flags().StringVarP(&output, "output", "o", "", "output format: table or json")
	return c
}

func newWindowDelete(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete WINDOW_ID",
		Short: "Delete a maintenance window",
		Args:  exactArgs(1, "WINDOW_ID"),
		RunE: func(c *cobra.Command, args []string) error {
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				if err := cl.DeleteWindow(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "window %s deleted\n", args[0])
				return nil
			})
		},
	}
}

func newMachineGate(g *globals, drain bool) *cobra.Command {
	var reason string
	use, short := "resume NAME", "Resume a drained machine: new tasks start on it again"
	if drain {
		use, short = "drain NAME [--reason R]", "Drain a machine: no new task starts on it; running ones finish"
	}
	c := &cobra.Command{
		Use: use, Short: short, Args: exactArgs(1, "NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				if drain {
					if err := cl.DrainMachine(ctx, args[0], reason); err != nil {
						return err
					}
					fmt.Fprintf(g.stdout, "machine %s draining: no new task starts on it (rediacc machine resume %s)\n", args[0], args[0])
					return nil
				}
				if err := cl.ResumeMachine(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "machine %s resumed\n", args[0])
				return nil
			})
		},
	}
	if drain {
		c.Flags().StringVar(&reason, "reason", "", "why (shown in wait reasons and the audit trail)")
	}
	return c
}

func newQueue(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "queue", Short: "Pause or resume a team's queue",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return usagef("%s needs a subcommand (see %s --help)", c.CommandPath(), c.CommandPath())
		}}
	for _, pause := range []bool{true, false} {
		var team, reason string
		use, short := "resume --team T", "Resume a team's paused queue"
		if pause {
			use, short = "pause --team T [--reason R]", "Pause a team's queue: tasks are accepted, none is claimed"
		}
		sub := &cobra.Command{
			Use: use, Short: short, Args: exactArgs(0, ""),
			RunE: func(c *cobra.Command, args []string) error {
				return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
					if pause {
						if err := cl.PauseQueue(ctx, team, reason); err != nil {
							return err
						}
						fmt.Fprintf(g.stdout, "queue of team %s paused: tasks are accepted, none is claimed (rediacc queue resume --team %s)\n", team, team)
						return nil
					}
					if err := cl.ResumeQueue(ctx, team); err != nil {
						return err
					}
					fmt.Fprintf(g.stdout, "queue of team %s resumed\n", team)
					return nil
				})
			},
		}
		sub.Flags().StringVar(&team, "team", "", "the team (required)")
		_ = sub.MarkFlagRequired("team")
		if pause {
			sub.Flags().StringVar(&reason, "reason", "", "why (shown in wait reasons and the audit trail)")
		}
		c.AddCommand(sub)
	}
	c.AddCommand(newQueueStatus(g))
	return c
}

func newQueueStatus(g *globals) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "status [-o json]",
		Short: "List drained machines and paused team queues",
		Args:  exactArgs(0, ""),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				gs, err := cl.Gates(ctx)
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSON(g, gs)
				}
				if len(gs) == 0 {
					fmt.Fprintln(g.stdout, "no machine drained, no queue paused")
					return nil
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "GATE\tTEAM\tMACHINE\tSINCE\tBY\tREASON")
				for _, gt := range gs {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", gt.Kind, gt.Team, orDefault(gt.Machine, "-"),
						gt.Since.Local().Format(time.DateTime), gt.By, printable(gt.Reason))
				}
				return tw.Flush()
			})
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "", "output format: table or json")
	return c
}

func reasonSuffix(r string) string {
	if r == "" {
		return ""
	}
	return ": " + printable(r)
}
