package tiered

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/clock"
	"github.com/thermoscache/thermos/internal/envelope"
	"github.com/thermoscache/thermos/internal/redistest"
)

// The tests in this file force, step by step, the interleavings that the
// ticket closes (see commit, diskTier and writeBehind for the narrations),
// through the cache's test hooks. Each one failed on the code before tiers
// shared one ticket.

// raceRoutes are the route kinds a write race is checked on.
var raceRoutes = []struct {
	name  string
	tiers Tier
	raw   bool
}{
	{"memory+redis", Memory | Redis, false},
	{"memory+disk+redis", Memory | Disk | Redis, false},
	{"disk+redis", Disk | Redis, false},
	{"raw memory+redis", Memory | Redis, true},
	{"raw memory+disk+redis", Memory | Disk | Redis, true},
	{"raw disk+redis", Disk | Redis, true},
}

// rig is one cache under test, with a writer that is not thermos code and
// a way to wait until the cache has applied an invalidation.
type rig struct {
	t     *testing.T
	s     *redistest.Server
	ext   rueidis.Client
	route Route
	dir   string
	clock clock.Clock // nil: the cache's own coarse clock
	c     *Cache

	mu    sync.Mutex
	waits map[string]chan struct{}
}

func newRig(t *testing.T, tiers Tier, raw bool) *rig {
	t.Helper()
	s := redistest.Start(t, nil)
	ext, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{s.Addr()}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ext.Close)
	g := &rig{t: t, s: s, ext: ext, dir: t.TempDir(), waits: make(map[string]chan struct{}),
		route: Route{Prefix: "k:", Tiers: tiers, TTL: time.Hour, Beta: -1, Raw: raw}}
	g.open()
	return g
}

func (g *rig) open() {
	g.t.Helper()
	o := &Options{Redis: redisOpts(g.s), Routes: []Route{g.route}, Logger: quietLog, Clock: g.clock}
	if g.route.Tiers&Disk != 0 {
		o.Dir = g.dir
	}
	g.c = openT(g.t, o)
	g.c.mem.OnInvalidate(func(keys []string, _ bool) {
		g.mu.Lock()
		defer g.mu.Unlock()
		for _, k := range keys {
			if ch, ok := g.waits[k]; ok {
				close(ch)
				delete(g.waits, k)
			}
		}
	})
}

func (g *rig) reopen() {
	g.t.Helper()
	if err := g.c.Close(); err != nil {
		g.t.Fatalf("Close: %v", err)
	}
	g.open()
}

// external writes v under key (nil: deletes it) as another program would,
// and returns once the cache has applied the invalidation.
func (g *rig) external(key string, v []byte) {
	g.t.Helper()
	ch := make(chan struct{})
	g.mu.Lock()
	g.waits[key] = ch
	g.mu.Unlock()
	ctx := context.Background()
	var err error
	if v == nil {
		err = g.ext.Do(ctx, g.ext.B().Del().Key(key).Build()).Error()
	} else {
		err = g.ext.Do(ctx, g.ext.B().Set().Key(key).Value(string(g.encode(v))).PxMilliseconds(time.Hour.Milliseconds()).Build()).Error()
	}
	if err != nil {
		g.t.Fatalf("external write: %v", err)
	}
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		g.t.Fatalf("the cache never applied the invalidation of %s", key)
	}
}

// encode is what another program writes for v: the bytes on a raw route,
// an envelope (as another thermos version would write it) otherwise.
func (g *rig) encode(v []byte) []byte {
	if g.route.Raw {
		return v
	}
	now := time.Now().UnixNano()
	e := envelope.Entry{Header: envelope.Header{SoftExpiry: now + int64(time.Hour), HardExpiry: now + int64(time.Hour), Version: uint64(now)}, Payload: v}
	return e.Append(nil)
}

// expect checks that every read of key through the cache gives want (nil:
// a miss) — from whichever tier — now, after the disk queue is flushed, and
// after a restart on the same directory.
func (g *rig) expect(key string, want []byte) {
	g.t.Helper()
	ctx := context.Background()
	check := func(when string) {
		g.t.Helper()
		for range 3 { // memory, then whatever the first read filled
			det := &Sources{}
			v, ok, err := g.c.Get(WithSources(ctx, det), key)
			src, _ := det.Source(key)
			switch {
			case err != nil:
				g.t.Fatalf("%s: Get(%s): %v", when, key, err)
			case want == nil && ok:
				g.t.Fatalf("%s: Get(%s) = %q from %v, want a miss: Redis holds nothing", when, key, v, src)
			case want != nil && (!ok || string(v) != string(want)):
				g.t.Fatalf("%s: Get(%s) = %q, %v from %v, want %q: what Redis holds", when, key, v, ok, src, want)
			}
		}
	}
	check("at once")
	if err := g.c.Flush(ctx); err != nil {
		g.t.Fatal(err)
	}
	check("after Flush")
	if g.route.Tiers&Disk != 0 {
		g.reopen()
		check("after a restart")
	}
}

// once runs fn the first time point is reached for key.
func (g *rig) once(point, key string, fn func()) {
	g.onceEach(key, map[string]func(){point: fn})
}

// onceEach runs each function the first time its point is reached for key.
func (g *rig) onceEach(key string, fns map[string]func()) {
	done := make(map[string]bool)
	g.c.testHook = func(p, k string) {
		if fn, ok := fns[p]; ok && k == key && !done[p] {
			done[p] = true
			fn()
		}
	}
}

// TestRaceSetExternalWrite forces commit's race on every route kind: a Set
// is acknowledged by Redis, then another client overwrites or deletes the
// key and its invalidation is applied, and only then does the Set update
// the local tiers. Every read afterwards must give what Redis holds, also
// after a restart. (Before, routes with the disk tier served "mine" forever:
// the disk write was queued after the invalidation's delete.)
func TestRaceSetExternalWrite(t *testing.T) {
	for _, rt := range raceRoutes {
		for _, ext := range []struct {
			name string
			v    []byte
		}{{"set", []byte("theirs")}, {"del", nil}} {
			t.Run(rt.name+"/"+ext.name, func(t *testing.T) {
				g := newRig(t, rt.tiers, rt.raw)
				const key = "k:1"
				g.once("set:acked", key, func() { g.external(key, ext.v) })
				if err := g.c.Set(context.Background(), key, []byte("mine"), 0); err != nil {
					t.Fatal(err)
				}
				g.expect(key, ext.v)
			})
		}
	}
}

// TestRaceFillInvalidationPending forces a fill racing an invalidation
// through the write-behind queue:
//  1. reader A misses memory and disk and reads v1 from Redis;
//  2. another client writes v2; the invalidation is applied (there is
//     nothing local to remove yet);
//  3. A fills the local tiers with v1 (each must refuse);
//  4. reader B reads key while A's fill is in flight.
//
// Before, A queued v1 to disk even though its ticket was stale, B found the
// pending v1 (pending writes were served unchecked) and cached it under its
// own, newer ticket: v1 forever. The invalidation may also land after A
// filled (the last case): the copies must then be removed or distrusted.
func TestRaceFillInvalidationPending(t *testing.T) {
	for _, rt := range raceRoutes {
		if rt.tiers&Disk == 0 {
			continue
		}
		for _, tc := range []struct{ name, write, read string }{
			{"invalidated before the fill, read mid-fill", "fill", "fill:disk"},
			{"invalidated before the fill, read after it", "fill", "filled"},
			{"invalidated after the fill", "filled", "filled"},
		} {
			t.Run(rt.name+"/"+tc.name, func(t *testing.T) {
				g := newRig(t, rt.tiers, rt.raw)
				const key = "k:1"
				ctx := context.Background()
				g.external(key, []byte("v1"))
				readB := func() {
					if v, ok, err := g.c.Get(ctx, key); err != nil || ok && string(v) != "v2" {
						t.Errorf("B read %s = %q, %v, %v during A's fill, want v2 or a miss", key, v, ok, err)
					}
				}
				writeV2 := func() { g.external(key, []byte("v2")) }
				if tc.write == tc.read {
					g.once(tc.write, key, func() { writeV2(); readB() })
				} else {
					g.onceEach(key, map[string]func(){tc.write: writeV2, tc.read: readB})
				}
				if v, ok, err := g.c.Get(ctx, key); err != nil || !ok || string(v) != "v1" {
					t.Fatalf("A read %q, %v, %v; want v1, what Redis held when it read", v, ok, err)
				}
				g.expect(key, []byte("v2"))
			})
		}
	}
}

// TestRaceGetOrLoadSet forces a load racing a Set on a route without Redis,
// with and without SyncWrites:
//  1. GetOrLoad(k) misses and calls the loader, which reads A;
//  2. Set(k, B) returns nil;
//  3. the loader returns A, which GetOrLoad must not store over B.
//
// Before, the fill was refused in memory but its disk write was queued
// anyway, after B's: B was read until a restart, A after it.
func TestRaceGetOrLoadSet(t *testing.T) {
	for _, tiers := range []Tier{Memory | Disk, Disk} {
		for _, sync := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/sync=%v", tiers, sync), func(t *testing.T) {
				dir := t.TempDir()
				opts := &Options{Dir: dir, SyncWrites: sync, Logger: quietLog,
					Routes: []Route{{Prefix: "k:", Tiers: tiers, TTL: time.Hour, Beta: -1}}}
				c := openT(t, opts)
				ctx := context.Background()
				loading, release := make(chan struct{}), make(chan struct{})
				done := make(chan error, 1)
				go func() {
					_, _, err := c.GetOrLoad(ctx, "k:1", LoaderFunc(func(context.Context, string) ([]byte, error) {
						close(loading)
						<-release
						return []byte("A"), nil
					}))
					done <- err
				}()
				<-loading
				if err := c.Set(ctx, "k:1", []byte("B"), 0); err != nil {
					t.Fatal(err)
				}
				close(release)
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				expectLocal(t, c, "k:1", "B")
				if err := c.Close(); err != nil {
					t.Fatal(err)
				}
				expectLocal(t, openT(t, opts), "k:1", "B")
			})
		}
	}
}

// TestSyncWriteAfterLoadSurvivesRestart: with SyncWrites and no
// concurrency at all, GetOrLoad stores A, Set stores B, and after a restart
// B is read. (Before, the write-behind fill of A was flushed over the
// synchronous write of B.)
func TestSyncWriteAfterLoadSurvivesRestart(t *testing.T) {
	for _, tiers := range []Tier{Memory | Disk, Disk} {
		t.Run(tiers.String(), func(t *testing.T) {
			opts := &Options{Dir: t.TempDir(), SyncWrites: true, Logger: quietLog,
				Routes: []Route{{Prefix: "k:", Tiers: tiers, TTL: time.Hour, Beta: -1}}}
			c := openT(t, opts)
			ctx := context.Background()
			if v, _, err := c.GetOrLoad(ctx, "k:1", LoaderFunc(func(context.Context, string) ([]byte, error) {
				return []byte("A"), nil
			})); err != nil || string(v) != "A" {
				t.Fatalf("GetOrLoad = %q, %v", v, err)
			}
			if err := c.Set(ctx, "k:1", []byte("B"), 0); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			expectLocal(t, openT(t, opts), "k:1", "B")
		})
	}
}

func expectLocal(t *testing.T, c *Cache, key, want string) {
	t.Helper()
	for range 2 {
		if v, ok, err := c.Get(context.Background(), key); err != nil || !ok || string(v) != want {
			t.Fatalf("Get(%s) = %q, %v, %v; want %q, the last acknowledged write", key, v, ok, err, want)
		}
	}
}
