package herd

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestCloseStopsEveryGoroutine closes a Group while a flight holds a lease
// (with its renewer) and another waits subscribed on the notification
// connection, and checks that no goroutine of the Group is left.
func TestCloseStopsEveryGoroutine(t *testing.T) {
	srv, c := startRedis(t)
	ignore := goleak.IgnoreCurrent()
	other := newClient(t, srv.Addr())
	holder, err := New(&Options{Client: c, LeaseTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	waiter, err := New(&Options{Client: other, LeaseTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	sleeping := make(chan struct{}, 1)
	waiter.beforeWait = func(string) {
		select {
		case sleeping <- struct{}{}:
		default:
		}
	}
	var origin counter
	errs := make(chan error, 2)
	go func() {
		_, err := holder.Do(context.Background(), "k", nil, origin.load("v", 0, make(chan struct{})))
		errs <- err
	}()
	waitFor(t, "the holder to load", 10*time.Second, func() bool { return origin.calls.Load() == 1 })
	go func() {
		_, err := waiter.Do(context.Background(), "k", nil, origin.load("v", 0, nil))
		errs <- err
	}()
	<-sleeping
	waiter.Close()
	holder.Close()
	for range 2 {
		if err := <-errs; !errors.Is(err, ErrClosed) {
			t.Errorf("Do cut short by Close: error = %v, want ErrClosed", err)
		}
	}
	if _, held := redisGet(t, c, holder.keysFor("k").lock); held {
		t.Errorf("Close left the lease held")
	}
	other.Close()
	goleak.VerifyNone(t, ignore)
}

// TestCloseRacingDo closes a local Group while goroutines keep starting
// flights on many keys (some blocked in their load until Close ends them,
// some sharing another's flight): Close returns, every Do returns a value
// or ErrClosed, every Do after Close returns ErrClosed, and no goroutine is
// left. Flights live in several maps, each under its own lock, so a flight
// registered while Close walks them must still be seen and ended.
func TestCloseRacingDo(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	g, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	blocked := func(ctx context.Context) ([]byte, time.Duration, error) {
		<-ctx.Done()
		return nil, 0, ctx.Err()
	}
	ctx, cancel := context.WithCancel(context.Background()) // Do's goroutine path
	defer cancel()
	var started atomic.Int64
	errs := make(chan error, 1024)
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := 0; ; i++ {
				var err error
				key := fmt.Sprintf("k:%d", i%64) // keys shared between workers
				switch {
				case w%4 == 0:
					_, err = g.Do(ctx, key+":blocked", nil, blocked)
				case w%2 == 0:
					_, err = g.Do(ctx, key, nil, benchLoad)
				default:
					_, err = g.Do(context.Background(), fmt.Sprintf("w%d:%d", w, i), nil, benchLoad)
				}
				started.Add(1)
				if err != nil {
					if !errors.Is(err, ErrClosed) {
						errs <- err
					}
					return
				}
			}
		})
	}
	waitFor(t, "Do calls to run", 10*time.Second, func() bool { return started.Load() > 1000 })
	closed := make(chan struct{})
	go func() {
		g.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return")
	}
	wg.Wait() // every worker stops at its first ErrClosed
	close(errs)
	for err := range errs {
		t.Errorf("Do racing Close: %v, want a value or ErrClosed", err)
	}
	if _, err := g.Do(context.Background(), "after", nil, benchLoad); !errors.Is(err, ErrClosed) {
		t.Errorf("Do after Close = %v, want ErrClosed", err)
	}
	goleak.VerifyNone(t, ignore)
}
