//go:build unix

package main

import (
	"os"
	"syscall"
)

// dirOwner returns the uid owning dir, and false when it cannot be told
// (dir missing or unreadable).
func dirOwner(dir string) (int, bool) {
	fi, err := os.Stat(dir)
	if err != nil {
		return 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}
