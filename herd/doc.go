// Package herd makes a cold or expiring key be rebuilt once across the
// goroutines of a process and the processes sharing a Redis: in-process
// single-flight, a shared Redis lease lock with fenced writes, notification
// of waiters, and XFetch early refresh.
//
// # How a rebuild moves
//
// Group.Do(ctx, key, lookup, load):
//
//  1. In this process, the first caller for key starts a flight; later
//     callers wait for it (Stats.SharedWaits). The flight runs on its own
//     context: the first caller's values without its cancellation, bounded
//     by Options.LoadTimeout and cancelled by Close. A caller whose ctx ends
//     returns ctx.Err() at once; the flight goes on for the others.
//  2. The flight asks lookup again (the cache may have been filled between
//     the caller's miss and the flight).
//  3. Without a Client, it runs load and hands the value to every waiter.
//  4. With a Client, one Lua script returns the data key's value if Redis
//     has it, or else takes the lease: SET lock token NX PX LeaseTTL, timed
//     by the server's clock, with a random token.
//  5. The holder runs load and renews the lease every LeaseTTL/3 while it
//     runs; renewal stops for good the moment the token no longer holds the
//     lock. It then stores the value with a fenced write: one script sets the
//     data key (PX ttl), deletes the lock and publishes on the key's channel,
//     only if the token still holds the lock. A holder that lost its lease
//     can never overwrite the newer value of the next holder.
//  6. A flight that finds the lease held subscribes to the key's channel (on
//     one dedicated connection per Group), looks again, and sleeps until a
//     notification, Group.Wake(key), or the earlier of WaitTimeout and the
//     lease's remaining time; then it looks again. So waiters are woken the
//     moment the value lands, without polling, and a dead holder is replaced
//     by exactly one waiter (SET NX) about one lease after its last renewal.
//  7. An error or panic from load reaches every waiter of the flight (a
//     panic as an error wrapping ErrPanic, with the stack in its text); the
//     lease is released with compare-and-delete and the waiters in other
//     processes are woken, so one of them tries again. Nothing is stored.
//
// A rebuild costs two Redis round trips (the acquire script and the fenced
// write); a value found by lookup costs none, one found in Redis one.
//
// When the server refuses scripts (EVAL renamed, an ACL without
// @scripting) the Group switches to WATCH/MULTI/EXEC transactions on a
// dedicated connection, which keep the same guarantees at a few more round
// trips; Options.DisableScripting forces them.
//
// # Early refresh
//
// ShouldRefresh is XFetch (Vattani, Chierichetti, Lowenstein, VLDB 2015), a
// pure function of the caller's clock reading and random draw. When it says
// yes, Group.Refresh starts a background rebuild unless
// one is running in this process, and never blocks: callers keep serving the
// value they have. With a Client the rebuild takes the lease only if Redis
// still holds the value the caller saw, in the same script, so across the
// fleet exactly one caller refreshes per expiry. Do callers that arrive
// while a refresh runs share it.
//
// # Keys
//
// The data key is the key given to Do, as is. The lock key is
// LockPrefix + suffix and the channel ChannelPrefix + suffix, where suffix
// puts them in the data key's Redis Cluster hash slot:
//
//	key has a hash tag, "u:{42}:name"   suffix "t:u:{42}:name"
//	key has no '}', "u:42"              suffix "k:{u:42}"
//	otherwise, "a}b" or "{}x"           suffix "s:{N}a}b", N a decimal number
//	                                    chosen so that {N} is in the key's slot
//
// The prefixes may not contain braces. Every script touches keys of one slot
// only.
//
// # Concurrency and lifetime
//
// A Group is safe for concurrent use. Its goroutines (flights, the one lease
// renewer shared by every holder, the notification connection's watcher,
// all started on demand) end in Close, which cancels running flights, releases their
// leases and is safe to call twice. A flight runs on its first caller's
// goroutine when that caller's ctx cannot end, and so does the first
// acquire of a flight on a Group with a Client (the one step most flights
// need): a flight takes a goroutine of its own only to load or to wait for
// another holder, so that a caller whose ctx ends can return at once.
// The Group does not own Options.Client.
//
// # What it does not promise
//
// At most one rebuild holds while the lease holder lives and renews: a
// holder cut off from Redis for longer than its lease may still finish its
// load after another process started one (its write is then refused). A
// waiter whose notification is lost (a dropped connection) notices the
// value at its next timed look, at most WaitTimeout later. Notifications use
// PUBLISH; on Redis Cluster they reach every node (sharded SPUBLISH is a
// later change; the channel names already share the key's slot).
// Stats.WakeLatency compares the publisher's and the receiver's wall clocks.
package herd
