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

// migrationLogins: database logins mapped to rediacc users, and the
// impersonation grant (login.go). The login that migrates the schema to
// this version (its creator) holds the grant, so that a single-role
// deployment goes on as before. Every audit record must name the session
// login's user as its actor unless the login holds the grant: a trigger
// refuses the others, so that no connection can record its changes as
// someone else's.
const migrationLogins = `
CREATE TABLE logins (
	login       text COLLATE "C" PRIMARY KEY,
	user_name   text COLLATE "C" NOT NULL,
	impersonate boolean NOT NULL DEFAULT false,
	added_at    bigint NOT NULL
);
INSERT INTO logins (login, user_name, impersonate, added_at)
	VALUES (session_user, session_user, true, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000);

CREATE FUNCTION rediacc_audit_actor() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	u   text COLLATE "C";
	imp boolean;
BEGIN
	SELECT user_name, impersonate INTO u, imp FROM logins WHERE login = session_user;
	IF NOT FOUND THEN
		u := session_user;
		imp := false;
	END IF;
	IF imp OR NEW.actor = u THEN
		RETURN NEW;
	END IF;
	RAISE EXCEPTION 'rediacc: database login % acts as user %, but it may act only as % (it holds no impersonation grant)', session_user, NEW.actor, u
		USING ERRCODE = 'insufficient_privilege',
		HINT = 'act as ' || u || ' (no --as, no WithActor), or have the store''s owner login grant impersonation: UPDATE logins SET impersonate = true WHERE login = ''' || session_user || ''' (docs/POSTGRES.md)';
END;
$$;
CREATE TRIGGER audit_actor BEFORE INSERT ON audit
	FOR EACH ROW EXECUTE FUNCTION rediacc_audit_actor();
`

// migrationBlobs: blobs (store.BlobEngine): machines' host keys and the
// team vaults' age-encrypted files (encrypted by the client: the server
// never sees a secret); revision serves check-and-set puts.
const migrationBlobs = `
CREATE TABLE blobs (
	kind       text COLLATE "C" NOT NULL,
	key        text COLLATE "C" NOT NULL,
	data       bytea,
	revision   bigint NOT NULL,
	updated_at bigint NOT NULL,
	PRIMARY KEY (kind, key)
);
`
