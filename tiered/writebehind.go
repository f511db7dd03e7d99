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
type writeBehind struct {
	db       *store.DB
	mem      *tracking.Cache // the guard fills and writes present
	interval time.Duration
	log      *slog.Logger

	mu struct {
		sync.Mutex
		queue   []*diskOp
		pending map[string]*diskOp // latest queued op per key
		seq     uint64             // of the last queued op
		closed  bool
	}
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
}

// diskOp is one queued write; data == nil deletes key.
type diskOp struct {
	key    string
	data   []byte
	expiry int64 // hard expiry, Unix ns; 0: none
	seq    uint64
	done   chan error // the commit's result, for a caller that waits; else nil
}

func newWriteBehind(db *store.DB, mem *tracking.Cache, interval time.Duration, log *slog.Logger) *writeBehind {
	w := &writeBehind{db: db, mem: mem, interval: interval, log: log,
		kick: make(chan struct{}, 1), flushed: make(chan struct{}), done: make(chan struct{})}
	w.mu.pending = make(map[string]*diskOp)
	go w.run()
	return w
}

// put queues a write of data for key (nil: a delete). guard, if not nil,
// marks a fill and is the ticket it holds: it is checked under the queue's
// lock, so an invalidation either bumped the generation before (the fill is
// dropped, ok false) or queues its delete after this op; a fill is also
// dropped when the queue is full. Writes and deletes (guard nil) are always
// queued. wait gives the op a channel that receives its commit's result.
// put never blocks, so it is safe on the tracking connection's reader
// goroutine.
func (w *writeBehind) put(key string, data []byte, expiry int64, guard *tracking.Ticket, wait bool) (*diskOp, bool) {
	w.mu.Lock()
	if w.mu.closed || guard != nil && !w.mem.Valid(*guard) {
		w.mu.Unlock()
		return nil, false
	}
	if guard != nil && len(w.mu.queue) >= maxPendingFills { // a fill
		w.mu.Unlock()
		w.dropped.Add(1)
		return nil, false
	}
	w.mu.seq++
	op := &diskOp{key: key, data: data, expiry: expiry, seq: w.mu.seq}
	if wait {
		op.done = make(chan error, 1)
	}
	w.mu.queue = append(w.mu.queue, op)
	w.mu.pending[key] = op
	n := len(w.mu.queue)
	w.mu.Unlock()
	w.count.Add(1)
	if wait || n >= DefaultWriteBatch {
		w.wake()
	}
	return op, true
}

func (w *writeBehind) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// lookup returns the latest queued op for key, if any.
func (w *writeBehind) lookup(key string) (*diskOp, bool) {
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
// reports whether the queue is closed and empty.
func (w *writeBehind) flush() (closed bool) {
	w.mu.Lock()
	q := w.mu.queue
	w.mu.queue = nil
	w.mu.Unlock()

	for len(q) > 0 {
		n := min(len(q), DefaultWriteBatch)
		w.apply(q[:n])
		for _, op := range q[:n] {
			w.applied.Store(op.seq)
		}
		w.mu.Lock()
		// Forget pending ops that are now on disk, unless a newer op
		// replaced them meanwhile (it is still queued).
		for _, op := range q[:n] {
			if w.mu.pending[op.key] == op {
				delete(w.mu.pending, op.key)
			}
		}
		w.mu.Unlock()
		q = q[n:]
	}

	w.mu.Lock()
	closed = w.mu.closed && len(w.mu.queue) == 0
	w.mu.Unlock()
	w.flushMu.Lock()
	close(w.flushed)
	w.flushed = make(chan struct{})
	w.flushMu.Unlock()
	return closed
}

func (w *writeBehind) apply(ops []*diskOp) {
	b := w.db.NewBatch()
	defer b.Close()
	var err error
	for _, op := range ops {
		if op.data == nil {
			err = b.Delete(op.key)
		} else {
			err = b.SetExpiry(op.key, op.data, expiryTime(op.expiry))
		}
		if err != nil {
			break
		}
	}
	if err == nil {
		err = b.Commit(context.Background())
	}
	if err != nil {
		err = fmt.Errorf("disk write of %d entries: %w", len(ops), err)
		w.failed.Add(int64(len(ops)))
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
// returns the last write error not reported yet.
func (w *writeBehind) sync(ctx context.Context) error {
	w.mu.Lock()
	target := w.mu.seq
	w.mu.Unlock()
	for w.applied.Load() < target {
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
