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
// # Disk faults
//
// A disk that fails under the disk tier (full, failing, read-only: an
// error wrapping store.ErrDiskFault) never takes a route down. The tier
// steps aside: reads skip it (its answer is a miss, and the read goes on
// to the next tier), fills skip it, Err and Stats.DiskErr report the fault
// (an error wrapping ErrDisk and the cause, such as syscall.ENOSPC), Flush
// and Close return it, and Stats counts DiskFaults, DiskRecoveries and
// DiskWritesSkipped. A prober retries (100ms after the fault, doubling to
// 5s) and puts the tier back by itself once the disk works. Open on a
// failing disk opens with the tier off, unless Options.DiskRequired.
//
// While the tier is off, a Memory|Disk route works as a memory-only one,
// except that what the disk is the record of is not acknowledged without
// it. A Delete returns ErrDisk: the key is gone from memory, and its disk
// copy is deleted when the tier comes back. A Set with SyncWrites returns
// ErrDisk, and its value is taken out of memory as well, so that it is not
// served: the key reads as missing until it is written again (the Set may
// or may not have reached the disk, and whatever the disk holds for the
// key is deleted when the tier comes back). A Set without SyncWrites
// succeeds in memory only: it is lost if memory evicts it or the process
// restarts before the tier is back. InvalidatePrefix returns ErrDisk like
// a Delete. When the disk works, a Delete on a route without Redis returns
// nil only once its tombstone is durable (an fsync shared with concurrent
// writers), with or without SyncWrites, so an acknowledged Delete is never
// undone, by a fault or a crash.
//
// No older value comes back. The keys of acknowledged writes the disk did
// not take (while off, in a failed batch, or committed but not yet synced
// when the fault came) are remembered, and their disk copies deleted,
// durably, before the tier serves or takes writes again; past 65,536 keys
// or 64 prefixes, everything the disk held is deleted instead. One window
// remains: a process that restarts while the disk still fails cannot
// delete them, so after such a restart a key written (without SyncWrites)
// during the fault may read as its disk copy from before it. A Delete that
// returned nil is never undone.
//
// On a route with Redis the disk holds copies that Redis vouches for, so a
// disk fault fails no write: Set and Delete succeed once Redis has them,
// with or without SyncWrites, and a copy the disk may hold wrongly is
// never served without asking Redis (except by the ServeStale policy
// while Redis is unreachable, like any unverified copy).
//
// # What it does not promise
//
// Between a write in Redis and the invalidation's arrival (the
// invalidation delay) another instance may serve the old value. A frozen
// Redis is noticed only after the tracking client's timeouts (see
// tracking.Options.ConnWriteTimeout). Memory-only and disk-only routes are
// local to the process.
package tiered
