package rediacc_test

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rediacc/rediacc"
)

// Issue 9, kind 7: a secret printed by the shell or a common tool in a
// shape other than its exact bytes — one line of a multi-line value, the
// value without its trailing newline, shell-quoted, JSON-escaped — is
// masked in the stored output, on a real sshd through the public API.
func TestSecretShapesAreMasked(t *testing.T) {
	c := newClient(t, nil)
	realMachine(t, c, "m1", 23)
	ctx := asOwner()
	values := map[string]string{
		"multi":  "first-line-secret-Zq1a\nsecond-line-secret-Zq1b",
		"quoted": "it's \"Zq2a\" $x `y` back\\slash",
		"crlf":   "Zq3a-first-line\r\nZq3b-second-line\r\n",
		"json":   "{\n  \"user\": \"Zq4a-admin\",\n  \"password\": \"p'Zq4b\"\n}\n",
	}
	for k, v := range values {
		if _, err := c.SetSecret(ctx, rediacc.DefaultTeam, "forms/"+k, []byte(v), nil); err != nil {
			t.Fatal(err)
		}
	}
	commands := map[string]string{
		"the issue's tail -1":  `printf '%s\n' "$S" | tail -1`,
		"head -1":              `printf '%s\n' "$S" | head -1`,
		"each line":            `printf '%s\n' "$S" | while IFS= read -r l; do echo "line: $l"; done`,
		"command substitution": `x=$(printf '%s' "$S"); echo "[$x]"`,
		"unquoted echo":        `echo $S`,
		"set":                  `set`,
		"export -p":            `export -p`,
		"bash declare -p":      `bash -c 'declare -p S'`,
		"bash printf %q":       `bash -c 'printf "%q\n" "$S"'`,
		"bash set -x":          `bash -xc ': "$S"' 2>&1`,
		"jq":                   `jq -n --arg v "$S" '{v: $v}'`,
		"jq lines":             `printf '%s\n' "$S" | jq -R .`,
		"CRLF":                 `printf '%s\n' "$S" | sed 's/$/\r/'`,
	}
	type run struct{ form, value, id string }
	var runs []run
	for form, cmd := range commands {
		for k := range values {
			task, err := c.Submit(ctx, rediacc.TaskSpec{Machine: "m1", Command: cmd + "; echo end-of-output",
				Secrets: map[string]string{"S": "forms/" + k}})
			if err != nil {
				t.Fatal(err)
			}
			runs = append(runs, run{form, k, task.ID})
		}
	}
	if err := c.RunUntilEmpty(ctxTimeout(t, 3*time.Minute)); err != nil {
		t.Fatal(err)
	}
	token := regexp.MustCompile(`Zq[0-9][a-z]`)
	for _, r := range runs {
		got := get(t, c, r.id)
		if got.Status != rediacc.StatusCompleted || !strings.Contains(got.Stdout, "end-of-output") {
			t.Fatalf("%s of %s: status %s, stdout %q, stderr %q, error %s", r.form, r.value, got.Status, got.Stdout, got.Stderr, got.Error)
		}
		if tok := token.FindString(got.Stdout + got.Stderr); tok != "" {
			t.Errorf("%s of the %s secret: %s survives in the stored output %q", r.form, r.value, tok, got.Stdout+got.Stderr)
		}
	}
	// The case, exactly: the second line is masked.
	for _, r := range runs {
		if r.form == "the issue's tail -1" && r.value == "multi" {
			if got := get(t, c, r.id); got.Stdout != "***\nend-of-output\n" {
				t.Errorf("tail -1 of a two-line secret: stdout %q, want %q", got.Stdout, "***\nend-of-output\n")
			}
		}
	}
}
