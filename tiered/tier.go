package tiered

import (
	"context"

	"github.com/thermoscache/thermos/internal/envelope"
	"github.com/thermoscache/thermos/tracking"
)

// tier is one storage level of a route: memory (over package tracking),
// disk (over package store) or Redis. Reads walk a route's tiers fastest
// first and fill the faster ones on the way back; writes go to Redis first
// (the copy every process shares), then to the local tiers, guarded by the
// ticket the memory tier's write returns (see Cache.commit).
//
// Every local fill, trust record and queued disk write presents one ticket,
// taken with tracking.Cache.Reserve before the read or write it follows: the
// memory tier's per-key generation. An invalidation or a local write of the
// key after the ticket was taken makes all of them no-ops, in every tier.
type tier interface {
	// source names the tier in stats and Sources.
	source() Source
	// get returns key's entry if the tier holds one that is not past its
	// hard expiry. verified is false for a local copy of a Redis key that
	// the tier cannot vouch for: the caller checks it against Redis, or
	// serves it by Options.Unverified.
	get(ctx context.Context, r *route, key string) (e entry, verified, ok bool, err error)
	// fill stores e, read from a slower tier or loaded, unless t was
	// overtaken; it reports whether it did. fill and confirm take the entry
	// by value: the compiler cannot see through an interface call, so a
	// pointer would move every caller's entry to the heap (a Memory|Disk
	// read that memory missed allocated its copy, ~130 bytes).
	fill(r *route, key string, e entry, t tracking.Ticket) bool
	// confirm records that Redis held e's version after t was taken, so the
	// tier's copy is verified until the next invalidation; it reports
	// whether it did (false: t was overtaken).
	confirm(r *route, key string, e entry, t tracking.Ticket) bool
}

// entry is a value as the tiers pass it between them: the decoded fields
// the memory tier keeps, and the bytes the disk tier stores.
type entry struct {
	it tracking.Item // payload and envelope fields; Tag is the route's index
	// disk is the envelope as the disk tier stores it: the bytes Redis holds
	// for enveloped routes (signature included), a local envelope around the
	// value for raw routes. Nil when the entry came from memory.
	disk []byte
	// until, if not zero, is when local copies of a value read from Redis
	// must expire (Unix ns): its key's remaining TTL there. The value read
	// is served as it is; its copies follow local().
	until int64
}

// fresh reports whether it may be served as a hit at now (Unix ns): before
// its soft expiry. This is the only freshness rule; a value past its soft
// expiry but before its hard expiry is stale (servable by GetOrLoad under
// MaxStale, never by Get), and past its hard expiry it is gone.
func fresh(it *tracking.Item, now int64) bool { return it.SoftExpiry == 0 || now < it.SoftExpiry }

// alive reports whether it may still be served at all at now: before its
// hard expiry.
func alive(it *tracking.Item, now int64) bool { return it.HardExpiry == 0 || now < it.HardExpiry }

// servable reports whether it is alive and fresh at now: a hit.
func servable(it *tracking.Item, now int64) bool { return alive(it, now) && fresh(it, now) }

// negative reports whether it is a remembered "not found".
func negative(it *tracking.Item) bool { return it.Flags&uint8(envelope.FlagNegative) != 0 }

// value is what a read returns for a hit on it: a negative entry answers
// "no such key" (nil, false).
func value(it *tracking.Item) ([]byte, bool) {
	if negative(it) {
		return nil, false
	}
	return it.Value, true
}
