package rediacc

import "sync"

var (
	testHooksMu sync.Mutex
	testHooks   = map[string]func(step, machine string){}
)

// SetRotationHook makes f run after every step of every rotation of a key
// of team ("*": any team) — the step and the machine, "" for steps of the
// whole key — until restore is called. For the failure-injection tests,
// which run in parallel, one team each.
func SetRotationHook(team string, f func(step, machine string)) (restore func()) {
	testHooksMu.Lock()
	testHooks[team] = f
	testHooksMu.Unlock()
	d := func(step, team, machine string) {
		testHooksMu.Lock()
		h := testHooks[team]
		if h == nil {
			h = testHooks["*"]
		}
		testHooksMu.Unlock()
		if h != nil {
			h(step, machine)
		}
	}
	rotationHook.Store(&d)
	return func() {
		testHooksMu.Lock()
		delete(testHooks, team)
		testHooksMu.Unlock()
	}
}

// SetCAFinishHook makes f run in FinishSSHCARotation after the machines
// were probed, before the CA state is written, until restore is called.
func SetCAFinishHook(f func(team string)) (restore func()) {
	caFinishHook.Store(&f)
	return func() { caFinishHook.Store(nil) }
}
