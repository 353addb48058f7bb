package authz

import (
	"os"
	"strings"
	"testing"
)

// docs/ROLES.md carries the matrix this package enforces; regenerate it with
// REDIACC_UPDATE_DOCS=1 go test ./internal/authz -run TestRolesDoc.
func TestRolesDocUpToDate(t *testing.T) {
	const path = "../../docs/ROLES.md"
	b, err := os.ReadFile(path)
	table := MarkdownTable()
	if os.Getenv("REDIACC_UPDATE_DOCS") == "1" {
		head := "# Roles\n\n" +
			"Every public operation of the SDK checks the acting user's role (deny by default)\n" +
			"inside the SDK, never in the CLI. Store-wide roles: **owner** (everything) and\n" +
			"**auditor** (reads and verifies the audit trail). Team roles, each for one team:\n" +
			"**admin**, **operator**, **viewer**. A member of one team can neither see nor touch\n" +
			"another team's machines and tasks. Denied calls return `ErrPermissionDenied` naming\n" +
			"the actor, the action and the team, change nothing, and are audited.\n\n" +
			"The first actor to use a new store becomes its owner; an operation with no actor is\n" +
			"refused (`ErrNoActor`). Tests: `TestRoleMatrix` runs every cell through the public API.\n\n"
		if err := os.WriteFile(path, []byte(head+table), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), table) {
		t.Fatalf("%s is out of date: regenerate with REDIACC_UPDATE_DOCS=1 go test ./internal/authz -run TestRolesDoc", path)
	}
}
