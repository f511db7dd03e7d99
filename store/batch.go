package store

import (
	"context"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/thermoscache/thermos/internal/envelope"
)

// Batch collects writes that Commit applies atomically: after a crash either
// all of them are on disk or none. Under Sync durability a Commit costs one
// fsync however many entries it holds, and Pebble shares fsyncs between
// batches committed concurrently, so batching (or many concurrent writers) is
// how to make synced writes cheap.
//
// A Batch is not safe for concurrent use. Its methods validate their input
// and return the same errors as the DB's methods, leaving the batch unchanged
// on error. After Commit or Close every method returns ErrBatchDone.
type Batch struct {
	db    *DB
	b     *pebble.Batch // created on first write
	n     int
	bytes int64
	sets  int64
	done  bool
}

// NewBatch returns an empty batch. It never fails; a closed or failed DB is
// reported by Commit.
func (db *DB) NewBatch() *Batch { return &Batch{db: db} }

// Len returns the number of writes in the batch.
func (b *Batch) Len() int { return b.n }

func (b *Batch) batch() (*pebble.Batch, error) {
	if b.done {
		return nil, ErrBatchDone
	}
	if b.b == nil {
		if err := b.db.enter(); err != nil {
			return nil, err
		}
		b.b = b.db.pdb.NewBatch()
		b.db.ops.Done()
	}
	return b.b, nil
}

// Set adds a write of value under key with hard expiry ttl from now (0: none).
// The batch copies value.
func (b *Batch) Set(key string, value []byte, ttl time.Duration) error {
	if ttl < 0 {
		return fmt.Errorf("%w: %v", ErrInvalidTTL, ttl)
	}
	e := envelope.Entry{Header: envelope.Header{HardExpiry: b.db.expiryAfter(ttl)}, Payload: value}
	return b.setEntry(key, &e)
}

// SetExpiry adds a write of value under key with absolute hard expiry (zero: none).
func (b *Batch) SetExpiry(key string, value []byte, expiry time.Time) error {
	e := envelope.Entry{Header: envelope.Header{HardExpiry: unixNanoOrZero(expiry)}, Payload: value}
	return b.setEntry(key, &e)
}

// SetEntry adds a write of the whole envelope e under key.
func (b *Batch) SetEntry(key string, e *envelope.Entry) error {
	if e == nil {
		return fmt.Errorf("%w: nil entry", ErrInvalidEntry)
	}
	return b.setEntry(key, e)
}

func (b *Batch) setEntry(key string, e *envelope.Entry) error {
	if err := b.db.checkKey(key); err != nil {
		return err
	}
	if err := b.db.checkValue(len(e.Payload)); err != nil {
		return err
	}
	pb, err := b.batch()
	if err != nil {
		return err
	}
	b.bytes += putEntry(pb, key, e)
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
func (b *Batch) Commit(ctx context.Context) error {
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
	if err := b.db.enter(); err != nil {
		closeBatch(pb)
		return err
	}
	if pb == nil || pb.Empty() {
		b.db.ops.Done()
		closeBatch(pb)
		return nil
	}
	return b.db.apply(ctx, pb, b.bytes, b.sets)
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
			defer func() { _ = recover() }() // a batch of an abandoned DB
			_ = pb.Close()
		}()
	}
}
