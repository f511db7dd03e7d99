package tracking

import (
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"github.com/redis/rueidis"
)

// Defaults for Options fields left at zero.
const (
	// DefaultMaxBytes is the memory budget when Options.MaxBytes is zero.
	DefaultMaxBytes int64 = 64 << 20
	// DefaultMaxTTL is the longest an entry lives locally when
	// Options.MaxTTL is zero, even if Redis gave it no expiry.
	DefaultMaxTTL = 5 * time.Minute
	// DefaultConnWriteTimeout bounds how long a silent (frozen) server goes
	// unnoticed; see Options.ConnWriteTimeout.
	DefaultConnWriteTimeout = time.Second
	// DefaultMinShardBytes is the smallest shard share the default shard
	// count accepts: the default count is halved until each shard gets at
	// least this much (or there is one shard).
	DefaultMinShardBytes int64 = 256 << 10
	// MaxShards is the largest accepted Options.Shards.
	MaxShards = 1024
	// EntryOverhead is the number of bytes charged per entry on top of
	// len(key) + cap(Value): the entry (112 bytes with its item and queue
	// links), its index slot (12 to 15 bytes) and its share of the
	// policy's sketch and ghost filters, measured on amd64 with 100-byte
	// values (TestEntryOverheadMatchesHeap keeps it within 16 bytes above
	// the measured heap).
	EntryOverhead = 144
	// DefaultTopologyInterval is how often a cache on Redis Cluster checks
	// the slot map when Options.TopologyInterval is zero.
	DefaultTopologyInterval = time.Second
	// DefaultHitYield is Options.HitYield when zero.
	DefaultHitYield = 1024
	// MinRedisVersion is the oldest Redis server New accepts: 7.0.5 fixed
	// NOLOOP in scripts and the ordering of invalidation pushes.
	MinRedisVersion = "7.0.5"
)

// Policy selects the eviction policy of every shard.
//
// Every policy is driven by the byte budget: this package evicts by bytes
// itself, so a policy only chooses the order. The default, PolicyS3FIFO,
// was chosen by measuring hit ratios on real traces and zipfian workloads
// (see the package documentation); its hits take no lock. PolicyLRU and
// PolicyTwoQueue are golang-lru's algorithms on byte-sized queues; their
// hits lock the key's shard. ARC is not offered: golang-lru/v2 v2.0.7 no
// longer ships it (it moved to the separate module golang-lru/arc/v2), and
// its adaptation target counts entries with no eviction callback, so a
// byte-bounded ARC would be a new algorithm, not golang-lru's.
type Policy int

const (
	// PolicyS3FIFO is the default: S3-FIFO (a small FIFO admission window,
	// a CLOCK main queue, a ghost filter of keys recently dropped from the
	// window) with a TinyLFU frequency sketch that keeps frequent keys the
	// window would drop, and byte-aware admission into main. Scans and
	// one-hit wonders pass through the window without flushing what is
	// read often. Hits take no lock and write nothing shared.
	PolicyS3FIFO Policy = iota
	// PolicyLRU evicts the least recently used entry: exact LRU, as
	// golang-lru's simplelru. Every hit locks the key's shard to move the
	// entry to the front.
	PolicyLRU
	// PolicyTwoQueue keeps entries seen once in a recent queue (a quarter of
	// the budget) apart from entries seen twice, so a scan does not flush
	// the frequently used set. Every hit locks the key's shard.
	PolicyTwoQueue
	// PolicyARC is not supported: New returns ErrUnsupportedPolicy.
	PolicyARC
)

// String returns the policy's name.
func (p Policy) String() string {
	switch p {
	case PolicyS3FIFO:
		return "s3fifo"
	case PolicyLRU:
		return "lru"
	case PolicyTwoQueue:
		return "2q"
	case PolicyARC:
		return "arc"
	}
	return fmt.Sprintf("policy(%d)", int(p))
}

// Item is what the cache stores per key. Value is shared: callers must not
// modify it. The cache reads HardExpiry (an entry is never served past it)
// and Version (Revalidate compares it); the other fields are the caller's,
// returned as they were stored.
type Item struct {
	Value      []byte        // payload; shared and read-only
	SoftExpiry int64         // Unix ns after which the value should be refreshed; 0 = none
	HardExpiry int64         // Unix ns after which it is never served; 0 = none
	Delta      time.Duration // duration of the last rebuild (XFetch)
	Version    uint64        // write version, compared on revalidation
	// Flags are the caller's own flags for the entry, stored and returned
	// as is (tiered keeps its envelope's flags in them).
	Flags uint8
	// Tag is the caller's own small label for the entry, stored and
	// returned as is (tiered keeps the index of the key's route in it, so
	// a hit needs no second routing step).
	Tag uint8
}

// Clock tells the time. Implementations must be safe for concurrent use.
type Clock interface {
	Now() time.Time
}

// Options configures a Cache. A nil *Options is valid and gives a local-only
// cache with every default. New works on a copy; *Options is never written.
type Options struct {
	// Redis is the connection to track. Nil means a local-only cache: no
	// connection, no tracking; Fetch, Set and Delete return ErrNoRedis.
	//
	// Addresses, credentials (Username, Password, AuthCredentialsFn) and
	// TLSConfig pass through unchanged. New overrides the fields that make
	// tracking work and documents each: DisableCache is forced false (with
	// DisableCache rueidis sends no CLIENT TRACKING at all),
	// ClientTrackingOptions is set to BCAST with the covered Prefixes,
	// OnInvalidations is taken, ConnWriteTimeout and Dialer.KeepAlive come
	// from ConnWriteTimeout below, and PipelineMultiplex, if zero, becomes -1
	// (one connection per node, so each invalidation arrives once and replies
	// and invalidations share one ordered stream).
	Redis *rueidis.ClientOption

	// ConnectInBackground makes New succeed when Redis cannot be reached
	// (the cause would be ErrUnavailable): the cache starts without a
	// connection and dials in the background, backing off up to a second.
	// Until it connects, Client returns nil and Fetch, Set and Delete return
	// an error wrapping ErrUnavailable. On connecting, the epoch bumps, so
	// listeners hear an epoch bump and revalidate what was cached meanwhile.
	// Off by default: New fails.
	ConnectInBackground bool

	// Prefixes are the key prefixes tracked with CLIENT TRACKING BCAST.
	// Redis refuses overlapping prefixes on one connection, so New tracks
	// their minimal non-overlapping cover (see CoverPrefixes). Empty means
	// every key (BCAST without PREFIX). Keys outside every prefix are never
	// cached from Redis: no invalidation would reach them.
	Prefixes []string

	// MaxBytes bounds the bytes counted over all shards: len(key) +
	// cap(Value) + EntryOverhead per entry. Zero means DefaultMaxBytes.
	MaxBytes int64

	// Shards is the number of independently locked shards, rounded up to a
	// power of two, at most MaxShards. Each gets MaxBytes/Shards; an entry
	// larger than that is refused with ErrTooLarge. Zero means
	// 8*GOMAXPROCS rounded up, at most 256, halved while a shard's share
	// would fall below DefaultMinShardBytes.
	Shards int

	// Policy is the eviction policy. Zero means PolicyS3FIFO.
	Policy Policy

	// HitYield makes a goroutine yield its processor (runtime.Gosched)
	// about once every HitYield lock-free hits while every processor is
	// kept busy. Hits under the default policy never block, so readers
	// that keep every core busy would keep the goroutine that reads the
	// tracking connection waiting for the Go scheduler to preempt them
	// (10 ms at a time, more on a loaded machine), and invalidations would
	// wait with it; yielding lets it run instead. Every HitYield hits a
	// goroutine reads the system clock (a fraction of a nanosecond per
	// hit at 1024); with the default clock (or any coarse clock of this
	// module) it yields only if the clock's last tick is more than two
	// resolutions old, which happens only while its ticking goroutine,
	// like the tracking reader, cannot get a processor. On a machine with
	// an idle core a hit then never yields (a yield there costs ~15 % of
	// a hit's CPU time: Gosched wakes the idle processor to look for
	// work). With another Clock it yields every HitYield hits. Stats.Yields
	// counts the yields. Zero means DefaultHitYield; negative never
	// yields. Rounded up to a power of two.
	HitYield int

	// MaxTTL is the longest an entry lives locally, whatever Redis says.
	// Zero means DefaultMaxTTL; negative is invalid.
	MaxTTL time.Duration

	// KeepUnverified decides what happens to entries when the cache can no
	// longer trust them (an epoch bump: FLUSHALL, FLUSHDB, or a dropped
	// connection). False (the default) drops them all at once. True keeps
	// them: Get returns them with fresh == false, for the caller to
	// revalidate (Revalidate) or to serve under an explicit stale policy.
	KeepUnverified bool

	// NoLoop adds NOLOOP to CLIENT TRACKING: writes sent on this cache's own
	// connection produce no invalidation for it, so the value Set stores
	// locally stays cached. Off by default, because with NOLOOP a tracked
	// key written through Client() without Set or Delete is never
	// invalidated locally. Without it, Set's local entry is usually removed
	// again by the write's own invalidation (correct, one extra read later).
	NoLoop bool

	// ConnWriteTimeout is rueidis's ConnWriteTimeout: replies and the
	// background PING must arrive within it, or the connection is closed,
	// which bumps the epoch. rueidis PINGs after Dialer.KeepAlive without
	// traffic; if Redis.Dialer.KeepAlive is zero New sets it to
	// min(1s, ConnWriteTimeout). A frozen server (SIGSTOP, silent partition)
	// therefore goes unnoticed, and entries stay fresh, for at most
	// 2*KeepAlive + ConnWriteTimeout (Cache.StalenessBound); during that time
	// no write can be acknowledged by the frozen server either. Zero means
	// Redis.ConnWriteTimeout if set, else DefaultConnWriteTimeout.
	ConnWriteTimeout time.Duration

	// TopologyInterval is, on Redis Cluster, how often the cache reads
	// CLUSTER SLOTS: when the slot → primary map changed (a failover, a slot
	// moved) the epoch bumps, so entries served by a node that changed
	// become unverified; every check also arms CLIENT TRACKING on every
	// primary. It bounds how long a failover that closes no connection of
	// ours (a partition, a coordinated failover) goes unnoticed. If
	// Redis.ClusterOption.ShardsRefreshInterval is zero it is set to this
	// too, so rueidis's slot map is as fresh. Zero means
	// DefaultTopologyInterval; negative turns the check off. Ignored on a
	// single server.
	TopologyInterval time.Duration

	// Decode turns the bytes Fetch reads from Redis into an Item. Nil means
	// raw bytes: Value = raw, every other field zero. Decode may keep raw.
	Decode func(key string, raw []byte) (Item, error)

	// Clock is the time source for expiry. Nil means a coarse clock (one
	// atomic load per read, refreshed every millisecond by a goroutine the
	// cache owns and stops in Close). A Clock that also has a
	// UnixNano() int64 method is read through it, which saves building a
	// time.Time on every hit.
	Clock Clock

	// Logger receives background errors (re-arming tracking). Nil means
	// slog.Default().
	Logger *slog.Logger
}

// config is Options after defaults and validation.
type config struct {
	Options
	prefixes   []string // covered, sorted
	shards     int
	shareBytes int64
	keepAlive  time.Duration
}

func (o *Options) config() (*config, error) {
	c := &config{}
	if o != nil {
		c.Options = *o
		c.Prefixes = append([]string(nil), o.Prefixes...)
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.MaxBytes < 0 {
		return nil, fmt.Errorf("%w: MaxBytes %d is negative", ErrInvalidOptions, c.MaxBytes)
	}
	if c.MaxTTL == 0 {
		c.MaxTTL = DefaultMaxTTL
	}
	if c.MaxTTL < 0 {
		return nil, fmt.Errorf("%w: MaxTTL %v is negative", ErrInvalidOptions, c.MaxTTL)
	}
	switch c.Policy {
	case PolicyS3FIFO, PolicyLRU, PolicyTwoQueue:
	default:
		return nil, fmt.Errorf("%w: %v", ErrUnsupportedPolicy, c.Policy)
	}
	switch {
	case c.Shards < 0 || c.Shards > MaxShards:
		return nil, fmt.Errorf("%w: Shards %d not in [0, %d]", ErrInvalidOptions, c.Shards, MaxShards)
	case c.Shards == 0:
		c.shards = min(nextPow2(8*runtime.GOMAXPROCS(0)), 256)
		for c.shards > 1 && c.MaxBytes/int64(c.shards) < DefaultMinShardBytes {
			c.shards /= 2
		}
	default:
		c.shards = nextPow2(c.Shards)
	}
	c.shareBytes = c.MaxBytes / int64(c.shards)
	if c.shareBytes < EntryOverhead+1 {
		return nil, fmt.Errorf("%w: MaxBytes %d leaves a shard's share (%d bytes over %d shards) too small for one entry",
			ErrInvalidOptions, c.MaxBytes, c.shareBytes, c.shards)
	}
	if c.ConnWriteTimeout < 0 {
		return nil, fmt.Errorf("%w: ConnWriteTimeout %v is negative", ErrInvalidOptions, c.ConnWriteTimeout)
	}
	if c.Redis != nil {
		r := *c.Redis
		c.Redis = &r
		if c.ConnWriteTimeout == 0 {
			c.ConnWriteTimeout = r.ConnWriteTimeout
		}
		if c.ConnWriteTimeout == 0 {
			c.ConnWriteTimeout = DefaultConnWriteTimeout
		}
		if c.TopologyInterval == 0 {
			c.TopologyInterval = DefaultTopologyInterval
		}
		if c.TopologyInterval > 0 && r.ClusterOption.ShardsRefreshInterval == 0 {
			c.Redis.ClusterOption.ShardsRefreshInterval = c.TopologyInterval
		}
		c.keepAlive = r.Dialer.KeepAlive
		if c.keepAlive <= 0 {
			c.keepAlive = min(rueidis.DefaultTCPKeepAlive, c.ConnWriteTimeout)
		}
	}
	if c.HitYield == 0 {
		c.HitYield = DefaultHitYield
	}
	c.prefixes = CoverPrefixes(c.Prefixes)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

func nextPow2(n int) int {
	p := 1
	for p < n {
		p <<= 1
	}
	return p
}
