package tiered

import (
	"errors"
	"hash/maphash"
	"sync"
	"time"
)

// A write version is the time of the write, in seconds since versionEpoch,
// in its high 32 bits, and 32 random bits below. The time makes versions
// comparable for the rollback check; the random bits keep two writes of
// one key in the same second apart for revalidation, which compares
// versions only (they collide with probability 2^-32, where fully random
// versions collided with 2^-64 whenever they were written; versions of
// different seconds never collide).
//
// versionEpoch is 2025-01-01 UTC; 32 bits of seconds last until 2161. A
// clock before the epoch writes time 0, which the check never refuses.
const versionEpoch = 1735689600

// writeVersion returns a new write version at the cache's clock.
func (c *Cache) writeVersion() uint64 {
	secs := max(c.now()/int64(time.Second)-versionEpoch, 0)
	return uint64(secs)<<32 | c.uint64()&(1<<32-1)
}

// versionTime returns the seconds a version carries.
func versionTime(v uint64) uint32 { return uint32(v >> 32) }

// rollbackSlack is how much older than the newest version this process
// has seen for a key a signed value may be and still be accepted: writes
// of one key by processes whose clocks disagree, or that race, may reach
// Redis out of time order, and Redis keeps the last to arrive. A value
// older than that is a replay — an old signed value written back — and
// is refused like a value that fails verification. Clocks kept by NTP
// disagree by far less.
const rollbackSlack = time.Minute

// errRollback is what a disk read returns for a replayed entry.
var errRollback = errors.New("tiered: signed value older than one already seen for its key (replayed)")

// rollbackSlots is how many keys the rollback guard remembers: 64 shards of
// 1024 slots, 16 bytes each, 1 MiB per Cache with Signing. A key whose slot
// another key took is no longer protected.
const (
	rollbackShards = 64
	rollbackSlotsN = 1024
)

// rollbackGuard remembers, per key, the newest write time seen on a signed
// route in this process's lifetime: its own writes and every value it
// accepted from Redis or disk. It is consulted only when a value comes
// from Redis or disk, never on a memory hit.
//
// A direct-mapped table: each key hashes to one slot, which keeps the last
// key that hashed there. Bounded, lossy, and without allocation once made.
type rollbackGuard struct {
	seed   maphash.Seed
	shards [rollbackShards]struct {
		sync.Mutex
		slots [rollbackSlotsN]rollbackSlot
	}
}

type rollbackSlot struct {
	hash uint64 // 0: empty
	secs uint32
}

// guard returns the rollback guard, made on first use.
func (c *Cache) guard() *rollbackGuard {
	if g := c.rollback.Load(); g != nil {
		return g
	}
	g := &rollbackGuard{seed: maphash.MakeSeed()}
	if c.rollback.CompareAndSwap(nil, g) {
		return g
	}
	return c.rollback.Load()
}

func (g *rollbackGuard) slot(key string) (uint64, *sync.Mutex, *rollbackSlot) {
	h := maphash.String(g.seed, key) | 1 // never 0, which marks an empty slot
	sh := &g.shards[h%rollbackShards]
	return h, &sh.Mutex, &sh.slots[(h/rollbackShards)%rollbackSlotsN]
}

// see records that key's value with version v was written or accepted.
func (g *rollbackGuard) see(key string, v uint64) {
	h, mu, s := g.slot(key)
	t := versionTime(v)
	mu.Lock()
	if s.hash != h {
		*s = rollbackSlot{hash: h, secs: t}
	} else if t > s.secs {
		s.secs = t
	}
	mu.Unlock()
}

// accept reports whether a signed value of key with version v may be
// served — it is not older than rollbackSlack before the newest seen — and
// records it if so.
func (g *rollbackGuard) accept(key string, v uint64) bool {
	h, mu, s := g.slot(key)
	t := versionTime(v)
	mu.Lock()
	defer mu.Unlock()
	if s.hash == h && int64(t)+int64(rollbackSlack/time.Second) < int64(s.secs) {
		return false
	}
	if s.hash != h {
		*s = rollbackSlot{hash: h, secs: t}
	} else if t > s.secs {
		s.secs = t
	}
	return true
}

// rollbackAccept applies the guard to a verified value on a signed route;
// other routes pass.
func (c *Cache) rollbackAccept(r *route, key string, v uint64) bool {
	if c.o.Signing == nil || r.Raw {
		return true
	}
	return c.guard().accept(key, v)
}

// rollbackSee records this process's own write on a signed route.
func (c *Cache) rollbackSee(r *route, key string, v uint64) {
	if c.o.Signing != nil && !r.Raw {
		c.guard().see(key, v)
	}
}
