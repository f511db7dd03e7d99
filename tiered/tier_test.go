package tiered

import (
	"context"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/clock"
	"github.com/thermoscache/thermos/internal/redistest"
)

// tierFixture is one tier under the conformance suite, inside a cache whose
// only route ("t:") holds it together with Redis (so that verification and
// trust apply), with a way to put an entry in that tier and nowhere else.
type tierFixture struct {
	c   *Cache
	clk *clock.Manual
	r   *route
	tr  tier
	// put stores e under key in the tier, as a fill or a write would.
	put func(t *testing.T, key string, e *entry)
	// guarded: fills and confirms present tickets (Redis's do not).
	guarded bool
}

func newTierFixture(t *testing.T, name string) *tierFixture {
	s := redistest.Start(t, nil)
	clk := clock.NewManual(time.Now())
	o := &Options{Redis: redisOpts(s), Clock: clk, Logger: quietLog, Dir: t.TempDir()}
	switch name {
	case "memory":
		o.Routes = []Route{{Prefix: "t:", Tiers: Memory | Redis, TTL: time.Hour, Beta: -1}}
	case "disk":
		o.Routes = []Route{{Prefix: "t:", Tiers: Disk | Redis, TTL: time.Hour, Beta: -1}}
	case "redis":
		o.Routes = []Route{{Prefix: "t:", Tiers: Redis, TTL: time.Hour, Beta: -1}}
	}
	c := openT(t, o)
	f := &tierFixture{c: c, clk: clk, r: c.router.find("t:x"), guarded: name != "redis"}
	switch name {
	case "memory":
		f.tr = c.memory
	case "disk":
		f.tr = c.disk
	case "redis":
		f.tr = c.redis
	}
	f.put = func(t *testing.T, key string, e *entry) {
		t.Helper()
		if name == "redis" {
			if _, err := s.Do("SET", key, string(e.disk)); err != nil {
				t.Fatal(err)
			}
			return
		}
		if !f.tr.fill(f.r, key, *e, c.mem.Reserve(key)) {
			t.Fatalf("fill of %s under a fresh ticket refused", key)
		}
	}
	return f
}

// TestTierConformance runs the tier contract (tier.go) against each tier:
// what get returns, that fills and confirms present the one ticket, that
// nothing past its hard expiry is returned, and what verified means.
func TestTierConformance(t *testing.T) {
	for _, name := range []string{"memory", "disk", "redis"} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			f := newTierFixture(t, name)
			c, r := f.c, f.r
			encode := func(key, v string, ttl time.Duration) entry {
				t.Helper()
				_, e, _, err := c.encode(r, key, []byte(v), ttl, 0, false)
				if err != nil {
					t.Fatal(err)
				}
				return e
			}
			get := func(key string) (entry, bool, bool) {
				t.Helper()
				e, verified, ok, err := f.tr.get(ctx, r, key)
				if err != nil {
					t.Fatalf("get(%s): %v", key, err)
				}
				return e, verified, ok
			}

			if _, _, ok := get("t:none"); ok {
				t.Fatal("get of a key never stored found something")
			}

			// What is stored is what get returns, verified.
			e := encode("t:a", "A", 0)
			f.put(t, "t:a", &e)
			got, verified, ok := get("t:a")
			if !ok || string(got.it.Value) != "A" || got.it.Version != e.it.Version {
				t.Fatalf("get(t:a) = %q v%d, %v; want A v%d", got.it.Value, got.it.Version, ok, e.it.Version)
			}
			if !verified {
				t.Error("a copy just stored is not verified")
			}

			if f.guarded {
				// A fill under a ticket an invalidation overtook is refused
				// and leaves nothing behind.
				stale := c.mem.Reserve("t:b")
				c.mem.Invalidate("t:b")
				eb := encode("t:b", "B", 0)
				if f.tr.fill(r, "t:b", eb, stale) {
					t.Error("fill under an overtaken ticket accepted")
				}
				if _, _, ok := get("t:b"); ok {
					t.Error("an overtaken fill left a copy")
				}

				// An invalidation ends verification (the copy is gone, or
				// kept but no longer vouched for); confirm under a ticket
				// taken after it restores it, one taken before does not.
				before := c.mem.Reserve("t:a")
				c.mem.Invalidate("t:a")
				if _, v, ok := get("t:a"); ok && v {
					t.Error("a copy is still verified after its key's invalidation")
				}
				f.put(t, "t:a", &e)
				after := c.mem.Reserve("t:a")
				if f.tr.confirm(r, "t:a", e, before) {
					t.Error("confirm under a ticket taken before an invalidation accepted")
				}
				if !f.tr.confirm(r, "t:a", e, after) {
					t.Error("confirm under a valid ticket refused")
				}
				if _, v, ok := get("t:a"); !ok || !v {
					t.Errorf("after confirm: ok %v verified %v; want a verified copy", ok, v)
				}

				// An epoch bump (a lost connection) unverifies every copy.
				bumps := c.Stats().EpochBumps
				c.mem.Client().Do(ctx, c.mem.Client().B().Flushall().Build())
				waitFor(t, 5*time.Second, func() bool {
					_, v, ok := get("t:a")
					return !ok || !v
				}, "the FLUSHALL to unverify the copy")
				// Fills are refused until tracking is armed again (the
				// second bump), as after any null invalidation.
				waitFor(t, 5*time.Second, func() bool { return c.Stats().EpochBumps >= bumps+2 }, "the re-arm after the FLUSHALL")
			} else {
				if f.tr.fill(r, "t:b", e, c.mem.Reserve("t:b")) {
					t.Error("the redis tier accepted a fill")
				}
			}

			// Nothing past its hard expiry is returned.
			short := encode("t:short", "S", time.Minute)
			f.put(t, "t:short", &short)
			if _, _, ok := get("t:short"); !ok {
				t.Fatal("t:short not found before its expiry")
			}
			if name != "redis" { // Redis expires by its own clock, not ours
				f.clk.Advance(2 * time.Minute)
				if _, _, ok := get("t:short"); ok {
					t.Error("get returned a copy past its hard expiry")
				}
			}
		})
	}
}
