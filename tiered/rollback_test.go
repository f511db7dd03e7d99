package tiered

import (
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/thermoscache/thermos/internal/clock"
	"github.com/thermoscache/thermos/internal/redistest"
)

// statsOf returns the stats of the route with prefix.
func statsOf(c *Cache, prefix string) RouteStats {
	for _, r := range c.Stats().Routes {
		if r.Prefix == prefix {
			return r
		}
	}
	return RouteStats{}
}

// An old signed value written back into Redis with a raw SET after the key
// was overwritten (a replay) is refused, counted, by the writer and by a
// reader that saw the newer value; a value a few seconds older than the
// newest seen (two writers racing, clocks a little apart) is still served.
// With random write versions every reader served the replayed value.
func TestRollbackRefusesReplay(t *testing.T) {
	srv := redistest.Start(t, nil)
	ring := secRing(1, 1)
	clk := clock.NewManual(time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	open := func() *Cache {
		return openT(t, &Options{Redis: redisOpts(srv), Signing: ring, Clock: clk, Logger: slog.New(slog.DiscardHandler),
			Routes: []Route{{Prefix: "app:", Tiers: Memory | Redis, TTL: time.Hour}}})
	}
	w, rd := open(), open()
	ctx := t.Context()

	if err := w.Set(ctx, "app:k", []byte("v1"), 0); err != nil {
		t.Fatal(err)
	}
	old, err := srv.Do("GET", "app:k")
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * rollbackSlack)
	if err := w.Set(ctx, "app:k", []byte("v2"), 0); err != nil {
		t.Fatal(err)
	}
	if v, ok := mustGet(t, rd, "app:k"); !ok || string(v) != "v2" {
		t.Fatalf("reader Get = %q, %v; want v2", v, ok)
	}
	// The replay: the bytes Redis held for v1, signed and intact. Its
	// invalidation removes v2 from both memories.
	if _, err := srv.Do("SET", "app:k", old); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*Cache{"writer": w, "reader": rd} {
		waitFor(t, 5*time.Second, func() bool {
			v, ok, err := c.Get(ctx, "app:k")
			if err != nil || (ok && string(v) == "v2") {
				return false // the invalidation has not arrived yet
			}
			if ok {
				t.Fatalf("%s served %q after the replay of v1", name, v)
			}
			return true
		}, name+" to refuse the replay")
		if n := statsOf(c, "app:").IntegrityFailures; n == 0 {
			t.Errorf("%s counted no integrity failure for the replay", name)
		}
	}

	// Within the slack: a write stamped 30 s before the newest seen (a
	// writer whose clock is behind) is served.
	clk.Advance(-rollbackSlack / 2)
	if err := w.Set(ctx, "app:k", []byte("v3"), 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool {
		v, ok, err := rd.Get(ctx, "app:k")
		return err == nil && ok && string(v) == "v3"
	}, "the reader to serve v3, 30 s older than v2")
}

// A disk entry older than what this process has seen for its key is
// refused too: an entry put back on disk while the process runs.
func TestRollbackRefusesOldDiskEntry(t *testing.T) {
	o := (&Options{Signing: secRing(1, 1), Logger: slog.New(slog.DiscardHandler),
		Routes: []Route{{Prefix: "app:", Tiers: Memory, TTL: time.Hour}}}).withDefaults()
	clk := clock.NewManual(time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	c := &Cache{o: o, router: newRouter(o.Routes), ring: o.Signing.envelopeRing(), clk: clk}
	c.rnd.r = rand.New(rand.NewPCG(1, 2))
	r := c.router.find("app:k")
	old, _, _, err := c.encode(r, "app:k", []byte("v1"), 0, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * rollbackSlack)
	if _, _, _, err := c.encode(r, "app:k", []byte("v2"), 0, 0, false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.decodeDisk(r, "app:k", old, 0); err != errRollback {
		t.Fatalf("decodeDisk of the older entry = %v, want errRollback", err)
	}
	// Another key's entry of the same age is not affected.
	other, _, _, err := c.encode(r, "app:other", []byte("x"), 0, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.decodeDisk(r, "app:other", other, 0); err != nil {
		t.Fatalf("decodeDisk of another key = %v", err)
	}
}

// Write versions carry the clock's seconds above 32 random bits, and the
// guard's memory is fixed.
func TestWriteVersion(t *testing.T) {
	clk := clock.NewManual(time.Unix(versionEpoch+1000, 0))
	c := &Cache{clk: clk}
	a := c.writeVersion()
	clk.Advance(time.Second)
	b := c.writeVersion()
	if versionTime(a) != 1000 || versionTime(b) != 1001 || a >= b {
		t.Errorf("versions %x then %x: times %d, %d; want 1000 < 1001", a, b, versionTime(a), versionTime(b))
	}
	x, y := c.writeVersion(), c.writeVersion()
	if low := uint64(1<<32 - 1); a&low == x&low && a&low == y&low {
		t.Errorf("the low 32 bits repeat: not random")
	}
	clk.Set(time.Unix(0, 0))
	if v := c.writeVersion(); versionTime(v) != 0 {
		t.Errorf("a clock before the epoch gives time %d, want 0", versionTime(v))
	}
	if n := unsafe.Sizeof(rollbackGuard{}); n > 1<<20+1<<12 {
		t.Errorf("the rollback guard takes %d bytes, want about 1 MiB", n)
	}
	if !strings.Contains(errRollback.Error(), "replayed") {
		t.Errorf("errRollback = %q", errRollback)
	}
}
