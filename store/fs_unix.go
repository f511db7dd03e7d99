//go:build unix

package store

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

var errLockUnsupported = errors.New("store: flock unsupported")

// lockFile takes an exclusive, non-blocking flock(2) lock on name, creating
// the file if needed. flock locks belong to the open file, so a second open
// in the same process conflicts too.
func lockFile(name string) (*fileLock, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, name)
		}
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	return &fileLock{f: f}, nil
}
