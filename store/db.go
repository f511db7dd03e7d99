package store

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cockroachdb/pebble/v2"
	"github.com/thermoscache/thermos/internal/clock"
	"github.com/thermoscache/thermos/internal/envelope"
)

// Lock order: DB.mu before nothing (held only briefly); passMu before
// writeMu. writeMu is only ever taken inside goroutines started by runAsync.

// DB is a Pebble-backed store of envelope entries with expiry. It is safe
// for concurrent use; a Batch is not.
type DB struct {
	opts  Options
	dir   string
	pdb   *pebble.DB
	lock  *pebble.Lock
	gfs   *guardFS
	fault *faultState
	log   *slog.Logger
	clock clock.Clock
	wo    *pebble.WriteOptions
	seed  maphash.Seed

	mu struct {
		sync.RWMutex
		closed bool
	}
	// ops counts Pebble calls in flight, including ones whose caller has
	// stopped waiting (context done, error state). Close waits for it.
	// Add happens under mu.RLock with closed false, so never after Close's Wait.
	ops sync.WaitGroup

	// writeMu is held shared by every write while Pebble applies it, and
	// exclusively by the read-check-delete of dropping corrupt entries,
	// sweeping expired ones and evicting, so that such a delete never removes
	// a value written after its check.
	writeMu sync.RWMutex

	passMu sync.Mutex // serialises maintenance passes

	estBytes atomic.Int64 // logical bytes: exact at the last pass, plus writes since
	estCount atomic.Int64 // entries: exact at the last pass, plus sets since
	unsynced atomic.Int64 // NoSync commits since the last WAL sync
	corrupt  atomic.Int64
	evicted  atomic.Int64
	expired  atomic.Int64
	passes   atomic.Int64

	kick     chan struct{} // budget exceeded: run a pass now
	bgCtx    context.Context
	bgCancel context.CancelFunc
	bg       sync.WaitGroup
}

// Open opens the store in dir, creating it (mode 0700) if needed.
//
// It fails with ErrLocked if another DB has dir open, ErrIncompatible if dir
// holds another format or unrelated files, ErrInvalidOptions for bad
// Options, and an error wrapping ErrDiskFault if the disk failed while
// opening. Pebble's own open errors (a corrupt MANIFEST, for example) are
// wrapped as they are; a caller that can live with a cold start may Wipe the
// directory and try again.
func Open(dir string, opts *Options) (*DB, error) {
	o := opts.withDefaults()
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	if dir == "" {
		return nil, fmt.Errorf("store: open: %w: empty directory name", ErrInvalidOptions)
	}
	fault := newFaultState(o.Logger)
	gfs := newGuardFS(o.FS, fault)
	if gfs.disk {
		warnSharedDir(dir, o.Logger)
	}
	if err := gfs.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	lock, err := pebble.LockDirectory(dir, gfs)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	if err := checkFormat(gfs, dir); err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	popts := &pebble.Options{
		FS:            gfs,
		Lock:          lock,
		Logger:        pebbleLogger{log: o.Logger, fault: fault},
		EventListener: eventListener(o.Logger, fault),
	}
	pdb, err := openPebble(dir, popts, fault)
	if err == nil {
		err = fault.get()
		if err != nil {
			fault.closing.Store(true)
			_ = closePebble(pdb, fault, o.CloseTimeout)
		}
	}
	if err != nil {
		_ = lock.Close()
		gfs.releaseLock()
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}

	db := &DB{
		opts:  o,
		dir:   dir,
		pdb:   pdb,
		lock:  lock,
		gfs:   gfs,
		fault: fault,
		log:   o.Logger,
		clock: o.Clock,
		wo:    pebble.Sync,
		seed:  maphash.MakeSeed(),
		kick:  make(chan struct{}, 1),
	}
	if o.Durability == NoSync {
		db.wo = pebble.NoSync
	}
	db.bgCtx, db.bgCancel = context.WithCancel(context.Background())
	if o.Durability == NoSync {
		db.bg.Add(1)
		go db.syncLoop()
	}
	if o.SweepInterval > 0 || o.MaxBytes > 0 {
		db.bg.Add(1)
		go db.maintainLoop()
	}
	return db, nil
}

// openPebble opens Pebble, turning a panic into an error.
func openPebble(dir string, popts *pebble.Options, fault *faultState) (pdb *pebble.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			pdb, err = nil, fault.set(fmt.Errorf("pebble panic during open: %v", r))
		}
	}()
	return pebble.Open(dir, popts)
}

// closePebble closes pdb, giving up after timeout. It reports whether Pebble
// closed (with or without error) in time.
func closePebble(pdb *pebble.DB, fault *faultState, timeout time.Duration) error {
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("pebble panic during close: %v", r)
			}
		}()
		done <- pdb.Close()
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return errAbandoned
	}
}

var errAbandoned = errors.New("store: gave up waiting for pebble")

// Close stops the background goroutines, waits for in-flight operations and
// closes Pebble, releasing the directory. Every later call on the DB fails
// with ErrClosed. Close is safe to call twice (the second call returns nil).
//
// If in-flight operations or Pebble itself do not finish within
// Options.CloseTimeout, which happens only when the disk hangs or Pebble is
// wedged by a fault, Close abandons them: their goroutines and memory are
// leaked, the directory lock is released, and the error returned wraps
// ErrDiskFault. The directory should then be wiped before reuse.
func (db *DB) Close() error {
	db.mu.Lock()
	if db.mu.closed {
		db.mu.Unlock()
		return nil
	}
	db.mu.closed = true
	db.mu.Unlock()

	deadline := time.Now().Add(db.opts.CloseTimeout)
	db.bgCancel()
	db.bg.Wait()

	opsDone := make(chan struct{})
	go func() {
		db.ops.Wait()
		close(opsDone)
	}()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-opsDone:
	case <-t.C:
		return db.abandon("in-flight operations did not finish")
	}

	db.fault.closing.Store(true)
	err := closePebble(db.pdb, db.fault, time.Until(deadline))
	if err == errAbandoned {
		return db.abandon("pebble did not close")
	}
	_ = db.lock.Close()
	db.gfs.releaseLock()
	if err != nil {
		return fmt.Errorf("store: close %s: %w", db.dir, err)
	}
	return nil
}

func (db *DB) abandon(why string) error {
	err := fmt.Errorf("store: close %s: %s within %v; pebble abandoned: %w", db.dir, why, db.opts.CloseTimeout, ErrDiskFault)
	db.fault.set(err)
	db.log.Error("store: abandoning pebble instance", "dir", db.dir, "reason", why)
	db.gfs.dead.Store(true)
	db.gfs.releaseLock()
	return err
}

// Err returns nil, or the error that put the store in its error state (it
// wraps ErrDiskFault and, where known, the cause).
func (db *DB) Err() error { return db.fault.get() }

// enter registers an operation. On success the caller owns one count of
// db.ops and must release it (or hand it to runAsync).
func (db *DB) enter() error {
	db.mu.RLock()
	if db.mu.closed {
		db.mu.RUnlock()
		return ErrClosed
	}
	db.ops.Add(1)
	db.mu.RUnlock()
	if err := db.fault.get(); err != nil {
		db.ops.Done()
		return err
	}
	return nil
}

// runAsync runs fn, a call into Pebble, on its own goroutine and waits for
// it, for the error state, or for ctx. It takes over one count of db.ops
// from the caller. A Pebble call wedged by a disk fault therefore never
// blocks the caller: it returns the fault and the goroutine is left behind.
// If ctx ends first, the caller gets ctx.Err() and fn may still complete.
// Success is reported only if the store is not in its error state after fn
// returned, so a write that Pebble could not make durable is never
// acknowledged (see guardFS).
func (db *DB) runAsync(ctx context.Context, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		defer db.ops.Done()
		done <- db.protect(fn)
	}()
	select {
	case err := <-done:
		if err != nil {
			return err
		}
		return db.fault.get()
	case <-db.fault.ch:
		return db.fault.get()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// protect runs fn, turning a panic (Pebble panics on some disk failures)
// into the error state.
func (db *DB) protect(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = db.panicked(r)
		}
	}()
	return fn()
}

func (db *DB) panicked(r any) error {
	db.log.Error("store: recovered pebble panic", "panic", r, "stack", string(debug.Stack()))
	return db.fault.set(fmt.Errorf("pebble panic: %v", r))
}

func (db *DB) now() int64 { return db.clock.Now().UnixNano() }

// expiryAfter returns the hard expiry for ttl from now (0: none), saturating.
func (db *DB) expiryAfter(ttl time.Duration) int64 {
	if ttl == 0 {
		return 0
	}
	now := db.now()
	if exp := now + int64(ttl); exp > now {
		return exp
	}
	return math.MaxInt64
}

func (db *DB) checkKey(key string) error {
	if key == "" {
		return ErrEmptyKey
	}
	if len(key) > db.opts.MaxKeyBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrKeyTooLarge, len(key), db.opts.MaxKeyBytes)
	}
	return nil
}

func (db *DB) checkValue(n int) error {
	if n > db.opts.MaxValueBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrValueTooLarge, n, db.opts.MaxValueBytes)
	}
	return nil
}

// unsafeBytes views s as bytes for Pebble calls that neither keep nor
// modify their key argument beyond the call.
func unsafeBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// Get returns the entry stored under key. A missing, expired or corrupt
// entry is a miss: ok is false and err nil. A corrupt entry (its checksum
// does not match) is also counted in Stats.Corrupt, logged and deleted.
// The returned Payload is a copy owned by the caller. Errors: ErrEmptyKey,
// ErrKeyTooLarge, ErrClosed, ctx.Err(), or one wrapping ErrDiskFault when a
// read fails (a read failure puts the store in its error state).
func (db *DB) Get(ctx context.Context, key string) (e envelope.Entry, ok bool, err error) {
	if err = ctx.Err(); err != nil {
		return e, false, err
	}
	if err = db.checkKey(key); err != nil {
		return e, false, err
	}
	if err = db.enter(); err != nil {
		return e, false, err
	}
	defer db.ops.Done()
	defer func() {
		if r := recover(); r != nil {
			e, ok, err = envelope.Entry{}, false, db.panicked(r)
		}
	}()
	val, closer, err := db.pdb.Get(unsafeBytes(key))
	if err != nil {
		if err == pebble.ErrNotFound || errors.Is(err, pebble.ErrNotFound) {
			return e, false, nil
		}
		return e, false, db.fault.set(fmt.Errorf("get: %w", err))
	}
	h, derr := envelope.DecodeHeader(val)
	if derr != nil {
		v := victim{key: key, tag: maphash.Bytes(db.seed, val)}
		_ = closer.Close()
		db.noteCorrupt(key, derr)
		db.ops.Add(1) // for dropIfSame's Pebble call; we still hold ours
		if _, _, err := db.deleteIfSame(ctx, []victim{v}); err != nil {
			db.log.Warn("store: could not drop corrupt entry", "key", key, "err", err)
		}
		return e, false, nil
	}
	if h.Expired(db.now()) {
		_ = closer.Close()
		return e, false, nil
	}
	p := make([]byte, len(val)-h.Size())
	copy(p, val[h.Size():])
	_ = closer.Close()
	return envelope.Entry{Header: h, Payload: p}, true, nil
}

func (db *DB) noteCorrupt(key string, cause error) {
	db.corrupt.Add(1)
	db.log.Warn("store: corrupt entry dropped", "key", key, "err", cause)
}

// Set stores value under key with a hard expiry ttl from now (0: none).
// Errors: ErrInvalidTTL for a negative ttl, ErrEmptyKey, ErrKeyTooLarge,
// ErrValueTooLarge, ErrClosed, ctx.Err(), or one wrapping ErrDiskFault. Under
// Sync durability a nil error means the write is on disk. If ctx ends while
// the write is in flight, Set returns ctx.Err() and the write may or may not
// take effect. The store does not keep value.
func (db *DB) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if ttl < 0 {
		return fmt.Errorf("%w: %v", ErrInvalidTTL, ttl)
	}
	e := envelope.Entry{Header: envelope.Header{HardExpiry: db.expiryAfter(ttl)}, Payload: value}
	return db.setEntry(ctx, key, &e)
}

// SetExpiry stores value under key with the absolute hard expiry expiry (the
// zero Time: none). An expiry in the past stores an entry that is never
// returned. Errors as for Set, without ErrInvalidTTL.
func (db *DB) SetExpiry(ctx context.Context, key string, value []byte, expiry time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	e := envelope.Entry{Header: envelope.Header{HardExpiry: unixNanoOrZero(expiry)}, Payload: value}
	return db.setEntry(ctx, key, &e)
}

// SetEntry stores the whole envelope e under key: soft and hard expiry,
// delta, version, flags and signature as given (the checksum is computed
// here). Errors as for SetExpiry, plus ErrInvalidEntry for a nil e.
func (db *DB) SetEntry(ctx context.Context, key string, e *envelope.Entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if e == nil {
		return fmt.Errorf("%w: nil entry", ErrInvalidEntry)
	}
	return db.setEntry(ctx, key, e)
}

func (db *DB) setEntry(ctx context.Context, key string, e *envelope.Entry) error {
	if err := db.checkKey(key); err != nil {
		return err
	}
	if err := db.checkValue(len(e.Payload)); err != nil {
		return err
	}
	if err := db.enter(); err != nil {
		return err
	}
	b := db.pdb.NewBatch()
	n := putEntry(b, key, e)
	return db.apply(ctx, b, n, 1)
}

// Delete removes key. Deleting a missing key is not an error. Errors:
// ErrEmptyKey, ErrKeyTooLarge, ErrClosed, ctx.Err(), or one wrapping
// ErrDiskFault.
func (db *DB) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := db.checkKey(key); err != nil {
		return err
	}
	if err := db.enter(); err != nil {
		return err
	}
	b := db.pdb.NewBatch()
	_ = b.Delete(unsafeBytes(key), nil) // copies the key
	return db.apply(ctx, b, 0, 0)
}

func unixNanoOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// putEntry encodes e directly into b under key and returns the logical size.
func putEntry(b *pebble.Batch, key string, e *envelope.Entry) int64 {
	size := e.Size()
	op := b.SetDeferred(len(key), size)
	copy(op.Key, key)
	e.Append(op.Value[:0])
	_ = op.Finish()
	return int64(len(key) + size)
}

// apply commits b (whose ownership it takes) with the store's durability.
// The caller must have entered; apply releases that count.
//
// A healthy store applies on the caller's goroutine: that is as fast as raw
// Pebble. While Pebble reports a write stall, which never ends if the disk
// has failed under it, writes go through runAsync instead, so their callers
// can be released by the error state or ctx.
func (db *DB) apply(ctx context.Context, b *pebble.Batch, bytes, count int64) error {
	var err error
	if db.fault.stalled.Load() {
		err = db.runAsync(ctx, func() error { return db.applyBatch(b) })
	} else {
		err = db.protect(func() error { return db.applyBatch(b) })
		db.ops.Done()
		if err == nil {
			err = db.fault.get()
		}
	}
	if err != nil {
		return err
	}
	if db.opts.Durability == NoSync {
		db.unsynced.Add(1)
	}
	if count != 0 || bytes != 0 {
		db.estCount.Add(count)
		if n := db.estBytes.Add(bytes); db.opts.MaxBytes > 0 && n > db.opts.MaxBytes {
			select {
			case db.kick <- struct{}{}:
			default:
			}
		}
	}
	return nil
}

// applyBatch commits b under writeMu held shared (see DB.writeMu).
func (db *DB) applyBatch(b *pebble.Batch) error {
	db.writeMu.RLock()
	defer db.writeMu.RUnlock()
	if err := db.pdb.Apply(b, db.wo); err != nil {
		return err
	}
	return b.Close()
}

// victim is an entry to delete if it has not changed since it was read:
// tag is a hash of the raw value read then.
type victim struct {
	key  string
	tag  uint64
	size int64
}

// deleteIfSame deletes every victim whose stored value still hashes to its
// tag, under writeMu held exclusively, and returns how many it deleted and
// their sizes. The deletes are not synced: losing them in a crash brings back
// entries that are expired, corrupt or evictable, which the next pass
// handles. The caller must hand it one count of db.ops.
func (db *DB) deleteIfSame(ctx context.Context, vs []victim) (n int, bytes int64, err error) {
	var dn int
	var freed int64
	err = db.runAsync(ctx, func() error {
		db.writeMu.Lock()
		defer db.writeMu.Unlock()
		b := db.pdb.NewBatch()
		for _, v := range vs {
			val, closer, err := db.pdb.Get(unsafeBytes(v.key))
			if err == pebble.ErrNotFound || errors.Is(err, pebble.ErrNotFound) {
				continue
			}
			if err != nil {
				_ = b.Close()
				return db.fault.set(fmt.Errorf("get: %w", err))
			}
			same := maphash.Bytes(db.seed, val) == v.tag
			_ = closer.Close()
			if same {
				_ = b.Delete(unsafeBytes(v.key), nil)
				dn++
				freed += v.size
			}
		}
		if b.Empty() {
			return b.Close()
		}
		if err := db.pdb.Apply(b, pebble.NoSync); err != nil {
			return err
		}
		return b.Close()
	})
	if err != nil {
		return 0, 0, err
	}
	db.unsynced.Add(1)
	return dn, freed, nil
}

// Stats is a snapshot of a DB's counters.
type Stats struct {
	// Entries and Bytes approximate the live entries and their logical size
	// (keys plus encoded envelopes): exact as of the last maintenance pass,
	// plus every Set since (an overwrite counts as new, a Delete subtracts
	// nothing) minus evictions.
	Entries int64
	Bytes   int64
	// MaxBytes is the configured budget (0: unlimited).
	MaxBytes int64
	// DiskBytes is Pebble's on-disk footprint (sstables, WAL, manifests),
	// which lags deletes until compaction. Zero when closed or in the error
	// state.
	DiskBytes uint64
	// Corrupt counts detections of corrupt entries (by Get, Scan or a
	// pass). Each was skipped and, where possible, deleted.
	Corrupt int64
	// Evicted counts entries deleted to stay within MaxBytes.
	Evicted int64
	// Expired counts expired entries deleted by maintenance passes.
	Expired int64
	// Passes counts completed maintenance passes.
	Passes int64
	// Durability is the configured durability.
	Durability Durability
	// Err is Err(): nil, or the error state's error.
	Err error
}

// Stats returns a snapshot of the counters. It works after Close.
func (db *DB) Stats() Stats {
	s := Stats{
		Entries:    max(db.estCount.Load(), 0),
		Bytes:      max(db.estBytes.Load(), 0),
		MaxBytes:   db.opts.MaxBytes,
		Corrupt:    db.corrupt.Load(),
		Evicted:    db.evicted.Load(),
		Expired:    db.expired.Load(),
		Passes:     db.passes.Load(),
		Durability: db.opts.Durability,
		Err:        db.fault.get(),
	}
	if s.Err == nil && db.enter() == nil {
		func() {
			defer db.ops.Done()
			defer func() { _ = recover() }()
			m := db.pdb.Metrics()
			s.DiskBytes = m.DiskSpaceUsage()
		}()
	}
	return s
}
