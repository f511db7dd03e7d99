package tracking

import (
	"context"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/thermoscache/thermos/internal/redistest"
)

// TestDirectState: a call may run on its caller's goroutine only while no
// trouble is known; an answer to a call sent before the last trouble does
// not make the connection healthy again, one sent after it does.
func TestDirectState(t *testing.T) {
	d := newDirect()
	ok := func() bool { return d.state.Load()&1 == 1 }
	if !ok() {
		t.Fatal("a new direct is not healthy")
	}
	before := d.state.Load()
	d.judge(before, context.DeadlineExceeded) // rueidis gave up: the slot may be held
	if ok() {
		t.Fatal("healthy after a call's context error")
	}
	d.judge(before, nil) // sent before the trouble
	if ok() {
		t.Error("healthy again after an answer to a call sent before the trouble")
	}
	after := d.state.Load()
	d.trouble() // the connection closes while the next call is on its way
	d.judge(after, nil)
	if ok() {
		t.Error("healthy again after an answer to a call sent before a later trouble")
	}
	d.judge(d.state.Load(), nil)
	if !ok() {
		t.Error("not healthy after an answer to a call sent after the last trouble")
	}
	for range maxDirect {
		if !d.admit() {
			t.Fatal("admit refused below maxDirect busy calls")
		}
	}
	if d.admit() {
		t.Errorf("admit allowed %d calls inside rueidis", maxDirect+1)
	}
	// A DoMulti takes a ring slot per command: one larger than maxDirect
	// never runs directly, even with nothing else inside rueidis.
	idle := newDirect()
	if idle.admit(make([]rueidis.Completed, maxDirect+1)...) {
		t.Errorf("admit allowed a DoMulti of %d commands", maxDirect+1)
	}
	if n := idle.busy.Load(); n != 0 {
		t.Errorf("a refused DoMulti left %d commands counted busy", n)
	}
}

// TestDirectAfterConnectionLoss: while the tracking connection is up, a call
// with a deadline runs on its caller's goroutine; when the connection is
// cut and cannot be dialled again, the loss is known before any call is
// sent on the dead connection, so a call with a deadline returns by it
// (rueidis's redial, which ignores contexts, runs in the call's goroutine);
// once Redis can be reached again, one answered call makes the path direct
// again.
func TestDirectAfterConnectionLoss(t *testing.T) {
	srv := redistest.Start(t, nil)
	d := &cuttable{}
	ro := redisOpts(srv)
	ro.DialCtxFn = d.dial
	c := newRedisCache(t, srv, &Options{Redis: ro, Prefixes: []string{"k:"}})
	b, isBounded := c.redis().(bounded)
	if !isBounded || b.dir == nil {
		t.Fatalf("the client of a standalone server has no direct path (bounded %v)", isBounded)
	}
	healthy := func() bool { return b.dir.state.Load()&1 == 1 }
	ping := func(ctx context.Context) error { return b.Do(ctx, b.B().Ping().Build()).Error() }
	// The client may have started unhealthy (rueidis closes the connection
	// it probed for a cluster with): one answered call fixes that.
	waitFor(t, "the direct path", 10*time.Second, func() bool { return ping(t.Context()) == nil && healthy() })

	d.cut()
	waitFor(t, "the loss to be known", 10*time.Second, func() bool { return !healthy() })
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := ping(ctx)
	if err == nil {
		t.Fatal("PING answered with every connection cut")
	}
	// Past the deadline, the call still returns at once (it waited on its
	// context, in bounded.start).
	if late := time.Since(start); late > 5*time.Second {
		t.Errorf("PING returned %v after it was sent, with a deadline of 100ms", late)
	}
	if healthy() {
		t.Error("healthy after a failed call")
	}

	d.blocked.Store(false)
	waitFor(t, "the direct path again", 20*time.Second, func() bool {
		err := ping(t.Context())
		return err == nil && healthy()
	})
}
