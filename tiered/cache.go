package tiered

import (
	"context"
	"errors"
	"math/rand/v2"
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
	o      Options
	router *router
	ring   *envelope.Keyring // Options.Signing, copied at Open; nil: unsigned

	mem    *tracking.Cache // the memory tier's store and every tier's guard
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

	clk   Clock         // expiry and XFetch
	fast  *clock.Coarse // owned coarse clock when Options.Clock is nil
	reval chan struct{} // wakes the revalidator
	done  chan struct{} // closed by Close
	wg    sync.WaitGroup
	rnd   struct {
		sync.Mutex
		r *rand.Rand
	}

	closed    atomic.Bool
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
// Open fails on invalid options (ErrConfig), when the disk tier cannot be
// opened, and when Redis answers but refuses: wrong credentials, an
// untrusted certificate (tracking.ErrRefused), a user who may not read a
// tracked prefix (tracking.ErrACL), a server too old or without client
// tracking. If Redis cannot be reached at all, Open succeeds: the cache
// serves what it has by Options.Unverified, loads without writing to Redis,
// and connects in the background; operations that need Redis meanwhile
// return errors wrapping ErrUnavailable. (A plain-TCP client pointed at a
// TLS port looks unreachable too.)
func Open(ctx context.Context, opts *Options) (*Cache, error) {
	o := opts.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c := &Cache{o: o, router: newRouter(o.Routes), ring: o.Signing.envelopeRing(), reval: make(chan struct{}, 1), done: make(chan struct{})}
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
	if c.local, err = herd.New(&herd.Options{LoadTimeout: o.LoadTimeout, Logger: o.Logger}); err != nil {
		return fail(opErr("open", "", newFault(ErrConfig, err, "herd")))
	}

	if needDisk {
		so := &store.Options{MaxBytes: o.DiskMaxBytes, Clock: c.clk, Logger: o.Logger, MaxKeyBytes: o.MaxKeyBytes}
		if !o.SyncWrites {
			so.Durability = store.NoSync
		}
		for _, r := range o.Routes {
			so.MaxValueBytes = max(so.MaxValueBytes, r.MaxValueBytes+maxEnvelopeOverhead)
		}
		db, err := store.Open(o.Dir, so)
		if errors.Is(err, store.ErrIncompatible) && !localDisk(o.Routes) {
			// A directory of another format version holds only copies of
			// what Redis holds: start it afresh rather than refuse to
			// start. (With a route whose only copy is on disk, Open fails.)
			o.Logger.Warn("tiered: disk tier in an older format; wiping it", "dir", o.Dir, "err", err)
			if err = store.Wipe(o.Dir); err == nil {
				db, err = store.Open(o.Dir, so)
			}
		}
		if err != nil {
			return fail(opErr("open", "", diskOpenError(o.Dir, err)))
		}
		c.disk = newDiskTier(db, mem, c)
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

func (c *Cache) checkKey(key string) error {
	switch {
	case c.closed.Load():
		return ErrClosed
	case key == "":
		return ErrEmptyKey
	case len(key) > c.o.MaxKeyBytes:
		return newFault(ErrKeyTooLarge, nil, "%d bytes > %d", len(key), c.o.MaxKeyBytes)
	}
	return nil
}

func (c *Cache) hook(point, key string) {
	if c.testHook != nil {
		c.testHook(point, key)
	}
}

// Get returns key's value if a tier holds a fresh one. A miss is (nil,
// false, nil); an error means a tier could not answer. The returned slice is
// shared: do not modify it. A memory hit does not allocate.
func (c *Cache) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if err := c.checkKey(key); err != nil {
		return nil, false, opErr("get", key, err)
	}
	ctl := ctlOf(ctx)
	if ctl != nil && ctl.bypass&BypassReads != 0 {
		return nil, false, nil
	}
	if it, ok := c.lookup(key); ok {
		if ctl != nil && ctl.sources != nil {
			ctl.sources.record(key, SourceMemory)
		}
		v, ok := value(it)
		return v, ok, nil
	}
	r, err := c.route(key)
	if err != nil {
		return nil, false, opErr("get", key, err)
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
	if !c.router.memory {
		return nil, false
	}
	return c.mem.LookupFresh(key)
}

// found is what a read found in the tiers.
type found struct {
	e     entry
	src   Source
	hit   bool // a fresh (or, by policy, unverified) value: served
	stale bool // e is a stale candidate: past its soft expiry but alive,
	// or (unverified) a copy Redis could not vouch for
	unverified bool
}

// read is the slow path of every read: it takes the key's ticket, looks in
// tiers (a route's tiers, fastest first), and fills the faster tiers from
// the first that holds a fresh value, under that ticket. A hit is counted
// here; a miss is counted by the caller, which may go on to load.
func (c *Cache) read(ctx context.Context, r *route, key string, tiers []tier) (found, error) {
	t := c.mem.Reserve(key)
	var stale found
	for i, tr := range tiers {
		e, verified, ok, err := tr.get(ctx, r, key)
		if err != nil {
			if tr != tier(c.redis) {
				// A local tier that cannot answer steps aside.
				c.o.Logger.Warn("tiered: tier read failed", "tier", tr.source(), "key", key, "err", err)
				continue
			}
			return stale, err
		}
		if !ok || !alive(&e.it, c.now()) {
			continue
		}
		if !verified {
			v, err := c.vouch(ctx, r, key, &e, t, tr)
			switch v {
			case unreachable:
				// Redis cannot vouch for the copy, and would not answer
				// the read either. The copy is a candidate for
				// stale-on-error if the caller goes on to load.
				if !stale.stale {
					stale = found{e: e, src: tr.source(), stale: true, unverified: true}
				}
				return stale, err
			case serveAnyway:
				r.stats.staleServes.Add(1)
				c.countHit(r, tr.source())
				return found{e: e, src: SourceStale, hit: true}, nil
			case changed:
				c.forgetLocal(key)
				continue
			case unknown:
				continue
			}
		}
		if !fresh(&e.it, c.now()) {
			if !stale.stale {
				stale = found{e: e, src: tr.source(), stale: true}
			}
			continue
		}
		c.fill(r, key, &e, t, tiers[:i])
		c.countHit(r, tr.source())
		return found{e: e, src: tr.source(), hit: true}, nil
	}
	return stale, nil
}

// verdict is what vouch decided about an unverified local copy.
type verdict uint8

const (
	vouched     verdict = iota // Redis holds its version: verified now
	serveAnyway                // the ServeStale policy serves it unchecked
	changed                    // Redis holds something else: drop it
	unknown                    // overtaken by an invalidation meanwhile: read on
	unreachable                // Redis could not answer: not served
)

// vouch decides about a local copy of a Redis key that its tier could not
// vouch for (after a restart, a reconnect, or an invalidation of its trust):
// this is the one place Options.Unverified is applied.
func (c *Cache) vouch(ctx context.Context, r *route, key string, e *entry, t tracking.Ticket, tr tier) (verdict, error) {
	r.stats.unverifiedReads.Add(1)
	if c.o.Unverified == ServeStale && !c.redisUp.Load() {
		// Redis is not known to answer: serve, counted, and let the
		// revalidator find out when it is back. Once it answers, reads
		// check first like the Revalidate policy, so unverified values
		// stop being served as soon as Redis is back.
		c.kickRevalidation()
		return serveAnyway, nil
	}
	match, pttl, err := c.redis.verify(ctx, r, key, e.it.Version)
	if err != nil {
		c.redisUp.Store(false)
		c.kickRevalidation()
		if c.o.Unverified == ServeStale {
			return serveAnyway, nil
		}
		return unreachable, err
	}
	if !match || outlives(&e.it, c.now(), pttl) {
		r.stats.dropped.Add(1)
		return changed, nil
	}
	if !tr.confirm(r, key, e, t) {
		// Redis holds this version, but the ticket was overtaken (an
		// invalidation, a local write, or another key sharing the
		// generation slot): read on from the slower tiers.
		return unknown, nil
	}
	r.stats.revalidated.Add(1)
	return vouched, nil
}

// outlives reports whether a local copy would outlive its key's remaining
// TTL in Redis (pttl < 0: none): someone shortened it, so the copy must be
// read again with the new expiry.
func outlives(it *tracking.Item, now int64, pttl time.Duration) bool {
	if pttl < 0 {
		return false
	}
	return it.HardExpiry == 0 || it.HardExpiry > now+int64(pttl+ttlSlack)
}

func (c *Cache) countHit(r *route, src Source) {
	switch src {
	case SourceMemory:
		r.stats.memSlowHits.Add(1)
	case SourceDisk:
		r.stats.diskHits.Add(1)
	case SourceRedis:
		r.stats.redisHits.Add(1)
	}
}

// fillLocal stores e in the local tiers of r under ticket t.
func (c *Cache) fillLocal(r *route, key string, e *entry, t tracking.Ticket) {
	c.fill(r, key, e, t, r.local)
}

// fill stores e in tiers, fastest first, under ticket t: each tier refuses
// it if t was overtaken by then.
func (c *Cache) fill(r *route, key string, e *entry, t tracking.Ticket, tiers []tier) {
	c.hook("fill", key)
	for _, tr := range tiers {
		c.hook("fill:"+tr.source().String(), key)
		tr.fill(r, key, e, t)
	}
	c.hook("filled", key)
}

// forgetLocal removes key from memory and disk, refusing every ticket
// taken for it before: an invalidation of our own, which the disk tier
// hears like any other.
func (c *Cache) forgetLocal(key string) { c.mem.Invalidate(key) }

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
		Logger: c.o.Logger, AfterWrite: c.afterWrite})
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
