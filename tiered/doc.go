// Package tiered is thermos's public cache. It routes each key, by its
// longest matching prefix, to the tiers its route names — memory (package
// tracking), disk (package store), Redis — and to the caller's loader
// behind the herd (package herd).
//
// # Reads
//
// Get and GetOrLoad look in memory, then disk, then Redis, and fill the
// faster tiers on the way back. A memory hit takes no global lock and
// allocates nothing. Every fill from a slower tier is guarded by a ticket
// taken before the read, so an invalidation that arrives while the read is
// in flight always wins. GetOrLoad calls the loader when every tier missed,
// once per key at a time across the process and, for routes with Redis,
// across every process sharing the Redis (a lease lock with fenced writes);
// the loaded value is written to Redis and the local tiers.
//
// # Ageing
//
// A value is fresh for its route's TTL (its soft expiry). XFetch refreshes
// a hot value early, in the background, in one caller, while the others
// keep the still-fresh value. After TTL, and for up to MaxStale more (its
// hard expiry, which is also its Redis PEXPIRE), GetOrLoad serves the old
// value while one caller refreshes it (stale-while-revalidate) and when the
// loader fails (stale-on-error); Get treats it as a miss. A loader's
// ErrNotFound is remembered for NegativeTTL.
//
// # Consistency
//
// Memory is kept consistent with Redis by CLIENT TRACKING BCAST on the
// minimal cover of the prefixes of routes that combine a local tier with
// Redis. An invalidation removes the key from memory and disk. When the
// tracking connection drops (or Redis is flushed), every entry becomes
// unverified: it is revalidated against Redis in the background by a
// script that compares each entry's write version server-side in batches,
// never shipping values back. While an entry is unverified, Options.Unverified
// decides: Revalidate (one small round trip before serving) or ServeStale.
//
// # Disk and restarts
//
// Disk writes are write-behind, batched every Options.WriteBehind (50ms by
// default) off the caller's path; a read consults the pending writes
// first, and Close flushes them. On Open, entries found on disk are loaded
// into memory as unverified after the tracking subscription is open, then
// revalidated, so a restarted process is warm and never serves a value
// changed while it was down. A disk hit for a Redis-backed key is served
// only if this process wrote or revalidated it since the last epoch bump
// and no invalidation arrived since (an 8-byte hash per key is kept for
// that); otherwise it is revalidated first.
//
// # What it does not promise
//
// Between a write in Redis and the invalidation's arrival (the
// invalidation delay) another instance may serve the old value. A frozen
// Redis is noticed only after the tracking client's timeouts (see
// tracking.Options.ConnWriteTimeout). Memory-only and disk-only routes are
// local to the process.
package tiered
