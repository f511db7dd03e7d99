package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	slices2 "slices"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/thermoscache/thermos/store"
)

// Each benchmark has a raw Pebble twin doing the same work on the same data,
// so ratios can be read off one run. Raw Pebble stores the same record
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

// recordOf is what the store stores for an n-byte value.
func recordOf(n int) []byte { return store.EncodeForTest(make([]byte, n), 0) }

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
				if err != nil || !ok || len(e.Value) != size {
					b.Fatalf("Get = %d bytes, %v, %v", len(e.Value), ok, err)
				}
			}
		})
		b.Run(fmt.Sprintf("pebble/%dB", size), func(b *testing.B) {
			pdb := openRaw(b)
			val := recordOf(size)
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
		env := recordOf(100)
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
		env := recordOf(100)
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
		env := recordOf(100)
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
			if err := db.Scan(ctx, "bench:", func(string, store.Entry) error { n++; return nil }); err != nil || n != benchKeys {
				b.Fatalf("Scan = %d entries, %v", n, err)
			}
		}
	})
	b.Run("pebble", func(b *testing.B) {
		pdb := openRaw(b)
		env := recordOf(100)
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

// BenchmarkDiskHit compares a store Get with a raw Pebble Get on the same
// data in the same run: the two alternate in slices of diskHitSlice
// operations, each slice timed, so machine drift hits both alike;
// store/pebble is the median ratio of paired slices. "fresh"
// reads what was just written (memtables); "reopen" closes both and reopens
// them first (sstables through the block cache). Raw Pebble is used well:
// it has a block cache of the store's default size and flushes before
// Close.
func BenchmarkDiskHit(b *testing.B) {
	const size = 100
	for _, reopen := range []bool{false, true} {
		name := "fresh"
		if reopen {
			name = "reopen"
		}
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			sdir := filepath.Join(b.TempDir(), "db")
			rdir := filepath.Join(b.TempDir(), "raw")
			so := &store.Options{Durability: store.NoSync, SweepInterval: -1, Logger: quietLogger(b)}
			db, err := store.Open(sdir, so)
			if err != nil {
				b.Fatal(err)
			}
			ropts := func() *pebble.Options {
				return &pebble.Options{Logger: pebbleQuiet{}, CacheSize: store.DefaultCacheBytes}
			}
			pdb, err := pebble.Open(rdir, ropts())
			if err != nil {
				b.Fatal(err)
			}
			val, env := make([]byte, size), recordOf(size)
			keys := make([]string, benchKeys)
			rkeys := make([][]byte, benchKeys)
			for i := range benchKeys {
				keys[i], rkeys[i] = benchKey(i), []byte(benchKey(i))
				if err := db.Set(ctx, keys[i], val, 0); err != nil {
					b.Fatal(err)
				}
				if err := pdb.Set(rkeys[i], env, pebble.NoSync); err != nil {
					b.Fatal(err)
				}
			}
			if reopen {
				if err := db.Close(); err != nil {
					b.Fatal(err)
				}
				if err := pdb.Flush(); err != nil {
					b.Fatal(err)
				}
				if err := pdb.Close(); err != nil {
					b.Fatal(err)
				}
				if db, err = store.Open(sdir, so); err != nil {
					b.Fatal(err)
				}
				if pdb, err = pebble.Open(rdir, ropts()); err != nil {
					b.Fatal(err)
				}
			}
			b.Cleanup(func() { _ = db.Close(); _ = pdb.Close() })

			// A pre-generated pseudo-random key sequence, the same for both.
			const seqLen = 1 << 16
			seq := make([]int32, seqLen)
			x := uint32(12345)
			for i := range seq {
				x ^= x << 13
				x ^= x >> 17
				x ^= x << 5
				seq[i] = int32(x % benchKeys)
			}
			get := [2]func(i int32){
				func(i int32) {
					e, ok, err := db.Get(ctx, keys[i])
					if err != nil || !ok || len(e.Value) != size {
						b.Fatalf("store Get = %d bytes, %v, %v", len(e.Value), ok, err)
					}
				},
				func(i int32) {
					v, c, err := pdb.Get(rkeys[i])
					if err != nil {
						b.Fatal(err)
					}
					p := make([]byte, len(v))
					copy(p, v)
					_ = c.Close()
				},
			}
			const diskHitSlice = 256
			// slices[g] holds the duration of each of getter g's slices.
			slices := [2][]time.Duration{make([]time.Duration, 0, 1024), make([]time.Duration, 0, 1024)}
			cur := 0
			_, _, miss0 := db.CacheMetricsForTest()
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; b.Loop(); i++ {
				if i%diskHitSlice == 0 && i > 0 {
					now := time.Now()
					slices[cur] = append(slices[cur], now.Sub(start))
					start, cur = now, cur^1
				}
				get[cur](seq[i&(seqLen-1)])
			}
			b.StopTimer()
			pairs := min(len(slices[0]), len(slices[1]))
			if pairs == 0 {
				return // too few iterations to compare (the b.N=1 probe)
			}
			// The ratio is the median over consecutive pairs of slices, so a
			// preemption or GC landing in one slice does not skew it.
			var sum [2]time.Duration
			ratios := make([]float64, pairs)
			for p := range pairs {
				sum[0] += slices[0][p]
				sum[1] += slices[1][p]
				ratios[p] = float64(slices[0][p]) / float64(slices[1][p])
			}
			slices2.Sort(ratios)
			per := float64(pairs * diskHitSlice)
			b.ReportMetric(float64(sum[0])/per, "store-ns/get")
			b.ReportMetric(float64(sum[1])/per, "pebble-ns/get")
			b.ReportMetric(ratios[pairs/2], "store/pebble")
			_, _, miss := db.CacheMetricsForTest()
			b.ReportMetric(float64(miss-miss0)/per, "store-blockmiss/get")
		})
	}
}

// BenchmarkGetInner compares, on 1,000 keys in memtables, store.DB.Get
// with a raw Get on the store's own Pebble instance (its options, its
// data; the value copied out as Get does), alternating in slices of 256
// reads of the same keys, and reports the median of per-pair ratios. It
// tells the store's own cost from any difference between its Pebble and a
// separately opened one. parallel times store.DB.Get alone from every P.
func BenchmarkGetInner(b *testing.B) {
	const nkeys, size = 1000, 100
	ctx := context.Background()
	db := openBench(b, &store.Options{Durability: store.NoSync})
	keys := make([]string, nkeys)
	for i := range keys {
		keys[i] = benchKey(i)
		if err := db.Set(ctx, keys[i], make([]byte, size), 0); err != nil {
			b.Fatal(err)
		}
	}
	pdb := db.PebbleForTest()
	rkeys := make([][]byte, nkeys)
	for i := range rkeys {
		rkeys[i] = []byte(keys[i])
	}
	// Each takes the running (sub-)benchmark: a failure is reported on it.
	inner := func(b *testing.B, i int) {
		v, c, err := pdb.Get(rkeys[i])
		if err != nil {
			b.Fatal(err)
		}
		p := make([]byte, len(v)-store.EntryOverhead)
		copy(p, v[store.EntryOverhead:])
		_ = c.Close()
	}
	get := func(b *testing.B, i int) {
		if e, ok, err := db.Get(ctx, keys[i]); err != nil || !ok || len(e.Value) != size {
			b.Errorf("Get = %d bytes, %v, %v", len(e.Value), ok, err) // Errorf: RunParallel's goroutines call it too
		}
	}
	b.Run("serial", func(b *testing.B) {
		const slice = 256
		var t [2][]time.Duration
		b.ReportAllocs()
		b.ResetTimer()
		start, cur, k, round := time.Now(), 0, 0, 0
		for b.Loop() {
			if k == slice {
				now := time.Now()
				t[cur] = append(t[cur], now.Sub(start))
				start, k, cur = now, 0, cur^1
				if cur == 0 {
					round++
				}
			}
			i := (round*slice + k) * 7919 % nkeys
			if cur == 0 {
				get(b, i)
			} else {
				inner(b, i)
			}
			k++
		}
		b.StopTimer()
		n := min(len(t[0]), len(t[1]))
		if n == 0 {
			return
		}
		ratios := make([]float64, n)
		var sum [2]time.Duration
		for r := range n {
			ratios[r] = float64(t[0][r]) / float64(t[1][r])
			sum[0] += t[0][r]
			sum[1] += t[1][r]
		}
		slices2.Sort(ratios)
		b.ReportMetric(ratios[n/2], "store/inner")
		b.ReportMetric(float64(sum[0])/float64(sum[1]), "store/inner-mean")
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				get(b, i*7919%nkeys)
			}
		})
	})
}
