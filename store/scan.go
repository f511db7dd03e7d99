package store

import (
	"context"
	"fmt"
	"hash/maphash"
	"unsafe"

	"github.com/cockroachdb/pebble/v2"
	"github.com/thermoscache/thermos/internal/envelope"
)

// maxScanRepairs bounds how many corrupt entries one Scan remembers to delete.
const maxScanRepairs = 256

// Scan calls fn for every live entry whose key starts with prefix (all
// entries for ""), in key order. It streams through a Pebble iterator and
// never holds more than one entry; entries written during the scan may or may
// not be seen. Expired entries are skipped; corrupt ones are skipped,
// counted, logged and deleted after the scan. e.Payload is a copy that fn may
// keep.
//
// If fn returns an error, Scan stops and returns that error unchanged. A
// panic in fn propagates to the caller. fn must not call Close. Other errors:
// ErrClosed, ctx.Err() (checked between entries), or one wrapping
// ErrDiskFault when a read fails.
func (db *DB) Scan(ctx context.Context, prefix string, fn func(key string, e envelope.Entry) error) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := db.enter(); err != nil {
		return err
	}
	var repairs []victim
	err = db.scan(ctx, prefix, fn, &repairs)
	if len(repairs) > 0 && err == nil {
		db.ops.Add(1) // for deleteIfSame; we still hold ours
		if _, _, rerr := db.deleteIfSame(ctx, repairs); rerr != nil {
			db.log.Warn("store: could not drop corrupt entries", "count", len(repairs), "err", rerr)
		}
	}
	db.ops.Done()
	return err
}

func (db *DB) scan(ctx context.Context, prefix string, fn func(string, envelope.Entry) error, repairs *[]victim) (err error) {
	inFn := false
	defer func() {
		if r := recover(); r != nil {
			if inFn {
				panic(r)
			}
			err = db.panicked(r)
		}
	}()
	opts := &pebble.IterOptions{}
	if prefix != "" {
		opts.LowerBound = []byte(prefix)
		opts.UpperBound = prefixEnd(opts.LowerBound)
	}
	it, err := db.pdb.NewIter(opts)
	if err != nil {
		return db.fault.set(fmt.Errorf("scan: %w", err))
	}
	defer func() {
		if cerr := it.Close(); cerr != nil && err == nil {
			err = db.fault.set(fmt.Errorf("scan: %w", cerr))
		}
	}()
	now := db.now()
	n := 0
	for valid := it.First(); valid; valid = it.Next() {
		if n++; n%256 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		val, verr := it.ValueAndErr()
		if verr != nil {
			return db.fault.set(fmt.Errorf("scan: %w", verr))
		}
		h, derr := envelope.DecodeHeader(val)
		if derr != nil {
			key := string(it.Key())
			db.noteCorrupt(key, derr)
			if len(*repairs) < maxScanRepairs {
				*repairs = append(*repairs, victim{key: key, tag: maphash.Bytes(db.seed, val)})
			}
			continue
		}
		if h.Expired(now) {
			continue
		}
		// One allocation holds both the key and the payload copy; the key's
		// bytes are never written again, so viewing them as a string is safe.
		k := it.Key()
		buf := make([]byte, len(k)+len(val)-h.Size())
		copy(buf, k)
		copy(buf[len(k):], val[h.Size():])
		key := unsafe.String(unsafe.SliceData(buf), len(k))
		p := buf[len(k):len(buf):len(buf)]
		inFn = true
		err := fn(key, envelope.Entry{Header: h, Payload: p})
		inFn = false
		if err != nil {
			return err
		}
	}
	if err := it.Error(); err != nil {
		return db.fault.set(fmt.Errorf("scan: %w", err))
	}
	return nil
}

// prefixEnd returns the smallest key greater than every key with prefix p,
// or nil if there is none (p is all 0xff).
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
