package local

import (
	"os"
	"syscall"
)

// fileStat is what tells one version of a team's file from another
// without reading it: writes replace the file (a new inode), and an
// in-place change moves its size or its change time.
type fileStat struct {
	dev, ino, size, mtime, ctime int64
}

// statOf returns fi's fileStat; ok is false when fi is not a regular file
// or the platform does not tell (no fast path then).
func statOf(fi os.FileInfo) (fs fileStat, ok bool) {
	st, _ := fi.Sys().(*syscall.Stat_t)
	if st == nil || !fi.Mode().IsRegular() {
		return fileStat{}, false
	}
	return fileStat{dev: int64(st.Dev), ino: int64(st.Ino), size: st.Size,
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}, true
}
