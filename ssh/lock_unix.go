//go:build unix

package ssh

import (
	"os"
	"syscall"
)

// lockFile takes an exclusive advisory lock (flock) on f, shared with other
// processes and other open file descriptions in this process.
func lockFile(f *os.File) (unlock func(), err error) {
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }, nil
}
