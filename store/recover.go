package store

import (
	"context"
	"fmt"
	"time"
)

// Recover brings the store out of its error state without restarting the
// process, once the cause (a full disk, say) is gone. It closes the faulted
// Pebble instance, waiting up to Options.CloseTimeout for its in-flight
// calls, and opens the same directory again, keeping the directory lock
// throughout so no other DB can take it in between. Every write that was
// acknowledged under Sync durability, or made durable by CommitSync or Sync,
// is still there afterwards; NoSync writes acknowledged since the last sync
// may be lost, and writes that failed may or may not have been applied.
//
// A healthy store is left alone: Recover returns nil at once. Otherwise it
// returns nil once a new instance is open and working; Err then returns nil
// and Stats.Reopens is one higher. If the fault persists, Recover returns
// it (wrapping ErrDiskFault) and the store stays in its error state, to be
// retried later: a caller can simply call Recover with backoff until it
// returns nil. A reopen that must flush the log Pebble replays, on a disk
// that refuses the flush, returns the fault at once and leaves Pebble's
// open, which retries the flush by itself, to go on in the background; a
// Recover while it does returns the fault at once too. If the directory
// cannot be opened again at all (the fault left its write-ahead log
// damaged, for example), the way out is Close, Wipe and Open, which start
// the store empty.
//
// While Recover runs, other calls fail fast with the fault, as in the error
// state. Concurrent Recover calls are serialised. If ctx ends first,
// Recover returns ctx.Err(); a reopen already under way then completes in
// the background (Err tells whether it worked). After Close it returns
// ErrClosed.
func (db *DB) Recover(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case db.recoverSem <- struct{}{}:
	case <-db.closing:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	release := func() { <-db.recoverSem }

	db.mu.Lock()
	if db.mu.closed {
		db.mu.Unlock()
		release()
		return ErrClosed
	}
	cur := db.mu.in
	fault := cur.fault.get()
	if fault == nil {
		db.mu.Unlock()
		release()
		return nil
	}
	old := cur.prev // a stub stands in for a retired instance, if any
	if cur.pdb != nil {
		// Retire cur: from here on calls find a stub in the same error
		// state, and nothing enters cur, so its in-flight calls drain.
		old = cur
		db.mu.in = newStub(cur.fault, cur)
	}
	db.mu.Unlock()

	if old != nil {
		stopped := old.stop()
		if old.opening() {
			// The last reopen is still waiting for the disk to take the
			// flush of its replayed log (see openInstance), which Pebble
			// retries by itself: the fault persists.
			release()
			return fmt.Errorf("store: recover %s: %w", db.dir, fault)
		}
		t := time.NewTimer(db.opts.CloseTimeout)
		defer t.Stop()
		select {
		case <-stopped:
			if old.stopErr != nil {
				db.log.Debug("store: faulted pebble instance closed with an error", "dir", db.dir, "err", old.stopErr)
			}
		case <-ctx.Done():
			release()
			return ctx.Err()
		case <-t.C:
			release()
			return fmt.Errorf("store: recover %s: faulted pebble instance still busy after %v: %w", db.dir, db.opts.CloseTimeout, fault)
		}
	}

	done := make(chan error, 1)
	go func() {
		defer release()
		done <- db.reopen()
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// reopen opens a new instance and makes it current. The caller holds
// recoverSem, and no instance is open.
func (db *DB) reopen() error {
	in, err := db.openInstance()
	db.mu.Lock()
	if in != nil && in.opening() {
		// Pebble is still opening (see openInstance): a stub stands for it
		// until it can be stopped, by the next Recover or by Close, which
		// is waiting for recoverSem if the DB is closed.
		db.mu.in = newStub(in.fault, in)
		db.mu.Unlock()
		return fmt.Errorf("store: recover %s: %w", db.dir, err)
	}
	if db.mu.closed {
		// Close is waiting for recoverSem; it finds the stub.
		db.mu.Unlock()
		if in != nil {
			<-in.stop()
		}
		return ErrClosed
	}
	if in == nil {
		fault := newFaultState(db.log)
		db.mu.in = newStub(fault, nil)
		db.mu.Unlock()
		return fmt.Errorf("store: recover %s: %w", db.dir, fault.set(err))
	}
	// An instance that faulted while opening is installed all the same:
	// the next Recover retires it like any other.
	db.mu.in = in
	db.startLoops(in)
	db.mu.Unlock()
	if err != nil {
		return fmt.Errorf("store: recover %s: %w", db.dir, err)
	}
	db.reopens.Add(1)
	db.log.Info("store: reopened after disk fault", "dir", db.dir)
	return nil
}
