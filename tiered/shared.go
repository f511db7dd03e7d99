package tiered

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/rueidis"
)

// Options.RedisClient: the caller's client carries the data commands and
// the herd, while invalidations keep arriving on the tracking connection
// the memory tier opens from Options.Redis. Why that is still correct, in
// order, for a read:
//  1. a ticket is taken before the GET is sent on the caller's client;
//  2. Redis runs the GET; a write after it, by anyone, makes Redis push an
//     invalidation on the tracking connection, which bumps the key's
//     generation when it arrives;
//  3. the fill under the ticket is refused if that happened first, and
//     removed by it if not.
//
// Replies and invalidations no longer share one ordered connection, but
// the guard never relied on that order: only on every later write being
// invalidated while the fill's ticket is held. What two connections add is
// a tracking connection that is down while the caller's is up: reads then
// reach Redis with no invalidation to follow them, so the memory tier
// refuses every fill, revalidation and trust while tracking is down
// (tracking.Cache.Fill), and the cache serves what it reads without
// keeping it. And NOLOOP only silences writes sent on the tracking
// connection: this cache's own writes come back to it as invalidations,
// which drop its local copies (correct, at the cost of a read after each
// write).

// dataClient returns the client for data commands and the herd: the
// caller's Options.RedisClient, else the tracking client. It is nil while
// the tracking connection has never connected (Redis down at Open): until
// then no invalidation could reach the cache, so it does not use Redis.
func (c *Cache) dataClient() rueidis.Client {
	cl := c.mem.Client()
	if cl != nil && c.o.RedisClient != nil {
		return c.o.RedisClient
	}
	return cl
}

// probeKey is the suffix of the key checkShared writes under a tracked
// prefix.
const probeKey = "\xffthermos:probe:"

// checkShared makes sure Options.RedisClient writes where the tracking
// connection listens: it writes a probe key under a tracked prefix through
// RedisClient and waits for its invalidation, which must arrive within
// StalenessBound if both reach the same Redis (or cluster). Without the
// check, a client pointed at another server would leave every cached value
// stale forever. It is skipped when no route keeps local copies of Redis
// keys (nothing to keep consistent) and when Redis cannot be reached at
// Open (logged).
func (c *Cache) checkShared(ctx context.Context) error {
	if c.o.RedisClient == nil {
		return nil
	}
	prefixes := trackedPrefixes(c.o.Routes)
	if len(prefixes) == 0 {
		return nil
	}
	if c.mem.Client() == nil {
		c.o.Logger.Warn("tiered: redis unreachable at open; Options.RedisClient is not checked against Options.Redis")
		return nil
	}
	cl := c.o.RedisClient
	key := fmt.Sprintf("%s%s%016x", prefixes[0], probeKey, c.uint64())
	c.own.expect(key)
	heard := c.own.done(key)
	defer c.own.forget(key)
	wait := c.mem.StalenessBound()
	if err := cl.Do(ctx, cl.B().Set().Key(key).Value("1").PxMilliseconds(max(2*wait.Milliseconds(), 1000)).Build()).Error(); err != nil {
		return redisError("Options.RedisClient", err)
	}
	defer func() { _ = cl.Do(context.WithoutCancel(ctx), cl.B().Del().Key(key).Build()).Error() }()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-heard:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return newFault(ErrConfig, nil, "Options.RedisClient does not reach the redis Options.Redis tracks: "+
			"its write of %q was not invalidated within %v", key, wait)
	}
}
