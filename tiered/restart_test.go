package tiered

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redistest"
	"github.com/thermoscache/thermos/tracking"
)

// origin is the test's source of truth: what a loader returns for a key.
// Absent keys return ErrNotFound. It records which keys were loaded.
type origin struct {
	mu     sync.Mutex
	vals   map[string]string
	loaded map[string]int
}

func newOrigin() *origin {
	return &origin{vals: make(map[string]string), loaded: make(map[string]int)}
}

func (o *origin) set(key, v string) {
	o.mu.Lock()
	o.vals[key] = v
	o.mu.Unlock()
}

func (o *origin) del(key string) {
	o.mu.Lock()
	delete(o.vals, key)
	o.mu.Unlock()
}

func (o *origin) Load(_ context.Context, key string) ([]byte, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.loaded[key]++
	v, ok := o.vals[key]
	if !ok {
		return nil, ErrNotFound
	}
	return []byte(v), nil
}

func (o *origin) loads() map[string]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	m := make(map[string]int, len(o.loaded))
	for k, v := range o.loaded {
		m[k] = v
	}
	return m
}

func restartKey(i int) string    { return fmt.Sprintf("rs:%05d", i) }
func oldValue(key string) string { return "old:" + key }
func newValue(key string) string { return "new:" + key }

// TestRestartNeverServesChangedKeys is issue 5's restart acceptance test.
// Instance A warms 10,000 keys and closes. While it is down another cache
// rewrites 700 and deletes 400 of them, and redis-cli overwrites 300 with
// raw, undecodable bytes and deletes 100 more. A reopens on the same
// directory: none of the 1,500 is ever served with its old value, and the
// 8,500 others are served from memory or disk without calling the loader.
func TestRestartNeverServesChangedKeys(t *testing.T) {
	s := redistest.Start(t, nil)
	testRestart(t, restartRedis{
		opts: func() *rueidis.ClientOption { return redisOpts(s) },
		setRaw: func(t *testing.T, pairs []string) {
			t.Helper()
			if out := s.CLI(append([]string{"MSET"}, pairs...)...); out != "OK" {
				t.Fatalf("redis-cli MSET: %s", out)
			}
		},
		del: func(t *testing.T, keys []string) int {
			t.Helper()
			out := s.CLI(append([]string{"DEL"}, keys...)...)
			n, err := strconv.Atoi(out)
			if err != nil {
				t.Fatalf("redis-cli DEL: %s", out)
			}
			return n
		},
	})
}

// restartRedis is what testRestart needs from Redis: client options for
// the caches, and writes and deletes made as another program would (on a
// single server through redis-cli, on a cluster through a plain client,
// since MSET and DEL across slots fail there).
type restartRedis struct {
	opts func() *rueidis.ClientOption
	// setRaw stores pairs (key, value, key, value...) as plain bytes.
	setRaw func(t *testing.T, pairs []string)
	// del deletes keys and returns how many existed.
	del func(t *testing.T, keys []string) int
	// settle, if set, returns once Redis owes the cache no invalidation
	// for its own writes (a cluster's replicas send theirs late).
	settle func(t *testing.T, c *Cache)
}

// testRestart is the body of the restart acceptance test, run on a single
// server and on a cluster. It returns A's stats after the background
// revalidation pass that followed the restart.
func testRestart(t *testing.T, rr restartRedis) Stats {
	const (
		keys       = 10_000
		setByCache = 700
		setRaw     = 300
		delByCache = 400
		delByCLI   = 100
	)
	ctx := context.Background()
	dir := t.TempDir()
	opts := func(dir string) *Options {
		return &Options{
			Redis:  rr.opts(),
			Dir:    dir,
			Logger: quietLog,
			Routes: []Route{{Prefix: "rs:", Tiers: Memory | Disk | Redis, TTL: time.Hour, Beta: -1}},
		}
	}

	// A warms every key. (Set, not GetOrLoad: a value a shared load writes
	// to Redis is not kept locally, see TestLoadedValueCachedLocally.)
	org := newOrigin()
	a := openT(t, opts(dir))
	// A Set whose ticket an invalidation overtook twice keeps no local
	// copy (Redis has the value): such keys are not on disk to warm.
	var unkeptMu sync.Mutex
	unkept := map[string]bool{}
	a.testHook = func(point, key string) {
		if point == "set:retry-fail" {
			unkeptMu.Lock()
			unkept[key] = true
			unkeptMu.Unlock()
		}
	}
	parallel(t, keys, 8, func(i int) error {
		k := restartKey(i)
		org.set(k, oldValue(k))
		return a.Set(ctx, k, []byte(oldValue(k)), 0)
	})
	if rr.settle != nil {
		rr.settle(t, a)
	}
	ms := a.mem.Stats()
	if err := a.Close(); err != nil {
		t.Fatalf("close A: %v", err)
	}
	if len(unkept) > 0 || ms.Invalidations > 0 || ms.EpochBumps > 0 {
		t.Logf("A, before its close: %d Sets kept no local copy; the memory tier heard %d invalidated keys and %d epoch bumps",
			len(unkept), ms.Invalidations, ms.EpochBumps)
	}

	// While A is down: choose 1,500 keys at random and change them.
	rng := rand.New(rand.NewPCG(1, 2))
	perm := rng.Perm(keys)
	changed := make(map[string]string, 1500) // key → what Redis/origin now hold ("" = deleted)
	var rawSet, cliDel []string
	b := openT(t, &Options{Redis: rr.opts(), Logger: quietLog, Routes: []Route{{Prefix: "rs:", Tiers: Memory | Redis, TTL: time.Hour}}})
	for n, i := range perm[:setByCache+setRaw+delByCache+delByCLI] {
		k := restartKey(i)
		switch {
		case n < setByCache:
			if err := b.Set(ctx, k, []byte(newValue(k)), 0); err != nil {
				t.Fatalf("B.Set: %v", err)
			}
			changed[k] = newValue(k)
			org.set(k, newValue(k))
		case n < setByCache+setRaw:
			rawSet = append(rawSet, k, "raw-bytes-from-another-program:"+k)
			changed[k] = newValue(k)
			org.set(k, newValue(k)) // the other program also updated the origin
		case n < setByCache+setRaw+delByCache:
			if err := b.Delete(ctx, k); err != nil {
				t.Fatalf("B.Delete: %v", err)
			}
			changed[k] = ""
			org.del(k)
		default:
			cliDel = append(cliDel, k)
			changed[k] = ""
			org.del(k)
		}
	}
	rr.setRaw(t, rawSet)
	if n := rr.del(t, cliDel); n != delByCLI {
		t.Fatalf("external DEL = %d, want %d", n, delByCLI)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	// check is what every read of A must satisfy.
	var violations sync.Map
	check := func(k string, v []byte, ok bool) {
		want, isChanged := changed[k]
		switch {
		case ok && string(v) == oldValue(k) && isChanged:
			violations.Store(k, "served its old value after it changed while A was down")
		case ok && isChanged && string(v) != want:
			violations.Store(k, fmt.Sprintf("served %q, want %q", v, want))
		case ok && !isChanged && string(v) != oldValue(k):
			violations.Store(k, fmt.Sprintf("served %q, want %q", v, oldValue(k)))
		case !isChanged && !ok:
			violations.Store(k, "unchanged key missed")
		}
	}

	// A reopens. For one second a reader goes through the keys in a
	// random order with GetOrLoad while the background revalidation runs.
	warmOpen := time.Now()
	a = openT(t, opts(dir))
	openTook := time.Since(warmOpen)
	// The reader's order is a permutation of its own: perm starts with the
	// 1,500 changed keys, which a slow machine might not get past within
	// the second.
	readOrder := rand.New(rand.NewPCG(3, 4)).Perm(keys)
	warm := firstSecond(t, a, org, readOrder, check)

	// Then every key is read once more, after the background pass.
	waitFor(t, 60*time.Second, func() bool { return a.Stats().LastRevalidation > 0 }, "the first revalidation pass")
	st := a.Stats()
	t.Logf("warm restart: Open took %v (warmed %d entries, %d refused); background revalidation pass %v (revalidated %d, dropped %d)",
		openTook, st.Warmed, st.DiskCorrupt, st.LastRevalidation, st.Revalidated, st.Dropped)
	loadsBefore := org.loads()
	det := &Sources{}
	dctx := WithSources(ctx, det)
	for i := range keys {
		k := restartKey(i)
		v, ok, err := a.GetOrLoad(dctx, k, org)
		if err != nil {
			t.Fatalf("GetOrLoad(%s): %v", k, err)
		}
		check(k, v, ok)
		if _, isChanged := changed[k]; !isChanged {
			if src, _ := det.Source(k); src != SourceMemory && src != SourceDisk {
				t.Errorf("unchanged %s served from %v, want memory or disk", k, src)
			}
		}
	}
	for k, n := range org.loads() {
		if _, isChanged := changed[k]; !isChanged && n > loadsBefore[k] {
			t.Errorf("loader called for unchanged key %s after the restart", k)
		}
	}
	violations.Range(func(k, why any) bool {
		t.Errorf("%s: %s", k, why)
		return true
	})
	if want := int64(keys - len(unkept)); st.Warmed != want {
		t.Errorf("Warmed = %d, want %d (%d keys, %d Sets that kept no local copy)", st.Warmed, want, keys, len(unkept))
	}
	rs := a.Stats().Routes[0]
	if rs.Dropped < int64(len(changed)) {
		t.Errorf("route Dropped = %d, want >= %d changed keys", rs.Dropped, len(changed))
	}

	// Cold start for comparison: the same reader, an empty directory.
	cold := openT(t, opts(t.TempDir()))
	coldRes := firstSecond(t, cold, org, readOrder, check)
	t.Logf("first second after open: warm restart %d reads, local hit ratio %.3f, loader calls %d; cold start %d reads, local hit ratio %.3f, loader calls %d",
		warm.reads, warm.localRatio(), warm.loads, coldRes.reads, coldRes.localRatio(), coldRes.loads)
	if warm.localRatio() <= coldRes.localRatio() {
		t.Errorf("warm restart's local hit ratio %.3f is not above a cold start's %.3f", warm.localRatio(), coldRes.localRatio())
	}
	return st
}

type firstSecondResult struct {
	reads, local, loads int64
}

func (r firstSecondResult) localRatio() float64 {
	if r.reads == 0 {
		return 0
	}
	return float64(r.local) / float64(r.reads)
}

// firstSecond reads keys in perm's order with GetOrLoad for one second and
// counts the reads answered by memory or disk.
func firstSecond(t *testing.T, c *Cache, org *origin, perm []int, check func(string, []byte, bool)) firstSecondResult {
	t.Helper()
	ctx := context.Background()
	before := org.loads()
	var res firstSecondResult
	end := time.Now().Add(time.Second)
	for n := 0; time.Now().Before(end); n++ {
		k := restartKey(perm[n%len(perm)])
		det := &Sources{}
		v, ok, err := c.GetOrLoad(WithSources(ctx, det), k, org)
		if err != nil {
			t.Fatalf("GetOrLoad(%s): %v", k, err)
		}
		check(k, v, ok)
		res.reads++
		if src, _ := det.Source(k); src == SourceMemory || src == SourceDisk {
			res.local++
		}
	}
	for k, n := range org.loads() {
		res.loads += int64(n - before[k])
	}
	return res
}

// parallel runs fn(0..n-1) on workers goroutines and fails t on the first
// error.
func parallel(t testing.TB, n, workers int, fn func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
}

// TestRestartKeyOfAnotherType: a key that another program replaced with a
// list while the cache was down is dropped by the revalidation pass, which
// completes, and the keys left alone are confirmed.
func TestRestartKeyOfAnotherType(t *testing.T) {
	s := redistest.Start(t, nil)
	ctx := context.Background()
	opts := &Options{
		Redis:  redisOpts(s),
		Dir:    t.TempDir(),
		Logger: quietLog,
		Routes: []Route{{Prefix: "rt:", Tiers: Memory | Disk | Redis, TTL: time.Hour}},
	}
	a := openT(t, opts)
	for i := range 10 {
		if err := a.Set(ctx, fmt.Sprintf("rt:%d", i), []byte("old"), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	s.CLI("DEL", "rt:3")
	if out := s.CLI("RPUSH", "rt:3", "a-list-now"); out != "1" {
		t.Fatalf("redis-cli RPUSH: %s", out)
	}
	b := openT(t, opts)
	deadline := time.Now().Add(10 * time.Second)
	for b.Stats().RevalidationPasses == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no revalidation pass: %+v", b.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	st := b.Stats()
	if st.Dropped < 1 || st.Revalidated < 9 { // a copy dropped per tier
		t.Fatalf("dropped %d, revalidated %d; want at least 1 and 9", st.Dropped, st.Revalidated)
	}
	if v, ok, _ := b.Get(ctx, "rt:3"); ok && string(v) == "old" {
		t.Fatal("served the old value of a key that holds a list now")
	}
	for i := range 10 {
		if k := fmt.Sprintf("rt:%d", i); i != 3 {
			if v, ok := mustGet(t, b, k); !ok || string(v) != "old" {
				t.Fatalf("%s = %q, %v; want old", k, v, ok)
			}
		}
	}
}

// TestRestartPassTrustsDiskCopies: after a restart, the first pass leaves
// every unchanged disk copy trusted and drops the changed ones, whether
// warm loaded every entry into memory (the memory walk vouches for the
// disk copies, no disk scan) or the memory budget stopped it (the disk
// copies are scanned and checked first).
func TestRestartPassTrustsDiskCopies(t *testing.T) {
	const n = 200
	key := func(i int) string { return fmt.Sprintf("tr:%03d", i) }
	value := []byte("a value of some length")
	per := int64(len(key(0))+len(value)+64) + tracking.EntryOverhead // an envelope's worth more
	for _, tt := range []struct {
		name        string
		memoryBytes int64
	}{
		{"every entry warmed", 4 * n * per},
		{"memory full", n * per / 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := redistest.Start(t, nil)
			ctx := context.Background()
			o := &Options{
				Redis:       redisOpts(s),
				Dir:         t.TempDir(),
				Logger:      quietLog,
				MemoryBytes: tt.memoryBytes,
				Routes:      []Route{{Prefix: "tr:", Tiers: Memory | Disk | Redis, TTL: time.Hour}},
			}
			a := openT(t, o)
			for i := range n {
				if err := a.Set(ctx, key(i), value, 0); err != nil {
					t.Fatal(err)
				}
			}
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			changed := map[string]bool{key(7): true, key(150): true, key(199): true}
			s.CLI("SET", key(7), "written by another program")
			s.CLI("DEL", key(150), key(199))
			if out := s.CLI("RPUSH", key(199), "a list"); out != "1" {
				t.Fatalf("redis-cli RPUSH: %s", out)
			}
			// The first restart drops the changed keys. The second, with
			// nothing changed, must trust every copy left: the first
			// pass's drops may have ended the trust of a key sharing a
			// generation slot with a dropped one (a needless recheck,
			// not an error).
			for restart := range 2 {
				b := openT(t, o)
				waitFor(t, 30*time.Second, func() bool { return b.stats.passes.Load() > 0 }, "the revalidation pass after the restart")
				st := b.Stats()
				if tt.memoryBytes < n*per && st.Warmed >= n-int64(len(changed)) {
					t.Fatalf("warmed %d of %d with a budget for fewer", st.Warmed, n)
				}
				for i := range n {
					k := key(i)
					trusted := b.disk.trust.has(b.mem, k)
					switch {
					case changed[k] && trusted:
						t.Errorf("restart %d: %s changed, its disk copy trusted", restart, k)
					case !changed[k] && !trusted && restart == 1:
						t.Errorf("restart %d: %s unchanged, its disk copy untrusted", restart, k)
					}
				}
				if restart == 0 && st.Dropped < int64(len(changed)) {
					t.Errorf("dropped %d, want at least %d", st.Dropped, len(changed))
				}
				for k := range changed {
					if v, ok, _ := b.Get(ctx, k); ok && string(v) == string(value) {
						t.Errorf("restart %d: %s served the value it held before the first", restart, k)
					}
				}
				if err := b.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
