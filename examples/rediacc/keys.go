package main

// SSH key inventory and rotation: `machine keys`, `machine rotate-key`,
// and the --max-key-age flag of the commands that show key ages.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/rediacc/rediacc"
)

// maxKeyAge is the --max-key-age flag: a duration that also takes days
// ("90d").
type maxKeyAge struct{ d time.Duration }

func (m *maxKeyAge) String() string {
	if m.d == 0 {
		return "0"
	}
	if m.d%(24*time.Hour) == 0 {
		return strconv.Itoa(int(m.d/(24*time.Hour))) + "d"
	}
	return m.d.String()
}

func (m *maxKeyAge) Set(s string) error {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 {
			return fmt.Errorf("%s is not a number of days", quoted(s))
		}
		m.d = time.Duration(n) * 24 * time.Hour
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return fmt.Errorf("%s: use days (90d) or a duration (2160h)", quoted(s))
	}
	m.d = d
	return nil
}

func (m *maxKeyAge) Type() string { return "age" }

func registerMaxKeyAge(f *pflag.FlagSet, m *maxKeyAge) {
	f.Var(m, "max-key-age", "SSH keys older than this are overdue (e.g. 90d; 0: no limit)")
}

// keyClient opens the client with the key rotation policy's maximum age.
func (g *globals) keyClient(c *cobra.Command, age maxKeyAge, fn func(ctx context.Context, cl *rediacc.Client) error) error {
	cl, err := g.client(c.Context(), func(cfg *rediacc.Config) { cfg.KeyRotation.MaxAge = age.d })
	if err != nil {
		return err
	}
	defer cl.Close()
	return fn(c.Context(), cl)
}

func newMachineKeys(g *globals) *cobra.Command {
	var (
		team, output string
		age          maxKeyAge
	)
	c := &cobra.Command{
		Use:   "keys [--team T] [--max-key-age 90d] [-o json]",
		Short: "List the SSH keys machines log in with: type, fingerprint, age, machines",
		Long: `List the SSH key inventory: each key machines log in with (keys in the
team vault, identity files, the ssh-agent), its type and SHA256
fingerprint, when it was made or imported and last rotated, its age, the
machines that use it, and an unfinished rotation. Machines of a team that
share a key share a line. No key material is shown.

With --max-key-age (90d is a common policy) keys older than that are
marked OVERDUE.`,
		Args: exactArgs(0, ""),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return g.keyClient(c, age, func(ctx context.Context, cl *rediacc.Client) error {
				ks, err := cl.Keys(ctx, rediacc.KeyFilter{Team: team})
				if err != nil {
					return err
				}
				if output == "json" {
					if ks == nil {
						ks = []rediacc.SSHKey{}
					}
					return writeJSON(g, ks)
				}
				return keysTable(g.stdout, ks)
			})
		},
	}
	f := c.Flags()
	f.StringVar(&team, "team", "", "only this team's keys")
	registerMaxKeyAge(f, &age)
	f.StringVarP(&output, "output", "o", "", "output format: table or json")
	return c
}

func keysTable(w io.Writer, ks []rediacc.SSHKey) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TEAM\tTYPE\tFINGERPRINT\tSOURCE\tAGE\tROTATED\tMACHINES\tSTATE")
	for _, k := range ks {
		typ, fp := k.Type, k.Fingerprint
		if k.Source == rediacc.KeyBySSHCA {
			typ, fp = "-", "(a certificate per connection)"
		} else if k.Source == rediacc.KeyInAgent {
			typ = "-"
			if fp == "" {
				fp = "(any ssh-agent key)"
			}
		} else if k.Bits > 0 {
			typ = fmt.Sprintf("%s %d", strings.TrimPrefix(typ, "ssh-"), k.Bits)
		}
		rotated := "never"
		if !k.RotatedAt.IsZero() {
			rotated = k.RotatedAt.Local().Format(time.DateOnly)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.Team, typ, fp, k.Source, days(k.Age), rotated,
			strings.Join(k.Machines, ","), keyState(k))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, k := range ks {
		if r := k.Rotation; r != nil {
			fmt.Fprintf(w, "key %s: rotation to %s unfinished (resume: rediacc machine rotate-key %s --resume):\n", k.Fingerprint, r.To, k.Machines[0])
			for _, m := range r.Machines {
				line := "  " + m.Machine + ": " + m.State
				if m.Error != "" {
					line += " at " + m.Step + ": " + printable(m.Error)
				}
				fmt.Fprintln(w, line)
			}
		}
	}
	return nil
}

func keyState(k rediacc.SSHKey) string {
	switch {
	case k.Rotation != nil:
		return "rotation unfinished (see below)"
	case k.Overdue:
		return "OVERDUE"
	}
	return "ok"
}

// days renders a key age: "3h", "12d".
func days(d time.Duration) string {
	if d < 24*time.Hour {
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

func newMachineRotateKey(g *globals) *cobra.Command {
	var (
		o      rediacc.KeyRotationOptions
		queue  bool
		output string
	)
	c := &cobra.Command{
		Use:   "rotate-key NAME | --team T --all [--dry-run] [--resume] [--rollback] [--type ed25519|rsa [--bits 4096]] [--queue]",
		Short: "Rotate the SSH key a machine logs in with, on every machine that shares it",
		Long: `Rotate an SSH key without ever locking rediacc out:

  1. a new key is made in memory (ed25519; --type rsa --bits 4096 for old hosts);
  2. over the current key it is added to each machine's ~/.ssh/authorized_keys
     (atomically; every other line, the mode and the owner are kept; the line
     is marked "rediacc key=… machine=… added=DATE");
  3. a new connection offering only the new key logs in; only then is the key
     stored in the team vault (the previous version stays for --rollback);
  4. once every machine took it, the old key's lines are removed and a fresh
     connection with the old key is shown to be refused.

A key shared by several machines is rotated on all of them; machines that
fail keep both keys and are listed with the cause: --resume finishes the
rotation later, --rollback restores the previous key while it still logs
in. --dry-run checks every machine and changes nothing. --queue queues the
rotation as a task (priority 4) for a worker instead of running it here.
Exit status 1 when a machine failed (the table says which and why).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if len(args) == 1 {
				o.Machine = args[0]
			}
			if (o.Machine != "") == o.All {
				return usagef("name a machine, or --team T --all (see --help)")
			}
			if queue && (o.DryRun || o.Resume || o.Rollback) {
				return usagef("--queue takes no --dry-run, --resume or --rollback: the worker resumes what is unfinished")
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				if queue {
					ts, err := cl.SubmitKeyRotation(ctx, o)
					if err != nil {
						return err
					}
					for _, t := range ts {
						fmt.Fprintf(g.stdout, "%s\t%s\n", t.ID, t.Command)
					}
					return nil
				}
				stop := rotationProgress(ctx, g, &o, output == "json")
				res, err := cl.RotateKey(ctx, o)
				stop()
				if output == "json" {
					if res == nil {
						res = []rediacc.KeyRotationResult{}
					}
					if werr := writeJSON(g, res); werr != nil {
						return werr
					}
				} else if terr := rotationTable(g.stdout, res); terr != nil {
					return terr
				}
				var ke *rediacc.KeyRotationError
				if errors.As(err, &ke) && output != "json" {
					failed := 0
					for _, r := range ke.Results {
						for _, m := range r.Machines {
							if m.State == rediacc.KeyStateFailed {
								failed++
							}
						}
					}
					return fmt.Errorf("%w: %d machine(s) failed (see the table above); each keeps a key that logs in", rediacc.ErrKeyRotationIncomplete, failed)
				}
				return err
			})
		},
	}
	f := c.Flags()
	f.StringVar(&o.Team, "team", "", "the team (with --all: every key of it)")
	f.BoolVar(&o.All, "all", false, "rotate every key of --team")
	f.BoolVar(&o.DryRun, "dry-run", false, "check every machine, change nothing")
	f.BoolVar(&o.Resume, "resume", false, "finish an unfinished rotation")
	f.BoolVar(&o.Rollback, "rollback", false, "make the previous key current again (while it still logs in everywhere)")
	f.StringVar(&o.Type, "type", "", "new key type: ed25519 (default) or rsa")
	f.IntVar(&o.Bits, "bits", 0, "RSA key size (default 4096)")
	f.BoolVar(&queue, "queue", false, "queue the rotation as a task for a worker (priority 4)")
	f.StringVarP(&output, "output", "o", "", "output format: table or json")
	return c
}

// rotationProgress shows a progress bar of the rotation's machine steps on
// a terminal (nothing otherwise) and returns its stop.
func rotationProgress(ctx context.Context, g *globals, o *rediacc.KeyRotationOptions, quiet bool) (stop func()) {
	if quiet || !isTerminal(g.stdout) {
		return func() {}
	}
	p := mpb.NewWithContext(ctx, mpb.WithOutput(g.rawStdout), mpb.WithWidth(40), mpb.WithRefreshRate(100*time.Millisecond))
	var (
		bar   *mpb.Bar
		step  atomic.Value
		total int
	)
	step.Store("")
	o.Progress = func(ev rediacc.KeyRotationEvent) {
		if ev.Total > 0 && ev.Total != total {
			if bar != nil {
				bar.SetTotal(-1, true)
			}
			total = ev.Total
			bar = p.AddBar(int64(ev.Total),
				mpb.PrependDecorators(decor.Name("rotating "+clip(ev.Key, 20)+" "), decor.CountersNoUnit("%d/%d", decor.WCSyncWidth)),
				mpb.AppendDecorators(decor.Any(func(decor.Statistics) string { return "  " + step.Load().(string) })))
		}
		what := ev.Step
		if ev.Machine != "" {
			what = ev.Machine + " " + ev.Step
		}
		if ev.Err != nil {
			what += " failed"
		}
		step.Store(what)
		if bar != nil && ev.Machine != "" {
			bar.SetCurrent(int64(min(ev.Done, ev.Total)))
		}
	}
	return func() {
		if bar != nil {
			bar.SetTotal(-1, true)
		}
		p.Wait()
	}
}

// rotationTable prints what a rotation did, machine by machine.
func rotationTable(w io.Writer, res []rediacc.KeyRotationResult) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TEAM\tKEY\tACTION\tMACHINE\tSTATE\tDETAIL")
	for _, r := range res {
		key := r.From
		if r.To != "" {
			key += " -> " + r.To
		}
		if len(r.Machines) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t%s\n", r.Team, key, r.Action, printable(r.Note))
		}
		for _, m := range r.Machines {
			detail := m.Note
			if m.Error != "" {
				detail = "at " + m.Step + ": " + m.Error
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Team, key, r.Action, m.Machine, m.State, printable(clip(detail, 300)))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range res {
		if r.Note != "" && len(r.Machines) > 0 {
			fmt.Fprintf(w, "key %s: %s\n", r.From, printable(r.Note))
		}
	}
	return nil
}
