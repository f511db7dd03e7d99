package tiered

import (
	"context"
	"fmt"
	"os"
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

// BenchmarkWarmRestart is issue 15's figure: n entries of 100 bytes on a
// Memory|Disk|Redis route, written once, then per iteration the cache is
// reopened on the same directory and Redis, and timed until its first
// background revalidation pass has confirmed every entry. It reports
// open-ms (Open, the warm-up from disk included), pass-ms (the pass, as
// Stats.LastRevalidation) and total-ms (from Open's start to the end of the
// pass), cpu-ms and redis-cpu-ms (the CPU time of this process and of
// redis-server over that span), the same per key, and scan-ms: store.Open
// and a Scan of the same directory, the floor Open's warm-up is compared
// with. The memory budget holds every entry half as much again: the
// figure is a warm start's, not eviction's.
func BenchmarkWarmRestart(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) { benchWarmRestart(b, n) })
	}
}

func benchWarmRestart(b *testing.B, n int) {
	ctx := context.Background()
	s := redistest.Start(b, nil)
	key := func(i int) string { return fmt.Sprintf("wr:%07d", i) }
	dir := b.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	o := &Options{
		Dir:         dir,
		Redis:       redisOpts(s),
		MemoryBytes: int64(n) * int64(len(key(0))+100+tracking.EntryOverhead) * 3 / 2,
		Routes:      []Route{{Prefix: "wr:", Tiers: Memory | Disk | Redis, TTL: time.Hour}},
	}
	c, err := Open(ctx, o)
	if err != nil {
		b.Fatal(err)
	}
	value := make([]byte, 100)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				if err := c.Set(ctx, key(i), value, 0); err != nil {
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
	b.ReportAllocs()
	var open, pass, total, cpu, rcpu, scan, scpu time.Duration
	var warmed int64
	for b.Loop() {
		cpu0, rcpu0 := processCPU(), redisCPU(b, s)
		start := time.Now()
		c, err := Open(ctx, o)
		if err != nil {
			b.Fatal(err)
		}
		opened := time.Since(start)
		deadline := time.Now().Add(5 * time.Minute)
		for c.stats.passes.Load() == 0 { // not Stats: it locks every shard
			if time.Now().After(deadline) {
				b.Fatal("no revalidation pass in 5 minutes")
			}
			time.Sleep(100 * time.Microsecond)
		}
		total += time.Since(start)
		cpu += processCPU() - cpu0
		rcpu += redisCPU(b, s) - rcpu0
		st := c.Stats()
		open += opened
		pass += st.LastRevalidation
		if warmed == 0 {
			// Concurrent Sets of keys sharing a generation slot may leave
			// a few off the local tiers (Redis holds them): count what
			// the first reopen found.
			warmed = st.Warmed
		}
		if st.Warmed != warmed || warmed < int64(n)*99/100 || st.Revalidated < warmed || st.Dropped != 0 {
			b.Fatalf("warmed %d (first reopen %d), revalidated %d, dropped %d of %d", st.Warmed, warmed, st.Revalidated, st.Dropped, n)
		}
		if ev := c.mem.Stats().Evictions; ev != 0 {
			// The figure is a warm start's: eviction would make it another.
			b.Fatalf("the memory tier evicted %d entries at the warm start", ev)
		}
		b.StopTimer()
		if err := c.Close(); err != nil {
			b.Fatal(err)
		}
		// The floor Open is compared with: opening the same store and
		// reading every entry, copied as warm copies it.
		scan0, scpu0 := time.Now(), processCPU()
		db, err := store.Open(dir, &store.Options{Logger: quietLog, Durability: store.NoSync})
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
		scan += time.Since(scan0)
		scpu += processCPU() - scpu0
		if int64(entries) < warmed {
			b.Fatalf("the store scan saw %d entries, warm %d", entries, warmed)
		}
		b.StartTimer()
	}
	k := float64(b.N) * float64(time.Millisecond)
	b.ReportMetric(float64(open)/k, "open-ms")
	b.ReportMetric(float64(pass)/k, "pass-ms")
	b.ReportMetric(float64(total)/k, "total-ms")
	// CPU time, ours and redis-server's, from Open to the pass's end: the
	// work done, steadier than wall time on a busy machine.
	b.ReportMetric(float64(cpu)/k, "cpu-ms")
	b.ReportMetric(float64(rcpu)/k, "redis-cpu-ms")
	// store.Open and a Scan of every entry, for comparison with open-ms.
	b.ReportMetric(float64(scan)/k, "scan-ms")
	b.ReportMetric(float64(scpu)/k, "scan-cpu-ms")
	// Per key, to compare sizes.
	perKey := float64(b.N) * float64(n)
	b.ReportMetric(float64(open)/perKey, "open-ns/key")
	b.ReportMetric(float64(pass)/perKey, "pass-ns/key")
	b.ReportMetric(float64(cpu)/perKey, "cpu-ns/key")
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
