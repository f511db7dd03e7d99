package tracking

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
)

// TestIndexMatchesMap drives one shard's index through random puts,
// replacements and removals, across many rebuilds, and checks it against a
// map after every step.
func TestIndexMatchesMap(t *testing.T) {
	c := newLocal(t, &Options{Shards: 1})
	var ix index
	ix.reset()
	want := map[string]*entry{}
	rng := rand.New(rand.NewPCG(5, 5))
	for i := range 200000 {
		k := fmt.Sprint(rng.IntN(3000))
		h := c.hash(k)
		switch cur := want[k]; {
		case rng.IntN(3) == 0 && cur != nil:
			if !ix.remove(h, cur) {
				t.Fatalf("step %d: remove(%s) found nothing", i, k)
			}
			delete(want, k)
		default:
			e := &entry{key: k}
			if old := ix.put(h, e, c.hash); old != cur {
				t.Fatalf("step %d: put(%s) replaced %p, want %p", i, k, old, cur)
			}
			want[k] = e
		}
		if ix.live != len(want) || ix.used < ix.live {
			t.Fatalf("step %d: live %d used %d, want live %d", i, ix.live, ix.used, len(want))
		}
		if i%1000 == 0 {
			for k, e := range want {
				if got := ix.find(c.hash(k), k); got != e {
					t.Fatalf("step %d: find(%s) = %p, want %p", i, k, got, e)
				}
			}
		}
		if got := ix.find(h, k); got != want[k] {
			t.Fatalf("step %d: find(%s) = %p, want %p", i, k, got, want[k])
		}
	}
	if ix.find(c.hash("absent"), "absent") != nil {
		t.Fatal("found a key never put")
	}
}

// skewedScanHitRatio replays a deterministic workload through a cache of
// the given policy: reads of 2,000 hot keys (zipfian, θ=0.9) with, every
// 5,000 reads, a scan of 3,000 keys read once each, all with demand fill,
// in a cache holding 1,000 entries. It returns the hit ratio of the hot
// reads.
func skewedScanHitRatio(t *testing.T, p Policy) float64 {
	const entries = 1000
	val := make([]byte, 32)
	per := int64(len("hot:0000")) + int64(cap(val)) + EntryOverhead
	c := newLocal(t, &Options{Policy: p, Shards: 1, MaxBytes: entries * per})
	rng := rand.New(rand.NewPCG(11, 13))
	z := rand.NewZipf(rng, 1/0.9+0.1, 1, 1999)
	read := func(k string) bool {
		if _, _, ok := c.Lookup(k); ok {
			return true
		}
		_ = c.SetLocal(k, Item{Value: val})
		return false
	}
	hits, reads, scan := 0, 0, 0
	for i := range 200000 {
		if i%2000 == 1999 {
			for range 5000 {
				read(fmt.Sprintf("scn:%04d", scan%10000))
				scan++
			}
		}
		reads++
		if read(fmt.Sprintf("hot:%04d", z.Uint64())) {
			hits++
		}
	}
	return float64(hits) / float64(reads)
}

// The default policy keeps the frequently read keys through scans that
// flush LRU: on the same deterministic workload it must beat LRU by at
// least 8 points. (The workload is fixed; the cache's hash seed is not,
// so the default's figure moves by about a point from run to run: 89.7 to
// 90.7 % against LRU's 79.96 % when this was written.)
func TestDefaultBeatsLRUOnSkewPlusScan(t *testing.T) {
	lru := skewedScanHitRatio(t, PolicyLRU)
	def := skewedScanHitRatio(t, PolicyS3FIFO)
	t.Logf("hot-key hit ratio: s3fifo %.2f %%, lru %.2f %%", 100*def, 100*lru)
	if def < lru+0.08 {
		t.Errorf("default policy hit ratio %.2f %% < LRU's %.2f %% + 8 points", 100*def, 100*lru)
	}
}

// A fresh insert is never the first victim: with an 8 MiB budget, a key
// written 20 Sets earlier is still cached when it is read, for every
// policy, through Lookup as through Peek, while the reads keep marking
// older entries as used. (The old second-chance LRU moved every entry
// read since its last check to the front and then evicted the newest
// unread ones: 0.53 % of these reads missed.)
func TestFreshInsertNotFirstVictim(t *testing.T) {
	for _, p := range []Policy{PolicyS3FIFO, PolicyLRU, PolicyTwoQueue} {
		t.Run(p.String(), func(t *testing.T) {
			c := newLocal(t, &Options{Policy: p, MaxBytes: 8 << 20})
			rng := rand.New(rand.NewPCG(3, 4))
			const lag = 20
			misses, reads := 0, 0
			for i := range 100000 {
				k := fmt.Sprintf("key:%d", i)
				if err := c.SetLocal(k, Item{Value: make([]byte, 200+rng.IntN(800))}); err != nil {
					t.Fatal(err)
				}
				if i < lag {
					continue
				}
				reads++
				if _, _, ok := c.Lookup(fmt.Sprintf("key:%d", i-lag)); !ok {
					misses++
				}
				// Re-read a few older keys, as a workload with a hot set does.
				c.Lookup(fmt.Sprintf("key:%d", i-lag-rng.IntN(2000)))
			}
			if misses != 0 {
				t.Errorf("%d of %d reads of a key written %d Sets earlier missed", misses, reads, lag)
			}
		})
	}
}

// EntryOverhead must match what an entry really costs on the heap beyond
// its key and value: at most 16 bytes above the measured cost (an honest
// budget), and never below it (the budget would be exceeded in memory).
func TestEntryOverheadMatchesHeap(t *testing.T) {
	for _, n := range []int{20000, 100000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			keys := make([]string, n)
			vals := make([][]byte, n)
			for i := range keys {
				keys[i] = fmt.Sprintf("key:%d", i)
				vals[i] = make([]byte, 100)
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			c, err := New(t.Context(), &Options{MaxBytes: 1 << 30})
			if err != nil {
				t.Fatal(err)
			}
			for i := range keys {
				if err := c.SetLocal(keys[i], Item{Value: vals[i]}); err != nil {
					t.Fatal(err)
				}
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			per := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n)
			t.Logf("%d entries of 100 B: %.1f B per entry beyond its key and value; EntryOverhead %d", n, per, EntryOverhead)
			if st := c.Stats(); st.Entries != n {
				t.Fatalf("%d entries cached, want %d", st.Entries, n)
			}
			if per > EntryOverhead || per < EntryOverhead-16 {
				t.Errorf("measured %.1f B per entry, EntryOverhead %d: want it within 16 bytes above", per, EntryOverhead)
			}
			runtime.KeepAlive(c)
			runtime.KeepAlive(keys)
			runtime.KeepAlive(vals)
			c.Close()
		})
	}
}
