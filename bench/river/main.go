// Command river-bench measures River's queue throughput (insert + work +
// complete, with a worker that does nothing) on a PostgreSQL server, so
// that rediacc's PostgreSQL store can be compared with it on the same
// server in the same run (rediacc's BenchmarkPostgresQueue runs this
// program; docs/BENCHMARKS.md has the figures).
//
// It is a module of its own (bench/river/go.mod), so River never enters the
// SDK's dependencies.
//
//	go run . -dsn postgres://user@127.0.0.1/db -jobs 5000 -workers 4
//
// The program creates a schema of its own, migrates River's tables into it
// (rivermigrate), starts -workers worker processes (this program again,
// each a River client with -concurrency workers for the default queue),
// waits until they run, then inserts -jobs jobs one by one from -inserters
// goroutines (one transaction each, as rediacc's Submit) and stops the
// clock when the last job is completed. It prints one JSON line:
//
//	{"system":"river","version":"v0.51.2","workers":4,"concurrency":16,"fetchCooldown":"0s","jobs":5000,"seconds":1.9,"jobsPerSecond":2600}
//
// and drops its schema.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// riverVersion is the River release in go.mod.
const riverVersion = "v0.51.2"

// NoopArgs is the job: nothing to do.
type NoopArgs struct {
	N int `json:"n"`
}

// Kind names the job kind.
func (NoopArgs) Kind() string { return "noop" }

// NoopWorker completes every job at once.
type NoopWorker struct {
	river.WorkerDefaults[NoopArgs]
}

// Work does nothing.
func (NoopWorker) Work(context.Context, *river.Job[NoopArgs]) error { return nil }

type result struct {
	System        string  `json:"system"`
	Version       string  `json:"version"`
	Workers       int     `json:"workers"`
	Concurrency   int     `json:"concurrency"`
	FetchCooldown string  `json:"fetchCooldown"`
	Jobs          int     `json:"jobs"`
	Seconds       float64 `json:"seconds"`
	JobsPerSecond float64 `json:"jobsPerSecond"`
}

func main() {
	dsn := flag.String("dsn", os.Getenv("REDIACC_TEST_PG_DSN"), "PostgreSQL DSN (URL form)")
	jobs := flag.Int("jobs", 5000, "jobs to insert and work")
	workers := flag.Int("workers", 1, "worker processes")
	conc := flag.Int("concurrency", 16, "MaxWorkers of each worker process")
	inserters := flag.Int("inserters", 8, "goroutines inserting jobs one by one")
	cooldown := flag.Duration("fetch-cooldown", 0, "River's FetchCooldown of the workers (0: River's default, 100ms)")
	role := flag.String("role", "bench", "bench, or worker (internal)")
	flag.Parse()
	if *dsn == "" {
		fmt.Fprintln(os.Stderr, "river-bench: no -dsn (or REDIACC_TEST_PG_DSN)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var err error
	switch *role {
	case "worker":
		err = work(ctx, *dsn, *conc, *cooldown)
	default:
		var r result
		r, err = bench(ctx, *dsn, *jobs, *workers, *conc, *inserters, *cooldown)
		if err == nil {
			_ = json.NewEncoder(os.Stdout).Encode(r)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "river-bench:", err)
		os.Exit(1)
	}
}

// withSearchPath returns dsn with search_path set to schema.
func withSearchPath(dsn, schema string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("-dsn must be a postgres:// URL")
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func bench(ctx context.Context, dsn string, jobs, workers, conc, inserters int, cooldown time.Duration) (result, error) {
	r := result{System: "river", Version: riverVersion, Workers: workers, Concurrency: conc, Jobs: jobs, FetchCooldown: cooldown.String()}
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "river_bench_" + hex.EncodeToString(b[:])
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return r, err
	}
	defer admin.Close(context.WithoutCancel(ctx))
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		return r, err
	}
	defer admin.Exec(context.WithoutCancel(ctx), "DROP SCHEMA "+schema+" CASCADE") //nolint:errcheck
	sdsn, err := withSearchPath(dsn, schema)
	if err != nil {
		return r, err
	}
	pool, err := pgxpool.New(ctx, sdsn)
	if err != nil {
		return r, err
	}
	defer pool.Close()
	mig, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: schema})
	if err != nil {
		return r, err
	}
	if _, err := mig.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return r, fmt.Errorf("migrating River's tables: %w", err)
	}

	// Worker processes; each says "ready" once its client runs.
	self, err := os.Executable()
	if err != nil {
		return r, err
	}
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
		for _, p := range procs {
			_ = p.Wait()
		}
	}()
	ready := make(chan error, workers)
	for range workers {
		cmd := exec.Command(self, "-role", "worker", "-dsn", sdsn, "-concurrency", fmt.Sprint(conc), "-fetch-cooldown", cooldown.String())
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			return r, err
		}
		if err := cmd.Start(); err != nil {
			return r, err
		}
		procs = append(procs, cmd)
		go func() {
			line, err := bufio.NewReader(out).ReadString('\n')
			if err == nil && strings.TrimSpace(line) != "ready" {
				err = fmt.Errorf("worker said %q", line)
			}
			ready <- err
			_, _ = io.Copy(io.Discard, out)
		}()
	}
	for range workers {
		select {
		case err := <-ready:
			if err != nil {
				return r, fmt.Errorf("worker process: %w", err)
			}
		case <-time.After(2 * time.Minute):
			return r, errors.New("worker processes did not start within 2 minutes")
		case <-ctx.Done():
			return r, ctx.Err()
		}
	}

	// An insert-only client (no queues: it works no job).
	ins, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Schema: schema, Logger: quiet()})
	if err != nil {
		return r, err
	}
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, inserters)
	for range inserters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := int(next.Add(1))
				if n > jobs {
					return
				}
				if _, err := ins.Insert(ctx, NoopArgs{N: n}, nil); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return r, fmt.Errorf("insert: %w", err)
	}
	for {
		var done int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE state = 'completed'`).Scan(&done); err != nil {
			return r, err
		}
		if done >= jobs {
			break
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Since(start) > 30*time.Minute {
			return r, fmt.Errorf("only %d of %d jobs completed after 30 minutes", done, jobs)
		}
	}
	r.Seconds = time.Since(start).Seconds()
	r.JobsPerSecond = float64(jobs) / r.Seconds
	return r, nil
}

// work runs a River client with a no-op worker until ctx ends.
func work(ctx context.Context, dsn string, conc int, cooldown time.Duration) error {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return err
	}
	defer pool.Close()
	workers := river.NewWorkers()
	river.AddWorker(workers, &NoopWorker{})
	var schema string
	if err := pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return err
	}
	c, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Schema:        schema,
		Logger:        quiet(),
		FetchCooldown: cooldown,
		Queues:        map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: conc}},
		Workers:       workers,
	})
	if err != nil {
		return err
	}
	if err := c.Start(ctx); err != nil {
		return err
	}
	fmt.Println("ready")
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.Stop(sctx)
}

func quiet() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
