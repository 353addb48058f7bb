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

// schedule create|update|list|show|history|pause|resume|trigger|delete.

func newSchedule(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "schedule", Short: "Recurring tasks: cron schedules in a time zone",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return usagef("%s needs a subcommand (see %s --help)", c.CommandPath(), c.CommandPath())
		}}
	c.AddCommand(newScheduleCreate(g, false), newScheduleCreate(g, true), newScheduleList(g), newScheduleShow(g),
		newScheduleHistory(g), newScheduleAct(g, "pause"), newScheduleAct(g, "resume"), newScheduleTrigger(g),
		newScheduleAct(g, "delete"))
	return c
}

// scheduleFlags are the definition flags of schedule create and update.
type scheduleFlags struct {
	tf        taskFlags
	cron, tz  string
	overlap   string
	missed    string
	misfire   time.Duration
	paused    bool
	output    string
	fsChanged func(string) bool
}

func (sf *scheduleFlags) register(c *cobra.Command) {
	f := c.Flags()
	sf.tf.register(f)
	f.StringVar(&sf.cron, "cron", "", `when: five fields "MIN HOUR DOM MON DOW" ("0 2 * * *"), or @daily, @hourly, @every 10m`)
	f.StringVar(&sf.tz, "tz", "", "IANA time zone of --cron, e.g. Europe/Paris (default UTC)")
	f.StringVar(&sf.overlap, "overlap", "skip", "while the previous run is unfinished: skip, allow or cancel-previous")
	f.StringVar(&sf.missed, "missed", "skip", "fires missed while no worker ran: skip, or run-once (one catch-up run)")
	durationFlag(f, &sf.misfire, "misfire-threshold", rediacc.DefaultMisfireThreshold, "", false, "how late a fire may still run as on time, e.g. 5m")
	f.BoolVar(&sf.paused, "paused", false, "create (or leave) the schedule paused")
	f.StringVarP(&sf.output, "output", "o", "", "output format: table or json")
	sf.fsChanged = f.Changed
}

// apply writes the given flags over s (all of them for create; only those
// given for update).
func (sf *scheduleFlags) apply(s *rediacc.Schedule, update bool) error {
	given := func(names ...string) bool {
		if !update {
			return true
		}
		for _, n := range names {
			if sf.fsChanged(n) {
				return true
			}
		}
		return false
	}
	spec, err := sf.tf.build()
	if err != nil {
		return err
	}
	t := &s.Task
	if given("machine", "team") {
		t.Machine, s.Team = spec.Machine, spec.Team
		if update && !sf.fsChanged("team") {
			s.Team = ""
		}
	}
	if given("selector") {
		t.Selector = spec.Selector
	}
	if given("all") {
		s.All = sf.tf.all
	}
	if given("priority") {
		t.Priority = spec.Priority
	}
	if given("command") {
		t.Command = spec.Command
	}
	if given("retry-count") {
		t.Retry.RetryCount = spec.Retry.RetryCount
	}
	if given("retry-delay") {
		t.Retry.RetryDelay = spec.Retry.RetryDelay
	}
	if given("retry-backoff") {
		t.Retry.Backoff = spec.Retry.Backoff
	}
	if given("retry-on") {
		t.Retry.RetryOn = spec.Retry.RetryOn
	}
	if given("failure-action") {
		t.FailureAction = spec.FailureAction
	}
	if given("timeout") {
		t.Timeout = spec.Timeout
	}
	if given("env") {
		t.Env = spec.Env
	}
	if given("secret") {
		t.Secrets = spec.Secrets
	}
	if given("cron") {
		s.Cron = sf.cron
	}
	if given("tz") {
		s.TimeZone = sf.tz
	}
	if given("overlap") {
		s.Overlap = rediacc.OverlapPolicy(sf.overlap)
	}
	if given("missed") {
		s.MissedRun = rediacc.MissedRunPolicy(sf.missed)
	}
	if given("misfire-threshold") {
		s.MisfireThreshold = sf.misfire
	}
	if given("paused") {
		s.Paused = sf.paused
	}
	return nil
}

func newScheduleCreate(g *globals, update bool) *cobra.Command {
	var sf scheduleFlags
	use, short := "create NAME --cron EXPR [--tz ZONE] (--machine M | --team T [--selector K=V] [--all]) --command CMD [flags]",
		"Create a schedule: a task submitted at every fire of a cron expression"
	if update {
		use, short = "update NAME [flags]", "Change a schedule (only the flags given; you become its owner)"
	}
	c := &cobra.Command{
		Use: use, Short: short,
		Long: short + `.

Each fire submits an ordinary task (same retries, alerts, audit, secrets)
linked to the schedule and its scheduled time. Schedules fire while a
worker runs (rediacc worker); several workers fire each schedule once.
Daylight saving: a time skipped by the spring-forward night does not fire
that night; a time repeated by the fall-back night fires twice.`,
		Args: exactArgs(1, "NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(sf.output); err != nil {
				return err
			}
			if !update && sf.cron == "" {
				return usagef("--cron is required")
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				s := rediacc.Schedule{Name: args[0]}
				if update {
					cur, err := cl.GetSchedule(ctx, args[0])
					if err != nil {
						return err
					}
					s = *cur
					s.Team = "" // the schedule's team stays
				}
				if err := sf.apply(&s, update); err != nil {
					return err
				}
				var (
					out *rediacc.Schedule
					err error
				)
				if update {
					out, err = cl.UpdateSchedule(ctx, s)
				} else {
					out, err = cl.CreateSchedule(ctx, s)
				}
				if err != nil {
					return err
				}
				if sf.output == "json" {
					return writeJSON(g, out)
				}
				verb := "created"
				if update {
					verb = "updated"
				}
				fmt.Fprintf(g.stdout, "schedule %s %s (%s %s); next fire %s\n", out.Name, verb, out.Cron, out.TimeZone, fmtZoned(out.NextFireAt, out.TimeZone))
				return nil
			})
		},
	}
	sf.register(c)
	if !update {
		_ = c.MarkFlagRequired("command")
	}
	return c
}

// fmtZoned shows t in the zone tz (and "-" for zero, "paused" handled by
// callers).
func fmtZoned(t time.Time, tz string) string {
	if t.IsZero() {
		return "-"
	}
	if loc, err := time.LoadLocation(tz); err == nil {
		t = t.In(loc)
	}
	return t.Format("2006-01-02 15:04 MST")
}

func scheduleTarget(s *rediacc.Schedule) string {
	switch {
	case s.Task.Machine != "":
		return s.Task.Machine
	case s.All:
		return "all of " + s.Team + selectorSuffix(s.Task.Selector)
	}
	return "team " + s.Team + selectorSuffix(s.Task.Selector)
}

func selectorSuffix(sel map[string]string) string {
	if len(sel) == 0 {
		return ""
	}
	var parts []string
	for k, v := range sel {
		parts = append(parts, k+"="+v)
	}
	sortStrings(parts)
	return " [" + strings.Join(parts, ",") + "]"
}

func newScheduleList(g *globals) *cobra.Command {
	var team, output string
	c := &cobra.Command{
		Use:   "list [--team T] [-o json]",
		Short: "List schedules with their next and last fire and last status",
		Args:  exactArgs(0, ""),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				ss, err := cl.ListSchedules(ctx, rediacc.ScheduleFilter{Team: team})
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSON(g, ss)
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tTEAM\tCRON\tTIME ZONE\tTARGET\tPRIORITY\tNEXT FIRE\tLAST FIRE\tLAST STATUS\tSTATE")
				for _, s := range ss {
					state, next := "active", fmtZoned(s.NextFireAt, s.TimeZone)
					if s.Paused {
						state, next = "paused", "-"
					}
					last := "-"
					if s.LastFire != nil {
						last = fmtZoned(s.LastFire.ScheduledAt, s.TimeZone)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", s.Name, s.Team, printable(s.Cron), s.TimeZone,
						printable(scheduleTarget(s)), s.Task.Priority, next, last, orDefault(s.LastStatus, "-"), state)
				}
				return tw.Flush()
			})
		},
	}
	c.Flags().StringVar(&team, "team", "", "only this team")
	c.Flags().StringVarP(&output, "output", "o", "", "output format: table or json")
	return c
}

func newScheduleShow(g *globals) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "show NAME [-o json]",
		Short: "Show a schedule",
		Args:  exactArgs(1, "NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				s, err := cl.GetSchedule(ctx, args[0])
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSON(g, s)
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
				row("Schedule", s.Name+" ("+s.ID+")")
				row("Team", s.Team)
				row("Cron", s.Cron+" "+s.TimeZone)
				row("Target", printable(scheduleTarget(s)))
				row("Command", printable(s.Task.Command))
				row("Priority", fmt.Sprintf("%d (%s)", s.Task.Priority, s.Task.Priority))
				row("Overlap", string(s.Overlap))
				row("Missed runs", fmt.Sprintf("%s (misfire threshold %s)", s.MissedRun, s.MisfireThreshold))
				row("Owner", s.Owner)
				if s.Paused {
					row("State", "paused")
				} else {
					row("Next fire", fmtZoned(s.NextFireAt, s.TimeZone))
				}
				if f := s.LastFire; f != nil {
					row("Last fire", fmt.Sprintf("%s: %s %s", fmtZoned(f.ScheduledAt, s.TimeZone), f.Outcome, printable(f.Reason)))
					row("Last status", s.LastStatus)
				}
				return tw.Flush()
			})
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "", "output format: table or json")
	return c
}

func newScheduleHistory(g *globals) *cobra.Command {
	var (
		output string
		limit  int
	)
	c := &cobra.Command{
		Use:   "history NAME [--limit N] [-o json]",
		Short: "List a schedule's fires, newest first",
		Args:  exactArgs(1, "NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if limit < 0 {
				return usagef("--limit %d: use 0 (all) or more", limit)
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				s, err := cl.GetSchedule(ctx, args[0])
				if err != nil {
					return err
				}
				fs, err := cl.ScheduleFires(ctx, s.ID, limit)
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSON(g, fs)
				}
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SCHEDULED\tFIRED\tKIND\tOUTCOME\tTASKS\tREASON")
				for _, f := range fs {
					kind := "cron"
					switch {
					case f.Manual:
						kind = "manual"
					case f.CatchUp:
						kind = "catch-up"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", fmtZoned(f.ScheduledAt, s.TimeZone), fmtZoned(f.FiredAt, s.TimeZone),
						kind, f.Outcome, orDefault(strings.Join(f.TaskIDs, ","), "-"), clip(f.Reason, 80))
				}
				return tw.Flush()
			})
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "", "output format: table or json")
	c.Flags().IntVar(&limit, "limit", 20, "at most this many fires (0: all kept)")
	return c
}

func newScheduleAct(g *globals, verb string) *cobra.Command {
	return &cobra.Command{
		Use: verb + " NAME",
		Short: map[string]string{"pause": "Pause a schedule (it does not fire until resumed)", "resume": "Resume a paused schedule from its next fire",
			"delete": "Delete a schedule (its tasks stay)"}[verb],
		Args: exactArgs(1, "NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				var (
					s   *rediacc.Schedule
					err error
				)
				switch verb {
				case "pause":
					s, err = cl.PauseSchedule(ctx, args[0])
				case "resume":
					s, err = cl.ResumeSchedule(ctx, args[0])
				default:
					if err = cl.DeleteSchedule(ctx, args[0]); err == nil {
						fmt.Fprintf(g.stdout, "schedule %s deleted\n", args[0])
					}
					return err
				}
				if err != nil {
					return err
				}
				if s.Paused {
					fmt.Fprintf(g.stdout, "schedule %s paused\n", s.Name)
				} else {
					fmt.Fprintf(g.stdout, "schedule %s active; next fire %s\n", s.Name, fmtZoned(s.NextFireAt, s.TimeZone))
				}
				return nil
			})
		},
	}
}

func newScheduleTrigger(g *globals) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "trigger NAME [-o json]",
		Short: "Run a schedule's task now, as you (prints the task ids)",
		Args:  exactArgs(1, "NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				ts, err := cl.TriggerSchedule(ctx, args[0])
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSON(g, ts)
				}
				for _, t := range ts {
					fmt.Fprintln(g.stdout, t.ID)
				}
				return nil
			})
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "", "output format: ids (default) or json")
	return c
}
