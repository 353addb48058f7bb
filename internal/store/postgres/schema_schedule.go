package postgres

// migrationSchedules: schedules and their fires, gates (a machine
// draining, a team's queue paused) and maintenance windows, as in the
// SQLite engine. schedule_fires_key is the unique key (schedule, scheduled
// time) of scheduled fires that makes each fire exactly once whatever the
// number of workers (manual fires have none).
const migrationSchedules = `
CREATE TABLE schedules (
	id            text COLLATE "C" PRIMARY KEY,
	name          text COLLATE "C" NOT NULL UNIQUE,
	team          text COLLATE "C" NOT NULL,
	owner         text COLLATE "C" NOT NULL,
	spec          bytea,
	paused        boolean NOT NULL DEFAULT false,
	next_fire_at  bigint,
	version       bigint NOT NULL,
	created_at    bigint NOT NULL,
	updated_at    bigint NOT NULL,
	last_fire     bytea, -- JSON of the last fire, NULL before the first
	open_task_ids text[] COLLATE "C"
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE next_fire_at IS NOT NULL AND NOT paused;
CREATE INDEX schedules_team ON schedules (team, name);

CREATE TABLE schedule_fires (
	seq           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	schedule_id   text COLLATE "C" NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
	scheduled_at  bigint NOT NULL,
	manual        boolean NOT NULL,
	fired_at      bigint NOT NULL,
	outcome       text COLLATE "C" NOT NULL,
	reason        text COLLATE "C" NOT NULL DEFAULT '',
	task_ids      text[] COLLATE "C",
	cancelled_ids text[] COLLATE "C",
	missed_from   bigint,
	missed_to     bigint,
	catch_up      boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX schedule_fires_key ON schedule_fires (schedule_id, scheduled_at) WHERE NOT manual;
CREATE INDEX schedule_fires_schedule ON schedule_fires (schedule_id, scheduled_at);

CREATE TABLE gates (
	kind   text COLLATE "C" NOT NULL CHECK (kind IN ('drain', 'pause')),
	target text COLLATE "C" NOT NULL,
	since  bigint NOT NULL,
	actor  text COLLATE "C" NOT NULL,
	reason text COLLATE "C" NOT NULL DEFAULT '',
	PRIMARY KEY (kind, target)
);

CREATE TABLE windows (
	id         text COLLATE "C" PRIMARY KEY,
	team       text COLLATE "C" NOT NULL,
	machine    text COLLATE "C" NOT NULL DEFAULT '',
	cron       text COLLATE "C" NOT NULL,
	time_zone  text COLLATE "C" NOT NULL DEFAULT '',
	duration   bigint NOT NULL,
	hold_from  smallint NOT NULL CHECK (hold_from BETWEEN 1 AND 5),
	created_at bigint NOT NULL,
	actor      text COLLATE "C" NOT NULL
);
CREATE INDEX windows_team ON windows (team, machine);
`
