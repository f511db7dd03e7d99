package tiered

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/redistest"
)

// Delete's local removals, on every route kind: a value gone from Redis
// must be gone from memory and disk, also when a read refills them around
// the DEL, and when the DEL's reply is lost.

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
						det := &Sources{}
						if v, ok, err := c.Get(WithSources(ctx, det), k); err != nil || ok {
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
