package herd

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// Defaults for the zero fields of Options.
const (
	// DefaultLeaseTTL is how long a lock holder's lease lasts without renewal.
	DefaultLeaseTTL = 5 * time.Second
	// DefaultWaitTimeout is the longest a waiter sleeps between two looks at
	// the lease when no notification arrives.
	DefaultWaitTimeout = time.Second
	// DefaultLoadTimeout bounds one flight: the load, or the wait for another
	// process's load.
	DefaultLoadTimeout = 30 * time.Second
	// DefaultLockPrefix starts every lock key.
	DefaultLockPrefix = "herd:lock:"
	// DefaultChannelPrefix starts every notification channel.
	DefaultChannelPrefix = "herd:done:"
)

// Options configures a Group. A nil *Options is valid and gives a local-only
// Group; every zero field takes the default described on it. New copies the
// struct and never writes to it.
type Options struct {
	// Client is the Redis client for the shared lease lock, the fenced write of
	// the loaded value and the notification channel. Nil means a local-only
	// Group: Do is pure in-process single-flight and nothing is written to
	// Redis (use this for routes without a Redis tier). The Group does not
	// own the client: Close leaves it open.
	Client rueidis.Client

	// LeaseTTL is the lease of the shared lock, measured by the Redis server's
	// clock. The holder renews it every LeaseTTL/3 while load runs. Zero means
	// DefaultLeaseTTL; it must be at least 30ms.
	LeaseTTL time.Duration

	// WaitTimeout is the longest a waiter in another process sleeps between
	// two looks at the lease when no notification arrives (a lost message, a
	// dead holder). A waiter also looks as soon as the lease's remaining time
	// has passed, so a dead holder is replaced about one LeaseTTL after its
	// last renewal. Zero means DefaultWaitTimeout.
	WaitTimeout time.Duration

	// LoadTimeout bounds a flight: the load function's context, and the time
	// spent waiting for another process's rebuild. Zero means
	// DefaultLoadTimeout.
	LoadTimeout time.Duration

	// LockPrefix starts every lock key; it must not contain '{' or '}'.
	// Zero means DefaultLockPrefix. See the package documentation for the
	// key scheme.
	LockPrefix string

	// ChannelPrefix starts every notification channel; it must not contain
	// '{' or '}'. Zero means DefaultChannelPrefix.
	ChannelPrefix string

	// DisableScripting makes the Group use WATCH/MULTI/EXEC transactions
	// instead of Lua scripts. The Group also switches to them on its own the
	// first time the server refuses a script (renamed EVAL, no @scripting ACL).
	// Off by default: scripts need one round trip where transactions need
	// several.
	DisableScripting bool

	// DisableNotifications makes the Group neither PUBLISH nor SUBSCRIBE
	// on the notification channels: waiters in other processes look at the
	// lease every WaitTimeout and right after it would run out. Use it for
	// a Redis user without rights on the channels (&ChannelPrefix*) or on
	// PUBLISH/SUBSCRIBE. The Group also stops publishing on its own the
	// first time the server refuses a PUBLISH, and subscribing the first
	// time it refuses a SUBSCRIBE. Off by default.
	DisableNotifications bool

	// Rand is the random source for lock tokens; the Group uses it under a
	// mutex. Nil means the runtime's random generator. (Leases are timed by
	// the Redis server: a Group reads no clock of its own.)
	Rand rand.Source

	// AfterWrite, if set, is called by a flight after its fenced write
	// stored value under key, before the flight's waiters are released (so
	// they find whatever it does), on the flight's own context. A cache
	// that tracks invalidations on Client uses it to cache the value it
	// just wrote once its own write's invalidation has come back.
	AfterWrite func(ctx context.Context, key string, value []byte)

	// Logger receives background errors (failed renewals, releases and
	// subscriptions); nil means slog.Default().
	Logger *slog.Logger
}

const minLeaseTTL = 30 * time.Millisecond

func (opts *Options) withDefaults() Options {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.WaitTimeout == 0 {
		o.WaitTimeout = DefaultWaitTimeout
	}
	if o.LoadTimeout == 0 {
		o.LoadTimeout = DefaultLoadTimeout
	}
	if o.LockPrefix == "" {
		o.LockPrefix = DefaultLockPrefix
	}
	if o.ChannelPrefix == "" {
		o.ChannelPrefix = DefaultChannelPrefix
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

func (o *Options) validate() error {
	switch {
	case o.LeaseTTL < minLeaseTTL:
		return fmt.Errorf("%w: LeaseTTL %v is below %v", ErrInvalidOptions, o.LeaseTTL, minLeaseTTL)
	case o.WaitTimeout < 0:
		return fmt.Errorf("%w: negative WaitTimeout %v", ErrInvalidOptions, o.WaitTimeout)
	case o.LoadTimeout < 0:
		return fmt.Errorf("%w: negative LoadTimeout %v", ErrInvalidOptions, o.LoadTimeout)
	case strings.ContainsAny(o.LockPrefix, "{}"):
		return fmt.Errorf("%w: LockPrefix %q contains a brace", ErrInvalidOptions, o.LockPrefix)
	case strings.ContainsAny(o.ChannelPrefix, "{}"):
		return fmt.Errorf("%w: ChannelPrefix %q contains a brace", ErrInvalidOptions, o.ChannelPrefix)
	case o.LockPrefix == o.ChannelPrefix && o.Client != nil:
		return fmt.Errorf("%w: LockPrefix and ChannelPrefix are both %q", ErrInvalidOptions, o.LockPrefix)
	}
	return nil
}
