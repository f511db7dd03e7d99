package tracking

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/clock"
	"github.com/thermoscache/thermos/internal/metrics"
)

// genSlots is the number of generation counters per shard. A key's
// generation lives in the slot its hash picks; two keys sharing a slot only
// make a fill refuse needlessly (a later read fills it), never accept a stale
// one.
const genSlots = 512

// Lock order: a shard's mu is a leaf. No code holds two shard locks, and no
// listener or Redis call runs under one.

// shard is one independently locked part of the cache.
type shard struct {
	mu struct {
		sync.Mutex
		pol   policy
		bytes int64 // sum of entry sizes; <= config.shareBytes
		// counters, read by Stats under mu.
		inserts, evictions, expired, refused, tooLarge, removed uint64
		// writes holds the start time of Sets awaiting their own
		// invalidation, for the lag histogram. Bounded by maxPendingWrites.
		writes map[string]int64
	}
	// idx finds the shard's entries; hits read it without the lock, every
	// change is made under mu together with the policy's.
	idx index
	// lockFree is the policy's lockFree, fixed at New.
	lockFree bool
	// sgen is bumped by InvalidatePrefix: it refuses every older ticket of
	// the shard.
	sgen atomic.Uint64
	// gens are the per-key generations, indexed by key hash. A key's slot is
	// bumped by every invalidation and local write of that key.
	gens [genSlots]atomic.Uint64
	_    [64]byte // keep neighbouring shards' locks off one cache line
}

const maxPendingWrites = 1024

// Ticket is a reservation taken before reading a slower tier (disk, Redis).
// A fill or revalidation presenting it succeeds only if nothing invalidated
// the key, the key's shard, or the whole cache (epoch bump) since Reserve.
// The zero Ticket is never valid. Tickets need no release.
type Ticket struct {
	hash, gen, sgen, epoch uint64
}

// Cache is the memory tier. It is safe for concurrent use.
type Cache struct {
	cfg    *config
	seed   maphash.Seed
	shards []shard
	mask   uint64
	epoch  atomic.Uint64 // starts at 1; 0 marks never-verified entries

	ownClock *clock.Coarse                 // set when Options.Clock is nil
	coarse   *clock.Coarse                 // ownClock, or Options.Clock if it is one
	fastNow  interface{ UnixNano() int64 } // a clock with UnixNano
	clk      Clock

	// client is the Redis client; nil for a local-only cache, and until the
	// first connection with Options.ConnectInBackground.
	client atomic.Pointer[rueidis.Client]
	// drops counts null invalidations (a tracking connection closed, or a
	// flush); armed is the count the last successful re-arm started from.
	// While they differ, tracking is down: no invalidation can arrive, so
	// nothing read from Redis may be trusted, even if the caller read it on
	// a connection of its own that stayed up. Meanwhile Fill refuses
	// verified entries, Revalidate refuses, Valid is false and Write under
	// a ticket removes the entry (see isDown).
	drops, armed atomic.Uint64

	lmu       sync.Mutex // serialises OnInvalidate
	listeners atomic.Pointer[[]func(keys []string, epochBump bool)]

	// lf counts Lookup's outcomes (hits by tag, misses, unverified serves)
	// for every policy, off the shards' locks.
	lf *counters
	// yield is Options.HitYield > 0; a lock-free hit whose stripe count
	// has the bits of yieldMask (HitYield - 1) clear then yields, unless
	// the coarse clock shows that the scheduler is keeping up (see
	// maybeYield).
	yield     bool
	yieldMask uint64
	yields    atomic.Uint64

	invalidations atomic.Uint64 // keys received from Redis
	epochBumps    atomic.Uint64
	// topologyChanges counts slot map changes the cluster check saw.
	topologyChanges atomic.Uint64
	lag             metrics.Histogram

	closed    atomic.Bool
	closeOnce sync.Once
	cancel    context.CancelFunc // stops background work
	wg        sync.WaitGroup
	rearm     chan struct{}

	// Test-only switches, set by tests in this package before use.
	testNoGuard    bool             // accept every ticket: reopens the race
	testBeforeFill func(key string) // runs in Fetch between reply and fill
	testInWrite    func(key string) // runs in Write, under the shard lock, between its check and its bump
}

// New returns a Cache. With opts.Redis set it connects, checks that the server
// is Redis >= MinRedisVersion (ErrUnsupportedServer) and that it accepts
// CLIENT TRACKING BCAST for the covered prefixes (ErrTrackingRefused); an
// unreachable server gives an error wrapping ErrUnavailable. Invalid options
// give ErrInvalidOptions or ErrUnsupportedPolicy. Close releases everything.
func New(ctx context.Context, opts *Options) (*Cache, error) {
	cfg, err := opts.config()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("tracking: new: %w", err)
	}
	c := &Cache{
		cfg:    cfg,
		seed:   maphash.MakeSeed(),
		shards: make([]shard, cfg.shards),
		mask:   uint64(cfg.shards - 1),
		rearm:  make(chan struct{}, 1),
	}
	c.epoch.Store(1)
	c.lf = newCounters()
	if cfg.HitYield > 0 {
		c.yield, c.yieldMask = true, uint64(nextPow2(cfg.HitYield)-1)
	}
	for i := range c.shards {
		s := &c.shards[i]
		s.idx.reset()
		s.mu.pol = newPolicy(cfg.Policy, cfg.shareBytes, c.hash)
		s.lockFree = s.mu.pol.lockFree()
		s.mu.writes = make(map[string]int64)
	}
	switch clk := cfg.Clock.(type) {
	case nil:
		c.ownClock = clock.NewCoarse(clock.DefaultResolution)
		c.clk, c.coarse = c.ownClock, c.ownClock
	case *clock.Coarse:
		c.clk, c.coarse = clk, clk
	case interface{ UnixNano() int64 }:
		c.fastNow, c.clk = clk, cfg.Clock
	default:
		c.clk = cfg.Clock
	}
	bg, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	if cfg.Redis != nil {
		err := c.connect(ctx)
		switch {
		case err == nil:
			c.wg.Add(1)
			go c.rearmLoop(bg)
		case cfg.ConnectInBackground && errors.Is(err, ErrUnavailable):
			cfg.Logger.Warn("tracking: redis unavailable; connecting in the background", "err", err)
			c.wg.Add(1)
			go c.connectLoop(bg)
		default:
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// Close closes the Redis connection, stops every goroutine the cache started
// and drops every entry. It is safe to call twice and always returns nil.
// Afterwards Get misses, Fill refuses, and methods that return errors return
// ErrClosed.
func (c *Cache) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		c.cancel()
		c.wg.Wait()
		if cl := c.redis(); cl != nil {
			cl.Close()
			c.closeLate(cl)
		}
		for i := range c.shards {
			s := &c.shards[i]
			s.mu.Lock()
			s.mu.pol.purge()
			s.idx.reset()
			s.mu.bytes = 0
			s.mu.Unlock()
		}
		if c.ownClock != nil {
			c.ownClock.Close()
		}
	})
	return nil
}

// closeLate closes cl again once the calls given up on inside it are done.
// Why: rueidis v1.0.79 stores a connection it finished dialling after
// Close had marked the slot dead (mux._pipe), so a call abandoned while
// dialling (the re-arm loop's ping when Close cancels it, a caller whose
// context ended) would leave that connection and its goroutines behind.
// Close waits for that at most a second; past it the second close happens
// in the background, when the dial ends (bounded by its timeouts).
func (c *Cache) closeLate(cl rueidis.Client) {
	b, ok := cl.(bounded)
	if !ok || b.abandoned.Load() == 0 {
		return
	}
	dial := dialTimeout(&c.cfg.Redis.Dialer)
	done := make(chan struct{})
	go func() {
		defer close(done)
		deadline := time.Now().Add(dial + c.cfg.ConnWriteTimeout)
		for b.abandoned.Load() > 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		cl.Close()
	}()
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// Client returns the tracking-enabled rueidis client, or nil for a
// local-only cache. Data commands may be sent on it; note that with
// Options.NoLoop, a tracked key written through it (rather than Set or
// Delete) is not invalidated locally. The client belongs to the Cache: do
// not close it.
func (c *Cache) Client() rueidis.Client { return c.redis() }

// redis returns the client, or nil when there is none (yet).
func (c *Cache) redis() rueidis.Client {
	if p := c.client.Load(); p != nil {
		return *p
	}
	return nil
}

// Epoch returns the current epoch. It starts at 1 and grows by one on every
// null invalidation (FLUSHALL, FLUSHDB, or a tracking connection closing);
// entries verified in an older epoch are unverified.
func (c *Cache) Epoch() uint64 { return c.epoch.Load() }

// MaxEntryBytes returns the largest entry the cache admits: one shard's share
// of MaxBytes. An entry charges len(key) + cap(Value) + EntryOverhead.
func (c *Cache) MaxEntryBytes() int64 { return c.cfg.shareBytes }

// prefixes returns the tracked prefixes (the cover of Options.Prefixes);
// nil means every key. The caller may modify the returned slice.
func (c *Cache) prefixes() []string { return append([]string(nil), c.cfg.prefixes...) }

func (c *Cache) now() int64 {
	if c.coarse != nil {
		return c.coarse.UnixNano()
	}
	if c.fastNow != nil {
		return c.fastNow.UnixNano()
	}
	return c.clk.Now().UnixNano()
}

func (c *Cache) hash(key string) uint64 { return maphash.String(c.seed, key) }

func (c *Cache) shardOf(h uint64) *shard { return &c.shards[h&c.mask] }

func slotOf(h uint64) uint64 { return (h >> 32) % genSlots }

// Get returns key's cached item without any I/O. ok is false on a miss.
// fresh is false only with Options.KeepUnverified, for an entry the cache can
// no longer vouch for (verified before an epoch bump, or filled unverified);
// without KeepUnverified such entries are misses. An expired entry (MaxTTL or
// HardExpiry) is a miss and is removed. Get does not allocate.
func (c *Cache) Get(key string) (it Item, fresh, ok bool) {
	p, fresh, ok := c.Lookup(key)
	if ok {
		it = *p
	}
	return it, fresh, ok
}

// Lookup is Get returning a pointer to the cached item instead of a copy,
// for hot paths that read a field or two. The item is never modified once
// cached (a write replaces the entry), so the pointer stays valid and
// consistent; the caller must not modify it.
//
// Under the default policy Lookup takes no lock and does not allocate: the
// key is hashed once (shard and index), the index leads to the entry in
// one load, the hit raises the entry's saturating access count (written
// only while it is below 3) and adds one to a counter striped by
// goroutine. Under PolicyLRU and PolicyTwoQueue it locks the key's shard
// to reorder the policy's queue.
func (c *Cache) Lookup(key string) (it *Item, fresh, ok bool) {
	h := c.hash(key)
	s := c.shardOf(h)
	if !s.lockFree {
		return c.lookupLocked(s, h, key, false)
	}
	// Lock-free: the entry and its item are immutable once published; a
	// removal racing with this read is ordered after it.
	e := s.idx.find(h, key)
	if e == nil {
		c.lf.local().misses.Add(1)
		return nil, false, false
	}
	now := c.now()
	if now >= e.expireAt {
		c.expire(s, h, e)
		c.lf.local().misses.Add(1)
		return nil, false, false
	}
	m := e.meta.Load()
	switch ep := m >> metaEpochShift; {
	case ep == c.epoch.Load():
		fresh = true
	case c.cfg.KeepUnverified:
		c.lf.local().unverified.Add(1)
	default:
		c.lf.local().misses.Add(1)
		return nil, false, false
	}
	e.touch(m)
	if n := c.lf.local().tagHits[e.item.Tag].Add(1); c.yield && n&c.yieldMask == 0 {
		c.maybeYield()
	}
	return &e.item, fresh, true
}

// LookupFresh is Lookup for a caller that serves only what the cache vouches
// for and what is before its Item.SoftExpiry: it returns the item only if
// it is verified in the current epoch and, if SoftExpiry is set, not past
// it, read on the same clock reading as the expiry check. Anything else is
// counted as a miss and left in place (the caller may Peek it and decide).
// Like Lookup it takes no lock under the default policy and does not
// allocate.
//
// It is Lookup's body again rather than a call to a shared one: tiered's
// memory hit calls it, and one call deep instead of two, without the
// branches only Lookup takes, is a few nanoseconds of a hit of ~50.
func (c *Cache) LookupFresh(key string) (it *Item, ok bool) {
	h := c.hash(key)
	s := c.shardOf(h)
	if !s.lockFree {
		it, _, ok = c.lookupLocked(s, h, key, true)
		return it, ok
	}
	e := s.idx.find(h, key)
	if e == nil {
		c.lf.local().misses.Add(1)
		return nil, false
	}
	now := c.now()
	if now >= e.expireAt {
		c.expire(s, h, e)
		c.lf.local().misses.Add(1)
		return nil, false
	}
	m := e.meta.Load()
	if m>>metaEpochShift != c.epoch.Load() || e.item.SoftExpiry != 0 && now >= e.item.SoftExpiry {
		c.lf.local().misses.Add(1)
		return nil, false
	}
	e.touch(m)
	if n := c.lf.local().tagHits[e.item.Tag].Add(1); c.yield && n&c.yieldMask == 0 {
		c.maybeYield()
	}
	return &e.item, true
}

// maybeYield is the yield of Options.HitYield. With a coarse clock it
// yields only if the clock's last tick is more than two resolutions old:
// its goroutine waits for a processor like the tracking connection's
// reader, so while it keeps up a processor is going idle or through the
// scheduler often enough to poll the network, and a yield would only cost
// (on an otherwise idle machine, Gosched wakes an idle processor to look
// for work: a futex wake and its spinning, ~15 % of a hit's CPU time at
// 1,024 hits). Reading the system clock once per HitYield hits costs a
// fraction of a nanosecond per hit.
//
//go:noinline
func (c *Cache) maybeYield() {
	if k := c.coarse; k != nil && k.Behind() <= 2*k.Resolution() {
		return
	}
	c.yields.Add(1)
	runtime.Gosched()
}

// expire removes key's expired entry e, unless it was replaced meanwhile.
func (c *Cache) expire(s *shard, h uint64, e *entry) {
	s.mu.Lock()
	if c.removeLocked(s, h, e) {
		s.mu.expired++
	}
	s.mu.Unlock()
}

// lookupLocked is Lookup for policies that record every access (LRU, 2Q).
func (c *Cache) lookupLocked(s *shard, h uint64, key string, strict bool) (it *Item, fresh, ok bool) {
	now := c.now()
	epoch := c.epoch.Load()
	lf := c.lf.local()
	s.mu.Lock()
	e := s.idx.find(h, key)
	switch {
	case e == nil:
		lf.misses.Add(1)
	case now >= e.expireAt:
		c.removeLocked(s, h, e)
		s.mu.expired++
		lf.misses.Add(1)
	case strict && (e.epoch() != epoch || e.item.SoftExpiry != 0 && now >= e.item.SoftExpiry):
		lf.misses.Add(1)
	case e.epoch() == epoch:
		s.mu.pol.hit(e)
		lf.tagHits[e.item.Tag].Add(1)
		it, fresh, ok = &e.item, true, true
	case c.cfg.KeepUnverified:
		s.mu.pol.hit(e)
		lf.tagHits[e.item.Tag].Add(1)
		lf.unverified.Add(1)
		it, ok = &e.item, true
	default:
		lf.misses.Add(1)
	}
	s.mu.Unlock()
	return it, fresh, ok
}

// Peek is Lookup without side effects: it neither counts a hit or miss nor
// records an access for the policy, and leaves an expired entry in place
// (it reports it as a miss). It takes no lock.
func (c *Cache) Peek(key string) (it *Item, fresh, ok bool) {
	h := c.hash(key)
	s := c.shardOf(h)
	e := s.idx.find(h, key)
	if e == nil || c.now() >= e.expireAt {
		return nil, false, false
	}
	fresh = e.epoch() == c.epoch.Load()
	if !fresh && !c.cfg.KeepUnverified {
		return nil, false, false
	}
	return &e.item, fresh, true
}

// Grow prepares the cache for about n more entries, so a bulk fill (a warm
// start from disk) does not rebuild each shard's index step by step. It
// changes no entry and no budget; n beyond what MaxBytes can hold is capped.
func (c *Cache) Grow(n int) {
	m := min(int64(n), c.cfg.MaxBytes/EntryOverhead)
	per := int(m)/len(c.shards) + 1
	per += per/16 + 8 // shards fill unevenly
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.idx.grow(per, c.hash)
		s.mu.Unlock()
	}
}

// Mark records every key's generation at one moment, so that a bulk fill
// (a warm start) can ask later, of a ticket taken since, whether the key
// was left alone in between (Unchanged). It holds 8 bytes per generation
// slot: 4 KiB per shard.
type Mark struct {
	epoch, mask uint64
	sgen        []uint64
	gens        [][genSlots]uint64
}

// Mark returns the generations as they are now. It does not lock.
func (c *Cache) Mark() *Mark {
	m := &Mark{epoch: c.epoch.Load(), mask: c.mask, sgen: make([]uint64, len(c.shards)), gens: make([][genSlots]uint64, len(c.shards))}
	for i := range c.shards {
		s := &c.shards[i]
		m.sgen[i] = s.sgen.Load()
		for j := range s.gens {
			m.gens[i][j] = s.gens[j].Load()
		}
	}
	return m
}

// Unchanged reports whether nothing invalidated or wrote t's key (or a key
// sharing its generation slot), its shard or the whole cache between m
// and the moment t was taken: whatever was filled for the key in between
// under a valid ticket is still what it was then. Present t to Valid as
// well for what happened after it.
func (m *Mark) Unchanged(t Ticket) bool {
	i := t.hash & m.mask
	return t.epoch != 0 && t.epoch == m.epoch && t.sgen == m.sgen[i] && t.gen == m.gens[i][slotOf(t.hash)]
}

// Reserve takes a ticket for key. Take it BEFORE reading a slower tier, then
// present it to Fill or Revalidate: they refuse if key was invalidated (by
// Redis or locally), or the epoch bumped, in between. Reserve does not lock.
func (c *Cache) Reserve(key string) Ticket {
	h := c.hash(key)
	s := c.shardOf(h)
	return c.ticketOf(s, h)
}

// ticketOf is the ticket for the key hashing to h, in shard s, as the
// counters are now.
func (c *Cache) ticketOf(s *shard, h uint64) Ticket {
	return Ticket{hash: h, gen: s.gens[slotOf(h)].Load(), sgen: s.sgen.Load(), epoch: c.epoch.Load()}
}

// validLocked reports whether t, taken for a key hashing to h, is still
// valid. REQUIRES: s.mu held (so that a concurrent invalidation either is seen
// here or removes the entry after this fill).
func (c *Cache) validLocked(s *shard, h uint64, t Ticket) bool {
	if c.testNoGuard {
		return true
	}
	return t.hash == h && t.epoch == c.epoch.Load() && t.sgen == s.sgen.Load() &&
		t.gen == s.gens[slotOf(h)].Load()
}

// Fill inserts it for key, read from a slower tier after Reserve returned t,
// and reports whether it did. It refuses (false) if key was invalidated or
// the epoch bumped since t, if t belongs to another key, if the item is
// already past its HardExpiry, if the entry exceeds MaxEntryBytes (counted in
// Stats.TooLarge), if key is empty, after Close, and, on a Redis-backed
// cache, for a key outside every tracked prefix (no invalidation would ever
// reach it; use SetLocal for local-only keys). A verified fill is also
// refused while the tracking connection is down (from the null
// invalidation that reports its loss until tracking is armed again), even
// if the caller read the value on another connection that stayed up: no
// invalidation of it could arrive. Revalidate, Valid and Write under a
// ticket refuse likewise.
//
// verified=false inserts the entry as unverified (a warm restart from disk):
// it is served only as Get's fresh == false with KeepUnverified, until
// Revalidate promotes it.
//
// The race Fill closes, in order:
//  1. a reader misses key and sends GET key to Redis;
//  2. Redis answers with the current value v1;
//  3. another client writes v2; Redis pushes the invalidation of key;
//  4. the connection's reader goroutine applies the invalidation: there is
//     nothing cached to remove yet;
//  5. the reader goroutine of step 1, scheduled late, inserts v1.
//
// Without a guard v1 is cached and served as fresh forever (no second
// invalidation is coming). With it, step 1 is preceded by Reserve, step 4
// bumps key's generation, and step 5 sees the bump and refuses. If instead
// the fill wins the shard lock before step 4, step 4 removes the entry.
// TestRaceInvalidationBeforeFill forces exactly this order.
func (c *Cache) Fill(t Ticket, key string, it Item, verified bool) bool {
	if c.cfg.Redis != nil && !tracked(c.cfg.prefixes, key) || verified && c.isDown() {
		return false
	}
	var epoch uint64 // 0: never verified
	if verified {
		epoch = t.epoch
	}
	return c.fill(t, key, it, epoch)
}

// fill inserts key's entry stamped with epoch unless t is no longer valid.
func (c *Cache) fill(t Ticket, key string, it Item, epoch uint64) bool {
	if key == "" || c.closed.Load() {
		return false
	}
	h := c.hash(key)
	e := c.newEntry(key, it, c.now(), 0)
	if e == nil {
		return false
	}
	s := c.shardOf(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.closed.Load() {
		return false
	}
	if !c.validLocked(s, h, t) {
		s.mu.refused++
		return false
	}
	if e.size() > c.cfg.shareBytes {
		s.mu.tooLarge++
		c.removeKeyLocked(s, h, key) // it may hold an older value
		return false
	}
	e.setEpoch(epoch)
	c.insertLocked(s, h, e)
	return true
}

// newEntry builds key's entry, or returns nil if it is already expired.
// limit, if positive, is one more expiry (a write's ttl deadline).
func (c *Cache) newEntry(key string, it Item, now, limit int64) *entry {
	exp := now + int64(c.cfg.MaxTTL)
	if it.HardExpiry != 0 && it.HardExpiry < exp {
		exp = it.HardExpiry
	}
	if limit > 0 && limit < exp {
		exp = limit
	}
	if exp <= now {
		return nil
	}
	return &entry{item: it, key: key, expireAt: exp}
}

// insertLocked replaces key's entry with e, evicting the policy's victims
// until the shard fits its share. REQUIRES: s.mu held, e.size() <=
// shareBytes.
func (c *Cache) insertLocked(s *shard, h uint64, e *entry) {
	if old := s.idx.put(h, e, c.hash); old != nil {
		s.mu.pol.replace(old, e, h)
		s.mu.bytes -= old.size()
	} else {
		s.mu.pol.add(e, h)
	}
	s.mu.bytes += e.size()
	s.mu.inserts++
	for s.mu.bytes > c.cfg.shareBytes {
		v := s.mu.pol.victim(e)
		if v == nil {
			break
		}
		s.idx.remove(c.hash(v.key), v)
		s.mu.bytes -= v.size()
		s.mu.evictions++
	}
	s.mu.pol.settle()
}

// removeLocked deletes entry e of the key hashing to h, if it is still
// cached. REQUIRES: s.mu held.
func (c *Cache) removeLocked(s *shard, h uint64, e *entry) bool {
	if !s.idx.remove(h, e) {
		return false
	}
	s.mu.pol.remove(e)
	s.mu.bytes -= e.size()
	return true
}

// removeKeyLocked deletes key's entry, if any. REQUIRES: s.mu held.
func (c *Cache) removeKeyLocked(s *shard, h uint64, key string) bool {
	e := s.idx.find(h, key)
	return e != nil && c.removeLocked(s, h, e)
}

// Revalidate promotes key's unverified entry to fresh if its Version equals
// version and nothing invalidated key (or bumped the epoch) since Reserve
// returned t; it reports whether it did. Take t before asking Redis for the
// version. An entry that is already fresh with that version also returns
// true.
func (c *Cache) Revalidate(t Ticket, key string, version uint64) bool {
	h := c.hash(key)
	s := c.shardOf(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.closed.Load() || c.isDown() || !c.validLocked(s, h, t) {
		return false
	}
	e := s.idx.find(h, key)
	if e == nil || e.item.Version != version {
		return false
	}
	e.setEpoch(t.epoch)
	return true
}

// Unverified calls fn with the key and Version of every unverified entry
// until fn returns false, for batch revalidation. It locks one shard at a
// time to copy its keys and calls fn with no lock held; entries may change
// meanwhile, so pair each call with Reserve and Revalidate.
func (c *Cache) Unverified(fn func(key string, version uint64) bool) {
	type kv struct {
		key     string
		version uint64
	}
	var batch []kv
	for i := range c.shards {
		s := &c.shards[i]
		epoch := c.epoch.Load()
		batch = batch[:0]
		s.mu.Lock()
		s.mu.pol.each(func(e *entry) bool {
			if e.epoch() != epoch {
				batch = append(batch, kv{e.key, e.item.Version})
			}
			return true
		})
		s.mu.Unlock()
		for _, b := range batch {
			if !fn(b.key, b.version) {
				return
			}
		}
	}
}

// SetLocal inserts it for key as fresh, without Redis: for memory-only
// routes. Like every local write it invalidates outstanding tickets for key,
// so an older in-flight Fill cannot overwrite it. Errors: ErrEmptyKey,
// ErrTooLarge (any older entry is removed), ErrClosed. An item already past
// its HardExpiry removes the entry and returns nil.
func (c *Cache) SetLocal(key string, it Item) error {
	if key == "" {
		return ErrEmptyKey
	}
	_, _, err := c.writeLocal(key, &it, 0, nil)
	return err
}

// Write applies a local write of key that the caller has made, or is about
// to make, in the tiers behind memory: it stores it as fresh (it == nil
// removes the entry), with deadline limit (Unix ns, 0 = none).
//
// after, if not nil, is the ticket the caller took before sending the write
// to Redis: if it is no longer valid, another write's invalidation was
// applied in between (that write may be newer), so the entry is removed
// instead and valid is false. With after == nil the write is
// unconditional (keys that exist only locally) and valid is true.
//
// Either way the write refuses every ticket taken before it, and Write
// returns next, the ticket of the write itself: the caller guards its
// follow-up work for this write (a queued disk write, a trust record) with
// next, so that any later invalidation or write of key makes that work a
// no-op. An invalidation that races with the write (its removal comes
// after the write's insert) refuses next too. Errors: ErrEmptyKey, ErrClosed,
// ErrTooLarge (the entry is removed; next is still valid).
func (c *Cache) Write(key string, it *Item, limit int64, after *Ticket) (next Ticket, valid bool, err error) {
	if key == "" {
		return Ticket{}, false, ErrEmptyKey
	}
	return c.writeLocal(key, it, limit, after)
}

// writeLocal is Write without the key check.
func (c *Cache) writeLocal(key string, it *Item, limit int64, t *Ticket) (next Ticket, valid bool, err error) {
	h := c.hash(key)
	now := c.now()
	var e *entry
	if it != nil {
		e = c.newEntry(key, *it, now, limit)
	}
	s := c.shardOf(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.closed.Load() {
		return Ticket{}, false, ErrClosed
	}
	// next is built from the counters as this write found them, not as
	// they are after its own bump: an invalidation bumps the generation
	// before it takes the shard lock to remove the entry, so a bump that
	// lands between this check and this write's own is one whose removal
	// comes after the insert below. A next read after both bumps would be
	// valid after that removal, and the caller's follow-up work (a trusted
	// disk copy) would outlive the invalidation: a reader would then find
	// the copy trusted and cache it again, stale for good. Built from the
	// counters found, next is refused once anything else moved them.
	found := c.ticketOf(s, h)
	valid = t == nil || !c.isDown() && (c.testNoGuard || *t == found)
	next = found
	next.gen++
	epoch := found.epoch
	if t != nil {
		epoch = t.epoch
	}
	if hook := c.testInWrite; hook != nil {
		hook(key)
	}
	// Every local write refuses the tickets taken before it: a reader that
	// sent its GET before this write must not overwrite it with the old
	// value.
	s.gens[slotOf(h)].Add(1)
	switch {
	case e != nil && e.size() > c.cfg.shareBytes:
		s.mu.tooLarge++
		c.removeKeyLocked(s, h, key)
		return next, valid, fmt.Errorf("tracking: cache %q locally: %d bytes > %d: %w", key, e.size(), c.cfg.shareBytes, ErrTooLarge)
	case e == nil || !valid:
		if !valid {
			s.mu.refused++
		}
		c.removeKeyLocked(s, h, key)
	default:
		e.setEpoch(epoch)
		c.insertLocked(s, h, e)
	}
	return next, valid, nil
}

// isDown reports whether tracking is down: a null invalidation came since
// the last re-arm began.
func (c *Cache) isDown() bool { return c.drops.Load() != c.armed.Load() }

// Valid reports whether t is still valid: nothing invalidated or wrote its
// key (or another key sharing its generation slot), its shard, or the whole
// cache (an epoch bump) since it was taken, and the tracking connection is
// not down (see Fill). It does not lock. A caller that acts on a true
// answer must make sure an invalidation racing with that action is seen
// afterwards (see tiered's disk tier for how).
func (c *Cache) Valid(t Ticket) bool {
	if c.testNoGuard {
		return true
	}
	s := c.shardOf(t.hash)
	return t.epoch != 0 && !c.isDown() && t.epoch == c.epoch.Load() && t.sgen == s.sgen.Load() &&
		t.gen == s.gens[slotOf(t.hash)].Load()
}
