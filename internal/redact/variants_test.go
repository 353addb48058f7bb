package redact

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"testing"
)

// variantValues hold distinctive tokens (Zq + digit + letters) that must not
// survive in any tool's output once masked.
var variantValues = []string{
	"first-line-secret-Zq1a\nsecond-line-secret-Zq1b",
	"pa'ss \"q\" $HOME `x` back\\slash! ~ #x {a} é-Zq2a",
	"Zq3a\ttab\r\nCRLF-line-Zq3b\r\n",
	"  Zq4a spaced   out\n\n",
	"ctl\x01Zq5a\x7fé",
	"#Zq6a~,=;&|<>",
	"back\\nslash\\tZq7a\\\\x\\0101",
	"{\n  \"user\": \"admin-Zq8a\",\n  \"password\": \"p@ss'Zq8b\"\n}\n",
	"ünïcödé-Zq9a 😀 <tag>&amp;",
}

var tokenRE = regexp.MustCompile(`Zq[0-9][a-z]`)

// TestVariantsAgainstRealTools prints each value with the shell constructs
// and tools Variants claims to cover (dash as /bin/sh, bash, jq, sed, tail)
// and checks that no token of the value survives masking.
func TestVariantsAgainstRealTools(t *testing.T) {
	for _, tool := range []string{"bash", "dash", "jq", "sed", "tail"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (apt-get install %s): the masking claims are checked against the real tool", tool, tool)
		}
	}
	commands := map[string]string{
		"printf lines":          `printf '%s\n' "$V"`,
		"tail -1":               `printf '%s\n' "$V" | tail -1`,
		"head -1":               `printf '%s\n' "$V" | head -1`,
		"sed -n 2p":             `printf '%s\n' "$V" | sed -n 2p`,
		"while read":            `printf '%s\n' "$V" | while IFS= read -r l; do printf '<%s>\n' "$l"; done`,
		"command substitution":  `x=$(printf '%s' "$V"); printf '[%s]\n' "$x"`,
		"echo unquoted":         `echo $V`,
		"dash echo":             `echo "$V"`,
		"dash set":              `set`,
		"dash export -p":        `export -p`,
		"env":                   `env`,
		"CRLF":                  `printf '%s\n' "$V" | sed 's/$/\r/'`,
		"bash declare -p":       `bash -c 'declare -p V'`,
		"bash printf %q":        `bash -c 'printf "%q\n" "$V"'`,
		"bash printf %q C":      `LC_ALL=C bash -c 'printf "%q\n" "$V"'`,
		"bash printf %q UTF-8":  `LC_ALL=C.UTF-8 bash -c 'printf "%q\n" "$V"'`,
		"bash @Q":               `bash -c 'echo "${V@Q}"'`,
		"bash set":              `bash -c set`,
		"bash set -x":           `bash -xc ': "$V"' 2>&1`,
		"bash declare -p UTF-8": `LC_ALL=C.UTF-8 bash -c 'declare -p V'`,
		"jq --arg":              `jq -n --arg v "$V" '$v'`,
		"jq env":                `jq -n env.V`,
		"jq -R lines":           `printf '%s\n' "$V" | jq -R .`,
		"jq -c object":          `jq -cn --arg v "$V" '{v: $v}'`,
	}
	// These print one line, which may hold no token.
	lineSelecting := map[string]bool{"sed -n 2p": true, "tail -1": true, "head -1": true}
	for _, v := range variantValues {
		r := NewSecrets([]byte(v))
		for name, script := range commands {
			cmd := exec.Command("dash", "-c", script)
			cmd.Env = append(os.Environ(), "V="+v)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s with %q: %v: %s", name, v, err, out)
			}
			if !tokenRE.Match(out) && !lineSelecting[name] {
				t.Fatalf("%s with %q printed no token (the test is wrong): %q", name, v, out)
			}
			masked := r.Bytes(out)
			if tok := tokenRE.Find(masked); tok != nil {
				t.Errorf("%s: value %q: token %s survives in %q (tool output %q)", name, v, tok, masked, out)
			}
			// The streaming writer agrees with Bytes.
			if s := stream(r, out, fixed(7)); !bytes.Equal(s, masked) {
				t.Errorf("%s: streamed %q, Bytes %q", name, s, masked)
			}
		}
	}
}

func TestVariants(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  []string // must be among the variants
		not   []string // must not be
	}{
		{"first-line-secret\nsecond-line-secret", []string{"first-line-secret", "second-line-secret", "first-line-secret second-line-secret"}, nil},
		{"secret\n", []string{"secret\n", "secret"}, nil},
		{"a\r\nlong-line\r\n", []string{"long-line"}, []string{"a", "a\r"}},
		{"pw", []string{"pw"}, nil},
		{"it's", []string{"it's", `it'\''s`, `it'"'"'s`, `it\'s`}, nil},
		{`a"b$c`, []string{`a\"b\$c`}, nil},
		{"tab\there", []string{`tab\there`, "tab here"}, nil},
		{"ü-😀", []string{`\u00fc-\ud83d\ude00`, `\303\274-\360\237\230\200`}, nil},
		{"<a&b>", []string{`\u003ca\u0026b\u003e`}, nil},
		{`xy\nzw`, []string{"xy\nzw"}, nil},
		{"{\n}\n", []string{"{\n}\n", `{\n}\n`}, []string{"{", "}", "{\n}"}},
	} {
		got := map[string]bool{}
		for _, b := range Variants([]byte(tc.value)) {
			if got[string(b)] {
				t.Errorf("Variants(%q): duplicate %q", tc.value, b)
			}
			got[string(b)] = true
		}
		for _, w := range tc.want {
			if !got[w] {
				t.Errorf("Variants(%q) lacks %q; has %q", tc.value, w, keys(got))
			}
		}
		for _, n := range tc.not {
			if got[n] {
				t.Errorf("Variants(%q) has the short fragment %q", tc.value, n)
			}
		}
	}
	if Variants(nil) != nil {
		t.Error("Variants(nil) is not nil")
	}
}

func TestNewSecretsMasksTheIssueExample(t *testing.T) {
	// issue 9: printf '%s\n' "$M" | tail -1 showed the second line.
	r := NewSecrets([]byte("first-line-secret\nsecond-line-secret"))
	if got := r.String("second-line-secret\n"); got != "***\n" {
		t.Fatalf("got %q", got)
	}
	if got := r.String("first-line-secret\nsecond-line-secret\n"); got != "***\n" {
		t.Fatalf("whole value: got %q", got)
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
