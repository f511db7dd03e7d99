package store

import (
	"context"

	"github.com/cockroachdb/pebble/v2"
)

// PutRawForTest writes raw bytes under key, bypassing the record format, to
// simulate a corrupted entry.
func (db *DB) PutRawForTest(key string, raw []byte) error {
	return db.current().pdb.Set([]byte(key), raw, pebble.Sync)
}

// GetRawForTest returns the raw stored bytes under key.
func (db *DB) GetRawForTest(key string) ([]byte, bool, error) {
	v, c, err := db.current().pdb.Get([]byte(key))
	if err == pebble.ErrNotFound {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer c.Close()
	return append([]byte(nil), v...), true, nil
}

// FlushForTest flushes memtables to sstables.
func (db *DB) FlushForTest() error {
	in, err := db.enter()
	if err != nil {
		return err
	}
	return db.flush(context.Background(), in)
}

// RunAsyncForTest runs fn as a Pebble call would be run.
func (db *DB) RunAsyncForTest(ctx context.Context, fn func() error) error {
	in, err := db.enter()
	if err != nil {
		return err
	}
	return db.runAsync(ctx, in, fn)
}

// EncodeForTest returns the stored record of value with expiry exp (Unix
// ns, 0: none).
func EncodeForTest(value []byte, exp int64) []byte {
	rec := make([]byte, recordSize(len(value)))
	putRecord(rec, value, exp)
	return rec
}

// CacheMetricsForTest returns the block cache's size and hit and miss counts.
func (db *DB) CacheMetricsForTest() (size int64, hits, misses int64) {
	m := db.current().pdb.Metrics()
	return m.BlockCache.Size, m.BlockCache.Hits, m.BlockCache.Misses
}

// PebbleForTest returns the current instance's Pebble database, opened with
// the store's options, for benchmarks that read it raw.
func (db *DB) PebbleForTest() *pebble.DB { return db.current().pdb }
