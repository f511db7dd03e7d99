package store

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Defaults for zero Options fields.
const (
	// DefaultSyncInterval is how often the WAL is synced under NoSync.
	DefaultSyncInterval = 100 * time.Millisecond
	// DefaultSweepInterval is how often expired entries are deleted.
	DefaultSweepInterval = time.Minute
	// DefaultMaxKeyBytes is the longest key accepted.
	DefaultMaxKeyBytes = 1 << 10
	// DefaultMaxValueBytes is the longest value accepted.
	DefaultMaxValueBytes = 64 << 20
	// DefaultCacheBytes is the size of the store's Pebble block cache. Pebble
	// charges its memtables (4 MiB each, two while one is flushed) to the
	// same cache, so it must be well above 8 MiB for sstable blocks to stay
	// cached; 32 MiB holds the hot blocks of a few million small entries.
	DefaultCacheBytes = 32 << 20
	// DefaultCloseTimeout bounds how long Close waits for in-flight work and
	// for Pebble to close before giving up on them (see DB.Close).
	DefaultCloseTimeout = 10 * time.Second

	// maxKeyLimit and maxValueLimit bound the limits themselves: Pebble
	// batches must stay well under 4 GiB.
	maxKeyLimit   = 1 << 20
	maxValueLimit = 1 << 30
)

// Durability says when a write is acknowledged relative to the disk.
type Durability uint8

const (
	// Sync acknowledges a write only after the write-ahead log holding it has
	// been fsynced: every acknowledged write survives a crash or SIGKILL.
	// Concurrent writers share fsyncs (Pebble's group commit); a Batch turns
	// many entries into one fsync.
	Sync Durability = iota
	// NoSync acknowledges a write once it is in Pebble's memtable and WAL
	// buffer. A background goroutine fsyncs the WAL every
	// Options.SyncInterval, so a crash loses at most about that much of the
	// most recent writes (a process kill alone loses only what was still in
	// Pebble's user-space buffer, which is also written out every interval).
	// Batch.CommitSync and DB.Sync make chosen writes durable at once.
	NoSync
)

// String returns "sync" or "nosync".
func (d Durability) String() string {
	switch d {
	case Sync:
		return "sync"
	case NoSync:
		return "nosync"
	default:
		return fmt.Sprintf("Durability(%d)", uint8(d))
	}
}

// Options configures a DB. A nil *Options is valid; every zero field takes
// the default described on it. Open works on a copy.
type Options struct {
	// Durability is Sync (the zero value: every acknowledged write survives a
	// crash) or NoSync (bounded loss window of SyncInterval).
	Durability Durability

	// SyncInterval is how often the WAL is fsynced under NoSync. Zero means
	// DefaultSyncInterval (100ms). Ignored under Sync.
	SyncInterval time.Duration

	// MaxBytes is the disk budget: the approximate logical size (keys plus
	// values plus EntryOverhead each) of live entries. Zero means unlimited. When it is
	// exceeded, entries are evicted soonest-expiry first (entries without
	// expiry last) down to 90% of MaxBytes; see the package doc.
	MaxBytes int64

	// SweepInterval is how often a maintenance pass deletes expired entries.
	// Zero means DefaultSweepInterval (1 min). Negative turns background
	// passes off (unless MaxBytes is set: then a pass runs whenever the
	// budget is exceeded, at Open included); Get and Scan still never return
	// an expired entry, and Sweep runs a pass on demand.
	SweepInterval time.Duration

	// MaxKeyBytes is the longest key accepted. Zero means DefaultMaxKeyBytes
	// (1 KiB); at most 1 MiB.
	MaxKeyBytes int

	// MaxValueBytes is the longest value accepted. Zero means
	// DefaultMaxValueBytes (64 MiB); at most 1 GiB.
	MaxValueBytes int

	// CacheBytes is the size of the block cache the store gives Pebble, in
	// memory, for sstable blocks it reads (and for its memtables, which
	// Pebble charges to the same cache). Zero means DefaultCacheBytes
	// (32 MiB). The cache belongs to the DB and is freed by Close.
	CacheBytes int64

	// AllowSharedDir lets Open use an existing directory that is writable by
	// its group or by others, or owned by another user; without it Open
	// refuses such a directory with ErrInsecureDir. Whoever can write to the
	// directory can replace or delete the store's files while it is closed,
	// and rename or delete them while it is open: they can make Get return
	// any value and expiry they choose for any key (the checksum is not a
	// signature), make acknowledged writes disappear, fill the disk, or make
	// Open fail. Set it only when every such user is trusted with the data,
	// or when the values carry their own signature that the caller checks.
	// The store still creates its files owner-only (0600).
	AllowSharedDir bool

	// CloseTimeout bounds how long Close waits for in-flight operations and
	// for Pebble to shut down, and how long Recover waits for a faulted
	// Pebble instance to close. Zero means DefaultCloseTimeout (10s).
	CloseTimeout time.Duration

	// Clock is the time source for expiry. Nil means the wall clock.
	Clock Clock

	// Logger receives Pebble's logs (info at debug level), disk events and
	// corruption reports. Nil means slog.Default().
	Logger *slog.Logger

	// FS is the filesystem Pebble and the store use, for tests
	// (vfs.NewMem(), or errorfs for fault injection). Nil means the real disk.
	FS vfs.FS
}

func (o *Options) withDefaults() Options {
	var c Options
	if o != nil {
		c = *o
	}
	if c.SyncInterval == 0 {
		c.SyncInterval = DefaultSyncInterval
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = DefaultSweepInterval
	}
	if c.MaxKeyBytes == 0 {
		c.MaxKeyBytes = DefaultMaxKeyBytes
	}
	if c.MaxValueBytes == 0 {
		c.MaxValueBytes = DefaultMaxValueBytes
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = DefaultCloseTimeout
	}
	if c.CacheBytes == 0 {
		c.CacheBytes = DefaultCacheBytes
	}
	if c.Clock == nil {
		c.Clock = wallClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.FS == nil {
		c.FS = vfs.Default
	}
	return c
}

func (o *Options) validate() error {
	switch {
	case o.Durability != Sync && o.Durability != NoSync:
		return fmt.Errorf("%w: unknown durability %d", ErrInvalidOptions, o.Durability)
	case o.SyncInterval < 0:
		return fmt.Errorf("%w: negative sync interval", ErrInvalidOptions)
	case o.MaxBytes < 0:
		return fmt.Errorf("%w: negative max bytes", ErrInvalidOptions)
	case o.MaxKeyBytes < 0 || o.MaxKeyBytes > maxKeyLimit:
		return fmt.Errorf("%w: max key bytes %d not in [1, %d]", ErrInvalidOptions, o.MaxKeyBytes, maxKeyLimit)
	case o.MaxValueBytes < 0 || o.MaxValueBytes > maxValueLimit:
		return fmt.Errorf("%w: max value bytes %d not in [1, %d]", ErrInvalidOptions, o.MaxValueBytes, maxValueLimit)
	case o.CacheBytes < 0:
		return fmt.Errorf("%w: negative cache bytes", ErrInvalidOptions)
	case o.CloseTimeout < 0:
		return fmt.Errorf("%w: negative close timeout", ErrInvalidOptions)
	}
	return nil
}
