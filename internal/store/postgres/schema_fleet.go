package postgres

// Migrations of what a worker on any host needs from the store (the log
// archive, …), listed in schema.go's migrations.

// migrationArchive: the log archive (archive.go). Append-only like the
// audit table: a trigger refuses UPDATE and TRUNCATE, and DELETE of audit
// records (retention removes other kinds by archive day).
const migrationArchive = `
CREATE TABLE archive (
	seq   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	kind  text COLLATE "C" NOT NULL,
	key   text COLLATE "C" NOT NULL,
	at    bigint NOT NULL,               -- the record's time, unix ns
	day   text COLLATE "C" NOT NULL,     -- UTC day it was archived (retention)
	value bytea NOT NULL                 -- the record's JSON
);
CREATE INDEX archive_key ON archive (kind, key, seq);
CREATE INDEX archive_kind ON archive (kind, seq);
CREATE INDEX archive_day ON archive (day) WHERE kind <> 'audit';

CREATE FUNCTION rediacc_archive_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'DELETE' AND OLD.kind <> 'audit' THEN
		RETURN OLD;
	END IF;
	RAISE EXCEPTION 'rediacc: the log archive is append-only (% refused on %)', TG_OP, TG_TABLE_NAME
		USING ERRCODE = 'insufficient_privilege',
		HINT = 'archived audit records are kept forever; task records leave only by retention (rediacc prune --archive-retention)';
END;
$$;
CREATE TRIGGER archive_append_only BEFORE UPDATE OR DELETE ON archive
	FOR EACH ROW EXECUTE FUNCTION rediacc_archive_guard();
CREATE TRIGGER archive_no_truncate BEFORE TRUNCATE ON archive
	FOR EACH STATEMENT EXECUTE FUNCTION rediacc_archive_guard();
`
