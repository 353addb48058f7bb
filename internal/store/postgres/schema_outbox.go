package postgres

// migrationOutbox: the alert outbox (outbox.go), as the SQLite engine's
// migration 7.
// alerts holds each alert once (its payload is opaque JSON of the root
// package); alert_deliveries its delivery to each endpoint, leased like
// tasks while being attempted; alert_endpoints the endpoints new alerts
// are delivered to, with when a worker last served each;
// alert_conditions the rate limit's memory per condition key.
// alert_deliveries_due serves claims (earliest due first, SKIP LOCKED)
// and the backlog.
const migrationOutbox = `
CREATE TABLE alerts (
	seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id         text COLLATE "C" NOT NULL UNIQUE,
	kind       text COLLATE "C" NOT NULL,
	cond_key   text COLLATE "C" NOT NULL,
	team       text COLLATE "C" NOT NULL DEFAULT '',
	task_id    text COLLATE "C" NOT NULL DEFAULT '',
	payload    bytea,
	created_at bigint NOT NULL,
	suppressed integer NOT NULL DEFAULT 0
);
CREATE INDEX alerts_created ON alerts (created_at);
CREATE INDEX alerts_team ON alerts (team, seq);
CREATE INDEX alerts_task ON alerts (task_id) WHERE task_id <> '';

CREATE TABLE alert_deliveries (
	alert_seq        bigint NOT NULL REFERENCES alerts (seq) ON DELETE CASCADE,
	endpoint         text COLLATE "C" NOT NULL,
	state            text COLLATE "C" NOT NULL CHECK (state IN ('pending','delivered','failed','expired')),
	attempts         integer NOT NULL DEFAULT 0,
	next_attempt_at  bigint NOT NULL,
	last_attempt_at  bigint,
	done_at          bigint,
	last_error       text COLLATE "C" NOT NULL DEFAULT '',
	lease_owner      text COLLATE "C" NOT NULL DEFAULT '',
	lease_expires_at bigint,
	PRIMARY KEY (alert_seq, endpoint)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (endpoint, next_attempt_at, alert_seq) WHERE state = 'pending';

CREATE TABLE alert_endpoints (
	name          text COLLATE "C" PRIMARY KEY,
	registered_at bigint NOT NULL,
	last_seen_at  bigint NOT NULL
);

CREATE TABLE alert_conditions (
	cond_key     text COLLATE "C" PRIMARY KEY,
	last_sent_at bigint NOT NULL,
	last_seen_at bigint NOT NULL,
	suppressed   integer NOT NULL DEFAULT 0
);
CREATE INDEX alert_conditions_seen ON alert_conditions (last_seen_at);
`
