package authz

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// want is the role matrix written out independently of the implementation:
// columns owner, admin, operator, viewer, auditor; 'x' allowed, '-' denied.
// For a team role the column means "in its own team"; in any other team every
// team role is denied. Store-scoped actions are marked with scope "store".
var want = []struct {
	action Action
	scope  Scope
	cells  string
}{
	{"team.create", ScopeStore, "x----"},
	{"team.rename", ScopeTeam, "x----"},
	{"team.delete", ScopeTeam, "x----"},
	{"team.list", ScopeTeam, "xxxx-"},
	{"team.member.add", ScopeTeam, "xx---"},
	{"team.member.remove", ScopeTeam, "xx---"},
	{"team.member.role", ScopeTeam, "xx---"},
	{"team.member.list", ScopeTeam, "xx---"},
	{"owner.add", ScopeStore, "x----"},
	{"owner.remove", ScopeStore, "x----"},
	{"auditor.add", ScopeStore, "x----"},
	{"auditor.remove", ScopeStore, "x----"},
	{"machine.add", ScopeTeam, "xx---"},
	{"machine.remove", ScopeTeam, "xx---"},
	{"machine.move", ScopeTeam, "xx---"},
	{"machine.hostkeys", ScopeTeam, "xx---"},
	{"machine.list", ScopeTeam, "xxxx-"},
	{"machine.read", ScopeTeam, "xxxx-"},
	{"machine.status", ScopeTeam, "xxxx-"},
	{"key.list", ScopeTeam, "xxxx-"},
	{"key.rotate", ScopeTeam, "xx---"},
	{"ca.read", ScopeTeam, "xxxx-"},
	{"ca.init", ScopeTeam, "xx---"},
	{"ca.rotate", ScopeTeam, "xx---"},
	{"task.create", ScopeTeam, "xxx--"},
	{"task.cancel", ScopeTeam, "xxx--"},
	{"task.list", ScopeTeam, "xxxx-"},
	{"task.read", ScopeTeam, "xxxx-"},
	{"task.output", ScopeTeam, "xxx--"},
	{"task.run", ScopeTeam, "xxx--"},
	{"vault.read", ScopeTeam, "xx---"},
	{"vault.write", ScopeTeam, "xx---"},
	{"vault.delete", ScopeTeam, "xx---"},
	{"vault.list", ScopeTeam, "xxx--"},
	{"vault.use", ScopeTeam, "xxx--"},
	{"audit.read", ScopeTeam, "xx--x"},
	{"audit.verify", ScopeStore, "x---x"},
	{"schedule.create", ScopeTeam, "xxx--"},
	{"schedule.update", ScopeTeam, "xxx--"},
	{"schedule.delete", ScopeTeam, "xxx--"},
	{"schedule.pause", ScopeTeam, "xxx--"},
	{"schedule.trigger", ScopeTeam, "xxx--"},
	{"schedule.list", ScopeTeam, "xxxx-"},
	{"window.create", ScopeTeam, "xx---"},
	{"window.delete", ScopeTeam, "xx---"},
	{"window.list", ScopeTeam, "xxxx-"},
	{"machine.drain", ScopeTeam, "xx---"},
	{"queue.pause", ScopeTeam, "xx---"},
}

var columns = []Role{Owner, Admin, Operator, Viewer, Auditor}

// grantsFor gives role r: store-wide for owner and auditor, in "prod" for
// team roles.
func grantsFor(r Role) Grants {
	if r.StoreWide() {
		return Grants{StoreRoles: []Role{r}}
	}
	return Grants{TeamRoles: map[string]Role{"prod": r}}
}

// TestMatrixEveryCell checks every role × action in the own team, in another
// team and with no team (every team).
func TestMatrixEveryCell(t *testing.T) {
	if len(want) != len(Actions()) {
		t.Fatalf("test table has %d actions, package has %d", len(want), len(Actions()))
	}
	for _, w := range want {
		for i, r := range columns {
			cell := w.cells[i] == 'x'
			g := grantsFor(r)
			cases := []struct {
				where string
				team  string
				want  bool
			}{
				// own team: the role's column.
				{"own team", "prod", cell},
				// another team: store roles as in their column; team roles never.
				{"other team", "staging", cell && (r.StoreWide() || w.scope == ScopeStore)},
				// every team (""): store roles as in their column; team roles
				// only for store-scoped actions, which they never have.
				{"every team", "", cell && r.StoreWide()},
			}
			for _, c := range cases {
				t.Run(fmt.Sprintf("%s/%s/%s", w.action, r, c.where), func(t *testing.T) {
					d := Explain(g, w.action, c.team)
					if d.Allowed != c.want {
						t.Fatalf("Allowed = %v, want %v (%s)", d.Allowed, c.want, d)
					}
					if Allowed(g, w.action, c.team) != d.Allowed {
						t.Fatal("Allowed and Explain disagree")
					}
					if d.Reason == "" {
						t.Fatal("empty reason")
					}
					if d.Allowed && d.Role != r || !d.Allowed && d.Role != "" {
						t.Fatalf("Decision.Role = %q", d.Role)
					}
					if !d.Allowed && !strings.Contains(d.Reason, string(w.action)) {
						t.Fatalf("denial reason %q does not name the action", d.Reason)
					}
					if !d.Allowed && c.team != "" && w.scope == ScopeTeam && !strings.Contains(d.Reason, fmt.Sprintf("%q", c.team)) {
						t.Fatalf("denial reason %q does not name the team", d.Reason)
					}
				})
			}
		}
	}
}

func TestMatrixMatchesAllowed(t *testing.T) {
	rows := Matrix()
	if len(rows) != len(want) {
		t.Fatalf("%d rows", len(rows))
	}
	for i, row := range rows {
		w := want[i]
		if row.Action != w.action || row.Scope != w.scope || row.Action.Scope() != w.scope {
			t.Fatalf("row %d = %s (%s), want %s (%s)", i, row.Action, row.Scope, w.action, w.scope)
		}
		if row.Description == "" || row.Action.Description() != row.Description {
			t.Errorf("%s: description %q", row.Action, row.Description)
		}
		if len(row.Allowed) != len(columns) {
			t.Fatalf("%s: %d roles", row.Action, len(row.Allowed))
		}
		for j, r := range columns {
			if row.Allowed[r] != (w.cells[j] == 'x') {
				t.Errorf("Matrix: %s/%s = %v", row.Action, r, row.Allowed[r])
			}
			if row.Allowed[r] != Allowed(grantsFor(r), row.Action, "prod") {
				t.Errorf("Matrix and Allowed disagree on %s/%s", row.Action, r)
			}
		}
	}
	// Rows are copies.
	rows[0].Allowed[Viewer] = true
	if Allowed(grantsFor(Viewer), rows[0].Action, "prod") {
		t.Fatal("changing Matrix() changed the rules")
	}
}

func TestMarkdownTable(t *testing.T) {
	md := MarkdownTable()
	lines := strings.Split(strings.TrimSpace(md), "\n")
	if !strings.HasPrefix(lines[0], "| action | scope | owner | admin | operator | viewer | auditor |") {
		t.Fatalf("header %q", lines[0])
	}
	for i, w := range want {
		line := lines[2+i]
		if !strings.HasPrefix(line, fmt.Sprintf("| `%s` | %s | ", w.action, w.scope)) {
			t.Fatalf("line %d = %q, want action %s", i, line, w.action)
		}
		cells := strings.Split(line, " | ")[2:7]
		for j := range columns {
			mark := "·"
			if w.cells[j] == 'x' {
				mark = "✓"
			}
			if cells[j] != mark {
				t.Errorf("%s/%s rendered %q", w.action, columns[j], cells[j])
			}
		}
	}
	if !strings.Contains(md, "denied") {
		t.Error("no legend")
	}
}

func TestDenyByDefault(t *testing.T) {
	owner := Grants{StoreRoles: []Role{Owner}}
	everything := Grants{StoreRoles: []Role{Owner, Auditor},
		TeamRoles: map[string]Role{"prod": Admin, "staging": Operator, "dev": Viewer}}
	for _, a := range []Action{"", "task.delete", "TASK.CREATE", "task.create ", "*", "team"} {
		if d := Explain(everything, a, "prod"); d.Allowed || !strings.Contains(d.Reason, "unknown action") {
			t.Errorf("unknown action %q: %s", a, d)
		}
		if Allowed(owner, a, "") {
			t.Errorf("owner allowed unknown action %q", a)
		}
	}
	// No roles at all: everything denied, everywhere.
	for _, g := range []Grants{{}, {TeamRoles: map[string]Role{}}, {StoreRoles: []Role{}}} {
		for _, a := range Actions() {
			for _, team := range []string{"", "prod", "default"} {
				if d := Explain(g, a, team); d.Allowed {
					t.Errorf("no grants: %s on %q allowed: %s", a, team, d)
				}
			}
		}
	}
	// Unknown or misplaced roles grant nothing.
	bogus := []Grants{
		{StoreRoles: []Role{"root", "OWNER", "superuser", ""}},
		{StoreRoles: []Role{Admin, Operator, Viewer}}, // team roles held store-wide
		{TeamRoles: map[string]Role{"prod": Owner}},   // store role held in a team
		{TeamRoles: map[string]Role{"prod": Auditor}},
		{TeamRoles: map[string]Role{"prod": "Admin"}},
		{TeamRoles: map[string]Role{"prod": "god"}},
		{TeamRoles: map[string]Role{"": Admin}}, // empty team name
	}
	for i, g := range bogus {
		for _, a := range Actions() {
			for _, team := range []string{"", "prod", "staging"} {
				if Allowed(g, a, team) {
					t.Errorf("bogus grants %d (%+v): %s on %q allowed", i, g, a, team)
				}
			}
		}
		if err := g.Validate(); err == nil {
			t.Errorf("bogus grants %d validate", i)
		}
	}
	if err := everything.Validate(); err != nil {
		t.Errorf("valid grants: %v", err)
	}
}

// A member of staging can neither see nor touch prod's machines and tasks.
func TestTeamIsolation(t *testing.T) {
	for _, r := range []Role{Admin, Operator, Viewer} {
		g := Grants{TeamRoles: map[string]Role{"staging": r}}
		for _, a := range Actions() {
			if a.Scope() == ScopeTeam && Allowed(g, a, "prod") {
				t.Errorf("%s of staging allowed %s on prod", r, a)
			}
		}
		for _, a := range []Action{TaskList, TaskRead, MachineList, MachineRead, TeamList} {
			if !Allowed(g, a, "staging") {
				t.Errorf("%s of staging denied %s on staging", r, a)
			}
		}
	}
	// Different roles in different teams do not leak into each other.
	g := Grants{TeamRoles: map[string]Role{"prod": Viewer, "staging": Admin}}
	if Allowed(g, TaskCancel, "prod") || !Allowed(g, TaskCancel, "staging") {
		t.Error("roles leak between teams")
	}
	if Allowed(g, AuditRead, "") || !Allowed(g, AuditRead, "staging") || Allowed(g, AuditRead, "prod") {
		t.Error("audit.read: admin reads their team's records only")
	}
	if got := g.Teams(); strings.Join(got, ",") != "prod,staging" {
		t.Errorf("Teams = %v", got)
	}
}

func TestAllowedMove(t *testing.T) {
	tests := []struct {
		name     string
		g        Grants
		from, to string
		want     bool
		reason   string
	}{
		{"owner", Grants{StoreRoles: []Role{Owner}}, "dev", "prod", true, "store role owner"},
		{"admin of both", Grants{TeamRoles: map[string]Role{"dev": Admin, "prod": Admin}}, "dev", "prod", true, "source"},
		{"admin of source only", Grants{TeamRoles: map[string]Role{"dev": Admin}}, "dev", "prod", false, `destination team: no role in team "prod"`},
		{"admin of destination only", Grants{TeamRoles: map[string]Role{"prod": Admin}}, "dev", "prod", false, `source team: no role in team "dev"`},
		{"operator on destination", Grants{TeamRoles: map[string]Role{"dev": Admin, "prod": Operator}}, "dev", "prod", false, "role operator"},
		{"auditor", Grants{StoreRoles: []Role{Auditor}}, "dev", "prod", false, "source team"},
		{"to every team", Grants{TeamRoles: map[string]Role{"dev": Admin}}, "dev", "", false, "every team"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := ExplainMove(tt.g, tt.from, tt.to)
			if d.Allowed != tt.want || AllowedMove(tt.g, tt.from, tt.to) != tt.want {
				t.Fatalf("got %s, want allowed=%v", d, tt.want)
			}
			if !strings.Contains(d.Reason, tt.reason) {
				t.Fatalf("reason %q does not contain %q", d.Reason, tt.reason)
			}
		})
	}
}

func TestExplainReasons(t *testing.T) {
	tests := []struct {
		g      Grants
		a      Action
		team   string
		reason string
	}{
		{Grants{TeamRoles: map[string]Role{"prod": Viewer}}, TaskCancel, "prod",
			`role viewer in team "prod" does not permit task.cancel (needs owner, admin or operator)`},
		{Grants{}, TaskList, "prod", `no role in team "prod"; task.list needs owner, admin, operator or viewer`},
		{Grants{TeamRoles: map[string]Role{"prod": Admin}}, TeamCreate, "", "team.create is a store-wide action and needs the store role owner"},
		{Grants{TeamRoles: map[string]Role{"prod": Admin}}, AuditRead, "", "audit.read without a team covers every team and needs the store role owner or auditor"},
		{Grants{TeamRoles: map[string]Role{"prod": Operator}}, TaskOutput, "prod", `role operator in team "prod" permits task.output`},
		{Grants{StoreRoles: []Role{Auditor}}, AuditRead, "", "store role auditor permits audit.read on every team"},
		{Grants{StoreRoles: []Role{Owner}}, VaultRead, "prod", `store role owner permits vault.read on team "prod"`},
	}
	for _, tt := range tests {
		if got := Explain(tt.g, tt.a, tt.team).Reason; got != tt.reason {
			t.Errorf("Explain(%s, %q):\n got %q\nwant %q", tt.a, tt.team, got, tt.reason)
		}
	}
	if s := Explain(Grants{}, TaskList, "prod").String(); !strings.HasPrefix(s, "denied: ") {
		t.Errorf("String = %q", s)
	}
}

func TestParse(t *testing.T) {
	for _, r := range Roles() {
		for _, s := range []string{string(r), strings.ToUpper(string(r)), " " + string(r) + "\n"} {
			got, err := ParseRole(s)
			if err != nil || got != r {
				t.Errorf("ParseRole(%q) = %q, %v", s, got, err)
			}
		}
	}
	for _, s := range []string{"", "root", "admins", "own er"} {
		if _, err := ParseRole(s); !errors.Is(err, ErrUnknownRole) || !strings.Contains(err.Error(), "owner, admin, operator, viewer or auditor") {
			t.Errorf("ParseRole(%q) err = %v", s, err)
		}
	}
	for _, a := range Actions() {
		if got, err := ParseAction(string(a)); err != nil || got != a {
			t.Errorf("ParseAction(%q) = %q, %v", a, got, err)
		}
	}
	if _, err := ParseAction("task.delete"); !errors.Is(err, ErrUnknownAction) {
		t.Errorf("ParseAction err = %v", err)
	}
	if Action("nope").Valid() || Action("nope").Scope() != "" || Role("nope").Valid() {
		t.Error("unknown action or role reported valid")
	}
}
