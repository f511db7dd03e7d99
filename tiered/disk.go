package tiered

import (
	"context"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/thermoscache/thermos/internal/envelope"
	"github.com/thermoscache/thermos/store"
)

// maxPendingWrites bounds the write-behind queue's value writes; past it a
// write is replaced by a delete (deletes are never dropped: a dropped delete
// could leave an old value on disk).
const maxPendingWrites = 64 << 10

// writeBehind applies disk writes off the caller's path, in batches, in the
// order they were queued. Reads consult pending before the disk, so a value
// written but not yet flushed is never shadowed by an older one on disk.
type writeBehind struct {
	db       *store.DB
	interval time.Duration
	log      *slog.Logger

	mu struct {
		sync.Mutex
		queue   []diskOp
		pending map[string]diskOp // latest queued op per key
		writes  int               // value writes in queue
		seq     uint64            // of the last queued op
		closed  bool
	}
	kick    chan struct{}
	flushed chan struct{} // closed and replaced after every flush
	done    chan struct{}

	dropped, failed atomic.Int64
	applied         atomic.Int64 // ops committed to disk
}

// diskOp is one queued write; e == nil deletes key.
type diskOp struct {
	key string
	e   *envelope.Entry
	seq uint64
}

func newWriteBehind(db *store.DB, interval time.Duration, log *slog.Logger) *writeBehind {
	w := &writeBehind{db: db, interval: interval, log: log,
		kick: make(chan struct{}, 1), flushed: make(chan struct{}), done: make(chan struct{})}
	w.mu.pending = make(map[string]diskOp)
	go w.run()
	return w
}

// put queues a write of e for key, or a delete when e is nil. It never
// blocks, so it is safe on the tracking connection's reader goroutine.
func (w *writeBehind) put(key string, e *envelope.Entry) {
	w.mu.Lock()
	if w.mu.closed {
		w.mu.Unlock()
		return
	}
	if e != nil && w.mu.writes >= maxPendingWrites {
		w.dropped.Add(1)
		e = nil
	}
	if e != nil {
		w.mu.writes++
	}
	w.mu.seq++
	op := diskOp{key: key, e: e, seq: w.mu.seq}
	w.mu.queue = append(w.mu.queue, op)
	w.mu.pending[key] = op
	n := len(w.mu.queue)
	w.mu.Unlock()
	if n >= DefaultWriteBatch {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

// lookup returns the latest queued op for key, if any.
func (w *writeBehind) lookup(key string) (op diskOp, ok bool) {
	w.mu.Lock()
	op, ok = w.mu.pending[key]
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

// flush writes everything queued in one batch per DefaultWriteBatch ops.
// It reports whether the queue is closed and empty.
func (w *writeBehind) flush() (closed bool) {
	w.mu.Lock()
	q := w.mu.queue
	w.mu.queue = nil
	w.mu.writes = 0
	closed = w.mu.closed
	last := w.mu.seq
	w.mu.Unlock()

	for len(q) > 0 {
		n := min(len(q), DefaultWriteBatch)
		w.apply(q[:n])
		q = q[n:]
	}

	w.mu.Lock()
	// Forget pending ops that are now on disk, unless a newer op replaced
	// them meanwhile (it is still queued).
	for k, p := range w.mu.pending {
		if p.seq <= last {
			delete(w.mu.pending, k)
		}
	}
	f := w.flushed
	w.flushed = make(chan struct{})
	closed = closed || w.mu.closed && len(w.mu.queue) == 0
	w.mu.Unlock()
	close(f)
	return closed
}

func (w *writeBehind) apply(ops []diskOp) {
	b := w.db.NewBatch()
	defer b.Close()
	for _, op := range ops {
		var err error
		if op.e == nil {
			err = b.Delete(op.key)
		} else {
			err = b.SetEntry(op.key, op.e)
		}
		if err != nil {
			w.failed.Add(1)
			w.log.Warn("tiered: disk write refused", "key", op.key, "err", err)
		}
	}
	if err := b.Commit(context.Background()); err != nil {
		w.failed.Add(int64(len(ops)))
		w.log.Error("tiered: disk batch failed", "ops", len(ops), "err", err)
		return
	}
	w.applied.Add(int64(len(ops)))
}

// sync waits until everything queued before the call is on disk.
func (w *writeBehind) sync(ctx context.Context) error {
	w.mu.Lock()
	f := w.flushed
	empty := len(w.mu.queue) == 0
	w.mu.Unlock()
	if empty {
		return nil
	}
	select {
	case w.kick <- struct{}{}:
	default:
	}
	// The flush in progress may have taken its queue before our ops were
	// added; the one after it has them.
	for range 2 {
		select {
		case <-f:
		case <-ctx.Done():
			return ctx.Err()
		}
		w.mu.Lock()
		f = w.flushed
		empty = len(w.mu.queue) == 0
		w.mu.Unlock()
		if empty {
			return nil
		}
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// close flushes what is queued and stops the goroutine.
func (w *writeBehind) close() {
	w.mu.Lock()
	w.mu.closed = true
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
	<-w.done
}

// trust remembers which keys on disk are known to match Redis: written or
// revalidated by this process since the last epoch bump, and not
// invalidated since. A disk hit for a key it does not trust is revalidated
// before it is served. It keeps an 8-byte hash per key, not the key.
//
// A check-then-add races with invalidations exactly as a memory fill does,
// so adds are guarded the same way: a ticket taken before the check carries
// the generation of the key's bucket; an invalidation bumps it; an add whose
// ticket is older is dropped (at worst a later needless revalidation).
type trust struct {
	seed maphash.Seed
	gens [1024]atomic.Uint64

	mu struct {
		sync.Mutex
		epoch uint64
		keys  map[uint64]struct{}
	}
}

type trustTicket struct {
	h, gen, epoch uint64
}

func newTrust() *trust {
	t := &trust{seed: maphash.MakeSeed()}
	t.mu.keys = make(map[uint64]struct{})
	return t
}

func (t *trust) ticket(key string) trustTicket {
	h := maphash.String(t.seed, key)
	t.mu.Lock()
	e := t.mu.epoch
	t.mu.Unlock()
	return trustTicket{h: h, gen: t.gens[h%uint64(len(t.gens))].Load(), epoch: e}
}

func (t *trust) add(tk trustTicket) {
	t.mu.Lock()
	if tk.epoch == t.mu.epoch && t.gens[tk.h%uint64(len(t.gens))].Load() == tk.gen {
		t.mu.keys[tk.h] = struct{}{}
	}
	t.mu.Unlock()
}

func (t *trust) has(key string) bool {
	h := maphash.String(t.seed, key)
	t.mu.Lock()
	_, ok := t.mu.keys[h]
	t.mu.Unlock()
	return ok
}

func (t *trust) invalidate(key string) {
	h := maphash.String(t.seed, key)
	t.gens[h%uint64(len(t.gens))].Add(1)
	t.mu.Lock()
	delete(t.mu.keys, h)
	t.mu.Unlock()
}

// reset forgets everything: after an epoch bump no disk entry is trusted.
func (t *trust) reset() {
	t.mu.Lock()
	t.mu.epoch++
	t.mu.keys = make(map[uint64]struct{})
	t.mu.Unlock()
}
