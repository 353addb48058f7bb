package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rediacc/rediacc"
)

// newAudit verifies the audit trail and manages its key and checkpoints.
func newAudit(g *globals) *cobra.Command {
	audit := &cobra.Command{Use: "audit", Short: "Verify the audit trail; its key and checkpoints", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return usagef("%s needs a subcommand (see --help)", c.CommandPath())
		}}
	audit.AddCommand(newAuditVerify(g), newAuditCheckpoint(g), newAuditKey(g))
	return audit
}

func newAuditVerify(g *globals) *cobra.Command {
	var (
		checkpoints bool
		output      string
	)
	c := &cobra.Command{
		Use:   "verify [--checkpoints [FILE...]] [-o json]",
		Short: "Check the audit trail's seals and chain, and with --checkpoints its earlier heads (owners, auditors)",
		Long: `Check every audit record's seal (HMAC-SHA256 with the audit key), every link
and the head. With --checkpoints, also compare the trail with the checkpoints
of its head written earlier: the checkpoint file in the archive dir by
default, or the FILEs named (checkpoint files, or JSON logs written with
--log-format json). That catches a rewrite of the store by someone who also
holds the key. Exit 1 when the trail was tampered with, a checkpoint does
not verify, or records are sealed with a key the keyring does not hold.`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) > 0 && !checkpoints {
				return usagef("%s takes no argument (checkpoint files follow --checkpoints)", c.CommandPath())
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				var rep rediacc.AuditReport
				opts := []rediacc.VerifyOption{rediacc.WithAuditReport(&rep)}
				if checkpoints {
					opts = append(opts, rediacc.WithCheckpoints(args...))
				}
				n, err := cl.VerifyAudit(ctx, opts...)
				if output == "json" {
					verdict := struct {
						rediacc.AuditReport
						Intact bool   `json:"intact"`
						Error  string `json:"error,omitempty"`
					}{AuditReport: rep, Intact: err == nil}
					if err != nil {
						verdict.Error = err.Error()
					}
					if werr := writeJSON(g, verdict); werr != nil {
						return werr
					}
				}
				switch {
				case errors.Is(err, rediacc.ErrAuditTampered):
					return fmt.Errorf("audit trail NOT intact after %d records: %w", n, err)
				case errors.Is(err, rediacc.ErrAuditKeyUnknown):
					return fmt.Errorf("audit trail NOT verified: %w", err)
				case err != nil:
					return err
				}
				if output == "json" {
					return nil
				}
				msg := fmt.Sprintf("audit trail intact: %d records, hash chain verified", n)
				if rep.Unkeyed > 0 {
					msg += fmt.Sprintf(" (%d keyed, %d from before the trail was keyed)", rep.Keyed, rep.Unkeyed)
				}
				if checkpoints {
					msg += fmt.Sprintf("; %d checkpoint(s) from %s hold", rep.Checkpoints, strings.Join(rep.CheckpointFiles, ", "))
				}
				fmt.Fprintln(g.stdout, msg)
				return nil
			})
		},
	}
	c.Flags().BoolVar(&checkpoints, "checkpoints", false, "also compare with the checkpoints in FILE... (default: the archive dir's checkpoint file)")
	c.Flags().StringVarP(&output, "output", "o", "", "output format: table or json")
	return c
}

func newAuditCheckpoint(g *globals) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "checkpoint [-o json]",
		Short: "Seal a checkpoint of the audit trail's head now, into the checkpoint file and the log (owners, auditors)",
		Args:  exactArgs(0, ""),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				cp, err := cl.CheckpointAudit(ctx)
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSON(g, cp)
				}
				fmt.Fprintf(g.stdout, "checkpoint of seq %d (hash %s) written to %s\n", cp.Seq, cp.Hash, cl.AuditCheckpointFile())
				return nil
			})
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "", "output format: table or json")
	return c
}

func newAuditKey(g *globals) *cobra.Command {
	key := &cobra.Command{Use: "key", Short: "List and rotate the audit keys (never shows a key)", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return usagef("%s needs a subcommand (see --help)", c.CommandPath())
		}}
	var output string
	list := &cobra.Command{
		Use: "list [-o json]", Short: "List the audit keyring's keys (owners, auditors)", Args: exactArgs(0, ""),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				keys, err := cl.AuditKeys(ctx)
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSON(g, keys)
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "KEY ID\tFROM SEQ\tCREATED\tCURRENT")
				for _, k := range keys {
					cur := ""
					if k.Current {
						cur = "yes"
					}
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", k.ID, k.From, k.Created.Local().Format(time.DateTime), cur)
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().StringVarP(&output, "output", "o", "", "output format: table or json")
	rotate := &cobra.Command{
		Use: "rotate", Short: "Make a new audit key that seals from now on; old keys stay to verify (owners)", Args: exactArgs(0, ""),
		RunE: func(c *cobra.Command, args []string) error {
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				k, err := cl.RotateAuditKey(ctx)
				if err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "audit key %s seals the records from seq %d on; copy the key file to where you keep its backup\n", k.ID, k.From)
				return nil
			})
		},
	}
	key.AddCommand(list, rotate)
	return key
}

// quietCheckpoints drops the SDK's routine "audit checkpoint" lines (INFO)
// from the human log of a terminal: they are evidence for a log collector
// (--log-format json keeps them, and so does an explicit --log-level) and
// are in the checkpoint file anyway.
type quietCheckpoints struct{ slog.Handler }

func (q quietCheckpoints) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "audit checkpoint" && r.Level < slog.LevelWarn {
		return nil
	}
	return q.Handler.Handle(ctx, r)
}

func (q quietCheckpoints) WithAttrs(as []slog.Attr) slog.Handler {
	return quietCheckpoints{q.Handler.WithAttrs(as)}
}

func (q quietCheckpoints) WithGroup(name string) slog.Handler {
	return quietCheckpoints{q.Handler.WithGroup(name)}
}
