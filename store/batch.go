package store

import (
	"context"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Batch collects writes that Commit applies atomically: after a crash either
// all of them are on disk or none. Under Sync durability a Commit costs one
// fsync however many entries it holds, and Pebble shares fsyncs between
// batches committed concurrently, so batching (or many concurrent writers) is
// how to make synced writes cheap. CommitSync makes one batch durable
// whatever the DB's durability.
//
// A Batch is not safe for concurrent use. Its methods validate their input
// and return the same errors as the DB's methods, leaving the batch unchanged
// on error. After Commit, CommitSync or Close every method returns
// ErrBatchDone.
type Batch struct {
	db    *DB
	in    *instance     // the instance b was created on
	b     *pebble.Batch // created on first write
	n     int
	bytes int64
	sets  int64
	done  bool
}

// NewBatch returns an empty batch. It never fails; a closed or failed DB is
// reported by the first write or by Commit.
func (db *DB) NewBatch() *Batch { return &Batch{db: db} }

// Len returns the number of writes in the batch.
func (b *Batch) Len() int { return b.n }

func (b *Batch) batch() (*pebble.Batch, error) {
	if b.done {
		return nil, ErrBatchDone
	}
	if b.b == nil {
		in, err := b.db.enter()
		if err != nil {
			return nil, err
		}
		b.in, b.b = in, in.pdb.NewBatch()
		in.ops.Done()
	}
	return b.b, nil
}

// Set adds a write of value under key, to expire ttl from now (0: never).
// The batch copies value.
func (b *Batch) Set(key string, value []byte, ttl time.Duration) error {
	if ttl < 0 {
		return fmt.Errorf("%w: %v", ErrInvalidTTL, ttl)
	}
	return b.set(key, value, b.db.expiryAfter(ttl))
}

// SetExpiry adds a write of value under key, to expire at expiry (the zero
// Time: never). The batch copies value.
func (b *Batch) SetExpiry(key string, value []byte, expiry time.Time) error {
	return b.set(key, value, expiryNanos(expiry))
}

func (b *Batch) set(key string, value []byte, exp int64) error {
	if err := b.db.checkKey(key); err != nil {
		return err
	}
	if err := b.db.checkValue(len(value)); err != nil {
		return err
	}
	pb, err := b.batch()
	if err != nil {
		return err
	}
	b.bytes += putEntry(pb, key, value, exp)
	b.sets++
	b.n++
	return nil
}

// Delete adds a delete of key.
func (b *Batch) Delete(key string) error {
	if err := b.db.checkKey(key); err != nil {
		return err
	}
	pb, err := b.batch()
	if err != nil {
		return err
	}
	_ = pb.Delete(unsafeBytes(key), nil)
	b.n++
	return nil
}

// Commit applies the batch atomically with the DB's durability and ends it.
// An empty batch commits trivially. Errors: ErrBatchDone, ErrClosed,
// ctx.Err() (checked first; if ctx ends while the commit is in flight the
// batch may or may not be applied), or one wrapping ErrDiskFault.
func (b *Batch) Commit(ctx context.Context) error { return b.commit(ctx, b.db.wo) }

// CommitSync is Commit with Sync durability whatever the DB's: a nil error
// means the batch, and every write acknowledged before it, is on disk. On a
// NoSync DB it is how to make one write durable before going on, such as a
// delete that must not be undone by a crash.
func (b *Batch) CommitSync(ctx context.Context) error { return b.commit(ctx, pebble.Sync) }

func (b *Batch) commit(ctx context.Context, wo *pebble.WriteOptions) error {
	if b.done {
		return ErrBatchDone
	}
	b.done = true
	pb := b.b
	b.b = nil
	if err := ctx.Err(); err != nil {
		closeBatch(pb)
		return err
	}
	in, err := b.db.enter()
	if err != nil {
		closeBatch(pb)
		return err
	}
	if pb == nil || pb.Empty() {
		closeBatch(pb)
		if wo == pebble.Sync && b.db.wo == pebble.NoSync {
			// Still a promise about the writes before it.
			return b.db.runAsync(ctx, in, func() error { return in.pdb.LogData(nil, pebble.Sync) })
		}
		in.ops.Done()
		return nil
	}
	if in != b.in {
		// Recover replaced the instance pb was made on: move its writes over.
		moved := in.pdb.NewBatch()
		if err := moved.Apply(pb, nil); err != nil {
			in.ops.Done()
			closeBatch(pb)
			closeBatch(moved)
			return fmt.Errorf("store: commit: %w", err)
		}
		closeBatch(pb)
		pb = moved
	}
	return b.db.apply(ctx, in, pb, b.bytes, b.sets, wo)
}

// Close discards an uncommitted batch. It is safe after Commit and twice.
func (b *Batch) Close() {
	if b.done {
		return
	}
	b.done = true
	closeBatch(b.b)
	b.b = nil
}

func closeBatch(pb *pebble.Batch) {
	if pb != nil {
		func() {
			defer func() { _ = recover() }() // a batch of a closed or abandoned instance
			_ = pb.Close()
		}()
	}
}
