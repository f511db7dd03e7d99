package herd

import (
	"errors"
	"fmt"
)

// ErrClosed is returned by Do after Close has been called, and by a Do whose
// flight was cut short by Close. Test for it with errors.Is(err, herd.ErrClosed).
var ErrClosed = errors.New("herd: closed")

// ErrEmptyKey is returned by Do for an empty key.
var ErrEmptyKey = errors.New("herd: empty key")

// ErrPanic is wrapped by the error every waiter of a flight receives when the
// load function panicked. The error text carries the panic value and the
// stack of the panicking goroutine.
var ErrPanic = errors.New("herd: load panicked")

// ErrTimeout is wrapped by the error returned when a flight ran out of its
// LoadTimeout, either in load or while waiting for another process's rebuild.
// It also wraps context.DeadlineExceeded.
var ErrTimeout = errors.New("herd: load timed out")

// ErrInvalidOptions is wrapped by New's error when an Options field is out of
// range, such as a negative duration or a lock prefix containing a brace.
var ErrInvalidOptions = errors.New("herd: invalid options")

// ErrNegativeTTL is returned to every waiter of a flight whose load returned a
// negative ttl; nothing is written to Redis.
var ErrNegativeTTL = errors.New("herd: load returned a negative ttl")

// ErrLease is wrapped, with Redis's error, by the error Do returns when the
// shared lease could not be taken because Redis failed: unreachable, or
// refusing (OOM under noeviction, a read-only replica, an ACL). The load did
// not run; a caller may fall back to a local-only Group.
var ErrLease = errors.New("herd: cannot take the lease")

// PanicError is the error a flight's waiters get when load panicked; it
// matches ErrPanic. Its text carries the value and the stack.
type PanicError struct {
	Key   string
	Value any    // what load panicked with
	Stack []byte // the panicking goroutine's stack
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("%v: key %q: %v\n%s", ErrPanic, e.Key, e.Value, e.Stack)
}

// Is reports target == ErrPanic.
func (e *PanicError) Is(target error) bool { return target == ErrPanic }
