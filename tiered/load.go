package tiered

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/thermoscache/thermos/herd"
	"github.com/thermoscache/thermos/tracking"
)

// GetOrLoad returns key's value, calling load when no tier has a fresh one.
// The load runs once per key at a time across this process and, for routes
// with Redis, across every process sharing it; its value is stored in
// every tier of the route. A loader's ErrNotFound is a miss (nil, false,
// nil), remembered for the route's NegativeTTL. When the load fails and a
// value within the route's MaxStale is at hand, that value is served.
// XFetch refreshes a hot value early in the background.
//
// On a route with Redis, Redis is read by the herd's first step, which
// also takes the lease when the key is missing: a cold key costs three
// round trips (that step, the fenced write of the loaded value, and a
// version check that lets this process cache its own write).
func (c *Cache) GetOrLoad(ctx context.Context, key string, load Loader) ([]byte, bool, error) {
	// The memory hit, as in Get. A key in memory has a route (nothing
	// else is ever stored), so only the loader is left to check.
	looked := false
	if c.validKey(key) && !noLoader(load) && noControls(ctx) {
		if it, ok := c.lookup(key); ok {
			c.maybeRefresh(key, it, load)
			v, ok := value(it)
			return v, ok, nil
		}
		looked = true
	}
	v, ok, err := c.getOrLoad(ctx, key, load, looked)
	return v, ok, opErr("load", key, err)
}

// noLoader reports whether load is nil, or a nil LoaderFunc in a Loader.
func noLoader(load Loader) bool {
	f, isFunc := load.(LoaderFunc)
	return load == nil || isFunc && f == nil
}

// getOrLoad is GetOrLoad past its memory hit; looked says lookup was
// called already (and the memory tier counted the miss).
func (c *Cache) getOrLoad(ctx context.Context, key string, load Loader, looked bool) ([]byte, bool, error) {
	r, err := c.check(key)
	if err != nil {
		return nil, false, err
	}
	if noLoader(load) {
		return nil, false, ErrNoLoader
	}
	byp := bypassOf(ctx)
	var f found
	if byp&BypassReads == 0 {
		if !looked {
			if it, ok := c.lookup(key); ok {
				note(ctx, key, SourceMemory)
				c.maybeRefresh(key, it, load)
				v, ok := value(it)
				return v, ok, nil
			}
		}
		if f, err = c.read(ctx, r, key, r.local); err == nil && f.hit {
			note(ctx, key, f.src)
			v, ok := value(&f.e.it)
			return v, ok, nil
		}
		if err != nil {
			c.o.Logger.Debug("tiered: read before load", "key", key, "err", err)
		}
		if r.Tiers&Redis == 0 && f.stale && !f.unverified && alive(&f.e.it, c.now()) {
			// Stale-while-revalidate on a route without Redis (one with
			// Redis asks Redis first: another process may have refreshed):
			// one caller refreshes in the background, everyone is served
			// the stale value meanwhile.
			c.refresh(r, key, nil, f.e.it.Version, load)
			c.countHit(r, f.src)
			r.stats.staleServes.Add(1)
			note(ctx, key, SourceStale)
			v, ok := value(&f.e.it)
			return v, ok, nil
		}
	}
	return c.load(ctx, r, key, load, f, byp)
}

// load reads Redis and, if it has nothing fresh, runs the loader, both
// behind the herd, and fills the tiers. f is a stale candidate from the
// local tiers.
func (c *Cache) load(ctx context.Context, r *route, key string, load Loader, f found, byp Bypass) ([]byte, bool, error) {
	c.hook("load", key)
	t := c.mem.Reserve(key)
	g, shared := c.group(r)
	if byp&BypassWrites != 0 {
		g, shared = c.local, false
	}
	fill := byp&BypassWrites == 0
	var again herd.LookupFunc
	if !shared && fill && byp&BypassReads == 0 && r.Tiers&Memory != 0 {
		// Asked inside the flight, before the loader: a caller that missed
		// memory just before the previous flight filled it finds the value
		// there instead of loading it a second time.
		again = func(context.Context) ([]byte, bool, error) {
			_, ok := c.lookup(key)
			return nil, ok, nil
		}
	}
	sent := c.now()
	res, err := g.Do(ctx, key, again, c.loadFunc(r, key, load, shared, fill && !shared))
	if err == nil && again != nil && !res.Loaded {
		if it, ok := c.lookup(key); ok {
			note(ctx, key, SourceMemory)
			v, ok := value(it)
			return v, ok, nil
		}
		// Gone again (evicted, invalidated): load.
		res, err = g.Do(ctx, key, nil, c.loadFunc(r, key, load, false, true))
	}
	var degraded error // why the lease could not be had
	if shared && errors.Is(err, herd.ErrLease) && ctx.Err() == nil {
		degraded = err
		// Redis cannot give the lease (unreachable, OOM, read-only): load
		// in this process's single-flight instead. At most one load per
		// key across the fleet does not hold while this lasts.
		r.stats.degradedLoads.Add(1)
		c.o.Logger.Debug("tiered: lease unavailable; loading locally", "key", key, "err", err)
		g, shared = c.local, false
		// Redis refusing (OOM, read-only) may hold another value: the
		// loaded one is not cached. Redis unreachable: it is.
		res, err = g.Do(ctx, key, nil, c.loadFunc(r, key, load, false, fill && connFailure(degraded)))
	}
	var e entry
	if err == nil && shared && !res.Loaded {
		// The value Redis holds (or another process just stored).
		var ok bool
		e, ok, err = c.decodeRemote(r, key, res.Value, res.TTL, sent)
		if err == nil && !ok {
			// Bytes we refuse (corrupt, forged, unsigned): the herd takes
			// any present value as the answer, so they would block every
			// load of key. Delete them if they are still there, and load
			// once more.
			c.redis.deleteIfSame(ctx, key, res.Value)
			sent = c.now()
			res, err = g.Do(ctx, key, nil, c.loadFunc(r, key, load, shared, false))
			if err == nil && !res.Loaded {
				e, ok, err = c.decodeRemote(r, key, res.Value, res.TTL, sent)
				if err == nil && !ok {
					err = newFault(ErrDecode, nil, "redis keeps holding a value that does not verify")
				}
			}
		}
	}
	if err == nil && res.Loaded {
		e, err = c.decodeLocal(r, res.Value)
	}
	c.own.forget(key)
	if err != nil {
		r.stats.misses.Add(1)
		if errors.Is(err, ErrNotFound) {
			return nil, false, nil
		}
		err = loadError(err)
		if f.stale && alive(&f.e.it, c.now()) && (!f.unverified || r.MaxStale > 0) {
			// Stale-on-error: a value past its TTL within MaxStale, or a
			// copy Redis could not vouch for on a route that allows
			// stale values at all.
			r.stats.staleServes.Add(1)
			note(ctx, key, SourceStale)
			v, ok := value(&f.e.it)
			return v, ok, nil
		}
		return nil, false, err
	}
	if !res.Loaded {
		if !alive(&e.it, c.now()) {
			// Redis holds a value its envelope says is past its hard
			// expiry (the writer's clock runs ahead): a miss.
			r.stats.misses.Add(1)
			return nil, false, nil
		}
		// Found in Redis. Past its soft expiry but alive, it is served
		// while one caller refreshes it (stale-while-revalidate).
		r.stats.redisHits.Add(1)
		if !fresh(&e.it, c.now()) {
			c.refresh(r, key, res.Value, e.it.Version, load)
			r.stats.staleServes.Add(1)
			note(ctx, key, SourceStale)
			v, ok := value(&e.it)
			return v, ok, nil
		}
		note(ctx, key, SourceRedis)
		if byp&BypassWrites == 0 {
			ef := e // e stays on the stack: a load costs no allocation for it
			c.fillLocal(r, key, &ef, t)
			e = ef
		}
		v, ok := value(&e.it)
		return v, ok, nil
	}
	r.stats.misses.Add(1)
	note(ctx, key, SourceLoader)
	if fill && shared && connFailure(res.WriteErr) {
		// The herd loaded but could not reach Redis to store the value.
		// (A value the herd stored was cached by afterWrite; one it could
		// not store because the lease was lost, or Redis refused the
		// write (OOM, read-only), is not cached: Redis may hold another
		// value. A local load filled the tiers inside its flight.)
		ef := e
		c.fillLocal(r, key, &ef, t)
		e = ef
	}
	v, ok := value(&e.it)
	return v, ok, nil
}

// afterWrite is the shared herd's hook after a fenced write stored value:
// it caches the value locally, safely although the write comes back to
// this process as an invalidation (Redis reports a script's write to the
// writing connection even with NOLOOP). In order:
//  1. loadFunc registered key just before the herd sent the write;
//  2. the write's own invalidation arrives and bumps key's generation
//     (wait sees it, or gives up after ownWriteWait);
//  3. a ticket taken now, after it;
//  4. a version check in Redis: one round trip;
//  5. the fill under that ticket.
//
// Any other write of key after step 3 bumps the generation (the fill is
// refused); any before it makes step 4 fail. If the own invalidation comes
// after step 3 after all, the fill is refused: a missed cache fill, never a
// stale one.
//
// Step 4 cannot be dropped: BCAST invalidations go out once per event-loop
// pass, one per key, so another client's write of key run right after the
// fenced write, in the same pass, arrives folded into the write's own
// invalidation. Nothing on this side tells the two apart; only a read
// after the ticket does.
func (c *Cache) afterWrite(ctx context.Context, key string, value []byte) {
	r := c.router.find(key)
	c.own.wait(ctx, key)
	if r.Tiers&(Memory|Disk) == 0 {
		return
	}
	t := c.mem.Reserve(key)
	e, err := c.decodeLocal(r, value)
	if err != nil {
		return
	}
	c.hook("afterwrite:ticket", key)
	sent := c.now()
	match, pttl, err := c.redis.verify(ctx, r, key, e.it.Version)
	if err != nil || !match {
		return
	}
	e.until = capLimit(sent, pttl)
	c.fillLocal(r, key, &e, t)
}

// connFailure reports whether err is Redis failing to answer (not Redis
// answering with an error).
func connFailure(err error) bool { return err != nil && !refusal(err) }

// ownWriteWait bounds how long afterWrite waits for its write's own
// invalidation, which Redis sends right after the write's reply.
const ownWriteWait = 20 * time.Millisecond

// ownWrites tracks the keys whose fenced write is about to be sent, until
// their own invalidation arrives. If the server turns out not to send one
// (it honours NOLOOP for scripts), waiting stops after a few timeouts in a
// row.
type ownWrites struct {
	n        atomic.Int32 // registered keys: the listener skips the lock when 0
	timeouts atomic.Int32 // consecutive waits that timed out
	mu       sync.Mutex
	m        map[string]chan struct{}
}

func (o *ownWrites) init() { o.m = make(map[string]chan struct{}) }

// expect registers key before its fenced write is sent.
func (o *ownWrites) expect(key string) {
	o.mu.Lock()
	if _, ok := o.m[key]; !ok {
		o.m[key] = make(chan struct{})
		o.n.Add(1)
	}
	o.mu.Unlock()
}

// done returns the channel closed when key's invalidation arrives, or nil
// if key is not expected.
func (o *ownWrites) done(key string) <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.m[key]
}

// invalidated is called by the invalidation listener.
func (o *ownWrites) invalidated(keys []string) {
	if o.n.Load() == 0 {
		return
	}
	o.mu.Lock()
	for _, k := range keys {
		if ch, ok := o.m[k]; ok {
			close(ch)
			delete(o.m, k)
			o.n.Add(-1)
		}
	}
	o.mu.Unlock()
}

func (o *ownWrites) wait(ctx context.Context, key string) {
	o.mu.Lock()
	ch, ok := o.m[key]
	o.mu.Unlock()
	if !ok || o.timeouts.Load() >= 3 {
		o.forget(key)
		return
	}
	select {
	case <-ch:
		// Already here (the reader parsed it right after the write's
		// reply): no timer.
		o.timeouts.Store(0)
		return
	default:
	}
	t := time.NewTimer(ownWriteWait)
	defer t.Stop()
	select {
	case <-ch:
		o.timeouts.Store(0)
	case <-t.C:
		o.timeouts.Add(1)
		o.forget(key)
	case <-ctx.Done():
		o.forget(key)
	}
}

func (o *ownWrites) forget(key string) {
	if o.n.Load() == 0 {
		return
	}
	o.mu.Lock()
	if _, ok := o.m[key]; ok {
		delete(o.m, key)
		o.n.Add(-1)
	}
	o.mu.Unlock()
}

// maybeRefresh starts an early refresh when XFetch says so.
func (c *Cache) maybeRefresh(key string, it *tracking.Item, load Loader) {
	if it.SoftExpiry == 0 || it.Delta <= 0 {
		return // written by Set, or no rebuild time known: nothing to draw
	}
	r := c.router.routes[it.Tag]
	if r.Beta < 0 {
		return
	}
	now := c.now()
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
	var remote []byte
	if r.Tiers&Redis != 0 {
		// The herd takes the lease only if Redis still holds the value we
		// saw, so across processes one caller refreshes each value.
		remote = c.remoteBytes(r, it)
	}
	c.refresh(r, key, remote, it.Version, load)
}

// refresh rebuilds key in the background, once across the herd.
func (c *Cache) refresh(r *route, key string, remote []byte, seen uint64, load Loader) {
	g, shared := c.group(r)
	t := c.mem.Reserve(key)
	fn := c.loadFunc(r, key, load, shared, false)
	started := g.Refresh(key, remote, func(ctx context.Context) ([]byte, time.Duration, error) {
		// Look again before rebuilding: a refresh that finished just
		// before this one started has replaced the value we saw.
		if seen != 0 && r.Tiers&Memory != 0 {
			if cur, _, ok := c.mem.Peek(key); ok && cur.Version != seen {
				return nil, 0, errAlreadyRefreshed
			}
		}
		v, ttl, err := fn(ctx)
		if err == nil && !shared {
			if e, derr := c.decodeLocal(r, v); derr == nil {
				c.fillLocal(r, key, &e, t)
			}
		}
		return v, ttl, err
	})
	if started {
		r.stats.earlyRefreshes.Add(1)
	}
}

// loadError maps what the herd returned for a load to this package's
// kinds, dropping the herd's own wrapping (which names the key again).
func loadError(err error) error {
	var le loaderError
	var pe *herd.PanicError
	var f *fault
	switch {
	case errors.As(err, &le):
		return newFault(ErrLoad, le.err, "")
	case errors.As(err, &f):
		return f // ours, from inside the load (encoding the value)
	case errors.As(err, &pe):
		return newFault(ErrLoaderPanic, nil, "%v\n%s", pe.Value, pe.Stack)
	case errors.Is(err, herd.ErrTimeout):
		return newFault(ErrLoad, context.DeadlineExceeded, "no value within LoadTimeout")
	case errors.Is(err, herd.ErrClosed):
		return ErrClosed
	case errors.Is(err, herd.ErrLease):
		return redisError("", err)
	}
	return err
}

// loaderError marks an error the loader returned, as it crosses the herd.
type loaderError struct{ err error }

func (e loaderError) Error() string { return e.err.Error() }
func (e loaderError) Unwrap() error { return e.err }

// errAlreadyRefreshed ends a refresh that found the value already replaced.
var errAlreadyRefreshed = errors.New("tiered: value already refreshed")

// loadFunc wraps a Loader into the herd's LoadFunc: it counts and times the
// load and returns the encoded value and its Redis TTL. On a shared herd it
// registers the coming fenced write's own invalidation (see afterWrite).
// With fill it stores the value in the local tiers before the flight ends,
// so a caller arriving just after finds it there instead of loading again;
// the ticket is taken before the loader runs, so any write of key after
// that refuses the fill.
func (c *Cache) loadFunc(r *route, key string, load Loader, shared, fill bool) herd.LoadFunc {
	return func(ctx context.Context) ([]byte, time.Duration, error) {
		var t tracking.Ticket
		if fill {
			t = c.mem.Reserve(key)
		}
		r.stats.loads.Add(1)
		start := time.Now()
		v, err := load.Load(ctx, key)
		delta := time.Since(start)
		r.stats.loadLatency.Record(delta)
		negative := errors.Is(err, ErrNotFound)
		if err != nil && !negative {
			r.stats.loadErrors.Add(1)
			return nil, 0, loaderError{err}
		}
		if negative && (r.NegativeTTL <= 0 || r.Raw) {
			return nil, 0, err
		}
		ttl := time.Duration(0)
		if negative {
			ttl = r.NegativeTTL
		}
		enc, _, hard, err := c.encode(r, key, v, ttl, delta, negative)
		if err != nil {
			r.stats.loadErrors.Add(1)
			return nil, 0, err
		}
		if shared {
			c.own.expect(key)
		}
		if fill {
			if e, err := c.decodeLocal(r, enc); err == nil {
				c.fillLocal(r, key, &e, t)
			}
		}
		return enc, hard, nil
	}
}
