package tracking

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/thermoscache/thermos/internal/redistest"
)

// cuttable dials Redis and keeps the connections it made, so a test can cut
// them and refuse new ones while blocked.
type cuttable struct {
	blocked atomic.Bool
	mu      sync.Mutex
	conns   []net.Conn
}

func (d *cuttable) dial(ctx context.Context, addr string, nd *net.Dialer, _ *tls.Config) (net.Conn, error) {
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

// cut blocks new connections and closes every one made so far.
func (d *cuttable) cut() {
	d.blocked.Store(true)
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.Close()
	}
	d.conns = nil
}

// TestNothingTrustedWhileTrackingDown: a caller that reads Redis on a client
// of its own (tiered with Options.RedisClient) can reach Redis while the
// tracking connection is down. In order:
//  1. the tracking connection drops and cannot reconnect;
//  2. the caller takes a ticket and reads v1 on its own client;
//  3. another client writes v2: no invalidation can reach this cache;
//  4. the caller fills v1 under the ticket of step 2.
//
// Step 4 must be refused (and Revalidate, Valid and Write under a ticket
// with it), or v1 is served as fresh until tracking is re-armed. Once it is,
// fills are accepted again.
func TestNothingTrustedWhileTrackingDown(t *testing.T) {
	srv := redistest.Start(t, nil)
	d := &cuttable{}
	ro := redisOpts(srv)
	ro.DialCtxFn = d.dial
	c := newRedisCache(t, srv, &Options{Redis: ro, Prefixes: []string{"k:"}, KeepUnverified: true})
	own := newWriter(t, srv) // the caller's own client
	other := newWriter(t, srv)
	ctx := t.Context()
	read := func(key string) []byte {
		t.Helper()
		b, err := own.Do(ctx, own.B().Get().Key(key).Build()).AsBytes()
		if err != nil {
			t.Fatalf("GET %s: %v", key, err)
		}
		return b
	}
	heard := invalidations(c)
	set(t, other, "k:1", "v1")
	set(t, other, "k:2", "v1")
	// The writes' own invalidations may still be on their way: a fill
	// before one arrives is refused, or removed by it.
	waitFor(t, "the invalidations of the first writes", 10*time.Second, func() bool { return heard("k:1") > 0 && heard("k:2") > 0 })
	if !c.Fill(c.Reserve("k:2"), "k:2", Item{Value: read("k:2"), Version: 1}, true) {
		t.Fatal("fill refused while tracking is up")
	}

	epoch := c.Epoch()
	d.cut()
	waitFor(t, "the tracking connection's loss", 10*time.Second, func() bool { return c.Epoch() > epoch })

	tk := c.Reserve("k:1")
	v1 := read("k:1")
	set(t, other, "k:1", "v2")
	if c.Fill(tk, "k:1", Item{Value: v1}, true) {
		t.Error("Fill accepted a value read while tracking was down")
	}
	if c.Valid(c.Reserve("k:1")) {
		t.Error("Valid is true for a ticket taken while tracking is down")
	}
	if c.Revalidate(c.Reserve("k:2"), "k:2", 1) {
		t.Error("Revalidate promoted an entry while tracking is down")
	}
	wt := c.Reserve("k:3")
	if _, valid, err := c.Write("k:3", &Item{Value: []byte("mine")}, 0, &wt); err != nil || valid {
		t.Errorf("Write under a ticket while tracking is down = valid %v, %v; want the entry removed", valid, err)
	}
	if _, fresh, ok := c.Get("k:1"); ok && fresh {
		t.Error("k:1 is cached as fresh while tracking is down")
	}
	// Local keys are not Redis's: FillLocal goes on.
	if !c.FillLocal(c.Reserve("local"), "local", item("l")) {
		t.Error("FillLocal refused while tracking is down")
	}

	d.blocked.Store(false)
	waitFor(t, "fills accepted after the re-arm", 10*time.Second, func() bool {
		return c.Fill(c.Reserve("k:1"), "k:1", Item{Value: read("k:1")}, true)
	})
	mustGet(t, c, "k:1", "v2")
	// Tracking works again: another client's write reaches the cache.
	set(t, other, "k:1", "v3")
	waitFor(t, "the invalidation of k:1", 10*time.Second, func() bool { _, _, ok := c.Get("k:1"); return !ok })
}
