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
)

// Lock order: recoverSem before DB.mu; passMu before instance.writeMu.
// DB.mu is held only briefly and never while calling into Pebble. writeMu is
// only taken inside Pebble calls (see runAsync).

// DB is a Pebble-backed store of values with expiry in one directory. It is
// safe for concurrent use; a Batch is not.
type DB struct {
	opts   Options
	dir    string
	log    *slog.Logger
	clock  Clock
	wo     *pebble.WriteOptions // the configured durability
	seed   maphash.Seed
	cache  *pebble.Cache // the block cache, shared by every instance
	plock  *pebble.Lock  // the directory lock, held from Open to Close, across Recover
	lockFS *guardFS      // the filesystem plock was taken through; owns the flock

	mu struct {
		sync.RWMutex
		closed bool
		in     *instance // the current Pebble instance; Recover replaces it
	}

	// recoverSem (one slot) is held by a Recover in progress, and by Close
	// once it has started, so that the two never overlap.
	recoverSem chan struct{}
	closing    chan struct{} // closed when Close starts

	passMu sync.Mutex // serialises maintenance passes

	estBytes atomic.Int64 // logical bytes: exact at the last pass, plus writes since
	estCount atomic.Int64 // entries: exact at the last pass, plus sets since
	unsynced atomic.Int64 // NoSync commits since the last WAL sync
	corrupt  atomic.Int64
	evicted  atomic.Int64
	expired  atomic.Int64
	passes   atomic.Int64
	reopens  atomic.Int64

	kick     chan struct{} // budget exceeded: run a pass now
	bgCtx    context.Context
	bgCancel context.CancelFunc
	bg       sync.WaitGroup
}

// instance is one opened Pebble database in the DB's directory, with its own
// error state. Recover retires a faulted instance and opens another; every
// call works on the instance that was current when it started.
type instance struct {
	pdb   *pebble.DB // nil in a stub, which stands in while no instance is open
	gfs   *guardFS
	fault *faultState

	// ops counts Pebble calls in flight on pdb, including ones whose caller
	// has stopped waiting (context done, error state). Add happens under
	// DB.mu.RLock while the instance is current and the DB open (see
	// DB.enter), so never after the instance is retired or the DB closed,
	// which is when stop waits for it.
	ops sync.WaitGroup

	// writeMu is held shared by every write while Pebble applies it, and
	// exclusively by the read-check-delete of dropping corrupt entries,
	// sweeping expired ones and evicting, so that such a delete never
	// removes a value written after its check.
	writeMu sync.RWMutex

	// opened is closed once Pebble's Open has returned, setting pdb (nil if
	// it failed) and openErr. An instance can be handed out while Open is
	// still under way (see openInstance); nil in a stub.
	opened  chan struct{}
	openErr error

	stopOnce sync.Once
	stopped  chan struct{} // closed once pdb.Close has returned
	stopErr  error         // pdb.Close's error; read after stopped is closed

	// prev is set on a stub only: the faulted instance it replaced, which
	// must have stopped before the directory can be opened again.
	prev *instance
}

// newStub returns an instance without Pebble in the error state fault,
// standing in for prev (nil if none) while the DB has no open instance.
func newStub(fault *faultState, prev *instance) *instance {
	in := &instance{fault: fault, stopped: make(chan struct{}), prev: prev}
	in.stopOnce.Do(func() { close(in.stopped) })
	return in
}

// stop closes in's Pebble instance once its in-flight calls are done (its
// Open included), and returns a channel closed when it has. The instance
// must be retired (no longer current, or the DB closed). The closing
// goroutine is left behind if Pebble never returns (a wedged disk).
func (in *instance) stop() <-chan struct{} {
	in.stopOnce.Do(func() {
		go func() {
			in.ops.Wait()
			in.fault.closing.Store(true)
			in.gfs.pebbleClosing()
			if in.pdb != nil {
				in.stopErr = closePebble(in.pdb)
			} else {
				in.stopErr = in.openErr
			}
			close(in.stopped)
		}()
	})
	return in.stopped
}

// opening reports whether Pebble's Open of in is still under way.
func (in *instance) opening() bool {
	if in.opened == nil {
		return false
	}
	select {
	case <-in.opened:
		return false
	default:
		return true
	}
}

// finishLater leaves in, whose Pebble is still opening, to close by itself
// once Pebble's Open returns, and only then runs release (which gives up
// the directory, and the block cache if nothing else uses it). Pebble's
// Open is waiting for a flush that the disk refuses; it retries the flush
// with backoff until the disk takes it, however long that is: the
// directory stays locked until then.
func (db *DB) finishLater(in *instance, release func()) {
	db.log.Warn("store: pebble is still opening on a failing disk; the directory stays locked until it has opened and closed again", "dir", db.dir)
	go func() {
		<-in.stop()
		release()
		db.log.Info("store: pebble opened and closed after the disk fault; directory released", "dir", db.dir)
	}()
}

// Open opens the store in dir, creating it (mode 0700) if needed.
//
// It fails with ErrInvalidOptions for bad Options, ErrInsecureDir if dir
// exists and other users could write to it (see Options.AllowSharedDir),
// ErrLocked if another DB has dir open, ErrIncompatible if dir holds another
// format or unrelated files, and an error wrapping ErrDiskFault, and the
// cause where known (such as syscall.ENOSPC), if the disk or Pebble fails
// while opening, a corrupt Pebble database included. Open does not retry: a
// caller that can run without the store may do so, and one that can live
// with a cold start may Wipe the directory and try again. If the fault is a
// failed flush of the log Pebble replays, Pebble's open goes on in the
// background until the disk takes the flush, and the directory stays
// locked (ErrLocked) until it has (see the package doc, Disk faults).
func Open(dir string, opts *Options) (*DB, error) {
	o := opts.withDefaults()
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	if dir == "" {
		return nil, fmt.Errorf("store: open: %w: empty directory name", ErrInvalidOptions)
	}
	gfs := newGuardFS(o.FS, newFaultState(o.Logger))
	if gfs.disk {
		if err := checkDir(dir, o.AllowSharedDir, o.Logger); err != nil {
			return nil, fmt.Errorf("store: open %s: %w", dir, err)
		}
	}
	if err := gfs.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, diskFault(err))
	}
	plock, err := pebble.LockDirectory(dir, gfs)
	if err != nil {
		if !errors.Is(err, ErrLocked) {
			err = diskFault(err)
		}
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	if err := checkFormat(gfs, dir); err != nil {
		_ = plock.Close()
		gfs.releaseLock()
		if !errors.Is(err, ErrIncompatible) {
			err = diskFault(err)
		}
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}

	db := &DB{
		opts:       o,
		dir:        dir,
		log:        o.Logger,
		clock:      o.Clock,
		wo:         pebble.Sync,
		seed:       maphash.MakeSeed(),
		cache:      pebble.NewCache(o.CacheBytes),
		plock:      plock,
		lockFS:     gfs,
		recoverSem: make(chan struct{}, 1),
		closing:    make(chan struct{}),
		kick:       make(chan struct{}, 1),
	}
	if o.Durability == NoSync {
		db.wo = pebble.NoSync
	}
	in, err := db.openInstance()
	if err != nil && in != nil && in.opening() {
		db.finishLater(in, func() {
			db.cache.Unref()
			_ = plock.Close()
			gfs.releaseLock()
		})
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	if err != nil {
		stopped := true
		if in != nil {
			select {
			case <-in.stop():
			case <-time.After(o.CloseTimeout):
				stopped = false
				in.gfs.dead.Store(true)
			}
		}
		if stopped {
			db.cache.Unref() // else the abandoned instance may still use it
		}
		_ = plock.Close()
		gfs.releaseLock()
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	db.mu.in = in
	db.bgCtx, db.bgCancel = context.WithCancel(context.Background())
	db.startLoops(in)
	return db, nil
}

// openInstance opens Pebble in the locked directory. If Pebble opened but
// the store entered its error state while it did (a WAL failure hidden from
// Pebble), it returns the instance, faulted, with the error.
//
// Pebble flushes the write-ahead log it replays before its Open returns,
// and retries a failed flush until it succeeds: on a disk that refuses the
// flush (nearly full, say) its Open does not return until the disk takes
// it. If a flush fails while Pebble opens, openInstance therefore returns
// at once, with the fault and the instance still opening: stop then closes
// Pebble once its Open has returned.
func (db *DB) openInstance() (*instance, error) {
	fault := newFaultState(db.log)
	gfs := newGuardFS(db.opts.FS, fault)
	popts := &pebble.Options{
		FS:            gfs,
		Lock:          db.plock,
		Cache:         db.cache,
		Logger:        pebbleLogger{log: db.log, fault: fault},
		EventListener: eventListener(db.log, fault),
	}
	in := &instance{gfs: gfs, fault: fault, opened: make(chan struct{}), stopped: make(chan struct{})}
	in.ops.Add(1) // Pebble's Open's: stop waits for it
	go func() {
		defer in.ops.Done()
		in.pdb, in.openErr = openPebble(db.dir, popts, fault)
		close(in.opened)
	}()
	select {
	case <-in.opened:
	case <-fault.flushFailed:
		return in, fmt.Errorf("flush of the replayed log failed, pebble still opening: %w", fault.get())
	}
	if in.openErr != nil {
		// Pebble dropped its reference to plock; ours still holds the lock.
		return nil, diskFault(in.openErr)
	}
	return in, fault.get()
}

// diskFault marks err, a failure of the disk or of Pebble, as ErrDiskFault.
func diskFault(err error) error {
	if errors.Is(err, ErrDiskFault) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrDiskFault, err)
}

// startLoops starts in's background goroutines. The caller either has not
// published the DB yet or holds db.mu with the DB open, so that Close's
// wait for db.bg covers them.
func (db *DB) startLoops(in *instance) {
	if db.opts.Durability == NoSync {
		db.bg.Add(1)
		go db.syncLoop(in)
	}
	if db.opts.SweepInterval > 0 || db.opts.MaxBytes > 0 {
		db.bg.Add(1)
		go db.maintainLoop(in, estimate{bytes: db.estBytes.Load(), count: db.estCount.Load()})
	}
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

// closePebble closes pdb, turning a panic into an error.
func closePebble(pdb *pebble.DB) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("pebble panic during close: %v", r)
		}
	}()
	return pdb.Close()
}

// Close stops the background goroutines, waits for in-flight operations,
// flushes Pebble's memtables to sstables (so that the next Open starts with
// nothing to replay and its block cache free for reads) and closes Pebble,
// releasing the directory and the block cache. Every later call on the DB
// fails with ErrClosed. Close is safe to call twice (the second call
// returns nil).
//
// If the store is in its error state, or the flush fails, Close still
// closes Pebble and releases the directory, and returns the fault (wrapping
// ErrDiskFault): writes acknowledged under NoSync may then be lost. If a
// Recover left Pebble still opening on a disk that refuses its flush (see
// the package doc), Close returns the fault at once, and the directory and
// block cache are released once that open has finished.
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
	close(db.closing)

	deadline := time.Now().Add(db.opts.CloseTimeout)
	t := time.NewTimer(db.opts.CloseTimeout)
	defer t.Stop()
	db.bgCancel()
	db.bg.Wait()
	select {
	case db.recoverSem <- struct{}{}: // never released: no Recover runs after Close
	case <-t.C:
		return db.abandon(db.current(), "a recovery in progress did not finish")
	}

	in := db.current()
	ferr := in.fault.get()
	if ferr == nil {
		// Nothing enters in any more (the DB is closed): this count is ours.
		in.ops.Add(1)
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		if err := db.flush(ctx, in); err != nil {
			ferr = fmt.Errorf("flush: %w", err)
		}
		cancel()
	}
	for _, x := range []*instance{in.prev, in} {
		if x == nil {
			continue
		}
		if x.opening() {
			// The last Recover's reopen is waiting for the disk (see
			// openInstance): it closes by itself, and releases all.
			db.finishLater(x, func() {
				_ = db.plock.Close()
				db.lockFS.releaseLock()
				db.cache.Unref()
			})
			return fmt.Errorf("store: close %s: %w", db.dir, x.fault.get())
		}
		select {
		case <-x.stop():
		case <-t.C:
			return db.abandon(in, "pebble did not close")
		}
	}
	_ = db.plock.Close()
	db.lockFS.releaseLock()
	db.cache.Unref()
	switch {
	case ferr != nil:
		return fmt.Errorf("store: close %s: %w", db.dir, ferr)
	case in.stopErr != nil:
		return fmt.Errorf("store: close %s: %w", db.dir, in.stopErr)
	}
	return nil
}

// abandon gives up on in (and the instance it stands in for), releasing
// the directory lock; see Close.
func (db *DB) abandon(in *instance, why string) error {
	err := fmt.Errorf("store: close %s: %s within %v; pebble abandoned: %w", db.dir, why, db.opts.CloseTimeout, ErrDiskFault)
	in.fault.set(err)
	db.log.Error("store: abandoning pebble instance", "dir", db.dir, "reason", why)
	for _, x := range []*instance{in, in.prev} {
		if x != nil && x.gfs != nil {
			x.gfs.dead.Store(true)
		}
	}
	db.lockFS.releaseLock()
	return err
}

// current returns the current instance.
func (db *DB) current() *instance {
	db.mu.RLock()
	defer db.mu.RUnlock()
	return db.mu.in
}

// Err returns nil, or the error that put the store in its error state (it
// wraps ErrDiskFault and, where known, the cause). After a successful
// Recover it returns nil again.
func (db *DB) Err() error { return db.current().fault.get() }

// enter registers an operation on the current instance. On success the
// caller owns one count of in.ops and must release it (or hand it to
// runAsync).
func (db *DB) enter() (*instance, error) {
	db.mu.RLock()
	if db.mu.closed {
		db.mu.RUnlock()
		return nil, ErrClosed
	}
	in := db.mu.in
	in.ops.Add(1)
	db.mu.RUnlock()
	if err := in.fault.get(); err != nil {
		in.ops.Done()
		return nil, err
	}
	return in, nil
}

// enterSame is enter for a background loop tied to in: it fails once in is
// no longer current.
func (db *DB) enterSame(in *instance) error {
	cur, err := db.enter()
	if err != nil {
		return err
	}
	if cur != in {
		cur.ops.Done()
		return errRetired
	}
	return nil
}

var errRetired = errors.New("store: instance retired")

// runAsync runs fn, a call into in's Pebble, on its own goroutine and waits
// for it, for the error state, or for ctx. It takes over one count of
// in.ops from the caller. A Pebble call wedged by a disk fault therefore
// never blocks the caller: it returns the fault and the goroutine is left
// behind. If ctx ends first, the caller gets ctx.Err() and fn may still
// complete. Success is reported only if the instance is not in its error
// state after fn returned, so a write that Pebble could not make durable is
// never acknowledged (see guardFS).
func (db *DB) runAsync(ctx context.Context, in *instance, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		defer in.ops.Done()
		done <- db.protect(in, fn)
	}()
	select {
	case err := <-done:
		if err != nil {
			return err
		}
		return in.fault.get()
	case <-in.fault.ch:
		return in.fault.get()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// flush asks in's Pebble to flush its memtables and waits for the flush,
// for the error state or for ctx. It takes over one count of in.ops, and
// releases it once the flush is scheduled rather than done: Pebble retries a
// failing flush (a full disk) until it is closed, so a caller that held its
// count while waiting would keep the instance from ever being closed, and
// its flush retrying, forever.
func (db *DB) flush(ctx context.Context, in *instance) error {
	scheduled := make(chan (<-chan struct{}), 1)
	err := db.runAsync(ctx, in, func() error {
		flushed, err := in.pdb.AsyncFlush()
		if err == nil {
			scheduled <- flushed
		}
		return err
	})
	if err != nil {
		return err
	}
	flushed := <-scheduled // runAsync returned nil, so fn has sent
	select {
	case <-flushed:
		return in.fault.get()
	case <-in.fault.ch:
		return in.fault.get()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// protect runs fn, turning a panic (Pebble panics on some disk failures)
// into the error state.
func (db *DB) protect(in *instance, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = db.panicked(in, r)
		}
	}()
	return fn()
}

func (db *DB) panicked(in *instance, r any) error {
	db.log.Error("store: recovered pebble panic", "panic", r, "stack", string(debug.Stack()))
	return in.fault.set(fmt.Errorf("pebble panic: %v", r))
}

func (db *DB) now() int64 { return db.clock.Now().UnixNano() }

// expiryAfter returns the expiry for ttl from now (0: none), saturating.
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
// The returned Value is a copy owned by the caller. Errors: ErrEmptyKey,
// ErrKeyTooLarge, ErrClosed, ctx.Err(), or one wrapping ErrDiskFault when
// the store is in its error state or a read fails (which puts it there).
func (db *DB) Get(ctx context.Context, key string) (e Entry, ok bool, err error) {
	if err = ctx.Err(); err != nil {
		return e, false, err
	}
	if err = db.checkKey(key); err != nil {
		return e, false, err
	}
	in, err := db.enter()
	if err != nil {
		return e, false, err
	}
	// One defer, so that it is open-coded (two, with this many returns,
	// would each be pushed on the defer chain and run through it).
	defer func() {
		if r := recover(); r != nil {
			e, ok, err = Entry{}, false, db.panicked(in, r)
		}
		in.ops.Done()
	}()
	val, closer, err := in.pdb.Get(unsafeBytes(key))
	if err != nil {
		if err == pebble.ErrNotFound || errors.Is(err, pebble.ErrNotFound) {
			return e, false, nil
		}
		return e, false, in.fault.set(fmt.Errorf("get: %w", err))
	}
	exp, derr := decodeRecord(val)
	if derr != nil {
		v := victim{key: key, tag: maphash.Bytes(db.seed, val)}
		_ = closer.Close()
		db.noteCorrupt(key, derr)
		in.ops.Add(1) // for deleteIfSame's Pebble call; we still hold ours
		if _, _, err := db.deleteIfSame(ctx, in, []victim{v}); err != nil {
			db.log.Warn("store: could not drop corrupt entry", "key", key, "err", err)
		}
		return e, false, nil
	}
	if exp != 0 && db.now() >= exp {
		_ = closer.Close()
		return e, false, nil
	}
	v := make([]byte, len(val)-recordHeader)
	copy(v, val[recordHeader:])
	_ = closer.Close()
	return Entry{Value: v, Expiry: expiryTime(exp)}, true, nil
}

func (db *DB) noteCorrupt(key string, cause error) {
	db.corrupt.Add(1)
	db.log.Warn("store: corrupt entry dropped", "key", key, "err", cause)
}

// Set stores value under key, to expire ttl from now (0: never). Errors:
// ErrInvalidTTL for a negative ttl, ErrEmptyKey, ErrKeyTooLarge,
// ErrValueTooLarge, ErrClosed, ctx.Err(), or one wrapping ErrDiskFault.
// Under Sync durability a nil error means the write is on disk. If ctx ends
// while the write is in flight, Set returns ctx.Err() and the write may or
// may not take effect. The store does not keep value.
func (db *DB) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if ttl < 0 {
		return fmt.Errorf("%w: %v", ErrInvalidTTL, ttl)
	}
	return db.set(ctx, key, value, db.expiryAfter(ttl))
}

// SetExpiry stores value under key, to expire at expiry (the zero Time:
// never). An expiry not after now stores an entry that is never returned.
// Errors as for Set, without ErrInvalidTTL.
func (db *DB) SetExpiry(ctx context.Context, key string, value []byte, expiry time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return db.set(ctx, key, value, expiryNanos(expiry))
}

func (db *DB) set(ctx context.Context, key string, value []byte, exp int64) error {
	if err := db.checkKey(key); err != nil {
		return err
	}
	if err := db.checkValue(len(value)); err != nil {
		return err
	}
	in, err := db.enter()
	if err != nil {
		return err
	}
	b := in.pdb.NewBatch()
	n := putEntry(b, key, value, exp)
	return db.apply(ctx, in, b, n, 1, db.wo)
}

// Delete removes key. Deleting a missing key is not an error. Errors:
// ErrEmptyKey, ErrKeyTooLarge, ErrClosed, ctx.Err(), or one wrapping
// ErrDiskFault. Under NoSync durability the delete, like a write, is
// durable only after the next sync; a Batch committed with CommitSync
// makes it durable before returning.
func (db *DB) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := db.checkKey(key); err != nil {
		return err
	}
	in, err := db.enter()
	if err != nil {
		return err
	}
	b := in.pdb.NewBatch()
	_ = b.Delete(unsafeBytes(key), nil) // copies the key
	return db.apply(ctx, in, b, 0, 0, db.wo)
}

// Sync makes every write acknowledged so far durable: it fsyncs Pebble's
// write-ahead log. Under Sync durability there is nothing left to do, but
// it still reports the error state. Errors: ErrClosed, ctx.Err(), or one
// wrapping ErrDiskFault, in particular when a NoSync write acknowledged
// earlier could not be written.
func (db *DB) Sync(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	in, err := db.enter()
	if err != nil {
		return err
	}
	db.unsynced.Store(0)
	return db.runAsync(ctx, in, func() error { return in.pdb.LogData(nil, pebble.Sync) })
}

// putEntry encodes a record of value into b under key and returns the
// logical size.
func putEntry(b *pebble.Batch, key string, value []byte, exp int64) int64 {
	size := recordSize(len(value))
	op := b.SetDeferred(len(key), size)
	copy(op.Key, key)
	putRecord(op.Value, value, exp)
	_ = op.Finish()
	return int64(len(key) + size)
}

// apply commits b (whose ownership it takes) to in with write options wo.
// The caller must have entered in; apply releases that count.
//
// A healthy store applies on the caller's goroutine: that is as fast as raw
// Pebble. While Pebble reports a write stall, which never ends if the disk
// has failed under it, writes go through runAsync instead, so their callers
// can be released by the error state or ctx.
func (db *DB) apply(ctx context.Context, in *instance, b *pebble.Batch, bytes, count int64, wo *pebble.WriteOptions) error {
	var err error
	if in.fault.stalled.Load() {
		err = db.runAsync(ctx, in, func() error { return applyBatch(in, b, wo) })
	} else {
		err = db.protect(in, func() error { return applyBatch(in, b, wo) })
		in.ops.Done()
		if err == nil {
			err = in.fault.get()
		}
	}
	if err != nil {
		return err
	}
	if wo == pebble.NoSync {
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

// applyBatch commits b under in.writeMu held shared.
func applyBatch(in *instance, b *pebble.Batch, wo *pebble.WriteOptions) error {
	in.writeMu.RLock()
	defer in.writeMu.RUnlock()
	if err := in.pdb.Apply(b, wo); err != nil {
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
// tag, under in.writeMu held exclusively, and returns how many it deleted
// and their sizes. The deletes are not synced: losing them in a crash
// brings back entries that are expired, corrupt or evictable, which the
// next pass handles. The caller must hand it one count of in.ops.
func (db *DB) deleteIfSame(ctx context.Context, in *instance, vs []victim) (n int, bytes int64, err error) {
	var dn int
	var freed int64
	err = db.runAsync(ctx, in, func() error {
		in.writeMu.Lock()
		defer in.writeMu.Unlock()
		b := in.pdb.NewBatch()
		for _, v := range vs {
			val, closer, err := in.pdb.Get(unsafeBytes(v.key))
			if err == pebble.ErrNotFound || errors.Is(err, pebble.ErrNotFound) {
				continue
			}
			if err != nil {
				_ = b.Close()
				return in.fault.set(fmt.Errorf("get: %w", err))
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
		if err := in.pdb.Apply(b, pebble.NoSync); err != nil {
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
	// (keys plus values plus EntryOverhead each): exact as of the last
	// maintenance pass, plus every Set since (an overwrite counts as new, a
	// Delete subtracts nothing) minus evictions. Before the first pass they
	// are measured from the tables' properties shortly after Open, which
	// count overwritten, deleted and expired entries not yet compacted away.
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
	// Reopens counts successful Recover calls that reopened the directory.
	Reopens int64
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
		Reopens:    db.reopens.Load(),
		Durability: db.opts.Durability,
		Err:        db.Err(),
	}
	if in, err := db.enter(); err == nil {
		func() {
			defer in.ops.Done()
			defer func() { _ = recover() }()
			m := in.pdb.Metrics()
			s.DiskBytes = m.DiskSpaceUsage()
		}()
	}
	return s
}
