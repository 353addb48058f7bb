package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/rediacc/rediacc/internal/safefs"
)

// gate orders the writers of one store file, across goroutines and
// processes, before they ask SQLite for its write lock.
//
// SQLite's busy handler makes a waiting process sleep (up to 100ms a try),
// so a process that writes back to back can keep the lock for seconds and
// the other one fails with "database is locked". The gate is an advisory
// lock on a sidecar file (path + "-lock") taken with a blocking flock: a
// waiter is woken as soon as the holder lets go. Processes that do not use
// the gate (an older build, the sqlite3 shell) still meet SQLite's own
// locking and busy timeout, so correctness never depends on the gate.
//
// sem (capacity 1) is held from before flock until after the matching
// unlock, so that no two flock calls of this process ever overlap on the
// same file description, even when a waiting lock is abandoned because its
// context ended.
type gate struct {
	f      *os.File
	sem    chan struct{}
	closed chan struct{}
}

func openGate(path string) (*gate, error) {
	f, err := safefs.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlite store lock file: %w", err)
	}
	return &gate{f: f, sem: make(chan struct{}, 1), closed: make(chan struct{})}, nil
}

func (g *gate) lock(ctx context.Context) error {
	select {
	case g.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-g.closed:
		return errGateClosed
	}
	ok, err := tryFlock(g.f)
	if err != nil || ok {
		if err != nil {
			<-g.sem
		}
		return err
	}
	done := make(chan error, 1)
	go func() { done <- flock(g.f) }()
	select {
	case err := <-done:
		if err != nil {
			<-g.sem
		}
		return err
	case <-ctx.Done():
		go func() { // give the lock back when the abandoned wait ends
			if err := <-done; err == nil {
				_ = funlock(g.f)
			}
			<-g.sem
		}()
		return ctx.Err()
	}
}

func (g *gate) unlock() {
	_ = funlock(g.f)
	<-g.sem
}

// close waits for the current writer (or an abandoned wait) to finish.
func (g *gate) close() error {
	close(g.closed)
	g.sem <- struct{}{}
	return g.f.Close()
}

var errGateClosed = errors.New("sqlite store: write gate closed")
