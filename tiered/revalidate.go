package tiered

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unsafe"

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
	// The first pass after a warm start that loaded every disk entry of
	// the Redis routes into memory (warm): see below.
	wm := c.warmMark
	c.warmMark = nil
	p := pass{c: c, ctx: ctx, cancel: cancel}
	if wm != nil {
		p.mark = wm.mark
	}
	defer p.wait()
	batch := p.next()
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := p.send(batch)
		batch = p.next()
		return err
	}
	// drained sends the last batch and settles every answer.
	drained := func(err error) error {
		if err == nil {
			err = flush()
		}
		if err == nil {
			err = p.drain()
		}
		return err
	}
	if c.disk != nil {
		// Sized for every memory entry, as the records the pass adds
		// are, from the disk scan or vouched for by the memory walk (the
		// map would otherwise grow, rehashing, record by record).
		c.disk.trust.reserve(c.mem.Stats().Entries)
	}
	diskCopies := func() error {
		return drained(c.disk.scanView(ctx, "", func(kb, b []byte, expiry int64) error {
			// A view of the iterator's bytes, for the calls below, which
			// keep nothing; what is kept is copied (p.intern, Clone).
			key := unsafe.String(unsafe.SliceData(kb), len(kb))
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
				c.disk.drop(strings.Clone(key))
				return nil
			}
			// settle needs the header's fields, not the bytes.
			e.it.Value, e.disk = nil, nil
			batch = append(batch, check{key: p.intern(kb), version: e.it.Version, r: r, t: t, e: e, tr: c.disk, h: h})
			if len(batch) >= DefaultRevalidateSize {
				return flush()
			}
			return nil
		}))
	}
	memoryCopies := func() error {
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
		return drained(err)
	}
	var err error
	switch {
	case c.disk == nil:
		err = memoryCopies()
	case wm == nil:
		// The disk copies first: a disk copy Redis still holds confirms
		// the memory copy of the same version with it (settle), so the
		// memory walk after it checks only what the disk did not hold.
		if err = diskCopies(); err == nil {
			err = memoryCopies()
		}
	default:
		// After a warm start, memory holds what the disk does: the memory
		// walk checks each key once and vouches for its disk copy too
		// where the mark shows the key left alone since it was loaded
		// (settle). If it vouched for every copy warm loaded, the disk
		// holds nothing else to check (a disk entry written since is
		// trusted by its write); else the disk scan checks what is still
		// untrusted.
		if err = memoryCopies(); err == nil && p.vouched < wm.loaded {
			err = diskCopies()
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

// revalidateDepth is how many batches a pass has in flight at once: Redis
// answers one while the pass gathers and settles the others.
const revalidateDepth = 3

// pass sends a revalidation pass's batches, up to revalidateDepth at once,
// and settles their answers in the order they were sent, on the pass's
// goroutine. Every check's ticket is taken before its batch is sent, so
// settling later only widens the window the ticket already guards.
type pass struct {
	c        *Cache
	ctx      context.Context
	cancel   context.CancelFunc
	refused  int
	inflight []sent
	free     [][]check
	keys     []byte // intern's current block
	// mark, in the first pass after a complete warm start, is the memory
	// tier's generations from before it; vouched counts the disk copies
	// confirmed through it.
	mark    *tracking.Mark
	vouched int
}

// sent is a batch sent to Redis; err receives its outcome.
type sent struct {
	batch []check
	err   chan error
}

// intern returns a copy of k as a string, in a block of the pass's own,
// so that the keys of a disk scan's checks cost no allocation each. A
// block is never written again once a string points into it: a key kept
// by a command still being written, or by a queue, stays what it was.
func (p *pass) intern(k []byte) string {
	if cap(p.keys)-len(p.keys) < len(k) {
		p.keys = make([]byte, 0, max(internBlock, len(k)))
	}
	n := len(p.keys)
	p.keys = append(p.keys, k...)
	return unsafe.String(unsafe.SliceData(p.keys[n:]), len(k))
}

// internBlock is the size of the blocks intern copies keys to.
const internBlock = 16 << 10

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
	p.settle(s.batch)
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

// settle applies the answers to one batch of checks. It counts in
// p.refused those that matched but could not be confirmed (their ticket
// was overtaken).
func (p *pass) settle(batch []check) {
	c := p.c
	now := c.now()
	for i := range batch {
		ch := &batch[i]
		if ch.tr == tier(c.memory) {
			it, _, ok := c.mem.Peek(ch.key)
			if !ok {
				continue // gone meanwhile
			}
			if it.Version != ch.version {
				// Replaced since its version was read for the check (the
				// ticket is taken after that read): Redis's answer is not
				// about this entry.
				p.refused++
				continue
			}
			ch.e.it = *it
		}
		if !ch.match || outlives(&ch.e.it, now, ch.pttl) {
			if !c.mem.Valid(ch.t) {
				// The key was written or invalidated since the check was
				// sent: what is held now is not what was checked (this
				// process's own Set, say), and the change itself decides
				// its fate. Dropping it would lose a fresh write.
				p.refused++
				continue
			}
			c.stats.dropped.Add(1)
			ch.r.stats.dropped.Add(1)
			// A clone: the key may be queued (a disk delete), and would
			// keep the whole block intern copied it to alive.
			c.forgetLocal(strings.Clone(ch.key))
			continue
		}
		disk := ch.tr == tier(c.disk)
		var ok bool
		if disk {
			ok = c.disk.confirmHash(ch.h, ch.t) // its hash is at hand
		} else {
			ok = ch.tr.confirm(ch.r, ch.key, ch.e, ch.t)
		}
		if !ok {
			// An invalidation of this key, or of one sharing its
			// generation slot, came in meanwhile: look again.
			p.refused++
			continue
		}
		c.stats.revalidated.Add(1)
		ch.r.stats.revalidated.Add(1)
		if disk && ch.r.Tiers&Memory != 0 {
			// Redis held this version after ch.t was taken, and nothing
			// changed the key since: a memory copy of the same version
			// is the same write, confirmed with it. (Revalidate refuses
			// another version, and an entry gone meanwhile.)
			c.mem.Revalidate(ch.t, ch.key, ch.version)
		}
		if !disk && p.mark != nil && ch.r.Tiers&Disk != 0 && ch.e.it.Version == ch.version && p.mark.Unchanged(ch.t) &&
			c.disk.confirmHash(c.disk.trust.hash(ch.key), ch.t) {
			// Nothing wrote or invalidated the key from before the warm
			// start until ch.t: the memory copy is still the one warm
			// loaded from the disk, and the disk copy still that one (a
			// fill in between brought what Redis held, and trusts itself).
			// Redis held this version after ch.t: so does the disk.
			p.vouched++
		}
	}
}

// warmMark is what a complete warm start tells the first revalidation
// pass: the memory tier's generations from before it, and how many disk
// entries of Redis routes it loaded into memory.
type warmMark struct {
	mark   *tracking.Mark
	loaded int
}

// warm loads the disk tier into memory after a restart: as unverified for
// Redis-backed routes (the revalidator checks them, reads check them first)
// and as fresh for local routes. It stops when the memory budget is full.
// If it loaded every disk entry of the Redis routes, it leaves c.warmMark
// for the first pass.
func (c *Cache) warm(ctx context.Context) error {
	mark := c.mem.Mark() // before the first read of the disk
	var budget int64
	// The memory index is sized for the store's estimate before the fill,
	// and grows ahead of it, doubling, past that: each growth rebuilds
	// every shard's table, rehashing what it holds.
	filled, room := 0, c.disk.estimate()
	if room > 0 {
		c.mem.Grow(room)
	}
	complete, loaded := true, 0
	err := c.disk.scan(ctx, "", func(key string, b []byte, expiry int64) error {
		r := c.router.find(key)
		if r.Tiers&Disk == 0 {
			return nil
		}
		if c.reserved(key) {
			// Stored before keys under LockPrefix were refused: never
			// served, so not kept.
			c.disk.drop(key)
			return nil
		}
		redis := r.Tiers&Redis != 0
		if r.Tiers&Memory == 0 {
			complete = complete && !redis
			return nil
		}
		e, err := c.decodeDisk(r, key, b, expiry)
		if err != nil {
			c.stats.diskCorrupt.Add(1)
			c.o.Logger.Warn("tiered: disk entry refused at warm-up", "key", key, "err", err)
			c.disk.drop(key)
			complete = complete && !redis
			return nil
		}
		budget += int64(len(key)+len(e.it.Value)) + tracking.EntryOverhead
		if budget > c.o.MemoryBytes {
			complete = false
			return errWarmFull
		}
		if filled == room {
			room = max(2*room, 4096)
			c.mem.Grow(room - filled)
		}
		filled++
		t := c.mem.Reserve(key)
		if redis {
			if c.mem.Fill(t, key, e.it, false) {
				loaded++
			} else {
				complete = false
			}
		} else {
			c.mem.FillLocal(t, key, e.it)
		}
		c.stats.warmed.Add(1)
		return nil
	})
	if err != nil && !errors.Is(err, errWarmFull) {
		return fmt.Errorf("tiered: warm from disk: %w", err)
	}
	// A scan that met a disk fault ends early, without an error.
	if complete && err == nil && c.disk.wb.fault() == nil {
		c.warmMark = &warmMark{mark: mark, loaded: loaded}
	}
	return nil
}

var errWarmFull = errors.New("memory budget full")
