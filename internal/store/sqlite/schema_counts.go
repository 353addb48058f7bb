package sqlite

import "github.com/rediacc/rediacc/internal/store"

// migrationTaskCounts: task_counts holds the number of tasks per (status,
// priority, team, machine), kept by triggers on tasks in the transaction
// of every insert, delete and change of those columns, so Depth (queue
// statistics, metrics, alert rules) reads a few hundred rows instead of
// grouping every task: `rediacc list queue --stats` on a store of a
// million tasks took seconds (issue 11). Rows whose count falls to 0 stay
// (Depth skips them). The counts start from the tasks already stored.
//
// tasks_pending_created lists the PENDING tasks in ListTasks' order
// (creation): the oldest pending task of queue statistics is its first
// entry, where the query used to sort every pending task.
const migrationTaskCounts = `
CREATE INDEX tasks_pending_created ON tasks (created_at, id) WHERE status = 'PENDING';
CREATE TABLE task_counts (
	status     TEXT NOT NULL,
	priority   INTEGER NOT NULL,
	team_id    TEXT NOT NULL,
	machine_id TEXT NOT NULL,
	n          INTEGER NOT NULL,
	PRIMARY KEY (status, priority, team_id, machine_id)
) STRICT, WITHOUT ROWID;
INSERT INTO task_counts (status, priority, team_id, machine_id, n)
	SELECT status, priority, team_id, machine_id, count(*) FROM tasks GROUP BY status, priority, team_id, machine_id;
CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks BEGIN
	INSERT INTO task_counts (status, priority, team_id, machine_id, n) VALUES (NEW.status, NEW.priority, NEW.team_id, NEW.machine_id, 1)
		ON CONFLICT (status, priority, team_id, machine_id) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks BEGIN
	UPDATE task_counts SET n = n - 1
		WHERE status = OLD.status AND priority = OLD.priority AND team_id = OLD.team_id AND machine_id = OLD.machine_id;
END;
CREATE TRIGGER task_counts_update AFTER UPDATE OF status, priority, team_id, machine_id ON tasks
	WHEN OLD.status IS NOT NEW.status OR OLD.priority IS NOT NEW.priority OR OLD.team_id IS NOT NEW.team_id OR OLD.machine_id IS NOT NEW.machine_id
BEGIN
	UPDATE task_counts SET n = n - 1
		WHERE status = OLD.status AND priority = OLD.priority AND team_id = OLD.team_id AND machine_id = OLD.machine_id;
	INSERT INTO task_counts (status, priority, team_id, machine_id, n) VALUES (NEW.status, NEW.priority, NEW.team_id, NEW.machine_id, 1)
		ON CONFLICT (status, priority, team_id, machine_id) DO UPDATE SET n = n + 1;
END;
`

// sqlDepth reads Depth's groups from task_counts (empty groups left out).
const sqlDepth = `SELECT status, priority, team_id, machine_id,
	COALESCE((SELECT name FROM teams WHERE teams.id = d.team_id), d.team_id),
	COALESCE((SELECT name FROM machines WHERE machines.id = d.machine_id), d.machine_id), n
	FROM task_counts d WHERE n > 0`

// pendingByCreation reports whether ListTasks(f) asks for PENDING tasks
// only, in creation order, without a machine: it then walks the partial
// index tasks_pending_created (the oldest pending task is its first entry)
// instead of sorting every pending task. With a machine, tasks_machine
// finds that machine's tasks first.
func pendingByCreation(f store.TaskFilter) bool {
	return len(f.Statuses) == 1 && f.Statuses[0] == store.Pending && f.MachineID == "" && f.CompletedAfter.IsZero()
}
