package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"github.com/rediacc/rediacc"
)

// createMany submits spec to every machine of its team and selector
// (create task --all), then prints the ids, or with --wait follows the
// tasks with a progress bar and prints a per-machine result table.
func createMany(ctx context.Context, g *globals, cl *rediacc.Client, spec rediacc.TaskSpec, wait bool, output string) error {
	fs := rediacc.FanOutSpec{Team: spec.Team, Selector: spec.Selector, TaskSpec: spec}
	fs.TaskSpec.Team, fs.TaskSpec.Selector = "", nil
	ts, err := cl.FanOut(ctx, fs)
	if err != nil {
		return err
	}
	return finishMany(ctx, g, cl, ts, wait, output)
}

// finishMany prints queued tasks, or waits for them (progress, then a
// table or JSON). It fails when any task did not complete.
func finishMany(ctx context.Context, g *globals, cl *rediacc.Client, ts []*rediacc.Task, wait bool, output string) error {
	if !wait {
		if output == "json" {
			return writeJSON(g, ts)
		}
		for _, t := range ts {
			fmt.Fprintln(g.stdout, t.ID)
		}
		return nil
	}
	ids := make([]string, len(ts))
	for i, t := range ts {
		ids[i] = t.ID
	}
	if output != "json" {
		if err := progress(ctx, g, cl, ids); err != nil {
			return err
		}
	}
	done, err := cl.WaitAll(ctx, ids)
	if err != nil {
		return err
	}
	if output == "json" {
		if err := writeJSON(g, done); err != nil {
			return err
		}
	} else if err := resultTable(g.stdout, done); err != nil {
		return err
	}
	bad := 0
	for _, t := range done {
		if t.Status != rediacc.StatusCompleted {
			bad++
		}
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d tasks did not complete", bad, len(done))
	}
	return nil
}

// isTerminal reports whether w is a terminal of a known width (a progress
// bar needs both).
func isTerminal(w io.Writer) bool {
	f, ok := rawWriter(w).(*os.File)
	if !ok || !(isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())) {
		return false
	}
	width, _, err := term.GetSize(int(f.Fd()))
	return err == nil && width > 0
}

// tally counts tasks by outcome while they run.
type tally struct {
	total                                       int
	running, completed, failed, cancelled, seen int
	status                                      map[string]rediacc.Status
}

func (t *tally) add(ev rediacc.TaskEvent) (finished bool) {
	prev := t.status[ev.TaskID]
	if prev == "" {
		t.seen++
	}
	st := ev.Status
	if ev.Err != nil {
		st = rediacc.StatusFailed
	}
	t.status[ev.TaskID] = st
	if active(prev) {
		t.running--
	}
	switch {
	case active(st):
		t.running++
	case st == rediacc.StatusCompleted:
		t.completed++
	case st == rediacc.StatusFailed:
		t.failed++
	case st == rediacc.StatusCancelled:
		t.cancelled++
	}
	return st.Terminal() && !prev.Terminal()
}

func active(s rediacc.Status) bool {
	return s == rediacc.StatusAssigned || s == rediacc.StatusProcessing
}

func (t *tally) done() int { return t.completed + t.failed + t.cancelled }

func (t *tally) String() string {
	return fmt.Sprintf("%d/%d done (%d completed, %d failed, %d cancelled), %d running",
		t.done(), t.total, t.completed, t.failed, t.cancelled, t.running)
}

// progress follows the tasks (Watch) until all are finished: a progress
// bar on a terminal, plain "progress:" lines otherwise.
func progress(ctx context.Context, g *globals, cl *rediacc.Client, ids []string) error {
	events, err := cl.Watch(ctx, ids)
	if err != nil {
		return err
	}
	t := &tally{total: len(ids), status: map[string]rediacc.Status{}}
	if !isTerminal(g.stdout) {
		last := ""
		for ev := range events {
			t.add(ev)
			if s := t.String(); s != last && t.seen == t.total {
				fmt.Fprintf(g.stdout, "progress: %s\n", s)
				last = s
			}
		}
		return ctx.Err()
	}
	var running, failed atomic.Int64 // read by the bar's renderer
	p := mpb.NewWithContext(ctx, mpb.WithOutput(g.rawStdout), mpb.WithWidth(40), mpb.WithRefreshRate(100*time.Millisecond))
	bar := p.AddBar(int64(len(ids)),
		mpb.PrependDecorators(decor.Name("tasks "), decor.CountersNoUnit("%d/%d", decor.WCSyncWidth)),
		mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace),
			decor.Any(func(decor.Statistics) string {
				return fmt.Sprintf("  running %d  failed %d", running.Load(), failed.Load())
			})),
	)
	for ev := range events {
		finished := t.add(ev)
		running.Store(int64(t.running))
		failed.Store(int64(t.failed))
		if finished {
			bar.Increment()
		}
	}
	if ctx.Err() != nil {
		bar.Abort(false)
	}
	p.Wait()
	return ctx.Err()
}

// resultTable prints one line per task: machine, status, exit code,
// duration and the first line of its output.
func resultTable(w io.Writer, ts []*rediacc.Task) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MACHINE\tTASK ID\tSTATUS\tEXIT\tDURATION\tOUTPUT")
	for _, t := range ts {
		dur := "-"
		if !t.StartedAt.IsZero() && !t.CompletedAt.IsZero() {
			dur = t.CompletedAt.Sub(t.StartedAt).Round(time.Millisecond).String()
		}
		out := t.Stdout
		if out == "" {
			out = t.Stderr
		}
		if out == "" {
			out = t.Error
		}
		if i := bytes.IndexByte([]byte(out), '\n'); i >= 0 {
			out = out[:i]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.Machine, t.ID, t.Status, exitStr(t.ExitCode), dur, clip(out, 50))
	}
	return tw.Flush()
}

// readBatch reads tasks in the task JSON form, one per line (blank lines
// and lines starting with # are skipped), and returns the specs with the
// line number of each.
func readBatch(r io.Reader) ([]rediacc.TaskSpec, []int, error) {
	br := bufio.NewReader(r)
	var specs []rediacc.TaskSpec
	var lines []int
	n := 0
	for {
		raw, err := readLine(br, maxBatchLine)
		if err == io.EOF {
			break
		}
		n++
		if errors.Is(err, errLineTooLong) {
			return nil, nil, usagef("line %d is longer than %d KiB: no task fits in it (a task's command and environment make at most %d bytes of command line on the machine, rediacc.MaxCommandLineBytes)",
				n, maxBatchLine>>10, rediacc.MaxCommandLineBytes)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("line %d: %w", n, err)
		}
		line := bytes.TrimSpace(raw)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(line, &fields); err != nil {
			return nil, nil, usageError{fmt.Errorf("line %d: not a JSON object: %w", n, err)}
		}
		for k := range fields {
			if !batchFields[k] {
				return nil, nil, usagef("line %d: unknown field %s (task fields: taskId, machine, team, selector, command, priority, retryCount, retryDelay, retryBackoff, retryMultiplier, retryMaxDelay, retryJitter, retryOn, failureAction, timeout, env, secrets, idempotencyKey)", n, quoted(k))
			}
		}
		var t rediacc.Task
		if err := json.Unmarshal(line, &t); err != nil {
			return nil, nil, usageError{fmt.Errorf("line %d: %w", n, err)}
		}
		if t.Status != "" {
			return nil, nil, usagef("line %d: a task to create has no status", n)
		}
		spec := t.TaskSpec
		spec.Team = t.Team
		if spec.IdempotencyKey == "" {
			spec.IdempotencyKey = t.ID // re-running the file queues nothing twice
		}
		specs = append(specs, spec)
		lines = append(lines, n)
	}
	if len(specs) == 0 {
		return nil, nil, usagef("no task in the file")
	}
	return specs, lines, nil
}

// maxBatchLine bounds a line of a batch file: JSON escaping makes a task's
// text at most six times longer, so a longer line cannot hold a task within
// rediacc.MaxCommandLineBytes. The SDK checks each task's real limits.
const maxBatchLine = 8 * rediacc.MaxCommandLineBytes

var errLineTooLong = errors.New("line too long")

// readLine returns the next line (without its newline) of at most max
// bytes, io.EOF after the last one, or errLineTooLong without reading the
// rest of a longer line.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > max+1 || len(line) > max && (len(chunk) == 0 || chunk[len(chunk)-1] != '\n') {
			return nil, errLineTooLong
		}
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF && len(line) > 0:
			return line, nil
		default:
			return nil, err
		}
	}
}

func newCreateBatch(g *globals) *cobra.Command {
	var (
		file, output string
		wait         bool
	)
	c := &cobra.Command{
		Use:   "batch -f tasks.jsonl [--wait] [-o json]",
		Short: "Queue many tasks in one transaction (all or none) from a JSON Lines file",
		Long: `Queue many tasks in one transaction: all of them, or none.

The file (or - for stdin) holds one task per line in the task JSON form of
inspect queue -o json (without status; a taskId, if given, is the task's
idempotency key, so re-running the file queues nothing twice):

  {"machine": "web-01", "command": "systemctl reload nginx", "priority": 2}
  {"team": "prod", "selector": {"role": "web"}, "command": "df -h", "retryCount": 3, "retryDelay": 30, "failureAction": "alert"}

A task naming a team instead of a machine is placed on the team's least
loaded healthy machine. An error names the line of the first bad task.`,
		Args: exactArgs(0, ""),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			var r io.Reader = os.Stdin
			if file != "-" {
				f, err := os.Open(file)
				if err != nil {
					return usagef("-f: %v", err)
				}
				defer f.Close()
				r = f
			}
			specs, lines, err := readBatch(r)
			if err != nil {
				return err
			}
			return g.withClient(c, func(ctx context.Context, cl *rediacc.Client) error {
				ts, err := cl.SubmitBatch(ctx, specs)
				var be *rediacc.BatchError
				if errors.As(err, &be) && be.Index >= 0 && be.Index < len(lines) {
					return fmt.Errorf("line %d: %w (nothing was queued)", lines[be.Index], be.Err)
				}
				if err != nil {
					return err
				}
				return finishMany(c.Context(), g, cl, ts, wait, output)
			})
		},
	}
	f := c.Flags()
	f.StringVarP(&file, "file", "f", "", "JSON Lines file of tasks, - for stdin (required)")
	f.BoolVar(&wait, "wait", false, "follow the tasks (progress) until they finish, then print a result table")
	f.StringVarP(&output, "output", "o", "", "output format: ids (default) or json")
	_ = c.MarkFlagRequired("file")
	return c
}

// batchFields are the task JSON fields a batch line may set (a typo such as
// "priorty" is refused rather than silently ignored).
var batchFields = map[string]bool{
	"taskId": true, "machine": true, "team": true, "selector": true, "command": true, "priority": true,
	"retryCount": true, "retryDelay": true, "retryBackoff": true, "retryMultiplier": true, "retryMaxDelay": true,
	"retryJitter": true, "retryOn": true, "failureAction": true, "timeout": true, "env": true, "secrets": true,
	"idempotencyKey": true, "status": true,
}
