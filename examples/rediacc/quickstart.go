package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	gossh "golang.org/x/crypto/ssh"

	"github.com/rediacc/rediacc"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

func newQuickstart(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "quickstart",
		Short: "Run a demo end to end on an in-process SSH server (needs nothing installed)",
		Long: `quickstart starts an SSH server inside this process on 127.0.0.1 (it runs
commands with the local shell), generates its host key and a client key into
DATA-DIR/quickstart, records the host key in a known_hosts file there (so the
real client path runs with host-key verification on), registers it as machine
local-01, queues tasks at all five priorities plus one that fails once and is
retried, runs the worker, prints the results in the order they ran, and
ends by rotating local-01's SSH key (new key added to the server's
authorized_keys, checked, stored in the vault, old key removed and shown
refused) and running one more task with the new key.`,
		Args: exactArgs(0, ""),
		RunE: func(c *cobra.Command, args []string) error { return quickstart(c.Context(), g) },
	}
}

func quickstart(ctx context.Context, g *globals) error {
	dir := filepath.Join(g.dataDir, "quickstart")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// A fresh demo store each run: the server's port changes every time.
	// Everything of the previous demo goes, keys aside: its archive and
	// vault belong to the old store.
	for _, f := range []string{"rediacc.db", "rediacc.db-wal", "rediacc.db-shm", "rediacc.db-lock", "known_hosts", "flaky-marker", "archive", "vault", "vault.key", "home"} {
		if err := os.RemoveAll(filepath.Join(dir, f)); err != nil {
			return err
		}
	}
	hostKey, err := loadOrCreateKey(filepath.Join(dir, "ssh_host_ed25519_key"))
	if err != nil {
		return err
	}
	// One client key per machine, authorized in the server's
	// ~/.ssh/authorized_keys (a home of its own in DATA-DIR/quickstart/home,
	// read at every login as sshd does), so the key rotation at the end is
	// real: new key added, checked, stored, old key removed and refused.
	home := filepath.Join(dir, "home")
	if err := os.MkdirAll(filepath.Join(home, ".ssh"), 0o700); err != nil {
		return err
	}
	var authorized []byte
	keyPaths := map[string]string{}
	for _, name := range []string{"local-01", "local-02"} {
		keyPaths[name] = filepath.Join(dir, "id_ed25519_"+name)
		k, err := loadOrCreateKey(keyPaths[name])
		if err != nil {
			return err
		}
		authorized = append(authorized, gossh.MarshalAuthorizedKey(k.PublicKey())...)
	}
	if err := os.WriteFile(filepath.Join(home, ".ssh", "authorized_keys"), authorized, 0o600); err != nil {
		return err
	}
	if !quietSet(g) {
		g.logLevel = "error" // the demo's own output tells the story; --log-level shows the logs
	}
	log, err := g.logger()
	if err != nil {
		return err
	}
	srv, err := sshtest.Start(sshtest.Options{Addr: "127.0.0.1:0", HostKey: hostKey, Home: home, Logger: log})
	if err != nil {
		return fmt.Errorf("start the in-process SSH server: %w", err)
	}
	defer srv.Close()
	knownHosts := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(knownHosts, []byte(srv.KnownHostsLine()+"\n"), 0o600); err != nil {
		return err
	}
	host, portStr, _ := net.SplitHostPort(srv.Addr())
	port, _ := strconv.Atoi(portStr)
	fmt.Fprintf(g.stdout, "In-process SSH server on %s (host key recorded in %s)\n\n", srv.Addr(), knownHosts)

	cl, err := rediacc.New(ctx, rediacc.Config{DataDir: dir, Logger: log, Concurrency: 1, PollInterval: 50 * time.Millisecond,
		Health: rediacc.HealthConfig{Interval: -1}}) // the demo's machine is this host: its load says nothing
	if err != nil {
		return err
	}
	defer cl.Close()
	// Two teams, a machine in each (both on the in-process server), and a
	// dev operator who may not touch prod.
	actor, _ := rediacc.ActorFrom(ctx)
	for _, t := range []struct{ name, desc string }{{"dev", "development machines"}, {"prod", "production machines"}} {
		if _, err := cl.CreateTeam(ctx, t.name, t.desc); err != nil {
			return err
		}
	}
	for _, m := range []struct{ name, team string }{{"local-01", "dev"}, {"local-02", "prod"}} {
		if _, err := cl.AddMachine(ctx, rediacc.Machine{
			Name: m.name, Team: m.team, Host: host, Port: port, IdentityFile: keyPaths[m.name], ImportIdentity: true, KnownHostsFile: knownHosts,
		}); err != nil {
			return err
		}
	}
	if _, err := cl.SetMember(ctx, "dev", "bob", rediacc.RoleOperator); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "Teams dev (machine local-01) and prod (machine local-02); you (%s) own the store; bob is an operator of dev.\n", actor)
	bob := rediacc.WithActor(ctx, "bob")
	if _, err := cl.Submit(bob, rediacc.TaskSpec{Machine: "local-02", Command: "systemctl restart webserver"}); err != nil {
		fmt.Fprintf(g.stdout, "bob submits a task to prod: refused, as it should be:\n  %v\n\n", err)
	} else {
		return fmt.Errorf("bob was allowed to submit to prod")
	}
	marker := filepath.Join(dir, "flaky-marker")
	specs := []rediacc.TaskSpec{
		{Priority: rediacc.Minimal, Command: "echo archiving last month logs"},
		{Priority: rediacc.Low, Command: "echo cleaning temp files"},
		{Priority: rediacc.Normal, Command: "echo syncing reports"},
		{Priority: rediacc.High, Command: "echo deploying release 1.4.2"},
		{Priority: rediacc.Normal, Command: "if [ -e " + marker + " ]; then echo flaky job ok on retry; else touch " + marker + "; echo flaky job failed >&2; exit 3; fi",
			Retry: rediacc.RetryPolicy{RetryCount: 2, RetryDelay: 300 * time.Millisecond}},
		{Priority: rediacc.Critical, Command: `echo "backing up the database on $(uname -n)"`},
	}
	for _, s := range specs {
		s.Machine = "local-01"
		if _, err := cl.Submit(ctx, s); err != nil {
			return err
		}
	}
	if err := printDepth(ctx, g, cl, "Queue depth before the worker runs"); err != nil {
		return err
	}
	fmt.Fprintln(g.stdout, "\nRunning the worker (one task at a time, so the order shows the scheduling)…")
	if err := cl.RunUntilEmpty(ctx); err != nil {
		return err
	}
	tasks, err := cl.List(ctx, rediacc.ListFilter{})
	if err != nil {
		return err
	}
	slices.SortFunc(tasks, func(a, b *rediacc.Task) int { return a.StartedAt.Compare(b.StartedAt) })
	fmt.Fprintln(g.stdout, "\nResults, in the order they ran:")
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tPRIORITY\tSTATUS\tATTEMPTS\tEXIT\tOUTPUT\tTASK ID")
	for i, t := range tasks {
		out := t.Stdout
		if out == "" {
			out = t.Stderr
		}
		fmt.Fprintf(tw, "%d\t%d %s\t%s\t%d\t%s\t%s\t%s\n", i+1, t.Priority, t.Priority, t.Status, t.Attempts, exitStr(t.ExitCode), clip(out, 44), t.ID)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(g.stdout)
	if err := printDepth(ctx, g, cl, "Queue depth after"); err != nil {
		return err
	}
	if err := quickstartRotation(ctx, g, cl, home); err != nil {
		return err
	}
	n, err := cl.VerifyAudit(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "Audit trail: %d records, hash chain verified intact.\n", n)
	fmt.Fprintf(g.stdout, "\nExplore: go run ./examples/rediacc --data-dir %s list queue\n", dir)
	fmt.Fprintf(g.stdout, "         go run ./examples/rediacc --data-dir %s list audit-logs\n", dir)
	return nil
}

func printDepth(ctx context.Context, g *globals, cl *rediacc.Client, title string) error {
	depth, err := cl.QueueDepth(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "%s (pending tasks by priority):", title)
	for p := rediacc.Critical; p <= rediacc.Minimal; p++ {
		fmt.Fprintf(g.stdout, "  %d=%d", p, depth[p])
	}
	fmt.Fprintln(g.stdout)
	return nil
}

// loadOrCreateKey reads an OpenSSH ed25519 private key, generating it (0600)
// when missing.
func loadOrCreateKey(path string) (gossh.Signer, error) {
	if b, err := os.ReadFile(path); err == nil {
		s, err := gossh.ParsePrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("key file %s is not a private key (delete it to regenerate): %w", path, err)
		}
		return s, nil
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := gossh.MarshalPrivateKey(priv, "rediacc quickstart")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	return gossh.NewSignerFromKey(priv)
}

// quietSet reports whether the user chose a log level for the quickstart.
func quietSet(g *globals) bool { return g.logLevelSet }

// quickstartRotation rotates local-01's SSH key on the in-process server
// and runs a task with the new key.
func quickstartRotation(ctx context.Context, g *globals, cl *rediacc.Client, home string) error {
	fmt.Fprintln(g.stdout, "\nRotating local-01's SSH key (verify before revoke)…")
	res, err := cl.RotateKey(ctx, rediacc.KeyRotationOptions{Machine: "local-01"})
	if err != nil {
		return err
	}
	r := res[0]
	fmt.Fprintf(g.stdout, "  %s -> %s: new key added, a login with it alone checked, stored in team dev's vault,\n", r.From, r.To)
	fmt.Fprintf(g.stdout, "  old key removed from %s and refused on a fresh login.\n", filepath.Join(home, ".ssh", "authorized_keys"))
	t, err := cl.Submit(ctx, rediacc.TaskSpec{Machine: "local-01", Command: "echo hello with the new key"})
	if err != nil {
		return err
	}
	if err := cl.RunUntilEmpty(ctx); err != nil {
		return err
	}
	done, err := cl.Wait(ctx, t.ID)
	if err != nil {
		return err
	}
	if done.Status != rediacc.StatusCompleted {
		return fmt.Errorf("the task after the rotation %s: %s", done.Status, done.Error)
	}
	fmt.Fprintf(g.stdout, "  a task after the rotation: %s %s", done.Status, done.Stdout)
	ks, err := cl.Keys(ctx, rediacc.KeyFilter{Team: "dev"})
	if err != nil {
		return err
	}
	for _, k := range ks {
		fmt.Fprintf(g.stdout, "  key inventory (team dev): %s %s, used by %v, rotated %s\n\n", k.Type, k.Fingerprint, k.Machines, k.RotatedAt.Local().Format(time.TimeOnly))
	}
	return nil
}
