package ssh

import (
	"bytes"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestValidEnvName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"PATH", true}, {"_", true}, {"a1", true}, {"A_B_9", true}, {"_9", true},
		{"", false}, {"1A", false}, {"A-B", false}, {"A B", false}, {"A=B", false},
		{"é", false}, {"A\x00", false}, {"$A", false}, {"A.B", false},
	} {
		if got := ValidEnvName(tc.name); got != tc.ok {
			t.Errorf("ValidEnvName(%q) = %v, want %v", tc.name, got, tc.ok)
		}
	}
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func FuzzValidEnvName(f *testing.F) {
	for _, s := range []string{"PATH", "", "1A", "a-b", "_x", "Ä"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidEnvName(s), envNameRE.MatchString(s); got != want {
			t.Fatalf("ValidEnvName(%q) = %v, regexp says %v", s, got, want)
		}
	})
}

func TestShellQuote(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "''"},
		{"abc", "abc"},
		{"/usr/bin:x-y_z.1@h+,", "/usr/bin:x-y_z.1@h+,"},
		{"a b", "'a b'"},
		{"it's", `'it'\''s'`},
		{"$HOME", "'$HOME'"},
		{"=x", "'=x'"},
		{"~", "'~'"},
		{"a\nb", "'a\nb'"},
	} {
		if got := ShellQuote(tc.in); got != tc.want {
			t.Errorf("ShellQuote(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// shRoundTrip has sh print the quoted word back.
func shRoundTrip(t *testing.T, s string) string {
	t.Helper()
	out, err := exec.Command("sh", "-c", "printf '%s' "+ShellQuote(s)).Output()
	if err != nil {
		t.Fatalf("sh failed for %q (quoted %q): %v", s, ShellQuote(s), err)
	}
	return string(out)
}

func TestShellQuoteRoundTrip(t *testing.T) {
	for _, s := range []string{"", "plain", "two words", "'", "''", `\`, `"`, "$(id)", "`id`", "a\nb\tc",
		"*", "?", "[a]", "-n", "--", "!", "#x", "&;|<>()", "\x01\x7f", "ünïcödé", "it's a 'test'"} {
		if got := shRoundTrip(t, s); got != s {
			t.Errorf("round trip of %q through sh = %q", s, got)
		}
	}
}

// FuzzShellQuote checks that sh reads ShellQuote(s) back as s.
func FuzzShellQuote(f *testing.F) {
	for _, s := range []string{"", "a b", "it's", "$(id)", "`x`", "\\", "\n", "-e", "\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if strings.IndexByte(s, 0) >= 0 {
			t.Skip("NUL cannot be passed to a shell")
		}
		if got := shRoundTrip(t, s); got != s {
			t.Fatalf("round trip of %q (quoted %q) = %q (valid UTF-8: %v)", s, ShellQuote(s), got, utf8.ValidString(s))
		}
	})
}

func TestBuildScript(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cmd     Command
		want    string
		wantErr string
	}{
		{name: "plain", cmd: Command{Cmd: "echo hi"}, want: "echo hi"},
		{name: "env sorted and quoted", cmd: Command{Cmd: "env", Env: map[string]string{"B": "x y", "A": "it's"}},
			want: "export A='it'\\''s' B='x y'\nenv"},
		{name: "leading dash", cmd: Command{Cmd: "-x"}, want: " -x"},
		{name: "empty", cmd: Command{Cmd: "  "}, wantErr: "empty"},
		{name: "nul in cmd", cmd: Command{Cmd: "a\x00b"}, wantErr: "NUL"},
		{name: "bad key", cmd: Command{Cmd: "true", Env: map[string]string{"A-B": "x"}}, wantErr: "not a valid variable name"},
		{name: "nul in value", cmd: Command{Cmd: "true", Env: map[string]string{"A": "x\x00"}}, wantErr: "NUL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := buildScript(&tc.cmd)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("buildScript = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestBuildRemoteLocally runs the exec string through a local sh: the pid
// line comes first on stderr, env and arguments arrive intact.
func TestBuildRemoteLocally(t *testing.T) {
	remote, _, err := buildRemote(&Command{Cmd: `printf '%s|%s' "$A" "$B"; echo oops >&2; exit 7`,
		Env: map[string]string{"A": "x'y", "B": "$(id) `z`"}})
	if err != nil {
		t.Fatal(err)
	}
	c := exec.Command("sh", "-c", remote)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err = c.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
		t.Fatalf("exit = %v, want status 7", err)
	}
	if got := stdout.String(); got != "x'y|$(id) `z`" {
		t.Errorf("stdout = %q", got)
	}
	f := newPidFilter(new(bytes.Buffer))
	f.Write(stderr.Bytes())
	f.finish()
	if pid := (<-f.pidCh).pid; pid <= 1 {
		t.Errorf("pid = %d from stderr %q", pid, stderr.String())
	}
	if got := f.dst.(*bytes.Buffer).String(); got != "oops\n" {
		t.Errorf("filtered stderr = %q", got)
	}
}

func TestKillScriptSyntax(t *testing.T) {
	s := killScript(12345, 2*time.Second)
	if out, err := exec.Command("sh", "-n", "-c", s).CombinedOutput(); err != nil {
		t.Fatalf("sh -n: %v: %s\n%s", err, out, s)
	}
	if !strings.Contains(s, "-lt 20 ") {
		t.Errorf("grace of 2s should loop 20 times of 0.1s:\n%s", s)
	}
}

func TestCapture(t *testing.T) {
	var live bytes.Buffer
	c := &capture{limit: 5, live: &live}
	c.Write([]byte("abc"))
	c.Write([]byte("defg"))
	c.Write([]byte("h"))
	if c.buf.String() != "abcde" || !c.truncated || live.String() != "abcdefgh" {
		t.Fatalf("buf=%q truncated=%v live=%q", c.buf.String(), c.truncated, live.String())
	}
	u := &capture{limit: -1}
	u.Write(bytes.Repeat([]byte("x"), 100))
	if u.buf.Len() != 100 || u.truncated {
		t.Fatalf("unlimited: len=%d truncated=%v", u.buf.Len(), u.truncated)
	}
	e := &capture{limit: 3}
	e.Write([]byte("abc"))
	if e.truncated {
		t.Fatal("exactly the limit is not truncated")
	}
}

func TestPidFilter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chunks []string
		pid    int
		out    string
	}{
		{"marker first", []string{pidMarker + "4242\nerr\n"}, 4242, "err\n"},
		{"split writes", []string{"\x1erediacc-", "pid 77", "\nrest"}, 77, "rest"},
		{"noise before", []string{"motd line\n", pidMarker + "9\n", "x"}, 9, "motd line\nx"},
		{"no marker", []string{"just output"}, 0, "just output"},
		{"empty", nil, 0, ""},
		{"garbage pid", []string{pidMarker + "abc\nz"}, 0, "z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			f := newPidFilter(&out)
			for _, c := range tc.chunks {
				f.Write([]byte(c))
			}
			f.finish()
			if pid := (<-f.pidCh).pid; pid != tc.pid {
				t.Errorf("pid = %d, want %d", pid, tc.pid)
			}
			if out.String() != tc.out {
				t.Errorf("out = %q, want %q", out.String(), tc.out)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{}.withDefaults()
	if c.DialTimeout != 10*time.Second || c.HandshakeTimeout != 10*time.Second || c.SessionOpenTimeout != 10*time.Second ||
		c.KeepaliveInterval != 15*time.Second || c.KeepaliveMax != 3 || c.MaxSessionsPerConn != 6 ||
		c.MaxConnsPerHost != 4 || c.MaxStartupsPerHost != 3 || c.IdleTimeout != 60*time.Second ||
		c.OutputLimit != 1<<20 || c.KillGrace != 2*time.Second || c.Logger == nil {
		t.Fatalf("defaults: %+v", c)
	}
	d := Config{KeepaliveInterval: -1, IdleTimeout: -1, OutputLimit: -1, MaxSessionsPerConn: 1000}.withDefaults()
	if d.KeepaliveInterval >= 0 || d.IdleTimeout >= 0 || d.OutputLimit >= 0 || d.MaxSessionsPerConn != 100 {
		t.Fatalf("negative values must stay (disable), sessions capped at 100: %+v", d)
	}
}
