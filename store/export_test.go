package store

import (
	"context"

	"github.com/cockroachdb/pebble/v2"
)

// PutRawForTest writes raw bytes under key, bypassing the envelope, to
// simulate a corrupted entry.
func (db *DB) PutRawForTest(key string, raw []byte) error {
	return db.pdb.Set([]byte(key), raw, pebble.Sync)
}

// GetRawForTest returns the raw stored bytes under key.
func (db *DB) GetRawForTest(key string) ([]byte, bool, error) {
	v, c, err := db.pdb.Get([]byte(key))
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
	if err := db.enter(); err != nil {
		return err
	}
	return db.runAsync(context.Background(), db.pdb.Flush)
}

// RunAsyncForTest runs fn as a Pebble call would be run.
func (db *DB) RunAsyncForTest(ctx context.Context, fn func() error) error {
	if err := db.enter(); err != nil {
		return err
	}
	return db.runAsync(ctx, fn)
}
