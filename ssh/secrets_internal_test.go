package ssh

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestAppendShellQuoteMatchesShellQuote(t *testing.T) {
	for _, s := range []string{"", "plain", "a b", "'", "it's", `\`, "$(id)", "a\nb\n", "-n", "\xff\x01", "''x''"} {
		if got, want := string(appendShellQuote([]byte("prefix "), []byte(s))), "prefix "+ShellQuote(s); got != want {
			t.Errorf("appendShellQuote(%q) = %q, want %q", s, got, want)
		}
	}
}

func FuzzAppendShellQuote(f *testing.F) {
	for _, s := range []string{"", "a b", "it's", "$(id)", "\n", "-e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := string(appendShellQuote(nil, []byte(s))), ShellQuote(s); got != want {
			t.Fatalf("appendShellQuote(%q) = %q, ShellQuote = %q", s, got, want)
		}
	})
}

// TestBuildSecretsRejects checks that bad secrets are refused with an error
// that names the key (cut at '=' and after 64 bytes) and never the value.
func TestBuildSecretsRejects(t *testing.T) {
	const value = "hunter2-value-must-not-leak"
	for _, tc := range []struct {
		name    string
		cmd     Command
		key     string
		wantErr string
	}{
		{"empty key", Command{Cmd: "true", Secrets: map[string][]byte{"": []byte(value)}}, `""`, "not a valid variable name"},
		{"leading digit", Command{Cmd: "true", Secrets: map[string][]byte{"1PW": []byte(value)}}, "1PW", "not a valid variable name"},
		{"dash", Command{Cmd: "true", Secrets: map[string][]byte{"DB-PW": []byte(value)}}, "DB-PW", "not a valid variable name"},
		{"equals", Command{Cmd: "true", Secrets: map[string][]byte{"A=B": []byte(value)}}, `"A"…`, "not a valid variable name"},
		// NAME=value passed as the key: the part after '=' is not echoed.
		{"value in key", Command{Cmd: "true", Secrets: map[string][]byte{"PW=" + value: []byte("x")}}, `"PW"…`, "not a valid variable name"},
		{"long key", Command{Cmd: "true", Secrets: map[string][]byte{strings.Repeat("K-", 5000): []byte(value)}}, "(10000 bytes)", "not a valid variable name"},
		{"space", Command{Cmd: "true", Secrets: map[string][]byte{"A B": []byte(value)}}, `"A"… (3 bytes)`, "not a valid variable name"},
		{"value after a space", Command{Cmd: "true", Secrets: map[string][]byte{"PASSWORD " + value: []byte("x")}}, `"PASSWORD"…`, "not a valid variable name"},
		{"NUL in value", Command{Cmd: "true", Secrets: map[string][]byte{"PW": []byte(value + "\x00" + value)}}, "PW", "NUL"},
		{"NUL only", Command{Cmd: "true", Secrets: map[string][]byte{"PW": {0}}}, "PW", "NUL"},
		{"also in Env", Command{Cmd: "true", Env: map[string]string{"PW": "x"}, Secrets: map[string][]byte{"PW": []byte(value)}}, "PW", "both Command.Env and Command.Secrets"},
		{"bad Cmd first", Command{Cmd: " ", Secrets: map[string][]byte{"PW": []byte(value)}}, "", "empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			remote, block, err := buildRemote(&tc.cmd)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), tc.key) {
				t.Fatalf("err = %v, want one containing %q and the key %s", err, tc.wantErr, tc.key)
			}
			if strings.Contains(err.Error(), "hunter2") || len(err.Error()) > 400 || remote != "" || block != nil {
				t.Fatalf("error or result leaks the value: err %q remote %q block %q", err, remote, block)
			}
		})
	}
}

func TestBuildSecretsBlock(t *testing.T) {
	defer func(f func() string) { newSecretsEnd = f }(newSecretsEnd)
	newSecretsEnd = func() string { return "END" }
	remote, block, err := buildRemote(&Command{Cmd: "env", Env: map[string]string{"E": "e"},
		Secrets: map[string][]byte{"B": []byte("vB's\n"), "A": []byte("vA")}})
	if err != nil {
		t.Fatal(err)
	}
	if want := "export A=vA\nexport B='vB'\\''s\n'\nEND\n"; string(block) != want {
		t.Errorf("block = %q, want %q", block, want)
	}
	if !strings.HasPrefix(remote, pidReport+"_rediacc_e=END ") || !strings.HasSuffix(remote, "eval 'export E=e\nenv'") {
		t.Errorf("remote = %q", remote)
	}
	if strings.Contains(remote, "vA") || strings.Contains(remote, "vB") {
		t.Errorf("a value is in the exec string: %q", remote)
	}
	// Without secrets the exec string is unchanged.
	if r, b, err := buildRemote(&Command{Cmd: "env", Secrets: map[string][]byte{}}); err != nil || b != nil || r != wrapperPrefix+"env" {
		t.Errorf("empty Secrets: %q %q %v", r, b, err)
	}
}

// TestBuildSecretsEndAvoidsValues forces the first end line drawn to occur
// in a value: it must be drawn again.
func TestBuildSecretsEndAvoidsValues(t *testing.T) {
	defer func(f func() string) { newSecretsEnd = f }(newSecretsEnd)
	ends := []string{"rediacc-secrets-end-0", "rediacc-secrets-end-1"}
	calls := 0
	newSecretsEnd = func() string { calls++; return ends[min(calls-1, 1)] }
	_, block, err := buildRemote(&Command{Cmd: "true", Secrets: map[string][]byte{"S": []byte("x\nrediacc-secrets-end-0\ny")}})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 2 || !bytes.HasSuffix(block, []byte("\nrediacc-secrets-end-1\n")) {
		t.Fatalf("calls %d, block %q", calls, block)
	}
}

// localShells lists the POSIX shells installed here (sh is always tested).
func localShells(t *testing.T) []string {
	var shells []string
	for _, s := range []string{"sh", "dash", "bash", "zsh", "ksh", "mksh", "busybox"} {
		if p, err := exec.LookPath(s); err == nil {
			shells = append(shells, p)
		}
	}
	if len(shells) == 0 {
		t.Skip("no shell found")
	}
	return shells
}

// syntaxErrorStatus is the exit status of `shell -c` on a syntax error:
// 1 in zsh, 2 in the others.
func syntaxErrorStatus(shell string) int {
	if filepath.Base(shell) == "zsh" {
		return 1
	}
	return 2
}

// runLocally runs the exec string of cmd with shell, feeding the secrets
// block then stdin, and returns stdout, the filtered stderr and the exit
// status.
func runLocally(t *testing.T, shell string, cmd *Command, stdin string, truncateBlock bool) (string, string, int) {
	t.Helper()
	remote, block, err := buildRemote(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if truncateBlock {
		block = block[:bytes.LastIndexByte(block[:len(block)-1], '\n')+1]
	}
	args := []string{"-c", remote}
	if filepath.Base(shell) == "busybox" {
		args = append([]string{"sh"}, args...)
	}
	c := exec.Command(shell, args...)
	c.Stdin = strings.NewReader(string(block) + stdin)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err = c.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	f := newPidFilter(new(bytes.Buffer))
	f.Write(stderr.Bytes())
	f.finish()
	if pid := (<-f.pidCh).pid; pid <= 1 {
		t.Errorf("%s: no pid line first on stderr %q", shell, stderr.String())
	}
	return stdout.String(), f.dst.(*bytes.Buffer).String(), code
}

// TestSecretsPreludeLocally runs the prelude in every local shell: values
// arrive intact, stdin follows, the temporary variables are gone, nothing
// in a value is executed.
func TestSecretsPreludeLocally(t *testing.T) {
	touched := filepath.Join(t.TempDir(), "touched")
	secrets := map[string][]byte{
		"QUOTES":     []byte(`it's "quoted" \ \\ ` + "`id`"),
		"SUBST":      []byte("$(touch " + touched + ") `touch " + touched + "` ${HOME}"),
		"NEWLINES":   []byte("\nline 1\n\nline 3\n\n"),
		"DASHES":     []byte("-n -e --"),
		"END_LIKE":   []byte("rediacc-secrets-end-00000000000000000000000000000000\nrediacc-secrets-end-\n"),
		"HIGH":       []byte("\xff\xfe caf\xc3\xa9 \x01\x7f\r\t"),
		"EMPTY":      {},
		"_rediacc_b": []byte("a secret may share a temporary variable's name"),
	}
	keys := []string{"DASHES", "EMPTY", "END_LIKE", "HIGH", "NEWLINES", "QUOTES", "SUBST", "_rediacc_b"}
	script := ""
	for _, k := range keys {
		script += `printf '%s\0' "$` + k + `"; `
	}
	script += `printf '[%s%s%s%s]\0' "${_rediacc_e+e}" "${_rediacc_l+l}" "${_rediacc_ok+ok}" "$ENVVAR"; ` +
		`sh -c 'printf "%s\0" "$NEWLINES"'; cat`
	const stdin = "export X=1\nrediacc-secrets-end-x\nuser stdin without newline"
	var want strings.Builder
	for _, k := range keys {
		want.Write(secrets[k])
		want.WriteByte(0)
	}
	want.WriteString("[env]\x00" + string(secrets["NEWLINES"]) + "\x00" + stdin)
	for _, shell := range localShells(t) {
		t.Run(filepath.Base(shell), func(t *testing.T) {
			cmd := &Command{Cmd: script, Env: map[string]string{"ENVVAR": "env"}, Secrets: secrets}
			out, errOut, code := runLocally(t, shell, cmd, stdin, false)
			if code != 0 || errOut != "" {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			if out != want.String() {
				t.Errorf("stdout\n%q\nwant\n%q", out, want.String())
			}
			if _, err := os.Stat(touched); err == nil {
				t.Fatal("a command substitution in a value was executed")
			}

			// An incomplete block (stdin ends before the end line): the
			// script does not run, and the values are not printed.
			out, errOut, code = runLocally(t, shell, cmd, "", true)
			if code != 125 || out != "" || errOut != "rediacc: the secrets block on stdin ended early\n" {
				t.Errorf("incomplete block: exit %d, stdout %q, stderr %q", code, out, errOut)
			}
		})
	}
}

// TestDocShowsPrelude keeps the package doc's copy of the prelude in sync.
func TestDocShowsPrelude(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(secretsPrelude("rediacc-secrets-end-<32 random hex digits>")), "\n") {
		if !bytes.Contains(doc, []byte("//\t"+line)) {
			t.Errorf("doc.go does not show the prelude line\n%s", line)
		}
	}
}
