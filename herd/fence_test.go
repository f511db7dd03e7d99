package herd

import (
	"context"
	"testing"
	"time"
)

// TestFencedWriteRefusedWhileAnotherHolds: a holder paused past its lease
// finishes its load while the next holder still holds the lease and is
// loading. Its fenced write must be refused — by the script's token check,
// or by the transaction's when scripting is off — and leave the value and
// the other holder's lease alone; the next holder then stores its value.
// (TestFencedWriteRefusedAfterLeaseLoss lets the paused holder write only
// after the lease is free again, which a missing lease refuses by itself.)
func TestFencedWriteRefusedWhileAnotherHolds(t *testing.T) {
	forEachVariant(t, func(t *testing.T, f *fleet) {
		const lease = 100 * time.Millisecond
		paused := f.group(Options{LeaseTTL: lease})
		paused.renewHook = func() bool { return false }
		next := f.group(Options{LeaseTTL: 10 * time.Second})
		lockKey := paused.keysFor("k").lock

		var old, fresh counter
		releaseOld, releaseNew := make(chan struct{}), make(chan struct{})
		oldDone, newDone := make(chan Result, 1), make(chan Result, 1)
		go func() {
			r, err := paused.Do(context.Background(), "k", nil, old.load("old", time.Minute, releaseOld))
			if err != nil {
				t.Errorf("paused holder: %v", err)
			}
			oldDone <- r
		}()
		waitFor(t, "the paused holder to load", 10*time.Second, func() bool { return old.calls.Load() == 1 })
		waitFor(t, "the paused holder's lease to expire", 10*time.Second, func() bool {
			_, held := redisGet(t, f.c, lockKey)
			return !held
		})
		go func() {
			r, err := next.Do(context.Background(), "k", nil, fresh.load("new", time.Minute, releaseNew))
			if err != nil {
				t.Errorf("next holder: %v", err)
			}
			newDone <- r
		}()
		waitFor(t, "the next holder to take the lease and load", 10*time.Second, func() bool { return fresh.calls.Load() == 1 })
		nextToken, held := redisGet(t, f.c, lockKey)
		if !held {
			t.Fatal("the next holder loads without holding the lease")
		}

		close(releaseOld)
		if r := <-oldDone; r.Stored {
			t.Errorf("paused holder result = %+v: stored while another held the lease", r)
		}
		if v, ok := redisGet(t, f.c, "k"); ok {
			t.Errorf("redis holds %q after the paused holder's refused write, want nothing yet", v)
		}
		if tok, held := redisGet(t, f.c, lockKey); !held || tok != nextToken {
			t.Errorf("lease = %q, %v after the paused holder's write, want the next holder's %q", tok, held, nextToken)
		}
		if s := paused.Stats(); s.FencedWritesRefused != 1 {
			t.Errorf("paused holder: FencedWritesRefused = %d, want 1", s.FencedWritesRefused)
		}

		close(releaseNew)
		if r := <-newDone; !r.Stored || string(r.Value) != "new" {
			t.Errorf("next holder result = %+v, want new stored", r)
		}
		if v, _ := redisGet(t, f.c, "k"); v != "new" {
			t.Errorf("redis value = %q, want new", v)
		}
	})
}
