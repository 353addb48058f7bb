package ssh

// SetExecHook makes f receive every exec string sent to a server until
// the returned restore function is called. For tests of package ssh_test.
func SetExecHook(f func(remote string)) (restore func()) {
	old := execHook.Swap(&f)
	return func() { execHook.Store(old) }
}
