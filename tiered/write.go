package tiered

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/thermoscache/thermos/tracking"
)

// Set stores value under key in every tier of its route, for ttl (zero
// means the route's TTL). The writer reads its own write at once. With
// Options.SyncWrites the disk copy is durable before Set returns.
func (c *Cache) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	return opErr("set", key, c.set(ctx, key, value, ttl))
}

func (c *Cache) set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	r, err := c.check(key)
	if err != nil {
		return err
	}
	if ttl < 0 {
		return newFault(ErrInvalidTTL, nil, "%v", ttl)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if bypassOf(ctx)&BypassWrites != 0 {
		return nil
	}
	enc, e, hardTTL, err := c.encode(r, key, value, ttl, 0, false)
	if err != nil {
		return err
	}
	if r.Tiers&Redis == 0 {
		_, err := c.commit(ctx, r, key, &e, nil)
		return err
	}
	// Taken before the write is sent: if another writer's invalidation is
	// applied after it, our write may be the older one.
	t := c.mem.Reserve(key)
	if err := c.redis.set(ctx, key, enc, hardTTL); err != nil {
		// Redis may or may not hold the new value: forget the local one.
		c.forgetLocal(key)
		return err
	}
	c.hook("set:acked", key)
	valid, err := c.commit(ctx, r, key, &e, &t)
	if err != nil || valid || r.Tiers&(Memory|Disk) == 0 {
		return err
	}
	// The ticket was overtaken: by another write of key, or by a write of
	// another key sharing its generation slot. Ask Redis which, under a
	// fresh ticket, so a busy cache keeps its own writes (one round trip,
	// on this rare path only).
	c.hook("set:invalid", key)
	t = c.mem.Reserve(key)
	if match, _, err := c.redis.verify(ctx, r, key, e.it.Version); err == nil && match {
		valid, err = c.commit(ctx, r, key, &e, &t)
		if valid {
			c.hook("set:retry-ok", key)
		} else {
			c.hook("set:retry-fail", key)
		}
		return err
	}
	c.hook("set:retry-fail", key)
	return nil
}

// Delete removes key from every tier of its route. With Options.SyncWrites
// the disk's delete is durable before Delete returns.
func (c *Cache) Delete(ctx context.Context, key string) error {
	return opErr("delete", key, c.delete(ctx, key))
}

func (c *Cache) delete(ctx context.Context, key string) error {
	r, err := c.check(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if r.Tiers&Redis != 0 {
		c.forgetLocal(key) // a failed DEL leaves no local copy behind
		if err := c.redis.del(ctx, key); err != nil {
			return err
		}
	}
	// Again after the DEL: a read that raced with it may have refilled.
	_, err = c.commit(ctx, r, key, nil, nil)
	return err
}

// commit applies an acknowledged write of key (e nil: a delete) to the
// local tiers of r, walking them in order: memory first, whose write
// returns the ticket every later step presents, then disk.
//
// after is the ticket taken before the write was sent to Redis. The race it
// closes, in order:
//  1. this process takes ticket t and sends SET k v1;
//  2. Redis applies it and replies;
//  3. another client writes v2 (or deletes k); its invalidation reaches
//     this process and is applied: memory had nothing newer to remove, the
//     disk tier queues a delete of k;
//  4. this goroutine, scheduled late, commits v1 locally.
//
// Without the ticket, v1 would be cached in memory and queued to disk after
// the delete: served forever, since no second invalidation comes. With it,
// step 3 bumped k's generation, so the memory write under t removes the
// entry instead, and the disk tier queues a delete, not v1
// (TestRaceSetExternalWrite forces this order on every route kind).
//
// Without Redis (after nil) writes are unconditional. On routes with the
// disk tier, the key's stripe lock is held from the memory write to the
// queued disk write, so two racing writers leave memory and disk with the
// same value, and an invalidation's delete cannot slip in between (see
// diskTier.write).
//
// valid is false when after was overtaken: the local copies were removed.
func (c *Cache) commit(ctx context.Context, r *route, key string, e *entry, after *tracking.Ticket) (valid bool, err error) {
	var it *tracking.Item
	if e != nil && r.Tiers&Memory != 0 {
		it = &e.it
	}
	unlock := func() {}
	if c.disk != nil && r.Tiers&Disk != 0 {
		unlock = c.disk.lock(key)
	}
	next, valid, err := c.mem.Write(key, it, 0, after)
	c.hook("commit:memory", key)
	if errors.Is(err, tracking.ErrTooLarge) {
		err = nil // kept by the slower tiers; too big to cache in memory
	}
	var dw diskWrite
	if err == nil && c.disk != nil && r.Tiers&Disk != 0 {
		dw = c.disk.write(r, key, e, next, valid, c.o.SyncWrites)
	}
	unlock()
	switch {
	case errors.Is(err, tracking.ErrClosed):
		return false, ErrClosed
	case err != nil:
		return false, newFault(ErrConfig, err, "memory tier") // unreachable: keys are checked first
	}
	if err := dw.wait(ctx); err != nil {
		return false, diskError(err)
	}
	return valid, nil
}

// Flush waits until every disk write queued so far is on disk, durably, and
// returns a disk write error that neither it nor Close has returned yet.
// While the disk tier is off (see the package doc, Disk faults) it returns
// its fault at once, wrapping ErrDisk.
func (c *Cache) Flush(ctx context.Context) error {
	if c.closed.Load() {
		return opErr("flush", "", ErrClosed)
	}
	if c.disk == nil {
		return nil
	}
	return opErr("flush", "", diskError(c.disk.wb.sync(ctx)))
}

// diskError is a disk tier failure as ErrDisk; a context error stays as it
// is (the caller stopped waiting).
func diskError(err error) error {
	if err == nil || errors.Is(err, ErrDisk) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return newFault(ErrDisk, err, "")
}

// InvalidatePrefix removes every key starting with prefix that this cache's
// routes own, from each tier of the route it belongs to: memory, disk and,
// for routes with the Redis tier, Redis (a cursor-based SCAN and UNLINK in
// bounded batches on every primary, never KEYS). A key in Redis that
// matches prefix but whose route has no Redis tier is not this cache's and
// is left alone. It returns how many keys it removed from Redis.
//
// Without Options.RequireRoute the default route owns every key no other
// route does, so every prefix is the cache's own. With RequireRoute, a
// prefix wider than the routes (one no route's prefix starts, such as ""
// when no route has the empty prefix) is refused with an error matching
// ErrConfig and ErrNoRoute, and nothing is removed: invalidate each
// route's prefix instead.
func (c *Cache) InvalidatePrefix(ctx context.Context, prefix string) (int, error) {
	n, err := c.invalidatePrefix(ctx, prefix)
	return n, opErr("invalidate prefix", prefix, err)
}

func (c *Cache) invalidatePrefix(ctx context.Context, prefix string) (int, error) {
	if c.closed.Load() {
		return 0, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if c.router.find(prefix) == c.router.none {
		return 0, newFault(ErrConfig, ErrNoRoute, "prefix wider than the routes (%s)", c.router.prefixes())
	}
	c.mem.InvalidatePrefix(prefix)
	if c.disk != nil {
		if err := c.disk.dropPrefix(ctx, prefix); err != nil {
			return 0, diskError(err)
		}
	}
	owned := func(k string) bool {
		return strings.HasPrefix(k, prefix) && !c.reserved(k) && c.router.find(k).Tiers&Redis != 0
	}
	n := 0
	if c.router.redis && c.router.anyRedisUnder(prefix) {
		var err error
		n, err = c.redis.unlinkPrefix(ctx, prefix, owned, func(keys []string) {
			for _, k := range keys {
				c.forgetLocal(k)
			}
		})
		if err != nil {
			return n, err
		}
	}
	// Reads that raced with the deletes may have refilled memory.
	c.mem.InvalidatePrefix(prefix)
	return n, nil
}
