package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/thermoscache/thermos/internal/envelope"
	"github.com/thermoscache/thermos/store"
)

// Each benchmark has a raw Pebble twin doing the same work on the same data,
// so ratios can be read off one run. Raw Pebble stores the same envelope
// bytes and, like the store, copies values out.

const benchKeys = 10_000

func benchKey(i int) string { return fmt.Sprintf("bench:key:%08d", i) }

func openBench(b *testing.B, o *store.Options) *store.DB {
	if o == nil {
		o = &store.Options{}
	}
	o.SweepInterval = -1
	db, _ := openT(b, filepath.Join(b.TempDir(), "db"), o)
	return db
}

func openRaw(b *testing.B) *pebble.DB {
	pdb, err := pebble.Open(filepath.Join(b.TempDir(), "raw"), &pebble.Options{Logger: pebbleQuiet{}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = pdb.Close() })
	return pdb
}

func envelopeOf(n int) []byte {
	e := envelope.Entry{Payload: make([]byte, n)}
	return e.Append(nil)
}

func BenchmarkGet(b *testing.B) {
	for _, size := range []int{100, 4096} {
		b.Run(fmt.Sprintf("store/%dB", size), func(b *testing.B) {
			ctx := context.Background()
			db := openBench(b, &store.Options{Durability: store.NoSync})
			val := make([]byte, size)
			for i := range benchKeys {
				if err := db.Set(ctx, benchKey(i), val, 0); err != nil {
					b.Fatal(err)
				}
			}
			keys := make([]string, benchKeys)
			for i := range keys {
				keys[i] = benchKey(i)
			}
			b.ReportAllocs()
			b.SetBytes(int64(size))
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				e, ok, err := db.Get(ctx, keys[i%benchKeys])
				if err != nil || !ok || len(e.Payload) != size {
					b.Fatalf("Get = %d bytes, %v, %v", len(e.Payload), ok, err)
				}
			}
		})
		b.Run(fmt.Sprintf("pebble/%dB", size), func(b *testing.B) {
			pdb := openRaw(b)
			val := envelopeOf(size)
			for i := range benchKeys {
				if err := pdb.Set([]byte(benchKey(i)), val, pebble.NoSync); err != nil {
					b.Fatal(err)
				}
			}
			keys := make([][]byte, benchKeys)
			for i := range keys {
				keys[i] = []byte(benchKey(i))
			}
			b.ReportAllocs()
			b.SetBytes(int64(size))
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				v, c, err := pdb.Get(keys[i%benchKeys])
				if err != nil {
					b.Fatal(err)
				}
				p := make([]byte, len(v))
				copy(p, v)
				_ = c.Close()
			}
		})
	}
}

func BenchmarkSetNoSync(b *testing.B) {
	val := make([]byte, 100)
	b.Run("store", func(b *testing.B) {
		ctx := context.Background()
		db := openBench(b, &store.Options{Durability: store.NoSync})
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := db.Set(ctx, benchKey(i%benchKeys), val, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("pebble", func(b *testing.B) {
		pdb := openRaw(b)
		env := envelopeOf(100)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := pdb.Set([]byte(benchKey(i%benchKeys)), env, pebble.NoSync); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkSetSync(b *testing.B) {
	val := make([]byte, 100)
	b.Run("store", func(b *testing.B) {
		ctx := context.Background()
		db := openBench(b, nil)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := db.Set(ctx, benchKey(i%benchKeys), val, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("pebble", func(b *testing.B) {
		pdb := openRaw(b)
		env := envelopeOf(100)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := pdb.Set([]byte(benchKey(i%benchKeys)), env, pebble.Sync); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSyncBatch16 has 16 concurrent writers each committing synced
// single-entry batches: Pebble's group commit shares the fsyncs.
func BenchmarkSyncBatch16(b *testing.B) {
	const writers = 16
	val := make([]byte, 100)
	run := func(b *testing.B, write func(i int) error) {
		b.ReportAllocs()
		b.ResetTimer()
		var wg sync.WaitGroup
		per := b.N / writers
		for w := range writers {
			n := per
			if w == 0 {
				n += b.N % writers
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range n {
					if err := write(w*1_000_000 + j); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	b.Run("store", func(b *testing.B) {
		ctx := context.Background()
		db := openBench(b, nil)
		run(b, func(i int) error {
			bt := db.NewBatch()
			if err := bt.Set(benchKey(i), val, 0); err != nil {
				return err
			}
			return bt.Commit(ctx)
		})
	})
	b.Run("pebble", func(b *testing.B) {
		pdb := openRaw(b)
		env := envelopeOf(100)
		run(b, func(i int) error {
			bt := pdb.NewBatch()
			if err := bt.Set([]byte(benchKey(i)), env, nil); err != nil {
				return err
			}
			return bt.Commit(pebble.Sync)
		})
	})
}

func BenchmarkScan10k(b *testing.B) {
	val := make([]byte, 100)
	b.Run("store", func(b *testing.B) {
		ctx := context.Background()
		db := openBench(b, &store.Options{Durability: store.NoSync})
		for i := range benchKeys {
			if err := db.Set(ctx, benchKey(i), val, 0); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportAllocs()
		for b.Loop() {
			n := 0
			if err := db.Scan(ctx, "bench:", func(string, envelope.Entry) error { n++; return nil }); err != nil || n != benchKeys {
				b.Fatalf("Scan = %d entries, %v", n, err)
			}
		}
	})
	b.Run("pebble", func(b *testing.B) {
		pdb := openRaw(b)
		env := envelopeOf(100)
		for i := range benchKeys {
			if err := pdb.Set([]byte(benchKey(i)), env, pebble.NoSync); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportAllocs()
		for b.Loop() {
			it, err := pdb.NewIter(&pebble.IterOptions{LowerBound: []byte("bench:"), UpperBound: []byte("bench;")})
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for valid := it.First(); valid; valid = it.Next() {
				k := string(it.Key())
				v := it.Value()
				p := make([]byte, len(v))
				copy(p, v)
				_, _ = k, p
				n++
			}
			if err := it.Close(); err != nil || n != benchKeys {
				b.Fatalf("raw scan = %d entries, %v", n, err)
			}
		}
	})
}
