package tiered

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redistest"
)

// The tests in this file and in guard_delete_test.go and
// guard_integrity_test.go each fail when one guard of the read and write
// paths is disabled by a one-line change (listed in the note of issue 11).
// This file: disk trust after a restart, the stripe lock that orders a
// write's disk copy against an invalidation's delete, and the tickets of
// the read path and of queued disk fills.

// goroutineWaiting reports whether some goroutine is inside every one of
// frames (function names as runtime.Stack prints them) and waiting for a
// contended mutex: it is blocked until whoever holds that mutex lets go.
func goroutineWaiting(frames ...string) bool {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "lockSlow") {
			continue
		}
		all := true
		for _, f := range frames {
			all = all && strings.Contains(g, f)
		}
		if all {
			return true
		}
	}
	return false
}

// waitUntil polls until cond holds, failing t after d.
func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	waitFor(t, d, cond, what)
}

// TestGuardDiskTrustAfterRestart is issue 11's probe of disk trust: a cache
// with a Disk|Redis route writes 2,000 keys and closes; another program
// changes every one of them in Redis; the cache reopens on the same
// directory. No read may return a value from before the change: the disk
// copies are not trusted until checked against Redis. (With the trust check
// disabled the suite passed while 1,995 old values were served.) The
// background pass races with the reads and checks most copies first; in
// the "redis down" cases Redis is stopped before the cache reopens, so
// nothing is checked until it is back: every read until then must fail
// (Unverified is Revalidate), none may serve the disk's copy.
func TestGuardDiskTrustAfterRestart(t *testing.T) {
	for _, tc := range []struct {
		name      string
		tiers     Tier
		redisDown bool
	}{
		{"disk+redis", Disk | Redis, false},
		{"memory+disk+redis", Memory | Disk | Redis, false},
		{"disk+redis/redis down", Disk | Redis, true},
		{"memory+disk+redis/redis down", Memory | Disk | Redis, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 2000
			s := redistest.Start(t, &redistest.Options{Persist: tc.redisDown})
			ctx := context.Background()
			opts := &Options{Redis: redisOpts(s), Dir: t.TempDir(), Logger: quietLog,
				Routes: []Route{{Prefix: "p:", Tiers: tc.tiers, TTL: time.Hour, Beta: -1}}}
			key := func(i int) string { return fmt.Sprintf("p:%04d", i) }
			c := openT(t, opts)
			parallel(t, n, 4, func(i int) error { return c.Set(ctx, key(i), []byte("old"), 0) })
			for i := range n { // every key read back, so every tier holds it
				if v, ok := mustGet(t, c, key(i)); !ok || string(v) != "old" {
					t.Fatalf("Get(%s) = %q, %v before the restart", key(i), v, ok)
				}
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			w := openT(t, &Options{Redis: redisOpts(s), Logger: quietLog,
				Routes: []Route{{Prefix: "p:", Tiers: Redis, TTL: time.Hour}}})
			parallel(t, n, 4, func(i int) error { return w.Set(ctx, key(i), []byte("new"), 0) })
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}

			if tc.redisDown {
				s.Stop()
				c = openT(t, opts)
				served := 0
				var first string
				for i := range n {
					v, ok, err := c.Get(ctx, key(i))
					if err == nil || ok {
						if served++; served == 1 {
							first = fmt.Sprintf("Get(%s) = %q, %v, %v", key(i), v, ok, err)
						}
					} else if !errors.Is(err, ErrUnavailable) {
						t.Fatalf("Get(%s) with Redis down: %v, want ErrUnavailable", key(i), err)
					}
				}
				if served > 0 {
					t.Fatalf("with Redis down after the restart, %d of %d unverified disk copies were served (first: %s), want none", served, n, first)
				}
				s.Restart()
				waitUntil(t, 30*time.Second, "the revalidation pass after Redis came back", func() bool { return c.Stats().RevalidationPasses > 0 })
			} else {
				c = openT(t, opts)
			}
			old := 0
			var first string
			for i := range n {
				v, ok := mustGet(t, c, key(i))
				if !ok || string(v) != "new" {
					if old++; old == 1 {
						first = fmt.Sprintf("Get(%s) = %q, %v", key(i), v, ok)
					}
				}
			}
			if old > 0 {
				t.Fatalf("%d of %d keys changed in Redis while the cache was closed were read wrong after it reopened (first: %s), want \"new\"", old, n, first)
			}
		})
	}
}

// TestGuardStripeLockLocalWriters: two Sets of one key race on a
// Memory|Disk route. Writer 1's memory write is done when writer 2 starts;
// writer 2 must not get its value into both tiers before writer 1 queues
// its disk write, or memory keeps v2 and the disk v1: v2 is read until a
// restart, v1 after it. The key's stripe lock makes writer 2 wait.
func TestGuardStripeLockLocalWriters(t *testing.T) {
	for _, sync := range []bool{false, true} {
		t.Run(fmt.Sprintf("sync=%v", sync), func(t *testing.T) {
			opts := &Options{Dir: t.TempDir(), SyncWrites: sync, Logger: quietLog,
				Routes: []Route{{Prefix: "k:", Tiers: Memory | Disk, TTL: time.Hour, Beta: -1}}}
			c := openT(t, opts)
			ctx := context.Background()
			const key = "k:1"
			second := make(chan error, 1)
			var once atomic.Bool
			c.testHook = func(point, k string) {
				if point != "commit:memory" || k != key || !once.CompareAndSwap(false, true) {
					return
				}
				// Writer 1 has written v1 to memory and not yet queued it
				// to disk. Writer 2 runs now: it finishes, or waits for
				// writer 1's stripe lock.
				go func() { second <- c.Set(ctx, key, []byte("v2"), 0) }()
				waitUntil(t, 10*time.Second, "writer 2 to finish or wait for the stripe lock", func() bool {
					return len(second) > 0 || goroutineWaiting("tiered.(*diskTier).lock(", "tiered.(*Cache).commit(")
				})
			}
			if err := c.Set(ctx, key, []byte("v1"), 0); err != nil {
				t.Fatal(err)
			}
			if err := <-second; err != nil {
				t.Fatal(err)
			}
			c.testHook = nil
			v, ok := mustGet(t, c, key)
			if !ok {
				t.Fatal("miss after two Sets")
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			expectLocal(t, openT(t, opts), key, string(v))
		})
	}
}

// TestGuardStripeLockInvalidation forces commit's second race on the
// routes with Redis and the disk tier: a Set's memory write is done, then
// another client's write of the key is invalidated, before the Set queues
// its disk write. The invalidation's delete must come after that write:
// the disk tier must not keep the Set's value, which Redis no longer holds
// (the write-behind queue never resurrects an older value). Reads are
// checked too, though on these routes the lost trust alone keeps them
// right.
func TestGuardStripeLockInvalidation(t *testing.T) {
	for _, rt := range raceRoutes {
		if rt.tiers&Disk == 0 {
			continue
		}
		t.Run(rt.name, func(t *testing.T) {
			g := newRig(t, rt.tiers, rt.raw)
			const key = "k:1"
			ctx := context.Background()
			var heard atomic.Int64
			g.c.mem.OnInvalidate(func(keys []string, _ bool) {
				for _, k := range keys {
					if k == key {
						heard.Add(1)
					}
				}
			})
			theirs := g.encode([]byte("theirs"))
			g.once("commit:memory", key, func() {
				if err := g.ext.Do(ctx, g.ext.B().Set().Key(key).Value(string(theirs)).Build()).Error(); err != nil {
					t.Errorf("external write: %v", err)
					return
				}
				waitUntil(t, 10*time.Second, "the invalidation to be applied or to wait for the stripe lock", func() bool {
					return heard.Load() > 0 || goroutineWaiting("tiered.(*diskTier).invalidated(", "tiered.(*diskTier).lock(")
				})
			})
			if err := g.c.Set(ctx, key, []byte("mine"), 0); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, 10*time.Second, "the invalidation", func() bool { return heard.Load() > 0 })
			g.c.testHook = nil
			if b, _, ok, err := g.c.disk.read(ctx, key); err != nil || ok {
				t.Fatalf("the disk tier holds %q (%v) for %s after the invalidation of the Set's value: an older value than Redis's", b, err, key)
			}
			g.expect(key, []byte("theirs"))
		})
	}
}

// pauseClock is the wall clock, except that once armed it stops the first
// goroutine that reads it from inside fn (a function name as the runtime
// prints it) until released: a way to stop a read right after a slower
// tier answered and before it fills the faster ones, where the cache has
// no test hook.
type pauseClock struct {
	mu     sync.Mutex
	fn     string        // "" while not armed
	paused chan struct{} // closed when a reader stopped
	resume chan struct{} // closed to let it go on
}

func (p *pauseClock) Now() time.Time {
	p.mu.Lock()
	fn := p.fn
	p.mu.Unlock()
	if fn != "" && calledFrom(fn) {
		p.mu.Lock()
		if p.fn == fn {
			p.fn = ""
			paused, resume := p.paused, p.resume
			p.mu.Unlock()
			close(paused)
			<-resume
		} else {
			p.mu.Unlock()
		}
	}
	return time.Now()
}

// arm makes the next read of the clock from inside fn stop.
func (p *pauseClock) arm(fn string) (paused, resume chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fn, p.paused, p.resume = fn, make(chan struct{}), make(chan struct{})
	return p.paused, p.resume
}

func calledFrom(fn string) bool {
	pcs := make([]uintptr, 32)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(2, pcs)])
	for {
		f, more := frames.Next()
		if strings.HasSuffix(f.Function, fn) {
			return true
		}
		if !more {
			return false
		}
	}
}

// TestGuardTicketBeforeRedisRead forces the race the read path's ticket
// closes, for Get and for GetOrLoad, on every route kind with Redis:
//  1. a reader misses the local tiers and reads v1 from Redis;
//  2. another client writes v2, and its invalidation is applied (there is
//     nothing local to remove);
//  3. the reader fills the local tiers with v1.
//
// The ticket the fill presents must be the one taken before step 1, so the
// invalidation of step 2 refuses it; one taken after step 1 would accept
// v1, served forever. The reader is stopped between steps 1 and 3 where it
// decodes Redis's reply (it reads the clock there).
func TestGuardTicketBeforeRedisRead(t *testing.T) {
	for _, op := range []string{"Get", "GetOrLoad"} {
		for _, rt := range raceRoutes {
			t.Run(op+"/"+rt.name, func(t *testing.T) {
				s := redistest.Start(t, nil)
				clk := &pauseClock{}
				g := &rig{t: t, s: s, waits: make(map[string]chan struct{}),
					route: Route{Prefix: "k:", Tiers: rt.tiers, TTL: time.Hour, Beta: -1, Raw: rt.raw}, dir: t.TempDir()}
				ext, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{s.Addr()}, DisableCache: true})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(ext.Close)
				g.ext = ext
				o := &Options{Redis: redisOpts(s), Routes: []Route{g.route}, Logger: quietLog, Clock: clk}
				if rt.tiers&Disk != 0 {
					o.Dir = g.dir
				}
				g.c = openT(t, o)
				g.listen()
				const key = "k:1"
				ctx := context.Background()
				g.external(key, []byte("v1"))
				paused, resume := clk.arm("tiered.(*Cache).decodeRemote")
				got := make(chan string, 1)
				go func() {
					var v []byte
					var ok bool
					var err error
					if op == "Get" {
						v, ok, err = g.c.Get(ctx, key)
					} else {
						v, ok, err = g.c.GetOrLoad(ctx, key, LoaderFunc(func(context.Context, string) ([]byte, error) {
							return nil, errors.New("loader called: Redis holds the key")
						}))
					}
					got <- fmt.Sprintf("%q, %v, %v", v, ok, err)
				}()
				select {
				case <-paused:
				case <-time.After(10 * time.Second):
					t.Fatal("the reader never decoded a reply from Redis")
				}
				g.external(key, []byte("v2"))
				close(resume)
				if r := <-got; r != `"v1", true, <nil>` {
					t.Fatalf("the reader got %s, want v1 (what Redis held when it read)", r)
				}
				g.expect(key, []byte("v2"))
			})
		}
	}
}

// listen registers the rig's invalidation listener on a cache opened by
// hand (rig.open does it for the caches it opens).
func (g *rig) listen() {
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

// TestGuardQueuedFillRefused: a reader's disk fill whose ticket an
// invalidation overtook is not queued, on the routes with Redis and the
// disk tier:
//  1. reader A misses the local tiers and reads v1 from Redis;
//  2. another client writes v2; the invalidation is applied and queues the
//     key's delete;
//  3. A fills the local tiers with v1: the write-behind queue refuses it.
//
// Were v1 queued after the delete, the disk would hold a value older than
// Redis's; its lost trust keeps reads right (TestRaceFillInvalidationPending
// checks them), so this checks what the disk tier holds.
func TestGuardQueuedFillRefused(t *testing.T) {
	for _, rt := range raceRoutes {
		if rt.tiers&Disk == 0 {
			continue
		}
		t.Run(rt.name, func(t *testing.T) {
			g := newRig(t, rt.tiers, rt.raw)
			const key = "k:1"
			ctx := context.Background()
			g.external(key, []byte("v1"))
			g.once("fill", key, func() { g.external(key, []byte("v2")) })
			if v, ok, err := g.c.Get(ctx, key); err != nil || !ok || string(v) != "v1" {
				t.Fatalf("A read %q, %v, %v; want v1, what Redis held when it read", v, ok, err)
			}
			g.c.testHook = nil
			if b, _, ok, err := g.c.disk.read(ctx, key); err != nil || ok {
				t.Fatalf("the disk tier holds %q (%v) for %s: a fill the invalidation overtook was queued", b, err, key)
			}
			g.expect(key, []byte("v2"))
		})
	}
}
