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
	// Sized for every memory entry: at a warm start nearly all of them
	// are confirmed, and growing the map key by key costs more than the
	// lookups.
	var confirmed map[uint64]confirmation
	if c.disk != nil {
		n := c.mem.Stats().Entries
		confirmed = make(map[uint64]confirmation, n)
		c.disk.trust.reserve(n)
	}
	p := pass{c: c, ctx: ctx, cancel: cancel, confirmed: confirmed}
	defer p.wait()
	// The memory copies confirmed by this pass, on routes with a disk
	// tier (p.confirmed): the disk copy of the same version needs no
	// second check (at a warm start memory was filled from disk, so that is
	// most of them). They are keyed by the disk trust's key hash, as the
	// trust records are.
	batch := p.next()
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := p.send(batch)
		batch = p.next()
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
	if err == nil {
		// Every memory answer is in before the disk scan reads
		// p.confirmed.
		err = p.drain()
	}
	if err == nil && c.disk != nil {
		err = c.disk.scan(ctx, "", func(key string, b []byte, expiry int64) error {
			r := c.router.find(key)
			if r.Tiers&Redis == 0 || r.Tiers&Disk == 0 {
				return nil
			}
			t := c.mem.Reserve(key)
			h := c.disk.trust.hash(key)
			if c.disk.trust.hasHash(c.mem, h) {
				return nil
			}
			e, derr := c.decodeDisk(r, key, b, expiry)
			if derr != nil {
				c.stats.diskCorrupt.Add(1)
				c.disk.drop(key)
				return nil
			}
			if cf, ok := confirmed[h]; ok && cf.version == e.it.Version && c.disk.confirmHash(h, cf.t) {
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
		if err == nil {
			err = p.drain()
		}
	}
	switch {
	case err != nil:
		return err
	case ctx.Err() != nil:
		return ctx.Err()
	case p.refused > 0:
		return errRecheck
	}
	return nil
}

// confirmation is a version Redis was found to hold, under ticket t.
type confirmation struct {
	version uint64
	t       tracking.Ticket
}

// revalidateDepth is how many batches a pass has in flight at once: Redis
// answers one while the pass gathers and settles the others.
const revalidateDepth = 3

// pass sends a revalidation pass's batches, up to revalidateDepth at once,
// and settles their answers in the order they were sent, on the pass's
// goroutine. Every check's ticket is taken before its batch is sent, so
// settling later only widens the window the ticket already guards.
type pass struct {
	c         *Cache
	ctx       context.Context
	cancel    context.CancelFunc
	confirmed map[uint64]confirmation
	refused   int
	inflight  []sent
	free      [][]check
}

// sent is a batch sent to Redis; err receives its outcome.
type sent struct {
	batch []check
	err   chan error
}

// next returns an empty batch, reusing a settled one.
func (p *pass) next() []check {
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free = p.free[:n-1]
		return b[:0]
	}
	return make([]check, 0, DefaultRevalidateSize)
}

// send sends batch and, once revalidateDepth batches are in flight,
// settles the oldest.
func (p *pass) send(batch []check) error {
	s := sent{batch: batch, err: make(chan error, 1)}
	go func() { s.err <- p.c.redis.revalidateBatch(p.ctx, s.batch) }()
	p.inflight = append(p.inflight, s)
	if len(p.inflight) >= revalidateDepth {
		return p.settleOldest()
	}
	return nil
}

func (p *pass) settleOldest() error {
	s := p.inflight[0]
	p.inflight = p.inflight[1:]
	if err := <-s.err; err != nil {
		return err
	}
	p.refused += p.c.settle(s.batch, p.confirmed)
	clear(s.batch) // no key or entry kept alive by the free list
	p.free = append(p.free, s.batch)
	return nil
}

// drain settles every batch in flight.
func (p *pass) drain() error {
	for len(p.inflight) > 0 {
		if err := p.settleOldest(); err != nil {
			return err
		}
	}
	return nil
}

// wait, at the end of a pass, stops and waits for the batches still in
// flight (after an error): none outlives the pass.
func (p *pass) wait() {
	if len(p.inflight) == 0 {
		return
	}
	p.cancel()
	for _, s := range p.inflight {
		<-s.err
	}
	p.inflight = nil
}

// settle applies the answers to one batch of checks. It returns how many
// matched but could not be confirmed (their ticket was overtaken).
func (c *Cache) settle(batch []check, confirmed map[uint64]confirmation) (refused int) {
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
		if ch.tr == tier(c.memory) && ch.r.Tiers&Disk != 0 && confirmed != nil {
			confirmed[c.disk.trust.hash(ch.key)] = confirmation{ch.version, ch.t}
		}
	}
	return refused
}

// warm loads the disk tier into memory after a restart: as unverified for
// Redis-backed routes (the revalidator checks them, reads check them first)
// and as fresh for local routes. It stops when the memory budget is full.
func (c *Cache) warm(ctx context.Context) error {
	var budget int64
	// The memory index grows ahead of the fill, doubling, instead of a
	// rebuild each time a shard outgrows its table by a sixth.
	filled, room := 0, 0
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
		if filled == room {
			room = max(2*room, 4096)
			c.mem.Grow(room - filled)
		}
		filled++
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
