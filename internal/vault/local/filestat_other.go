//go:build !linux

package local

import (
	"os"
	"time"
)

// fileStat: see filestat_linux.go. Elsewhere the file is read every time.
type fileStat struct{}

func statOf(os.FileInfo) (fileStat, bool) { return fileStat{}, false }

func (fileStat) changed() time.Time { return time.Time{} }

func statTrusted(string) bool { return false }
