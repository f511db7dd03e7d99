package store

import (
	"container/heap"
	"context"
	"fmt"
	"hash/maphash"
	"math"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// deleteChunk is how many entries a pass deletes per exclusive hold of writeMu.
const deleteChunk = 256

// syncLoop fsyncs in's WAL every SyncInterval under NoSync, if anything was
// written since the last sync. It stops when Close cancels bgCtx or in
// enters its error state.
func (db *DB) syncLoop(in *instance) {
	defer db.bg.Done()
	t := time.NewTicker(db.opts.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-db.bgCtx.Done():
			return
		case <-in.fault.ch:
			return
		case <-t.C:
		}
		if db.unsynced.Swap(0) == 0 {
			continue
		}
		if err := db.enterSame(in); err != nil {
			return
		}
		err := db.runAsync(db.bgCtx, in, func() error { return in.pdb.LogData(nil, pebble.Sync) })
		if err != nil && db.bgCtx.Err() == nil {
			db.log.Warn("store: wal sync failed", "err", err)
		}
	}
}

// maintainLoop measures in from its tables' properties at start (measure),
// then runs a maintenance pass every SweepInterval (if positive) and
// whenever a write pushes the byte estimate over MaxBytes. It runs the
// first pass at once if the measure failed or found the store over 90% of
// MaxBytes. It runs only if sweeping is on or MaxBytes is set, and stops
// when Close cancels bgCtx or in enters its error state.
//
// No pass at start unless the budget needs one: a pass reads every entry,
// and a caller that opens the store to read it all (a warm start) would
// read it alongside, on another core, through a block cache too small to
// hold what one of the two has read until the other gets there (measured:
// at 1,000,000 entries every block is read and decompressed twice).
func (db *DB) maintainLoop(in *instance, base estimate) {
	defer db.bg.Done()
	var tick <-chan time.Time
	if db.opts.SweepInterval > 0 {
		t := time.NewTicker(db.opts.SweepInterval)
		defer t.Stop()
		tick = t.C
	}
	run := !db.measure(in, base)
	budget := false
	for {
		if run {
			if err := db.enterSame(in); err != nil {
				return
			}
			err := db.pass(db.bgCtx, in, budget)
			in.ops.Done()
			if err != nil && db.bgCtx.Err() == nil && in.fault.get() == nil {
				db.log.Warn("store: maintenance pass failed", "err", err)
			}
		}
		run = true
		select {
		case <-db.bgCtx.Done():
			return
		case <-in.fault.ch:
			return
		case <-tick:
			budget = false
		case <-db.kick:
			budget = true
		}
	}
}

// estimate is the size estimates at one moment.
type estimate struct{ bytes, count int64 }

// measure sets the size estimates from in's tables' properties (see
// tableEstimate), keeping the writes counted since base, the estimates
// when in opened, and reports whether the first pass can wait: false if
// the tables could not be read, or if the store may be over its budget.
func (db *DB) measure(in *instance, base estimate) bool {
	if err := db.enterSame(in); err != nil {
		return false
	}
	defer in.ops.Done()
	db.passMu.Lock() // not during a Sweep: it sets them exactly
	defer db.passMu.Unlock()
	count, bytes, err := func() (count, bytes int64, err error) {
		defer func() {
			if r := recover(); r != nil {
				err = db.panicked(in, r)
			}
		}()
		return tableEstimate(in)
	}()
	if err != nil {
		return false
	}
	// A write flushed to a table since in opened is counted twice: an
	// estimate, above the truth, until the first pass.
	db.estBytes.Add(bytes - base.bytes)
	db.estCount.Add(count - base.count)
	limit := db.opts.MaxBytes
	return limit == 0 || bytes <= limit-limit/10
}

// Sweep runs one maintenance pass now and waits for it: it deletes expired
// and corrupt entries, recounts Stats.Entries and Stats.Bytes exactly, and
// evicts if the store is over MaxBytes. The background sweeper calls the
// same code every Options.SweepInterval. Errors: ErrClosed, ctx.Err(), or
// one wrapping ErrDiskFault.
func (db *DB) Sweep(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	in, err := db.enter()
	if err != nil {
		return err
	}
	defer in.ops.Done()
	return db.pass(ctx, in, false)
}

// pass is one maintenance pass on in. The caller holds one count of in.ops.
//
// Eviction: if live bytes exceed MaxBytes, or the pass was started because
// the estimate did (budget) and they exceed the low-water mark of 90% of
// MaxBytes, entries are deleted soonest expiry first (entries without
// expiry last) until live bytes are at the low-water mark. Evicting to a low
// water mark keeps passes from running back to back.
func (db *DB) pass(ctx context.Context, in *instance, budget bool) error {
	db.passMu.Lock()
	defer db.passMu.Unlock()
	startEst := db.estBytes.Load()
	startCount := db.estCount.Load()

	now := db.now()
	var total, count int64
	var dead, corrupt []victim
	err := db.iterate(ctx, in, func(key, val []byte) error {
		exp, derr := decodeRecord(val)
		switch {
		case derr != nil:
			k := string(key)
			db.noteCorrupt(k, derr)
			corrupt = append(corrupt, victim{key: k, tag: maphash.Bytes(db.seed, val)})
		case expired(exp, now):
			dead = append(dead, victim{key: string(key), tag: maphash.Bytes(db.seed, val), size: int64(len(key) + len(val))})
		default:
			total += int64(len(key) + len(val))
			count++
			return nil
		}
		if len(dead) >= deleteChunk {
			if err := db.dropExpired(ctx, in, dead); err != nil {
				return err
			}
			dead = dead[:0]
		}
		if len(corrupt) >= deleteChunk {
			if err := db.drop(ctx, in, corrupt); err != nil {
				return err
			}
			corrupt = corrupt[:0]
		}
		return nil
	})
	if err == nil && len(dead) > 0 {
		err = db.dropExpired(ctx, in, dead)
	}
	if err == nil && len(corrupt) > 0 {
		err = db.drop(ctx, in, corrupt)
	}
	if err != nil {
		return err
	}
	// Writes during the pass were added to the estimates and are not in
	// total: keep them.
	db.estBytes.Add(total - startEst)
	db.estCount.Add(count - startCount)

	if max := db.opts.MaxBytes; max > 0 {
		low := max - max/10
		if total > max || (budget && total > low) {
			if err := db.evict(ctx, in, total-low); err != nil {
				return err
			}
		}
	}
	db.passes.Add(1)
	return nil
}

func (db *DB) drop(ctx context.Context, in *instance, vs []victim) error {
	in.ops.Add(1)
	_, _, err := db.deleteIfSame(ctx, in, vs)
	return err
}

func (db *DB) dropExpired(ctx context.Context, in *instance, vs []victim) error {
	in.ops.Add(1)
	n, _, err := db.deleteIfSame(ctx, in, vs)
	db.expired.Add(int64(n))
	return err
}

// iterate calls fn for every stored key and raw value. The slices are only
// valid during the call. Pebble read errors enter the error state.
func (db *DB) iterate(ctx context.Context, in *instance, fn func(key, val []byte) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = db.panicked(in, r)
		}
	}()
	it, err := in.pdb.NewIter(nil)
	if err != nil {
		return in.fault.set(fmt.Errorf("iterate: %w", err))
	}
	defer func() {
		if cerr := it.Close(); cerr != nil && err == nil {
			err = in.fault.set(fmt.Errorf("iterate: %w", cerr))
		}
	}()
	n := 0
	for valid := it.First(); valid; valid = it.Next() {
		if n++; n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		val, verr := it.ValueAndErr()
		if verr != nil {
			return in.fault.set(fmt.Errorf("iterate: %w", verr))
		}
		if err := fn(it.Key(), val); err != nil {
			return err
		}
	}
	if err := it.Error(); err != nil {
		return in.fault.set(fmt.Errorf("iterate: %w", err))
	}
	return nil
}

// evict deletes at least excess logical bytes of live entries, soonest
// expiry first. It keeps only the candidates it needs in a max-heap by
// expiry, so memory is proportional to what it evicts.
func (db *DB) evict(ctx context.Context, in *instance, excess int64) error {
	now := db.now()
	var h expiryHeap
	var held int64
	err := db.iterate(ctx, in, func(key, val []byte) error {
		exp, derr := decodeRecord(val)
		if derr != nil || expired(exp, now) {
			return nil // the pass that called us has just dealt with these
		}
		if exp == 0 {
			exp = math.MaxInt64
		}
		if held >= excess && len(h.items) > 0 && exp >= h.items[0].exp {
			return nil // not sooner than anything already chosen
		}
		size := int64(len(key) + len(val))
		heap.Push(&h, candidate{victim: victim{key: string(key), tag: maphash.Bytes(db.seed, val), size: size}, exp: exp})
		held += size
		for len(h.items) > 0 && held-h.items[0].size >= excess {
			held -= heap.Pop(&h).(candidate).size
		}
		return nil
	})
	if err != nil {
		return err
	}
	vs := make([]victim, 0, len(h.items))
	for _, c := range h.items {
		vs = append(vs, c.victim)
	}
	for len(vs) > 0 {
		chunk := vs[:min(len(vs), deleteChunk)]
		vs = vs[len(chunk):]
		in.ops.Add(1)
		n, freed, err := db.deleteIfSame(ctx, in, chunk)
		if err != nil {
			return err
		}
		db.evicted.Add(int64(n))
		db.estBytes.Add(-freed)
		db.estCount.Add(-int64(n))
	}
	return nil
}

type candidate struct {
	victim
	exp int64
}

// expiryHeap is a max-heap of candidates by expiry: the root is the
// candidate evicted last, the first to give up when enough is chosen.
type expiryHeap struct{ items []candidate }

func (h *expiryHeap) Len() int           { return len(h.items) }
func (h *expiryHeap) Less(i, j int) bool { return h.items[i].exp > h.items[j].exp }
func (h *expiryHeap) Swap(i, j int)      { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *expiryHeap) Push(x any)         { h.items = append(h.items, x.(candidate)) }
func (h *expiryHeap) Pop() any {
	n := len(h.items) - 1
	c := h.items[n]
	h.items = h.items[:n]
	return c
}
