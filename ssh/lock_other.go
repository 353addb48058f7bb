//go:build !unix

package ssh

import (
	"os"
	"sync"
)

var fileLockMu sync.Mutex

// lockFile serialises writers within this process only (no flock here).
func lockFile(*os.File) (unlock func(), err error) {
	fileLockMu.Lock()
	return fileLockMu.Unlock, nil
}
