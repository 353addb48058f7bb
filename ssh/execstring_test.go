package ssh_test

import (
	"context"
	"errors"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/rediacc/rediacc/ssh"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// ExecString is what Pool.Run sends (with and without a RunID and
// secrets), the secret values never in it; an invalid command fails it as
// it fails Run, with ErrInvalidCommand.
func TestExecString(t *testing.T) {
	var mu sync.Mutex
	var sent []string
	defer ssh.SetExecHook(func(remote string) { mu.Lock(); sent = append(sent, remote); mu.Unlock() })()
	srv := sshtest.NewServer(t, sshtest.Options{})
	tg := inprocTarget(t, "inproc", srv)
	p := newPool(t, ssh.Config{})
	const value = "s3cr3t-value-9f2c"
	for _, cmd := range []ssh.Command{
		{Cmd: "echo hi"},
		{Cmd: "echo hi", RunID: "run-1"},
		{Cmd: "echo \"$TOKEN\" | wc -c", RunID: "run-2", Secrets: map[string][]byte{"TOKEN": []byte(value)}},
	} {
		want, err := ssh.ExecString(cmd)
		if err != nil {
			t.Fatalf("ExecString(%+v): %v", cmd, err)
		}
		if strings.Contains(want, value) {
			t.Fatalf("the exec string holds the secret value: %q", want)
		}
		mu.Lock()
		sent = nil
		mu.Unlock()
		if _, err := p.Run(context.Background(), tg, cmd); err != nil {
			t.Fatalf("Run(%+v): %v", cmd, err)
		}
		mu.Lock()
		got := append([]string(nil), sent...)
		mu.Unlock()
		// The secrets' end line is random; the pool may prepend its own
		// upkeep (released markers' removal, the daily sweep).
		end := regexp.MustCompile(`rediacc-secrets-end-[0-9a-f]{32}`)
		if len(got) != 1 || !strings.HasSuffix(end.ReplaceAllString(got[0], "END"), end.ReplaceAllString(want, "END")) {
			t.Fatalf("Run sent %q, ExecString gave %q", got, want)
		}
	}
	for _, bad := range []ssh.Command{{Cmd: ""}, {Cmd: "true", RunID: "../x"}, {Cmd: "true", Env: map[string]string{"A B": "1"}}} {
		if _, err := ssh.ExecString(bad); !errors.Is(err, ssh.ErrInvalidCommand) {
			t.Errorf("ExecString(%+v): %v, want ErrInvalidCommand", bad, err)
		}
	}
}

// A Cmd or Env over MaxCommandLineBytes is refused before it is quoted
// (a Cmd of quotes grows fourfold when quoted: 256 MiB took 29 s and 3.5
// GiB to be refused); the error says so, with sizes.
func TestExecStringRefusesLargeBeforeQuoting(t *testing.T) {
	for _, cmd := range []ssh.Command{
		{Cmd: strings.Repeat("'", 16<<20)},
		{Cmd: "true", Env: map[string]string{"BIG": strings.Repeat("'", 16<<20)}},
	} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := ssh.ExecString(cmd)
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ssh.ErrInvalidCommand) || !strings.Contains(err.Error(), "before shell quoting") || len(err.Error()) > 400 {
			t.Fatalf("%d-byte command: %v, want ErrInvalidCommand, refused before quoting", len(cmd.Cmd), err)
		}
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
			t.Errorf("refusing a %d-byte command allocated %d bytes: it was quoted first", len(cmd.Cmd)+len(cmd.Env["BIG"]), grew)
		}
	}
}

// CommandLineSize of a Cmd over the limit before quoting is that raw size
// (over MaxCommandLineBytes either way), without quoting it.
func TestCommandLineSizeOversized(t *testing.T) {
	cmd := ssh.Command{Cmd: strings.Repeat("'", ssh.MaxCommandLineBytes+1)}
	n, err := ssh.CommandLineSize(cmd)
	if err != nil || n != ssh.MaxCommandLineBytes+1 {
		t.Fatalf("CommandLineSize = %d, %v; want %d, nil", n, err, ssh.MaxCommandLineBytes+1)
	}
	cmd.Cmd = strings.Repeat("'", ssh.MaxCommandLineBytes/4)
	if n, err := ssh.CommandLineSize(cmd); err != nil || n <= ssh.MaxCommandLineBytes {
		t.Fatalf("CommandLineSize of %d quotes = %d, %v; want over MaxCommandLineBytes after quoting", len(cmd.Cmd), n, err)
	}
}
