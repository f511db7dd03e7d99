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
//     copies are removed first, so nothing older is left behind). A call
//     whose context has no deadline gets its error after about two seconds
//     of retries (twenty at most; refused credentials are not retried).
//     The cache reconnects in the background and revalidates what it
//     holds.
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
// invalidation delay, at most StalenessBound) another instance may serve
// the old value. A frozen Redis is noticed only after the tracking client's
// timeouts (see tracking.Options.ConnWriteTimeout). Memory-only and
// disk-only routes are local to the process. SWAPDB sends no invalidation
// and is outside the promise. On Redis Cluster with replicas, a replica
// connection rueidis keeps also delivers invalidations, a replication lag
// late: they only remove entries (never staleness), but a cache may drop
// its own fresh writes and read them again.
//
// # Redis ACL
//
// The Redis user a cache connects as needs, for the routes with the Redis
// tier (here one, "app:") and the default LockPrefix and ChannelPrefix,
// exactly these rights (a Redis command; quote it in a shell, where > and |
// mean something):
//
//	ACL SETUSER thermos on >PASSWORD resetkeys resetchannels -@all ~app:* ~herd:lock:* &herd:done:* +ping +info +client|tracking +get +set +del +pttl +getrange +pexpire +unlink +scan +evalsha +eval +publish +subscribe +unsubscribe
//
// or, without scripting:
//
//	ACL SETUSER thermos on >PASSWORD resetkeys resetchannels -@all ~app:* ~herd:lock:* &herd:done:* +ping +info +client|tracking +get +set +del +pttl +getrange +pexpire +unlink +scan +watch +unwatch +multi +exec +discard +publish +subscribe +unsubscribe
//
// Keys: one ~prefix* per Redis route (read: GET, PTTL, GETRANGE; write:
// SET, DEL, UNLINK), and ~LockPrefix* for the herd's leases (GET, SET, DEL,
// PTTL, PEXPIRE). Channels: &ChannelPrefix*, on which a finished load wakes
// the processes waiting for it (PUBLISH, SUBSCRIBE, UNSUBSCRIBE). Commands:
// CLIENT TRACKING and INFO at connection (HELLO and AUTH need no grant),
// PING for keep-alives, SCAN and UNLINK for InvalidatePrefix, EVALSHA and
// EVAL for the herd's scripts and for revalidation (a read's check, and the
// background pass on raw routes; the pass reads other entries' headers with
// GETRANGE and PTTL, pipelined), or, without them, WATCH, UNWATCH, MULTI,
// EXEC and DISCARD. On Redis Cluster add
// +cluster|slots +role (and +cluster|shards on Redis 8, which rueidis asks
// instead); with a SelectDB, +select. Glob characters in a prefix are
// escaped in its rule (~a\*b:*).
//
// Open checks every one of them once connected: with ACL DRYRUN when the
// user may run it (+acl|whoami +acl|dryrun; but ACL DRYRUN is an @admin
// command that lets the user read other users' rights), otherwise by
// sending each command, in one round trip plus one connection for
// SUBSCRIBE (and one for the transaction commands without scripting), on
// names no key or channel has (<prefix>thermos:acl-probe:<random>; the
// writes are SET … XX, which write nothing there). A missing right the
// cache cannot do without fails Open with a *RightsError (matching
// ErrRefused) naming the rule that would grant it: a route's keys, the
// lock keys, a command; a user who may not read a tracked prefix is
// refused with tracking.ErrACL. Two can be done without, and Open then
// logs a WARN naming what is missing:
//
//   - No scripting (EVALSHA or EVAL refused): the herd takes, renews and
//     releases leases with WATCH/MULTI/EXEC transactions (more round
//     trips), and revalidation reads each entry's header up to its write
//     version with GETRANGE (a raw value whole, with GET) where the script
//     compared it server-side. A revalidation Redis refuses is an error to
//     the caller and a WARN (at most one a minute), never a silent miss.
//     Both also switch on their own if scripts are refused later.
//   - No notification channels: a process waiting for another's load is
//     not woken; it looks at the lease every second and right after the
//     lease would run out. At most one load per key across the fleet still
//     holds.
//
// rueidis also sends commands whose refusal it ignores: CLUSTER SLOTS when
// it connects to a single server, PUNSUBSCRIBE, SUNSUBSCRIBE and (with
// scripting) DISCARD when it takes back a dedicated connection, CLIENT
// SETINFO on Redis 7.2 and later; the checks ask ACL WHOAMI. Grant them to
// keep ACL LOG quiet; nothing depends on them. When Redis is unreachable
// at Open, the rights are checked once it connects, and a missing one is
// logged as an ERROR (operations that need it then fail with ErrRefused).
//
// # Security
//
// Signing (Options.Signing) puts an HMAC-SHA256 tag over the data key, the
// envelope's header (flags, expiries, XFetch's delta, write version) and
// the payload on every enveloped value, in Redis and on disk, and checks
// it on every read from either and at the warm-up. A value that does not
// verify is a miss, counted (RouteStats.IntegrityFailures, and
// Stats.DiskCorrupt on disk, where it is also dropped) and logged without
// its content. So someone who can write to Redis or to Dir but holds no
// secret cannot make a signed route serve a value of their own, a value
// copied from another key, one truncated, re-stamped with another expiry
// or version, stripped of its signature or signed with an unknown key id,
// or a plain value; they can delete values, which costs loads. Values are
// not encrypted: whoever can read Redis or Dir reads them.
//
// Signing does not stop a replay: an old signed value of the same key,
// written back after it was overwritten, carries a valid tag. Within one
// process's lifetime a signed value is refused (as an integrity failure)
// when it is more than a minute older than the newest this process wrote
// or accepted for its key: write versions carry their writer's clock, in
// seconds, in their high 32 bits (the low 32 are random), and a table of
// 64Ki slots (1 MiB, made on the first signed value) keeps the newest time
// per key, consulted only on reads from Redis and disk, never on a memory
// hit. The minute covers writers racing and clocks disagreeing; a writer
// whose clock is more than a minute behind has its values refused by
// processes that saw newer ones. Not covered: a replay to a process that
// has not seen a newer value of the key (restarted, never read it, or its
// slot taken by another key), and one within the minute. Refusing every
// replay would take a per-write counter in Redis checked on every read.
//
// Every read is bounded: a value over its route's MaxValueBytes is refused
// on read as on write (ErrValueTooLarge); the envelope's lengths are
// checked before use; CBOR decoding limits nesting and element counts; a
// compressed typed value is sized by walking its S2 block before anything
// is allocated for it, and refused over its route's MaxValueBytes (a value
// claiming 64 MiB in 7 bytes allocates nothing). On unsigned routes those
// limits are all there is: whoever can write to Redis chooses the values.
//
// The disk tier's directory must be the process's own: Open refuses a Dir
// writable by group or others or owned by another user (package store),
// and makes directories 0700 and files 0600 whatever the umask. Another
// local user who can read Dir reads the cached values; one who can write
// it can delete or corrupt entries (misses, counted) and, on a signed
// route, nothing more while the process runs. While it is down they can
// put back an old signed entry of a key: on routes with Redis it is
// revalidated against Redis's write version before it is served, and
// dropped if Redis holds another; on Memory|Disk routes it is served until
// it expires. On unsigned Memory|Disk routes they choose what is served.
// The process's own user, and root, are trusted.
//
// Secrets — Redis credentials and signing keys — never appear in errors,
// logs (at any level), Stats or a %v of Options or Keyring.
// InvalidatePrefix escapes glob characters; keys are sent as RESP bulk
// strings, so CR, LF and NUL in keys are data, never commands. Keys under
// Options.LockPrefix are the herd's leases: every call on one is refused
// (ErrReservedKey) and InvalidatePrefix skips them, so no caller of the
// cache can delete or overwrite a lease another process holds.
package tiered
