package store

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// guardFS sits between Pebble and the filesystem. It does three things:
//
//  1. Failed writes to the write-ahead log enter the error state before
//     Pebble sees them, and are then reported to Pebble as successes. Pebble
//     treats a WAL write error as fatal: depending on where it surfaces it
//     calls Logger.Fatalf, panics while holding its commit mutex (every later
//     write then blocks forever), or panics while rotating the WAL in a way
//     that unlocks an unlocked mutex, which the Go runtime turns into an
//     unrecoverable crash. None of these can happen if Pebble never sees the
//     error. No write is acknowledged falsely: the store checks the error
//     state after every commit, and the state is set before the lie is told.
//     Directory syncs are treated the same way (Pebble panics on some of them).
//  2. On the real disk, files are made owner-only (0600, directories 0700).
//  3. On the real disk, the directory lock is an flock(2) lock owned by the
//     store, so a lock left by a Pebble instance that had to be abandoned
//     (see DB.Close) can be released, and a second DB in the same process
//     sees ErrLocked.
//
// Failures of other files (sstables, MANIFEST) reach Pebble, which reports
// them through the event listener or Logger.Fatalf; both enter the error state.
type guardFS struct {
	vfs.FS
	fault *faultState
	disk  bool // the root filesystem is the real disk

	lock atomic.Pointer[fileLock] // the directory lock taken through Lock, if ours

	// dead is set when Close abandons the Pebble instance: from then on it
	// may not create, rename or remove anything, so it cannot disturb a new
	// store opened in the same (wiped) directory.
	dead atomic.Bool

	// closing is closed when the instance's Pebble is about to be closed
	// (see pebbleClosing).
	closing     chan struct{}
	closingOnce sync.Once

	retryDelay atomic.Int64 // the next backoff in the error state, in ns
}

// faultBackoff and maxFaultBackoff delay file creation in the error state,
// throttling Pebble's immediate, endless retries of failed flushes and
// compactions: the first delay, doubled at each retry up to the second.
const (
	faultBackoff    = 50 * time.Millisecond
	maxFaultBackoff = time.Second
)

var errDeadFS = fmt.Errorf("%w: pebble instance abandoned by Close", ErrDiskFault)

func newGuardFS(fs vfs.FS, fault *faultState) *guardFS {
	return &guardFS{FS: fs, fault: fault, disk: vfs.Root(fs) == vfs.Default, closing: make(chan struct{})}
}

// pebbleClosing tells fs that Pebble's Close is about to be called: a flush
// or compaction parked by a dead fs may go on and fail.
func (fs *guardFS) pebbleClosing() { fs.closingOnce.Do(func() { close(fs.closing) }) }

// Unwrap implements vfs.FS.
func (fs *guardFS) Unwrap() vfs.FS { return fs.FS }

func isWAL(name string) bool { return strings.HasSuffix(name, ".log") }

// walFault enters the error state for a failed WAL operation.
func (fs *guardFS) walFault(op, name string, err error) {
	fs.fault.set(fmt.Errorf("wal %s %s: %w", op, name, err))
}

// private restricts a freshly created file to its owner.
func (fs *guardFS) private(name string) {
	if fs.disk {
		_ = os.Chmod(name, 0o600) // best effort: the directory is 0700 anyway
	}
}

func (fs *guardFS) wrap(name string, f vfs.File) vfs.File {
	if isWAL(name) {
		return &walFile{File: f, fs: fs, name: name}
	}
	return f
}

// Create implements vfs.FS.
func (fs *guardFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	if fs.dead.Load() {
		if isWAL(name) {
			return discardFile{}, nil
		}
		// Pebble retries a failed flush or compaction at once, forever,
		// until it is closed, each time on a new goroutine. An abandoned
		// instance is closed only once the call that wedged it returns, if
		// ever: until then, park its background work here rather than let
		// it spin.
		<-fs.closing
		return nil, errDeadFS
	}
	if !isWAL(name) && fs.fault.get() != nil {
		fs.backoff()
	}
	f, err := fs.FS.Create(name, category)
	if err != nil {
		if isWAL(name) {
			fs.walFault("create", name, err)
			return discardFile{}, nil
		}
		return nil, err
	}
	fs.private(name)
	return fs.wrap(name, f), nil
}

// backoff waits before a file is created in the error state, throttling
// Pebble's retries of a failed flush or compaction, until Pebble starts to
// close (it then stops retrying, once the attempt under way has failed).
func (fs *guardFS) backoff() {
	d := time.Duration(fs.retryDelay.Load())
	if d == 0 {
		d = faultBackoff
	}
	fs.retryDelay.Store(int64(min(2*d, maxFaultBackoff)))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-fs.closing:
	}
}

// OpenReadWrite implements vfs.FS.
func (fs *guardFS) OpenReadWrite(name string, category vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	if fs.dead.Load() {
		return nil, errDeadFS
	}
	f, err := fs.FS.OpenReadWrite(name, category, opts...)
	if err != nil {
		return nil, err
	}
	fs.private(name)
	return fs.wrap(name, f), nil
}

// ReuseForWrite implements vfs.FS.
func (fs *guardFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	if fs.dead.Load() {
		return discardFile{}, nil
	}
	f, err := fs.FS.ReuseForWrite(oldname, newname, category)
	if err != nil {
		if isWAL(newname) {
			fs.walFault("reuse", newname, err)
			return discardFile{}, nil
		}
		return nil, err
	}
	fs.private(newname)
	return fs.wrap(newname, f), nil
}

// OpenDir implements vfs.FS.
func (fs *guardFS) OpenDir(name string) (vfs.File, error) {
	f, err := fs.FS.OpenDir(name)
	if err != nil {
		return nil, err
	}
	return &dirFile{File: f, fs: fs, name: name}, nil
}

// MkdirAll implements vfs.FS; directories are always created owner-only.
func (fs *guardFS) MkdirAll(dir string, _ os.FileMode) error {
	if fs.dead.Load() {
		return errDeadFS
	}
	return fs.FS.MkdirAll(dir, 0o700)
}

// Link implements vfs.FS.
func (fs *guardFS) Link(oldname, newname string) error {
	if fs.dead.Load() {
		return errDeadFS
	}
	return fs.FS.Link(oldname, newname)
}

// Remove implements vfs.FS.
func (fs *guardFS) Remove(name string) error {
	if fs.dead.Load() {
		return errDeadFS
	}
	return fs.FS.Remove(name)
}

// RemoveAll implements vfs.FS.
func (fs *guardFS) RemoveAll(name string) error {
	if fs.dead.Load() {
		return errDeadFS
	}
	return fs.FS.RemoveAll(name)
}

// Rename implements vfs.FS.
func (fs *guardFS) Rename(oldname, newname string) error {
	if fs.dead.Load() {
		return errDeadFS
	}
	return fs.FS.Rename(oldname, newname)
}

// Lock implements vfs.FS.
func (fs *guardFS) Lock(name string) (io.Closer, error) {
	if fs.disk {
		l, err := lockFile(name)
		if err != errLockUnsupported {
			if err != nil {
				return nil, err
			}
			fs.lock.Store(l)
			return l, nil
		}
	}
	c, err := fs.FS.Lock(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrLocked, name, err)
	}
	return c, nil
}

// releaseLock drops the directory lock even if Pebble still holds it; only
// for a Pebble instance that Close had to abandon.
func (fs *guardFS) releaseLock() {
	if l := fs.lock.Load(); l != nil {
		_ = l.Close()
	}
}

// fileLock is an flock(2) lock on an open file. Close is idempotent.
type fileLock struct {
	f    *os.File
	once sync.Once
	err  error
}

// Close releases the lock.
func (l *fileLock) Close() error {
	l.once.Do(func() { l.err = l.f.Close() })
	return l.err
}

// walFile is a WAL file whose write-side failures enter the error state
// and are then hidden from Pebble (see guardFS).
type walFile struct {
	vfs.File
	fs   *guardFS
	name string
}

func (f *walFile) Write(p []byte) (int, error) {
	if n, err := f.File.Write(p); err != nil {
		f.fs.walFault("write", f.name, err)
		return len(p), nil
	} else {
		return n, nil
	}
}

func (f *walFile) WriteAt(p []byte, off int64) (int, error) {
	if _, err := f.File.WriteAt(p, off); err != nil {
		f.fs.walFault("write", f.name, err)
	}
	return len(p), nil
}

func (f *walFile) Preallocate(off, n int64) error {
	if err := f.File.Preallocate(off, n); err != nil {
		f.fs.walFault("preallocate", f.name, err)
	}
	return nil
}

func (f *walFile) Sync() error {
	if err := f.File.Sync(); err != nil {
		f.fs.walFault("sync", f.name, err)
	}
	return nil
}

func (f *walFile) SyncData() error {
	if err := f.File.SyncData(); err != nil {
		f.fs.walFault("sync", f.name, err)
	}
	return nil
}

func (f *walFile) SyncTo(length int64) (bool, error) {
	full, err := f.File.SyncTo(length)
	if err != nil {
		f.fs.walFault("sync", f.name, err)
		return true, nil
	}
	return full, nil
}

func (f *walFile) Close() error {
	if err := f.File.Close(); err != nil {
		f.fs.walFault("close", f.name, err)
	}
	return nil
}

// dirFile is a directory handle whose failed syncs enter the error state
// and are hidden from Pebble, which panics on some of them.
type dirFile struct {
	vfs.File
	fs   *guardFS
	name string
}

func (f *dirFile) Sync() error {
	if err := f.File.Sync(); err != nil {
		f.fs.fault.set(fmt.Errorf("sync directory %s: %w", f.name, err))
	}
	return nil
}

// discardFile stands in for a WAL file that could not be created once the
// store is already in its error state: writes vanish, reads find nothing.
type discardFile struct{}

func (discardFile) Close() error                           { return nil }
func (discardFile) Read([]byte) (int, error)               { return 0, io.EOF }
func (discardFile) ReadAt([]byte, int64) (int, error)      { return 0, io.EOF }
func (discardFile) Write(p []byte) (int, error)            { return len(p), nil }
func (discardFile) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }
func (discardFile) Preallocate(int64, int64) error         { return nil }
func (discardFile) Stat() (vfs.FileInfo, error)            { return discardInfo{}, nil }
func (discardFile) Sync() error                            { return nil }
func (discardFile) SyncTo(int64) (bool, error)             { return true, nil }
func (discardFile) SyncData() error                        { return nil }
func (discardFile) Prefetch(int64, int64) error            { return nil }
func (discardFile) Fd() uintptr                            { return vfs.InvalidFd }

type discardInfo struct{}

func (discardInfo) Name() string           { return "discarded-wal" }
func (discardInfo) Size() int64            { return 0 }
func (discardInfo) Mode() os.FileMode      { return 0o600 }
func (discardInfo) ModTime() time.Time     { return time.Time{} }
func (discardInfo) IsDir() bool            { return false }
func (discardInfo) Sys() any               { return nil }
func (discardInfo) DeviceID() vfs.DeviceID { return vfs.DeviceID{} }
