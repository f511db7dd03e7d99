// Package store is thermos's disk tier: a local Pebble database of entries
// with expiry, so a restarted process comes back warm instead of cold.
//
// # What it owns
//
// A directory (created 0700, files 0600; an existing directory other users
// may enter is left as it is, with a warning at every Open) holding a Pebble
// v2 database and a format marker file (THERMOS-FORMAT,
// "thermos-store-format v1"). Each key is
// stored as given; each value is an internal/envelope encoding, which carries
// a CRC-32C checksum and the hard expiry (plus soft expiry, delta, version and
// an optional HMAC tag for the tiered package). Only one DB may have a
// directory open at a time, in this process or any other (ErrLocked).
//
// # Reads
//
// Get and Scan never return an entry whose hard expiry (read from
// Options.Clock) has passed, nor one whose checksum does not match: a torn
// or corrupted entry is counted (Stats.Corrupt), logged and deleted, and
// reads as a miss. Get returns a copy of the payload. Scan streams through a
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
// of about one interval. Close makes every acknowledged write durable.
//
// # Expiry and eviction
//
// A maintenance pass runs at Open (unless sweeping is off and there is no
// budget), every Options.SweepInterval (1 min by
// default), on Sweep, and when writes push the estimated size over
// Options.MaxBytes. It deletes expired and corrupt entries, recounts the
// logical size (keys plus encoded envelopes) of live entries exactly and, if
// that exceeds MaxBytes (or exceeds 90% of it when the pass was started by the
// budget), evicts entries soonest hard expiry first, entries without expiry
// last, down to 90% of MaxBytes. Between passes the size is an estimate (an
// overwrite counts as new data), so the budget is enforced approximately and
// after the fact: writes are never refused or delayed for it, and it may be
// exceeded by what is written while a pass runs. MaxBytes bounds logical
// bytes; Pebble's files also hold the WAL, memtables being flushed, and
// deleted data until compaction reclaims it (Stats.DiskBytes).
//
// Passes delete an entry only if it is unchanged since they read it (writes
// and these deletes exclude each other), so a concurrent write is never lost
// to a sweep, an eviction or the removal of a corrupt entry.
//
// # Error state
//
// Pebble must not take the process down. The store installs its own Pebble
// logger (slog-backed; info goes to debug level; Fatalf does not exit) and
// event listener, recovers Pebble panics at its API boundary, runs Pebble
// writes on goroutines it can stop waiting for, and hides write-ahead-log
// write failures from Pebble (which would otherwise panic or crash) after
// recording them. Any of these, a background flush or compaction error, data
// corruption reported by Pebble, or a failed read puts the store in its error
// state: Err reports the cause (wrapping ErrDiskFault and, where known, the
// cause such as syscall.ENOSPC or syscall.EIO), and every read and write
// fails with that error. No write is acknowledged unless the store was still
// healthy after Pebble finished it. To recover, Close, Wipe and Open: the
// store comes back empty.
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
//     ErrDiskFault may or may not have been applied.
//   - A write whose ctx ends while in flight may or may not take effect.
//   - Stats.Entries and Stats.Bytes are estimates between passes.
//   - After the error state, the directory may not reopen (its WAL may be
//     incomplete): Wipe it.
//   - Pebble-level corruption (a damaged sstable) is not repaired: it puts the
//     store in its error state.
package store
