//go:build unix

package store

import (
	"os"
	"syscall"
)

// ownerOf returns the uid owning fi's file.
func ownerOf(fi os.FileInfo) (uid int, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}
