// Package bench holds the benchmark harness of the SDK against its
// baselines on real OpenSSH servers: the bare x/crypto/ssh client, OpenSSH
// with ControlMaster, and the example CLI (examples/rediacc) with the
// durable SQLite store; plus the scale runs (a backlog of a million tasks,
// a fleet of 200 sshd). It has no API: everything is in its _test.go files
// and runs with `go test -bench`; docs/BENCHMARKS.md has the commands and
// the figures. The heavy runs are skipped unless their environment
// variable is set, so `go test ./...` stays fast.
//
// The River comparison is the separate module bench/river.
package bench
