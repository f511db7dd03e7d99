// Package tiered is thermos's public cache. It routes each key, by its
// longest matching prefix, to the tiers its route names — memory (package
// tracking), disk (package store), Redis — and to the caller's loader
// behind the herd (package herd). A key no route matches is kept in memory
// by a default route, unless Options.RequireRoute refuses it (ErrNoRoute),
// so that a mistyped prefix is noticed.
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
// process cache its own write). Typed fronts the same calls with a Codec
// and a TypedLoader. WithSources records which tier answered each read.
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
// write that Redis applied in between wins. With Options.RedisClient the
// data commands go over the caller's client while invalidations still
// arrive on the cache's own tracking connection: the promise below holds,
// and the cache's own writes come back to it as invalidations (see the
// field for the cost).
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
// # Outages
//
// Faults degrade, they do not fail: reads of what the local tiers hold go
// on by policy, loads fall back to this process, every call returns by its
// context's deadline, and the cache heals by itself. Every error matches a
// sentinel of this package (errors.Is) and wraps its cause. For a route
// with Redis (R below: a key only Redis holds; L: a key a local tier
// holds; C: a key no tier holds):
//
//   - Redis unreachable (killed, connection refused, down at Open): the
//     connection's loss makes every local copy unverified. Get of L: by
//     Options.Unverified — ServeStale serves it (StaleServes), Revalidate
//     returns ErrUnavailable. Get of R: ErrUnavailable. GetOrLoad: the
//     lease cannot be taken, so the loader runs in this process's
//     single-flight (DegradedLoads; at most one load per key across the
//     fleet does not hold meanwhile) and its value is kept locally; if the
//     loader fails, a local copy is served while it is within MaxStale,
//     else ErrLoad. Set, Delete, InvalidatePrefix: ErrUnavailable (local
//     copies are removed first, so nothing older is left behind). The
//     cache reconnects in the background and revalidates what it holds.
//   - Redis frozen (SIGSTOP, a silent partition): until the connection is
//     declared dead (StalenessBound), memory serves what it holds as
//     fresh; calls that need Redis return at their deadline with
//     ErrUnavailable (wrapping context.DeadlineExceeded) — GetOrLoad of C
//     with the bare context error, since the lease may still be held.
//     Then as unreachable.
//   - Redis restarted empty: every copy is revalidated and dropped; reads
//     miss, GetOrLoad loads. Restarted with its data: copies are
//     revalidated and kept, with no load.
//   - Redis refusing writes (OOM under noeviction, a read-only replica):
//     reads are served as usual. GetOrLoad of C: the lease is a write, so
//     the loader runs locally (DegradedLoads) and its value is returned
//     but not kept (Redis may hold another). Set: ErrRefused wrapping
//     Redis's reply; Delete and InvalidatePrefix: ErrRefused on a
//     read-only replica, success under OOM (deletes are allowed).
//   - An ACL refusal on a data key: ErrRefused for that call; on the lock
//     keys, GetOrLoad loads locally as above.
//   - The origin slow or failing: GetOrLoad waits for the shared load up to
//     its deadline (the load goes on for the others, bounded by
//     LoadTimeout); a failing load serves a stale value within MaxStale,
//     else returns ErrLoad wrapping the loader's error; a panic,
//     ErrLoaderPanic.
//
// TestOutageContract checks each line of this list.
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
