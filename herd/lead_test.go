package herd

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestLeadLostAcquire: a first caller whose ctx can end sends the flight's
// first acquire itself (lead). When that answer is lost (the caller's ctx
// ended while it was on its way), the flight goes on in a goroutine with
// the same token: a lease the lost acquire took is recognised as its own
// (one load, no wait for a lease nobody renews), and a value found instead
// leaves no lease behind.
func TestLeadLostAcquire(t *testing.T) {
	_, c := startRedis(t)
	g := newGroup(t, &Options{Client: c, LeaseTTL: time.Minute, WaitTimeout: time.Minute})
	g.leadLost = func() bool { return true }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var origin counter

	// Cold: the lost acquire took the lease.
	res, err := g.Do(ctx, "cold", nil, origin.load("v1", 0, nil))
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Value) != "v1" || !res.Loaded || !res.Stored {
		t.Errorf("cold: Do = %q loaded %v stored %v, want v1 loaded and stored", res.Value, res.Loaded, res.Stored)
	}
	if n := origin.calls.Load(); n != 1 {
		t.Errorf("cold: %d loads, want 1", n)
	}
	if _, held := redisGet(t, c, g.keysFor("cold").lock); held {
		t.Error("cold: the lease is still held")
	}

	// Warm: the lost acquire found the value; the flight finds it again.
	res, err = g.Do(ctx, "cold", nil, origin.load("v2", 0, nil))
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Value) != "v1" || res.Loaded {
		t.Errorf("warm: Do = %q loaded %v, want v1 from Redis", res.Value, res.Loaded)
	}
	if n := origin.calls.Load(); n != 1 {
		t.Errorf("warm: %d loads, want still 1", n)
	}
	if _, held := redisGet(t, c, g.keysFor("cold").lock); held {
		t.Error("warm: a lease was left held")
	}
}

// TestLeadHitAllocations bounds what a Do costs that its first caller ends
// in one acquire because the value is in Redis (the usual miss of a warm
// memory+redis cache): the flight's context is never used then, so it
// makes no channel, timer or context for it (10 allocations before, 5
// after, the reply's included). The bound leaves room for a pooled item
// dropped by a GC.
func TestLeadHitAllocations(t *testing.T) {
	_, c := startRedis(t)
	g := newGroup(t, &Options{Client: c})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var origin counter
	if _, err := g.Do(ctx, "hit", nil, origin.load("v", 0, nil)); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(200, func() {
		res, err := g.Do(ctx, "hit", nil, origin.load("v", 0, nil))
		if err != nil || string(res.Value) != "v" || res.Loaded {
			t.Fatalf("Do = %q loaded %v, %v; want v from Redis", res.Value, res.Loaded, err)
		}
	})
	t.Logf("Do answered by the lead's acquire: %.1f allocations", allocs)
	if raceEnabled {
		return // the race detector drops pooled items on purpose
	}
	const most = 7
	if allocs > most {
		t.Errorf("Do answered by the lead's acquire made %.1f allocations, want at most %d", allocs, most)
	}
}

// TestCloseBeforeArm: Close ends a flight whose context nobody armed yet
// (its first caller is still in the lead's acquire); the flight that goes
// on afterwards starts ended: it loads nothing and its caller gets
// ErrClosed.
func TestCloseBeforeArm(t *testing.T) {
	_, c := startRedis(t)
	g, err := New(&Options{Client: c, LeaseTTL: time.Minute, WaitTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	g.leadLost = func() bool {
		go func() {
			g.Close()
			close(closed)
		}()
		// Close marks the group closed and ends every flight before it
		// waits for them.
		waitFor(t, "Close to end the flight", 10*time.Second, func() bool {
			return g.ctx.Err() != nil
		})
		return true // as if the caller's ctx had ended: the flight goes on
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var origin counter
	start := time.Now()
	_, err = g.Do(ctx, "k", nil, origin.load("v", 0, nil))
	if !errors.Is(err, ErrClosed) {
		t.Errorf("Do after Close ended its flight = %v, want ErrClosed", err)
	}
	if n := origin.calls.Load(); n != 0 {
		t.Errorf("%d loads after Close, want 0", n)
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Do took %v after Close", d)
	}
}
