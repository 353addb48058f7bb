package postgres

// migrations is the ordered list of schema changes, applied on Open by
// jackc/tern's migrate package: migrations[i] takes the schema from version
// i to i+1, each in its own transaction together with the version update
// (table rediacc_schema_version), under tern's advisory lock so that
// processes opening the store at once migrate it once. Append only: a
// released migration never changes.
//
// Times are bigint unix nanoseconds UTC (NULL for the zero time), as in the
// SQLite engine, except audit.time (milliseconds): they come back exactly
// as given, so internal/sched sees the same instants in every engine.
//
// tasks_pending serves Claim: the machines with PENDING tasks (a loose
// index scan) and each (machine, base priority) FIFO by enqueued_at then
// seq.
// tasks_active serves the per-machine running counts. Text columns use the
// "C" collation: names sort in byte order, as in the other engines.
//
// The audit table is append-only by the engine's own means: a trigger
// refuses every UPDATE, DELETE and TRUNCATE, except the DELETE that
// rediacc_trim_audit (SECURITY DEFINER, the store's only trim path) does
// for records at or below the base it has just moved. Deployments that
// separate roles grant the roles using the store SELECT and INSERT on audit
// and EXECUTE on rediacc_trim_audit, never UPDATE or DELETE (see
// docs/POSTGRES.md).
var migrations = []string{
	// 1: the whole store as of the SQLite engine's schema version 5.
	`
CREATE TABLE teams (
	name        text COLLATE "C" PRIMARY KEY,
	description text COLLATE "C" NOT NULL DEFAULT '',
	created_at  bigint NOT NULL
);
INSERT INTO teams (name, created_at)
	VALUES ('default', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000);

CREATE TABLE machines (
	name       text COLLATE "C" PRIMARY KEY,
	team       text COLLATE "C" NOT NULL,
	host       text COLLATE "C" NOT NULL,
	port       integer NOT NULL,
	user_name  text COLLATE "C" NOT NULL,
	config     bytea,
	created_at bigint NOT NULL,
	updated_at bigint NOT NULL,
	health     bytea,
	health_at  bigint
);
CREATE INDEX machines_team ON machines (team, name);

CREATE TABLE tasks (
	seq              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id               text COLLATE "C" NOT NULL UNIQUE,
	idempotency_key  text COLLATE "C" NOT NULL DEFAULT '',
	team             text COLLATE "C" NOT NULL,
	machine          text COLLATE "C" NOT NULL,
	priority         smallint NOT NULL CHECK (priority BETWEEN 1 AND 5),
	spec             bytea,
	status           text COLLATE "C" NOT NULL CHECK (status IN ('PENDING','ASSIGNED','PROCESSING','COMPLETED','FAILED','CANCELLED')),
	attempts         integer NOT NULL DEFAULT 0,
	history          bytea, -- JSON array of attempts (bytes kept as written)
	created_at       bigint NOT NULL,
	enqueued_at      bigint NOT NULL,
	ready_at         bigint NOT NULL,
	started_at       bigint,
	completed_at     bigint,
	lease_owner      text COLLATE "C" NOT NULL DEFAULT '',
	lease_expires_at bigint,
	cancel_requested boolean NOT NULL DEFAULT false,
	exit_code        integer,
	stdout           bytea,
	stderr           bytea,
	stdout_truncated boolean NOT NULL DEFAULT false,
	stderr_truncated boolean NOT NULL DEFAULT false,
	error            text COLLATE "C" NOT NULL DEFAULT ''
);
CREATE INDEX tasks_pending ON tasks (machine, priority, enqueued_at, seq) WHERE status = 'PENDING';
CREATE INDEX tasks_ready ON tasks (ready_at) WHERE status = 'PENDING';
CREATE INDEX tasks_active ON tasks (machine) WHERE status IN ('ASSIGNED', 'PROCESSING');
CREATE INDEX tasks_lease ON tasks (lease_expires_at) WHERE status IN ('ASSIGNED', 'PROCESSING');
CREATE UNIQUE INDEX tasks_idempotency_key ON tasks (idempotency_key) WHERE idempotency_key <> '';
CREATE INDEX tasks_machine ON tasks (machine, status);
CREATE INDEX tasks_team ON tasks (team, status);
CREATE INDEX tasks_created ON tasks (created_at, id);
CREATE INDEX tasks_completed ON tasks (completed_at, seq) WHERE completed_at IS NOT NULL;

CREATE TABLE members (
	team      text COLLATE "C" NOT NULL REFERENCES teams (name) ON UPDATE CASCADE ON DELETE CASCADE,
	user_name text COLLATE "C" NOT NULL,
	role      text COLLATE "C" NOT NULL,
	added_at  bigint NOT NULL,
	PRIMARY KEY (team, user_name)
);
CREATE INDEX members_user ON members (user_name);

CREATE TABLE store_roles (
	user_name text COLLATE "C" NOT NULL,
	role      text COLLATE "C" NOT NULL,
	added_at  bigint NOT NULL,
	PRIMARY KEY (user_name, role)
);
CREATE INDEX store_roles_role ON store_roles (role);

CREATE TABLE audit (
	seq         bigint PRIMARY KEY,
	time        bigint NOT NULL,
	actor       text COLLATE "C" NOT NULL,
	action      text COLLATE "C" NOT NULL,
	entity_type text COLLATE "C" NOT NULL,
	entity_id   text COLLATE "C" NOT NULL,
	team        text COLLATE "C" NOT NULL,
	result      text COLLATE "C" NOT NULL,
	details     text COLLATE "C",
	prev_hash   text COLLATE "C" NOT NULL,
	hash        text COLLATE "C" NOT NULL,
	key_id      text COLLATE "C" NOT NULL DEFAULT '' -- the audit keyring's key that sealed it ('' = version 1, plain SHA-256)
);
CREATE INDEX audit_time ON audit (time);
CREATE INDEX audit_actor ON audit (actor);
CREATE INDEX audit_team ON audit (team);
CREATE INDEX audit_action ON audit (action);

CREATE TABLE audit_head (
	id   integer PRIMARY KEY CHECK (id = 1),
	seq  bigint NOT NULL,
	hash text COLLATE "C" NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '');

CREATE TABLE audit_base (
	id   integer PRIMARY KEY CHECK (id = 1),
	seq  bigint NOT NULL,
	hash text COLLATE "C" NOT NULL
);
INSERT INTO audit_base (id, seq, hash) VALUES (1, 0, '');

-- Append-only audit trail: no UPDATE, no TRUNCATE, no DELETE except the
-- trim below, which deletes only records at or below the base it moved
-- first in the same transaction and marks the transaction as trimming.
CREATE FUNCTION rediacc_audit_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'DELETE'
		AND current_setting('rediacc.audit_trim', true) = 'on'
		AND OLD.seq <= (SELECT seq FROM audit_base WHERE id = 1) THEN
		RETURN OLD;
	END IF;
	RAISE EXCEPTION 'rediacc: the audit trail is append-only (% refused on %)', TG_OP, TG_TABLE_NAME
		USING ERRCODE = 'insufficient_privilege',
		HINT = 'old records leave the store only through rediacc prune (rediacc_trim_audit)';
END;
$$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
	FOR EACH ROW EXECUTE FUNCTION rediacc_audit_guard();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
	FOR EACH STATEMENT EXECUTE FUNCTION rediacc_audit_guard();

-- rediacc_trim_audit deletes the records with seq <= upto, moving the base
-- to record upto first. It returns the new base's hash, or NULL when
-- record upto does not exist (nothing changed). Callers check upto
-- against the base and the head before.
CREATE FUNCTION rediacc_trim_audit(upto bigint) RETURNS text
	LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
	h text COLLATE "C";
BEGIN
	SELECT hash INTO h FROM audit WHERE seq = upto;
	IF h IS NULL THEN
		RETURN NULL;
	END IF;
	UPDATE audit_base SET seq = upto, hash = h WHERE id = 1;
	PERFORM set_config('rediacc.audit_trim', 'on', true);
	DELETE FROM audit WHERE seq <= upto;
	PERFORM set_config('rediacc.audit_trim', 'off', true);
	RETURN h;
END;
$$;

-- Fair claims (internal/sched): each team's start and finish tags
-- (virtual time) of its last task claimed, each machine's stamp of its
-- last task claimed; the largest start and stamp are the rule's clocks.
CREATE TABLE fair_teams (
	team   text COLLATE "C" PRIMARY KEY,
	start  bigint NOT NULL,
	finish bigint NOT NULL
);
CREATE INDEX fair_teams_start ON fair_teams (start);
CREATE TABLE fair_machines (
	machine text COLLATE "C" PRIMARY KEY,
	stamp   bigint NOT NULL
);
CREATE INDEX fair_machines_stamp ON fair_machines (stamp);

-- Workers sharing the store: one row per running worker (Run), with its
-- last heartbeat; leader_pid is the backend pid of the connection holding
-- the leader's advisory lock while this worker leads.
CREATE TABLE workers (
	id           text COLLATE "C" PRIMARY KEY,
	host         text COLLATE "C" NOT NULL,
	pid          integer NOT NULL,
	started_at   bigint NOT NULL,
	heartbeat_at bigint NOT NULL,
	leader_pid   integer
);
`,

	// 2: the SSH key inventory (store.KeyEngine): one row per key machines
	// log in with; data is opaque JSON owned by the root package (never key
	// material); revision serves conditional updates (SQLite schema 6).
	`
CREATE TABLE ssh_keys (
	id          text COLLATE "C" PRIMARY KEY,
	team_id     text COLLATE "C" NOT NULL,
	fingerprint text COLLATE "C" NOT NULL,
	data        bytea,
	revision    bigint NOT NULL,
	created_at  bigint NOT NULL,
	updated_at  bigint NOT NULL
);
CREATE INDEX ssh_keys_team ON ssh_keys (team_id, id);
`,
	// 3: the log archive in the database (schema_fleet.go).
	migrationArchive,
	// 4: database logins and the impersonation grant (schema_fleet.go).
	migrationLogins,

	// 5: identity (as the SQLite engine's migration 7). Teams and machines
	// get immutable ids (an existing team or machine gets its name as its
	// id); names are unique among live rows only (deleted_at IS NULL); every
	// reference is by id: members.team_id, machines.team_id, tasks.team_id
	// and tasks.machine_id (the renamed name columns, whose values are the
	// ids now; their indexes follow the rename), fair_teams.team and
	// fair_machines.machine hold ids from now on, and so does
	// ssh_keys.team_id (migration 2: it held team names, the ids given
	// here). Deleting a team or a machine keeps its row. Idempotency keys
	// are unique per team. The members → teams foreign key goes: the engine
	// keeps the references (a team is never deleted, only marked).
	`
ALTER TABLE members DROP CONSTRAINT members_team_fkey;
ALTER TABLE teams ADD COLUMN id text COLLATE "C";
UPDATE teams SET id = name;
ALTER TABLE teams ALTER COLUMN id SET NOT NULL;
ALTER TABLE teams DROP CONSTRAINT teams_pkey;
ALTER TABLE teams ADD PRIMARY KEY (id);
ALTER TABLE teams ADD COLUMN deleted_at bigint;
CREATE UNIQUE INDEX teams_live_name ON teams (name) WHERE deleted_at IS NULL;
ALTER TABLE members RENAME COLUMN team TO team_id;

ALTER TABLE machines ADD COLUMN id text COLLATE "C";
UPDATE machines SET id = name;
ALTER TABLE machines ALTER COLUMN id SET NOT NULL;
ALTER TABLE machines DROP CONSTRAINT machines_pkey;
ALTER TABLE machines ADD PRIMARY KEY (id);
ALTER TABLE machines ADD COLUMN deleted_at bigint;
ALTER TABLE machines RENAME COLUMN team TO team_id;
CREATE UNIQUE INDEX machines_live_name ON machines (name) WHERE deleted_at IS NULL;
DROP INDEX machines_team;
CREATE INDEX machines_team ON machines (team_id, name) WHERE deleted_at IS NULL;

ALTER TABLE tasks RENAME COLUMN team TO team_id;
ALTER TABLE tasks RENAME COLUMN machine TO machine_id;
DROP INDEX tasks_idempotency_key;
CREATE UNIQUE INDEX tasks_idempotency_key ON tasks (team_id, idempotency_key) WHERE idempotency_key <> '';
`,
	// 6: blobs: host keys and encrypted vaults (schema_fleet.go).
	migrationBlobs,

	// 7: the kind of a task's error, stored next to its text (opaque to
	// the engine; '' when none), as in the SQLite engine's migration 9.
	// Attempts keep theirs (and their remote process) in history.
	`
ALTER TABLE tasks ADD COLUMN error_kind text COLLATE "C" NOT NULL DEFAULT '';
`,

	// 8: schedules, gates and maintenance windows (schema_schedule.go).
	migrationSchedules,

	// 9: the alert outbox (schema_outbox.go).
	migrationOutbox,
}
