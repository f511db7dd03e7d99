package tiered

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/clock"
	"github.com/thermoscache/thermos/internal/envelope"
	"github.com/thermoscache/thermos/internal/redistest"
)

// TestStatsAddUp runs a scripted sequence and asserts every counter: each
// read is exactly one hit of the tier that answered or one miss, a loader
// call is one load, and HitRatio is hits over hits plus misses.
func TestStatsAddUp(t *testing.T) {
	s := redistest.Start(t, nil)
	ctx := context.Background()
	c := openT(t, &Options{Redis: redisOpts(s), Dir: t.TempDir(), Logger: quietLog, Routes: []Route{
		{Prefix: "r:", Tiers: Memory | Redis, TTL: time.Hour, Beta: -1},
		{Prefix: "d:", Tiers: Disk, TTL: time.Hour, Beta: -1},
	}})
	l := &countingLoader{}
	ext, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{s.Addr()}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()

	for i := range 10 { // 10 misses
		if _, ok := mustGet(t, c, fmt.Sprintf("r:missing%d", i)); ok {
			t.Fatal("hit on a missing key")
		}
	}
	if _, _, err := c.GetOrLoad(ctx, "r:1", l); err != nil { // 1 miss, 1 load
		t.Fatal(err)
	}
	for range 3 { // 3 memory hits: the loaded value was cached locally
		if _, ok := mustGet(t, c, "r:1"); !ok {
			t.Fatal("miss after GetOrLoad")
		}
	}
	if _, _, err := c.GetOrLoad(ctx, "r:1", l); err != nil { // 1 memory hit
		t.Fatal(err)
	}
	now := time.Now().UnixNano()
	e := envelope.Entry{Header: envelope.Header{SoftExpiry: now + int64(time.Hour), HardExpiry: now + int64(time.Hour), Version: 1}, Payload: []byte("x")}
	heard := make(chan struct{})
	var once sync.Once
	c.mem.OnInvalidate(func(keys []string, _ bool) {
		if slices.Contains(keys, "r:2") {
			once.Do(func() { close(heard) })
		}
	})
	if err := ext.Do(ctx, ext.B().Set().Key("r:2").Value(string(e.Append(nil))).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	// A read whose ticket was taken before the write's invalidation was
	// applied would (rightly) not be cached: wait for it, so the count
	// below is exact.
	<-heard
	if _, ok := mustGet(t, c, "r:2"); !ok { // 1 redis hit
		t.Fatal("miss on r:2")
	}
	if _, ok := mustGet(t, c, "r:2"); !ok { // 1 memory hit
		t.Fatal("miss on r:2")
	}
	if err := c.Set(ctx, "d:1", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	for range 2 { // 2 disk hits
		if _, ok := mustGet(t, c, "d:1"); !ok {
			t.Fatal("miss on d:1")
		}
	}
	if _, ok := mustGet(t, c, "d:2"); ok { // 1 miss
		t.Fatal("hit on d:2")
	}

	st := c.Stats()
	got := map[string]RouteStats{}
	for _, rs := range st.Routes {
		got[rs.Prefix] = rs
	}
	for _, tt := range []struct {
		prefix                        string
		mem, disk, redis, miss, loads int64
		ratio                         float64
	}{
		{"r:", 5, 0, 1, 11, 1, 6.0 / 17},
		{"d:", 0, 2, 0, 1, 0, 2.0 / 3},
	} {
		rs := got[tt.prefix]
		if rs.MemoryHits != tt.mem || rs.DiskHits != tt.disk || rs.RedisHits != tt.redis || rs.Misses != tt.miss || rs.Loads != tt.loads {
			t.Errorf("route %q: memory %d disk %d redis %d misses %d loads %d; want %d %d %d %d %d",
				tt.prefix, rs.MemoryHits, rs.DiskHits, rs.RedisHits, rs.Misses, rs.Loads, tt.mem, tt.disk, tt.redis, tt.miss, tt.loads)
		}
		if r := rs.HitRatio(); r != tt.ratio {
			t.Errorf("route %q: HitRatio = %v, want %v", tt.prefix, r, tt.ratio)
		}
	}
	if n := l.calls.Load(); n != 1 {
		t.Errorf("loader calls = %d, want 1", n)
	}
}

// roundTrips counts the writes a cache's connections make: rueidis flushes
// each command, or each pipeline, in one write, so for one caller at a time
// every write is one round trip.
type roundTrips struct{ n atomic.Int64 }

func (rt *roundTrips) options(s *redistest.Server) *rueidis.ClientOption {
	return &rueidis.ClientOption{InitAddress: []string{s.Addr()},
		DialCtxFn: func(ctx context.Context, addr string, d *net.Dialer, _ *tls.Config) (net.Conn, error) {
			c, err := d.DialContext(ctx, "tcp", addr)
			return countingConn{Conn: c, n: &rt.n}, err
		}}
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(b)
}

// TestColdLoadRoundTrips counts what a cold GetOrLoad sends on a route with
// every tier: the herd's acquire (which reads the key), the fenced write,
// and the version check that lets this process cache its own write — three
// EVALSHA, one round trip each — and the value is then read from memory.
func TestColdLoadRoundTrips(t *testing.T) {
	s := redistest.Start(t, nil)
	a := newAdmin(t, s)
	ctx := context.Background()
	var rt roundTrips
	c := openT(t, &Options{Redis: rt.options(s), Dir: t.TempDir(), Logger: quietLog,
		Routes: []Route{{Prefix: "rt:", Tiers: Memory | Disk | Redis, TTL: time.Hour, Beta: -1}}})
	l := &countingLoader{}
	if _, _, err := c.GetOrLoad(ctx, "rt:warm", l); err != nil { // loads the scripts
		t.Fatal(err)
	}
	const n = 20
	var total int64
	for i := range n {
		key := fmt.Sprintf("rt:%d", i)
		stats := a.cmdstats()
		before := rt.n.Load()
		if _, _, err := c.GetOrLoad(ctx, key, l); err != nil {
			t.Fatal(err)
		}
		sent := rt.n.Load() - before
		if d := diffStats(stats, a.cmdstats()); d["evalsha"] != 3 || d["eval"] != 0 {
			t.Errorf("GetOrLoad(%s) ran %v; want 3 EVALSHA (acquire, fenced write, version check)", key, d)
		}
		total += sent
		det := &Sources{}
		if _, ok, err := c.Get(WithSources(ctx, det), key); err != nil || !ok {
			t.Fatalf("Get(%s) after GetOrLoad: %v, %v", key, ok, err)
		}
		if src, _ := det.Source(key); src != SourceMemory {
			t.Errorf("Get(%s) after its GetOrLoad answered by %v, want memory", key, src)
		}
	}
	t.Logf("cold GetOrLoad: %.2f round trips each", float64(total)/n)
	if total > 3*n {
		t.Errorf("cold GetOrLoad made %d round trips for %d keys, want at most 3 each", total, n)
	}
}

// BenchmarkColdGetOrLoad reports the round trips a cold GetOrLoad makes
// (round-trips/op) with its time, allocations and the CPU this process
// spent per call (cpu-ns/op: user plus system time, every goroutine,
// rueidis's included; redis-server runs in another process). The baseline
// is three plain rueidis GETs on one client, the round trips a cold
// GetOrLoad makes; tracking-3GET sends the same three GETs on the cache's
// own tracking connection, the floor for three round trips there: its
// reader goroutine (pushes) makes every call a hand-off to rueidis's
// writer and back from its reader, where the plain client, used by one
// goroutine at a time, writes and reads on the caller's. "interleaved"
// runs the three in turns and reports the CPU ratios of the same run.
func BenchmarkColdGetOrLoad(b *testing.B) {
	s := redistest.Start(b, nil)
	ctx := context.Background()
	var rt roundTrips
	c := openT(b, &Options{Redis: rt.options(s), Logger: quietLog,
		Routes: []Route{{Prefix: "rt:", Tiers: Memory | Redis, TTL: time.Hour, Beta: -1}}})
	l := &countingLoader{}
	if _, _, err := c.GetOrLoad(ctx, "rt:warm", l); err != nil {
		b.Fatal(err)
	}
	next := 0 // every key is new, across runs too (-count)
	b.Run("tiered", func(b *testing.B) {
		before := rt.n.Load()
		b.ReportAllocs()
		cpu := startCPU()
		n := 0
		for b.Loop() {
			n++
			next++
			if _, _, err := c.GetOrLoad(ctx, "rt:"+strconv.Itoa(next), l); err != nil {
				b.Fatal(err)
			}
		}
		cpu.report(b, n)
		b.ReportMetric(float64(rt.n.Load()-before)/float64(n), "round-trips/op")
	})
	rc := plainClient(b, s)
	b.Run("rueidis-3GET", func(b *testing.B) {
		threeGETs(b, rc)
	})
	b.Run("tracking-3GET", func(b *testing.B) {
		threeGETs(b, c.dataClient())
	})
	// The three in turns, slices of coldSlice calls each, so that the
	// ratios of their CPU come from the same minutes of the machine
	// (back to back they drift by more than the difference measured).
	b.Run("interleaved", func(b *testing.B) {
		tc := c.dataClient()
		const coldSlice = 8
		var cpu [3]time.Duration
		n := 0
		b.ReportAllocs()
		for b.Loop() {
			n++
			for part := range 3 {
				start := processCPU()
				for range coldSlice {
					next++
					switch part {
					case 0:
						if _, _, err := c.GetOrLoad(ctx, "rt:"+strconv.Itoa(next), l); err != nil {
							b.Fatal(err)
						}
					case 1:
						getThree(b, rc, next)
					case 2:
						getThree(b, tc, next)
					}
				}
				cpu[part] += processCPU() - start
			}
		}
		ops := float64(n * coldSlice)
		b.ReportMetric(float64(cpu[0])/ops, "tiered-cpu-ns/load")
		b.ReportMetric(float64(cpu[1])/ops, "rueidis-3GET-cpu-ns")
		b.ReportMetric(float64(cpu[2])/ops, "tracking-3GET-cpu-ns")
		b.ReportMetric(float64(cpu[0])/float64(cpu[1]), "tiered/rueidis-3GET")
		b.ReportMetric(float64(cpu[0])/float64(cpu[2]), "tiered/tracking-3GET")
	})
}

// threeGETs times three GETs on rc per iteration, BenchmarkColdGetOrLoad's
// baselines.
func threeGETs(b *testing.B, rc rueidis.Client) {
	b.ReportAllocs()
	cpu := startCPU()
	i := 0
	for b.Loop() {
		i++
		getThree(b, rc, i)
	}
	cpu.report(b, i)
}

// getThree sends three GETs of key rt:i on rc, one after the other.
func getThree(b *testing.B, rc rueidis.Client, i int) {
	ctx := context.Background()
	for range 3 {
		if err := rc.Do(ctx, rc.B().Get().Key("rt:"+strconv.Itoa(i)).Build()).Error(); err != nil && !rueidis.IsRedisNil(err) {
			b.Fatal(err)
		}
	}
}

// plainClient is a rueidis client of s without client-side caching,
// closed when b ends.
func plainClient(b testing.TB, s *redistest.Server) rueidis.Client {
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{s.Addr()}, DisableCache: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(rc.Close)
	return rc
}

// seedEnveloped writes n keys prefix0 … with an enveloped 100-byte value
// that lives an hour, as another thermos process would, and returns them.
func seedEnveloped(b *testing.B, rc rueidis.Client, prefix string, n int) []string {
	ctx := context.Background()
	now := time.Now().UnixNano()
	e := envelope.Entry{Header: envelope.Header{SoftExpiry: now + int64(time.Hour), HardExpiry: now + int64(time.Hour), Version: 1}, Payload: make([]byte, 100)}
	val := string(e.Append(nil))
	keys := make([]string, n)
	cmds := make(rueidis.Commands, 0, n)
	for i := range keys {
		keys[i] = prefix + strconv.Itoa(i)
		cmds = append(cmds, rc.B().Set().Key(keys[i]).Value(val).Build())
	}
	for _, r := range rc.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			b.Fatal(err)
		}
	}
	return keys
}

// BenchmarkRedisHitSaturated: memory misses that Redis answers, read by
// 32 goroutines per processor (enough to keep the cores busy), on two
// caches in turns, slices of satSlice reads each: one with rueidis's
// defaults and one with Options.Redis.MaxFlushDelay at 20 µs, which lets
// the connection's writer gather more commands per write. It reports each
// one's wall and CPU time per read and the ratios, from the same run.
func BenchmarkRedisHitSaturated(b *testing.B) {
	s := redistest.Start(b, nil)
	ctx := context.Background()
	const n = 20000
	open := func(delay time.Duration) *Cache {
		ro := redisOpts(s)
		ro.MaxFlushDelay = delay
		return openT(b, &Options{Redis: ro, Logger: quietLog, MemoryBytes: 256 << 10,
			Routes: []Route{{Prefix: "rs:", Tiers: Memory | Redis, TTL: time.Hour, Beta: -1}}})
	}
	caches := []*Cache{open(0), open(20 * time.Microsecond)}
	keys := seedEnveloped(b, plainClient(b, s), "rs:", n)
	l := &countingLoader{}
	workers := 32 * runtime.GOMAXPROCS(0)
	const satSlice = 4096
	var next atomic.Int64
	var wall, cpu [2]time.Duration
	rounds := 0
	for b.Loop() {
		rounds++
		for ci, c := range caches {
			start, cpu0 := time.Now(), processCPU()
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for range satSlice / workers {
						// A stride over the keys: memory (256 KiB) has
						// evicted every key read in the last few thousand.
						k := keys[int(next.Add(7919))%n]
						if _, ok, err := c.GetOrLoad(ctx, k, l); err != nil || !ok {
							b.Error(k, ok, err)
							return
						}
					}
				})
			}
			wg.Wait()
			wall[ci] += time.Since(start)
			cpu[ci] += processCPU() - cpu0
		}
	}
	if l.calls.Load() != 0 {
		b.Fatalf("%d loads: every key is in Redis", l.calls.Load())
	}
	reads := float64(rounds * (satSlice / workers) * workers)
	for ci, name := range []string{"default", "flush-20us"} {
		b.ReportMetric(float64(wall[ci])/reads, name+"-ns/read")
		b.ReportMetric(float64(cpu[ci])/reads, name+"-cpu-ns/read")
	}
	b.ReportMetric(float64(wall[1])/float64(wall[0]), "flush-20us/default")
	b.ReportMetric(float64(cpu[1])/float64(cpu[0]), "flush-20us/default-cpu")
}

// BenchmarkGetOrLoadRedisHit reports what a GetOrLoad costs that misses
// memory and finds the value in Redis (the usual miss of a warm
// memory+redis layout: the herd's acquire answers it in one round trip),
// with a context that cannot end and with one that can (a request's), and
// the baseline of one plain rueidis GET. Every read is of another key than
// the last few thousand, which a small memory budget has evicted.
func BenchmarkGetOrLoadRedisHit(b *testing.B) {
	s := redistest.Start(b, nil)
	ctx := context.Background()
	const n = 20000
	c := openT(b, &Options{Redis: redisOpts(s), Logger: quietLog, MemoryBytes: 256 << 10,
		Routes: []Route{{Prefix: "rh:", Tiers: Memory | Redis, TTL: time.Hour, Beta: -1}}})
	ext := plainClient(b, s)
	keys := seedEnveloped(b, ext, "rh:", n)
	l := &countingLoader{}
	run := func(b *testing.B, ctx context.Context) {
		b.ReportAllocs()
		cpu := startCPU()
		loads := l.calls.Load()
		i := 0
		for b.Loop() {
			i++
			if _, ok, err := c.GetOrLoad(ctx, keys[i%n], l); err != nil || !ok {
				b.Fatal(ok, err)
			}
		}
		cpu.report(b, i)
		if d := l.calls.Load() - loads; d != 0 {
			b.Fatalf("%d loads: every key is in Redis", d)
		}
	}
	b.Run("background", func(b *testing.B) { run(b, ctx) })
	b.Run("cancellable", func(b *testing.B) {
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		run(b, cctx)
	})
	b.Run("rueidis-GET", func(b *testing.B) {
		b.ReportAllocs()
		cpu := startCPU()
		i := 0
		for b.Loop() {
			i++
			if err := ext.Do(ctx, ext.B().Get().Key(keys[i%n]).Build()).Error(); err != nil {
				b.Fatal(err)
			}
		}
		cpu.report(b, i)
	})
}

// cpuClock measures the CPU time this process spends (every thread).
type cpuClock struct{ start time.Duration }

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU() cpuClock { return cpuClock{start: processCPU()} }

func (c cpuClock) report(b *testing.B, n int) {
	if n > 0 {
		b.ReportMetric(float64(processCPU()-c.start)/float64(n), "cpu-ns/op")
	}
}

// TestRedisTTLHonoured: a value read from Redis never outlives its key's
// TTL there, on raw and enveloped routes, in memory or on disk: another
// program sets the key with PX 400 (an enveloped value says it lives an
// hour), and no read that starts after Redis expired the key may return it.
// The cache runs on the wall clock here: its default coarse clock may lag a
// loaded machine's wall clock by a few milliseconds, by which a value can
// then outlive its key.
func TestRedisTTLHonoured(t *testing.T) {
	for _, rt := range raceRoutes {
		t.Run(rt.name, func(t *testing.T) {
			g := newRig(t, rt.tiers, rt.raw)
			g.clock = clock.Wall{}
			g.reopen()
			ctx := context.Background()
			const key, ttl = "k:ttl", 400 * time.Millisecond
			start := time.Now()
			if err := g.ext.Do(ctx, g.ext.B().Set().Key(key).Value(string(g.encode([]byte("short")))).PxMilliseconds(ttl.Milliseconds()).Build()).Error(); err != nil {
				t.Fatal(err)
			}
			// Redis expires the key no later than this: it counts the TTL
			// from when it ran the SET, before its reply arrived, and holds
			// a key until its clock, in whole milliseconds, is past the
			// expiry.
			expires := time.Now().Add(ttl + time.Millisecond)
			if v, ok := mustGet(t, g.c, key); !ok || string(v) != "short" {
				t.Fatalf("first read = %q, %v", v, ok)
			}
			// Read until well after the expiry: no read that started after it
			// may hit.
			var last time.Duration
			for time.Since(start) < ttl+300*time.Millisecond {
				began := time.Now()
				v, ok := mustGet(t, g.c, key)
				if ok {
					last = began.Sub(start)
					if began.After(expires) {
						t.Fatalf("read %q that started %v after Redis expired the key", v, began.Sub(expires))
					}
				}
				time.Sleep(time.Millisecond)
			}
			t.Logf("last hit by a read that started %v after the write (TTL %v)", last, ttl)
		})
	}
}

// TestColdLoadAllocations bounds the allocations of a cold GetOrLoad on a
// Memory|Redis route, the loader's own included (22 when this was written,
// 26 under -race; 85 before issue 15, 49 when every command was pinned:
// see tracking's bounded.pin; BenchmarkColdGetOrLoad measures it too). The
// bound has room for what varies: pooled structs dropped by a GC, and the
// race detector dropping pooled items on purpose.
func TestColdLoadAllocations(t *testing.T) {
	s := redistest.Start(t, nil)
	ctx := context.Background()
	c := openT(t, &Options{Redis: redisOpts(s), Logger: quietLog,
		Routes: []Route{{Prefix: "rt:", Tiers: Memory | Redis, TTL: time.Hour, Beta: -1}}})
	l := &countingLoader{}
	if _, _, err := c.GetOrLoad(ctx, "rt:warm", l); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 202) // AllocsPerRun calls once more to warm up
	for i := range keys {
		keys[i] = "rt:" + strconv.Itoa(i)
	}
	i := 0
	allocs := testing.AllocsPerRun(200, func() {
		i++
		if _, _, err := c.GetOrLoad(ctx, keys[i], l); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("cold GetOrLoad: %.1f allocations", allocs)
	const most = 30
	if allocs > most {
		t.Errorf("cold GetOrLoad made %.1f allocations, want at most %d", allocs, most)
	}
}
