package tiered

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/clock"
	"github.com/thermoscache/thermos/internal/redistest"
)

func openT(t testing.TB, o *Options) *Cache {
	t.Helper()
	c, err := Open(context.Background(), o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func redisOpts(s *redistest.Server) *rueidis.ClientOption {
	return &rueidis.ClientOption{InitAddress: []string{s.Addr()}}
}

func mustGet(t testing.TB, c *Cache, key string) ([]byte, bool) {
	t.Helper()
	v, ok, err := c.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return v, ok
}

// countingLoader returns "v:<key>:<n>" and counts its calls.
type countingLoader struct {
	calls atomic.Int64
	delay time.Duration
	err   error
}

func (l *countingLoader) Load(ctx context.Context, key string) ([]byte, error) {
	n := l.calls.Add(1)
	if l.delay > 0 {
		select {
		case <-time.After(l.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if l.err != nil {
		return nil, l.err
	}
	return []byte(fmt.Sprintf("v:%s:%d", key, n)), nil
}

func TestMemoryOnlySetGetDelete(t *testing.T) {
	c := openT(t, nil)
	ctx := context.Background()
	if _, ok := mustGet(t, c, "a"); ok {
		t.Fatal("hit on empty cache")
	}
	if err := c.Set(ctx, "a", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	if v, ok := mustGet(t, c, "a"); !ok || string(v) != "1" {
		t.Fatalf("Get(a) = %q, %v; want 1", v, ok)
	}
	if err := c.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, ok := mustGet(t, c, "a"); ok {
		t.Fatal("hit after Delete")
	}
}

func TestGetOrLoadSingleFlightLocal(t *testing.T) {
	c := openT(t, nil)
	l := &countingLoader{delay: 20 * time.Millisecond}
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, ok, err := c.GetOrLoad(context.Background(), "k", l)
			if err != nil || !ok || string(v) != "v:k:1" {
				t.Errorf("GetOrLoad = %q, %v, %v", v, ok, err)
			}
		}()
	}
	wg.Wait()
	if n := l.calls.Load(); n != 1 {
		t.Fatalf("loader calls = %d, want 1", n)
	}
	if v, ok := mustGet(t, c, "k"); !ok || string(v) != "v:k:1" {
		t.Fatalf("Get after load = %q, %v", v, ok)
	}
}

// TestGetOrLoadLateCallerFindsTheLoad: caller B misses memory and is
// held just before its load while caller A loads the key and returns; B
// then goes on and must find A's value, not run the loader a second time
// (it missed the flight, but the flight's fill came before B's own one
// could start).
func TestGetOrLoadLateCallerFindsTheLoad(t *testing.T) {
	for _, tiers := range []Tier{Memory, Memory | Disk} {
		t.Run(tiers.String(), func(t *testing.T) {
			c := openT(t, &Options{Dir: t.TempDir(), Routes: []Route{{Tiers: tiers}}})
			ctx := context.Background()
			l := &countingLoader{}
			held, release := make(chan struct{}), make(chan struct{})
			var first atomic.Bool
			c.testHook = func(point, key string) {
				if point == "load" && first.CompareAndSwap(false, true) {
					close(held)
					<-release
				}
			}
			b := make(chan error, 1)
			go func() {
				v, ok, err := c.GetOrLoad(ctx, "k", l)
				if err == nil && (!ok || string(v) != "v:k:1") {
					err = fmt.Errorf("GetOrLoad = %q, %v", v, ok)
				}
				b <- err
			}()
			<-held
			if v, ok, err := c.GetOrLoad(ctx, "k", l); err != nil || !ok || string(v) != "v:k:1" {
				t.Fatalf("A: GetOrLoad = %q, %v, %v", v, ok, err)
			}
			close(release)
			if err := <-b; err != nil {
				t.Fatalf("B: %v", err)
			}
			if n := l.calls.Load(); n != 1 {
				t.Fatalf("loader calls = %d, want 1: the late caller loaded again", n)
			}
		})
	}
}

func TestNegativeCaching(t *testing.T) {
	c := openT(t, &Options{Routes: []Route{{Tiers: Memory, NegativeTTL: time.Minute}}})
	l := &countingLoader{err: ErrNotFound}
	for range 3 {
		v, ok, err := c.GetOrLoad(context.Background(), "nope", l)
		if err != nil || ok || v != nil {
			t.Fatalf("GetOrLoad(missing) = %q, %v, %v; want a miss", v, ok, err)
		}
	}
	if n := l.calls.Load(); n != 1 {
		t.Fatalf("loader calls = %d, want 1 (negative cached)", n)
	}
}

func TestStaleOnError(t *testing.T) {
	clk := clock.NewManual(time.Unix(1_700_000_000, 0))
	c := openT(t, &Options{Clock: clk, Routes: []Route{{Tiers: Memory, TTL: time.Minute, MaxStale: time.Hour, Beta: -1}}})
	ctx := context.Background()
	good := &countingLoader{}
	if v, _, err := c.GetOrLoad(ctx, "k", good); err != nil || string(v) != "v:k:1" {
		t.Fatalf("first load = %q, %v", v, err)
	}
	clk.Advance(2 * time.Minute) // past TTL, within MaxStale
	if _, ok := mustGet(t, c, "k"); ok {
		t.Fatal("Get served a value past its TTL")
	}
	bad := &countingLoader{err: errors.New("origin down")}
	v, ok, err := c.GetOrLoad(ctx, "k", bad)
	if err != nil || !ok || string(v) != "v:k:1" {
		t.Fatalf("GetOrLoad with failing origin = %q, %v, %v; want the stale value", v, ok, err)
	}
	// Served stale at once (stale-while-revalidate), the refresh failing
	// in the background.
	waitFor(t, 5*time.Second, func() bool { return c.Stats().Routes[0].LoadErrors == 1 }, "the background refresh to fail")
	if st := c.Stats().Routes[0]; st.StaleServes != 1 || st.LoadErrors != 1 {
		t.Fatalf("stale serves %d, load errors %d; want 1, 1", st.StaleServes, st.LoadErrors)
	}
	clk.Advance(2 * time.Hour) // past MaxStale
	if _, _, err := c.GetOrLoad(ctx, "k", bad); err == nil {
		t.Fatal("served a value past MaxStale")
	}
}

func TestRedisTierSharedBetweenInstances(t *testing.T) {
	s := redistest.Start(t, nil)
	routes := []Route{{Prefix: "", Tiers: Memory | Redis, TTL: time.Minute}}
	a := openT(t, &Options{Redis: redisOpts(s), Routes: routes})
	b := openT(t, &Options{Redis: redisOpts(s), Routes: routes})
	ctx := context.Background()
	l := &countingLoader{}
	if v, _, err := a.GetOrLoad(ctx, "user:1", l); err != nil || string(v) != "v:user:1:1" {
		t.Fatalf("a.GetOrLoad = %q, %v", v, err)
	}
	if v, _, err := b.GetOrLoad(ctx, "user:1", l); err != nil || string(v) != "v:user:1:1" {
		t.Fatalf("b.GetOrLoad = %q, %v", v, err)
	}
	if n := l.calls.Load(); n != 1 {
		t.Fatalf("loader calls = %d, want 1 (b reads a's value from redis)", n)
	}
	// b caches it in memory; a write through a must reach b.
	if v, ok := mustGet(t, b, "user:1"); !ok || string(v) != "v:user:1:1" {
		t.Fatalf("b.Get = %q, %v", v, ok)
	}
	if err := a.Set(ctx, "user:1", []byte("new"), 0); err != nil {
		t.Fatal(err)
	}
	if v, ok := mustGet(t, a, "user:1"); !ok || string(v) != "new" {
		t.Fatalf("writer reads %q, %v; want its own write", v, ok)
	}
	waitFor(t, 5*time.Second, func() bool {
		v, ok := mustGet(t, b, "user:1")
		return ok && string(v) == "new"
	}, "b to see a's write")
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(time.Millisecond)
	}
}
