package herd

import (
	"context"
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
