package authz

import (
	"fmt"
	"strings"
)

// Action is an operation of the SDK, checked against the matrix. Action names
// are also the audit trail's action names for these operations.
type Action string

// The actions: every public operation.
const (
	// TeamCreate creates a team.
	TeamCreate Action = "team.create"
	// TeamRename renames a team.
	TeamRename Action = "team.rename"
	// TeamDelete deletes a team (refused while it has machines or unfinished
	// tasks, or secrets unless its vault is purged with it).
	TeamDelete Action = "team.delete"
	// TeamList sees a team in the team list (each member sees their teams).
	TeamList Action = "team.list"
	// TeamMemberAdd adds a member to a team.
	TeamMemberAdd Action = "team.member.add"
	// TeamMemberRemove removes a member from a team.
	TeamMemberRemove Action = "team.member.remove"
	// TeamMemberRole changes a member's role in a team.
	TeamMemberRole Action = "team.member.role"
	// TeamMemberList lists a team's members and their roles.
	TeamMemberList Action = "team.member.list"
	// OwnerAdd makes a user an owner.
	OwnerAdd Action = "owner.add"
	// OwnerRemove takes the owner role from a user.
	OwnerRemove Action = "owner.remove"
	// AuditorAdd makes a user an auditor.
	AuditorAdd Action = "auditor.add"
	// AuditorRemove takes the auditor role from a user.
	AuditorRemove Action = "auditor.remove"
	// MachineAdd registers a machine in a team.
	MachineAdd Action = "machine.add"
	// MachineRemove unregisters a machine of a team.
	MachineRemove Action = "machine.remove"
	// MachineMove moves a machine between teams; needed on both (see AllowedMove).
	MachineMove Action = "machine.move"
	// MachineHostKeys imports or forgets the host keys the store holds for
	// a machine of a team (the keys every worker verifies it against).
	MachineHostKeys Action = "machine.hostkeys"
	// MachineList lists a team's machines.
	MachineList Action = "machine.list"
	// MachineRead shows a machine's definition (host, port, user; no secrets).
	MachineRead Action = "machine.read"
	// MachineStatus shows a machine's health and load.
	MachineStatus Action = "machine.status"
	// KeyList lists the SSH keys a team's machines log in with: type,
	// fingerprint, age, machines (never key material).
	KeyList Action = "key.list"
	// KeyRotate rotates a team's SSH key on every machine that uses it,
	// resumes or rolls back a rotation (and queues rotation tasks).
	KeyRotate Action = "key.rotate"
	// CARead shows a team's SSH certificate authority: its public keys,
	// the TrustedUserCAKeys line, which CA each machine trusts.
	CARead Action = "ca.read"
	// CAInit creates a team's SSH certificate authority.
	CAInit Action = "ca.init"
	// CARotate starts, finishes or aborts a rotation of a team's SSH CA,
	// and sets the host CAs its machines trust.
	CARotate Action = "ca.rotate"
	// TaskCreate submits a task to a machine of a team.
	TaskCreate Action = "task.create"
	// TaskCancel cancels a task.
	TaskCancel Action = "task.cancel"
	// TaskList lists a team's queue and tasks.
	TaskList Action = "task.list"
	// TaskRead shows a task's metadata, status and attempts (no output).
	TaskRead Action = "task.read"
	// TaskOutput reads a task's stdout and stderr.
	TaskOutput Action = "task.output"
	// TaskRun claims and executes a team's tasks (the actor of a worker).
	TaskRun Action = "task.run"
	// VaultRead reads secret values of a team's vault.
	VaultRead Action = "vault.read"
	// VaultWrite creates or changes secrets of a team's vault.
	VaultWrite Action = "vault.write"
	// VaultDelete deletes secrets of a team's vault.
	VaultDelete Action = "vault.delete"
	// VaultList lists the keys (not the values) of a team's vault.
	VaultList Action = "vault.list"
	// VaultUse references a team's secrets in a task, resolved at run time.
	VaultUse Action = "vault.use"
	// AuditRead reads audit records: of one team, or (empty team) all of them.
	AuditRead Action = "audit.read"
	// AuditVerify verifies the audit trail's hash chain.
	AuditVerify Action = "audit.verify"

	// ScheduleCreate creates a schedule (a recurring task) of a team; the
	// task it submits needs task.create (and vault.use for secrets) too.
	ScheduleCreate Action = "schedule.create"
	// ScheduleUpdate changes a schedule; the updater becomes its owner.
	ScheduleUpdate Action = "schedule.update"
	// ScheduleDelete deletes a schedule (its tasks stay).
	ScheduleDelete Action = "schedule.delete"
	// SchedulePause pauses or resumes a schedule.
	SchedulePause Action = "schedule.pause"
	// ScheduleTrigger runs a schedule's task now, as the caller.
	ScheduleTrigger Action = "schedule.trigger"
	// ScheduleList lists and shows a team's schedules and their fires.
	ScheduleList Action = "schedule.list"

	// WindowCreate creates a maintenance window of a team or machine.
	WindowCreate Action = "window.create"
	// WindowDelete deletes a maintenance window.
	WindowDelete Action = "window.delete"
	// WindowList lists a team's maintenance windows.
	WindowList Action = "window.list"
	// MachineDrain drains a machine (no new task starts on it) or resumes it.
	MachineDrain Action = "machine.drain"
	// QueuePause pauses a team's queue (nothing is claimed) or resumes it.
	QueuePause Action = "queue.pause"
)

// Scope says what the team argument of a check means for an action.
type Scope string

const (
	// ScopeStore: the action concerns the whole store; the team is ignored.
	ScopeStore Scope = "store"
	// ScopeTeam: the action acts on one team ("" = every team).
	ScopeTeam Scope = "team"
)

type rule struct {
	scope Scope
	roles map[Role]bool
	doc   string
	note  string
}

// roleList returns the rule's roles in column order.
func (r rule) roleList() []Role {
	var out []Role
	for _, x := range Roles() {
		if r.roles[x] {
			out = append(out, x)
		}
	}
	return out
}

func allow(rs ...Role) map[Role]bool {
	m := make(map[Role]bool, len(rs))
	for _, r := range rs {
		m[r] = true
	}
	return m
}

// order is the matrix's row order.
var order = []Action{
	TeamCreate, TeamRename, TeamDelete, TeamList,
	TeamMemberAdd, TeamMemberRemove, TeamMemberRole, TeamMemberList,
	OwnerAdd, OwnerRemove, AuditorAdd, AuditorRemove,
	MachineAdd, MachineRemove, MachineMove, MachineHostKeys, MachineList, MachineRead, MachineStatus,
	KeyList, KeyRotate,
	CARead, CAInit, CARotate,
	TaskCreate, TaskCancel, TaskList, TaskRead, TaskOutput, TaskRun,
	VaultRead, VaultWrite, VaultDelete, VaultList, VaultUse,
	AuditRead, AuditVerify,
	ScheduleCreate, ScheduleUpdate, ScheduleDelete, SchedulePause, ScheduleTrigger, ScheduleList,
	WindowCreate, WindowDelete, WindowList, MachineDrain, QueuePause,
}

// rules is the matrix. Deny by default: a role not listed is denied.
var rules = map[Action]rule{
	TeamCreate: {ScopeStore, allow(Owner), "create a team", ""},
	TeamRename: {ScopeTeam, allow(Owner), "rename a team", ""},
	TeamDelete: {ScopeTeam, allow(Owner), "delete a team", "refused while the team has machines, unfinished tasks or schedules, or secrets in its vault unless they are destroyed with it (purge, audited)"},
	TeamList: {ScopeTeam, allow(Owner, Admin, Operator, Viewer), "see the team in the team list",
		"members see the teams they belong to; the owner sees all; deleted teams, with their ids: owner and auditor"},

	TeamMemberAdd:    {ScopeTeam, allow(Owner, Admin), "add a member", ""},
	TeamMemberRemove: {ScopeTeam, allow(Owner, Admin), "remove a member", ""},
	TeamMemberRole:   {ScopeTeam, allow(Owner, Admin), "change a member's role", ""},
	TeamMemberList:   {ScopeTeam, allow(Owner, Admin), "list members and roles", ""},

	OwnerAdd:      {ScopeStore, allow(Owner), "name an owner", ""},
	OwnerRemove:   {ScopeStore, allow(Owner), "remove an owner", ""},
	AuditorAdd:    {ScopeStore, allow(Owner), "name an auditor", ""},
	AuditorRemove: {ScopeStore, allow(Owner), "remove an auditor", ""},

	MachineAdd:    {ScopeTeam, allow(Owner, Admin), "register a machine", ""},
	MachineRemove: {ScopeTeam, allow(Owner, Admin), "unregister a machine", ""},
	MachineMove:   {ScopeTeam, allow(Owner, Admin), "move a machine to another team", "admin of both teams (AllowedMove)"},
	MachineHostKeys: {ScopeTeam, allow(Owner, Admin), "import or forget a machine's host keys in the store",
		"workers on every host verify the machine against them; accept-new records a first key as the worker's actor"},
	MachineList:   {ScopeTeam, allow(Owner, Admin, Operator, Viewer), "list machines", ""},
	MachineRead:   {ScopeTeam, allow(Owner, Admin, Operator, Viewer), "show a machine (no secrets)", ""},
	MachineStatus: {ScopeTeam, allow(Owner, Admin, Operator, Viewer), "machine health and load", ""},
	KeyList:       {ScopeTeam, allow(Owner, Admin, Operator, Viewer), "list SSH keys: type, fingerprint, age, machines", "never key material"},
	KeyRotate: {ScopeTeam, allow(Owner, Admin), "rotate an SSH key on its machines, resume or roll back a rotation",
		"rotation by policy: the worker's actor needs it to queue and run rotation tasks"},
	CARead: {ScopeTeam, allow(Owner, Admin, Operator, Viewer), "show the team's SSH CA: public keys, TrustedUserCAKeys, which CA each machine trusts",
		"never key material"},
	CAInit: {ScopeTeam, allow(Owner, Admin), "create the team's SSH certificate authority (key in the team vault, or HashiCorp Vault's SSH engine)", ""},
	CARotate: {ScopeTeam, allow(Owner, Admin), "start, finish or abort a rotation of the team's SSH CA; set the host CAs its machines trust",
		"finishing retires the old CA only when every ssh-ca machine accepts the new one; certificates themselves are signed by workers for the tasks they run (task.run), audited as cert.sign"},

	TaskCreate: {ScopeTeam, allow(Owner, Admin, Operator), "submit a task", ""},
	TaskCancel: {ScopeTeam, allow(Owner, Admin, Operator), "cancel a task", ""},
	TaskList:   {ScopeTeam, allow(Owner, Admin, Operator, Viewer), "list the queue and tasks", ""},
	TaskRead:   {ScopeTeam, allow(Owner, Admin, Operator, Viewer), "task metadata, status, attempts", ""},
	TaskOutput: {ScopeTeam, allow(Owner, Admin, Operator), "task stdout and stderr", ""},
	TaskRun:    {ScopeTeam, allow(Owner, Admin, Operator), "execute tasks (worker)", "the actor a worker runs as"},

	VaultRead:   {ScopeTeam, allow(Owner, Admin), "read secret values", ""},
	VaultWrite:  {ScopeTeam, allow(Owner, Admin), "create or change secrets", ""},
	VaultDelete: {ScopeTeam, allow(Owner, Admin), "delete secrets", ""},
	VaultList:   {ScopeTeam, allow(Owner, Admin, Operator), "list secret keys (no values)", ""},
	VaultUse:    {ScopeTeam, allow(Owner, Admin, Operator), "use secrets in a task", "values reach the command, never the caller; output is masked (see Secret masking below) but a command can still print a value deliberately transformed, so grant it only to users trusted with the values; machine identities (machines/…) are never handed to tasks"},

	AuditRead: {ScopeTeam, allow(Owner, Admin, Auditor), "read audit records",
		"admin: records of their team only; all teams (empty team): owner, auditor"},
	AuditVerify: {ScopeStore, allow(Owner, Auditor), "verify the hash chain", ""},

	ScheduleCreate: {ScopeTeam, allow(Owner, Admin, Operator), "create a schedule (recurring task)",
		"also needs task.create (and vault.use for secrets); the creator becomes the schedule's owner, whose roles are checked again at every fire"},
	ScheduleUpdate:  {ScopeTeam, allow(Owner, Admin, Operator), "change a schedule", "as schedule.create; the updater becomes its owner"},
	ScheduleDelete:  {ScopeTeam, allow(Owner, Admin, Operator), "delete a schedule", "its tasks stay"},
	SchedulePause:   {ScopeTeam, allow(Owner, Admin, Operator), "pause or resume a schedule", ""},
	ScheduleTrigger: {ScopeTeam, allow(Owner, Admin, Operator), "run a schedule's task now", "as the caller: also needs task.create (and vault.use)"},
	ScheduleList:    {ScopeTeam, allow(Owner, Admin, Operator, Viewer), "list schedules and their fires", ""},

	WindowCreate: {ScopeTeam, allow(Owner, Admin), "create a maintenance window", "tasks of priority 4–5 (configurable) of its machines wait for it to open"},
	WindowDelete: {ScopeTeam, allow(Owner, Admin), "delete a maintenance window", ""},
	WindowList:   {ScopeTeam, allow(Owner, Admin, Operator, Viewer), "list maintenance windows", ""},
	MachineDrain: {ScopeTeam, allow(Owner, Admin), "drain or resume a machine", "draining: no new task starts on it; running ones finish"},
	QueuePause:   {ScopeTeam, allow(Owner, Admin), "pause or resume a team's queue", "paused: tasks are accepted, none is claimed"},
}

// Actions returns every action, in the matrix's row order.
func Actions() []Action { return append([]Action(nil), order...) }

// ParseAction parses an action name (exact, e.g. "task.cancel"). The error
// wraps [ErrUnknownAction].
func ParseAction(s string) (Action, error) {
	if a := Action(s); a.Valid() {
		return a, nil
	}
	return "", fmt.Errorf("%w %q", ErrUnknownAction, s)
}

// Valid reports whether a is one of the actions.
func (a Action) Valid() bool { _, ok := rules[a]; return ok }

// Scope returns the action's scope ("" for an unknown action).
func (a Action) Scope() Scope { return rules[a].scope }

// Description returns a short description of the action ("" if unknown).
func (a Action) Description() string { return rules[a].doc }

// String returns the action's name.
func (a Action) String() string { return string(a) }

// Row is one action's line of the matrix.
type Row struct {
	// Action is the action.
	Action Action
	// Scope is the action's scope.
	Scope Scope
	// Description says what the action does.
	Description string
	// Allowed maps each of the five roles to whether it permits the action:
	// a team role in its own team (never in another), a store role in every
	// team.
	Allowed map[Role]bool
	// Note qualifies the row (e.g. machine.move needs both teams); may be "".
	Note string
}

// Matrix returns the whole role matrix, one Row per action in Actions order,
// each with all five roles. The rows are copies.
func Matrix() []Row {
	rows := make([]Row, 0, len(order))
	for _, a := range order {
		ru := rules[a]
		m := make(map[Role]bool, 5)
		for _, r := range Roles() {
			m[r] = ru.roles[r]
		}
		rows = append(rows, Row{Action: a, Scope: ru.scope, Description: ru.doc, Allowed: m, Note: ru.note})
	}
	return rows
}

// MarkdownTable renders [Matrix] as a Markdown table with a legend: one row
// per action, one column per role, ✓ for allowed and · for denied.
func MarkdownTable() string {
	var b strings.Builder
	b.WriteString("| action | scope | ")
	for _, r := range Roles() {
		b.WriteString(string(r) + " | ")
	}
	b.WriteString("what | note |\n|---|---|")
	for range Roles() {
		b.WriteString(":-:|")
	}
	b.WriteString("---|---|\n")
	for _, row := range Matrix() {
		fmt.Fprintf(&b, "| `%s` | %s | ", row.Action, row.Scope)
		for _, r := range Roles() {
			if row.Allowed[r] {
				b.WriteString("✓ | ")
			} else {
				b.WriteString("· | ")
			}
		}
		fmt.Fprintf(&b, "%s | %s |\n", row.Description, row.Note)
	}
	b.WriteString("\nowner and auditor are store-wide roles and apply to every team; admin, operator and viewer " +
		"apply only to the team in which they are held, never to another team. Scope store: the action " +
		"concerns the whole store. Anything not marked ✓ is denied, and so is every unknown action or role.\n")
	return b.String()
}
