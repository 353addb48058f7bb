package rediacc_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/internal/store/postgres/pgtest"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// crashChildEnv, when set to a data dir, makes the test binary run a worker
// on that store forever (until killed); crashChildStoreEnv, when set, names
// the SQLite file of its store (default: in the data dir).
const (
	crashChildEnv      = "REDIACC_CRASH_CHILD_DIR"
	crashChildStoreEnv = "REDIACC_CRASH_CHILD_STORE"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(rotateChildDirEnv); dir != "" {
		rotationChild(dir) // rotation_failure_test.go
	}
	if dir := os.Getenv(crashChildEnv); dir != "" {
		log := testLogger(nil)
		if os.Getenv("REDIACC_TEST_LOG") == "1" {
			log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("pid", os.Getpid())
		}
		cfg := rediacc.Config{DataDir: dir, Logger: log, PollInterval: 20 * time.Millisecond, LeaseDuration: time.Minute}
		if path := os.Getenv(crashChildStoreEnv); path != "" {
			st, err := rediacc.OpenSQLite(asOwner(), path)
			if err != nil {
				fmt.Fprintln(os.Stderr, "child:", err)
				os.Exit(2)
			}
			cfg.Store = st
		}
		c, err := rediacc.New(asOwner(), cfg)
		if err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(2)
		}
		_ = c.Run(asOwner())
		os.Exit(0)
	}
	if spec := os.Getenv(pgChildEnv); spec != "" {
		os.Exit(runPGChild(spec)) // cluster_test.go
	}
	goleak.VerifyTestMain(stopPG{m})
}

// stopPG stops the private PostgreSQL server of the tests, if one was
// started, after the tests ran.
type stopPG struct{ m *testing.M }

func (s stopPG) Run() int {
	code := s.m.Run()
	pgtest.Stop()
	return code
}

// A worker killed with SIGKILL while tasks run: a new worker finishes every
// task; none lost, none stuck in PROCESSING, none completed twice, and the
// crash used up no attempt.
func TestCrashRecoveryAfterSIGKILL(t *testing.T) {
	dir := t.TempDir()
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 4})
	ctx := asOwner()
	// The lease (one minute) is far longer than the test: rescue must come
	// from noticing that the dead worker's process is gone.
	c, err := rediacc.New(ctx, rediacc.Config{DataDir: dir, Logger: testLogger(t), PollInterval: 20 * time.Millisecond, LeaseDuration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.AddMachine(ctx, rediacc.Machine{Name: "m1", Host: srv.Host, Port: srv.Port, User: srv.User,
		IdentityFile: srv.ClientKeyPath, KnownHostsFile: srv.KnownHostsPath}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := 0; i < 12; i++ {
		task := submit(t, c, rediacc.TaskSpec{Machine: "m1", Command: fmt.Sprintf("sleep 1; echo task-%d", i)})
		ids = append(ids, task.ID)
	}
	child := startChild(t, dir, "")
	waitListed(ctx, t, c, 4, 30*time.Second, "the child worker never ran tasks", rediacc.StatusProcessing)
	killChild(t, child)
	stuck, _ := c.List(ctx, rediacc.ListFilter{Statuses: []rediacc.Status{rediacc.StatusProcessing, rediacc.StatusAssigned}})
	t.Logf("killed the worker with %d tasks assigned or running", len(stuck))

	runCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := c.RunUntilEmpty(runCtx); err != nil {
		t.Fatal(err)
	}
	interrupted := 0
	for i, id := range ids {
		got := get(t, c, id)
		succeeded := 0
		for _, a := range got.History {
			switch a.Outcome {
			case "succeeded":
				succeeded++
			case "interrupted":
				interrupted++
			}
		}
		if got.Status != rediacc.StatusCompleted || got.Stdout != fmt.Sprintf("task-%d\n", i) || succeeded != 1 || got.Attempts != 1 {
			t.Errorf("task %d: status %s attempts %d succeeded %d history %+v", i, got.Status, got.Attempts, succeeded, got.History)
		}
	}
	if interrupted == 0 {
		t.Errorf("no attempt was recorded as interrupted although the worker was killed mid-run")
	}
}
