package tiered

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/thermoscache/thermos/tracking"
)

func (c *Cache) kickRevalidation() {
	select {
	case c.reval <- struct{}{}:
	default:
	}
}

// revalidationRetry is how long the revalidator waits before trying again
// when Redis could not answer.
const revalidationRetry = 250 * time.Millisecond

// errRecheck reports a pass in which some entries matched Redis but could
// not be confirmed: an invalidation raced with the check (the pass runs
// again at once), or tracking is down (every confirmation is refused until
// it is re-armed, which kicks a pass), so consecutive rechecks back off up
// to revalidationRetry.
var errRecheck = errors.New("tiered: some entries need another check")

// revalidator checks unverified local copies against Redis in the
// background: after a warm start, after every epoch bump, and again while
// Redis cannot answer.
func (c *Cache) revalidator() {
	defer c.wg.Done()
	var retry <-chan time.Time
	recheck := time.Millisecond // the next wait after errRecheck
	for {
		select {
		case <-c.done:
			return
		case <-c.reval:
		case <-retry:
		}
		retry = nil
		if _, err := c.redis.client(); err != nil {
			if !errors.Is(err, errNoRedis) {
				retry = time.After(revalidationRetry)
			}
			continue
		}
		start := time.Now()
		epoch := c.mem.Epoch()
		if err := c.revalidateAll(); err != nil {
			if errors.Is(err, errRecheck) {
				c.redisUp.Store(true)
				retry = time.After(recheck)
				recheck = min(2*recheck, revalidationRetry)
				continue
			}
			if !errors.Is(err, context.Canceled) {
				c.o.Logger.Warn("tiered: revalidation incomplete; retrying", "err", err)
			}
			retry = time.After(revalidationRetry)
			continue
		}
		if c.mem.Epoch() != epoch {
			// The epoch moved during the pass: entries it made unverified
			// may have been missed. Look again.
			retry = time.After(time.Millisecond)
			continue
		}
		recheck = time.Millisecond
		c.redisUp.Store(true)
		c.stats.lastRevalidation.Store(int64(time.Since(start)))
		c.stats.passes.Add(1)
	}
}

// revalidateAll checks every unverified memory entry and every untrusted
// disk entry of Redis-backed routes, DefaultRevalidateSize keys per round
// trip: a match verifies the copy, a mismatch drops it from every local
// tier.
func (c *Cache) revalidateAll() error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-c.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	// A pass with nothing to check would otherwise end without a word
	// to Redis, and report Redis up (ServeStale's switch) while it is not.
	if err := c.redis.ping(ctx); err != nil {
		return err
	}
	var batch []check
	refused := 0
	// The memory copies confirmed by this pass, on routes with a disk
	// tier: the disk copy of the same version needs no second check (at a
	// warm start memory was filled from disk, so that is most of them).
	confirmed := make(map[string]confirmation)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		n, err := c.settle(ctx, batch, confirmed)
		refused += n
		batch = batch[:0]
		return err
	}
	var err error
	c.mem.Unverified(func(key string, version uint64) bool {
		r := c.router.find(key)
		if r.Tiers&Redis == 0 || r.Tiers&Memory == 0 {
			return true
		}
		batch = append(batch, check{key: key, version: version, r: r, t: c.mem.Reserve(key), tr: c.memory})
		if len(batch) >= DefaultRevalidateSize {
			err = flush()
		}
		return err == nil && ctx.Err() == nil
	})
	if err == nil {
		err = flush()
	}
	if err == nil && c.disk != nil {
		err = c.disk.scan(ctx, "", func(key string, b []byte, expiry int64) error {
			r := c.router.find(key)
			if r.Tiers&Redis == 0 || r.Tiers&Disk == 0 {
				return nil
			}
			t := c.mem.Reserve(key)
			if c.disk.trust.has(c.mem, key) {
				return nil
			}
			e, derr := c.decodeDisk(r, key, b, expiry)
			if derr != nil {
				c.stats.diskCorrupt.Add(1)
				c.disk.drop(key)
				return nil
			}
			if cf, ok := confirmed[key]; ok && cf.version == e.it.Version && c.disk.confirm(r, key, &e, cf.t) {
				// Redis held this version after cf.t was taken, and the
				// ticket is still valid: nothing changed since.
				return nil
			}
			batch = append(batch, check{key: key, version: e.it.Version, r: r, t: t, e: e, tr: c.disk})
			if len(batch) >= DefaultRevalidateSize {
				return flush()
			}
			return nil
		})
		if err == nil {
			err = flush()
		}
	}
	switch {
	case err != nil:
		return err
	case ctx.Err() != nil:
		return ctx.Err()
	case refused > 0:
		return errRecheck
	}
	return nil
}

// confirmation is a version Redis was found to hold, under ticket t.
type confirmation struct {
	version uint64
	t       tracking.Ticket
}

// settle sends one batch of checks and applies the answers. It returns how
// many matched but could not be confirmed (their ticket was overtaken).
func (c *Cache) settle(ctx context.Context, batch []check, confirmed map[string]confirmation) (refused int, err error) {
	if err := c.redis.revalidate(ctx, batch); err != nil {
		return 0, err
	}
	now := c.now()
	for i := range batch {
		ch := &batch[i]
		if ch.tr == tier(c.memory) {
			if it, _, ok := c.mem.Peek(ch.key); ok {
				ch.e.it = *it
			} else {
				continue // gone meanwhile
			}
		}
		if !ch.match || outlives(&ch.e.it, now, ch.pttl) {
			if !c.mem.Valid(ch.t) {
				// The key was written or invalidated since the check was
				// sent: what is held now is not what was checked (this
				// process's own Set, say), and the change itself decides
				// its fate. Dropping it would lose a fresh write.
				refused++
				continue
			}
			c.stats.dropped.Add(1)
			ch.r.stats.dropped.Add(1)
			c.forgetLocal(ch.key)
			continue
		}
		if !ch.tr.confirm(ch.r, ch.key, &ch.e, ch.t) {
			// An invalidation of this key, or of one sharing its
			// generation slot, came in meanwhile: look again.
			refused++
			continue
		}
		c.stats.revalidated.Add(1)
		ch.r.stats.revalidated.Add(1)
		if ch.tr == tier(c.memory) && ch.r.Tiers&Disk != 0 {
			confirmed[ch.key] = confirmation{ch.version, ch.t}
		}
	}
	return refused, nil
}

// warm loads the disk tier into memory after a restart: as unverified for
// Redis-backed routes (the revalidator checks them, reads check them first)
// and as fresh for local routes. It stops when the memory budget is full.
func (c *Cache) warm(ctx context.Context) error {
	var budget int64
	err := c.disk.scan(ctx, "", func(key string, b []byte, expiry int64) error {
		r := c.router.find(key)
		if r.Tiers&Disk == 0 || r.Tiers&Memory == 0 {
			return nil
		}
		e, err := c.decodeDisk(r, key, b, expiry)
		if err != nil {
			c.stats.diskCorrupt.Add(1)
			c.o.Logger.Warn("tiered: disk entry refused at warm-up", "key", key, "err", err)
			c.disk.drop(key)
			return nil
		}
		budget += int64(len(key)+len(e.it.Value)) + tracking.EntryOverhead
		if budget > c.o.MemoryBytes {
			return errWarmFull
		}
		t := c.mem.Reserve(key)
		if r.Tiers&Redis != 0 {
			c.mem.Fill(t, key, e.it, false)
		} else {
			c.mem.FillLocal(t, key, e.it)
		}
		c.stats.warmed.Add(1)
		return nil
	})
	if err != nil && !errors.Is(err, errWarmFull) {
		return fmt.Errorf("tiered: warm from disk: %w", err)
	}
	return nil
}

var errWarmFull = errors.New("memory budget full")
