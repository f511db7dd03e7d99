//go:build !unix

package store

import "errors"

var errLockUnsupported = errors.New("store: flock unsupported")

// lockFile is unsupported here; Pebble's own lock is used instead.
func lockFile(string) (*fileLock, error) { return nil, errLockUnsupported }
