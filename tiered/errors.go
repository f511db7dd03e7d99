package tiered

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

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
	// ErrNoRoute is returned, with Options.RequireRoute, for a key that no
	// route's prefix matches.
	ErrNoRoute = errors.New("tiered: no route for key")
	// ErrReservedKey is returned for a key in a namespace the cache keeps
	// for itself: one starting with Options.LockPrefix, where the herd's
	// leases live. Writing or deleting such a key would break a lease
	// another process holds.
	ErrReservedKey = errors.New("tiered: reserved key")
	// ErrInvalidTTL is returned for a negative TTL.
	ErrInvalidTTL = errors.New("tiered: negative ttl")
	// ErrNotFound is what a Loader returns when the origin has no value; the
	// cache may then remember the absence for the route's NegativeTTL.
	ErrNotFound = errors.New("tiered: not found")
	// ErrNoLoader is returned by GetOrLoad when the loader is nil.
	ErrNoLoader = errors.New("tiered: nil loader")
	// ErrLoad wraps the error a Loader returned (other than ErrNotFound),
	// when no stale value could be served instead.
	ErrLoad = errors.New("tiered: loader failed")
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

// An error of this package reads "tiered: <op> <key>: <kind>: <detail>:
// <cause>": the package and the key once, whatever layers it crossed. Code
// below the public methods builds faults (a kind, what went wrong, and the
// cause); the public method names the operation and the key once (opError).

// fault is an error of one of this package's kinds (a sentinel), with a
// detail and its cause, before the operation and key are known.
type fault struct {
	kind   error  // a sentinel of this package
	detail string // optional
	cause  error  // optional
}

func newFault(kind error, cause error, format string, args ...any) *fault {
	return &fault{kind: kind, detail: fmt.Sprintf(format, args...), cause: cause}
}

func (f *fault) Error() string {
	msg := strings.TrimPrefix(f.kind.Error(), "tiered: ")
	if f.detail != "" {
		msg += ": " + f.detail
	}
	if f.cause != nil {
		msg += ": " + f.cause.Error()
	}
	return msg
}

func (f *fault) Unwrap() []error {
	if f.cause == nil {
		return []error{f.kind}
	}
	return []error{f.kind, f.cause}
}

// opError is an error a public method returns: the operation and the key,
// then the fault (or sentinel) without a second package prefix.
type opError struct {
	op, key string // key may be empty (InvalidatePrefix names its prefix)
	err     error
}

func (e *opError) Error() string {
	head := "tiered: " + e.op
	if e.key != "" {
		head += " " + quoteKey(e.key)
	}
	return head + ": " + strings.TrimPrefix(e.err.Error(), "tiered: ")
}

func (e *opError) Unwrap() error { return e.err }

// maxKeyInError is how much of a key an error message shows.
const maxKeyInError = 64

// quoteKey quotes key for an error message, shortened past maxKeyInError
// bytes (an overlong key is itself an error's subject).
func quoteKey(key string) string {
	if len(key) <= maxKeyInError {
		return strconv.Quote(key)
	}
	return strconv.Quote(key[:maxKeyInError]) + fmt.Sprintf("…(%d bytes)", len(key))
}

// opErr names the operation and key of err, once: an error already named
// is returned as it is, and so are nil and context errors of the caller's
// own context (ctx.Err() as returned by the caller's checks).
func opErr(op, key string, err error) error {
	if err == nil {
		return nil
	}
	var named *opError
	if errors.As(err, &named) {
		return err
	}
	return &opError{op: op, key: key, err: err}
}
