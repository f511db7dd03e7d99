package tiered

import (
	"context"

	"github.com/redis/rueidis"
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
			out[i].Value, out[i].OK, out[i].Err = c.Get(ctx, key)
			continue
		}
		if r.Tiers&Memory != 0 {
			if _, _, ok := c.mem.Peek(key); ok {
				// Unverified or stale in memory: Get applies the policy.
				out[i].Value, out[i].OK, out[i].Err = c.Get(ctx, key)
				continue
			}
		}
		rest = append(rest, remote{i: i, r: r, t: c.mem.Reserve(key)})
	}
	if len(rest) == 0 {
		return out
	}
	cl, err := c.redis.client()
	if err != nil {
		for _, x := range rest {
			out[x.i].Err = opErr("get", keys[x.i], err)
			x.r.stats.misses.Add(1)
		}
		return out
	}
	cmds := make(rueidis.Commands, 0, 2*len(rest))
	for _, x := range rest {
		cmds = append(cmds, cl.B().Get().Key(keys[x.i]).Build(), cl.B().Pttl().Key(keys[x.i]).Build())
	}
	sent := c.now()
	res := cl.DoMulti(ctx, cmds...)
	for j, x := range rest {
		key := keys[x.i]
		raw, pttl, ok, err := getReply(res[2*j], res[2*j+1])
		if err != nil {
			err = redisError("", err)
		} else if ok {
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
