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

	"github.com/thermoscache/thermos/internal/envelope"
	"github.com/thermoscache/thermos/internal/redistest"
	"github.com/thermoscache/thermos/store"
)

// The tests in this file each fail when one guard of the read and write
// paths is disabled (the one-line mutations are listed in the note of issue
// 11): disk trust after a restart, the stripe lock that orders a write's
// disk copy against an invalidation's delete, local removal on Delete for
// every route kind, and the cap of a revalidated copy's expiry by its key's
// remaining TTL in Redis.

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

// deleteKinds are the route kinds Delete is checked on.
var deleteKinds = append([]struct {
	name  string
	tiers Tier
	raw   bool
}{{"memory", Memory, false}, {"disk", Disk, false}, {"memory+disk", Memory | Disk, false}, {"redis", Redis, false}}, raceRoutes...)

// TestGuardDeleteEveryRoute: on every route kind, a value set, read (so
// every tier holds it) and loaded is gone after Delete: from every tier,
// from Redis, after Flush and after a restart.
func TestGuardDeleteEveryRoute(t *testing.T) {
	for _, rk := range deleteKinds {
		t.Run(rk.name, func(t *testing.T) {
			ctx := context.Background()
			o := &Options{Logger: quietLog, Routes: []Route{{Prefix: "d:", Tiers: rk.tiers, TTL: time.Hour, Beta: -1, Raw: rk.raw}}}
			var adm *admin
			if rk.tiers&Redis != 0 {
				s := redistest.Start(t, nil)
				adm = newAdmin(t, s)
				o.Redis = redisOpts(s)
			}
			if rk.tiers&Disk != 0 {
				o.Dir = t.TempDir()
			}
			c := openT(t, o)
			l := &countingLoader{}
			for _, k := range []string{"d:set", "d:loaded"} {
				if k == "d:set" {
					if err := c.Set(ctx, k, []byte("v"), 0); err != nil {
						t.Fatal(err)
					}
				} else if _, _, err := c.GetOrLoad(ctx, k, l); err != nil {
					t.Fatal(err)
				}
				for range 2 {
					if _, ok := mustGet(t, c, k); !ok {
						t.Fatalf("Get(%s) missed before Delete", k)
					}
				}
				if err := c.Delete(ctx, k); err != nil {
					t.Fatal(err)
				}
			}
			gone := func(when string) {
				t.Helper()
				for _, k := range []string{"d:set", "d:loaded"} {
					for range 2 {
						det := &Detector{}
						if v, ok, err := c.Get(WithDetector(ctx, det), k); err != nil || ok {
							src, _ := det.Source(k)
							t.Fatalf("%s: Get(%s) = %q, %v, %v from %v; want a miss after Delete", when, k, v, ok, err, src)
						}
					}
					if adm != nil {
						if n, err := adm.do("EXISTS", k).AsInt64(); err != nil || n != 0 {
							t.Fatalf("%s: Redis holds %s after Delete (%d, %v)", when, k, n, err)
						}
					}
				}
			}
			gone("at once")
			if err := c.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			gone("after Flush")
			if rk.tiers&Disk != 0 {
				if err := c.Close(); err != nil {
					t.Fatal(err)
				}
				c = openT(t, o)
				gone("after a restart")
			}
		})
	}
}

// TestGuardDeleteRefill forces the race Delete's local removal after the
// DEL closes, on every route kind with Redis:
//  1. Delete removes the local copies (refusing older tickets);
//  2. a reader misses them, takes its ticket and reads the value from
//     Redis, which still holds it;
//  3. the reader fills the local tiers: its ticket is valid;
//  4. Delete sends DEL, and Redis sends this process no invalidation for
//     its own write (NOLOOP).
//
// Unless Delete removes the local copies again after the DEL, the value is
// served forever. Step 2 runs inside step 1's notification of listeners,
// on Delete's goroutine, before the DEL is sent.
func TestGuardDeleteRefill(t *testing.T) {
	for _, rt := range raceRoutes {
		t.Run(rt.name, func(t *testing.T) {
			g := newRig(t, rt.tiers, rt.raw)
			const key = "k:1"
			ctx := context.Background()
			if err := g.c.Set(ctx, key, []byte("v"), 0); err != nil {
				t.Fatal(err)
			}
			var armed atomic.Bool
			refilled := make(chan string, 1)
			g.c.mem.OnInvalidate(func(keys []string, _ bool) {
				if len(keys) != 1 || keys[0] != key || !armed.CompareAndSwap(true, false) {
					return
				}
				// On Delete's goroutine, between its local removal and its
				// DEL: Redis still holds v.
				v, ok, err := g.c.Get(ctx, key)
				refilled <- fmt.Sprintf("%q, %v, %v", v, ok, err)
			})
			armed.Store(true)
			if err := g.c.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-refilled:
				if r != `"v", true, <nil>` {
					t.Fatalf("the read between Delete's local removal and its DEL got %s, want v (Redis still held it)", r)
				}
			default:
				t.Fatal("Delete did not remove the local copies before its DEL")
			}
			g.expect(key, nil)
		})
	}
}

// TestGuardDeleteUnacknowledged: a DEL that Redis applies but whose reply
// the caller never sees (its context ends first, here while CLIENT PAUSE
// WRITE holds the command) must leave no local copy behind: no
// invalidation of this process's own DEL will come (NOLOOP), so a copy
// left in memory or on disk would be served forever.
func TestGuardDeleteUnacknowledged(t *testing.T) {
	for _, rt := range raceRoutes {
		t.Run(rt.name, func(t *testing.T) {
			g := newRig(t, rt.tiers, rt.raw)
			adm := newAdmin(t, g.s)
			const key = "k:1"
			ctx := context.Background()
			if err := g.c.Set(ctx, key, []byte("v"), 0); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if _, ok := mustGet(t, g.c, key); !ok {
					t.Fatal("miss after Set")
				}
			}
			adm.mustDo("CLIENT", "PAUSE", "10000", "WRITE")
			unpaused := false
			unpause := func() {
				if !unpaused {
					unpaused = true
					adm.mustDo("CLIENT", "UNPAUSE")
				}
			}
			defer unpause()
			dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			err := g.c.Delete(dctx, key)
			cancel()
			if err == nil {
				t.Fatal("Delete returned nil while Redis held its DEL")
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Delete: %v, want the context's deadline", err)
			}
			unpause()
			waitUntil(t, 10*time.Second, "Redis to apply the DEL", func() bool {
				n, err := adm.do("EXISTS", key).AsInt64()
				return err == nil && n == 0
			})
			g.expect(key, nil)
		})
	}
}

// TestGuardTTLCapAfterRestart: while a cache is closed (or cannot hear
// Redis), another program shortens a key's TTL with PEXPIRE. The local
// copy still says it lives an hour; once Redis has expired the key it must
// not be served. Redis's active expiry is off, so nothing but the cache's
// own check ends the copy: an expired key is only deleted, and its
// invalidation sent, when someone touches it.
func TestGuardTTLCapAfterRestart(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tiers Tier
		raw   bool
		// how the cache stops hearing Redis: "restart" (Close, then Open
		// on the same directory) or "reconnect" (its user cut off, then
		// let back in). pending keeps the disk write queued (never
		// flushed), where only reads check it: the background pass
		// scans what is stored.
		how     string
		pending bool
	}{
		{"memory+disk+redis/restart", Memory | Disk | Redis, false, "restart", false},
		{"disk+redis/restart", Disk | Redis, false, "restart", false},
		{"raw disk+redis/restart", Disk | Redis, true, "restart", false},
		{"memory+redis/reconnect", Memory | Redis, false, "reconnect", false},
		{"raw memory+redis/reconnect", Memory | Redis, true, "reconnect", false},
		{"disk+redis/reconnect", Disk | Redis, false, "reconnect", false},
		{"disk+redis/reconnect, pending", Disk | Redis, false, "reconnect", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each waits seconds for an expiry
			s := redistest.Start(t, &redistest.Options{Args: []string{"--enable-debug-command", "local"}})
			adm := newAdmin(t, s)
			adm.mustDo("DEBUG", "SET-ACTIVE-EXPIRE", "0")
			adm.addUser("a")
			ctx := context.Background()
			o := &Options{Redis: userOpts(s, "a"), Logger: quietLog,
				Routes: []Route{{Prefix: "t:", Tiers: tc.tiers, TTL: time.Hour, Beta: -1, Raw: tc.raw}}}
			if tc.tiers&Disk != 0 {
				o.Dir = t.TempDir()
			}
			if tc.pending {
				o.WriteBehind = time.Hour
			}
			c := openT(t, o)
			const key = "t:1"
			if err := c.Set(ctx, key, []byte("v"), 0); err != nil {
				t.Fatal(err)
			}
			if _, ok := mustGet(t, c, key); !ok {
				t.Fatal("miss after Set")
			}
			if !tc.pending {
				// On disk, not only queued, so the background pass sees it.
				if err := c.Flush(ctx); err != nil {
					t.Fatal(err)
				}
			}
			waitUntil(t, 10*time.Second, "the start-up revalidation pass", func() bool { return c.Stats().RevalidationPasses > 0 })
			before := c.Stats()
			const ttl = 3 * time.Second
			var expires time.Time
			pexpire := func() {
				if n, err := adm.do("PEXPIRE", key, fmt.Sprint(ttl.Milliseconds())).AsInt64(); err != nil || n != 1 {
					t.Fatalf("PEXPIRE: %d, %v", n, err)
				}
				expires = time.Now().Add(ttl) // Redis expires the key by then
			}
			switch tc.how {
			case "restart":
				if err := c.Close(); err != nil {
					t.Fatal(err)
				}
				pexpire()
				c = openT(t, o)
				before = Stats{}
			case "reconnect":
				if n := adm.cutUser("a"); n == 0 {
					t.Fatal("CLIENT KILL found no tracking connection")
				}
				waitUntil(t, 10*time.Second, "the epoch bump", func() bool { return c.Stats().EpochBumps > before.EpochBumps })
				pexpire()
				adm.addUser("a")
			}
			waitUntil(t, 10*time.Second, "the revalidation pass", func() bool {
				return c.Stats().RevalidationPasses > before.RevalidationPasses
			})
			// A pass with nothing to check (the pending case) ends without
			// asking Redis: wait until reads can reach it again.
			waitUntil(t, 10*time.Second, "a read that Redis answers", func() bool {
				_, _, err := c.Get(ctx, key)
				return err == nil
			})
			// Once Redis has surely expired the key, no tier may answer.
			// (The margin covers the copy's own cap, anchored when the
			// reply is decoded: up to a round trip and a scheduling delay
			// late.)
			waitUntil(t, ttl+10*time.Second, "the key's expiry in Redis", func() bool { return time.Now().After(expires.Add(time.Second)) })
			for range 2 {
				det := &Detector{}
				if v, ok, err := c.Get(WithDetector(ctx, det), key); err != nil || ok {
					src, _ := det.Source(key)
					t.Fatalf("Get(%s) = %q, %v, %v from %v, a second after Redis expired the key (PEXPIRE while the cache could not hear)", key, v, ok, err, src)
				}
			}
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

// TestGuardChecksums: an envelope changed after it was written (one
// payload byte flipped, so its checksum no longer matches) is refused, never
// served: read from Redis on an unsigned route, and read from disk, where
// it sits in a valid store record (only the envelope's own checksum can
// tell), at warm-up and on a disk read.
func TestGuardChecksums(t *testing.T) {
	ctx := context.Background()
	flip := func(b []byte) []byte {
		b = append([]byte(nil), b...)
		b[len(b)-1] ^= 0x20
		return b
	}
	t.Run("redis", func(t *testing.T) {
		g := newRig(t, Memory|Disk|Redis, false)
		const key = "k:1"
		g.external(key, []byte("value"))
		raw, err := g.ext.Do(ctx, g.ext.B().Get().Key(key).Build()).AsBytes()
		if err != nil {
			t.Fatal(err)
		}
		g.c.forgetLocal(key) // the bytes come from Redis, not a local copy
		if err := g.ext.Do(ctx, g.ext.B().Set().Key(key).Value(string(flip(raw))).Build()).Error(); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if v, ok, err := g.c.Get(ctx, key); err != nil || ok {
				t.Fatalf("Get(%s) of a corrupted envelope = %q, %v, %v; want a miss", key, v, ok, err)
			}
		}
		if n := g.c.Stats().Routes[0].IntegrityFailures; n != 2 {
			t.Errorf("IntegrityFailures = %d after two reads of a corrupted envelope, want 2", n)
		}
		// A load replaces the refused bytes.
		v, ok, err := g.c.GetOrLoad(ctx, key, LoaderFunc(func(context.Context, string) ([]byte, error) { return []byte("loaded"), nil }))
		if err != nil || !ok || string(v) != "loaded" {
			t.Fatalf("GetOrLoad over a corrupted envelope = %q, %v, %v; want the loader's value", v, ok, err)
		}
	})
	for _, tiers := range []Tier{Disk, Memory | Disk} {
		t.Run("disk/"+tiers.String(), func(t *testing.T) {
			opts := &Options{Dir: t.TempDir(), Logger: quietLog,
				Routes: []Route{{Prefix: "k:", Tiers: tiers, TTL: time.Hour, Beta: -1}}}
			const key = "k:1"
			c := openT(t, opts)
			if err := c.Set(ctx, key, []byte("value"), 0); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			db, err := store.Open(opts.Dir, &store.Options{Logger: quietLog})
			if err != nil {
				t.Fatal(err)
			}
			se, ok, err := db.Get(ctx, key)
			if err != nil || !ok {
				t.Fatalf("store Get(%s) = %v, %v", key, ok, err)
			}
			if err := db.SetExpiry(ctx, key, flip(se.Value), se.Expiry); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			c = openT(t, opts)
			for range 2 {
				if v, ok, err := c.Get(ctx, key); err != nil || ok {
					t.Fatalf("Get(%s) of a corrupted envelope on disk = %q, %v, %v; want a miss", key, v, ok, err)
				}
			}
			if n := c.Stats().DiskCorrupt; n != 1 {
				t.Errorf("DiskCorrupt = %d, want 1: the entry refused once, then removed", n)
			}
		})
	}
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

// TestGuardDiskSignature: on a signed route, a value altered on disk (its
// payload changed and its checksum fixed, as someone who knows the format
// but not the secret can do, in a valid store record) is refused at
// warm-up and on a disk read, never served: the disk is no more trusted
// than Redis. On routes with Redis the altered copy keeps the version Redis
// holds, so only the signature tells.
func TestGuardDiskSignature(t *testing.T) {
	for _, tiers := range []Tier{Disk, Memory | Disk, Disk | Redis, Memory | Disk | Redis} {
		t.Run(tiers.String(), func(t *testing.T) {
			ctx := context.Background()
			opts := &Options{Dir: t.TempDir(), Logger: quietLog, Signing: secRing(1, 1),
				Routes: []Route{{Prefix: "k:", Tiers: tiers, TTL: time.Hour, Beta: -1}}}
			if tiers&Redis != 0 {
				opts.Redis = redisOpts(redistest.Start(t, nil))
			}
			const key = "k:1"
			c := openT(t, opts)
			if err := c.Set(ctx, key, []byte("value"), 0); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			db, err := store.Open(opts.Dir, &store.Options{Logger: quietLog})
			if err != nil {
				t.Fatal(err)
			}
			se, ok, err := db.Get(ctx, key)
			if err != nil || !ok {
				t.Fatalf("store Get(%s) = %v, %v", key, ok, err)
			}
			forged := reencode(t, se.Value, func(e *envelope.Entry) { e.Payload = []byte("forge") })
			if err := db.SetExpiry(ctx, key, forged, se.Expiry); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			c = openT(t, opts)
			for range 2 {
				v, ok, err := c.Get(ctx, key)
				switch {
				case err != nil:
					t.Fatalf("Get(%s): %v", key, err)
				case ok && string(v) == "forge":
					t.Fatalf("Get(%s) served the value forged on disk", key)
				case tiers&Redis != 0 && (!ok || string(v) != "value"):
					t.Fatalf("Get(%s) = %q, %v; want Redis's value", key, v, ok)
				case tiers&Redis == 0 && ok:
					t.Fatalf("Get(%s) = %q; want a miss: the only copy was forged", key, v)
				}
			}
			// Refused once, then removed. On routes with Redis the
			// background pass may refuse it once more: it scans the store,
			// where the entry stays until its queued delete is flushed.
			if n := c.Stats().DiskCorrupt; n < 1 || n > 1 && tiers&Redis == 0 {
				t.Errorf("DiskCorrupt = %d, want 1", n)
			}
		})
	}
}
