package tiered

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/tracking"
)

// Tier is a set of backends a route stores its keys in.
type Tier uint8

// The backends a route can combine.
const (
	Memory Tier = 1 << iota // in-process LRU (package tracking)
	Disk                    // local Pebble store (package store)
	Redis                   // shared Redis

	allTiers = Memory | Disk | Redis
)

func (t Tier) String() string {
	if t == 0 {
		return "none"
	}
	var parts []string
	for _, x := range []struct {
		t Tier
		n string
	}{{Memory, "memory"}, {Disk, "disk"}, {Redis, "redis"}} {
		if t&x.t != 0 {
			parts = append(parts, x.n)
		}
	}
	if t&^allTiers != 0 {
		parts = append(parts, fmt.Sprintf("0x%x", uint8(t&^allTiers)))
	}
	return strings.Join(parts, "+")
}

// Defaults for zero fields.
const (
	DefaultTTL            = 10 * time.Minute
	DefaultMaxValueBytes  = 16 << 20
	DefaultMaxKeyBytes    = 1024
	DefaultMemoryBytes    = 64 << 20
	DefaultBeta           = 1.0
	DefaultLeaseTTL       = 5 * time.Second
	DefaultLoadTimeout    = 30 * time.Second
	DefaultWriteBehind    = 50 * time.Millisecond
	DefaultWriteBatch     = 256
	DefaultRevalidateSize = 2048
)

// Route says where the keys under Prefix live and how they age. The route
// with the longest matching prefix wins; a route with an empty prefix is the
// default route.
type Route struct {
	// Prefix selects the keys of this route. Prefixes must be distinct.
	Prefix string
	// Tiers the route stores its keys in: any non-empty combination of
	// Memory, Disk and Redis.
	Tiers Tier
	// TTL is how long a value is fresh. Zero means DefaultTTL.
	TTL time.Duration
	// Beta is XFetch's β for early refresh by GetOrLoad: larger refreshes
	// earlier. Zero means DefaultBeta; negative turns early refresh off.
	Beta float64
	// MaxStale is how long after TTL a value may still be served when the
	// loader fails (serve-stale-on-error). Zero means never.
	MaxStale time.Duration
	// NegativeTTL is how long a loader's ErrNotFound is remembered. Zero
	// means not at all.
	NegativeTTL time.Duration
	// Jitter spreads expiries: each TTL is shortened by a random fraction of
	// at most Jitter (0 to 1). Zero means none.
	Jitter float64
	// MaxValueBytes bounds a value on write and on read. Zero means
	// DefaultMaxValueBytes.
	MaxValueBytes int
	// Raw marks values written by other programs without an envelope: they
	// are read and written as plain bytes, with no soft expiry, version or
	// signature (revalidation compares a digest of the value instead).
	Raw bool
}

// UnverifiedPolicy says how a value that could not be checked against Redis
// yet (after a restart, a reconnect, or while Redis is down) is read.
type UnverifiedPolicy uint8

const (
	// Revalidate checks the value's version against Redis first: one small
	// round trip, far cheaper than the loader. When Redis cannot answer,
	// the value is not served: Get returns an error wrapping
	// ErrUnavailable, and GetOrLoad calls the loader (serving the value
	// only if the loader fails and the route allows MaxStale). This is the
	// default.
	Revalidate UnverifiedPolicy = iota
	// ServeStale serves the value as it is, counted as a stale serve, while
	// it is within its route's MaxStale of its TTL.
	ServeStale
)

// Clock tells the time. Implementations must be safe for concurrent use. A
// Clock that also has a UnixNano() int64 method is read through it on the
// memory tier's hit path.
type Clock interface {
	Now() time.Time
}

// Options configures a Cache. A nil *Options is valid: a memory-only cache
// with DefaultMemoryBytes.
type Options struct {
	// Routes map key prefixes to tiers. When none has an empty prefix, a
	// default route with Tiers Memory is added, unless RequireRoute is set.
	Routes []Route
	// RequireRoute adds no default route: a key that no route's prefix
	// matches is refused with an error wrapping ErrNoRoute by every method
	// that takes a key (Get, GetOrLoad, GetMany, Set, Delete, and Typed's),
	// so a key with a mistyped prefix is noticed instead of being cached in
	// memory only. InvalidatePrefix takes any prefix.
	RequireRoute bool

	// Redis configures the connection to Redis for routes with the Redis
	// tier. Nil refuses such routes. Username, Password and TLSConfig pass
	// through to every connection the cache opens. So does MaxFlushDelay:
	// under many concurrent memory misses a few microseconds (20 µs
	// measured: BenchmarkRedisHitSaturated) let each write to the
	// connection carry more commands, for more reads per second and less
	// CPU per read, at up to that much more latency per round trip.
	Redis *rueidis.ClientOption
	// RedisClient, if set, is a client the program already has, on which
	// the cache sends its data commands (reads, writes, deletes,
	// revalidation scripts, SCAN and UNLINK) and the herd its lease, fenced
	// writes and notifications (SUBSCRIBE, on a dedicated connection). The
	// cache never closes it. Nil means the cache sends them on its own
	// tracking connection.
	//
	// Options.Redis is still required: invalidations can only reach the
	// cache on a connection it opens itself (rueidis takes the
	// invalidation callback when a client is made), so it keeps its own
	// tracking connection (one per node) from Options.Redis, carrying
	// nothing but CLIENT TRACKING, keep-alives and invalidations.
	// RedisClient must reach the same Redis or cluster: Open writes a
	// probe key under a tracked prefix through it and fails with ErrConfig
	// if the tracking connection does not hear it within StalenessBound
	// (when Redis cannot be reached at Open the check is skipped).
	//
	// The cost: NOLOOP only silences writes sent on the tracking
	// connection, so this cache's own Sets and Deletes come back to it as
	// invalidations. A Set's local copies (memory and disk) are usually
	// dropped when its invalidation arrives, so the next read of the key
	// is a Redis read, and a Set may take one more round trip when the
	// invalidation overtakes it. The promise is unchanged: while the
	// tracking connection is down, values read through RedisClient are
	// served but never kept.
	RedisClient rueidis.Client
	// Dir is the disk tier's directory. Empty refuses routes with the Disk
	// tier.
	Dir string
	// DiskMaxBytes is the disk tier's budget. Zero means unlimited.
	DiskMaxBytes int64
	// SyncWrites makes every disk write durable before it is acknowledged.
	// Off by default: disk writes are write-behind and batched.
	SyncWrites bool
	// WriteBehind is the longest a disk write waits before it is flushed in
	// a batch. Zero means DefaultWriteBehind.
	WriteBehind time.Duration
	// DiskRequired makes Open fail when the disk tier cannot be opened
	// because the disk is full, failing or read-only. By default Open then
	// succeeds with the disk tier off (logged, and reported by Err) and
	// keeps trying to open it in the background.
	DiskRequired bool
	// AllowSharedDir lets Dir be writable by group or others, or owned by
	// another user (see store.Options.AllowSharedDir for what a local user
	// can then do to the cache). Off by default: Open refuses such a Dir
	// with ErrConfig, naming its path, mode and owner, because whoever can
	// write there can make this process serve what they wrote (on an
	// unsigned route) or drop its copies.
	AllowSharedDir bool
	// diskFS, for this package's tests, is the disk tier's filesystem
	// (store.Options.FS); nil means the real one.
	diskFS vfs.FS

	// MemoryBytes bounds the memory tier. Zero means DefaultMemoryBytes.
	MemoryBytes int64
	// MemoryPolicy is the memory tier's eviction policy (see
	// tracking.Policy). Zero means tracking's default.
	MemoryPolicy tracking.Policy
	// MaxKeyBytes bounds keys. Zero means DefaultMaxKeyBytes.
	MaxKeyBytes int

	// Unverified says how values not yet checked against Redis are read.
	Unverified UnverifiedPolicy

	// Signing, when set, signs every enveloped value with HMAC-SHA256 and
	// refuses values that do not verify. Keys can be rotated: values signed
	// with any key in the ring verify. Not allowed with Raw routes.
	Signing *Keyring

	// LeaseTTL is the herd lock's lease in Redis. Zero means DefaultLeaseTTL.
	LeaseTTL time.Duration
	// LockPrefix starts the herd's lock keys in Redis: LockPrefix, then a
	// hash tag of the data key, so a lock lives on its key's cluster slot.
	// Zero means herd.DefaultLockPrefix ("herd:lock:"). It must not contain
	// '{' or '}'. The Redis user needs read and write rights on it (see
	// "Redis ACL" in the package documentation). Keys starting with it are
	// the herd's, not the cache's: every call on one is refused with
	// ErrReservedKey, InvalidatePrefix leaves them alone, and a route
	// inside it is refused by Open.
	LockPrefix string
	// ChannelPrefix starts the herd's notification channels, on which a
	// load's end wakes the processes waiting for it. Zero means
	// herd.DefaultChannelPrefix ("herd:done:"). It must not contain '{' or
	// '}', nor equal LockPrefix.
	ChannelPrefix string
	// LoadTimeout bounds one shared load. Zero means DefaultLoadTimeout.
	LoadTimeout time.Duration

	// Clock is the time source for expiry, XFetch and the disk tier. Nil
	// means a coarse clock the cache owns (one atomic load per read,
	// refreshed every millisecond).
	Clock Clock
	// Logger receives background errors. Nil means slog.Default().
	Logger *slog.Logger
	// Rand is the source for jitter and XFetch; nil means a random seed.
	Rand rand.Source
}

func (o *Options) withDefaults() Options {
	var c Options
	if o != nil {
		c = *o
		c.Routes = slices.Clone(o.Routes)
		c.Signing = o.Signing.clone()
	}
	if c.MemoryBytes == 0 {
		c.MemoryBytes = DefaultMemoryBytes
	}
	if c.MaxKeyBytes == 0 {
		c.MaxKeyBytes = DefaultMaxKeyBytes
	}
	if c.WriteBehind == 0 {
		c.WriteBehind = DefaultWriteBehind
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.LoadTimeout == 0 {
		c.LoadTimeout = DefaultLoadTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if !c.RequireRoute && !slices.ContainsFunc(c.Routes, func(r Route) bool { return r.Prefix == "" }) {
		c.Routes = append(c.Routes, Route{Tiers: Memory})
	}
	for i := range c.Routes {
		r := &c.Routes[i]
		if r.TTL == 0 {
			r.TTL = DefaultTTL
		}
		if r.Beta == 0 {
			r.Beta = DefaultBeta
		}
		if r.MaxValueBytes == 0 {
			r.MaxValueBytes = DefaultMaxValueBytes
		}
	}
	return c
}

// validate checks a defaulted copy. Every error wraps ErrConfig.
func (o *Options) validate() error {
	bad := func(format string, args ...any) error {
		return opErr("open", "", newFault(ErrConfig, nil, format, args...))
	}
	switch {
	case o.MemoryBytes < 0:
		return bad("negative MemoryBytes %d", o.MemoryBytes)
	case o.DiskMaxBytes < 0:
		return bad("negative DiskMaxBytes %d", o.DiskMaxBytes)
	case o.MaxKeyBytes < 0:
		return bad("negative MaxKeyBytes %d", o.MaxKeyBytes)
	case o.WriteBehind < 0:
		return bad("negative WriteBehind %v", o.WriteBehind)
	case o.LeaseTTL < 0:
		return bad("negative LeaseTTL %v", o.LeaseTTL)
	case o.LoadTimeout < 0:
		return bad("negative LoadTimeout %v", o.LoadTimeout)
	case o.Unverified > ServeStale:
		return bad("unknown Unverified policy %d", o.Unverified)
	case o.RedisClient != nil && o.Redis == nil:
		return bad("RedisClient is set but Redis is nil: the cache opens its tracking connection from Options.Redis")
	}
	if err := o.validateHerd(); err != nil {
		return err
	}
	if o.Signing != nil {
		if s, ok := o.Signing.Secrets[o.Signing.Current]; !ok || len(s) == 0 {
			return bad("Signing has no secret for its current key id %d", o.Signing.Current)
		}
	}
	if o.RequireRoute && len(o.Routes) == 0 {
		return bad("RequireRoute is set but there are no Routes")
	}
	if len(o.Routes) > maxRoutes {
		return bad("%d routes, more than %d", len(o.Routes), maxRoutes)
	}
	seen := make(map[string]bool, len(o.Routes))
	for _, r := range o.Routes {
		name := fmt.Sprintf("route %q", r.Prefix)
		switch {
		case seen[r.Prefix]:
			return bad("duplicate %s", name)
		case r.Tiers == 0:
			return bad("%s has no tiers", name)
		case strings.HasPrefix(r.Prefix, o.lockPrefix()):
			return bad("%s is inside LockPrefix %q, whose keys the cache refuses (ErrReservedKey)", name, o.lockPrefix())
		case r.Tiers&^allTiers != 0:
			return bad("%s has unknown tiers %s", name, r.Tiers)
		case r.TTL < 0:
			return bad("%s has a negative TTL %v", name, r.TTL)
		case r.MaxStale < 0:
			return bad("%s has a negative MaxStale %v", name, r.MaxStale)
		case r.NegativeTTL < 0:
			return bad("%s has a negative NegativeTTL %v", name, r.NegativeTTL)
		case r.Jitter < 0 || r.Jitter >= 1:
			return bad("%s has Jitter %v outside [0, 1)", name, r.Jitter)
		case r.MaxValueBytes < 0:
			return bad("%s has negative MaxValueBytes", name)
		case r.Tiers&Disk != 0 && o.Dir == "":
			return bad("%s uses the disk tier but Options.Dir is empty", name)
		case r.Tiers&Redis != 0 && o.Redis == nil:
			return bad("%s uses the redis tier but Options.Redis is nil", name)
		case r.Raw && o.Signing != nil:
			return bad("%s is raw but Options.Signing is set: raw values carry no signature", name)
		case r.Raw && r.Tiers&Redis == 0:
			return bad("%s is raw but has no redis tier to read other programs' values from", name)
		case len(r.Prefix) > o.MaxKeyBytes:
			return bad("%s is longer than MaxKeyBytes", name)
		}
		seen[r.Prefix] = true
	}
	return nil
}
