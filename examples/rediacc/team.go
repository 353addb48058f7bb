package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rediacc/rediacc"
)

func newTeam(g *globals) *cobra.Command {
	team := &cobra.Command{Use: "team", Short: "Manage teams and their members", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return usagef("%s needs a subcommand (see --help)", c.CommandPath())
		}}
	var (
		desc, output string
		all          bool
	)
	create := &cobra.Command{
		Use: "create NAME [--description D]", Short: "Create a team (owners)", Args: exactArgs(1, "NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				if _, err := cl.CreateTeam(ctx, args[0], desc); err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "team %s created\n", args[0])
				return nil
			})
		},
	}
	create.Flags().StringVar(&desc, "description", "", "what the team is for")
	list := &cobra.Command{
		Use: "list [--all] [-o json]", Short: "List the teams you belong to (owners: all; --all: deleted teams too)", Args: exactArgs(0, ""),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				ts, err := cl.Teams(ctx, rediacc.TeamFilter{IncludeDeleted: all})
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSON(g, ts)
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TEAM\tID\tDESCRIPTION\tCREATED\tDELETED")
				for _, t := range ts {
					deleted := ""
					if !t.DeletedAt.IsZero() {
						deleted = t.DeletedAt.Local().Format(time.DateTime)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", printable(t.Name), t.ID, printable(t.Description), t.CreatedAt.Local().Format(time.DateTime), deleted)
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().StringVarP(&output, "output", "o", "", "output format: table or json")
	list.Flags().BoolVar(&all, "all", false, "include deleted teams, with the ids their tasks and audit records stay readable by (owners, auditors)")
	var newName string
	rename := &cobra.Command{
		Use: "rename NAME --to NEW", Short: "Rename a team (owners)", Args: exactArgs(1, "NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				if err := cl.RenameTeam(ctx, args[0], newName); err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "team %s renamed to %s\n", args[0], newName)
				return nil
			})
		},
	}
	rename.Flags().StringVar(&newName, "to", "", "the new name (required)")
	_ = rename.MarkFlagRequired("to")
	var (
		purge  bool
		teamID string
	)
	del := &cobra.Command{
		Use:   "delete NAME [--purge-vault] | delete --team-id ID --purge-vault",
		Short: "Delete a team without machines or unfinished tasks (owners)",
		Long: `Delete a team. It must have no machines and no unfinished tasks, and its
vault no secrets, unless --purge-vault is given: then the vault's secrets
(every version, and the machines' imported identities) are destroyed once
the team is deleted. The team's finished tasks and audit records stay,
readable by its id (rediacc team list --all); a later team of the same name
starts empty. --team-id ID --purge-vault destroys the vault of a team
deleted earlier (a purge that failed).`,
		Args: func(c *cobra.Command, args []string) error {
			if teamID != "" {
				if !purge || len(args) > 0 {
					return usagef("--team-id takes no NAME and needs --purge-vault (it destroys the vault of a deleted team)")
				}
				return nil
			}
			return exactArgs(1, "NAME")(c, args)
		},
		RunE: func(c *cobra.Command, args []string) error {
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				if teamID != "" {
					if err := cl.PurgeTeamVault(ctx, teamID); err != nil {
						return err
					}
					fmt.Fprintf(g.stdout, "vault of deleted team %s destroyed\n", teamID)
					return nil
				}
				var opts []rediacc.TeamDeleteOption
				if purge {
					opts = append(opts, rediacc.PurgeVault())
				}
				if err := cl.DeleteTeam(ctx, args[0], opts...); err != nil {
					return err
				}
				if purge {
					fmt.Fprintf(g.stdout, "team %s deleted, its vault destroyed\n", args[0])
				} else {
					fmt.Fprintf(g.stdout, "team %s deleted\n", args[0])
				}
				return nil
			})
		},
	}
	del.Flags().BoolVar(&purge, "purge-vault", false, "destroy the team's vault (every secret and version) with the team")
	del.Flags().StringVar(&teamID, "team-id", "", "with --purge-vault: destroy the vault of the deleted team of this id")
	team.AddCommand(create, list, rename, del, newMember(g))
	team.AddCommand(newTeamSSHCA(g)) // sshca.go
	return team
}

func newMember(g *globals) *cobra.Command {
	member := &cobra.Command{Use: "member", Short: "Manage team members", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return usagef("%s needs a subcommand (see --help)", c.CommandPath())
		}}
	var role, output string
	add := &cobra.Command{
		Use: "add TEAM USER --role admin|operator|viewer", Short: "Add a member or change its role (team admins, owners)",
		Args: exactArgs(2, "TEAM and USER"),
		RunE: func(c *cobra.Command, args []string) error {
			r, err := rediacc.ParseRole(role)
			if err != nil {
				return usagef("--role %s: a team role is admin, operator or viewer (owner and auditor are store-wide: rediacc role add)", quoted(role))
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				m, err := cl.SetMember(ctx, args[0], args[1], r)
				if err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "%s is %s of team %s\n", m.User, m.Role, m.Team)
				return nil
			})
		},
	}
	add.Flags().StringVar(&role, "role", "", "admin, operator or viewer (required)")
	_ = add.MarkFlagRequired("role")
	remove := &cobra.Command{
		Use: "remove TEAM USER", Short: "Remove a member (team admins, owners)", Args: exactArgs(2, "TEAM and USER"),
		RunE: func(c *cobra.Command, args []string) error {
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				if err := cl.RemoveMember(ctx, args[0], args[1]); err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "%s removed from team %s\n", args[1], args[0])
				return nil
			})
		},
	}
	list := &cobra.Command{
		Use: "list TEAM [-o json]", Short: "List a team's members (team admins, owners)", Args: exactArgs(1, "TEAM"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				ms, err := cl.Members(ctx, args[0])
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSON(g, ms)
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "USER\tROLE\tADDED")
				for _, m := range ms {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", m.User, m.Role, m.AddedAt.Local().Format(time.DateTime))
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().StringVarP(&output, "output", "o", "", "output format: table or json")
	member.AddCommand(add, remove, list)
	return member
}

func newMachineMove(g *globals) *cobra.Command {
	var team string
	c := &cobra.Command{
		Use: "move NAME --team TEAM", Short: "Move a machine to another team (admin of both teams)", Args: exactArgs(1, "NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				if err := cl.MoveMachine(ctx, args[0], team); err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "machine %s moved to team %s\n", args[0], team)
				return nil
			})
		},
	}
	c.Flags().StringVar(&team, "team", "", "destination team (required)")
	_ = c.MarkFlagRequired("team")
	return c
}

func newListAudit(g *globals) *cobra.Command {
	var (
		f            rediacc.AuditFilter
		start, end   string
		output       string
		actionFilter string
	)
	c := &cobra.Command{
		Use:   "audit-logs [--start-date RFC3339] [--end-date RFC3339] [--actor U] [--entity-filter TYPE] [--team T] [--max-records N] [-o json]",
		Short: "List audit records (owners and auditors: all; team admins: their team)",
		Args:  exactArgs(0, ""),
		RunE: func(c *cobra.Command, args []string) error {
			if output != "" && output != "table" && output != "json" && output != "jsonl" {
				return usagef("-o %s: use table, json or jsonl", quoted(output))
			}
			var err error
			if start != "" {
				if f.Start, err = time.Parse(time.RFC3339, start); err != nil {
					return usagef("--start-date %s: use RFC 3339, e.g. 2026-11-29T00:00:00Z", quoted(start))
				}
			}
			if end != "" {
				if f.End, err = time.Parse(time.RFC3339, end); err != nil {
					return usagef("--end-date %s: use RFC 3339, e.g. 2026-11-30T00:00:00Z", quoted(end))
				}
			}
			f.Action = actionFilter
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				if output == "jsonl" {
					w, flush := jsonOut(g.rawStdout) // termsafe.go: the same JSON values, safe on a terminal
					if err := cl.ExportAudit(ctx, w, f); err != nil {
						return err
					}
					return flush()
				}
				recs, err := cl.AuditLog(ctx, f)
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSON(g, recs)
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SEQ\tTIME\tACTOR\tACTION\tENTITY\tTEAM\tRESULT\tDETAILS")
				for _, r := range recs {
					team := r.Team // the team's id; its name when the record has it
					if n := r.Details["team_name"]; n != "" {
						team = n
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s %s\t%s\t%s\t%s\n", r.Seq, r.Time.Local().Format("2006-01-02 15:04:05.000"),
						r.Actor, r.Action, r.EntityType, clip(r.EntityID, 12), printable(team), r.Result, clip(fmtDetails(r.Details), 60))
				}
				return tw.Flush()
			})
		},
	}
	fl := c.Flags()
	fl.StringVar(&start, "start-date", "", "earliest time (RFC 3339)")
	fl.StringVar(&end, "end-date", "", "first time excluded (RFC 3339)")
	fl.StringVar(&f.Actor, "actor", "", "only this actor")
	fl.StringVar(&actionFilter, "action", "", "only this action, or a prefix such as task.")
	fl.StringVar(&f.EntityType, "entity-filter", "", "only this entity type: task, machine, team, member, vault, audit")
	fl.StringVar(&f.Team, "team", "", "only this team (the live team of that name)")
	fl.StringVar(&f.TeamID, "team-id", "", "only this team, by id (a deleted team's too: rediacc team list --all)")
	fl.IntVar(&f.Limit, "max-records", 1000, "at most this many records (1..10000)")
	fl.StringVarP(&output, "output", "o", "", "output format: table, json or jsonl")
	return c
}

func fmtDetails(d map[string]string) string {
	keys := make([]string, 0, len(d))
	for k := range d {
		keys = append(keys, k)
	}
	sortStrings(keys)
	s := ""
	for _, k := range keys {
		if s != "" {
			s += " "
		}
		s += k + "=" + d[k]
	}
	return s
}

// newRole manages the store-wide roles (owner, auditor).
func newRole(g *globals) *cobra.Command {
	rc := &cobra.Command{Use: "role", Short: "Grant and revoke store-wide roles: owner, auditor (owners)", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return usagef("%s needs a subcommand (see --help)", c.CommandPath())
		}}
	var role string
	change := func(use, short string, grant bool) *cobra.Command {
		cmd := &cobra.Command{
			Use: use, Short: short, Args: exactArgs(1, "USER"),
			RunE: func(c *cobra.Command, args []string) error {
				r, err := rediacc.ParseRole(role)
				if err != nil {
					return usagef("--role %s: a store-wide role is owner or auditor (team roles: rediacc team member add TEAM USER --role admin|operator|viewer)", quoted(role))
				}
				return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
					if grant {
						err = cl.AddStoreRole(ctx, args[0], r)
					} else {
						err = cl.RemoveStoreRole(ctx, args[0], r)
					}
					if err != nil {
						return err
					}
					verb := map[bool]string{true: "is now", false: "is no longer"}[grant]
					fmt.Fprintf(g.stdout, "%s %s %s\n", args[0], verb, r)
					return nil
				})
			},
		}
		cmd.Flags().StringVar(&role, "role", "", "owner or auditor (required)")
		_ = cmd.MarkFlagRequired("role")
		return cmd
	}
	list := &cobra.Command{
		Use: "list", Short: "List owners and auditors", Args: exactArgs(0, ""),
		RunE: func(c *cobra.Command, args []string) error {
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				ms, err := cl.StoreRoles(ctx)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "USER\tROLE\tADDED")
				for _, m := range ms {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", m.User, m.Role, m.AddedAt.Local().Format(time.DateTime))
				}
				return tw.Flush()
			})
		},
	}
	rc.AddCommand(change("add USER --role owner|auditor", "Grant a store-wide role", true),
		change("remove USER --role owner|auditor", "Revoke a store-wide role (the last owner stays)", false), list)
	return rc
}
