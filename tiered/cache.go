package tiered

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/thermoscache/thermos/herd"
	"github.com/thermoscache/thermos/internal/clock"
	"github.com/thermoscache/thermos/internal/envelope"
	"github.com/thermoscache/thermos/store"
	"github.com/thermoscache/thermos/tracking"
)

// Cache is thermos's tiered cache. It is safe for concurrent use.
type Cache struct {
	// What every memory hit reads, together at the start: the memory
	// tier, the key limit (Options.MaxKeyBytes), whether any route has
	// memory (router.memory), and whether the cache is closed.
	mem       *tracking.Cache // the memory tier's store and every tier's guard
	maxKey    uint
	anyMemory bool
	closed    atomic.Bool

	o      Options
	router *router
	ring   *envelope.Keyring // Options.Signing, copied at Open; nil: unsigned

	memory memoryTier
	disk   *diskTier // nil without disk routes
	redis  redisTier

	herdp atomic.Pointer[herd.Group] // shared rebuilds, once Redis is connected
	herdM sync.Mutex                 // serialises creating herdp
	local *herd.Group                // in-process rebuilds
	own   ownWrites                  // loads awaiting their own invalidation
	// redisUp is true once a revalidation pass has completed since the
	// last epoch bump or Redis error: Redis is known to answer.
	redisUp atomic.Bool
	rights  rights // what the Redis user may not do, found at Open
	// rollback holds the newest signed write seen per key (rollback.go).
	rollback atomic.Pointer[rollbackGuard]

	clk   Clock         // expiry and XFetch
	fast  *clock.Coarse // owned coarse clock when Options.Clock is nil
	reval chan struct{} // wakes the revalidator
	// warmMark is set by a complete warm start (warm), before the
	// revalidator starts, which alone reads it afterwards.
	warmMark *warmMark
	done     chan struct{} // closed by Close
	wg       sync.WaitGroup
	rnd      struct {
		sync.Mutex
		r *rand.Rand
	}

	closeOnce sync.Once
	closeErr  error

	stats cacheStats

	// testHook, when set by a test of this package, runs at the named
	// points of the read and write paths, so a test can force an
	// interleaving.
	testHook func(point, key string)
}

// Open builds a Cache from opts (nil is valid: memory only). With a disk
// tier it reopens the directory and loads what it holds as unverified; with
// Redis it subscribes to invalidations before revalidating anything, so a
// write after a check always reaches the cache.
//
// Open fails on invalid options (ErrConfig; a Redis address without a
// port or otherwise malformed is one, found before dialing), when the disk
// tier cannot be opened, and, at once, when Redis answers but refuses
// (ErrRefused): wrong credentials or an unknown user, an untrusted
// certificate or a TLS mismatch (tracking.ErrRefused), a user who may not
// read a tracked prefix (tracking.ErrACL) or lacks another right the cache
// needs (*RightsError; see "Redis ACL" in the package documentation), a
// server too old or without client tracking. If Redis cannot be reached at
// all, Open succeeds: the cache serves what it has by Options.Unverified,
// loads without writing to Redis, and connects in the background;
// operations that need Redis meanwhile return errors wrapping
// ErrUnavailable.
func Open(ctx context.Context, opts *Options) (*Cache, error) {
	o := opts.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c := &Cache{o: o, router: newRouter(o.Routes), ring: o.Signing.envelopeRing(), reval: make(chan struct{}, 1), done: make(chan struct{})}
	c.maxKey, c.anyMemory = uint(o.MaxKeyBytes), c.router.memory
	c.redis = redisTier{c: c}
	c.own.init()
	// One clock for every tier: the caller's, or a coarse one this cache
	// owns (the memory tier reads it with one atomic load).
	c.clk = o.Clock
	if c.clk == nil {
		c.fast = clock.NewCoarse(0)
		c.clk = c.fast
	}
	if o.Rand != nil {
		c.rnd.r = rand.New(o.Rand)
	}

	var needRedis, needDisk bool
	for _, r := range o.Routes {
		needRedis = needRedis || r.Tiers&Redis != 0
		needDisk = needDisk || r.Tiers&Disk != 0
	}
	fail := func(err error) (*Cache, error) {
		c.shutdown()
		return nil, err
	}

	to := &tracking.Options{
		MaxBytes:            o.MemoryBytes,
		Policy:              o.MemoryPolicy,
		KeepUnverified:      true, // revalidated, not flushed, after a reconnect
		NoLoop:              true, // our writes update the local entry themselves
		ConnectInBackground: true, // Redis down at Open: serve by policy, recover
		Clock:               c.clk,
		Logger:              o.Logger,
	}
	if needRedis {
		// One client serves every Redis route. When no route combines a
		// local tier with Redis nothing needs tracking; a prefix no key
		// starts with keeps the connection quiet (BCAST without a prefix
		// would track every key).
		to.Redis = o.Redis
		to.Prefixes = trackedPrefixes(o.Routes)
		if len(to.Prefixes) == 0 {
			to.Prefixes = []string{untrackedPrefix}
		}
	}
	mem, err := tracking.New(ctx, to)
	if err != nil {
		return fail(opErr("open", "", memoryOpenError(err)))
	}
	c.mem = mem
	c.memory = memoryTier{mem: mem}
	if err := c.checkRights(ctx); err != nil {
		return fail(err)
	}
	if c.local, err = herd.New(&herd.Options{LoadTimeout: o.LoadTimeout, Logger: o.Logger}); err != nil {
		return fail(opErr("open", "", newFault(ErrConfig, err, "herd")))
	}

	if needDisk {
		// On a disk fault, the tier opens off and heals in the background
		// (see diskfault.go), unless Options.DiskRequired.
		if c.disk, err = openDiskTier(c, mem); err != nil {
			return fail(err)
		}
	}
	for _, r := range c.router.routes {
		if r.Tiers&Memory != 0 {
			r.local = append(r.local, c.memory)
		}
		if r.Tiers&Disk != 0 {
			r.local = append(r.local, c.disk)
		}
		r.tiers = r.local
		if r.Tiers&Redis != 0 {
			r.tiers = append(r.tiers[:len(r.tiers):len(r.tiers)], c.redis)
		}
	}

	// Registered before anything is loaded or revalidated.
	c.mem.OnInvalidate(c.onInvalidate)
	if err := c.checkShared(ctx); err != nil {
		return fail(opErr("open", "", err))
	}

	if c.disk != nil {
		if err := c.warm(ctx); err != nil {
			return fail(err)
		}
	}
	c.wg.Add(1)
	go c.revalidator()
	c.kickRevalidation()
	return c, nil
}

// localDisk reports whether some route keeps its keys on disk without Redis.
func localDisk(routes []Route) bool {
	for _, r := range routes {
		if r.Tiers&Disk != 0 && r.Tiers&Redis == 0 {
			return true
		}
	}
	return false
}

// onInvalidate hears every invalidation after the memory tier bumped the
// keys' generations and removed them: every ticket taken before is already
// refused, so what it does here is housekeeping, not a guard. It runs on the
// tracking connection's reader: quick, no I/O.
func (c *Cache) onInvalidate(keys []string, epochBump bool) {
	if epochBump {
		c.redisUp.Store(false)
		c.stats.epochBumps.Add(1)
		c.kickRevalidation()
	}
	if c.disk != nil {
		c.disk.invalidated(keys, epochBump)
	}
	c.own.invalidated(keys)
	if g := c.herdp.Load(); g != nil {
		for _, k := range keys {
			g.Wake(k)
		}
	}
}

// Close flushes pending disk writes, stops every goroutine and closes the
// tiers. It returns a disk write error not reported by Flush yet. It is safe
// to call twice; later calls return the first's error.
func (c *Cache) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		c.closeErr = c.shutdown()
	})
	return c.closeErr
}

func (c *Cache) shutdown() error {
	close(c.done)
	c.wg.Wait()
	var errs []error
	if g := c.herdp.Load(); g != nil {
		errs = append(errs, g.Close())
	}
	if c.local != nil {
		errs = append(errs, c.local.Close())
	}
	if c.disk != nil {
		errs = append(errs, c.disk.close())
	}
	if c.mem != nil {
		errs = append(errs, c.mem.Close())
	}
	if c.fast != nil {
		c.fast.Close()
	}
	if err := errors.Join(errs...); err != nil {
		return opErr("close", "", err)
	}
	return nil
}

// memoryOpenError maps what tracking.New refused to this package's kinds.
func memoryOpenError(err error) error {
	switch {
	case errors.Is(err, tracking.ErrInvalidOptions), errors.Is(err, tracking.ErrUnsupportedPolicy):
		return newFault(ErrConfig, err, "memory tier")
	case errors.Is(err, tracking.ErrUnavailable):
		return newFault(ErrUnavailable, err, "")
	}
	// ErrRefused, ErrACL, ErrTrackingRefused, ErrUnsupportedServer: Redis
	// answered and said no.
	return newFault(ErrRefused, err, "")
}

// diskOpenError maps what store.Open refused to this package's kinds.
func diskOpenError(dir string, err error) error {
	if errors.Is(err, store.ErrDiskFault) {
		return newFault(ErrDisk, err, "disk tier %s", dir)
	}
	// Bad options, a directory others may write, one another process holds
	// (ErrLocked), or one in another format that holds local data.
	return newFault(ErrConfig, err, "disk tier %s", dir)
}

// StalenessBound is the longest another client's acknowledged write can go
// unseen by this cache: the tracking connection's bound for noticing a
// frozen or silently partitioned Redis (tracking.Cache.StalenessBound),
// which also bounds how late an invalidation may be applied while the
// connection is alive. Zero without Redis.
func (c *Cache) StalenessBound() time.Duration { return c.mem.StalenessBound() }

func (c *Cache) now() int64 {
	if c.fast != nil {
		return c.fast.UnixNano()
	}
	return c.clk.Now().UnixNano()
}

// check validates key and finds its route.
func (c *Cache) check(key string) (*route, error) {
	if err := c.checkKey(key); err != nil {
		return nil, err
	}
	return c.route(key)
}

// route finds key's route: ErrNoRoute if none matches it.
func (c *Cache) route(key string) (*route, error) {
	r := c.router.find(key)
	if r == c.router.none {
		return nil, ErrNoRoute
	}
	return r, nil
}

// validKey reports whether a call on key passes checkKey: the hit paths'
// test, inlined, before they pay for checkKey's call.
func (c *Cache) validKey(key string) bool {
	// 1 <= len(key) <= MaxKeyBytes in one unsigned compare (an empty key
	// wraps around), to stay within the inliner's budget.
	return uint(len(key)-1) < c.maxKey && !c.closed.Load()
}

func (c *Cache) checkKey(key string) error {
	switch {
	case c.closed.Load():
		return ErrClosed
	case key == "":
		return ErrEmptyKey
	case len(key) > c.o.MaxKeyBytes:
		return newFault(ErrKeyTooLarge, nil, "%d bytes > %d", len(key), c.o.MaxKeyBytes)
	case c.reserved(key):
		return newFault(ErrReservedKey, nil, "the herd's leases live under LockPrefix %q", c.o.lockPrefix())
	}
	return nil
}

// reserved reports whether key is in a namespace the cache keeps for
// itself. Such a key is never stored in any tier (every call on it is
// refused), so the memory hit paths need not ask.
func (c *Cache) reserved(key string) bool { return strings.HasPrefix(key, c.o.lockPrefix()) }

func (c *Cache) hook(point, key string) {
	if c.testHook != nil {
		c.testHook(point, key)
	}
}

// Get returns key's value if a tier holds a fresh one. A miss is (nil,
// false, nil); an error means a tier could not answer. The returned slice is
// shared: do not modify it. A memory hit does not allocate.
func (c *Cache) Get(ctx context.Context, key string) ([]byte, bool, error) {
	// The memory hit, small enough that nothing is spilled around it:
	// one call (the memory tier's lookup, lookup being inlined) under a
	// few loads and compares. Everything else, a memory miss included, is
	// get's.
	if c.validKey(key) && noControls(ctx) {
		if it, ok := c.lookup(key); ok {
			v, ok := value(it)
			return v, ok, nil
		}
		return c.get(ctx, key, true)
	}
	return c.get(ctx, key, false)
}

// get is Get past its memory hit; looked says lookup was called already
// (and the memory tier counted the miss).
func (c *Cache) get(ctx context.Context, key string, looked bool) ([]byte, bool, error) {
	if err := c.checkKey(key); err != nil {
		return nil, false, opErr("get", key, err)
	}
	ctl := ctlOf(ctx)
	if ctl != nil && ctl.bypass&BypassReads != 0 {
		return nil, false, nil
	}
	if !looked {
		if it, ok := c.lookup(key); ok {
			ctl.note(key, SourceMemory)
			v, ok := value(it)
			return v, ok, nil
		}
	}
	r, err := c.route(key)
	if err != nil {
		return nil, false, opErr("get", key, err)
	}
	if r.Tiers == Disk {
		return c.getDisk(ctx, ctl, r, key)
	}
	f, err := c.read(ctx, r, key, r.tiers)
	if !f.hit {
		r.stats.misses.Add(1)
		return nil, false, opErr("get", key, err)
	}
	note(ctx, key, f.src)
	v, ok := value(&f.e.it)
	return v, ok, nil
}

// lookup is the memory hit path: one lock-free lookup, one clock reading,
// no allocation, no routing. It returns the item if memory may serve it as
// a hit (verified, before its soft expiry), counted by the memory tier
// under the item's tag, the route's index. Anything else is left to the
// slow path (read), which looks again and applies the rules for unverified
// and stale copies.
func (c *Cache) lookup(key string) (*tracking.Item, bool) {
	if !c.anyMemory {
		return nil, false
	}
	return c.mem.LookupFresh(key)
}

// group returns the herd for r: shared through Redis when r uses Redis and
// Redis is connected, else in-process only (a value loaded while Redis is
// down is not written there).
func (c *Cache) group(r *route) (g *herd.Group, shared bool) {
	if r.Tiers&Redis == 0 {
		return c.local, false
	}
	if g := c.herdp.Load(); g != nil {
		return g, true
	}
	cl := c.dataClient()
	if cl == nil {
		return c.local, false
	}
	c.herdM.Lock()
	defer c.herdM.Unlock()
	if g := c.herdp.Load(); g != nil {
		return g, true
	}
	if c.closed.Load() {
		return c.local, false
	}
	g, err := herd.New(&herd.Options{Client: cl, LeaseTTL: c.o.LeaseTTL, LoadTimeout: c.o.LoadTimeout,
		Logger: c.o.Logger, AfterWrite: c.afterWrite, LockPrefix: c.o.LockPrefix, ChannelPrefix: c.o.ChannelPrefix,
		DisableScripting: c.rights.noScripts.Load(), DisableNotifications: c.rights.noNotify.Load()})
	if err != nil {
		// Options were validated at Open; this cannot happen.
		c.o.Logger.Error("tiered: shared herd", "err", err)
		return c.local, false
	}
	c.herdp.Store(g)
	return g, true
}

// maxXFetchLog bounds -ln(u) for u drawn as a float64 in (0, 1].
const maxXFetchLog = 37

// float64 and uint64 draw from Options.Rand under a lock when one was
// given (tests want determinism), else from the runtime's lock-free source.
func (c *Cache) float64() float64 {
	if c.rnd.r == nil {
		return rand.Float64()
	}
	c.rnd.Lock()
	defer c.rnd.Unlock()
	return c.rnd.r.Float64()
}

func (c *Cache) uint64() uint64 {
	if c.rnd.r == nil {
		return rand.Uint64()
	}
	c.rnd.Lock()
	defer c.rnd.Unlock()
	return c.rnd.r.Uint64()
}
