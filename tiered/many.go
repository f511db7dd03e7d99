package tiered

import (
	"context"

	"github.com/thermoscache/thermos/tracking"
)

// Result is one key's answer in GetMany.
type Result struct {
	Value []byte // shared: do not modify
	OK    bool
	Err   error
}

// GetMany reads keys like Get, answering what memory holds at once and
// sending the keys of Memory|Redis and Redis routes to Redis in one
// pipelined round trip (keys of routes with a disk tier are read one by
// one, as Get does). The results are in the order of keys.
func (c *Cache) GetMany(ctx context.Context, keys []string) []Result {
	out := make([]Result, len(keys))
	type remote struct {
		i int
		r *route
		t tracking.Ticket
	}
	var rest []remote
	for i, key := range keys {
		if err := c.checkKey(key); err != nil {
			out[i].Err = opErr("get", key, err)
			continue
		}
		if bypassOf(ctx)&BypassReads != 0 {
			continue
		}
		if it, ok := c.lookup(key); ok {
			note(ctx, key, SourceMemory)
			out[i].Value, out[i].OK = value(it)
			continue
		}
		r := c.router.find(key)
		if r.Tiers&Redis == 0 || r.Tiers&Disk != 0 || r.Tiers&Memory != 0 && c.mem.Client() == nil {
			out[i].Value, out[i].OK, out[i].Err = c.get(ctx, key, true)
			continue
		}
		if r.Tiers&Memory != 0 {
			if _, _, ok := c.mem.Peek(key); ok {
				// Unverified or stale in memory: Get applies the policy.
				out[i].Value, out[i].OK, out[i].Err = c.get(ctx, key, true)
				continue
			}
		}
		rest = append(rest, remote{i: i, r: r, t: c.mem.Reserve(key)})
	}
	if len(rest) == 0 {
		return out
	}
	names := make([]string, len(rest))
	for j, x := range rest {
		names[j] = keys[x.i]
	}
	sent := c.now()
	replies, err := c.redis.getMany(ctx, names)
	if err != nil {
		for _, x := range rest {
			out[x.i].Err = opErr("get", keys[x.i], err)
			x.r.stats.misses.Add(1)
		}
		return out
	}
	for j, x := range rest {
		key := keys[x.i]
		raw, pttl, ok, err := replies[j].raw, replies[j].pttl, replies[j].ok, replies[j].err
		if err == nil && ok {
			var e entry
			e, ok, err = c.decodeRemote(x.r, key, raw, pttl, sent)
			if err == nil && ok && fresh(&e.it, c.now()) {
				x.r.stats.redisHits.Add(1)
				note(ctx, key, SourceRedis)
				c.fillLocal(x.r, key, &e, x.t)
				out[x.i].Value, out[x.i].OK = value(&e.it)
				continue
			}

		}
		x.r.stats.misses.Add(1)
		out[x.i].Err = opErr("get", key, err)
	}
	return out
}
