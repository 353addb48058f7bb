package main

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/rediacc/rediacc"
)

// Error wording: role errors list the roles valid where they are used;
// the command size limit is the code's, in the error and the README; team
// delete says once what is left; user input is echoed at most 64
// characters long.
func TestCLIErrorWording(t *testing.T) {
	c := cli{t: t, dir: t.TempDir()}
	c.ok("team", "create", "dev")
	c.ok("machine", "add", "m1", "--team", "dev", "--host", "127.0.0.1", "--identity", writeKey(t), "--accept-new-host-key")
	huge := strings.Repeat("a", 1<<20)
	cases := []struct {
		args    []string
		code    int
		says    []string
		notSays []string
	}{
		{[]string{"team", "member", "add", "dev", "bob", "--role", "bogus"}, exitInvalid, []string{"admin, operator or viewer"}, []string{"owner,"}},
		{[]string{"role", "add", "bob", "--role", "bogus"}, exitInvalid, []string{"owner or auditor"}, []string{"admin,"}},
		{[]string{"role", "add", "bob", "--role", "admin"}, exitInvalid, []string{"owner or auditor", "team roles"}, nil},
		{[]string{"create", "task", "--machine", "m1", "--command", strings.Repeat("x", rediacc.MaxCommandBytes+1)}, exitInvalid,
			[]string{fmt.Sprintf("MaxCommandBytes (%d, %d KiB)", rediacc.MaxCommandBytes, rediacc.MaxCommandBytes>>10)}, nil},
		{[]string{"team", "delete", "dev"}, exitError, []string{`team "dev" cannot be deleted: it still has 1 machine(s)`}, []string{"team still has", "first) ("}},
		{[]string{"team", "create", huge}, exitInvalid, []string{"(1048576 bytes in all)"}, nil},
		{[]string{"machine", "remove", huge}, exitNotFound, []string{"(1048576 bytes in all)"}, nil},
		{[]string{"inspect", "queue", huge}, exitInvalid, []string{"(1048576 bytes in all)"}, nil},
		{[]string{"team", "member", "add", "dev", huge, "--role", "viewer"}, exitInvalid, []string{"(1048576 bytes in all)"}, nil},
		{[]string{"--log-level", huge, "list", "queue"}, exitInvalid, []string{"(1048576 bytes in all)"}, nil},
		{[]string{"list", "queue", "--status", huge}, exitInvalid, []string{"(1048576 bytes in all)"}, nil},
		{[]string{"list", "queue", "--priority", huge}, exitInvalid, []string{"(1048576 bytes in all)"}, nil},
		{[]string{"create", "task", "--machine", huge, "--command", "true"}, exitInvalid, []string{"(1048576 bytes in all)"}, nil},
	}
	for _, tc := range cases {
		code, _, errs := c.run(tc.args...)
		if i := strings.Index(errs, "\nerror: "); i >= 0 {
			errs = errs[i+1:] // the message, without the log records
		}
		name := strings.Join(tc.args, " ")
		if len(name) > 80 {
			name = name[:80]
		}
		if code != tc.code {
			t.Errorf("%s: exit %d, want %d: %.300s", name, code, tc.code, errs)
		}
		for _, s := range tc.says {
			if !strings.Contains(errs, s) {
				t.Errorf("%s: stderr does not say %q: %.500s", name, s, errs)
			}
		}
		for _, s := range tc.notSays {
			if strings.Contains(errs, s) {
				t.Errorf("%s: stderr says %q: %.500s", name, s, errs)
			}
		}
		if len(errs) > 4096 {
			t.Errorf("%s: %d bytes of error for %d bytes of input", name, len(errs), len(strings.Join(tc.args, "")))
		}
	}
	// The vault blocks the delete: said once, without the machines' text.
	c.ok("machine", "remove", "m1")
	if code, _, errs := c.run("vault", "set", "--team", "dev", "api/key", "--value-file", writeFile(t, "s3cret")); code != 0 {
		t.Fatalf("vault set: %d %s", code, errs)
	}
	if code, _, errs := c.run("team", "delete", "dev"); code != exitError || !strings.Contains(errs, `team "dev" cannot be deleted: its vault holds 1 secret(s), e.g. "api/key"`) ||
		strings.Contains(errs, "machines") {
		t.Errorf("team delete with secrets: exit %d: %s", code, errs)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%d KiB\n  (`MaxCommandBytes`)", rediacc.MaxCommandBytes>>10); !strings.Contains(string(readme), want) {
		t.Errorf("README does not give the command limit as the code: want %q", want)
	}
}
