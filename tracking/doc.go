// Package tracking is the in-process memory tier, kept consistent with Redis
// by RESP3 client-side tracking in broadcast (BCAST) mode.
//
// # What it owns
//
// A Cache is a sharded set of golang-lru/v2 lists (LRU, or 2Q rebuilt on
// simplelru with byte-sized queues; see Policy) bounded in bytes across all
// shards: every entry is charged len(key) + cap(Value) + EntryOverhead, each
// shard holds at most MaxBytes/Shards (MaxEntryBytes), overwrites are
// re-charged, and an entry larger than a shard's share is refused with
// ErrTooLarge. Under the LRU policy a hit takes no lock at all: each shard
// mirrors its list in a concurrent map (github.com/puzpuzpuz/xsync) that
// hits read, a hit marks its entry used instead of moving it (eviction gives
// a used entry a second chance, a CLOCK-style approximation of LRU), and hits
// are counted on striped counters; so readers on different cores write no
// shared cache line and hits scale with cores. Writes, fills, invalidations
// and evictions take the shard's lock. Under 2Q hits lock the shard (they
// move entries between queues). Get is local, does no I/O and no
// allocation, and reads a coarse clock.
//
// With Options.Redis set, New opens a rueidis client whose every connection
// runs CLIENT TRACKING ON BCAST PREFIX … for the minimal non-overlapping cover
// of Options.Prefixes (CoverPrefixes), checks Redis >= MinRedisVersion, and
// feeds rueidis's OnInvalidations into the cache. Client returns that client
// for data commands.
//
// # How data moves
//
//	Get(key)                      memory only
//	Fetch(ctx, key)               memory, else Reserve → GET → Decode → Fill
//	Reserve(key) … Fill(t, …)     guarded fill from any slower tier (disk, Redis)
//	Reserve(key) … Revalidate(t…) promote an unverified entry whose Version matches
//	Set(ctx, …) / Delete(ctx, …)  Redis first, then memory (read-your-own-writes)
//	SetLocal(key, it)             memory-only routes, no Redis
//	Invalidate / InvalidatePrefix local removal
//	OnInvalidate(fn)              hear key invalidations and epoch bumps
//
// # Guarantees
//
// A Cache is safe for concurrent use.
//
// Invalidation: an invalidation for key removes its entry and refuses every
// ticket taken for key before it, so a reply read before a write is never
// inserted after the write's invalidation (the race is narrated on Fill).
// Tickets are per-key generations kept in a fixed table per shard indexed by
// key hash — no shared sentinel and nothing to release; keys that share a slot
// can only make a fill refuse needlessly.
//
// Epochs: a null invalidation — FLUSHALL/FLUSHDB, or rueidis reporting that a
// tracking connection closed — bumps the epoch. Every entry verified in an
// older epoch is unverified: dropped at once by default, or, with
// Options.KeepUnverified, kept and returned by Get with fresh == false until
// Revalidate promotes it. Outstanding tickets are refused. The connection is
// re-established (and tracking re-armed) in the background. In Redis Cluster
// (rueidis detects it from the addresses) each node's connection is tracked
// on its own and armed on every primary; a drop of any node's connection, or
// a change of the slot → primary map seen by the periodic CLUSTER SLOTS check
// (Options.TopologyInterval: failover, slot moved), bumps the one global
// epoch.
//
// Read-your-own-writes: after Set or Delete returns, this Cache never returns
// the key's previous value.
//
// Expiry: an entry lives at most Options.MaxTTL locally, and never past its
// Item.HardExpiry or its Set ttl.
//
// # What it does not promise
//
// Staleness is bounded by the invalidation delay while the connection is up,
// and, when the server freezes silently, by StalenessBound (2*Dialer.KeepAlive
// + ConnWriteTimeout): until the connection is declared dead entries are
// served as fresh. The frozen server cannot acknowledge a write meanwhile.
//
// Keys outside the tracked prefixes are never cached from Redis. Writes of
// tracked keys through Client() are invalidated like any other write, except
// with Options.NoLoop (see there). Soft expiry and early refresh are the
// caller's business; the cache returns SoftExpiry untouched.
//
// Newer servers deliver a BCAST invalidation only to users allowed to read
// the key, so New refuses (ErrACL, naming the prefix) a Redis user that may
// not GET keys under a tracked prefix, asking with ACL DRYRUN or, when the
// user may not run ACL commands, with a GET of the probe keys. Key
// permissions are glob patterns and the check asks about a few sample keys
// per prefix: a pattern that admits those samples but not every key under
// the prefix is not caught.
package tracking
