package herd

import (
	"context"
	"errors"
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
