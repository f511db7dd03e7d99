// Package tiered is thermos's public cache. It routes each key, by its
// longest matching prefix, to the tiers its route names — memory (package
// tracking), disk (package store), Redis — and to the caller's loader
// behind the herd (package herd).
//
// # Reads
//
// Get and GetOrLoad look in memory, then disk, then Redis, and fill the
// faster tiers on the way back. A memory hit takes no global lock and
// allocates nothing. GetOrLoad calls the loader when every tier missed,
// once per key at a time across the process and, for routes with Redis,
// across every process sharing the Redis (a lease lock with fenced writes);
// the loaded value is written to Redis and the local tiers. On a route with
// Redis, GetOrLoad reads Redis through the herd's first step, which also
// takes the lease when the key is missing: a cold key costs three round
// trips (that step, the fenced write, and a version check that lets this
// process cache its own write).
//
// # Ageing
//
// A value is fresh for its route's TTL (its soft expiry). XFetch refreshes
// a hot value early, in the background, in one caller, while the others
// keep the still-fresh value. After TTL, and for up to MaxStale more (its
// hard expiry, which is also its Redis PEXPIRE), GetOrLoad serves the old
// value while one caller refreshes it (stale-while-revalidate) and when the
// loader fails (stale-on-error); Get treats it as a miss. A loader's
// ErrNotFound is remembered for NegativeTTL. A value read from Redis never
// outlives its key there: Redis's remaining TTL, read in the same round
// trip, caps the local expiry in memory and on disk (raw values written by
// other programs above all).
//
// # Consistency
//
// Memory is kept consistent with Redis by CLIENT TRACKING BCAST on the
// minimal cover of the prefixes of routes that combine a local tier with
// Redis. Every local copy — in memory, on disk, or queued for the disk — is
// guarded by one ticket: the memory tier's per-key generation, taken before
// the read or write it follows. An invalidation bumps it before anything
// else happens, so a fill or a queued disk write under an older ticket is
// refused in every tier, and a disk copy is trusted only while the ticket it
// was trusted under is valid. A write this process makes is applied locally
// under the ticket it took before sending it to Redis, so another client's
// write that Redis applied in between wins.
//
// The promise: once a write to a key is acknowledged by Redis, every cache
// connected to that Redis stops serving the older value within
// StalenessBound (the invalidation's delivery, and, if Redis freezes
// silently, the time to notice it) and never serves it again. When the
// tracking connection drops (or Redis is flushed), every entry becomes
// unverified: it is revalidated against Redis in the background by a
// script that compares each entry's write version server-side in batches,
// never shipping values back. While an entry is unverified,
// Options.Unverified decides: Revalidate (one small round trip before
// serving) or ServeStale.
//
// # Disk and restarts
//
// Disk writes are write-behind, batched every Options.WriteBehind (50ms by
// default) off the caller's path, applied in the order they were made; a
// read consults the pending writes first, and Close flushes them. Without
// Options.SyncWrites, a process killed (SIGKILL, a crash) loses the writes
// it acknowledged in the last write-behind interval, plus the time one
// batch takes to commit (on routes with Redis, Redis still holds them);
// with SyncWrites, every Set and Delete that returned nil is on disk
// (batched with other writers' into one synced commit). A power loss
// without SyncWrites may lose more: the operating system's own write-back.
// On Open, entries found on disk are loaded into memory as unverified after
// the tracking subscription is open, then revalidated, so a restarted
// process is warm and never serves a value changed while it was down.
//
// # What it does not promise
//
// Between a write in Redis and the invalidation's arrival (the
// invalidation delay, at most StalenessBound) another instance may serve
// the old value. A frozen Redis is noticed only after the tracking client's
// timeouts (see tracking.Options.ConnWriteTimeout). Memory-only and
// disk-only routes are local to the process. SWAPDB sends no invalidation
// and is outside the promise. On Redis Cluster with replicas, a replica
// connection rueidis keeps also delivers invalidations, a replication lag
// late: they only remove entries (never staleness), but a cache may drop
// its own fresh writes and read them again.
package tiered
