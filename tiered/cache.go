package tiered

import (
	"context"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

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

	mem   *tracking.Cache            // memory tier; its client is the Redis tier
	disk  *store.DB                  // nil without disk routes
	wb    *writeBehind               // disk writes; nil without disk routes
	trust *trust                     // disk entries known to match Redis
	herdp atomic.Pointer[herd.Group] // shared rebuilds, once Redis is connected
	// redisUp is true once a revalidation pass has completed since the
	// last epoch bump or Redis error: Redis is known to answer.
	redisUp atomic.Bool
	herdM   sync.Mutex     // serialises creating herdp
	local   *herd.Group    // in-process rebuilds for local routes
	clk     clock.Clock    // expiry and XFetch
	fast    *clock.Coarse  // owned coarse clock when Options.Clock is nil
	reval   chan struct{}  // wakes the revalidator
	done    chan struct{}  // closed by Close
	wg      sync.WaitGroup // background goroutines
	rnd     struct {
		sync.Mutex
		r *rand.Rand
	}

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	stats cacheStats
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
	c := &Cache{o: o, router: newRouter(o.Routes), reval: make(chan struct{}, 1), done: make(chan struct{})}
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
		return fail(fmt.Errorf("tiered: open memory tier: %w", err))
	}
	c.mem = mem
	if c.local, err = herd.New(&herd.Options{LoadTimeout: o.LoadTimeout, Logger: o.Logger}); err != nil {
		return fail(fmt.Errorf("tiered: %w", err))
	}

	if needDisk {
		so := &store.Options{MaxBytes: o.DiskMaxBytes, Clock: c.clk, Logger: o.Logger, MaxKeyBytes: o.MaxKeyBytes}
		if !o.SyncWrites {
			so.Durability = store.NoSync
		}
		for _, r := range o.Routes {
			so.MaxValueBytes = max(so.MaxValueBytes, r.MaxValueBytes)
		}
		if c.disk, err = store.Open(o.Dir, so); err != nil {
			return fail(fmt.Errorf("tiered: open disk tier: %w", err))
		}
		c.wb = newWriteBehind(c.disk, o.WriteBehind, o.Logger)
		c.trust = newTrust()
	}

	// Invalidations reach the disk tier and wake herd waiters: before the
	// memory entry goes, so a reader that misses in memory never finds the
	// old disk copy still trusted (see tracking.OnBeforeInvalidate).
	// Registered before anything is loaded or revalidated.
	c.mem.OnInvalidate(c.onInvalidate)

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

// onInvalidate runs on the tracking connection's reader: quick, no I/O.
func (c *Cache) onInvalidate(keys []string, epochBump bool) {
	if epochBump {
		c.redisUp.Store(false)
		c.stats.epochBumps.Add(1)
		if c.trust != nil {
			c.trust.reset()
		}
		c.kickRevalidation()
		return
	}
	for _, k := range keys {
		if c.trust != nil {
			c.trust.invalidate(k)
			if r := c.router.find(k); r.Tiers&Disk != 0 {
				c.wb.put(k, nil)
			}
		}
		if g := c.herdp.Load(); g != nil {
			g.Wake(k)
		}
	}
}

// Close flushes pending disk writes, stops every goroutine and closes the
// tiers. It is safe to call twice; later calls return the first's error.
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
	if c.wb != nil {
		c.wb.close()
	}
	if c.disk != nil {
		errs = append(errs, c.disk.Close())
	}
	if c.mem != nil {
		errs = append(errs, c.mem.Close())
	}
	if c.fast != nil {
		c.fast.Close()
	}
	return errors.Join(errs...)
}

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
	return c.router.find(key), nil
}

func (c *Cache) checkKey(key string) error {
	switch {
	case c.closed.Load():
		return ErrClosed
	case key == "":
		return ErrEmptyKey
	case len(key) > c.o.MaxKeyBytes:
		return fmt.Errorf("%w: %d bytes > %d", ErrKeyTooLarge, len(key), c.o.MaxKeyBytes)
	}
	return nil
}

// Get returns key's value if a tier holds a fresh one. A miss is (nil,
// false, nil); an error means a tier could not answer. The returned slice is
// shared: do not modify it. A memory hit does not allocate.
func (c *Cache) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if err := c.checkKey(key); err != nil {
		return nil, false, err
	}
	ctl := ctlOf(ctx)
	if ctl != nil && ctl.bypass&BypassReads != 0 {
		return nil, false, nil
	}
	if c.router.memory {
		// A cached item carries its route's index: a hit needs no routing.
		if it, fresh, ok := c.mem.Lookup(key); ok {
			r := c.router.routes[it.Tag]
			if (fresh || r.Tiers&Redis == 0) && (it.SoftExpiry == 0 || c.now() < it.SoftExpiry) {
				// The memory tier counted the hit under the item's tag.
				if ctl != nil && ctl.detector != nil {
					ctl.detector.record(key, SourceMemory)
				}
				if it.Flags&envelope.FlagNegative != 0 {
					return nil, false, nil
				}
				return it.Value, true, nil
			}
			r.stats.memNotServed.Add(1)
		}
	}
	v, ok, _, err := c.read(ctx, c.router.find(key), key)
	return v, ok, err
}

// found is what a slow read found: an item, and where.
type found struct {
	it     tracking.Item
	src    Source
	stale  bool   // past its soft expiry: a candidate for stale serving
	remote []byte // the bytes Redis held, for Refresh's compare
}

// read looks in every tier of r in order, filling the faster ones on the
// way back. It returns the value if fresh; f carries a stale candidate.
func (c *Cache) read(ctx context.Context, r *route, key string) ([]byte, bool, found, error) {
	var f found
	now := c.now()
	var t tracking.Ticket
	if r.Tiers&Memory != 0 {
		t = c.mem.Reserve(key)
		if it, fresh, ok := c.mem.Get(key); ok {
			switch {
			case !fresh && r.Tiers&Redis != 0:
				// Unverified: revalidate or serve stale, by policy.
				r.stats.memNotServed.Add(1)
				if v, ok, done := c.readUnverified(ctx, r, key, it, t); done {
					if ok {
						note(ctx, key, SourceMemory)
					}
					return v, ok, f, nil
				}
			case it.SoftExpiry != 0 && now >= it.SoftExpiry:
				r.stats.memNotServed.Add(1)
				f = found{it: it, src: SourceMemory, stale: true}
			default:
				note(ctx, key, SourceMemory)
				if it.Flags&envelope.FlagNegative != 0 {
					return nil, false, f, nil
				}
				return it.Value, true, f, nil
			}
		}
	}
	if r.Tiers&Disk != 0 {
		start := time.Now()
		it, ok, err := c.readDisk(ctx, r, key)
		r.stats.diskLatency.Record(time.Since(start))
		if err != nil {
			c.o.Logger.Warn("tiered: disk read", "key", key, "err", err)
		}
		if ok {
			if it.SoftExpiry == 0 || now < it.SoftExpiry {
				r.stats.diskHits.Add(1)
				note(ctx, key, SourceDisk)
				if r.Tiers&Memory != 0 {
					c.fillMemory(r, t, key, it)
				}
				if it.Flags&envelope.FlagNegative != 0 {
					return nil, false, f, nil
				}
				return it.Value, true, f, nil
			}
			if !f.stale {
				f = found{it: it, src: SourceDisk, stale: true}
			}
		}
	}
	if r.Tiers&Redis != 0 {
		tt := c.trustTicket(r, key)
		cl, err := c.redis()
		if err != nil {
			return nil, false, f, fmt.Errorf("tiered: get %q: %w", key, err)
		}
		start := time.Now()
		raw, err := cl.Do(ctx, cl.B().Get().Key(key).Build()).AsBytes()
		r.stats.redisLatency.Record(time.Since(start))
		if rueidis.IsRedisNil(err) {
			r.stats.misses.Add(1)
			return nil, false, f, nil
		}
		if err != nil {
			return nil, false, f, fmt.Errorf("tiered: get %q from redis: %w", key, err)
		}
		it, ok, err := c.decodeRemote(r, key, raw)
		if err != nil || !ok {
			r.stats.misses.Add(1)
			return nil, false, f, err
		}
		if it.SoftExpiry != 0 && now >= it.SoftExpiry {
			r.stats.misses.Add(1)
			return nil, false, found{it: it, src: SourceRedis, stale: true, remote: raw}, nil
		}
		r.stats.redisHits.Add(1)
		note(ctx, key, SourceRedis)
		c.fill(r, t, tt, key, it)
		if it.Flags&envelope.FlagNegative != 0 {
			return nil, false, f, nil
		}
		return it.Value, true, f, nil
	}
	r.stats.misses.Add(1)
	return nil, false, f, nil
}

// readUnverified handles a memory entry that could not be vouched for. done
// is false when the caller should go on to the slower tiers.
func (c *Cache) readUnverified(ctx context.Context, r *route, key string, it tracking.Item, t tracking.Ticket) (v []byte, ok, done bool) {
	r.stats.unverifiedReads.Add(1)
	if c.o.Unverified == ServeStale && !c.redisUp.Load() {
		// Redis is not known to answer: serve, counted, and let the
		// revalidator find out when it is back. Once it answers, reads
		// revalidate first like the Revalidate policy, so unverified
		// values stop being served as soon as Redis is back.
		return c.serveUnverified(r, it)
	}
	match, err := c.revalidateOne(ctx, r, key, it.Version)
	if err != nil {
		c.redisUp.Store(false)
		if c.o.Unverified == ServeStale {
			return c.serveUnverified(r, it)
		}
		// Redis cannot answer: an unverified value is not served.
		return nil, false, true
	}
	if !match {
		c.drop(r, key)
		return nil, false, false
	}
	if c.mem.Revalidate(t, key, it.Version) {
		r.stats.revalidated.Add(1)
		if it.Flags&envelope.FlagNegative != 0 {
			return nil, false, true
		}
		return it.Value, true, true
	}
	// Redis holds this version, but the ticket was overtaken: an
	// invalidation (which removed the entry already), a local write (a
	// newer entry), or a drop of another key under the same guard
	// generation (the background pass dropping changed keys). Read on from
	// the slower tiers; dropping here would throw away an unchanged or a
	// newer entry.
	return nil, false, false
}

// serveUnverified serves an unverified value under ServeStale while it is
// within its hard expiry.
func (c *Cache) serveUnverified(r *route, it tracking.Item) (v []byte, ok, done bool) {
	if it.HardExpiry != 0 && c.now() >= it.HardExpiry {
		return nil, false, false
	}
	r.stats.staleServes.Add(1)
	c.kickRevalidation()
	if it.Flags&envelope.FlagNegative != 0 {
		return nil, false, true
	}
	return it.Value, true, true
}

// drop removes key from the local tiers after Redis said it changed.
func (c *Cache) drop(r *route, key string) {
	r.stats.dropped.Add(1)
	c.mem.Invalidate(key) // listeners remove it from disk
}

// readDisk reads key from the write-behind queue or the disk, and checks
// that a Redis-backed entry still matches Redis.
func (c *Cache) readDisk(ctx context.Context, r *route, key string) (tracking.Item, bool, error) {
	var e envelope.Entry
	if op, ok := c.wb.lookup(key); ok {
		if op.e == nil {
			return tracking.Item{}, false, nil
		}
		e = *op.e
	} else {
		var ok bool
		var err error
		tt := c.trustTicket(r, key)
		c.stats.diskReads.Add(1)
		e, ok, err = c.disk.Get(ctx, key)
		if err != nil || !ok {
			return tracking.Item{}, false, err
		}
		if r.Tiers&Redis != 0 && !c.trust.has(key) {
			match, err := c.revalidateOne(ctx, r, key, c.versionOf(r, &e))
			if err != nil {
				return tracking.Item{}, false, err
			}
			if !match {
				c.drop(r, key)
				return tracking.Item{}, false, nil
			}
			r.stats.revalidated.Add(1)
			c.trust.add(tt)
		}
	}
	if len(e.Payload) > r.MaxValueBytes {
		// The route's limit holds on every read, whatever wrote the disk.
		return tracking.Item{}, false, fmt.Errorf("tiered: %q on disk: %w: %d bytes > %d", key, ErrValueTooLarge, len(e.Payload), r.MaxValueBytes)
	}
	return itemOf(r, &e), true, nil
}

func (c *Cache) trustTicket(r *route, key string) trustTicket {
	if c.trust == nil || r.Tiers&Disk == 0 {
		return trustTicket{}
	}
	return c.trust.ticket(key)
}

// fill stores what was read from Redis (or loaded) in the local tiers of r.
// The disk write is queued before the memory fill, and undone if the fill
// is refused, so an invalidation that raced with the read wins everywhere.
func (c *Cache) fill(r *route, t tracking.Ticket, tt trustTicket, key string, it tracking.Item) {
	if r.Tiers&Disk != 0 {
		e := entryOf(it)
		c.wb.put(key, &e)
		if r.Tiers&Redis != 0 {
			c.trust.add(tt)
		}
	}
	if r.Tiers&Memory != 0 && !c.fillMemory(r, t, key, it) && r.Tiers&Disk != 0 && r.Tiers&Redis != 0 {
		c.trust.invalidate(key)
		c.wb.put(key, nil)
	}
}

func (c *Cache) fillMemory(r *route, t tracking.Ticket, key string, it tracking.Item) bool {
	if r.Tiers&Redis != 0 {
		return c.mem.Fill(t, key, it, true)
	}
	return c.mem.FillLocal(t, key, it)
}

// GetOrLoad returns key's value, calling load when no tier has a fresh one.
// The load runs once per key at a time across this process and, for routes
// with Redis, across every process sharing it; its value is stored in
// every tier of the route. A loader's ErrNotFound is a miss (nil, false,
// nil), remembered for the route's NegativeTTL. When the load fails and a
// value within the route's MaxStale is at hand, that value is served.
// XFetch refreshes a hot value early in the background.
func (c *Cache) GetOrLoad(ctx context.Context, key string, load Loader) ([]byte, bool, error) {
	r, err := c.check(key)
	if err != nil {
		return nil, false, err
	}
	if load == nil {
		return nil, false, ErrNoLoader
	}
	byp := bypassOf(ctx)
	if byp&BypassReads == 0 && r.Tiers&Memory != 0 {
		if it, fresh, ok := c.mem.Lookup(key); ok {
			now := c.now()
			if (fresh || r.Tiers&Redis == 0) && (it.SoftExpiry == 0 || now < it.SoftExpiry) {
				note(ctx, key, SourceMemory)
				c.maybeRefresh(r, key, it, now, nil, load)
				if it.Flags&envelope.FlagNegative != 0 {
					return nil, false, nil
				}
				return it.Value, true, nil
			}
			r.stats.memNotServed.Add(1)
		}
	}
	var f found
	if byp&BypassReads == 0 {
		v, ok, ff, err := c.read(ctx, r, key)
		if err == nil && (ok || !ff.stale && ff.it.Flags&envelope.FlagNegative != 0) {
			return v, ok, nil
		}
		if ok {
			return v, ok, nil
		}
		f = ff
		if err != nil {
			c.o.Logger.Debug("tiered: read before load", "key", key, "err", err)
		}
		if f.stale && f.it.HardExpiry != 0 && c.now() < f.it.HardExpiry && f.src == SourceRedis {
			// Stale-while-revalidate: within MaxStale, one caller
			// refreshes and everyone keeps the stale value meanwhile.
			c.refresh(r, key, f.remote, 0, load)
			r.stats.staleServes.Add(1)
			note(ctx, key, SourceStale)
			return f.it.Value, true, nil
		}
	}
	return c.load(ctx, r, key, load, f, byp)
}

// load runs the loader behind the herd and fills the tiers.
func (c *Cache) load(ctx context.Context, r *route, key string, load Loader, f found, byp Bypass) ([]byte, bool, error) {
	var t tracking.Ticket
	if r.Tiers&Memory != 0 {
		t = c.mem.Reserve(key)
	}
	tt := c.trustTicket(r, key)
	g, shared := c.group(r)
	if byp&BypassWrites != 0 {
		g, shared = c.local, false
	}
	res, err := g.Do(ctx, key, nil, c.loadFunc(r, key, load))
	if err == nil && shared && !res.Loaded {
		if _, ok, derr := c.decodeRemote(r, key, res.Value); derr == nil && !ok {
			// Redis holds bytes we refuse (corrupt, forged, unsigned): the
			// herd takes any present value as the answer, so they would
			// block every load of key. Delete them if they are still
			// there, and load once more.
			c.deleteIfSame(ctx, key, res.Value)
			res, err = g.Do(ctx, key, nil, c.loadFunc(r, key, load))
		}
	}
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			r.stats.misses.Add(1)
			return nil, false, nil
		}
		r.stats.loadErrors.Add(1)
		if f.stale && (f.it.HardExpiry == 0 || c.now() < f.it.HardExpiry) {
			r.stats.staleServes.Add(1)
			note(ctx, key, SourceStale)
			return f.it.Value, true, nil
		}
		return nil, false, fmt.Errorf("tiered: load %q: %w", key, err)
	}
	var it tracking.Item
	var ok bool
	if shared && !res.Loaded {
		// Another process's value, read from Redis: check it.
		it, ok, err = c.decodeRemote(r, key, res.Value)
	} else {
		it, ok, err = c.decodeLocal(r, res.Value)
	}
	if err != nil || !ok {
		return nil, false, err
	}
	if res.Loaded {
		r.stats.loads.Add(1)
		note(ctx, key, SourceLoader)
	} else {
		note(ctx, key, SourceRedis)
	}
	if byp&BypassWrites == 0 {
		if shared && res.Stored && r.Tiers&(Memory|Disk) != 0 {
			c.fillAfterOwnWrite(ctx, r, key, it)
		} else {
			c.fill(r, t, tt, key, it)
		}
	}
	if it.Flags&envelope.FlagNegative != 0 {
		return nil, false, nil
	}
	return it.Value, true, nil
}

// fillAfterOwnWrite fills the local tiers with a value this process just
// stored in Redis through the herd's fenced-write script.
//
// Redis 7.0 sends a script's write back to the writing connection as a BCAST
// invalidation even with NOLOOP, so a fill under a ticket taken before the
// write would be refused (or undone) by our own invalidation:
//  1. ticket taken, script writes v, reply arrives;
//  2. our own invalidation of key arrives and bumps key's generation;
//  3. the fill under the old ticket is refused; every read goes to Redis.
//
// So: a command on key's connection after the write is a barrier (its reply
// comes after our invalidation has been applied); a ticket taken then, and a
// version check after it, make the fill safe against any later writer.
// Two small round trips per load, which the origin call dwarfs.
func (c *Cache) fillAfterOwnWrite(ctx context.Context, r *route, key string, it tracking.Item) {
	cl, err := c.redis()
	if err != nil {
		return
	}
	if err := cl.Do(ctx, cl.B().Pttl().Key(key).Build()).Error(); err != nil {
		return
	}
	var t tracking.Ticket
	if r.Tiers&Memory != 0 {
		t = c.mem.Reserve(key)
	}
	tt := c.trustTicket(r, key)
	if match, err := c.revalidateOne(ctx, r, key, it.Version); err != nil || !match {
		return
	}
	c.fill(r, t, tt, key, it)
}

// maybeRefresh starts an early refresh when XFetch says so.
func (c *Cache) maybeRefresh(r *route, key string, it *tracking.Item, now int64, remote []byte, load Loader) {
	if r.Beta < 0 || it.SoftExpiry == 0 || it.Delta <= 0 {
		return
	}
	// XFetch refreshes when -ln(u)·δ·β reaches the time left; u is at least
	// 2^-53, so -ln(u) never exceeds 36.8. Far from expiry no draw can
	// trigger a refresh: skip the draw, so the usual hit costs nothing.
	if float64(it.SoftExpiry-now) > float64(it.Delta)*r.Beta*maxXFetchLog {
		return
	}
	u := 1 - c.float64() // (0, 1]
	if !herd.ShouldRefresh(time.Unix(0, now), time.Unix(0, it.SoftExpiry), it.Delta, r.Beta, u) {
		return
	}
	if remote == nil && r.Tiers&Redis != 0 {
		// The herd takes the lease only if Redis still holds the value we
		// saw, so across processes one caller refreshes each value. The
		// envelope encodes deterministically, so the bytes can be rebuilt;
		// a signed one cannot (the tag is not kept in memory): then any
		// caller whose lease attempt comes first refreshes.
		switch {
		case r.Raw:
			remote = it.Value
		case c.o.Signing == nil:
			e := entryOf(*it)
			remote = e.Append(nil)
		}
	}
	c.refresh(r, key, remote, it.Version, load)
}

// refresh rebuilds key in the background, once across the herd.
func (c *Cache) refresh(r *route, key string, remote []byte, seen uint64, load Loader) {
	g, _ := c.group(r)
	var t tracking.Ticket
	if r.Tiers&Memory != 0 {
		t = c.mem.Reserve(key)
	}
	tt := c.trustTicket(r, key)
	fn := c.loadFunc(r, key, load)
	started := g.Refresh(key, remote, func(ctx context.Context) ([]byte, time.Duration, error) {
		// Look again before rebuilding: a refresh that finished just
		// before this one started has replaced the value we saw.
		if seen != 0 && r.Tiers&Memory != 0 {
			if cur, _, ok := c.mem.Peek(key); ok && cur.Version != seen {
				return nil, 0, errAlreadyRefreshed
			}
		}
		v, ttl, err := fn(ctx)
		if err == nil {
			if it, ok, derr := c.decodeLocal(r, v); derr == nil && ok {
				c.fill(r, t, tt, key, it)
			}
		}
		return v, ttl, err
	})
	if started {
		r.stats.earlyRefreshes.Add(1)
	}
}

// loadFunc wraps a Loader into the herd's LoadFunc: it times the load and
// returns the encoded value and its Redis TTL.
func (c *Cache) loadFunc(r *route, key string, load Loader) herd.LoadFunc {
	return func(ctx context.Context) ([]byte, time.Duration, error) {
		start := time.Now()
		v, err := load.Load(ctx, key)
		delta := time.Since(start)
		r.stats.loadLatency.Record(delta)
		if errors.Is(err, ErrNotFound) {
			if r.NegativeTTL <= 0 || r.Raw {
				return nil, 0, err
			}
			enc, _, ttl, eerr := c.encode(r, key, nil, r.NegativeTTL, delta, true)
			if eerr != nil {
				return nil, 0, eerr
			}
			return enc, ttl, nil
		}
		if err != nil {
			return nil, 0, err
		}
		enc, _, ttl, err := c.encode(r, key, v, 0, delta, false)
		if err != nil {
			return nil, 0, err
		}
		return enc, ttl, nil
	}
}

// Set stores value under key in every tier of its route, for ttl (zero
// means the route's TTL). The writer reads its own write at once.
func (c *Cache) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	r, err := c.check(key)
	if err != nil {
		return err
	}
	if ttl < 0 {
		return fmt.Errorf("tiered: set %q: %w", key, ErrInvalidTTL)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if bypassOf(ctx)&BypassWrites != 0 {
		return nil
	}
	enc, it, hardTTL, err := c.encode(r, key, value, ttl, 0, false)
	if err != nil {
		return err
	}
	// Taken before the write: if another writer's invalidation arrives
	// after it, our value is not trusted on disk (it may be older).
	tt := c.trustTicket(r, key)
	if r.Tiers&Redis != 0 {
		if r.Tiers&Memory != 0 {
			err = c.mem.Set(ctx, key, it, enc, hardTTL)
			if errors.Is(err, tracking.ErrTooLarge) {
				err = nil // stored in Redis; too big to cache locally
			}
		} else {
			var cl rueidis.Client
			if cl, err = c.redis(); err == nil {
				err = cl.Do(ctx, cl.B().Set().Key(key).Value(rueidis.BinaryString(enc)).PxMilliseconds(max(hardTTL.Milliseconds(), 1)).Build()).Error()
			}
		}
		if err != nil {
			// Redis may or may not hold the new value: forget the local one.
			c.forgetLocal(r, key)
			return fmt.Errorf("tiered: set %q: %w", key, err)
		}
		if r.Tiers&Disk != 0 {
			e := entryOf(it)
			c.wb.put(key, &e)
			c.trust.add(tt)
		}
		return nil
	}
	// Local tiers only.
	if r.Tiers&Disk != 0 {
		e := entryOf(it)
		if c.o.SyncWrites {
			c.stats.diskWrites.Add(1)
			if err := c.disk.SetEntry(ctx, key, &e); err != nil {
				return fmt.Errorf("tiered: set %q on disk: %w", key, err)
			}
		} else {
			c.wb.put(key, &e)
		}
	}
	if r.Tiers&Memory != 0 {
		if err := c.mem.SetLocal(key, it); err != nil && !errors.Is(err, tracking.ErrTooLarge) {
			return fmt.Errorf("tiered: set %q in memory: %w", key, err)
		}
	}
	return nil
}

// forgetLocal removes key from memory and disk.
func (c *Cache) forgetLocal(r *route, key string) {
	if r.Tiers&Memory != 0 || r.Tiers&Redis != 0 {
		c.mem.Invalidate(key)
	}
	if r.Tiers&Disk != 0 {
		c.trust.invalidate(key)
		c.wb.put(key, nil)
	}
}

// Delete removes key from every tier of its route.
func (c *Cache) Delete(ctx context.Context, key string) error {
	r, err := c.check(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c.forgetLocal(r, key)
	if r.Tiers&Redis != 0 {
		cl, err := c.redis()
		if err == nil {
			err = cl.Do(ctx, cl.B().Del().Key(key).Build()).Error()
		}
		if err != nil {
			return fmt.Errorf("tiered: delete %q: %w", key, err)
		}
		c.forgetLocal(r, key) // a read that raced with the DEL
	}
	if r.Tiers&Disk != 0 && c.o.SyncWrites {
		return c.wb.sync(ctx)
	}
	return nil
}

// Flush waits until every disk write queued so far is on disk.
func (c *Cache) Flush(ctx context.Context) error {
	if c.closed.Load() {
		return ErrClosed
	}
	if c.wb == nil {
		return nil
	}
	return c.wb.sync(ctx)
}

// encode builds key's envelope for value (or a negative entry), with ttl
// (zero: the route's TTL, jittered). It returns the bytes for Redis, the
// item for memory and the Redis expiry (TTL plus MaxStale).
func (c *Cache) encode(r *route, key string, value []byte, ttl, delta time.Duration, negative bool) ([]byte, tracking.Item, time.Duration, error) {
	if len(value) > r.MaxValueBytes {
		return nil, tracking.Item{}, 0, fmt.Errorf("tiered: %q: %w: %d bytes > %d", key, ErrValueTooLarge, len(value), r.MaxValueBytes)
	}
	if ttl == 0 {
		ttl = r.TTL
		if r.Jitter > 0 {
			ttl -= time.Duration(float64(ttl) * r.Jitter * c.float64())
		}
	}
	now := c.now()
	hard := ttl + r.MaxStale
	if negative {
		hard = ttl
	}
	if r.Raw {
		it := tracking.Item{Value: value, SoftExpiry: now + int64(ttl), HardExpiry: now + int64(hard), Version: digest(value), Tag: r.idx}
		return value, it, hard, nil
	}
	version := c.uint64()
	e := envelope.Entry{Header: envelope.Header{
		SoftExpiry: now + int64(ttl),
		HardExpiry: now + int64(hard),
		Delta:      delta,
		Version:    version,
	}, Payload: value}
	if negative {
		e.Flags |= envelope.FlagNegative
		e.Payload = nil
	}
	if c.o.Signing != nil {
		if err := e.Sign(key, c.o.Signing); err != nil {
			return nil, tracking.Item{}, 0, err
		}
	}
	enc := e.Append(make([]byte, 0, e.Size()))
	it := itemOf(r, &e)
	it.Value = enc[e.Header.Size():]
	return enc, it, hard, nil
}

// decodeRemote decodes bytes read from Redis, refusing (as a miss, counted)
// what fails its checksum or signature, and refusing with ErrValueTooLarge
// what exceeds the route's limit.
func (c *Cache) decodeRemote(r *route, key string, raw []byte) (tracking.Item, bool, error) {
	if r.Raw {
		if len(raw) > r.MaxValueBytes {
			return tracking.Item{}, false, fmt.Errorf("tiered: %q: %w: %d bytes > %d", key, ErrValueTooLarge, len(raw), r.MaxValueBytes)
		}
		now := c.now()
		return tracking.Item{Value: raw, SoftExpiry: now + int64(r.TTL), HardExpiry: now + int64(r.TTL), Version: digest(raw), Tag: r.idx}, true, nil
	}
	e, err := envelope.Decode(raw)
	if err != nil {
		r.stats.integrityFailures.Add(1)
		c.o.Logger.Warn("tiered: undecodable value in redis", "key", key, "err", err)
		return tracking.Item{}, false, nil
	}
	if c.o.Signing != nil {
		if err := e.Verify(key, c.o.Signing); err != nil {
			r.stats.integrityFailures.Add(1)
			c.o.Logger.Warn("tiered: value failed verification", "key", key, "err", err)
			return tracking.Item{}, false, nil
		}
	}
	if len(e.Payload) > r.MaxValueBytes {
		return tracking.Item{}, false, fmt.Errorf("tiered: %q: %w: %d bytes > %d", key, ErrValueTooLarge, len(e.Payload), r.MaxValueBytes)
	}
	if e.Expired(c.now()) {
		return tracking.Item{}, false, nil
	}
	return itemOf(r, &e), true, nil
}

// decodeLocal decodes what this process encoded itself.
func (c *Cache) decodeLocal(r *route, b []byte) (tracking.Item, bool, error) {
	if r.Raw {
		now := c.now()
		return tracking.Item{Value: b, SoftExpiry: now + int64(r.TTL), HardExpiry: now + int64(r.TTL), Version: digest(b), Tag: r.idx}, true, nil
	}
	e, err := envelope.Decode(b)
	if err != nil {
		return tracking.Item{}, false, fmt.Errorf("tiered: %w: %w", ErrDecode, err)
	}
	return itemOf(r, &e), true, nil
}

func itemOf(r *route, e *envelope.Entry) tracking.Item {
	it := tracking.Item{
		Value:      e.Payload,
		SoftExpiry: e.SoftExpiry,
		HardExpiry: e.HardExpiry,
		Delta:      e.Delta,
		Version:    e.Version,
		Flags:      e.Flags,
		Tag:        r.idx,
	}
	if r.Raw {
		it.Version = digest(e.Payload)
	}
	return it
}

func entryOf(it tracking.Item) envelope.Entry {
	return envelope.Entry{Header: envelope.Header{
		Flags:      it.Flags &^ envelope.FlagSigned,
		SoftExpiry: it.SoftExpiry,
		HardExpiry: it.HardExpiry,
		Delta:      it.Delta,
		Version:    it.Version,
	}, Payload: it.Value}
}

// versionOf is what revalidation compares for an entry: its write version,
// or a digest of a raw value.
func (c *Cache) versionOf(r *route, e *envelope.Entry) uint64 {
	if r.Raw {
		return digest(e.Payload)
	}
	return e.Version
}

// digest identifies a raw value: the first 8 bytes of its SHA-1, which the
// revalidation script computes server-side with redis.sha1hex.
func digest(b []byte) uint64 {
	s := sha1.Sum(b)
	return binary.BigEndian.Uint64(s[:8])
}

// Result is one key's answer in GetMany.
type Result struct {
	Value []byte // shared: do not modify
	OK    bool
	Err   error
}

// GetMany reads keys like Get, answering what memory holds at once and
// sending the rest to Redis in one pipelined round trip. The results are in
// the order of keys.
func (c *Cache) GetMany(ctx context.Context, keys []string) []Result {
	out := make([]Result, len(keys))
	type remote struct {
		i int
		r *route
		t tracking.Ticket
	}
	var rest []remote
	for i, key := range keys {
		r, err := c.check(key)
		if err != nil {
			out[i].Err = err
			continue
		}
		if bypassOf(ctx)&BypassReads != 0 {
			continue
		}
		if r.Tiers&Memory != 0 {
			if it, fresh, ok := c.mem.Lookup(key); ok {
				if (fresh || r.Tiers&Redis == 0) && (it.SoftExpiry == 0 || c.now() < it.SoftExpiry) {
					note(ctx, key, SourceMemory)
					if it.Flags&envelope.FlagNegative == 0 {
						out[i] = Result{Value: it.Value, OK: true}
					}
					continue
				}
				r.stats.memNotServed.Add(1)
			}
		}
		if r.Tiers&Redis == 0 || r.Tiers&Disk != 0 {
			out[i].Value, out[i].OK, out[i].Err = c.Get(ctx, key)
			continue
		}
		var t tracking.Ticket
		if r.Tiers&Memory != 0 {
			t = c.mem.Reserve(key)
		}
		rest = append(rest, remote{i: i, r: r, t: t})
	}
	if len(rest) == 0 {
		return out
	}
	cl, err := c.redis()
	if err != nil {
		for _, x := range rest {
			out[x.i].Err = fmt.Errorf("tiered: get %q: %w", keys[x.i], err)
		}
		return out
	}
	cmds := make(rueidis.Commands, len(rest))
	for j, x := range rest {
		cmds[j] = cl.B().Get().Key(keys[x.i]).Build()
	}
	for j, res := range cl.DoMulti(ctx, cmds...) {
		x := rest[j]
		key := keys[x.i]
		raw, err := res.AsBytes()
		if rueidis.IsRedisNil(err) {
			x.r.stats.misses.Add(1)
			continue
		}
		if err != nil {
			out[x.i].Err = fmt.Errorf("tiered: get %q from redis: %w", key, err)
			continue
		}
		it, ok, err := c.decodeRemote(x.r, key, raw)
		if err != nil || !ok || (it.SoftExpiry != 0 && c.now() >= it.SoftExpiry) {
			x.r.stats.misses.Add(1)
			out[x.i].Err = err
			continue
		}
		x.r.stats.redisHits.Add(1)
		note(ctx, key, SourceRedis)
		c.fill(x.r, x.t, trustTicket{}, key, it)
		if it.Flags&envelope.FlagNegative == 0 {
			out[x.i] = Result{Value: it.Value, OK: true}
		}
	}
	return out
}

// invalidateBatch is how many keys InvalidatePrefix deletes per round trip.
const invalidateBatch = 500

// InvalidatePrefix removes every key starting with prefix from every tier
// of the routes it touches: from Redis with a cursor-based SCAN and UNLINK
// in bounded batches (never KEYS), from memory, and from disk. It returns
// how many keys it removed from Redis.
func (c *Cache) InvalidatePrefix(ctx context.Context, prefix string) (int, error) {
	if c.closed.Load() {
		return 0, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	c.mem.InvalidatePrefix(prefix)
	if c.disk != nil {
		var keys []string
		c.stats.diskReads.Add(1)
		err := c.disk.Scan(ctx, prefix, func(key string, _ envelope.Entry) error {
			keys = append(keys, key)
			if len(keys) >= invalidateBatch {
				c.dropDisk(keys)
				keys = keys[:0]
			}
			return nil
		})
		c.dropDisk(keys)
		if err != nil {
			return 0, fmt.Errorf("tiered: invalidate prefix %q on disk: %w", prefix, err)
		}
	}
	cl, err := c.redis()
	if errors.Is(err, errNoRedis) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("tiered: invalidate prefix %q: %w", prefix, err)
	}
	n := 0
	pattern := globEscape(prefix) + "*"
	nodes, err := primaries(ctx, cl)
	if err != nil {
		return 0, fmt.Errorf("tiered: invalidate prefix %q: %w", prefix, err)
	}
	for _, client := range nodes {
		var cursor uint64
		for {
			e, err := client.Do(ctx, client.B().Scan().Cursor(cursor).Match(pattern).Count(invalidateBatch).Build()).AsScanEntry()
			if err != nil {
				return n, fmt.Errorf("tiered: invalidate prefix %q: scan: %w", prefix, err)
			}
			if len(e.Elements) > 0 {
				// Deletes go through the main client, which routes each key
				// to the primary that owns its slot now.
				cmds := make(rueidis.Commands, 0, len(e.Elements))
				for _, k := range e.Elements {
					cmds = append(cmds, cl.B().Unlink().Key(k).Build())
				}
				for _, res := range cl.DoMulti(ctx, cmds...) {
					if err := res.Error(); err != nil {
						return n, fmt.Errorf("tiered: invalidate prefix %q: unlink: %w", prefix, err)
					}
				}
				n += len(e.Elements)
				for _, k := range e.Elements {
					c.mem.Invalidate(k)
				}
			}
			cursor = e.Cursor
			if cursor == 0 {
				break
			}
		}
	}
	// Reads that raced with the deletes may have refilled memory.
	c.mem.InvalidatePrefix(prefix)
	return n, nil
}

func (c *Cache) dropDisk(keys []string) {
	for _, k := range keys {
		c.trust.invalidate(k)
		c.wb.put(k, nil)
	}
}

// primaries returns a client per Redis primary, so a SCAN covers every
// key once: on a cluster, Nodes lists replicas too, which ROLE tells apart.
func primaries(ctx context.Context, cl rueidis.Client) ([]rueidis.Client, error) {
	nodes := cl.Nodes()
	if len(nodes) <= 1 {
		return []rueidis.Client{cl}, nil
	}
	out := make([]rueidis.Client, 0, len(nodes))
	for addr, n := range nodes {
		role, err := n.Do(ctx, n.B().Role().Build()).ToArray()
		if err != nil || len(role) == 0 {
			return nil, fmt.Errorf("role of %s: %w", addr, err)
		}
		if r, _ := role[0].ToString(); r == "master" {
			out = append(out, n)
		}
	}
	return out, nil
}

// globEscape escapes the characters SCAN MATCH treats as patterns.
func globEscape(s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return string(b)
}

// untrackedPrefix is tracked when no route needs tracking but Redis is
// used: no key is expected to start with it.
const untrackedPrefix = "\xffthermos:untracked\xff"

var errNoRedis = errors.New("tiered: no redis configured")

// errAlreadyRefreshed ends a refresh that found the value already replaced.
var errAlreadyRefreshed = errors.New("tiered: value already refreshed")

// redis returns the Redis client: ErrUnavailable while it is not connected
// (Redis was down at Open), errNoRedis when no route uses Redis.
func (c *Cache) redis() (rueidis.Client, error) {
	if cl := c.mem.Client(); cl != nil {
		return cl, nil
	}
	if c.o.Redis == nil {
		return nil, errNoRedis
	}
	return nil, ErrUnavailable
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
	cl := c.mem.Client()
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
	g, err := herd.New(&herd.Options{Client: cl, LeaseTTL: c.o.LeaseTTL, LoadTimeout: c.o.LoadTimeout, Logger: c.o.Logger})
	if err != nil {
		// Options were validated at Open; this cannot happen.
		c.o.Logger.Error("tiered: shared herd", "err", err)
		return c.local, false
	}
	c.herdp.Store(g)
	return g, true
}

// deleteIfSameScript deletes KEYS[1] only while it holds ARGV[1].
var deleteIfSameScript = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// deleteIfSame removes key from Redis if it still holds old, so a refused
// value never shadows a newer, valid one written meanwhile.
func (c *Cache) deleteIfSame(ctx context.Context, key string, old []byte) {
	cl, err := c.redis()
	if err != nil {
		return
	}
	if err := deleteIfSameScript.Exec(ctx, cl, []string{key}, []string{string(old)}).Error(); err != nil {
		c.o.Logger.Warn("tiered: could not remove a refused value", "key", key, "err", err)
	}
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
