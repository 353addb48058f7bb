package sqlite

// migrationSchedules: schedules (recurring tasks) and their fires.
// schedules.team is the team's id; spec is the root package's opaque JSON;
// next_fire_at is NULL while paused; version grows with every change
// (fires and updates apply only at the version they were decided from);
// last_fire is the last fire (JSON, NULL before the first) and
// open_task_ids the tasks of earlier fires not known finished (JSON
// array). schedule_fires holds each fire once: schedule_fires_key is the
// unique key (schedule, scheduled time) of scheduled fires that makes a
// fire exactly once whatever the number of workers (manual fires have
// none).
const migrationSchedules = `
CREATE TABLE schedules (
	id            TEXT PRIMARY KEY,
	name          TEXT NOT NULL UNIQUE,
	team          TEXT NOT NULL,
	owner         TEXT NOT NULL,
	spec          BLOB,
	paused        INTEGER NOT NULL DEFAULT 0,
	next_fire_at  INTEGER,
	version       INTEGER NOT NULL,
	created_at    INTEGER NOT NULL,
	updated_at    INTEGER NOT NULL,
	last_fire     TEXT,
	open_task_ids TEXT
) STRICT;
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE next_fire_at IS NOT NULL;
CREATE INDEX schedules_team ON schedules (team, name);

CREATE TABLE schedule_fires (
	seq           INTEGER PRIMARY KEY,
	schedule_id   TEXT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
	scheduled_at  INTEGER NOT NULL,
	manual        INTEGER NOT NULL,
	fired_at      INTEGER NOT NULL,
	outcome       TEXT NOT NULL,
	reason        TEXT NOT NULL DEFAULT '',
	task_ids      TEXT,
	cancelled_ids TEXT,
	missed_from   INTEGER,
	missed_to     INTEGER,
	catch_up      INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE UNIQUE INDEX schedule_fires_key ON schedule_fires (schedule_id, scheduled_at) WHERE manual = 0;
CREATE INDEX schedule_fires_schedule ON schedule_fires (schedule_id, scheduled_at);
`

// migrationGates: gates (a machine draining, a team's queue paused) and
// maintenance windows. gates.target is the machine's or the team's id;
// windows.machine is empty for a window of every machine of the team. Claims
// read both tables in their transaction (they stay small).
const migrationGates = `
CREATE TABLE gates (
	kind   TEXT NOT NULL CHECK (kind IN ('drain', 'pause')),
	target TEXT NOT NULL,
	since  INTEGER NOT NULL,
	actor  TEXT NOT NULL,
	reason TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (kind, target)
) STRICT;

CREATE TABLE windows (
	id         TEXT PRIMARY KEY,
	team       TEXT NOT NULL,
	machine    TEXT NOT NULL DEFAULT '',
	cron       TEXT NOT NULL,
	time_zone  TEXT NOT NULL DEFAULT '',
	duration   INTEGER NOT NULL,
	hold_from  INTEGER NOT NULL CHECK (hold_from BETWEEN 1 AND 5),
	created_at INTEGER NOT NULL,
	actor      TEXT NOT NULL
) STRICT;
CREATE INDEX windows_team ON windows (team, machine);
`
