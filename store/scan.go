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
	return db.scanWith(ctx, prefix, func(k, v []byte, exp int64) error {
		// One allocation holds both the key and the value copy; the key's
		// bytes are never written again, so viewing them as a string is safe.
		buf := make([]byte, len(k)+len(v))
		copy(buf, k)
		copy(buf[len(k):], v)
		key := unsafe.String(unsafe.SliceData(buf), len(k))
		return fn(key, Entry{Value: buf[len(k):len(buf):len(buf)], Expiry: expiryTime(exp)})
	})
}

// ScanView is Scan without the copies: key and e.Value are the iterator's
// own bytes, valid only until fn returns, and fn must copy what it keeps.
// It allocates nothing per entry, for a pass over every entry that keeps
// few of them.
func (db *DB) ScanView(ctx context.Context, prefix string, fn func(key []byte, e Entry) error) error {
	return db.scanWith(ctx, prefix, func(k, v []byte, exp int64) error {
		return fn(k, Entry{Value: v[:len(v):len(v)], Expiry: expiryTime(exp)})
	})
}

// scanWith is Scan and ScanView: fn gets the iterator's key and value
// bytes (the record's header stripped) and the hard expiry.
func (db *DB) scanWith(ctx context.Context, prefix string, fn func(k, v []byte, exp int64) error) (err error) {
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

func (db *DB) scan(ctx context.Context, in *instance, prefix string, fn func(k, v []byte, exp int64) error, repairs *[]victim) (err error) {
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
		inFn = true
		err := fn(it.Key(), val[recordHeader:], exp)
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

// EstimateEntries returns about how many entries the store holds, from its
// tables' properties, without reading an entry: it counts overwritten,
// deleted and expired entries that no compaction has removed yet, and
// misses what is still only in the memtable. It is meant for presizing
// (a warm start's memory index), not for counting. Errors: ErrClosed, the
// store's fault, or a table whose properties could not be read (which
// leaves the store as it is: a read of the table will tell).
func (db *DB) EstimateEntries() (int64, error) {
	in, err := db.enter()
	if err != nil {
		return 0, err
	}
	defer in.ops.Done()
	n, _, err := tableEstimate(in)
	if err != nil {
		return 0, fmt.Errorf("store: estimate entries: %w", err)
	}
	return n, nil
}

// tableEstimate is about how many entries in's tables hold and their
// logical bytes (keys plus records), from the tables' properties: no data
// block is read. Entries shadowed by a newer write or a tombstone that no
// compaction has removed yet are counted, expired ones too, and the
// memtable is not. The caller holds a count of in.ops.
func tableEstimate(in *instance) (entries, bytes int64, err error) {
	if in.pdb == nil {
		return 0, 0, nil
	}
	levels, err := in.pdb.SSTables(pebble.WithProperties())
	if err != nil {
		return 0, 0, err
	}
	for _, level := range levels {
		for _, t := range level {
			p := t.Properties
			if p == nil {
				continue
			}
			entries += int64(p.NumEntries) - int64(p.NumDeletions)
			// RawKeySize counts every internal key: the user key and its
			// 8-byte trailer, tombstones' keys included.
			bytes += int64(p.RawKeySize) - 8*int64(p.NumEntries) - int64(p.RawPointTombstoneKeySize) + int64(p.RawValueSize)
		}
	}
	return max(entries, 0), max(bytes, 0), nil
}
