// Package tracking is the in-process memory tier, kept consistent with Redis
// by RESP3 client-side tracking in broadcast (BCAST) mode.
//
// # What it owns
//
// A Cache is a set of independently locked shards bounded in bytes across
// all of them: every entry is charged len(key) + cap(Value) +
// EntryOverhead, each shard holds at most MaxBytes/Shards (MaxEntryBytes),
// overwrites are re-charged, and an entry larger than a shard's share is
// refused with ErrTooLarge. A key is hashed once; the hash picks the shard
// and the slot in the shard's index, an open-addressing table of entry
// pointers that lookups read without a lock. Writes, fills, invalidations
// and evictions take the shard's lock.
//
// The eviction policy (see Policy) is by default S3-FIFO with a TinyLFU
// sketch: a small FIFO window, a CLOCK main queue, a Bloom-filter ghost of
// keys dropped from the window, and a count-min sketch with a doorkeeper
// that keeps keys the window would drop when they are clearly more
// frequent than main's oldest entry. Under it a hit takes no lock and
// writes no shared cache line: it raises the entry's saturating 2-bit
// access count (only while below 3) and adds one to a hit counter striped
// by goroutine; the policy reads the counts under the lock when entries
// reach the end of their queue. PolicyLRU (exact LRU) and PolicyTwoQueue
// lock the shard on every hit to reorder it. Get is local, does no I/O and
// no allocation, and reads a coarse clock.
//
// The default was chosen by hit ratio, memory tier with demand fill (a
// miss inserts), cache sized to N entries of equal size, default Shards,
// against golang-lru's LRU and ARC and otter v2 (W-TinyLFU) at the same N
// (P3 is the ARC paper's trace, web07 a cache2k trace; zipfian θ=0.99 and
// YCSB B over 100,000 keys, 1,000,000 operations):
//
//	workload   N        LRU    ARC    otter  s3fifo
//	P3         4,096    1.32   2.37   2.29   2.84
//	P3         16,384   2.07   8.78   8.50   9.75
//	P3         32,768   3.57  16.90  15.42  17.94
//	P3         131,072 44.79  50.17  44.07  50.37
//	web07      1,000   50.41  53.15  52.64  53.93
//	web07      2,000   55.50  57.85  56.31  58.13
//	web07      5,000   62.67  64.31  62.35  64.42
//	zipfian    1,000   49.99  58.85  58.72  59.47
//	zipfian    10,000  72.86  76.94  76.19  77.50
//	YCSB B     1,000   50.01  58.86  58.60  59.47
//	YCSB B     10,000  72.86  76.94  75.88  77.51
//
// PolicyLRU reproduces the LRU column exactly with one shard (3.57 % on P3
// at 32,768 entries, the ARC paper's figure).
//
// Hits that never block would starve the goroutine that reads the
// tracking connection when readers keep every core busy: the Go runtime
// polls the network from an idle processor, or every 10 ms from its
// monitor thread, and runs the woken goroutine when a running one yields
// or is preempted (every 10 ms). So a lock-free hit yields its processor
// once every Options.HitYield hits (1,024 by default) while the coarse
// clock shows that no processor is free (its ticks fall two milliseconds
// behind), which keeps invalidations from waiting for preemption; see
// "What it does not promise" for what is left.
//
// With Options.Redis set, New opens a rueidis client whose every connection
// runs CLIENT TRACKING ON BCAST PREFIX … for the minimal non-overlapping cover
// of Options.Prefixes (CoverPrefixes), checks Redis >= MinRedisVersion, and
// feeds rueidis's OnInvalidations into the cache. Client returns that client
// for data commands. A caller may read Redis on a client of its own instead
// (tiered's Options.RedisClient): the fill guard below holds for any
// connection, and while the tracking connection is down nothing read from
// Redis is trusted (see Fill).
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
// Revalidate promotes it. Outstanding tickets are refused, and until tracking
// is armed again no verified fill, revalidation or guarded write is accepted
// (no invalidation could follow it). The connection is re-established (and
// tracking re-armed) in the background. In Redis Cluster
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
// Invalidation delivery waits for the Go scheduler like any network read:
// with every core busy it is bounded by the runtime's network polling
// (every 10 ms at worst from the monitor thread) plus two ticks of the
// coarse clock (2 ms) and HitYield hits; with
// HitYield negative and readers that never block, by that polling plus
// the 10 ms preemption slice (BenchmarkInvalidationLagSaturated measures
// both against rueidis's own client-side cache in the same run).
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
