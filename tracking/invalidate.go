package tracking

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// OnInvalidate registers fn to hear about invalidations: keys invalidated by
// Redis or by Invalidate (epochBump false), or an epoch bump (keys nil,
// epochBump true). fn runs after the local entries are gone, with no lock
// held, but for Redis invalidations on rueidis's connection reader
// goroutine: it must be quick and must not call Redis. keys is shared by
// every listener and must not be modified. Listeners cannot be removed.
func (c *Cache) OnInvalidate(fn func(keys []string, epochBump bool)) {
	c.lmu.Lock()
	defer c.lmu.Unlock()
	var next []func([]string, bool)
	if old := c.listeners.Load(); old != nil {
		next = append(next, *old...)
	}
	next = append(next, fn)
	c.listeners.Store(&next)
}

func (c *Cache) notify(keys []string, epochBump bool) {
	if ls := c.listeners.Load(); ls != nil {
		for _, fn := range *ls {
			fn(keys, epochBump)
		}
	}
}

// Invalidate removes key's entry, refuses every ticket taken for it before,
// and notifies listeners, as if Redis had invalidated it.
func (c *Cache) Invalidate(key string) {
	keys := []string{key}
	c.invalidateKey(key, 0)
	c.notify(keys, false)
}

// invalidateKey bumps key's generation, then removes its entry. The order
// matters: a fill that takes the shard lock after the bump sees it and
// refuses; one that took it before inserted an entry this removes. now, if
// not zero, is the arrival time of a Redis invalidation, used to measure the
// lag of this cache's own writes.
func (c *Cache) invalidateKey(key string, now int64) {
	h := c.hash(key)
	s := c.shardOf(h)
	s.gens[slotOf(h)].Add(1)
	s.mu.Lock()
	if c.removeKeyLocked(s, h, key) {
		s.mu.removed++
	}
	var start int64
	if now != 0 && len(s.mu.writes) > 0 {
		if start = s.mu.writes[key]; start != 0 {
			delete(s.mu.writes, key)
		}
	}
	s.mu.Unlock()
	if start != 0 {
		c.lag.Record(time.Duration(now - start))
	}
}

// InvalidatePrefix removes every entry whose key starts with prefix and
// refuses every ticket taken before it (for any key: tickets do not record
// their key's prefix). Listeners are not called; the caller knows the
// prefix. An empty prefix removes everything.
func (c *Cache) InvalidatePrefix(prefix string) {
	var doomed []*entry
	for i := range c.shards {
		s := &c.shards[i]
		s.sgen.Add(1)
		doomed = doomed[:0]
		s.mu.Lock()
		s.mu.pol.each(func(e *entry) bool {
			if strings.HasPrefix(e.key, prefix) {
				doomed = append(doomed, e)
			}
			return true
		})
		for _, e := range doomed {
			if c.removeLocked(s, c.hash(e.key), e) {
				s.mu.removed++
			}
		}
		s.mu.Unlock()
	}
}

// bumpEpoch makes every entry unverified: without KeepUnverified it drops
// them all. The epoch moves first, so a fill racing with the purge either
// sees the new epoch and refuses or is purged.
func (c *Cache) bumpEpoch() {
	c.epoch.Add(1)
	c.epochBumps.Add(1)
	if !c.cfg.KeepUnverified {
		for i := range c.shards {
			s := &c.shards[i]
			s.mu.Lock()
			s.mu.pol.purge()
			s.idx.reset()
			s.mu.bytes = 0
			clear(s.mu.writes)
			s.mu.Unlock()
		}
	}
}

// onInvalidations is rueidis's OnInvalidations callback. It runs on the
// connection's reader goroutine: no I/O, shard locks only briefly.
//
// nil means a null invalidation: FLUSHALL/FLUSHDB, or the connection closed
// (rueidis calls it with nil from its exit path). Either way invalidations
// may have been lost, so the epoch bumps, fills are refused until tracking
// is armed again (isDown), and the re-arm loop is woken to reconnect, which
// sends CLIENT TRACKING again.
func (c *Cache) onInvalidations(msgs []rueidis.RedisMessage) {
	if msgs == nil {
		if c.cfg.Redis != nil { // a local-only cache has no tracking to lose
			c.drops.Add(1) // before the bump: no fill slips in between
		}
		c.bumpEpoch()
		select {
		case c.rearm <- struct{}{}:
		default:
		}
		c.notify(nil, true)
		return
	}
	if len(msgs) == 0 {
		return
	}
	now := time.Now().UnixNano()
	keys := make([]string, 0, len(msgs))
	for i := range msgs {
		if k, err := msgs[i].ToString(); err == nil {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		c.invalidateKey(k, now)
	}
	c.invalidations.Add(uint64(len(keys)))
	c.notify(keys, false)
}

// rearmLoop reconnects after the tracking connection dropped, so tracking
// is armed again even if nobody sends a command. rueidis dials lazily on the
// next command and its connection set-up sends CLIENT TRACKING ON BCAST with
// our prefixes, so a PING is enough. It stops when ctx is cancelled (Close).
func (c *Cache) rearmLoop(ctx context.Context) {
	defer c.wg.Done()
	c.startTopologyWatch(ctx) // Redis Cluster only: see cluster.go
	const maxBackoff = 250 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.rearm:
		}
		backoff := 5 * time.Millisecond
		for {
			// A drop after this read leaves tracking down after a
			// successful ping, for the next round (c.rearm holds it).
			drops := c.drops.Load()
			pctx, cancel := context.WithTimeout(ctx, c.cfg.ConnWriteTimeout)
			err := c.ping(pctx) // on a cluster, every primary
			cancel()
			if ctx.Err() != nil {
				break
			}
			if err == nil {
				// Tracking is armed again. Whatever was filled or
				// written locally while it was not — a value loaded
				// while Redis was unreachable, say — was never checked
				// against Redis: the epoch bumps again, so it is
				// revalidated too, not trusted for having been filled
				// after the first bump.
				c.bumpEpoch()
				c.armed.Store(drops) // after the bump: tickets from while down stay refused
				c.notify(nil, true)
				break
			}
			c.cfg.Logger.Debug("tracking: re-arming client tracking", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, maxBackoff)
		}
	}
}

// connectLoop dials Redis until it answers, for a cache started with
// Options.ConnectInBackground while Redis was down. Once connected it bumps
// the epoch, so listeners revalidate what was cached meanwhile, and hands
// over to rearmLoop. A server that answers but is refused (too old, no
// tracking) is logged and not retried.
func (c *Cache) connectLoop(ctx context.Context) {
	defer c.wg.Done()
	const maxBackoff = time.Second
	backoff := 10 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
		err := c.connect(ctx)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrUnavailable) {
			c.cfg.Logger.Error("tracking: redis refused; staying local-only", "err", err)
			return
		}
		c.cfg.Logger.Debug("tracking: redis still unavailable", "err", err)
	}
	if c.closed.Load() {
		return
	}
	c.bumpEpoch()
	c.notify(nil, true)
	c.wg.Add(1)
	go c.rearmLoop(ctx)
}
