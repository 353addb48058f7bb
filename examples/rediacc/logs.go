package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rediacc/rediacc"
)

func newLogs(g *globals) *cobra.Command {
	var (
		output string
		raw    bool
	)
	c := &cobra.Command{
		Use:   "logs TASK_ID [-o json] [--raw]",
		Short: "Print a task's output (from the log archive once the queue has pruned it)",
		Long: `Print a task's stdout (to stdout) and stderr (to stderr), read from the
queue or, once prune has removed the task from it, from the log archive.
Control characters in the output (terminal escape sequences, carriage
returns, bidirectional overrides) are shown escaped (\x1b, \r, \u202e):
the output comes from the machine, and a terminal would act on them. With
--raw the output is written byte for byte (for a file or a program; it
may hold any escape sequence the task printed).
With -o json, print the task's whole record (attempts, exit code, output).`,
		Args: exactArgs(1, "TASK_ID"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				t, err := cl.TaskLog(ctx, args[0])
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSON(g, t)
				}
				stdout, stderr := g.stdout, g.stderr
				if raw {
					stdout, stderr = g.rawStdout, g.rawStderr
				}
				fmt.Fprint(stdout, t.Stdout)
				fmt.Fprint(stderr, t.Stderr)
				if t.StdoutTruncated || t.StderrTruncated {
					fmt.Fprintln(g.stderr, "(output truncated at the output limit)")
				}
				return nil
			})
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "", "output format: text (default) or json")
	c.Flags().BoolVar(&raw, "raw", false, "write the output byte for byte, control characters included (for a file or a program; default: escaped)")
	return c
}

func newPrune(g *globals) *cobra.Command {
	var (
		olderThan time.Duration
		retention time.Duration
		output    string
	)
	c := &cobra.Command{
		Use:   "prune --older-than 720h [--archive-retention 8760h] [-o json]",
		Short: "Move finished tasks and old audit records from the queue to the log archive (owners)",
		Long: `Move finished tasks that finished more than --older-than ago, and audit
records written before then, from the queue store to the log archive
(DATA_DIR/archive). rediacc logs still prints the tasks' output and
rediacc audit verify still verifies the whole chain. With
--archive-retention, archived task records older than it are deleted.`,
		Args: exactArgs(0, ""),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if olderThan < 0 || retention < 0 {
				return usagef("--older-than and --archive-retention must not be negative")
			}
			cl, err := g.client(c.Context(), func(cfg *rediacc.Config) { cfg.ArchiveRetention = retention })
			if err != nil {
				return err
			}
			defer cl.Close()
			res, err := cl.Prune(c.Context(), olderThan)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(g, res)
			}
			fmt.Fprintf(g.stdout, "pruned before %s: %d tasks deleted from the queue (%d archived now), %d audit records archived",
				res.Before.Local().Format(time.DateTime), res.TasksDeleted, res.TasksArchived, res.AuditArchived)
			if len(res.SegmentsRemoved) > 0 {
				fmt.Fprintf(g.stdout, ", %d archive segments removed (%s)", len(res.SegmentsRemoved), strings.Join(res.SegmentsRemoved, ", "))
			}
			fmt.Fprintln(g.stdout)
			return nil
		},
	}
	f := c.Flags()
	durationFlag(f, &olderThan, "older-than", 0, "", true, "prune what is older than this, e.g. 720h (required)")
	durationFlag(f, &retention, "archive-retention", 0, "", true, "delete archived task records older than this (0: keep forever)")
	f.StringVarP(&output, "output", "o", "", "output format: text or json")
	_ = c.MarkFlagRequired("older-than")
	return c
}
