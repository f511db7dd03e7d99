// Package store is a durable local key-value store with expiry, on Pebble:
// thermos's disk tier, which lets a restarted process come back warm, and a
// package usable on its own.
//
// Keys are non-empty strings; values are opaque bytes, returned exactly as
// they were given; each entry has an expiry (or none) after which it is
// never returned and is eventually deleted. Writes can be batched
// atomically, reads can scan a key prefix, and the store can be held to a
// disk budget.
//
// # What it owns
//
// A directory, which it creates 0700 with every file in it 0600. An
// existing directory must be private to the process's user: Open refuses,
// with ErrInsecureDir, one that its group or others may write to or that
// another user owns, unless Options.AllowSharedDir says otherwise (its doc
// says what another local user can then do), and warns at every Open about
// one that others may read or enter. Only one DB may have the directory
// open at a time, in this process or any other (ErrLocked, enforced by an
// flock(2) lock held from Open to Close; Open asks for a held lock again for
// half a second first, since a child process started while the last DB had
// the directory open holds the lock until its exec). In it: a Pebble v2 database and a
// format marker file (THERMOS-FORMAT, "thermos-store-format v2"); a
// directory of another format gives ErrIncompatible, and Wipe removes it.
// Keys are stored as given; each value is stored as a record of a format
// byte, the expiry, a CRC-32C checksum and the value (EntryOverhead bytes
// more than the value).
//
// In memory, the DB owns a Pebble block cache of Options.CacheBytes (32 MiB
// by default), and background goroutines for maintenance passes and, under
// NoSync, for syncing; Close stops them and frees the cache.
//
// # Reads
//
// Get and Scan never return an entry whose expiry (read from Options.Clock)
// has passed, nor one whose checksum does not match: a torn or corrupted
// entry is counted (Stats.Corrupt), logged and deleted, and reads as a
// miss. They return copies that the caller owns. Scan streams through a
// Pebble iterator, one entry at a time.
//
// # Durability
//
// Under Sync (the default) a write is acknowledged only once Pebble's
// write-ahead log holding it has been fsynced, so every acknowledged write
// survives SIGKILL or power loss; concurrent writers share fsyncs (group
// commit), and a Batch applies many entries atomically for one fsync. Under
// NoSync a write is acknowledged from memory and the WAL is fsynced every
// Options.SyncInterval (100ms by default): a crash loses at most the writes
// of about one interval. Under either, Batch.CommitSync makes one batch,
// and Sync everything written so far, durable before returning. Close
// flushes Pebble's memtables and makes every acknowledged write durable, so
// the next Open has no log to replay and its block cache is free for reads.
//
// # Expiry and eviction
//
// A maintenance pass runs every Options.SweepInterval (1 min by default),
// on Sweep, and when writes push the estimated size over Options.MaxBytes.
// Open reads no entry: just after it, the size is estimated from the
// tables' properties, and a pass runs at once only if that estimate is over
// 90% of MaxBytes (a pass reads every entry, and would compete with a
// caller that reads them all after Open, such as a warm start). A pass deletes
// expired and corrupt entries, recounts the logical size (keys plus values
// plus EntryOverhead each) of live entries exactly and, if that exceeds
// MaxBytes (or exceeds 90% of it when the pass was started by the budget),
// evicts entries soonest expiry first, entries without expiry last, down to
// 90% of MaxBytes. Between passes the size is an estimate (an overwrite
// counts as new data), so the budget is enforced approximately and after
// the fact: writes are never refused or delayed for it, and it may be
// exceeded by what is written while a pass runs. MaxBytes bounds logical
// bytes; Pebble's files also hold the WAL, memtables being flushed, and
// deleted data until compaction reclaims it (Stats.DiskBytes).
//
// Passes delete an entry only if it is unchanged since they read it (writes
// and these deletes exclude each other), so a concurrent write is never lost
// to a sweep, an eviction or the removal of a corrupt entry.
//
// # Disk faults
//
// Pebble must not take the process down. The store installs its own Pebble
// logger (slog-backed; info goes to debug level; Fatalf does not exit) and
// event listener, recovers Pebble panics at its API boundary, runs Pebble
// writes on goroutines it can stop waiting for, and hides write-ahead-log
// write failures from Pebble (which would otherwise panic or crash) after
// recording them. Any of these, a background flush or compaction error, data
// corruption reported by Pebble, or a failed read puts the store in its error
// state: Err and Stats.Err report the cause (wrapping ErrDiskFault and, where
// known, the cause such as syscall.ENOSPC or syscall.EIO), every read and
// write fails with that error, and so do Sync, CommitSync and Close. No
// write is acknowledged unless the store was still healthy after Pebble
// finished it.
//
// Recover heals the store in place once the cause is gone: it closes the
// faulted Pebble instance and opens the directory again, keeping the lock,
// with every durable write intact; while the fault persists it returns it,
// so a caller can retry it with backoff. If the directory cannot be opened
// again, Close, Wipe and Open start the store empty. Open itself fails
// promptly, with an error wrapping ErrDiskFault and the cause, on a disk
// that is full or failing, so a caller can decide to run without the store.
//
// A flush that fails (no room for an sstable) is retried by Pebble for as
// long as it stays open, with a backoff of 50ms doubling to 1s; Close and
// Recover close such an instance all the same, without waiting for the
// flush. Pebble's Open, though, flushes the log it replays and does not
// return until that flush has succeeded: if the disk refuses it, Open and
// Recover return the fault at once and leave Pebble's open to finish in the
// background, holding the directory (Open of it fails with ErrLocked, and
// Recover with the fault, until then); once the disk takes the flush,
// Pebble's open completes and the instance closes itself, and the next
// Open or Recover works.
//
// # Security
//
// The checksum detects accidents, not attacks: whoever can write to the
// directory can make the store return any value and expiry they like for
// any key, or lose acknowledged writes. Hence the private directory (see
// above); the parent directories must not let other users rename or replace
// it either. Values are stored unencrypted: anyone who can read the files
// (root, backups, a shared directory) can read them. A caller that needs
// integrity against such users must sign its values and check them, as the
// tiered package does on signed routes.
//
// # Concurrency
//
// A DB is safe for concurrent use; Close waits for in-flight calls (up to
// Options.CloseTimeout). A Batch is for one goroutine.
//
// # What it does not promise
//
//   - No ordering or isolation between separate calls beyond Pebble's: a Scan
//     may or may not see writes made while it runs.
//   - No read-your-writes across an error state: writes refused with
//     ErrDiskFault may or may not have been applied, and NoSync writes
//     acknowledged before the fault may be lost.
//   - A write whose ctx ends while in flight may or may not take effect.
//   - Stats.Entries and Stats.Bytes are estimates between passes.
//   - Pebble-level corruption (a damaged sstable) is not repaired: it puts
//     the store in its error state whenever it is read, Recover or not;
//     wipe the directory.
package store
