//go:build unix

package store

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

var errLockUnsupported = errors.New("store: flock unsupported")

// lockFile takes an exclusive, non-blocking flock(2) lock on name, creating
// the file if needed. flock locks belong to the open file, so a second open
// in the same process conflicts too.
// lockWait is how long lockFile asks again for a held lock.
const lockWait = 500 * time.Millisecond

func lockFile(name string) (*fileLock, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	// A held lock is asked again for a while before it counts as another
	// DB's: a child process forked while the last holder had the file open
	// shares its lock until the child's exec closes the file, which the
	// kernel does after the parent's fork returned (vfork wakes the parent
	// first). So an Open right after Close, while another goroutine starts
	// a process, could find the lock held for that instant.
	deadline := time.Now().Add(lockWait)
	for wait := time.Millisecond; ; wait = min(2*wait, 20*time.Millisecond) {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return &fileLock{f: f}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", name, err)
		}
		if time.Now().After(deadline) {
			_ = f.Close()
			return nil, fmt.Errorf("%w: %s", ErrLocked, name)
		}
		time.Sleep(wait)
	}
}
