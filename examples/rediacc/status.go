package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/rediacc/rediacc"
)

func newMachineStatus(g *globals) *cobra.Command {
	var (
		team, output string
		probe        bool
		age          maxKeyAge // keys.go
	)
	c := &cobra.Command{
		Use:   "status [--team T] [--probe] [--max-key-age 90d] [-o json]",
		Short: "Show machines' health and load (CPU, load per core, memory, disk, tasks, last seen)",
		Long: `Show each machine's last health sample (taken by workers every minute,
or now with --probe): CPU %, load per core, memory and disk used %, the
tasks running and queued on it, when it last answered, and its state:
ok, busy (its CPU or memory average is above the threshold: no new work of
effective priority 3-5 until it is 10 points below; why and since when are
listed under the table),
unhealthy (its last probe failed: tasks are not placed on it) or unknown
(never probed); "key overdue" is added when its SSH key is older than
--max-key-age.`,
		Args: exactArgs(0, ""),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return g.keyClient(c, age, func(ctx context.Context, cl *rediacc.Client) error { // keys.go
				f := rediacc.MachineFilter{Team: team}
				if probe {
					ms, err := cl.Machines(ctx, f)
					if err != nil {
						return err
					}
					var wg sync.WaitGroup
					sem := make(chan struct{}, 8)
					for _, m := range ms {
						wg.Add(1)
						sem <- struct{}{}
						go func() {
							defer func() { <-sem; wg.Done() }()
							// A failure is stored with the machine and listed
							// under the table.
							_, _ = cl.ProbeMachine(ctx, m.Name)
						}()
					}
					wg.Wait()
				}
				sts, err := cl.MachineStatus(ctx, f)
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSON(g, sts)
				}
				return statusTable(g.stdout, sts, time.Now())
			})
		},
	}
	fl := c.Flags()
	fl.StringVar(&team, "team", "", "only this team's machines")
	fl.BoolVar(&probe, "probe", false, "probe every machine over SSH now, before printing")
	registerMaxKeyAge(fl, &age)
	fl.StringVarP(&output, "output", "o", "", "output format: table or json")
	return c
}

// statusTable prints machine statuses as a table.
func statusTable(w io.Writer, sts []rediacc.MachineStatus, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MACHINE\tTEAM\tCPU %\tLOAD/CORE\tMEM %\tDISK %\tRUNNING\tQUEUED\tLAST SEEN\tSTATE")
	for _, s := range sts {
		num := func(format string, v float64) string {
			if s.Sample == nil {
				return "-"
			}
			return fmt.Sprintf(format, v)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", s.Name, s.Team,
			num("%.1f", s.CPUPercent), num("%.2f", s.LoadPerCPU), num("%.1f", s.MemUsedPercent), num("%.1f", s.DiskUsedPercent),
			s.Running, s.Queued, ago(s.LastSeen, now), state(s))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range sts {
		if !s.Healthy && s.ProbeError != "" {
			fmt.Fprintf(w, "%s: last probe failed: %s\n", s.Name, printable(s.ProbeError))
		}
		if s.Busy {
			fmt.Fprintf(w, "%s: busy since %s: %s (averages); the judgement lapses at %s unless a new probe renews it\n",
				s.Name, fmtTime(s.BusySince), s.BusyReason, fmtTime(s.BusyUntil))
		}
		if len(s.SSHCA) > 0 {
			fmt.Fprintf(w, "%s: %s\n", s.Name, caChecks(s.SSHCA)) // sshca.go: which CA it trusts
		}
		if d := s.Draining; d != nil { // window.go
			fmt.Fprintf(w, "%s: draining since %s by %s%s (rediacc machine resume %s)\n", s.Name, fmtTime(d.Since), d.By, reasonSuffix(d.Reason), s.Name)
		}
	}
	return nil
}

// ago says how long ago t was: "12s ago", "-" for never.
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return t.Local().Format(time.DateOnly)
}

func state(s rediacc.MachineStatus) string {
	if s.KeyOverdue {
		return healthState(s) + ", key overdue (" + days(s.KeyAge) + ")"
	}
	return healthState(s)
}

func healthState(s rediacc.MachineStatus) string {
	switch {
	case s.Draining != nil:
		return "draining"
	case !s.Healthy:
		return "unhealthy (see below)"
	case s.Busy:
		return "busy"
	case s.LastProbe.IsZero():
		return "unknown"
	}
	return "ok"
}

// registerHealthFlags adds the worker's health probing and busy-gate flags.
func registerHealthFlags(f *pflag.FlagSet, h *rediacc.HealthConfig) {
	durationFlag(f, &h.Interval, "health-interval", rediacc.DefaultHealthInterval, "no probes", false,
		"probe the machines' health this often (-1: never; busy judgements stored by other workers still hold tasks until they lapse)")
	f.Float64Var(&h.Thresholds.CPUPercent, "busy-cpu", rediacc.DefaultHealthCPUPercent, "a machine whose CPU average is above this % takes no new priority 3-5 work")
	f.Float64Var(&h.Thresholds.MemPercent, "busy-mem", rediacc.DefaultHealthMemPercent, "a machine whose memory average is above this % takes no new priority 3-5 work")
	f.Float64Var(&h.Hysteresis, "busy-hysteresis", rediacc.DefaultHealthHysteresis, "a busy machine is free again once its averages are this many points below the thresholds")
	durationFlag(f, &h.Smoothing, "health-smoothing", 0, "no smoothing", true,
		"time constant of the load averages (default twice --health-interval)")
	durationFlag(f, &h.MaxHold, "max-hold", rediacc.DefaultMaxHold, "no maximum", false,
		"longest a busy machine holds a task back (aging usually lets it through sooner)")
}
