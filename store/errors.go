package store

import "errors"

// Errors returned by the store. Test for them with errors.Is; the returned
// error usually wraps one of these with the key or directory in its text.
var (
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("store: closed")

	// ErrEmptyKey is returned when a key is the empty string.
	ErrEmptyKey = errors.New("store: empty key")

	// ErrKeyTooLarge is returned when a key is longer than Options.MaxKeyBytes.
	ErrKeyTooLarge = errors.New("store: key too large")

	// ErrValueTooLarge is returned when a value is longer than
	// Options.MaxValueBytes.
	ErrValueTooLarge = errors.New("store: value too large")

	// ErrInvalidTTL is returned for a negative TTL.
	ErrInvalidTTL = errors.New("store: invalid ttl")

	// ErrInvalidOptions is returned by Open when an Options field is out of range.
	ErrInvalidOptions = errors.New("store: invalid options")

	// ErrLocked is returned by Open when another DB, in this process or
	// another one, has the directory open.
	ErrLocked = errors.New("store: directory locked by another process or DB")

	// ErrIncompatible is returned by Open when the directory holds files that
	// this version of the store cannot read: a different format marker, or a
	// non-empty directory without one.
	ErrIncompatible = errors.New("store: incompatible directory format")

	// ErrInsecureDir is returned by Open when the directory already exists
	// and is writable by its group or by others, or is owned by another user,
	// and Options.AllowSharedDir is not set. The message names the path, its
	// mode and its owner.
	ErrInsecureDir = errors.New("store: directory not private to this user")

	// ErrDiskFault is the error state: a disk or Pebble failure. Once it is
	// entered every method except Stats, Err, Recover and Close fails with
	// an error wrapping ErrDiskFault (and, where known, the underlying
	// cause, such as syscall.ENOSPC or syscall.EIO). Recover reopens the
	// directory once the cause is gone; if it cannot, Close, Wipe and Open
	// start the store again empty. Open returns it too when the disk or
	// Pebble fails while opening.
	ErrDiskFault = errors.New("store: disk fault")

	// ErrBatchDone is returned by a Batch method called after Commit or Close.
	ErrBatchDone = errors.New("store: batch already committed or closed")
)
