package ssh_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rediacc/rediacc/ssh"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// Secrets tests: values reach the command intact through stdin and never
// appear on a command line, here or on the server (both on this machine).

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// trickyValues returns secret values that break naive quoting or line
// reading. touchPath must not be created by any of them.
func trickyValues(touchPath string) map[string]string {
	printable := make([]byte, 64<<10)
	for i := range printable {
		printable[i] = byte(0x20 + mrand.IntN(0x7f-0x20))
	}
	endLike := "rediacc-secrets-end-" + randomHex(16)
	return map[string]string{
		"single quotes":       `it's 'quoted' ''`,
		"double quotes":       `say "hi" "" "`,
		"backslashes":         `C:\new\table \\ \' \" \`,
		"substitutions":       "$(touch " + touchPath + ") `touch " + touchPath + "` ${HOME} $$ $1",
		"newlines":            "line 1\nline 2\n\nline 4",
		"trailing newline":    "ends with a newline\n",
		"only newlines":       "\n\n",
		"leading dashes":      "--help -n -e -",
		"looks like the end":  endLike,
		"end-like lines":      "x\n" + endLike + "\nrediacc-secrets-end-\n'\nexport EVIL=1\n",
		"64 KiB printable":    string(printable),
		"empty":               "",
		"non-UTF-8 and ctrls": "\xff\xfe caf\xc3\xa9 \x01\x7f\r\t\x1b[0m",
	}
}

// testSecretValues: `printf %s "$DB_PASSWORD"` prints each value exactly,
// and a command substitution in a value never runs.
func testSecretValues(t *testing.T, p *ssh.Pool, tg ssh.Target) {
	touch := filepath.Join(os.TempDir(), "rediacc-secret-touched-"+randomHex(8))
	t.Cleanup(func() { os.Remove(touch) })
	for name, v := range trickyValues(touch) {
		t.Run(name, func(t *testing.T) {
			res, err := p.Run(context.Background(), tg, ssh.Command{
				Cmd:     `printf %s "$DB_PASSWORD"`,
				Secrets: map[string][]byte{"DB_PASSWORD": []byte(v)},
			})
			if err != nil {
				t.Fatalf("err = %v (stderr %q)", err, res.Stderr)
			}
			if string(res.Stdout) != v {
				t.Errorf("stdout (%d bytes) != value (%d bytes):\n%q\nwant\n%q", len(res.Stdout), len(v), head(res.Stdout), head([]byte(v)))
			}
			if len(res.Stderr) != 0 {
				t.Errorf("stderr = %q", res.Stderr)
			}
		})
	}
	t.Run("several secrets and Env", func(t *testing.T) {
		res, err := p.Run(context.Background(), tg, ssh.Command{
			Cmd:     `printf '%s|%s|%s|%s' "$A" "$B" "$E" "${_rediacc_b-unset}"`,
			Env:     map[string]string{"E": "env value"},
			Secrets: map[string][]byte{"A": []byte("a'\n"), "B": []byte("$B")},
		})
		if err != nil || string(res.Stdout) != "a'\n|$B|env value|unset" {
			t.Fatalf("err %v, stdout %q", err, res.Stdout)
		}
	})
	if _, err := os.Stat(touch); err == nil {
		t.Fatal("a command substitution inside a secret value was executed")
	}
}

func head(b []byte) []byte {
	if len(b) > 200 {
		return b[:200]
	}
	return b
}

// procScan reads every /proc/*/cmdline on this machine in a loop and keeps
// the command lines that contain one of its patterns.
type procScan struct {
	patterns [][]byte
	stop     chan struct{}
	done     chan struct{}
	mu       sync.Mutex
	hits     map[string]bool
	rounds   int
}

func startProcScan(patterns ...string) *procScan {
	s := &procScan{stop: make(chan struct{}), done: make(chan struct{}), hits: map[string]bool{}}
	for _, p := range patterns {
		s.patterns = append(s.patterns, []byte(p))
	}
	go func() {
		defer close(s.done)
		for {
			s.scan()
			select {
			case <-s.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	return s
}

func (s *procScan) scan() {
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil || len(b) == 0 {
			continue // gone, or a kernel thread
		}
		for _, pat := range s.patterns {
			if bytes.Contains(b, pat) {
				s.mu.Lock()
				s.hits[filepath.Base(filepath.Dir(path))+": "+string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))] = true
				s.mu.Unlock()
			}
		}
	}
	s.mu.Lock()
	s.rounds++
	s.mu.Unlock()
}

// Stop ends the scan and returns the matching command lines and the number
// of full scans done.
func (s *procScan) Stop() ([]string, int) {
	close(s.stop)
	<-s.done
	var out []string
	for h := range s.hits {
		out = append(out, h)
	}
	return out, s.rounds
}

// testSecretsCanary runs `sleep 2; echo done` with a canary secret while
// every process command line on this machine (client, in-process server or
// sshd, and the remote shell: all local) is scanned, and checks that the
// canary is in none of them, nor in any exec string sent. As a control, the
// scan must see the remote shell's command line (it holds the end line).
// serverLog, when not nil, returns the server's log, which must not hold
// the canary either.
func testSecretsCanary(t *testing.T, p *ssh.Pool, tg ssh.Target, serverLog func() string) {
	canary := "rediacc-canary-" + randomHex(16)
	var mu sync.Mutex
	var execs []string
	restore := ssh.SetExecHook(func(remote string) {
		mu.Lock()
		execs = append(execs, remote)
		mu.Unlock()
	})
	defer restore()
	scan := startProcScan(canary, "rediacc-secrets-end-")
	var psOut []byte
	psDone := make(chan struct{})
	go func() {
		defer close(psDone)
		time.Sleep(time.Second) // mid-run: the remote shell is waiting for sleep
		if ps, err := exec.LookPath("ps"); err == nil {
			psOut, _ = exec.Command(ps, "-e", "-ww", "-o", "pid=,args=").Output()
		}
	}()
	res, err := p.Run(context.Background(), tg, ssh.Command{
		Cmd:     `sleep 2; echo done; printf %s "$CANARY"`,
		Secrets: map[string][]byte{"CANARY": []byte(canary)},
	})
	<-psDone
	hits, rounds := scan.Stop()
	if err != nil {
		t.Fatalf("err = %v", err)
	}
	if got := string(res.Stdout); got != "done\n"+canary {
		t.Fatalf("stdout = %q: the secret did not arrive", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(execs) != 1 {
		t.Fatalf("captured %d exec strings, want 1", len(execs))
	}
	remote := execs[0]
	if strings.Contains(remote, canary) {
		t.Errorf("the canary is in the exec string: %.300q…", remote)
	}
	i := strings.Index(remote, "rediacc-secrets-end-")
	if i < 0 {
		t.Fatalf("no end line in the exec string %q", remote)
	}
	end := remote[i : i+len("rediacc-secrets-end-")+32]
	sawShell := false
	for _, h := range hits {
		if strings.Contains(h, canary) {
			t.Errorf("the canary is on a command line: %.300s…", h)
		}
		if strings.Contains(h, end) {
			sawShell = true
		}
	}
	if bytes.Contains(psOut, []byte(canary)) {
		t.Errorf("`ps -e -ww -o args` shows the canary")
	}
	if !sawShell {
		t.Errorf("control failed: %d scans never saw the remote shell's command line (end line %s); hits: %q", rounds, end, hits)
	}
	if psOut != nil && !bytes.Contains(psOut, []byte(end)) {
		t.Errorf("control failed: ps output does not show the remote shell (end line %s)", end)
	}
	if serverLog != nil {
		log := serverLog()
		if strings.Contains(log, canary) {
			t.Errorf("the canary is in the server's log")
		}
		if strings.Contains(log, end) {
			t.Logf("sshd logged the exec string (LogLevel DEBUG3)")
		}
	}
	if !t.Failed() {
		t.Logf("%d scans of /proc/*/cmdline, remote shell seen, canary nowhere", rounds)
	}
}

// testSecretsStdin: Command.Stdin reaches the command byte for byte after
// the secrets block, even when it looks like the block.
func testSecretsStdin(t *testing.T, p *ssh.Pool, tg ssh.Target) {
	bin := make([]byte, 256<<10)
	if _, err := rand.Read(bin); err != nil {
		t.Fatal(err)
	}
	stdin := "export S='stolen'\nrediacc-secrets-end-" + randomHex(16) + "\n" + string(bin) + "\nno newline at the end"
	for _, tc := range []struct {
		name  string
		cmd   string
		stdin *string
		want  string
	}{
		{"cat", "cat", &stdin, stdin},
		{"secret then cat", `printf '%s|' "$S"; cat`, &stdin, "it's\n|" + stdin},
		{"read line", `IFS= read -r l; printf '%s|%s' "$l" "$S"`, &stdin, "export S='stolen'|it's\n"},
		{"empty stdin", `cat; printf %s "$S"`, new(string), "it's\n"},
		{"nil stdin reads EOF", `cat; printf %s "$S"`, nil, "it's\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := ssh.Command{Cmd: tc.cmd, Secrets: map[string][]byte{"S": []byte("it's\n")}, OutputLimit: -1}
			if tc.stdin != nil {
				cmd.Stdin = strings.NewReader(*tc.stdin)
			}
			res, err := p.Run(context.Background(), tg, cmd)
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if string(res.Stdout) != tc.want {
				t.Errorf("stdout (%d bytes) = %q…, want (%d bytes) %q…", len(res.Stdout), head(res.Stdout), len(tc.want), head([]byte(tc.want)))
			}
		})
	}
}

func TestSecretsInProcess(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	tg := inprocTarget(t, "inproc", srv)
	p := newPool(t, ssh.Config{})
	t.Run("values", func(t *testing.T) { testSecretValues(t, p, tg) })
	t.Run("canary", func(t *testing.T) { testSecretsCanary(t, p, tg, nil) })
	t.Run("stdin", func(t *testing.T) { testSecretsStdin(t, p, tg) })
}

func TestOpenSSHSecrets(t *testing.T) {
	o := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 2, LogLevel: "DEBUG3"})
	tg := opensshTarget("m", o)
	p := newPool(t, ssh.Config{})
	t.Run("values", func(t *testing.T) { testSecretValues(t, p, tg) })
	t.Run("canary", func(t *testing.T) { testSecretsCanary(t, p, tg, o.Log) })
	t.Run("stdin", func(t *testing.T) { testSecretsStdin(t, p, tg) })
}

// TestSecretsRejected: a bad secret fails Run with ErrInvalidCommand before
// anything is sent, and the error names the key but never the value.
func TestSecretsRejected(t *testing.T) {
	p := newPool(t, ssh.Config{})
	tg := ssh.Target{Name: "nowhere", Host: "127.0.0.1", Port: freePort(t), User: "u",
		Auth: []ssh.Auth{ssh.Password("pw")}, HostKey: ssh.InsecureIgnoreHostKey()}
	const value = "hunter2-must-not-leak"
	for _, tc := range []struct {
		name string
		cmd  ssh.Command
		key  string
	}{
		{"bad name", ssh.Command{Cmd: "true", Secrets: map[string][]byte{"DB-PASSWORD": []byte(value)}}, "DB-PASSWORD"},
		{"leading digit", ssh.Command{Cmd: "true", Secrets: map[string][]byte{"9PW": []byte(value)}}, "9PW"},
		{"empty name", ssh.Command{Cmd: "true", Secrets: map[string][]byte{"": []byte(value)}}, `""`},
		{"NUL in value", ssh.Command{Cmd: "true", Secrets: map[string][]byte{"PW": []byte(value + "\x00" + value)}}, "PW"},
		{"in Env too", ssh.Command{Cmd: "true", Env: map[string]string{"PW": "x"}, Secrets: map[string][]byte{"PW": []byte(value)}}, "PW"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := p.Run(context.Background(), tg, tc.cmd)
			if res != nil || !errors.Is(err, ssh.ErrInvalidCommand) || ssh.IsRetryable(err) {
				t.Fatalf("res %v, err = %v, want ErrInvalidCommand", res, err)
			}
			if msg := err.Error(); strings.Contains(msg, "hunter2") || !strings.Contains(msg, tc.key) || !strings.Contains(msg, "nowhere") {
				t.Fatalf("error %q must name the key %s and the machine, never the value", msg, tc.key)
			}
		})
	}
	if s := p.Stats(); s.Dials != 0 {
		t.Errorf("nothing may be sent for an invalid command: %d dials", s.Dials)
	}
}
