package tiered

import (
	"context"
)

// The write-behind queue's side of a disk fault: stepping aside, the keys
// whose writes may not have reached the disk (suspects), and resuming.

// stepAside turns the tier off with fault (which wraps ErrDisk), unless it
// is off already, and gives up ops, which were taken from the queue but
// not applied, and everything still queued: their waiters receive the
// fault, and the keys of acknowledged writes and deletes among them become
// suspects (their disk copies may be older than what was acknowledged, or
// may not be gone). It reports whether this call turned the tier off, and
// returns the fault in effect.
func (w *writeBehind) stepAside(fault error, ops []*diskOp) (first bool, effective error) {
	w.mu.Lock()
	if p := w.off.Load(); p != nil {
		fault = *p
	} else {
		w.faults.Add(1) // before off: whoever sees off sees the count
		w.off.Store(&fault)
		w.unreported.Store(&fault)
		first = true
	}
	ops = append(ops, w.mu.queue...)
	w.mu.queue = nil
	clear(w.mu.pending) // every queued op is in ops
	w.npending.Store(0)
	for _, op := range ops {
		if !op.fill && !op.barrier {
			w.mu.susp.addKey(op.key)
		}
	}
	for _, k := range w.mu.unsynced {
		w.mu.susp.addKey(k)
	}
	w.mu.unsynced = w.mu.unsynced[:0]
	w.mu.Unlock()
	for _, op := range ops {
		w.advance(op.seq)
		if op.done != nil {
			op.done <- fault
		}
	}
	return first, fault
}

// barrier waits until everything queued before it is durably on disk, and
// returns the error of the commit that made it so. While the tier is off it
// returns the fault at once.
func (w *writeBehind) barrier(ctx context.Context) error {
	w.mu.Lock()
	if w.mu.closed {
		w.mu.Unlock()
		return ErrClosed
	}
	if err := w.fault(); err != nil {
		w.mu.Unlock()
		return err
	}
	w.mu.seq++
	op := &diskOp{seq: w.mu.seq, sync: true, barrier: true, done: make(chan error, 1)}
	w.mu.queue = append(w.mu.queue, op)
	w.mu.Unlock()
	w.wake()
	return w.wait(ctx, op)
}

// offPrefix remembers prefix as a suspect, and returns true, if the tier is
// off.
func (w *writeBehind) offPrefix(prefix string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.off.Load() == nil {
		return false
	}
	w.mu.susp.addPrefix(prefix)
	return true
}

// setFault replaces the fault of a tier that is off by a newer one (the
// cause as it is now).
func (w *writeBehind) setFault(fault error) {
	w.mu.Lock()
	if w.off.Load() != nil {
		w.off.Store(&fault)
	}
	w.mu.Unlock()
}

// takeSuspects hands over the suspects recorded so far, for deletion.
func (w *writeBehind) takeSuspects() suspects {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.mu.susp
	w.mu.susp = suspects{}
	return s
}

// restoreSuspects gives back suspects whose deletion failed.
func (w *writeBehind) restoreSuspects(s suspects) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.mu.susp.merge(s)
}

// resume turns the tier back on, unless suspects that a queued delete
// cannot cover (prefixes, or too many keys) were recorded since the last
// takeSuspects: then it returns false. The keys recorded since are queued
// as durable deletes first, ahead of every later write, and shadow their
// disk copies until they are applied.
func (w *writeBehind) resume() bool {
	w.mu.Lock()
	if len(w.mu.susp.prefixes) > 0 || w.mu.susp.overflow {
		w.mu.Unlock()
		return false
	}
	for k := range w.mu.susp.keys {
		w.queueLocked(k, nil, 0, queueOpts{sync: true})
	}
	w.mu.susp = suspects{}
	w.recoveries.Add(1)
	w.off.Store(nil)
	w.mu.Unlock()
	w.wake()
	return true
}
