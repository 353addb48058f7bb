package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rediacc/rediacc"
)

func newCreateTask(g *globals) *cobra.Command {
	var (
		tf     taskFlags // taskflags.go
		output string
		wait   bool
	)
	c := &cobra.Command{
		Use:   "task (--machine NAME | --team TEAM [--selector K=V] [--all]) --priority N --command CMD [flags]",
		Short: "Queue a task (prints its id)",
		Long: `Queue a task on a machine (--machine), or on the least loaded healthy
machine of a team (--team, narrowed by --selector labels), or one task on
every machine of the team and selector (--all). With --all --wait, a
progress bar follows the tasks, then a table shows each machine's result.`,
		Args: exactArgs(0, ""),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			spec, err := tf.build()
			if err != nil {
				return err
			}
			if spec.Machine == "" && spec.Team == "" {
				return usagef("--machine (or --team) is required")
			}
			if tf.all && (spec.Machine != "" || spec.Team == "") {
				return usagef("--all needs --team and no --machine")
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				if tf.all {
					return createMany(c.Context(), g, cl, spec, wait, output) // batch.go
				}
				t, err := cl.Submit(ctx, spec)
				if err != nil {
					return err
				}
				if wait {
					id := t.ID
					fmt.Fprintf(g.stderr, "waiting for task %s (a worker must be running: rediacc worker)\n", id)
					if t, err = cl.Wait(ctx, id); err != nil {
						return fmt.Errorf("waiting for task %s (still queued): %w", id, err)
					}
				}
				if output == "json" {
					if err := writeJSON(g, t); err != nil {
						return err
					}
				} else if wait {
					fmt.Fprintf(g.stdout, "%s %s exit %s\n", t.ID, t.Status, exitStr(t.ExitCode))
					printStream(g, "stdout", t.Stdout, t.StdoutTruncated)
					printStream(g, "stderr", t.Stderr, t.StderrTruncated)
				} else {
					fmt.Fprintln(g.stdout, t.ID)
				}
				if wait && t.Status != rediacc.StatusCompleted {
					if err := t.Err(); err != nil {
						return fmt.Errorf("task %s %s: %w", t.ID, t.Status, err)
					}
					return fmt.Errorf("task %s %s: see rediacc inspect queue %s", t.ID, t.Status, t.ID)
				}
				return nil
			})
		},
	}
	f := c.Flags()
	tf.register(f)
	f.StringVar(&tf.spec.IdempotencyKey, "idempotency-key", "", "a second create with the same key returns the first task")
	f.BoolVar(&wait, "wait", false, "wait until a worker has finished the task (with --all: a progress bar, then a result table)")
	f.StringVarP(&output, "output", "o", "", "output format: id (default) or json")
	_ = c.MarkFlagRequired("command")
	return c
}

func newListQueue(g *globals) *cobra.Command {
	var (
		status, machine, priority, output, team string
		teamID                                  string
		limit                                   int
		stats                                   bool // monitor.go
	)
	c := &cobra.Command{
		Use:   "queue [--status S] [--machine M] [--team T | --team-id ID] [--priority N] [--stats] [-o json]",
		Short: "List tasks",
		Args:  exactArgs(0, ""),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if stats { // monitor.go
				if teamID != "" {
					return usagef("--stats counts the live teams: use --team")
				}
				return printQueueStats(c.Context(), g, team, machine, output)
			}
			f := rediacc.ListFilter{Machine: machine, Team: team, TeamID: teamID, Limit: limit}
			if status != "" {
				for _, s := range strings.Split(status, ",") {
					st, err := rediacc.ParseStatus(s)
					if err != nil {
						return err
					}
					f.Statuses = append(f.Statuses, st)
				}
			}
			if priority != "" {
				p, err := rediacc.ParsePriority(priority)
				if err != nil {
					return err
				}
				f.Priority = p
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				ts, err := cl.List(ctx, f)
				if err != nil {
					return err
				}
				if output == "json" {
					if ts == nil {
						ts = []*rediacc.Task{}
					}
					return writeJSON(g, ts)
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TASK ID\tSTATUS\tPRIORITY\tMACHINE\tATTEMPTS\tEXIT\tCREATED\tCOMMAND")
				for _, t := range ts {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\t%s\t%s\n", t.ID, t.Status, t.Priority, t.Machine,
						t.Attempts, exitStr(t.ExitCode), t.CreatedAt.Local().Format(time.DateTime), clip(t.Command, 40))
				}
				return tw.Flush()
			})
		},
	}
	f := c.Flags()
	f.StringVar(&status, "status", "", "only these statuses (comma-separated)")
	f.StringVar(&machine, "machine", "", "only this machine")
	f.StringVar(&team, "team", "", "only this team (the live team of that name)")
	f.StringVar(&teamID, "team-id", "", "only this team, by id (a deleted team's too, for owners: rediacc team list --all)")
	f.StringVar(&priority, "priority", "", "only this priority")
	f.IntVar(&limit, "limit", 0, "at most this many tasks (0: all)")
	f.StringVarP(&output, "output", "o", "", "output format: table or json")
	f.BoolVar(&stats, "stats", false, "print queue statistics instead (counts by status × priority, team, machine; oldest pending; running; finished per minute); honours --team and --machine")
	return c
}

func newInspectQueue(g *globals) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "queue TASK_ID [-o json]",
		Short: "Show one task with its attempts and output",
		Args:  exactArgs(1, "TASK_ID"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				t, err := cl.Get(ctx, args[0])
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSON(g, t)
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, cell(v)) }
				row("Task", t.ID)
				row("Status", string(t.Status))
				row("Priority", fmt.Sprintf("%d (%s)", t.Priority, t.Priority))
				row("Machine", t.Machine)
				row("Team", t.Team)
				row("Command", printable(t.Command))
				row("Retry", fmt.Sprintf("%d retries, first delay %s, %s", t.Retry.RetryCount, t.Retry.RetryDelay, orDefault(t.Retry.Backoff, "exponential")))
				row("Failure action", string(t.FailureAction))
				row("Attempts", fmt.Sprint(t.Attempts))
				row("Exit code", exitStr(t.ExitCode))
				row("Created", fmtTime(t.CreatedAt))
				row("Started", fmtTime(t.StartedAt))
				row("Completed", fmtTime(t.CompletedAt))
				if !t.NextAttemptAt.IsZero() {
					row("Next attempt", fmtTime(t.NextAttemptAt))
				}
				for _, w := range t.Waiting {
					row("Waiting", w.Message)
				}
				if t.ScheduleID != "" { // schedule.go
					row("Schedule", fmt.Sprintf("%s (%s), fire of %s", t.Schedule, t.ScheduleID, fmtTime(t.ScheduledAt)))
				}
				if t.Error != "" {
					row("Error", t.Error)
					row("Error kind", string(t.ErrorKind))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				for _, a := range t.History {
					fmt.Fprintf(g.stdout, "  attempt %d: %s  %s → %s  exit %s  %s\n", a.Number, orDefault(string(a.Outcome), "running"),
						fmtTime(a.StartedAt), fmtTime(a.EndedAt), exitStr(a.ExitCode), cell(a.Error))
				}
				printStream(g, "stdout", t.Stdout, t.StdoutTruncated)
				printStream(g, "stderr", t.Stderr, t.StderrTruncated)
				return nil
			})
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "", "output format: table or json")
	return c
}

func newCancel(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel TASK_ID",
		Short: "Cancel a task (a running one has its remote command stopped)",
		Args:  exactArgs(1, "TASK_ID"),
		RunE: func(c *cobra.Command, args []string) error {
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				t, err := cl.Cancel(ctx, args[0])
				if err != nil {
					return err
				}
				if t.Status == rediacc.StatusCancelled {
					fmt.Fprintf(g.stdout, "task %s cancelled\n", t.ID)
				} else {
					fmt.Fprintf(g.stdout, "task %s is %s: its worker will stop it\n", t.ID, t.Status)
				}
				return nil
			})
		},
	}
}

func newWorker(g *globals) *cobra.Command {
	var (
		concurrency, perMachine int
		untilEmpty              bool
		health                  rediacc.HealthConfig // status.go
		weights                 map[string]int
		mon                     monitorFlags // monitor.go
		keyAge                  maxKeyAge    // keys.go
		keyPolicy               rediacc.KeyRotationPolicy
	)
	c := &cobra.Command{
		Use:   "worker [--concurrency N] [--until-empty] [--team-weight TEAM=N]... [--metrics-addr ADDR] [--alert-webhook URL [--alert-webhook-secret KEY]] [--max-key-age 90d [--rotate-overdue-keys]]",
		Short: "Run queued tasks (until interrupted, or until the queue is empty)",
		Args:  exactArgs(0, ""),
		RunE: func(c *cobra.Command, args []string) error {
			if concurrency < 1 || perMachine < 1 {
				return usagef("--concurrency and --per-machine-limit must be at least 1")
			}
			cl, err := mon.client(c.Context(), g, func(cfg *rediacc.Config) {
				cfg.Concurrency = concurrency
				cfg.PerMachineLimit = perMachine
				cfg.Health = health
				cfg.TeamWeights = weights
				cfg.KeyRotation = keyPolicy
				cfg.KeyRotation.MaxAge = keyAge.d
			})
			if err != nil {
				return err
			}
			defer cl.Close()
			stopMetrics, err := mon.serve(c.Context(), g, cl)
			if err != nil {
				return err
			}
			defer stopMetrics() // before cl.Close
			if untilEmpty {
				return cl.RunUntilEmpty(c.Context())
			}
			return cl.Run(c.Context())
		},
	}
	f := c.Flags()
	f.IntVar(&concurrency, "concurrency", rediacc.DefaultConcurrency, "tasks run at once by this worker")
	f.IntVar(&perMachine, "per-machine-limit", rediacc.DefaultPerMachineLimit, "tasks run at once on one machine (OpenSSH allows 10 sessions per connection)")
	f.BoolVar(&untilEmpty, "until-empty", false, "exit 0 once no task is pending, assigned or processing; exit 1, naming them and why, when the tasks left are ones this worker cannot run")
	f.StringToIntVar(&weights, "team-weight", nil, "TEAM=N: the team's share of claims within a priority level (default 1 each; repeatable)")
	mon.register(f)
	registerHealthFlags(f, &health) // status.go
	registerMaxKeyAge(f, &keyAge)   // keys.go
	f.BoolVar(&keyPolicy.Auto, "rotate-overdue-keys", false, "queue a rotation task (priority 4) for every key past --max-key-age")
	f.DurationVar(&keyPolicy.CheckInterval, "key-check-interval", rediacc.DefaultKeyCheckInterval, "check key ages this often (with --max-key-age)")
	return c
}

func exitStr(code *int) string {
	if code == nil {
		return "-"
	}
	return fmt.Sprint(*code)
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05.000")
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func clip(s string, n int) string {
	s = printable(strings.ReplaceAll(s, "\n", " "))
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

func printStream(g *globals, name, s string, truncated bool) {
	if s == "" {
		return
	}
	note := ""
	if truncated {
		note = " (truncated)"
	}
	fmt.Fprintf(g.stdout, "--- %s%s ---\n%s", name, note, s)
	if !strings.HasSuffix(s, "\n") {
		fmt.Fprintln(g.stdout)
	}
}

// printable escapes control characters (terminal escape sequences a task's
// command or output may hold), tabs and newlines: one line or table cell
// (termsafe.go).
func printable(s string) string { return cell(s) }
