package memhit

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/maypok86/otter/v2"
	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redistest"
	"github.com/thermoscache/thermos/tiered"
	"github.com/thermoscache/thermos/tracking"
)

const (
	benchKeys = 10000
	valueSize = 100
	seqLen    = 1 << 20 // the pre-generated key sequence
	sliceOps  = 1 << 14 // operations per getter per turn
)

// reqKey keys the values of the request-like context of a getter.
type reqKey int

// getter is one cache's hit, and whether it may be called concurrently.
type getter struct {
	name     string
	get      func(k string) bool
	parallel bool
}

// getters fills every cache with the same keys and values and returns
// their hits, the keys, and a zipfian sequence of key indexes (all hits).
func getters(tb testing.TB) ([]getter, []string, []uint32) {
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("key:%d", i)
	}
	val := func() []byte { return make([]byte, valueSize) }

	m := make(map[string][]byte, benchKeys)
	gl, err := lru.New[string, []byte](benchKeys)
	if err != nil {
		tb.Fatal(err)
	}
	ot := otter.Must(&otter.Options[string, []byte]{MaximumSize: benchKeys})
	tb.Cleanup(func() { ot.StopAllGoroutines() })
	// Get, Lookup and Get without yielding (Options.HitYield) each get a
	// cache of their own, so none finds the entries in the CPU's caches
	// because another just read them.
	var tcs [3]*tracking.Cache
	for i := range tcs {
		o := &tracking.Options{MaxBytes: 1 << 30}
		if i == 2 {
			o.HitYield = -1
		}
		c, err := tracking.New(tb.Context(), o)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { c.Close() })
		tcs[i] = c
	}
	tc, tl, tn := tcs[0], tcs[1], tcs[2]
	// Each cache is filled on its own, so its entries lie together in
	// memory as they would in a program with one cache.
	vals := make([][]byte, len(keys))
	for i := range vals {
		vals[i] = val()
	}
	for i, k := range keys {
		m[k] = vals[i]
	}
	for i, k := range keys {
		gl.Add(k, vals[i])
	}
	for i, k := range keys {
		ot.Set(k, vals[i])
	}
	for _, c := range tcs {
		for i, k := range keys {
			if err := c.SetLocal(k, tracking.Item{Value: vals[i]}); err != nil {
				tb.Fatal(err)
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 1))
	z := rand.NewZipf(rng, 1.1, 1, benchKeys-1)
	seq := make([]uint32, seqLen)
	for i := range seq {
		seq[i] = uint32(z.Uint64())
	}
	// tiered's memory hit, on a memory-only route and on a Memory|Redis
	// route (a private redis-server), and rueidis's own client-side cache
	// hit (DoCache, BCAST tracking) for comparison.
	srv := redistest.Start(tb, nil)
	tm := openTiered(tb, &tiered.Options{MemoryBytes: 1 << 30, Routes: []tiered.Route{{Prefix: "key:", Tiers: tiered.Memory, TTL: time.Hour, Beta: -1}}})
	memRedis := func(srv *redistest.Server) *tiered.Cache {
		return openTiered(tb, &tiered.Options{MemoryBytes: 1 << 30, Redis: &rueidis.ClientOption{InitAddress: []string{srv.Addr()}},
			Routes: []tiered.Route{{Prefix: "key:", Tiers: tiered.Memory | tiered.Redis, TTL: time.Hour, Beta: -1}}})
	}
	// trq is tr read under a request's context: a cache of its own, like
	// the tracking caches, on a server of its own (its writes of the same
	// keys would invalidate tr's copies).
	tr, trq := memRedis(srv), memRedis(redistest.Start(tb, nil))
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr()},
		ClientTrackingOptions: []string{"PREFIX", "key:", "BCAST"}, CacheSizeEachConn: 1 << 30})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(rc.Close)
	ctx := context.Background()
	// One cache after the other, like the tracking caches above: filled in
	// one loop, the two caches' entries (one size class) alternated in
	// memory, so each cache line a hit fetched held half of another
	// cache's entries, a cost the tracking caches did not pay.
	for _, c := range []*tiered.Cache{tm, tr, trq} {
		for i, k := range keys {
			if err := c.Set(ctx, k, vals[i], 0); err != nil {
				tb.Fatal(err)
			}
		}
	}
	for _, k := range keys { // into rueidis's cache
		if err := rc.DoCache(ctx, rc.B().Get().Key(k).Cache(), time.Hour).Error(); err != nil {
			tb.Fatal(err)
		}
	}
	// A request's context as a server hands it over, a few layers deep
	// (net/http adds two values and a cancel; middleware adds its own).
	reqCtx := ctx
	for i := range 4 {
		reqCtx = context.WithValue(reqCtx, reqKey(i), i)
	}
	reqCtx, cancel := context.WithTimeout(reqCtx, time.Hour)
	tb.Cleanup(cancel)
	gs := []getter{
		{"map", func(k string) bool { _, ok := m[k]; return ok }, true},
		{"golang-lru", func(k string) bool { _, ok := gl.Get(k); return ok }, true},
		{"otter", func(k string) bool { _, ok := ot.GetIfPresent(k); return ok }, true},
		{"tracking-Get", func(k string) bool { _, fresh, _ := tc.Get(k); return fresh }, true},
		{"tracking-Lookup", func(k string) bool { _, fresh, _ := tl.Lookup(k); return fresh }, true},
		{"tracking-Get-noyield", func(k string) bool { _, fresh, _ := tn.Get(k); return fresh }, true},
		{"tiered-memory", func(k string) bool { _, ok, _ := tm.Get(ctx, k); return ok }, true},
		{"tiered-memory+redis", func(k string) bool { _, ok, _ := tr.Get(ctx, k); return ok }, true},
		{"tiered-memory+redis-reqctx", func(k string) bool { _, ok, _ := trq.Get(reqCtx, k); return ok }, true},
		{"rueidis-DoCache", func(k string) bool {
			r := rc.DoCache(ctx, rc.B().Get().Key(k).Cache(), time.Hour)
			return r.Error() == nil && r.IsCacheHit()
		}, true},
	}
	for _, g := range gs {
		for _, k := range keys[:100] {
			if !g.get(k) {
				tb.Fatalf("%s: %s missing", g.name, k)
			}
		}
	}
	return gs, keys, seq
}

func openTiered(tb testing.TB, o *tiered.Options) *tiered.Cache {
	tb.Helper()
	c, err := tiered.Open(context.Background(), o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// BenchmarkHit measures a hit in every cache, interleaved: each iteration
// runs sliceOps hits of every getter in turn, serially, then the same on
// GOMAXPROCS goroutines at once, so all getters see the same machine
// conditions (back-to-back benchmarks here drift by ±50 %).
//
// Each slice is timed by the CPU time the process used meanwhile, as well
// as by the wall clock: on a machine shared with other work a goroutine
// often waits for a core, which the wall clock counts and CPU time does
// not. (Thread CPU time would be exact for a goroutine locked to its
// thread, but a locked goroutine that yields costs an OS thread switch,
// which would misprice Options.HitYield; process CPU time also counts an
// idle processor's brief spinning while one goroutine runs, which adds
// about the same to every serial figure.) It reports per getter, in ns
// per hit: serial (CPU, and "-wall"), parallel as CPU time over all
// goroutines' hits divided by the goroutines (what the wall time would be
// with a core each), and the ratios the memory tier is held to:
// tracking-Get (and -Lookup) over golang-lru and over otter, serial and
// parallel, each getter's parallel / serial (0.5 is perfect scaling on 2
// cores), Get with and without HitYield, and the Memory|Redis hit under a
// request's context (a few layers deep) over the same under Background
// (reqctx/background).
func BenchmarkHit(b *testing.B) {
	gs, keys, seq := getters(b)
	procs := runtime.GOMAXPROCS(0)
	n := len(gs)
	serial, serialWall, par := make([]time.Duration, n), make([]time.Duration, n), make([]time.Duration, n)
	turns, pos := 0, 0
	for b.Loop() {
		// Each turn starts with another getter, so none always runs
		// first (after the key sequence was last read).
		for i := range gs {
			gi := (i + turns) % n
			g := gs[gi]
			wall, cpu := time.Now(), processCPU()
			for j := range sliceOps {
				g.get(keys[seq[(pos+j)&(seqLen-1)]])
			}
			serial[gi] += processCPU() - cpu
			serialWall[gi] += time.Since(wall)
		}
		for i := range gs {
			gi := (i + turns) % n
			g := gs[gi]
			var wg sync.WaitGroup
			cpu := processCPU()
			for w := range procs {
				// Each goroutine reads its own part of the sequence: in
				// lockstep they would all read the same key at once.
				off := pos + w*(seqLen/procs)
				wg.Go(func() {
					for j := range sliceOps {
						g.get(keys[seq[(off+j)&(seqLen-1)]])
					}
				})
			}
			wg.Wait()
			par[gi] += processCPU() - cpu
		}
		pos += sliceOps
		turns++
	}
	b.StopTimer()
	ops := float64(turns * sliceOps)
	byName := map[string]int{}
	for gi, g := range gs {
		byName[g.name] = gi
		s := float64(serial[gi]) / ops
		p := float64(par[gi]) / ops / float64(procs) / float64(procs)
		b.ReportMetric(s, g.name+"-ns")
		b.ReportMetric(float64(serialWall[gi])/ops, g.name+"-wall-ns")
		b.ReportMetric(p, g.name+"-par-ns")
		b.ReportMetric(p/s, g.name+"-par/serial")
	}
	ratio := func(a, c string, d []time.Duration) float64 {
		return float64(d[byName[a]]) / float64(d[byName[c]])
	}
	for _, t := range []string{"tiered-memory", "tiered-memory+redis"} {
		b.ReportMetric(ratio(t, "tracking-Get", serial), t+"/tracking")
		b.ReportMetric(ratio(t, "tracking-Get", par), t+"/tracking-par")
	}
	b.ReportMetric(ratio("rueidis-DoCache", "tiered-memory+redis", serial), "DoCache/tiered-memory+redis")
	b.ReportMetric(ratio("tiered-memory+redis-reqctx", "tiered-memory+redis", serial), "reqctx/background")
	b.ReportMetric(ratio("tracking-Get", "tracking-Get-noyield", serial), "Get/Get-noyield")
	b.ReportMetric(ratio("tracking-Get", "tracking-Get-noyield", par), "Get/Get-noyield-par")
	for _, t := range []string{"tracking-Get", "tracking-Lookup"} {
		b.ReportMetric(ratio(t, "golang-lru", serial), t+"/golang-lru")
		b.ReportMetric(ratio(t, "otter", serial), t+"/otter")
		b.ReportMetric(ratio(t, "otter", par), t+"/otter-par")
	}
}

// processCPU is the CPU time the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestHitsDoNotAllocate checks every getter's hit for allocations.
func TestHitsDoNotAllocate(t *testing.T) {
	gs, keys, seq := getters(t)
	for _, g := range gs {
		i := 0
		if n := testing.AllocsPerRun(10000, func() {
			g.get(keys[seq[i&(seqLen-1)]])
			i++
		}); n != 0 && (strings.HasPrefix(g.name, "tracking-") || strings.HasPrefix(g.name, "tiered-")) {
			t.Errorf("%s: %.2f allocations per hit, want 0", g.name, n)
		}
	}
}
