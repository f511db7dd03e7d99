package tiered

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/thermoscache/thermos/store"
	"github.com/thermoscache/thermos/tracking"
)

// maxPendingFills bounds the write-behind queue for fills: past it a fill
// is not queued (it was only a copy). Acknowledged writes and deletes are
// always queued: dropping one would leave an older value on disk.
const maxPendingFills = 64 << 10

// writeBehind applies disk writes off the caller's path, in batches, in the
// order they were queued. Reads consult pending before the disk, so a value
// queued but not yet flushed is never shadowed by an older one on disk.
//
// While the disk tier is off (see diskfault.go) nothing is queued: the keys
// of the acknowledged writes and deletes it could not take are remembered as
// suspects instead, and their disk copies deleted before the tier is back.
type writeBehind struct {
	db       atomic.Pointer[store.DB] // nil until the store opens (see diskTier.heal)
	mem      *tracking.Cache          // the guard fills and writes present
	interval time.Duration
	log      *slog.Logger
	// onFault is called, off the lock, when a batch fails on a disk fault.
	onFault func(err error)
	// synced: every commit of the store is durable (Sync durability).
	synced bool

	// off is the disk tier's fault (wrapping ErrDisk) while it is off, nil
	// while it works. It is set and cleared under mu, and read without it.
	off atomic.Pointer[error]

	mu struct {
		sync.Mutex
		queue   []*diskOp
		pending map[string]*diskOp // latest queued op per key; see npending
		seq     uint64             // of the last queued op
		closed  bool
		susp    suspects // while off, or since
		// unsynced are the keys of writes committed since the last sync
		// (see noteUnsyncedLocked).
		unsynced []string
	}
	// npending is len(mu.pending), stored under mu after every change of
	// it, so that lookup can skip the lock when nothing is queued.
	npending atomic.Int64
	// applied is the seq of the last op whose batch was committed (or
	// failed); flushed is closed and replaced after every flush.
	applied atomic.Uint64
	flushMu sync.Mutex
	flushed chan struct{}
	kick    chan struct{}
	done    chan struct{}

	// unreported is the last write error that Flush or Close has not
	// returned yet.
	unreported       atomic.Pointer[error]
	dropped, failed  atomic.Int64
	committed, count atomic.Int64 // ops committed; ops queued
	skipped          atomic.Int64 // writes and deletes not queued while off
	// faults and recoveries count the tier's turning off and on, with
	// off itself, under mu: a reader never sees one without the other.
	faults, recoveries atomic.Int64
}

// diskOp is one queued write; data == nil deletes key.
type diskOp struct {
	key     string
	data    []byte
	expiry  int64 // hard expiry, Unix ns; 0: none
	seq     uint64
	fill    bool       // a copy, not an acknowledged write: not remembered if lost
	sync    bool       // its batch is committed with an fsync (CommitSync)
	barrier bool       // no write of its own, only sync: not in pending
	done    chan error // the commit's result, for a caller that waits; else nil
}

// queueOpts says how put queues an op.
type queueOpts struct {
	wait bool // give the op a channel that receives its commit's result
	sync bool // commit it (and everything before it) durably
}

func newWriteBehind(db *store.DB, mem *tracking.Cache, interval time.Duration, synced bool, log *slog.Logger, onFault func(error)) *writeBehind {
	w := &writeBehind{mem: mem, interval: interval, synced: synced, log: log, onFault: onFault,
		kick: make(chan struct{}, 1), flushed: make(chan struct{}), done: make(chan struct{})}
	w.db.Store(db)
	w.mu.pending = make(map[string]*diskOp)
	go w.run()
	return w
}

// fault returns the disk tier's fault while it is off, else nil.
func (w *writeBehind) fault() error {
	if p := w.off.Load(); p != nil {
		return *p
	}
	return nil
}

// checkStore is fault, after turning the tier off if the store entered its
// error state by itself (a background flush, compaction or log sync
// failed) with no write or read of ours to notice.
func (w *writeBehind) checkStore() error {
	if err := w.fault(); err != nil {
		return err
	}
	db := w.db.Load()
	if db == nil {
		return nil
	}
	err := db.Err()
	if err == nil {
		return nil
	}
	first, fault := w.stepAside(asDiskFault(err), nil)
	if first {
		w.onFault(fault)
	}
	return fault
}

// put queues a write of data for key (nil: a delete). guard, if not nil,
// marks a fill and is the ticket it holds: it is checked under the queue's
// lock, so an invalidation either bumped the generation before (the fill is
// dropped, ok false) or queues its delete after this op; a fill is also
// dropped when the queue is full. Writes and deletes (guard nil) are always
// queued while the tier works; while it is off (ok false, and fault says
// so) their keys become suspects instead. put never blocks, so it is safe
// on the tracking connection's reader goroutine.
func (w *writeBehind) put(key string, data []byte, expiry int64, guard *tracking.Ticket, qo queueOpts) (*diskOp, bool) {
	w.mu.Lock()
	if w.mu.closed || guard != nil && !w.mem.Valid(*guard) {
		w.mu.Unlock()
		return nil, false
	}
	if w.off.Load() != nil {
		if guard == nil {
			w.mu.susp.addKey(key)
		}
		w.mu.Unlock()
		if guard == nil {
			w.skipped.Add(1)
		}
		return nil, false
	}
	if guard != nil && len(w.mu.queue) >= maxPendingFills { // a fill
		w.mu.Unlock()
		w.dropped.Add(1)
		return nil, false
	}
	op := w.queueLocked(key, data, expiry, qo)
	op.fill = guard != nil
	n := len(w.mu.queue)
	w.mu.Unlock()
	w.count.Add(1)
	if qo.wait || n >= DefaultWriteBatch {
		w.wake()
	}
	return op, true
}

// queueLocked appends an op. REQUIRES: w.mu held.
func (w *writeBehind) queueLocked(key string, data []byte, expiry int64, qo queueOpts) *diskOp {
	w.mu.seq++
	op := &diskOp{key: key, data: data, expiry: expiry, seq: w.mu.seq, sync: qo.sync}
	if qo.wait {
		op.done = make(chan error, 1)
	}
	w.mu.queue = append(w.mu.queue, op)
	w.mu.pending[key] = op
	w.npending.Store(int64(len(w.mu.pending)))
	return op
}

func (w *writeBehind) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// lookup returns the latest queued op for key, if any. (None while the tier
// is off: nothing is queued then.)
//
// With nothing queued it takes no lock: a read on a disk hit does not
// serialise with every other. That is no weaker than looking under the
// lock: npending is stored under mu, so a zero read here was stored by a
// critical section after any op queued before this call, and that op had
// then left pending, its batch committed to the store (or the tier turned
// off, when the lock would find nothing either).
func (w *writeBehind) lookup(key string) (*diskOp, bool) {
	if w.npending.Load() == 0 {
		return nil, false
	}
	w.mu.Lock()
	op, ok := w.mu.pending[key]
	w.mu.Unlock()
	return op, ok
}

func (w *writeBehind) run() {
	defer close(w.done)
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-w.kick:
		}
		if closed := w.flush(); closed {
			return
		}
	}
}

// flush writes everything queued, DefaultWriteBatch ops per batch, and
// reports whether the queue is closed and empty. A batch that fails on a
// disk fault turns the tier off: it and every op after it are given up
// (their keys become suspects, see stepAside).
func (w *writeBehind) flush() (closed bool) {
	w.mu.Lock()
	q := w.mu.queue
	w.mu.queue = nil
	w.mu.Unlock()

	var last uint64 // the seq of the last op taken
	if len(q) > 0 {
		last = q[len(q)-1].seq
	}
	for len(q) > 0 {
		if err := w.fault(); err != nil {
			w.stepAside(err, q) // off since the batch was taken: not applied
			break
		}
		n := min(len(q), DefaultWriteBatch)
		durable, err := w.apply(q[:n])
		if isDiskFault(err) {
			if first, fault := w.stepAside(asDiskFault(err), q); first {
				w.onFault(fault)
			}
			break
		}
		w.mu.Lock()
		// Forget pending ops that are now on disk, unless a newer op
		// replaced them meanwhile (it is still queued).
		for _, op := range q[:n] {
			if w.mu.pending[op.key] == op {
				delete(w.mu.pending, op.key)
			}
		}
		w.npending.Store(int64(len(w.mu.pending)))
		if err == nil {
			w.noteUnsyncedLocked(q[:n], durable)
		}
		unsynced := len(w.mu.unsynced)
		w.mu.Unlock()
		q = q[n:]
		if unsynced >= maxSuspects/2 {
			w.syncStore()
		}
	}
	w.syncStore()
	w.advance(last)

	w.mu.Lock()
	closed = w.mu.closed && len(w.mu.queue) == 0
	w.mu.Unlock()
	w.flushMu.Lock()
	close(w.flushed)
	w.flushed = make(chan struct{})
	w.flushMu.Unlock()
	return closed
}

// noteUnsyncedLocked records the keys of acknowledged writes in a batch
// just committed without an fsync (a NoSync store): until the next sync, a
// disk fault and the store's Recover may lose them, and bring back older
// copies. A durable batch makes everything before it durable. While the
// tier is off (it turned off meanwhile) they are suspects at once.
// REQUIRES: w.mu held.
func (w *writeBehind) noteUnsyncedLocked(ops []*diskOp, durable bool) {
	switch {
	case w.synced:
	case durable:
		w.mu.unsynced = w.mu.unsynced[:0]
	default:
		off := w.off.Load() != nil
		for _, op := range ops {
			switch {
			case op.fill || op.barrier:
			case off:
				w.mu.susp.addKey(op.key)
			default:
				w.mu.unsynced = append(w.mu.unsynced, op.key)
			}
		}
	}
}

// syncStore makes the batches committed since the last sync durable, or,
// if the disk fails it, turns the tier off with their keys as suspects.
func (w *writeBehind) syncStore() {
	w.mu.Lock()
	n := len(w.mu.unsynced)
	w.mu.Unlock()
	if n == 0 {
		return
	}
	err := w.db.Load().Sync(context.Background())
	switch {
	case err == nil:
		w.mu.Lock()
		w.mu.unsynced = w.mu.unsynced[:copy(w.mu.unsynced, w.mu.unsynced[n:])]
		w.mu.Unlock()
	case isDiskFault(err):
		if first, fault := w.stepAside(asDiskFault(err), nil); first {
			w.onFault(fault)
		}
	default:
		w.log.Warn("tiered: disk sync failed", "err", err)
	}
}

// advance records that every op up to seq was applied or given up.
func (w *writeBehind) advance(seq uint64) {
	for {
		cur := w.applied.Load()
		if seq <= cur || w.applied.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// apply commits ops in one batch, durably if one of them asks for it (it
// reports whether), and returns the error. On a disk fault it leaves the
// ops to stepAside; otherwise it reports the result to their waiters.
func (w *writeBehind) apply(ops []*diskOp) (durable bool, err error) {
	db := w.db.Load()
	b := db.NewBatch()
	defer b.Close()
	for _, op := range ops {
		durable = durable || op.sync
		if op.barrier {
			continue
		}
		if op.data == nil {
			err = b.Delete(op.key)
		} else {
			err = b.SetExpiry(op.key, op.data, expiryTime(op.expiry))
		}
		if err != nil {
			break
		}
	}
	switch {
	case err != nil:
	case b.Len() == 0 && durable:
		err = db.Sync(context.Background()) // barriers only
	case durable:
		err = b.CommitSync(context.Background())
	default:
		err = b.Commit(context.Background())
	}
	if err != nil {
		err = fmt.Errorf("disk write of %d entries: %w", len(ops), err)
		w.failed.Add(int64(len(ops)))
		if isDiskFault(err) {
			return durable, err
		}
		w.unreported.Store(&err)
		w.log.Error("tiered: disk batch failed", "ops", len(ops), "err", err)
	} else {
		w.committed.Add(int64(len(ops)))
	}
	for _, op := range ops {
		if op.done != nil {
			op.done <- err
		}
	}
	return durable, err
}

// expiryTime is ns as a Time, the zero Time for 0.
func expiryTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// wait waits for op's commit and returns its result.
func (w *writeBehind) wait(ctx context.Context, op *diskOp) error {
	select {
	case err := <-op.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sync waits until everything queued before the call is on disk, and
// returns the last write error not reported yet; while the tier is off, it
// returns its fault at once.
func (w *writeBehind) sync(ctx context.Context) error {
	w.mu.Lock()
	target := w.mu.seq
	w.mu.Unlock()
	for w.applied.Load() < target {
		if err := w.fault(); err != nil {
			w.unreported.Store(nil) // this is the news
			return err
		}
		w.flushMu.Lock()
		f := w.flushed
		w.flushMu.Unlock()
		if w.applied.Load() >= target {
			break
		}
		w.wake()
		select {
		case <-f:
		case <-w.done:
			return w.report()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := w.checkStore(); err != nil {
		w.unreported.Store(nil)
		return err
	}
	return w.report()
}

func (w *writeBehind) report() error {
	if p := w.unreported.Swap(nil); p != nil {
		return *p
	}
	return nil
}

// close flushes what is queued, stops the goroutine and returns the last
// write error not reported yet.
func (w *writeBehind) close() error {
	w.mu.Lock()
	w.mu.closed = true
	w.mu.Unlock()
	w.wake()
	<-w.done
	return w.report()
}
