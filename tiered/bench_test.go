package tiered

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/clock"
	"github.com/thermoscache/thermos/internal/redistest"
	"github.com/thermoscache/thermos/store"
	"github.com/thermoscache/thermos/tracking"
)

// Each benchmark compares a tiered read with the layer under it, in the
// same run: the difference is routing, the envelope and the counters.
// Values are 100 bytes; 1,000 keys are read round-robin.

const benchKeys = 1000

func benchKey(i int) string { return fmt.Sprintf("bench:%04d", i%benchKeys) }

var benchValue = make([]byte, 100)

// BenchmarkMemoryHit: a memory hit through tiered vs tracking.Cache.Get.
func BenchmarkMemoryHit(b *testing.B) {
	ctx := context.Background()
	c := openT(b, &Options{Routes: []Route{{Prefix: "bench:", Tiers: Memory, TTL: time.Hour}}})
	tc, err := tracking.New(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tc.Close() })
	for i := range benchKeys {
		if err := c.Set(ctx, benchKey(i), benchValue, 0); err != nil {
			b.Fatal(err)
		}
		if err := tc.SetLocal(benchKey(i), tracking.Item{Value: benchValue}); err != nil {
			b.Fatal(err)
		}
	}
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = benchKey(i)
	}
	b.Run("tiered", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, ok, _ := c.Get(ctx, keys[i%benchKeys]); !ok {
				b.Fatal("miss")
			}
			i++
		}
	})
	b.Run("tracking", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, _, ok := tc.Get(keys[i%benchKeys]); !ok {
				b.Fatal("miss")
			}
			i++
		}
	})
	b.Run("tiered-parallel", func(b *testing.B) {
		b.ReportAllocs()
		var worker atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			// Each goroutine starts at its own key (see tracking's benchmark).
			i := int(worker.Add(1)) * (benchKeys / 8)
			for pb.Next() {
				c.Get(ctx, keys[i%benchKeys])
				i++
			}
		})
	})
	b.Run("tracking-parallel", func(b *testing.B) {
		b.ReportAllocs()
		var worker atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(worker.Add(1)) * (benchKeys / 8)
			for pb.Next() {
				tc.Get(keys[i%benchKeys])
				i++
			}
		})
	})
}

// BenchmarkDiskHit compares, on one data set and in the same run, a disk
// hit through tiered with the layers under it. Four getters take turns in
// slices of diskHitSlice reads, each slice timed, so machine drift hits all
// of them alike; in each round every getter reads the same keys (a
// pseudo-random sequence), and the getters' order changes from round to
// round (see timeRounds):
//
//   - pebble: a raw pebble.DB opened with the options store gives Pebble
//     (default options, a block cache of store.DefaultCacheBytes; store
//     adds only its logger, event listener and a file system wrapper that
//     a hit from the memtable or block cache does not reach), holding
//     records of the same size under the same keys, the value copied out
//     as store does;
//   - store: store.DB.Get on a store opened with the disk-only cache's
//     store options (its own coarse clock), holding the same entries;
//   - disk: tiered Get on a Disk-only route;
//   - memdisk: tiered Get on a Memory|Disk route whose memory budget holds
//     about 1% of the keys, so nearly every read misses memory, reads the
//     disk and fills memory, evicting another key: what a Memory|Disk read
//     does when the working set outgrows memory. memdisk-memhit/get is the
//     share of its reads memory answered.
//
// name/pebble is the median, over rounds, of a getter's slice time over
// the pebble slice of the same round, so a preemption or a GC landing in
// one slice does not skew it; name/pebble-mean is the ratio of the total
// times. "fresh" reads what was just written (Pebble's memtables);
// "reopen" closes every database and opens the directories again first
// (sstables through the block cache). Each getter reads its own database,
// so none finds its data in the CPU caches because another just read it.
// Before the timed loop every getter reads every key once. allocs/get are
// each getter's own (testing.AllocsPerRun).
//
// keys=10000 is store's BenchmarkDiskHit's data set; keys=1000 is smaller
// (Pebble is faster on it, so tiered's own cost weighs more in the ratio).
func BenchmarkDiskHit(b *testing.B) {
	for _, nkeys := range []int{1000, 10_000} {
		for _, reopen := range []bool{false, true} {
			name := "fresh"
			if reopen {
				name = "reopen"
			}
			b.Run(fmt.Sprintf("keys=%d/%s", nkeys, name), func(b *testing.B) { benchDiskHit(b, nkeys, reopen) })
		}
	}
}

const diskHitSlice = 256

// timeRounds runs n getters in rounds until b.Loop ends: in each round
// every getter runs one slice of diskHitSlice calls of get(g, i), where i
// runs over the same diskHitSlice indices for every getter of the round
// (round*diskHitSlice onwards), so all read the same keys. The order of the
// getters changes every round, cycling through all permutations, so each
// getter follows every other equally often (a getter that allocates more
// starts more GC cycles, whose marking slows whoever runs next). It
// returns, for each getter, the duration of its slice in each complete
// round, or nil if not one round completed.
func timeRounds(b *testing.B, n int, get func(g, i int)) [][]time.Duration {
	perms := permutations(n)
	slices := make([][]time.Duration, n)
	for g := range slices {
		slices[g] = make([]time.Duration, 0, 1024)
	}
	round, pos, k := 0, 0, 0
	order := perms[0]
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		if k == diskHitSlice {
			now := time.Now()
			slices[order[pos]] = append(slices[order[pos]], now.Sub(start))
			start, k = now, 0
			if pos++; pos == n {
				round, pos = round+1, 0
				order = perms[round%len(perms)]
			}
		}
		get(order[pos], round*diskHitSlice+k)
		k++
	}
	b.StopTimer()
	if round == 0 {
		return nil
	}
	for g := range slices {
		slices[g] = slices[g][:round]
	}
	return slices
}

// permutations returns every order of 0..n-1.
func permutations(n int) [][]int {
	if n == 1 {
		return [][]int{{0}}
	}
	var all [][]int
	for _, p := range permutations(n - 1) {
		for at := 0; at <= len(p); at++ {
			q := append(append(append(make([]int, 0, n), p[:at]...), n-1), p[at:]...)
			all = append(all, q)
		}
	}
	return all
}

// medianRatio is the median over rounds of a[r]/base[r].
func medianRatio(a, base []time.Duration) float64 {
	ratios := make([]float64, len(a))
	for r := range a {
		ratios[r] = float64(a[r]) / float64(base[r])
	}
	return median(ratios)
}

func sumDurations(ds []time.Duration) time.Duration {
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return sum
}

// pebbleQuiet drops Pebble's own logging (it prints on every open).
type pebbleQuiet struct{}

func (pebbleQuiet) Infof(string, ...any)      {}
func (pebbleQuiet) Errorf(string, ...any)     {}
func (pebbleQuiet) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }

func benchDiskHit(b *testing.B, nkeys int, reopen bool) {
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	dir := b.TempDir()
	diskOpts := &Options{Dir: filepath.Join(dir, "disk"), Logger: quiet, RequireRoute: true,
		Routes: []Route{{Prefix: "bench:", Tiers: Disk, TTL: time.Hour}}}
	memDiskOpts := &Options{Dir: filepath.Join(dir, "memdisk"), Logger: quiet, RequireRoute: true,
		MemoryBytes: int64(nkeys) / 100 * (tracking.EntryOverhead + 160),
		Routes:      []Route{{Prefix: "bench:", Tiers: Memory | Disk, TTL: time.Hour}}}
	rawDir := filepath.Join(dir, "raw")
	rawOpts := func() *pebble.Options {
		return &pebble.Options{Logger: pebbleQuiet{}, CacheSize: store.DefaultCacheBytes}
	}
	open := func(o *Options) *Cache {
		c, err := Open(ctx, o)
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	cd, cm := open(diskOpts), open(memDiskOpts)
	pdb, err := pebble.Open(rawDir, rawOpts())
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]string, nkeys)
	rkeys := make([][]byte, nkeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("bench:key:%08d", i)
		rkeys[i] = []byte(keys[i])
		for _, c := range []*Cache{cd, cm} {
			if err := c.Set(ctx, keys[i], benchValue, 0); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, c := range []*Cache{cd, cm} {
		if err := c.Flush(ctx); err != nil {
			b.Fatal(err)
		}
	}
	// The store's entries are the disk-only cache's; the raw records are
	// what the store holds, in size (its record header, then the envelope
	// tiered wrote).
	clk := clock.NewCoarse(0)
	b.Cleanup(clk.Close)
	so := *cd.disk.so
	so.Clock = clk
	storeDir := filepath.Join(dir, "store")
	db, err := store.Open(storeDir, &so)
	if err != nil {
		b.Fatal(err)
	}
	for i := range keys {
		se, ok, err := cd.disk.wb.db.Load().Get(ctx, keys[i])
		if err != nil || !ok {
			b.Fatalf("store Get(%q) = %v, %v", keys[i], ok, err)
		}
		if err := db.SetExpiry(ctx, keys[i], se.Value, se.Expiry); err != nil {
			b.Fatal(err)
		}
		rec := append(make([]byte, store.EntryOverhead, store.EntryOverhead+len(se.Value)), se.Value...)
		if err := pdb.Set(rkeys[i], rec, pebble.NoSync); err != nil {
			b.Fatal(err)
		}
	}
	if reopen {
		for _, c := range []*Cache{cd, cm} {
			if err := c.Close(); err != nil {
				b.Fatal(err)
			}
		}
		if err := pdb.Flush(); err != nil {
			b.Fatal(err)
		}
		if err := pdb.Close(); err != nil {
			b.Fatal(err)
		}
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
		if db, err = store.Open(storeDir, &so); err != nil {
			b.Fatal(err)
		}
		cd, cm = open(diskOpts), open(memDiskOpts)
		if pdb, err = pebble.Open(rawDir, rawOpts()); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() { _ = cd.Close(); _ = cm.Close(); _ = pdb.Close(); _ = db.Close() })

	names := [...]string{"pebble", "store", "disk", "memdisk"}
	get := [len(names)]func(i int32){
		func(i int32) {
			v, c, err := pdb.Get(rkeys[i])
			if err != nil {
				b.Fatal(err)
			}
			p := make([]byte, len(v))
			copy(p, v)
			_ = c.Close()
		},
		func(i int32) {
			if e, ok, err := db.Get(ctx, keys[i]); err != nil || !ok || len(e.Value) == 0 {
				b.Fatalf("store Get(%q) = %v, %v", keys[i], ok, err)
			}
		},
		func(i int32) {
			if v, ok, err := cd.Get(ctx, keys[i]); err != nil || !ok || len(v) != len(benchValue) {
				b.Fatalf("disk Get(%q) = %d bytes, %v, %v", keys[i], len(v), ok, err)
			}
		},
		func(i int32) {
			if v, ok, err := cm.Get(ctx, keys[i]); err != nil || !ok || len(v) != len(benchValue) {
				b.Fatalf("memdisk Get(%q) = %d bytes, %v, %v", keys[i], len(v), ok, err)
			}
		},
	}
	for g := range get {
		for i := range nkeys {
			get[g](int32(i))
		}
	}
	var allocs [len(names)]float64
	for g := range get {
		n := int32(0)
		allocs[g] = testing.AllocsPerRun(1000, func() { get[g](n % int32(nkeys)); n += 7 })
	}
	memHits0 := cm.Stats().Routes[0].MemoryHits

	// A pre-generated pseudo-random key sequence; in each round every
	// getter reads the same diskHitSlice keys of it.
	const seqLen = 1 << 16
	seq := make([]int32, seqLen)
	x := uint32(12345)
	for i := range seq {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		seq[i] = int32(x % uint32(nkeys))
	}
	slices := timeRounds(b, len(names), func(g, i int) { get[g](seq[i&(seqLen-1)]) })
	if slices == nil {
		return // too few iterations to compare (the b.N=1 probe)
	}
	rounds := len(slices[0])
	per := float64(rounds * diskHitSlice)
	for g, name := range names {
		b.ReportMetric(float64(sumDurations(slices[g]))/per, name+"-ns/get")
		b.ReportMetric(allocs[g], name+"-allocs/get")
		if g > 0 {
			b.ReportMetric(medianRatio(slices[g], slices[0]), name+"/pebble")
			b.ReportMetric(float64(sumDurations(slices[g]))/float64(sumDurations(slices[0])), name+"/pebble-mean")
		}
	}
	memHits := cm.Stats().Routes[0].MemoryHits - memHits0
	b.ReportMetric(float64(memHits)/per, "memdisk-memhit/get")
}

// BenchmarkRedisHit: a Redis hit through tiered (Redis-only route) vs a
// plain rueidis GET of the same keys.
func BenchmarkRedisHit(b *testing.B) {
	ctx := context.Background()
	s := redistest.Start(b, nil)
	c := openT(b, &Options{Redis: redisOpts(s), Routes: []Route{{Prefix: "bench:", Tiers: Redis, TTL: time.Hour}}})
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{s.Addr()}, DisableCache: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(rc.Close)
	for i := range benchKeys {
		if err := c.Set(ctx, benchKey(i), benchValue, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("tiered", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, ok, err := c.Get(ctx, benchKey(i)); !ok || err != nil {
				b.Fatalf("miss: %v", err)
			}
			i++
		}
	})
	b.Run("rueidis", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := rc.Do(ctx, rc.B().Get().Key(benchKey(i)).Build()).AsBytes(); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

type benchProfile struct {
	Name  string `json:"name"`
	Age   int    `json:"age"`
	Admin bool   `json:"admin"`
}

// BenchmarkTypedGetOrLoadHit: a typed (JSON) GetOrLoad memory hit vs the
// untyped GetOrLoad hit of the same bytes: the cost of decoding.
func BenchmarkTypedGetOrLoadHit(b *testing.B) {
	ctx := context.Background()
	c := openT(b, &Options{Routes: []Route{{Prefix: "bench:", Tiers: Memory, TTL: time.Hour, Beta: -1}}})
	ty := NewTyped[benchProfile](c, nil)
	load := TypedLoaderFunc[benchProfile](func(context.Context, string) (benchProfile, error) { return benchProfile{Name: "ada", Age: 36}, nil })
	for i := range benchKeys {
		if _, _, err := ty.GetOrLoad(ctx, benchKey(i), load); err != nil {
			b.Fatal(err)
		}
	}
	raw := LoaderFunc(func(context.Context, string) ([]byte, error) { return nil, ErrNotFound })
	b.Run("typed", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, ok, err := ty.GetOrLoad(ctx, benchKey(i), load); !ok || err != nil {
				b.Fatalf("miss: %v", err)
			}
			i++
		}
	})
	b.Run("bytes", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, ok, err := c.GetOrLoad(ctx, benchKey(i), raw); !ok || err != nil {
				b.Fatalf("miss: %v", err)
			}
			i++
		}
	})
}
