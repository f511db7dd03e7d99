package tiered

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redistest"
)

// userClient is a client the program made for itself, as a caller of
// Options.RedisClient would have.
func userClient(t *testing.T, srv *redistest.Server) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr()}, DisableCache: true})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func userSet(t *testing.T, c rueidis.Client, key, v string) {
	t.Helper()
	if err := c.Do(t.Context(), c.B().Set().Key(key).Value(v).Build()).Error(); err != nil {
		t.Fatalf("SET %s: %v", key, err)
	}
}

// sourceOf reads key and returns its value and the tier that answered.
func sourceOf(t *testing.T, c *Cache, key string) (string, Source) {
	t.Helper()
	var s Sources
	v, ok, err := c.Get(WithSources(context.Background(), &s), key)
	if err != nil || !ok {
		t.Fatalf("Get(%s) = %q, %v, %v", key, v, ok, err)
	}
	src, _ := s.Source(key)
	return string(v), src
}

// sharedRoutes: raw keys another program writes, enveloped keys this cache
// writes, with and without disk.
var sharedRoutes = []Route{
	{Prefix: "raw:", Tiers: Memory | Redis, Raw: true, TTL: time.Hour},
	{Prefix: "own:", Tiers: Memory | Redis, TTL: time.Hour},
	{Prefix: "disk:", Tiers: Memory | Disk | Redis, TTL: time.Hour},
}

// TestRedisClientShared: with Options.RedisClient the cache's data commands
// and the herd go through the caller's client, another client's writes
// still reach the cache, and its own writes come back as invalidations.
func TestRedisClientShared(t *testing.T) {
	srv := redistest.Start(t, nil)
	shared := userClient(t, srv)
	other := userClient(t, srv)
	ctx := t.Context()
	c := openT(t, &Options{Redis: redisOpts(srv), RedisClient: shared, Routes: sharedRoutes, Dir: t.TempDir(),
		Logger: slog.New(slog.DiscardHandler)})

	// Another program's write is invalidated on the tracking connection.
	userSet(t, other, "raw:1", "v1")
	if v, _ := sourceOf(t, c, "raw:1"); v != "v1" {
		t.Fatalf("raw:1 = %q, want v1", v)
	}
	waitFor(t, 5*time.Second, func() bool { _, src := sourceOf(t, c, "raw:1"); return src == SourceMemory }, "raw:1 cached")
	userSet(t, other, "raw:1", "v2")
	waitFor(t, 5*time.Second, func() bool { v, _ := sourceOf(t, c, "raw:1"); return v == "v2" }, "raw:1 = v2 after another client's write")

	// The cache's own writes and loads, on every route kind.
	for _, key := range []string{"own:1", "disk:1"} {
		before := c.mem.Stats().Invalidations
		if err := c.Set(ctx, key, []byte("mine"), 0); err != nil {
			t.Fatalf("Set(%s): %v", key, err)
		}
		if v, _ := sourceOf(t, c, key); v != "mine" {
			t.Errorf("%s = %q after Set, want mine", key, v)
		}
		// The documented cost: NOLOOP does not cover the caller's client,
		// so the write comes back as an invalidation.
		waitFor(t, 5*time.Second, func() bool { return c.mem.Stats().Invalidations > before }, key+"'s own invalidation")
		if v, _ := sourceOf(t, c, key); v != "mine" {
			t.Errorf("%s = %q after its own invalidation, want mine", key, v)
		}
		if err := c.Delete(ctx, key); err != nil {
			t.Fatalf("Delete(%s): %v", key, err)
		}
		if _, ok, err := c.Get(ctx, key); err != nil || ok {
			t.Errorf("Get(%s) after Delete = %v, %v; want a miss", key, ok, err)
		}
		l := &countingLoader{}
		for range 2 {
			if v, ok, err := c.GetOrLoad(ctx, key, l); err != nil || !ok || string(v) != "v:"+key+":1" {
				t.Fatalf("GetOrLoad(%s) = %q, %v, %v", key, v, ok, err)
			}
		}
		if n := l.calls.Load(); n != 1 {
			t.Errorf("GetOrLoad(%s) twice loaded %d times, want 1", key, n)
		}
	}
	if st := c.Stats(); st.Routes[0].Loads+st.Routes[1].Loads+st.Routes[2].Loads != 2 || st.Routes[0].DegradedLoads+st.Routes[1].DegradedLoads+st.Routes[2].DegradedLoads != 0 {
		t.Errorf("stats: want 2 loads under the shared lease, none degraded: %+v", st.Routes)
	}

	// Everything but tracking goes through the caller's client: closed, the
	// cache cannot reach Redis although its tracking connection is up.
	shared.Close()
	if err := c.Set(ctx, "own:2", []byte("x"), 0); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Set with the caller's client closed = %v, want ErrUnavailable", err)
	}
	if _, _, err := c.Get(ctx, "raw:9"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Get of an uncached key with the caller's client closed = %v, want ErrUnavailable", err)
	}
}

// TestRedisClientElsewhere: a RedisClient that reaches another server than
// Options.Redis would leave every cached value stale forever: Open refuses
// it, and refuses a RedisClient without Options.Redis.
func TestRedisClientElsewhere(t *testing.T) {
	a := redistest.Start(t, nil)
	b := redistest.Start(t, nil)
	ro := redisOpts(a)
	ro.ConnWriteTimeout = 200 * time.Millisecond // bounds the probe's wait
	_, err := Open(t.Context(), &Options{Redis: ro, RedisClient: userClient(t, b), Routes: sharedRoutes[:1]})
	if !errors.Is(err, ErrConfig) {
		t.Errorf("Open with RedisClient on another server = %v, want ErrConfig", err)
	}
	_, err = Open(t.Context(), &Options{RedisClient: userClient(t, a)})
	if !errors.Is(err, ErrConfig) {
		t.Errorf("Open with RedisClient and no Redis = %v, want ErrConfig", err)
	}
	// The right server: Open succeeds and deletes its probe key.
	shared := userClient(t, a)
	openT(t, &Options{Redis: ro, RedisClient: shared, Routes: sharedRoutes[:1]})
	if n, err := shared.Do(t.Context(), shared.B().Dbsize().Build()).AsInt64(); err != nil || n != 0 {
		t.Errorf("DBSIZE after Open = %d, %v; want the probe key deleted", n, err)
	}
}

// cutDialer dials Redis and keeps its connections, so a test can cut them
// and refuse new ones while blocked.
type cutDialer struct {
	blocked atomic.Bool
	mu      sync.Mutex
	conns   []net.Conn
}

func (d *cutDialer) dial(ctx context.Context, addr string, nd *net.Dialer, _ *tls.Config) (net.Conn, error) {
	if d.blocked.Load() {
		return nil, errors.New("test: dialling blocked")
	}
	c, err := nd.DialContext(ctx, "tcp", addr)
	if err == nil {
		d.mu.Lock()
		d.conns = append(d.conns, c)
		d.mu.Unlock()
	}
	return c, err
}

func (d *cutDialer) cut() {
	d.blocked.Store(true)
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.Close()
	}
	d.conns = nil
}

// TestRedisClientTrackingDown: the caller's client can reach Redis while
// the cache's tracking connection is down, and no invalidation can arrive
// meanwhile. In order:
//  1. raw:1 is cached; the tracking connection drops and cannot reconnect;
//  2. another client writes v2, unheard;
//  3. reads check the unverified copy through the caller's client, drop
//     it, and read v2 from Redis, again and again: none may be kept;
//  4. another client writes v3, unheard;
//  5. a read returns v3: a copy of v2 kept in step 3 would hide it.
//
// Once tracking is back, reads are cached again and invalidated again.
func TestRedisClientTrackingDown(t *testing.T) {
	srv := redistest.Start(t, nil)
	d := &cutDialer{}
	ro := redisOpts(srv)
	ro.DialCtxFn = d.dial
	other := userClient(t, srv)
	c := openT(t, &Options{Redis: ro, RedisClient: userClient(t, srv), Routes: sharedRoutes[:1],
		Logger: slog.New(slog.DiscardHandler)})

	userSet(t, other, "raw:1", "v1")
	waitFor(t, 5*time.Second, func() bool { v, src := sourceOf(t, c, "raw:1"); return v == "v1" && src == SourceMemory }, "raw:1 cached")

	bumps := c.Stats().EpochBumps
	d.cut()
	waitFor(t, 10*time.Second, func() bool { return c.Stats().EpochBumps > bumps }, "the tracking connection's loss")
	userSet(t, other, "raw:1", "v2")
	for i := range 3 {
		if v, src := sourceOf(t, c, "raw:1"); v != "v2" || src != SourceRedis {
			t.Fatalf("read %d of raw:1 while tracking is down = %q from %v, want v2 from redis: a value read meanwhile was kept", i, v, src)
		}
	}
	userSet(t, other, "raw:1", "v3")
	if v, src := sourceOf(t, c, "raw:1"); v != "v3" || src != SourceRedis {
		t.Errorf("raw:1 after an unheard write = %q from %v, want v3 from redis", v, src)
	}

	d.blocked.Store(false)
	waitFor(t, 10*time.Second, func() bool { v, src := sourceOf(t, c, "raw:1"); return v == "v3" && src == SourceMemory }, "raw:1 cached again")
	userSet(t, other, "raw:1", "v4")
	waitFor(t, 5*time.Second, func() bool { v, _ := sourceOf(t, c, "raw:1"); return v == "v4" }, "raw:1 = v4: tracking works again")
}
