package rediacc

// PointMachineForTest gives machine the host, port, user and config of
// machine like in the SQLite store, behind the client's back (as another
// process's `machine` command would), without changing its updated_at.
func PointMachineForTest(c *Client, machine, like string) error {
	return rawSQL(c, `UPDATE machines SET (host, port, user_name, config) =
		(SELECT host, port, user_name, config FROM machines WHERE name = ? AND deleted_at IS NULL)
		WHERE name = ? AND deleted_at IS NULL`, like, machine)
}
