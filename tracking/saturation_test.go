package tracking

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redistest"
)

// lagScript writes a key and returns the server's clock right after, so a
// write's time is taken where it happens, whichever goroutine (or process)
// sent it and however late it was scheduled.
const lagScript = `redis.call('SET', KEYS[1], ARGV[1]); return redis.call('TIME')`

// BenchmarkInvalidationLagSaturated measures how late an invalidation
// reaches a cache while its readers keep every core busy: this cache's
// OnInvalidate (with the default Options.HitYield, and with HitYield
// off) and, in the same run, rueidis's own OnInvalidations on a DoCache
// client (BCAST over the same prefix) — the same hook on each, timed
// against the server's clock at the write (signed: a push may beat the
// writer's reply). Phases rotate between 2×GOMAXPROCS readers hitting
// one of the three (Lookup, lock-free; or DoCache), writerRounds times.
// It reports p50 and p99 of the lag of the cache being read, and of
// rueidis's under the same readers. Run with -benchtime=1x.
func BenchmarkInvalidationLagSaturated(b *testing.B) {
	const (
		hotKeys      = 1000
		writesPhase  = 100
		writerRounds = 3
	)
	srv := redistest.Start(b, nil)
	c := newRedisCache(b, srv, &Options{Prefixes: []string{"lag:"}})
	cn := newRedisCache(b, srv, &Options{Prefixes: []string{"lag:"}, HitYield: -1})
	type arrival struct{ thermos, noyield, rueidis int64 }
	var mu sync.Mutex
	arrived := map[string]*arrival{}
	note := func(k string, set func(a *arrival, now int64)) {
		if !strings.HasPrefix(k, "lag:w:") {
			return
		}
		now := time.Now().UnixNano()
		mu.Lock()
		a := arrived[k]
		if a == nil {
			a = &arrival{}
			arrived[k] = a
		}
		set(a, now)
		mu.Unlock()
	}
	c.OnInvalidate(func(keys []string, _ bool) {
		for _, k := range keys {
			note(k, func(a *arrival, now int64) { a.thermos = now })
		}
	})
	cn.OnInvalidate(func(keys []string, _ bool) {
		for _, k := range keys {
			note(k, func(a *arrival, now int64) { a.noyield = now })
		}
	})
	rc, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:           []string{srv.Addr()},
		ClientTrackingOptions: []string{"BCAST", "PREFIX", "lag:"},
		OnInvalidations: func(msgs []rueidis.RedisMessage) {
			for i := range msgs {
				if k, err := msgs[i].ToString(); err == nil {
					note(k, func(a *arrival, now int64) { a.rueidis = now })
				}
			}
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(rc.Close)
	w := newWriter(b, srv)
	ctx := context.Background()
	hot := make([]string, hotKeys)
	for i := range hot {
		hot[i] = fmt.Sprintf("lag:hot:%d", i)
		set(b, w, hot[i], "v")
	}
	for _, k := range hot {
		fetchCached(b, c, k)
		fetchCached(b, cn, k)
		waitFor(b, "rueidis to cache "+k, 5*time.Second, func() bool {
			return rc.DoCache(ctx, rc.B().Get().Key(k).Cache(), time.Hour).IsCacheHit()
		})
	}
	script := rueidis.NewLuaScript(lagScript)
	kinds := []string{"thermos", "thermos-noyield", "rueidis"}
	readers := map[string]func(k string){
		"thermos":         func(k string) { c.Lookup(k) },
		"thermos-noyield": func(k string) { cn.Lookup(k) },
		"rueidis":         func(k string) { rc.DoCache(ctx, rc.B().Get().Key(k).Cache(), time.Hour) },
	}
	own := map[string]func(a *arrival) int64{
		"thermos":         func(a *arrival) int64 { return a.thermos },
		"thermos-noyield": func(a *arrival) int64 { return a.noyield },
		"rueidis":         func(a *arrival) int64 { return a.rueidis },
	}
	written := map[string]map[string]int64{} // reader kind -> key -> server time
	for _, k := range kinds {
		written[k] = map[string]int64{}
	}
	for b.Loop() {
		for round := range writerRounds {
			for _, kind := range kinds {
				read := readers[kind]
				var stop atomic.Bool
				var wg sync.WaitGroup
				for g := range 2 * runtime.GOMAXPROCS(0) {
					wg.Go(func() {
						for i := g * 97; !stop.Load(); i++ {
							read(hot[i%hotKeys])
						}
					})
				}
				for i := range writesPhase {
					k := fmt.Sprintf("lag:w:%s:%d:%d", kind, round, i)
					t, err := script.Exec(ctx, w, []string{k}, []string{"v"}).AsIntSlice()
					if err != nil || len(t) != 2 {
						b.Fatalf("EVAL: %v %v", t, err)
					}
					written[kind][k] = t[0]*1e9 + t[1]*1e3
				}
				stop.Store(true)
				wg.Wait()
			}
		}
	}
	b.StopTimer()
	waitFor(b, "every invalidation", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, ks := range written {
			for k := range ks {
				if a := arrived[k]; a == nil || a.thermos == 0 || a.noyield == 0 || a.rueidis == 0 {
					return false
				}
			}
		}
		return true
	})
	q := func(d []time.Duration, p float64) time.Duration {
		slices.Sort(d)
		return d[int(p*float64(len(d)-1))]
	}
	for _, kind := range kinds {
		var mine, ru []time.Duration
		for k, at := range written[kind] {
			a := arrived[k]
			mine = append(mine, time.Duration(own[kind](a)-at))
			ru = append(ru, time.Duration(a.rueidis-at))
		}
		b.ReportMetric(float64(q(mine, 0.5).Microseconds()), kind+"-lag-p50-µs")
		b.ReportMetric(float64(q(mine, 0.99).Microseconds()), kind+"-lag-p99-µs")
		if kind != "rueidis" {
			b.ReportMetric(float64(q(ru, 0.5).Microseconds()), "rueidis-lag-p50-µs/"+kind+"-readers")
			b.ReportMetric(float64(q(ru, 0.99).Microseconds()), "rueidis-lag-p99-µs/"+kind+"-readers")
		}
	}
}
