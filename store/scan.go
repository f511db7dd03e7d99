package store

import (
	"context"
	"fmt"
	"hash/maphash"
	"unsafe"

	"github.com/cockroachdb/pebble/v2"
)

// maxScanRepairs bounds how many corrupt entries one Scan remembers to delete.
const maxScanRepairs = 256

// Scan calls fn for every live entry whose key starts with prefix (all
// entries for ""), in key order. It streams through a Pebble iterator and
// never holds more than one entry; entries written during the scan may or may
// not be seen. Expired entries are skipped; corrupt ones are skipped,
// counted, logged and deleted after the scan. key and e.Value are copies
// that fn may keep.
//
// If fn returns an error, Scan stops and returns that error unchanged. A
// panic in fn propagates to the caller. fn must not call Close. Other errors:
// ErrClosed, ctx.Err() (checked between entries), or one wrapping
// ErrDiskFault when a read fails.
func (db *DB) Scan(ctx context.Context, prefix string, fn func(key string, e Entry) error) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	in, err := db.enter()
	if err != nil {
		return err
	}
	var repairs []victim
	err = db.scan(ctx, in, prefix, fn, &repairs)
	if len(repairs) > 0 && err == nil {
		in.ops.Add(1) // for deleteIfSame; we still hold ours
		if _, _, rerr := db.deleteIfSame(ctx, in, repairs); rerr != nil {
			db.log.Warn("store: could not drop corrupt entries", "count", len(repairs), "err", rerr)
		}
	}
	in.ops.Done()
	return err
}

func (db *DB) scan(ctx context.Context, in *instance, prefix string, fn func(string, Entry) error, repairs *[]victim) (err error) {
	inFn := false
	defer func() {
		if r := recover(); r != nil {
			if inFn {
				panic(r)
			}
			err = db.panicked(in, r)
		}
	}()
	opts := &pebble.IterOptions{}
	if prefix != "" {
		opts.LowerBound = []byte(prefix)
		opts.UpperBound = prefixEnd(opts.LowerBound)
	}
	it, err := in.pdb.NewIter(opts)
	if err != nil {
		return in.fault.set(fmt.Errorf("scan: %w", err))
	}
	defer func() {
		if cerr := it.Close(); cerr != nil && err == nil {
			err = in.fault.set(fmt.Errorf("scan: %w", cerr))
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
			return in.fault.set(fmt.Errorf("scan: %w", verr))
		}
		exp, derr := decodeRecord(val)
		if derr != nil {
			key := string(it.Key())
			db.noteCorrupt(key, derr)
			if len(*repairs) < maxScanRepairs {
				*repairs = append(*repairs, victim{key: key, tag: maphash.Bytes(db.seed, val)})
			}
			continue
		}
		if expired(exp, now) {
			continue
		}
		// One allocation holds both the key and the value copy; the key's
		// bytes are never written again, so viewing them as a string is safe.
		k := it.Key()
		buf := make([]byte, len(k)+len(val)-recordHeader)
		copy(buf, k)
		copy(buf[len(k):], val[recordHeader:])
		key := unsafe.String(unsafe.SliceData(buf), len(k))
		v := buf[len(k):len(buf):len(buf)]
		inFn = true
		err := fn(key, Entry{Value: v, Expiry: expiryTime(exp)})
		inFn = false
		if err != nil {
			return err
		}
	}
	if err := it.Error(); err != nil {
		return in.fault.set(fmt.Errorf("scan: %w", err))
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
