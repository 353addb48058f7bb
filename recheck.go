package rediacc

import (
	"context"
	"sync/atomic"
)

// recheck checks o's action again with the actor's roles as the store
// holds them now: for a long operation (an SSH CA rotation's finish
// probes every machine first) whose last write goes where no store
// transaction reaches (the vault), right before that write. A role lost
// meanwhile gives ErrPermissionDenied (audited) and nothing is written.
// Writes to the store carry the role as a guard instead (op.ctx,
// store.WithGuard), checked in their transaction.
func (o *op) recheck(ctx context.Context) error {
	g, err := o.c.grants(ctx, o.actor)
	if err != nil {
		return err
	}
	o.grants = g
	return o.check(ctx)
}

// caFinishHook, when set (tests), runs in FinishSSHCARotation after the
// machines were probed, before the CA state is written.
var caFinishHook atomic.Pointer[func(team string)]
