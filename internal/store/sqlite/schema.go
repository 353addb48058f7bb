package sqlite

// applicationID marks a rediacc store in the SQLite header ("rdcc").
const applicationID = 0x72646363

// migrations is the ordered list of schema changes; migrations[i] takes the
// schema from version i to i+1. Append only: a released migration never
// changes. The schema version of a file is the single row of rediacc_schema.
//
// Times are INTEGER unix nanoseconds UTC (NULL for the zero time), except
// audit.time (milliseconds, see migration 2): they
// come back exactly as given, so internal/sched sees the same instants in
// every engine. tasks_pending serves Claim (see migration 4; the rowid seq
// ends every index).
var migrations = []string{
	// 1: machines and tasks.
	`
CREATE TABLE machines (
	name       TEXT PRIMARY KEY,
	team       TEXT NOT NULL,
	host       TEXT NOT NULL,
	port       INTEGER NOT NULL,
	user_name  TEXT NOT NULL,
	config     BLOB,
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX machines_team ON machines (team, name);

CREATE TABLE tasks (
	seq              INTEGER PRIMARY KEY AUTOINCREMENT,
	id               TEXT NOT NULL UNIQUE,
	idempotency_key  TEXT NOT NULL DEFAULT '',
	team             TEXT NOT NULL,
	machine          TEXT NOT NULL,
	priority         INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 5),
	spec             BLOB,
	status           TEXT NOT NULL CHECK (status IN ('PENDING','ASSIGNED','PROCESSING','COMPLETED','FAILED','CANCELLED')),
	attempts         INTEGER NOT NULL DEFAULT 0,
	history          TEXT,
	created_at       INTEGER NOT NULL,
	enqueued_at      INTEGER NOT NULL,
	ready_at         INTEGER NOT NULL,
	started_at       INTEGER,
	completed_at     INTEGER,
	lease_owner      TEXT NOT NULL DEFAULT '',
	lease_expires_at INTEGER,
	cancel_requested INTEGER NOT NULL DEFAULT 0,
	exit_code        INTEGER,
	stdout           BLOB,
	stderr           BLOB,
	stdout_truncated INTEGER NOT NULL DEFAULT 0,
	stderr_truncated INTEGER NOT NULL DEFAULT 0,
	error            TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX tasks_status_ready ON tasks (status, ready_at);
CREATE INDEX tasks_claim ON tasks (status, priority, enqueued_at); -- rowid (seq) ends every index
CREATE UNIQUE INDEX tasks_idempotency_key ON tasks (idempotency_key) WHERE idempotency_key <> '';
CREATE INDEX tasks_machine ON tasks (machine, status);
CREATE INDEX tasks_team ON tasks (team, status);
CREATE INDEX tasks_created ON tasks (created_at, id);
`,

	// 2: teams, members, store-wide roles and the audit trail. The team
	// "default" is created here, with a team for every name the machines and
	// tasks of an older file already use (those with none join "default").
	// audit.time is unix milliseconds (the chain's precision, any year
	// 1..9999); details is a JSON object or NULL when empty; audit_head is
	// the chain's head kept apart from the records, so that deleting the
	// last records is detected.
	`
CREATE TABLE teams (
	name        TEXT PRIMARY KEY,
	description TEXT NOT NULL DEFAULT '',
	created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE members (
	team      TEXT NOT NULL REFERENCES teams (name) ON UPDATE CASCADE ON DELETE CASCADE,
	user_name TEXT NOT NULL,
	role      TEXT NOT NULL,
	added_at  INTEGER NOT NULL,
	PRIMARY KEY (team, user_name)
) STRICT;
CREATE INDEX members_user ON members (user_name);

CREATE TABLE store_roles (
	user_name TEXT NOT NULL,
	role      TEXT NOT NULL,
	added_at  INTEGER NOT NULL,
	PRIMARY KEY (user_name, role)
) STRICT;
CREATE INDEX store_roles_role ON store_roles (role);

CREATE TABLE audit (
	seq         INTEGER PRIMARY KEY,
	time        INTEGER NOT NULL,
	actor       TEXT NOT NULL,
	action      TEXT NOT NULL,
	entity_type TEXT NOT NULL,
	entity_id   TEXT NOT NULL,
	team        TEXT NOT NULL,
	result      TEXT NOT NULL,
	details     TEXT,
	prev_hash   TEXT NOT NULL,
	hash        TEXT NOT NULL
) STRICT;
CREATE INDEX audit_time ON audit (time);
CREATE INDEX audit_actor ON audit (actor);
CREATE INDEX audit_team ON audit (team);
CREATE INDEX audit_action ON audit (action);

CREATE TABLE audit_head (
	id   INTEGER PRIMARY KEY CHECK (id = 1),
	seq  INTEGER NOT NULL,
	hash TEXT NOT NULL
) STRICT;
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '');

UPDATE machines SET team = 'default' WHERE team = '';
UPDATE tasks SET team = 'default' WHERE team = '';
INSERT INTO teams (name, created_at)
	SELECT name, CAST(unixepoch('subsec') * 1000 AS INTEGER) * 1000000
	FROM (SELECT 'default' AS name UNION SELECT team FROM machines UNION SELECT team FROM tasks);
`,

	// 3: machine health, the audit trail's base, finished-task index.
	// machines.health is the last health sample (opaque JSON, NULL when
	// none) and health_at its time. audit_base is the Seq and Hash of the
	// last record TrimAudit deleted (0, '' while nothing was trimmed): the
	// stored chain continues from it. tasks_completed serves
	// TaskFilter.CompletedAfter and ListPrunable; only finished tasks have a
	// completed_at, so the partial index holds just those.
	`
ALTER TABLE machines ADD COLUMN health BLOB;
ALTER TABLE machines ADD COLUMN health_at INTEGER;

CREATE TABLE audit_base (
	id   INTEGER PRIMARY KEY CHECK (id = 1),
	seq  INTEGER NOT NULL,
	hash TEXT NOT NULL
) STRICT;
INSERT INTO audit_base (id, seq, hash) VALUES (1, 0, '');

CREATE INDEX tasks_completed ON tasks (completed_at) WHERE completed_at IS NOT NULL;
`,

	// 4: keyed audit records. key_id names the key of the audit keyring
	// that sealed the record (hash is then an HMAC-SHA256, record version
	// 2); '' for the version 1 records written before (plain SHA-256). The
	// keys themselves are never in the store.
	`
ALTER TABLE audit ADD COLUMN key_id TEXT NOT NULL DEFAULT '';
`,

	// 5: fair claims (internal/sched). tasks_pending holds the PENDING tasks
	// by machine, priority and enqueued_at (and seq, the rowid): Claim reads
	// the machines with pending work and each (machine, priority) FIFO from
	// it, and it replaces tasks_claim. fair_teams keeps each team's start and
	// finish tags (virtual time) of its last task claimed, fair_machines each
	// machine's stamp of its last task claimed; the largest start and stamp
	// are the claim rule's clocks.
	`
CREATE INDEX tasks_pending ON tasks (machine, priority, enqueued_at) WHERE status = 'PENDING';
DROP INDEX tasks_claim;
CREATE TABLE fair_teams (
	team   TEXT PRIMARY KEY,
	start  INTEGER NOT NULL,
	finish INTEGER NOT NULL
) STRICT;
CREATE INDEX fair_teams_start ON fair_teams (start);
CREATE TABLE fair_machines (
	machine TEXT PRIMARY KEY,
	stamp   INTEGER NOT NULL
) STRICT;
CREATE INDEX fair_machines_stamp ON fair_machines (stamp);
`,

	// 6: the SSH key inventory (store.KeyEngine): one row per key machines
	// log in with; data is opaque JSON owned by the root package (never key
	// material); revision serves conditional updates.
	`
CREATE TABLE ssh_keys (
	id          TEXT PRIMARY KEY,
	team_id     TEXT NOT NULL,
	fingerprint TEXT NOT NULL,
	data        BLOB,
	revision    INTEGER NOT NULL,
	created_at  INTEGER NOT NULL,
	updated_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX ssh_keys_team ON ssh_keys (team_id);
`,

	// 7: identity. Teams and machines get immutable ids (an existing team or
	// machine gets its name as its id, so vault files, HashiCorp paths and
	// audit records written with a team's name keep matching it); names are
	// unique among live rows only (deleted_at IS NULL) and every reference
	// is by id: members.team_id, machines.team_id, tasks.team_id and
	// tasks.machine_id (the old name columns, whose values are the ids now).
	// Deleting a team or a machine keeps its row (deleted_at), so its tasks
	// and audit records still name it. Idempotency keys are unique per team.
	// The columns renamed here keep their indexes (tasks_pending of
	// migration 5 now orders by machine_id); fair_teams.team and
	// fair_machines.machine hold ids from now on (the names they held are
	// the ids the migration gives), and so does ssh_keys.team_id (migration
	// 6: it held team names).
	// members is rebuilt before teams (its old foreign key names teams), and
	// no foreign key is declared: the engine keeps the references.
	`
CREATE TABLE teams_v7 (
	id          TEXT PRIMARY KEY,
	name        TEXT NOT NULL,
	description TEXT NOT NULL DEFAULT '',
	created_at  INTEGER NOT NULL,
	deleted_at  INTEGER
) STRICT;
INSERT INTO teams_v7 (id, name, description, created_at) SELECT name, name, description, created_at FROM teams;
CREATE TABLE members_v7 (
	team_id   TEXT NOT NULL,
	user_name TEXT NOT NULL,
	role      TEXT NOT NULL,
	added_at  INTEGER NOT NULL,
	PRIMARY KEY (team_id, user_name)
) STRICT;
INSERT INTO members_v7 (team_id, user_name, role, added_at) SELECT team, user_name, role, added_at FROM members;
DROP TABLE members;
DROP TABLE teams;
ALTER TABLE teams_v7 RENAME TO teams;
ALTER TABLE members_v7 RENAME TO members;
CREATE UNIQUE INDEX teams_live_name ON teams (name) WHERE deleted_at IS NULL;
CREATE INDEX members_user ON members (user_name);

CREATE TABLE machines_v7 (
	id         TEXT PRIMARY KEY,
	name       TEXT NOT NULL,
	team_id    TEXT NOT NULL,
	host       TEXT NOT NULL,
	port       INTEGER NOT NULL,
	user_name  TEXT NOT NULL,
	config     BLOB,
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL,
	health     BLOB,
	health_at  INTEGER,
	deleted_at INTEGER
) STRICT;
INSERT INTO machines_v7 (id, name, team_id, host, port, user_name, config, created_at, updated_at, health, health_at)
	SELECT name, name, team, host, port, user_name, config, created_at, updated_at, health, health_at FROM machines;
DROP TABLE machines;
ALTER TABLE machines_v7 RENAME TO machines;
CREATE UNIQUE INDEX machines_live_name ON machines (name) WHERE deleted_at IS NULL;
CREATE INDEX machines_team ON machines (team_id, name) WHERE deleted_at IS NULL;

ALTER TABLE tasks RENAME COLUMN team TO team_id;
ALTER TABLE tasks RENAME COLUMN machine TO machine_id;
DROP INDEX tasks_idempotency_key;
CREATE UNIQUE INDEX tasks_idempotency_key ON tasks (team_id, idempotency_key) WHERE idempotency_key <> '';
`,

	// 8: blobs (store.BlobEngine): machines' host keys, encrypted team
	// vaults; revision serves check-and-set puts.
	`
CREATE TABLE blobs (
	kind       TEXT NOT NULL,
	key        TEXT NOT NULL,
	data       BLOB,
	revision   INTEGER NOT NULL,
	updated_at INTEGER NOT NULL,
	PRIMARY KEY (kind, key)
) STRICT;
`,

	// 9: the kind of a task's error, stored next to its text (opaque to
	// the engine; '' when none). Attempts keep theirs in history.
	`
ALTER TABLE tasks ADD COLUMN error_kind TEXT NOT NULL DEFAULT '';
`,

	// 10: schedules and their fires (schema_schedule.go).
	migrationSchedules,
	// 11: gates and maintenance windows (schema_schedule.go).
	migrationGates,

	// 12: the alert outbox (outbox.go). alerts holds each alert once (its
	// payload is opaque JSON of the root package); alert_deliveries its
	// delivery to each endpoint, leased like tasks while being attempted;
	// alert_endpoints the endpoints new alerts are delivered to, with when
	// a worker last served each; alert_conditions the rate limit's memory
	// per condition key (last alert sent, repeats held back since).
	// alert_deliveries_due serves claims (earliest due first) and the
	// backlog; rows of delivered, failed and expired deliveries leave it.
	`
CREATE TABLE alerts (
	seq        INTEGER PRIMARY KEY AUTOINCREMENT,
	id         TEXT NOT NULL UNIQUE,
	kind       TEXT NOT NULL,
	cond_key   TEXT NOT NULL,
	team       TEXT NOT NULL DEFAULT '',
	task_id    TEXT NOT NULL DEFAULT '',
	payload    BLOB,
	created_at INTEGER NOT NULL,
	suppressed INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX alerts_created ON alerts (created_at);
CREATE INDEX alerts_team ON alerts (team, seq);
CREATE INDEX alerts_task ON alerts (task_id) WHERE task_id <> '';

CREATE TABLE alert_deliveries (
	alert_seq        INTEGER NOT NULL REFERENCES alerts (seq) ON DELETE CASCADE,
	endpoint         TEXT NOT NULL,
	state            TEXT NOT NULL CHECK (state IN ('pending','delivered','failed','expired')),
	attempts         INTEGER NOT NULL DEFAULT 0,
	next_attempt_at  INTEGER NOT NULL,
	last_attempt_at  INTEGER,
	done_at          INTEGER,
	last_error       TEXT NOT NULL DEFAULT '',
	lease_owner      TEXT NOT NULL DEFAULT '',
	lease_expires_at INTEGER,
	PRIMARY KEY (alert_seq, endpoint)
) STRICT;
CREATE INDEX alert_deliveries_due ON alert_deliveries (endpoint, next_attempt_at, alert_seq) WHERE state = 'pending';

CREATE TABLE alert_endpoints (
	name          TEXT PRIMARY KEY,
	registered_at INTEGER NOT NULL,
	last_seen_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE alert_conditions (
	cond_key     TEXT PRIMARY KEY,
	last_sent_at INTEGER NOT NULL,
	last_seen_at INTEGER NOT NULL,
	suppressed   INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX alert_conditions_seen ON alert_conditions (last_seen_at);
`,

	// 13: task counts per status, priority, team and machine, kept by
	// triggers, for Depth (schema_counts.go).
	migrationTaskCounts,
}
