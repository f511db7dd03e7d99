package tiered

import "errors"

// Errors returned by Open and by Cache methods. Test for them with errors.Is.
var (
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("tiered: closed")
	// ErrConfig wraps every configuration error returned by Open.
	ErrConfig = errors.New("tiered: invalid configuration")
	// ErrEmptyKey is returned for an empty key.
	ErrEmptyKey = errors.New("tiered: empty key")
	// ErrKeyTooLarge is returned for a key longer than Options.MaxKeyBytes.
	ErrKeyTooLarge = errors.New("tiered: key too large")
	// ErrValueTooLarge is returned for a value larger than its route's
	// MaxValueBytes, on write and on read.
	ErrValueTooLarge = errors.New("tiered: value too large")
	// ErrInvalidTTL is returned for a negative TTL.
	ErrInvalidTTL = errors.New("tiered: negative ttl")
	// ErrNotFound is what a Loader returns when the origin has no value; the
	// cache may then remember the absence for the route's NegativeTTL.
	ErrNotFound = errors.New("tiered: not found")
	// ErrNoLoader is returned by GetOrLoad when the loader is nil.
	ErrNoLoader = errors.New("tiered: nil loader")
	// ErrLoaderPanic wraps a panic recovered from a Loader; the text carries
	// the stack.
	ErrLoaderPanic = errors.New("tiered: loader panicked")
	// ErrUnavailable is returned (wrapped) by operations that need Redis
	// while it is not connected: it was down at Open and has not come back.
	ErrUnavailable = errors.New("tiered: redis unavailable")
	// ErrRefused is returned (wrapped, with Redis's reply) when Redis
	// answered a command with an error: an ACL refusal (NOPERM), OOM under
	// noeviction, a read-only replica, a key of another type.
	ErrRefused = errors.New("tiered: redis refused")
	// ErrDecode wraps a codec failure on a stored value.
	ErrDecode = errors.New("tiered: cannot decode value")
	// ErrDisk wraps a fault of the disk tier (a full, failing or read-only
	// disk), with its cause (store.ErrDiskFault and, where known, the
	// syscall error such as syscall.ENOSPC): the tier has stepped aside
	// until the fault clears. Err and Stats.DiskErr report it meanwhile;
	// Flush, Close and the writes that need the disk return it (see the
	// package doc, Disk faults).
	ErrDisk = errors.New("tiered: disk tier failed")
)
