package tiered

import (
	"context"
	"time"

	"github.com/thermoscache/thermos/tracking"
)

// found is what a read found in the tiers.
type found struct {
	e     entry
	src   Source
	hit   bool // a fresh (or, by policy, unverified) value: served
	stale bool // e is a stale candidate: past its soft expiry but alive,
	// or (unverified) a copy Redis could not vouch for
	unverified bool
}

// read is the slow path of every read but Get on a Disk-only route (getDisk,
// which does the same for that route's one tier): it takes the key's ticket, looks in
// tiers (a route's tiers, fastest first), and fills the faster tiers from
// the first that holds a fresh value, under that ticket. A hit is counted
// here; a miss is counted by the caller, which may go on to load.
//
// The ticket guards the fills of faster tiers and a copy Redis vouches for:
// a read of a route's one tier without Redis (a Disk-only route) has
// neither, so it takes none (its zero ticket would be refused anyway). Each
// tier's answer is checked against one clock reading taken after it.
func (c *Cache) read(ctx context.Context, r *route, key string, tiers []tier) (found, error) {
	var t tracking.Ticket
	if len(tiers) > 1 || r.Tiers&Redis != 0 {
		t = c.mem.Reserve(key)
	}
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
		if !ok {
			continue
		}
		now := c.now()
		if !alive(&e.it, now) {
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
			now = c.now() // after Redis's round trip
		}
		if !fresh(&e.it, now) {
			if !stale.stale {
				stale = found{e: e, src: tr.source(), stale: true}
			}
			continue
		}
		if i > 0 {
			c.fill(r, key, &e, t, tiers[:i])
		}
		c.countHit(r, tr.source())
		return found{e: e, src: tr.source(), hit: true}, nil
	}
	return stale, nil
}

// getDisk is Get on a Disk-only route: read's walk for a route of one tier
// without Redis, which takes no ticket, fills nothing and has nothing to
// vouch for, with the entry decoded in place on this stack instead of
// passed back through the tier interface and read's result (a hit copies
// no entry). A disk that cannot answer steps aside: a miss, as in read.
// ctl is ctx's controls, which Get has already looked up.
func (c *Cache) getDisk(ctx context.Context, ctl *ctl, r *route, key string) ([]byte, bool, error) {
	var e entry
	_, ok, err := c.disk.load(ctx, r, key, &e)
	if err != nil {
		c.o.Logger.Warn("tiered: tier read failed", "tier", SourceDisk, "key", key, "err", err)
	}
	if err != nil || !ok || !servable(&e.it, c.now()) {
		r.stats.misses.Add(1)
		return nil, false, nil
	}
	c.countHit(r, SourceDisk)
	ctl.note(key, SourceDisk)
	v, ok := value(&e.it)
	return v, ok, nil
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
	if !tr.confirm(r, key, *e, t) {
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
		if c.testHook != nil {
			c.hook("fill:"+tr.source().String(), key)
		}
		tr.fill(r, key, *e, t)
	}
	c.hook("filled", key)
}

// forgetLocal removes key from memory and disk, refusing every ticket
// taken for it before: an invalidation of our own, which the disk tier
// hears like any other.
func (c *Cache) forgetLocal(key string) { c.mem.Invalidate(key) }
