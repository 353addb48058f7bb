package local

import (
	"os"
	"syscall"
	"time"
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

// changed returns the change time of fs.
func (fs fileStat) changed() time.Time { return time.Unix(0, fs.ctime) }

// statTrusted reports whether dir is on a file system whose stat of a file
// tells its versions apart: not a network or user-space one (NFS, SMB and
// CIFS, FUSE, 9p, Ceph, Lustre, GPFS, AFS), where stat may answer from an
// attribute cache while the file has changed on another host.
func statTrusted(dir string) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return false
	}
	switch uint32(st.Type) {
	case 0x6969, // NFS
		0x517B, 0xFF534D42, 0xFE534D42, // SMB, CIFS, SMB2
		0x65735546,             // FUSE
		0x01021997,             // 9p
		0x00C36400,             // Ceph
		0x0BD00BD0,             // Lustre
		0x47504653,             // GPFS
		0x5346414F, 0x6B414653: // AFS, kAFS
		return false
	}
	return true
}
