package tiered

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/redistest"
	"github.com/thermoscache/thermos/store"
	"github.com/thermoscache/thermos/tracking"
)

// BenchmarkWarmRestart is issue 15's figure: for 100,000 and 1,000,000
// entries of 100 bytes on a Memory|Disk|Redis route, each written once in
// a directory and a Redis of its own (one Redis holding both made the
// 100k pass's scripts cost Redis ~1.6x the CPU), then per iteration each
// cache in turn is reopened on its directory, and timed until its first
// background revalidation pass has confirmed every entry. The sizes
// alternate in every iteration, so that the ratios between them are of one
// run on the same machine, and each Open starts after a GC, so that
// neither pays for the garbage the other left (a restarted process has
// none). For each size (the metric's prefix, 100k- or 1M-) it reports
// open-ms (Open, the warm-up from disk included), open-cpu-ms (this
// process's CPU time during it), pass-ms (the pass, as
// Stats.LastRevalidation), total-ms (from Open's start to the end of the
// pass), cpu-ms and redis-cpu-ms (the CPU time of this process and of
// redis-server over that span) and scan-ms: store.Open and a Scan of the
// same directory, the floor Open's warm-up is compared with. Then the
// medians of the per-iteration ratios of 1M's to 100k's figures per key:
// open-growth, open-cpu-growth and pass-growth (1 is linear). The memory
// budget holds every entry half as much again: the figure is a warm
// start's, not eviction's.
func BenchmarkWarmRestart(b *testing.B) {
	sizes := []*warmSize{{n: 100_000, name: "100k"}, {n: 1_000_000, name: "1M"}}
	for _, ws := range sizes {
		ws.s = redistest.Start(b, nil)
		ws.fill(b)
	}
	b.ReportAllocs()
	var growth [3][]float64 // open, open CPU, pass
	for b.Loop() {
		for _, ws := range sizes {
			ws.restart(b)
		}
		small, big := sizes[0].last, sizes[1].last
		k := float64(sizes[0].n) / float64(sizes[1].n)
		growth[0] = append(growth[0], float64(big.open)/float64(small.open)*k)
		growth[1] = append(growth[1], float64(big.openCPU)/float64(small.openCPU)*k)
		growth[2] = append(growth[2], float64(big.pass)/float64(small.pass)*k)
	}
	for _, ws := range sizes {
		ws.report(b)
	}
	b.ReportMetric(median(growth[0]), "open-growth")
	b.ReportMetric(median(growth[1]), "open-cpu-growth")
	b.ReportMetric(median(growth[2]), "pass-growth")
}

// warmSize is one of BenchmarkWarmRestart's caches: its options, and what
// its restarts measured.
type warmSize struct {
	n      int
	name   string
	s      *redistest.Server
	o      *Options
	warmed int64 // entries the first reopen found
	last   warmFigures
	sum    warmFigures
	runs   int
}

type warmFigures struct {
	open, openCPU, pass, total, cpu, rcpu, scan time.Duration
}

func (ws *warmSize) key(i int) string { return fmt.Sprintf("wr%s:%07d", ws.name, i) }

// fill writes ws's entries and closes the cache.
func (ws *warmSize) fill(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	prefix := "wr" + ws.name + ":"
	ws.o = &Options{
		Dir:         dir,
		Redis:       redisOpts(ws.s),
		MemoryBytes: int64(ws.n) * int64(len(ws.key(0))+100+tracking.EntryOverhead) * 3 / 2,
		Routes:      []Route{{Prefix: prefix, Tiers: Memory | Disk | Redis, TTL: time.Hour}},
	}
	c, err := Open(ctx, ws.o)
	if err != nil {
		b.Fatal(err)
	}
	value := make([]byte, 100)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < ws.n; i = int(next.Add(1)) - 1 {
				if err := c.Set(ctx, ws.key(i), value, 0); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	if err := c.Close(); err != nil {
		b.Fatal(err)
	}
}

// restart reopens ws's cache, waits for its first pass, closes it, and
// measures the store scan of its directory.
func (ws *warmSize) restart(b *testing.B) {
	ctx := context.Background()
	b.StopTimer()
	runtime.GC()
	b.StartTimer()
	var f warmFigures
	cpu0, rcpu0 := processCPU(), redisCPU(b, ws.s)
	start := time.Now()
	c, err := Open(ctx, ws.o)
	if err != nil {
		b.Fatal(err)
	}
	f.open = time.Since(start)
	f.openCPU = processCPU() - cpu0
	deadline := time.Now().Add(5 * time.Minute)
	for c.stats.passes.Load() == 0 { // not Stats: it locks every shard
		if time.Now().After(deadline) {
			b.Fatal("no revalidation pass in 5 minutes")
		}
		time.Sleep(100 * time.Microsecond)
	}
	f.total = time.Since(start)
	f.cpu = processCPU() - cpu0
	f.rcpu = redisCPU(b, ws.s) - rcpu0
	st := c.Stats()
	f.pass = st.LastRevalidation
	if ws.warmed == 0 {
		// Concurrent Sets of keys sharing a generation slot may leave
		// a few off the local tiers (Redis holds them): count what
		// the first reopen found.
		ws.warmed = st.Warmed
	}
	if st.Warmed != ws.warmed || ws.warmed < int64(ws.n)*99/100 || st.Revalidated < ws.warmed || st.Dropped != 0 {
		b.Fatalf("%s: warmed %d (first reopen %d), revalidated %d, dropped %d of %d", ws.name, st.Warmed, ws.warmed, st.Revalidated, st.Dropped, ws.n)
	}
	if ev := c.mem.Stats().Evictions; ev != 0 {
		// The figure is a warm start's: eviction would make it another.
		b.Fatalf("%s: the memory tier evicted %d entries at the warm start", ws.name, ev)
	}
	b.StopTimer()
	defer b.StartTimer()
	if err := c.Close(); err != nil {
		b.Fatal(err)
	}
	// The floor Open is compared with: opening the same store and
	// reading every entry, copied as warm copies it.
	runtime.GC()
	scan0 := time.Now()
	db, err := store.Open(ws.o.Dir, &store.Options{Logger: quietLog, Durability: store.NoSync})
	if err != nil {
		b.Fatal(err)
	}
	entries := 0
	if err := db.Scan(ctx, "", func(string, store.Entry) error { entries++; return nil }); err != nil {
		b.Fatal(err)
	}
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	f.scan = time.Since(scan0)
	if int64(entries) < ws.warmed {
		b.Fatalf("%s: the store scan saw %d entries, warm %d", ws.name, entries, ws.warmed)
	}
	ws.last = f
	ws.runs++
	ws.sum.add(f)
}

func (a *warmFigures) add(f warmFigures) {
	a.open += f.open
	a.openCPU += f.openCPU
	a.pass += f.pass
	a.total += f.total
	a.cpu += f.cpu
	a.rcpu += f.rcpu
	a.scan += f.scan
}

// median is the median of xs (0 if none); xs is reordered.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	if len(xs)%2 == 0 {
		return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
	}
	return xs[len(xs)/2]
}

// report reports ws's mean figures.
func (ws *warmSize) report(b *testing.B) {
	k := float64(ws.runs) * float64(time.Millisecond)
	for _, m := range []struct {
		d    time.Duration
		unit string
	}{
		{ws.sum.open, "open-ms"}, {ws.sum.openCPU, "open-cpu-ms"}, {ws.sum.pass, "pass-ms"},
		{ws.sum.total, "total-ms"}, {ws.sum.cpu, "cpu-ms"}, {ws.sum.rcpu, "redis-cpu-ms"},
		{ws.sum.scan, "scan-ms"},
	} {
		b.ReportMetric(float64(m.d)/k, ws.name+"-"+m.unit)
	}
	perKey := float64(ws.runs) * float64(ws.n)
	b.ReportMetric(float64(ws.sum.open)/perKey, ws.name+"-open-ns/key")
	b.ReportMetric(float64(ws.sum.pass)/perKey, ws.name+"-pass-ns/key")
}

// redisCPU is the CPU time s has used, from INFO cpu.
func redisCPU(b *testing.B, s *redistest.Server) time.Duration {
	var sum float64
	for _, line := range strings.Split(s.CLI("INFO", "cpu"), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("INFO cpu: %s", line)
			}
			sum += f
		}
	}
	return time.Duration(sum * float64(time.Second))
}
